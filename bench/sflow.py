"""Benchmark: the whole sFlow path at 10,000 servers, and decode alone, beside a bare struct walk.

Whole path: bench/sflow_batch.py's fleet (48-port agents, one server per port, enough agents
for --servers) is sent by a separate process through a real UDP socket on loopback, paced at
--rate datagrams/s, to an SflowCollector on its receive thread; the collector decodes and hands
on to the detector, whose evaluate() runs at 4 Hz on the event loop. The stream is sent in two
halves, each agent's sequence numbers running on: the first warms the path up (every server's
first sight makes its windows), the second is measured (the daemon's steady state); the first
half's figure is printed too. With
rackwarden.policies.detect_vec.VectorDetector importable that is the columns path
(decode_batch_columns -> VectorDetector.ingest_columns, evidence through the raw ring);
otherwise the object path (decode_batch -> FlowSamples -> AbuseDetector.ingest). The figure is
flow samples taken in per CPU-second of this process (all its threads: receive, decode,
detect, evaluate; the sender's CPU is its own), the median of --reps runs, each with a fresh
collector and detector; datagrams lost on the way (kernel or backlog) are reported, and not
counted as samples. Beside it, same run, interleaved: the columns path with the collector's
earlier batchings (up to 1,024 datagrams or 20 ms a batch, the first; 2,048 or 50 ms, the one
before the default 4,096 or 100 ms), and the object path.

Decode stages, same run, interleaved: decode_batch_columns against decode_batch on the same
fleet datagrams in 1,024-datagram batches (samples per CPU-second), and the bare struct walk
over them. Then, as before, decode_datagram against the struct walk on a scapy-built mix.
Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from struct import Struct
from typing import Any

from rackwarden.drivers.packets import flow_sample_from_frame
from rackwarden.drivers.sflow.decoder import decode_datagram
from rackwarden.drivers.sflow.encoder import pack_datagrams
from rackwarden.policies.flowfacts import FlowSample

AT = datetime(2025, 1, 1, tzinfo=UTC)
AGENT = "192.0.2.10"


def _frames(count: int, seed: int) -> list[bytes]:
    """Realistic mix of sampled frames (TCP, UDP, ICMP, IPv6, VLAN), built with scapy once."""
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Dot1Q, Ether

    rnd = random.Random(seed)
    out: list[bytes] = []
    for i in range(count):
        eth = Ether(src=f"02:00:00:00:{i % 40:02x}:01", dst="02:00:00:00:ff:fe")
        src = f"10.{i % 4}.{rnd.randrange(256)}.{rnd.randrange(1, 255)}"
        dst = f"198.51.100.{rnd.randrange(1, 255)}"
        kind = i % 10
        pad = b"\0" * rnd.choice((0, 64, 400, 1400))
        if kind < 5:
            pkt = eth / IP(src=src, dst=dst) / TCP(sport=rnd.randrange(1024, 65535),
                                                   dport=rnd.choice((25, 80, 443)),
                                                   flags=rnd.choice(("S", "A", "PA"))) / pad
        elif kind < 8:
            pkt = eth / IP(src=src, dst=dst) / UDP(sport=rnd.randrange(1024, 65535),
                                                   dport=53) / pad
        elif kind == 8:
            pkt = eth / Dot1Q(vlan=100 + i % 3) / IP(src=src, dst=dst) / ICMP() / pad
        else:
            pkt = eth / IPv6(src=f"2001:db8::{i:x}", dst="2001:db8:1::1") / UDP(
                sport=4000, dport=443) / pad
        out.append(bytes(pkt))
    return out


def make_datagrams(samples_total: int = 2000, seed: int = 1) -> tuple[list[bytes], int]:
    frames = _frames(samples_total, seed)
    samples = [
        flow_sample_from_frame(f, source="sflow", agent=AGENT, now=0.0, at=AT,
                               sampling_rate=1024, input_ifindex=1 + i % 48,
                               output_ifindex=49, snaplen=128)
        for i, f in enumerate(frames)
    ]
    return pack_datagrams(samples, agent=AGENT), len(samples)


_U32X2 = Struct("!II").unpack_from
_U32X4 = Struct("!IIII").unpack_from
_FLOW = Struct("!IIIIIIII").unpack_from
_U16 = Struct("!H").unpack_from
_U16X2 = Struct("!HH").unpack_from
_U32 = Struct("!I").unpack_from


def struct_walk(data: bytes, per_source: Counter[int]) -> int:
    """The floor: walk the same datagram with unpack_from, read the same fields as integers,
    count per source IP; no bounds policy, no objects, no text. Only our own well-formed
    datagrams go through it."""
    atype = _U32X2(data, 0)[1]
    off = 12 if atype == 1 else 24
    _sub, _seq, _up, count = _U32X4(data, off)
    off += 16
    got = 0
    for _ in range(count):
        fmt, length = _U32X2(data, off)
        end = off + 8 + length
        if fmt == 1:
            _s, _sid, rate, _pool, _drops, inp, outp, nrec = _FLOW(data, off + 8)
            p = off + 40
            for _r in range(nrec):
                rfmt, rlen = _U32X2(data, p)
                if rfmt == 1:
                    _proto, frame_len, _strip, hlen = _U32X4(data, p + 8)
                    h = p + 24
                    et = _U16(data, h + 12)[0]
                    ip = h + 14
                    if et == 0x8100:
                        et = _U16(data, h + 16)[0]
                        ip = h + 18
                    if et == 0x0800:
                        src = _U32(data, ip + 12)[0]
                        proto = data[ip + 9]
                        l4 = ip + (data[ip] & 0x0F) * 4
                        if proto == 6 or proto == 17:
                            _sport, _dport = _U16X2(data, l4)
                        per_source[src] += rate
                    got += 1
                p += 8 + rlen
        off = end
    return got


def _run(fn: Callable[[], int], seconds: float) -> tuple[float, int]:
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        done += fn()
    return done / (time.perf_counter() - start), done


# The sender: its own process, so its CPU is not in the figure. Datagrams come from a file of
# 4-byte-length-prefixed records; paced in groups of 32 to --rate datagrams per second.
_SENDER = r"""
import socket, struct, sys, time
port, rate, paths = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3:]
passes = []
for path in paths:
    blob = open(path, "rb").read()
    dgs, off = [], 0
    while off < len(blob):
        (n,) = struct.unpack_from("!I", blob, off)
        dgs.append(blob[off + 4:off + 4 + n])
        off += 4 + n
    passes.append(dgs)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
addr = ("127.0.0.1", port)
sys.stdout.write("ready\n"); sys.stdout.flush()
for dgs in passes:  # one part of the stream per "go"
    if sys.stdin.readline().strip() != "go":
        break
    t0 = time.perf_counter()
    for i, d in enumerate(dgs):
        if i % 32 == 0:
            late = t0 + i / rate - time.perf_counter()
            if late > 0:
                time.sleep(late)
        s.sendto(d, addr)
    print(len(dgs), time.perf_counter() - t0, flush=True)
"""


def _task_cpu(tid: int | None) -> float:
    """CPU seconds of one thread of this process (Linux /proc), 0.0 where unknown."""
    try:
        with open(f"/proc/self/task/{tid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


OLD_BATCHING = "VectorDetector, 1,024 datagrams or 20 ms batches"
PREV_BATCHING = "VectorDetector, 2,048 datagrams or 50 ms batches"
BATCHINGS = {OLD_BATCHING: {"batch_wait_s": 0.02, "batch_max": 1024},
             PREV_BATCHING: {"batch_wait_s": 0.05, "batch_max": 2048}}


class _WallClock:
    def now(self) -> float:
        return time.monotonic()

    def at(self) -> datetime:
        return datetime.now(UTC)


def _detector_kind() -> str:
    try:
        from rackwarden.policies.detect_vec import VectorDetector  # noqa: F401
    except ImportError:
        return "AbuseDetector"
    return "VectorDetector"


async def _whole_once(paths: list[str], ndatagrams: int, specs: list[Any], kind: str,
                      rate: float, batching: dict[str, Any] | None = None) -> dict[str, float]:
    from rackwarden.drivers.sflow.collector import SflowCollector
    from rackwarden.drivers.sflow.rawring import RawRing
    from rackwarden.policies.detect import AbuseDetector

    clock = _WallClock()
    det: Any
    if kind == "VectorDetector":
        from rackwarden.policies.detect_vec import VectorDetector
        ring = RawRing()
        det = VectorDetector(specs, resolve=ring.resolve)
        col = SflowCollector(allowed_agents=["127.0.0.1"], on_samples=lambda s: None,
                             clock=clock, bind="127.0.0.1", port=0, on_columns=det.ingest_columns,
                             raw_ring=ring, **(batching or {}))
    else:
        det = AbuseDetector(specs)

        def on_samples(samples: Any) -> None:  # AbuseService.on_samples
            det.ingest([x for x in samples if type(x) is FlowSample])

        col = SflowCollector(allowed_agents=["127.0.0.1"], on_samples=on_samples, clock=clock,
                             bind="127.0.0.1", port=0)
    await col.start()
    assert col.bound_port is not None
    sender = subprocess.Popen([sys.executable, "-c", _SENDER, str(col.bound_port), str(rate),
                               *paths], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    assert sender.stdin is not None and sender.stdout is not None
    sender.stdout.readline()  # the corpus is loaded: start the clock, then the traffic
    evaluations = 0

    async def evaluate_forever() -> None:
        nonlocal evaluations
        while True:
            await asyncio.sleep(0.25)
            det.evaluate(clock.now(), clock.at())
            evaluations += 1

    task = asyncio.create_task(evaluate_forever())
    rx = col._thread.native_id if col._thread is not None else None

    async def one_pass() -> dict[str, float]:
        """The corpus once through the collector: CPU, wall and counters of this pass."""
        assert sender.stdin is not None and sender.stdout is not None
        rx0, loop0 = _task_cpu(rx), _task_cpu(threading.get_native_id())
        samples0, received0 = col.flow_samples_total, col.datagrams_total
        dropped0, evals0 = col.backlog_dropped_total, evaluations
        wall0, cpu0 = time.perf_counter(), time.process_time()
        sender.stdin.write("go\n")
        sender.stdin.flush()
        line = await asyncio.to_thread(sender.stdout.readline)
        # Then until everything that arrived is taken in (no progress for 0.3 s).
        seen, still = -1, 0
        while still < 6:
            now_seen = col.datagrams_total + col.backlog_dropped_total
            still = still + 1 if now_seen == seen else 0
            seen = now_seen
            await asyncio.sleep(0.05)
        out = line.split()
        wall = time.perf_counter() - wall0
        send_s = float(out[1]) if len(out) > 1 else wall
        return {"samples": col.flow_samples_total - samples0,
                "cpu_s": time.process_time() - cpu0, "wall_s": wall,
                "received": col.datagrams_total - received0,
                "backlog_dropped": col.backlog_dropped_total - dropped0,
                "sent": ndatagrams, "offered_dps": ndatagrams / send_s,
                "evaluations": evaluations - evals0,
                "receive_thread_cpu_s": _task_cpu(rx) - rx0,
                "loop_thread_cpu_s": _task_cpu(threading.get_native_id()) - loop0}

    cold = await one_pass()  # first sight of every server: windows made, tables grown
    warm = await one_pass()
    task.cancel()
    col.stop()
    sender.stdin.close()
    sender.wait()
    warm["cold_samples_per_cpu_s"] = cold["samples"] / cold["cpu_s"] if cold["cpu_s"] else 0.0
    return warm


def whole_path(servers: int, samples_per_port: int, reps: int, rate: float | None,
               stages_seconds: float, baseline_reps: int,
               batch_baseline_reps: int = 1) -> dict[str, Any]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from rackwarden.drivers.sflow.batch import decode_batch, decode_batch_columns

    from bench.sflow_batch import PORTS, build_corpus

    kind = _detector_kind()
    agents = math.ceil(servers / PORTS)
    # Twice the stream: the first half warms the path up (every server's first sight), the
    # second is measured. Each agent's sequence numbers run on from one half to the other.
    stream, specs, _ = build_corpus(2 * samples_per_port, agents=agents)
    half = len(stream) // 2
    warmup, datagrams = stream[:half], stream[half:]
    nsamples = sum(struct_walk(d, Counter()) for d in datagrams)
    print(f"fleet: {len(specs)} servers on {agents} agents, {len(datagrams)} datagrams, "
          f"{nsamples} flow samples (after {len(warmup)} datagrams to warm up); "
          f"detector: {kind}")

    # Decode stages, interleaved, on the fleet's own datagrams.
    nows = [1000.0 + i * 15e-6 for i in range(len(datagrams))]
    ats = [AT + timedelta(seconds=x - 1000.0) for x in nows]

    def cols() -> int:
        return sum(len(decode_batch_columns(datagrams[i:i + 1024], nows[i:i + 1024],
                                            ats[i:i + 1024]).cols)
                   for i in range(0, len(datagrams), 1024))

    def objs() -> int:
        return sum(len(r.samples) for i in range(0, len(datagrams), 1024)
                   for r in decode_batch(datagrams[i:i + 1024], nows[i:i + 1024],
                                         ats[i:i + 1024]))

    def walk() -> int:
        c: Counter[int] = Counter()
        return sum(struct_walk(d, c) for d in datagrams)

    assert cols() == objs() == walk() == nsamples
    stage: dict[str, list[float]] = {"columns": [], "objects": [], "walk": []}
    deadline = time.perf_counter() + stages_seconds
    while time.perf_counter() < deadline or len(stage["walk"]) < 3:
        for name, fn in (("columns", cols), ("objects", objs), ("walk", walk)):
            t = time.process_time()
            n = fn()
            stage[name].append(n / (time.process_time() - t))
    med = {k: statistics.median(v) for k, v in stage.items()}
    print(f"decode_batch_columns: {med['columns']:10,.0f} samples/CPU-s")
    print(f"decode_batch:         {med['objects']:10,.0f} samples/CPU-s "
          f"(columns {med['columns'] / med['objects']:.1f}x)")
    print(f"struct walk:          {med['walk']:10,.0f} samples/CPU-s "
          f"({len(stage['walk'])} reps each)")

    # The object path (FlowSamples into AbuseDetector) is the baseline, on the same traffic;
    # it is offered less, as it takes less without a backlog, and (to keep the run short) the
    # first 8 seconds' worth of each half.
    # The columns path is also run with the collector's earlier batchings (1,024 datagrams or
    # 20 ms; 2,048 or 50 ms), the same-run baselines of its default (collector.BATCH_MAX,
    # BATCH_WAIT_S).
    plan: list[tuple[str, str, int, float, int]] = [
        (kind, kind, reps, rate or (30_000.0 if kind == "VectorDetector" else 3_000.0),
         len(datagrams))]
    if kind == "VectorDetector" and batch_baseline_reps > 0:
        for which in BATCHINGS:
            plan.append((which, kind, batch_baseline_reps, plan[0][3], len(datagrams)))
    if kind == "VectorDetector" and baseline_reps > 0:
        plan.append(("AbuseDetector", "AbuseDetector", baseline_reps, 3_000.0,
                     min(len(datagrams), 24_000)))
    runs: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        files: dict[int, list[str]] = {}
        for *_, count in plan:
            paths = files[count] = [os.path.join(tmp, f"warmup{count}.bin"),
                                    os.path.join(tmp, f"measured{count}.bin")]
            for path, part in zip(paths, (warmup, datagrams), strict=True):
                with open(path, "wb") as f:
                    for d in part[:count]:
                        f.write(len(d).to_bytes(4, "big") + d)
        for k in range(max(n for _, _, n, _, _ in plan)):  # interleaved
            for which, det_kind, n, offered, count in plan:
                if k >= n:
                    continue
                batching = BATCHINGS.get(which)
                r = asyncio.run(_whole_once(files[count], count, specs, det_kind, offered,
                                            batching))
                runs.setdefault(which, []).append(r)
                lost = 1 - r["received"] / r["sent"]
                print(f"whole path ({which}): {r['samples'] / r['cpu_s']:10,.0f} samples/CPU-s"
                      f" (first pass {r['cold_samples_per_cpu_s']:,.0f}),"
                      f" {r['cpu_s']:.2f} CPU-s over {r['wall_s']:.2f} s wall, offered "
                      f"{r['offered_dps']:,.0f} datagrams/s, lost {lost:.2%} "
                      f"(backlog {r['backlog_dropped']:.0f}), {r['evaluations']:.0f} evaluations; "
                      f"receive thread {r['receive_thread_cpu_s']:.2f} CPU-s, event loop "
                      f"{r['loop_thread_cpu_s']:.2f}")
    whole = statistics.median(r["samples"] / r["cpu_s"] for r in runs[kind])
    print(f"whole path median ({kind}): {whole:,.0f} samples/CPU-s = "
          f"{whole / med['walk']:.2f} x the struct walk")
    extra: dict[str, Any] = {}
    if OLD_BATCHING in runs:
        old = statistics.median(r["samples"] / r["cpu_s"] for r in runs[OLD_BATCHING])
        print(f"whole path median ({OLD_BATCHING}): {old:,.0f} samples/CPU-s; default batching "
              f"{whole / old:.2f}x")
        extra = {"whole_path_old_batching_samples_per_cpu_s": round(old),
                 "ratio_whole_path_vs_old_batching": round(whole / old, 2)}
    if PREV_BATCHING in runs:
        prev = statistics.median(r["samples"] / r["cpu_s"] for r in runs[PREV_BATCHING])
        print(f"whole path median ({PREV_BATCHING}): {prev:,.0f} samples/CPU-s; default "
              f"batching {whole / prev:.2f}x")
        extra |= {"whole_path_prev_batching_samples_per_cpu_s": round(prev),
                  "ratio_whole_path_vs_prev_batching": round(whole / prev, 2)}
    if "AbuseDetector" in runs and kind != "AbuseDetector":
        base = statistics.median(r["samples"] / r["cpu_s"] for r in runs["AbuseDetector"])
        print(f"whole path median (AbuseDetector, object path): {base:,.0f} samples/CPU-s; "
              f"columns path {whole / base:.1f}x")
        extra |= {"whole_path_object_samples_per_cpu_s": round(base),
                 "ratio_whole_path_columns_vs_object": round(whole / base, 2)}
    return {
        **extra,
        "whole_path_samples_per_cpu_s": round(whole),
        "whole_path_detector": kind,
        "whole_path_servers": len(specs),
        "whole_path_offered_datagrams_per_s": round(statistics.median(
            r["offered_dps"] for r in runs[kind])),
        "whole_path_loss": round(statistics.median(
            1 - r["received"] / r["sent"] for r in runs[kind]), 4),
        "whole_path_reps": reps,
        "columns_decode_samples_per_cpu_s": round(med["columns"]),
        "batch_decode_samples_per_cpu_s": round(med["objects"]),
        "ratio_columns_vs_batch_decode": round(med["columns"] / med["objects"], 2),
        "fleet_struct_walk_samples_per_cpu_s": round(med["walk"]),
        "ratio_whole_path_vs_struct_walk": round(whole / med["walk"], 3),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=6.0, help="full decode; the walk gets half")
    ap.add_argument("--servers", type=int, default=10_000)
    ap.add_argument("--samples-per-port", type=int, default=60,
                    help="samples per server in the measured half of the stream (7 per "
                    "datagram; the warm-up half is as long)")
    ap.add_argument("--reps", type=int, default=3, help="whole-path runs (median)")
    ap.add_argument("--rate", type=float, default=None,
                    help="offered datagrams/s (default 30k columns path, 3k object path: "
                    "each lossless on the 2-core test machine)")
    ap.add_argument("--stage-seconds", type=float, default=6.0)
    ap.add_argument("--baseline-reps", type=int, default=1,
                    help="object-path (AbuseDetector) whole-path runs beside the columns path")
    ap.add_argument("--batch-baseline-reps", type=int, default=3,
                    help="columns-path runs with each of the collector's earlier batchings "
                    "(1,024 datagrams or 20 ms; 2,048 or 50 ms) beside its default")
    args = ap.parse_args()

    whole = whole_path(args.servers, args.samples_per_port, args.reps, args.rate,
                       args.stage_seconds, args.baseline_reps, args.batch_baseline_reps)

    datagrams, nsamples = make_datagrams()
    avg_len = sum(len(d) for d in datagrams) / len(datagrams)
    print(f"corpus: {len(datagrams)} datagrams, {nsamples} flow samples, "
          f"avg {avg_len:.0f} bytes/datagram, 128-byte headers")

    # Check the two paths agree on what they read before timing them.
    per_source: Counter[int] = Counter()
    walked = sum(struct_walk(d, per_source) for d in datagrams)
    decoded = [s for d in datagrams for s in decode_datagram(d, 0.0, AT).samples]
    assert walked == len(decoded) == nsamples, (walked, len(decoded), nsamples)
    assert all(isinstance(s, FlowSample) and s.parse_error is None for s in decoded)

    def full() -> int:
        n = 0
        for d in datagrams:
            n += len(decode_datagram(d, 0.0, AT).samples)
        return n

    def walk() -> int:
        c: Counter[int] = Counter()
        n = 0
        for d in datagrams:
            n += struct_walk(d, c)
        return n

    # Warm up both (allocator, memo caches) so neither pays first-run costs in the timing.
    full()
    walk()
    decode_rate, _ = _run(full, args.seconds)
    walk_rate, _ = _run(walk, args.seconds / 2)
    print(f"full decode (datagram -> FlowSample, parsed headers): {decode_rate:10,.0f} samples/s")
    print(f"struct walk (same fields as ints, no objects):       {walk_rate:10,.0f} samples/s")
    print(f"full decode / struct walk: {decode_rate / walk_rate:.2f} (one core, pid {os.getpid()})")
    print(json.dumps({
        "decode_samples_per_s": round(decode_rate),
        "struct_walk_samples_per_s": round(walk_rate),
        "ratio": round(decode_rate / walk_rate, 3),
        "decode_datagrams_per_s": round(decode_rate * len(datagrams) / nsamples),
        "samples_per_datagram": round(nsamples / len(datagrams), 2),
        "python": sys.version.split()[0],
        **whole,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
