"""Benchmark: the columnar VectorDetector against AbuseDetector on a healthy 9,600-server fleet.

The corpus has the shape of PERFORMANCE-NOTES section 1: 200 sFlow agents x 48 ports, one
server per port with one IPv4 and one IPv6 address (contract_ips=2), 1-in-16 sampling; 50 %
TCP (replies A/PA, and SYNs to 10 hosts on 80/443/22), 30 % UDP DNS to 2 resolvers, 10 %
ICMP echo, 10 % IPv6 UDP; half sent by the server (input = its port), half received (output =
its port); 500 k samples/s of simulated time (2 us a sample) with evaluate() every 0.25 s of
it. The samples are synthesised as SampleColumns (what the columnar decoder hands over) and,
for the baseline, as the same FlowSamples. Both detectors must give the same detections.

Figures: samples per CPU-second of ingest + evaluate (medians of --reps, interleaved in the
same run) of VectorDetector, of VectorDetector with every distinct window fed by its general
policies/detect_vec.py as it was at git revision --baseline (`baseline`, default 387b4bf: the
version before the steady-state work, whose rate rings took a fleet-sized pass per batch and
whose evaluate() re-resolved the evidence of every active detection; 49067ca is the first,
whose windows were all fed by one row loop; skipped without git) and of
AbuseDetector, and the detector's memory (tracemalloc, retained bytes) empty and loaded (after
the corpus), scaled to 10,000 servers. VectorDetector runs with the compiled scan-window loop
(policies/_scanwin.c) when it is built; then the C and the Python loop run side by side, batch
by batch (`run_pair`): the whole detector's rate with the Python loop and each loop's own CPU
time per scan row (`scanwin_*_loop_us_per_row`). The last line is JSON.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from rackwarden.policies.detect import AbuseDetector, Detection, ServerSpec
from rackwarden.policies.detect_vec import VectorDetector
from rackwarden.policies.flowcols import SampleColumns, ip_words
from rackwarden.policies.flowfacts import FlowSample

AT0 = datetime(2025, 1, 1, tzinfo=UTC)
AGENTS = 200
PORTS = 48
RATE = 16


def load_baseline(rev: str) -> type[VectorDetector] | None:
    """VectorDetector as policies/detect_vec.py was at git revision rev, or None (no git)."""
    root = Path(__file__).resolve().parent.parent
    got = subprocess.run(["git", "-C", str(root), "show", f"{rev}:policies/detect_vec.py"],
                         capture_output=True, text=True, check=False)
    if got.returncode != 0:
        print(f"no baseline: git show {rev}: {got.stderr.strip()}", file=sys.stderr)
        return None
    path = Path(tempfile.mkdtemp()) / "detect_vec_baseline.py"
    path.write_text(got.stdout)
    name = "rackwarden.policies._detect_vec_baseline"  # in the package: its imports are relative
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    cls: type[VectorDetector] = mod.VectorDetector
    return cls


def fleet() -> list[ServerSpec]:
    out = []
    for a in range(AGENTS):
        for p in range(1, PORTS + 1):
            i = a * PORTS + p - 1
            out.append(ServerSpec(f"srv{i}", frozenset({(f"192.0.{2 + a // 250}.{a % 250 + 1}", p)}),
                                  frozenset({f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}",
                                             f"2001:db8:1::{i + 1:x}"}), contract_ips=2))
    return out


def corpus(n: int, seed: int = 1) -> SampleColumns:
    """n samples of the healthy fleet as columns (no objects, no refs)."""
    rnd = np.random.default_rng(seed)
    servers = AGENTS * PORTS
    srv = rnd.integers(0, servers, n)
    agent = srv // PORTS
    port = srv % PORTS + 1
    sent = rnd.random(n) < 0.5
    kind = rnd.choice(5, n, p=[0.25, 0.25, 0.3, 0.1, 0.1])  # reply, syn, dns, icmp, v6 udp
    v4 = np.array([ip_words(f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}")[1]
                   for i in range(servers)], dtype=np.uint64)
    v6 = [ip_words(f"2001:db8:1::{i + 1:x}") for i in range(servers)]
    v6h = np.array([w[0] for w in v6], dtype=np.uint64)
    v6l = np.array([w[1] for w in v6], dtype=np.uint64)
    hosts = np.array([ip_words(f"198.51.100.{k}")[1] for k in range(1, 11)], dtype=np.uint64)
    resolvers = np.array([ip_words(f"192.0.2.{k}")[1] for k in (53, 54)], dtype=np.uint64)
    o6 = ip_words("2001:db8:ff::1")
    six = kind == 4
    peer_lo = np.where(kind == 2, resolvers[rnd.integers(0, 2, n)], hosts[rnd.integers(0, 10, n)])
    peer_lo = np.where(six, np.uint64(o6[1]), peer_lo)
    peer_hi = np.where(six, np.uint64(o6[0]), np.uint64(0))
    me_lo = np.where(six, v6l[srv], v4[srv])
    me_hi = np.where(six, v6h[srv], np.uint64(0))
    proto = np.select([kind <= 1, kind == 3], [6, 1], 17)
    svc = np.array([80, 443, 22])[rnd.integers(0, 3, n)]
    eph = rnd.integers(1024, 65535, n)
    sport = np.select([kind == 0, kind == 1, kind == 2, kind == 4], [svc, eph, eph, 4000], -1)
    dport = np.select([kind == 0, kind == 1, kind == 2, kind == 4], [eph, svc, 53, 443], -1)
    flags = np.where(kind == 0, np.array([0x10, 0x18])[rnd.integers(0, 2, n)],
                     np.where(kind == 1, 0x02, -1))
    # Received: the same packet the other way round.
    src_hi = np.where(sent, me_hi, peer_hi)
    src_lo = np.where(sent, me_lo, peer_lo)
    dst_hi = np.where(sent, peer_hi, me_hi)
    dst_lo = np.where(sent, peer_lo, me_lo)
    sp = np.where(sent | (sport < 0), sport, dport)
    dp = np.where(sent | (dport < 0), dport, sport)
    # sFlow bookkeeping per source (agent, port): sequence and pool of a true 1-in-16 sampler.
    key = agent * 64 + port
    order = np.argsort(key, kind="stable")
    seq = np.empty(n, dtype=np.int64)
    ks = key[order]
    starts = np.r_[0, np.flatnonzero(np.diff(ks)) + 1]
    run = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
    seq[order] = run
    return SampleColumns(
        agent_names=[f"192.0.{2 + a // 250}.{a % 250 + 1}" for a in range(AGENTS)],
        agent=agent.astype(np.int64),
        input_ifindex=np.where(sent, port, 49).astype(np.int64),
        output_ifindex=np.where(sent, 49, port).astype(np.int64),
        sampling_rate=np.full(n, RATE, dtype=np.int64),
        now=np.arange(n, dtype=np.float64) * 2e-6,
        frame_length=np.array([64, 400, 1400])[rnd.integers(0, 3, n)].astype(np.int64),
        ip_version=np.where(six, 6, 4).astype(np.int64),
        src_hi=src_hi.astype(np.uint64), src_lo=src_lo.astype(np.uint64),
        has_src=np.ones(n, dtype=np.bool_),
        dst_hi=dst_hi.astype(np.uint64), dst_lo=dst_lo.astype(np.uint64),
        has_dst=np.ones(n, dtype=np.bool_),
        protocol=proto.astype(np.int64), src_port=sp.astype(np.int64),
        dst_port=dp.astype(np.int64), tcp_flags=flags.astype(np.int64),
        icmp_type=np.where(kind == 3, np.where(sent, 8, 0), -1).astype(np.int64),
        sample_sequence=seq, source_id_type=np.zeros(n, dtype=np.int64),
        source_id_index=port.astype(np.int64), sample_pool=seq * RATE,
        ref=np.full(n, -1, dtype=np.int64),
    )


def take(cols: SampleColumns, lo: int, hi: int) -> SampleColumns:
    kw: dict[str, Any] = {}
    for name in SampleColumns.__dataclass_fields__:
        v = getattr(cols, name)
        kw[name] = v[lo:hi] if isinstance(v, np.ndarray) else v
    return SampleColumns(**kw)


def as_samples(cols: SampleColumns) -> list[FlowSample]:
    out = []
    for i in range(len(cols)):
        kw = cols.row(i)
        out.append(FlowSample(source="sflow", at=AT0 + timedelta(seconds=kw["now"]),
                              header=b"", **kw))
    return out


def at_of(now: float) -> datetime:
    return AT0 + timedelta(seconds=now)


def run_vector(det: VectorDetector, batches: list[SampleColumns],
               eval_every: float) -> tuple[float, list[Detection]]:
    found: list[Detection] = []
    nxt = eval_every
    t0 = time.process_time()
    for b in batches:
        det.ingest_columns(b)
        last = float(b.now[-1])
        while last >= nxt:
            found += det.evaluate(nxt, at_of(nxt))
            nxt += eval_every
    found += det.evaluate(nxt, at_of(nxt))
    return time.process_time() - t0, found


def timed_scan_loop(det: VectorDetector) -> list[float]:
    """Wrap det's scan-window loop to add its CPU time and rows into the returned [s, rows]."""
    inner = det._scan_loop
    acc = [0.0, 0.0]

    def loop(srv: Any, *rest: Any) -> None:
        t0 = time.process_time()
        inner(srv, *rest)
        acc[0] += time.process_time() - t0
        acc[1] += len(srv)

    det._scan_loop = loop
    return acc


def run_pair(dets: list[VectorDetector], batches: list[SampleColumns],
             eval_every: float) -> tuple[list[float], list[list[float]], list[list[Detection]]]:
    """run_vector for several detectors in lockstep, batch by batch (each its own CPU time and
    scan-loop time), so that all of them see the same load from the machine's other work; the
    order turns from batch to batch (none always finds the batch cold), and the corpus' own
    objects are out of the garbage collector's passes (gc.freeze), whose cost would fall on
    whichever detector happens to set one off."""
    cpu = [0.0] * len(dets)
    found: list[list[Detection]] = [[] for _ in dets]
    loops = [timed_scan_loop(d) for d in dets]
    nxt = eval_every
    gc.collect()
    gc.freeze()

    def each(i: int, b: SampleColumns | None, upto: float) -> None:
        t0 = time.process_time()
        if b is not None:
            dets[i].ingest_columns(b)
        t = nxt
        while upto >= t:
            found[i] += dets[i].evaluate(t, at_of(t))
            t += eval_every
        cpu[i] += time.process_time() - t0

    for j, b in enumerate(batches):
        last = float(b.now[-1])
        for k in range(len(dets)):
            each((j + k) % len(dets), b, last)
        while last >= nxt:
            nxt += eval_every
    for i in range(len(dets)):
        each(i, None, nxt)
    gc.unfreeze()
    return cpu, loops, found


def run_object(det: AbuseDetector, batches: list[list[FlowSample]],
               eval_every: float) -> tuple[float, list[Detection]]:
    found: list[Detection] = []
    nxt = eval_every
    t0 = time.process_time()
    for b in batches:
        det.ingest(b)
        last = b[-1].now
        while last >= nxt:
            found += det.evaluate(nxt, at_of(nxt))
            nxt += eval_every
    found += det.evaluate(nxt, at_of(nxt))
    return time.process_time() - t0, found


def retained(build: Callable[[], Any], load: Callable[[Any], None]) -> tuple[float, float]:
    """tracemalloc bytes retained by a detector, empty and after `load`, in MB."""
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    det = build()
    empty = tracemalloc.get_traced_memory()[0] - base
    load(det)
    gc.collect()
    loaded = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    del det
    return empty / 1e6, loaded / 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--samples", type=int, default=960_000,
                    help="100 per server: ~1.9 s of simulated time, 7 evaluations")
    ap.add_argument("--batch", type=int, default=7_700, help="samples per columnar batch "
                    "(~1,024 datagrams of 7.5 samples)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--baseline", default="387b4bf", help="git revision of "
                    "policies/detect_vec.py to compare with in the same run ('' for none)")
    args = ap.parse_args()
    servers = fleet()
    scale = 10_000 / len(servers)
    cols = corpus(args.samples)
    n = len(cols)
    batches = [take(cols, lo, min(n, lo + args.batch)) for lo in range(0, n, args.batch)]
    samples = as_samples(cols)
    # The object path gets the same batches, as FlowSample lists.
    obj_batches = [samples[lo:min(n, lo + args.batch)] for lo in range(0, n, args.batch)]
    print(f"fleet: {len(servers)} servers; corpus: {n} samples "
          f"({n / len(servers):.0f} per server, {n * 2e-6:.2f} s simulated), "
          f"batches of {args.batch}, evaluate every 0.25 s")
    base_cls = load_baseline(args.baseline) if args.baseline else None
    vec_rates: list[float] = []
    pyscan_rates: list[float] = []
    cscan_rates: list[float] = []
    loop_us: dict[str, list[float]] = {"c": [], "python": []}
    row_rates: list[float] = []
    obj_rates: list[float] = []
    scanwin = VectorDetector([]).scanwin
    print(f"scan-window loop: {scanwin}"
          + ("" if scanwin == "c" else " (the compiled one is not built: C figures are null)"))
    for rep in range(args.reps):
        v_cpu, v_found = run_vector(VectorDetector(servers), batches, 0.25)
        r_cpu, r_found = run_vector((base_cls or VectorDetector)(servers), batches, 0.25)
        o_cpu, o_found = run_object(AbuseDetector(servers), obj_batches, 0.25)
        # The two scan-window loops side by side, batch by batch (the machine's load varies
        # more between runs than the two differ).
        pair = [VectorDetector(servers, scanwin="python")]
        if scanwin == "c":
            pair.insert(0, VectorDetector(servers, scanwin="c"))
        p_cpu, p_loops, p_found = run_pair(pair, batches, 0.25)
        if v_found != o_found or r_found != o_found or any(f != o_found for f in p_found):
            print("MISMATCH: the detectors disagree", file=sys.stderr)
            return 1
        vec_rates.append(n / v_cpu)
        pyscan_rates.append(n / p_cpu[-1])
        if len(pair) == 2:
            cscan_rates.append(n / p_cpu[0])
        for d, acc in zip(pair, p_loops, strict=True):
            loop_us[d.scanwin].append(acc[0] / max(acc[1], 1) * 1e6)
        row_rates.append(n / r_cpu)
        obj_rates.append(n / o_cpu)
        print(f"rep {rep}: vector {n / v_cpu:,.0f} samples/CPU-s, baseline {n / r_cpu:,.0f}, "
              f"object {n / o_cpu:,.0f} ({len(o_found)} detections on all); side by side: "
              + ", ".join(f"{d.scanwin} scan loop {n / c:,.0f} samples/CPU-s "
                          f"(loop {acc[0]:.3f} s for {acc[1]:,.0f} scan rows)"
                          for d, c, acc in zip(pair, p_cpu, p_loops, strict=True)))
    vec = statistics.median(vec_rates)
    pyscan = statistics.median(pyscan_rates)
    cscan = statistics.median(cscan_rates) if cscan_rates else None
    row = statistics.median(row_rates)
    obj = statistics.median(obj_rates)
    c_us = statistics.median(loop_us["c"]) if loop_us["c"] else None
    py_us = statistics.median(loop_us["python"])
    print(f"median: vector {vec:,.0f}, baseline {row:,.0f}, object {obj:,.0f} samples/CPU-s: "
          f"{vec / row:.2f}x baseline, {vec / obj:.1f}x object")
    print(f"scan-window loop per scan row, side by side: "
          f"C {'n/a' if c_us is None else f'{c_us:.3f} us'}, Python {py_us:.3f} us"
          + ("" if c_us is None or cscan is None else
             f" ({py_us / c_us:.2f}x); the whole detector {cscan:,.0f} samples/CPU-s with the C "
             f"loop, {pyscan:,.0f} with the Python loop ({cscan / pyscan:.2f}x)"))

    def load_vec(d: VectorDetector) -> None:
        for b in batches:
            d.ingest_columns(b)
        d.evaluate(n * 2e-6, at_of(n * 2e-6))

    def load_obj(d: AbuseDetector) -> None:
        for b in obj_batches:
            d.ingest(b)
        d.evaluate(n * 2e-6, at_of(n * 2e-6))

    v_empty, v_loaded = retained(lambda: VectorDetector(servers), load_vec)
    r_empty, r_loaded = retained(lambda: (base_cls or VectorDetector)(servers), load_vec)
    o_empty, o_loaded = retained(lambda: AbuseDetector(servers), load_obj)
    print(f"state at 10,000 servers (tracemalloc, scaled from {len(servers)}): "
          f"vector {v_empty * scale:.1f} MB empty, {v_loaded * scale:.1f} MB loaded; "
          f"baseline {r_empty * scale:.1f} MB empty, {r_loaded * scale:.1f} MB loaded; "
          f"object {o_empty * scale:.1f} MB empty, {o_loaded * scale:.1f} MB loaded")
    print(json.dumps({
        "servers": len(servers), "samples": n,
        "baseline": args.baseline if base_cls is not None else None,
        "vector_samples_per_cpu_s": round(vec), "baseline_samples_per_cpu_s": round(row),
        "object_samples_per_cpu_s": round(obj),
        "ratio_vector_vs_baseline": round(vec / row, 2),
        "ratio_vector_vs_object": round(vec / obj, 2),
        "vector_state_mb_empty": round(v_empty * scale, 1),
        "vector_state_mb_loaded": round(v_loaded * scale, 1),
        "baseline_state_mb_loaded": round(r_loaded * scale, 1),
        "object_state_mb_empty": round(o_empty * scale, 1),
        "object_state_mb_loaded": round(o_loaded * scale, 1),
        "scanwin": scanwin,
        "scanwin_c_samples_per_cpu_s": None if cscan is None else round(cscan),
        "scanwin_python_samples_per_cpu_s": round(pyscan),
        "scanwin_c_loop_us_per_row": None if c_us is None else round(c_us, 3),
        "scanwin_python_loop_us_per_row": round(py_us, 3),
        "ratio_scanwin_c_vs_python_loop": None if c_us is None else round(py_us / c_us, 2),
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
