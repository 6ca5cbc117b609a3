"""Benchmark: VectorDetector's scan-window loop in C (policies/_scanwin.c) against Python.

Two corpora, each through several VectorDetectors side by side, batch by batch (the machine's
load varies more between runs than the variants differ), each variant's CPU time taken apart:
- `fleet`: bench/detect_vec.py's healthy 9,600-server fleet (a third of the rows are scan rows,
  a server has a row or two per 7,700-sample batch: the row loop takes them all);
- `heavy`: a SPAN port's shape, 8 servers sending SYNs to 200 hosts x 4 ports (every server
  has ~500 scan rows per 4,096-row batch, its windows far from their caps): the bulk path
  (_scan_bulk, from 16 rows of a server in a batch) or the row loop;
- `span`: `heavy` with two of its five ports mail ports (25, 587): 40 % of the rows are also
  spam rows (the spam windows' own loop, _spam_rows: distinct_rows in C, or Python).
Variants: `c` (the C loop for every row: VectorDetector's default when the module is built),
`c_bulk` (the C loop, and _scan_bulk for a server's 16 rows and more), `python_bulk` (the
Python loop with _scan_bulk: the default without the module, and before it), `python` (the
Python loop for every row). Figures, medians of --reps, over the second half of each corpus
(the first warms up): CPU microseconds per scan row in _scan_rows (the loop, and _scan_bulk
where it takes rows), and the whole ingest (ingest_columns + evaluate at 4 Hz) in samples per
CPU-second, and the general loop's share per row of the batch (_window_rows less _scan_rows,
the spam rows' loop included: before that loop, the general loop took the spam rows; run this
file against the old tree to compare). The variants' windows (keys, times, groups, orders,
the spam windows too) must come out equal.
The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rackwarden.policies.detect import ServerSpec  # noqa: E402
from rackwarden.policies.detect_vec import SCANWIN_C_ERROR, VectorDetector  # noqa: E402
from rackwarden.policies.flowcols import SampleColumns, ip_words  # noqa: E402

from bench.detect_vec import at_of, corpus, fleet, take  # noqa: E402

NO_BULK = 1 << 62


def heavy(n: int, servers: int = 8, hosts: int = 200, seed: int = 2,
          ports: tuple[int, ...] = (22, 80, 443, 3389)) -> tuple[
        list[ServerSpec], SampleColumns]:
    """n outbound SYNs of `servers` servers (agent 192.0.2.1, ports 1..servers), to `hosts`
    hosts on `ports`, 2 us apart."""
    specs = [ServerSpec(f"h{i}", frozenset({("192.0.2.1", i + 1)}), frozenset({f"10.0.0.{i + 1}"}))
             for i in range(servers)]
    rnd = np.random.default_rng(seed)
    srv = rnd.integers(0, servers, n)
    me = np.array([ip_words(f"10.0.0.{i + 1}")[1] for i in range(servers)], dtype=np.uint64)
    peers = np.array([ip_words(f"198.51.{k >> 8}.{k & 255}")[1] for k in range(hosts)],
                     dtype=np.uint64)
    z64 = np.zeros(n, dtype=np.int64)
    cols = SampleColumns(
        agent_names=["192.0.2.1"], agent=z64, input_ifindex=(srv + 1).astype(np.int64),
        output_ifindex=np.full(n, 99, dtype=np.int64), sampling_rate=np.ones(n, dtype=np.int64),
        now=np.arange(n, dtype=np.float64) * 2e-6, frame_length=np.full(n, 64, dtype=np.int64),
        ip_version=np.full(n, 4, dtype=np.int64),
        src_hi=np.zeros(n, dtype=np.uint64), src_lo=me[srv], has_src=np.ones(n, dtype=np.bool_),
        dst_hi=np.zeros(n, dtype=np.uint64), dst_lo=peers[rnd.integers(0, hosts, n)],
        has_dst=np.ones(n, dtype=np.bool_), protocol=np.full(n, 6, dtype=np.int64),
        src_port=rnd.integers(1024, 65535, n).astype(np.int64),
        dst_port=np.array(ports)[rnd.integers(0, len(ports), n)].astype(np.int64),
        tcp_flags=np.full(n, 0x02, dtype=np.int64), icmp_type=np.full(n, -1, dtype=np.int64),
        sample_sequence=np.full(n, -1, dtype=np.int64), source_id_type=z64,
        source_id_index=z64, sample_pool=np.full(n, -1, dtype=np.int64),
        ref=np.full(n, -1, dtype=np.int64))
    return specs, cols


def variant(servers: list[ServerSpec], name: str) -> tuple[VectorDetector, list[float]]:
    """A detector for the variant, and its [scan_rows CPU s, scan rows, _window_rows CPU s
    less scan_rows', batch rows] accumulator."""
    det = VectorDetector(servers, scanwin="c" if name.startswith("c") else "python")
    det._bulk_rows = 16 if name.endswith("_bulk") else NO_BULK
    inner = det._scan_rows
    outer = det._window_rows
    acc = [0.0, 0.0, 0.0, 0.0]

    def scan_rows(cols: SampleColumns, rows: Any, so: Any) -> None:
        t0 = time.process_time()
        inner(cols, rows, so)
        dt = time.process_time() - t0
        acc[0] += dt
        acc[1] += len(rows)
        acc[2] -= dt

    def window_rows(cols: SampleColumns, *a: Any) -> None:
        t0 = time.process_time()
        outer(cols, *a)
        acc[2] += time.process_time() - t0
        acc[3] += len(cols)

    det._scan_rows = scan_rows  # type: ignore[method-assign]
    det._window_rows = window_rows  # type: ignore[method-assign]
    return det, acc


def windows(det: VectorDetector) -> list[Any]:
    spam = {s: list(w.spam_dsts.seen.items()) for s, w in det._win.items()
            if w.spam_dsts is not None}
    return [spam, *((list(h.seen.items()), list(p.seen.items()), list((p.groups or {}).items()))
                    if h is not None and p is not None else None
                    for h, p in zip(det._scan_h, det._scan_p, strict=True))]


def side_by_side(servers: list[ServerSpec], batches: list[SampleColumns],
                 names: list[str]) -> tuple[dict[str, float], dict[str, float],
                                            dict[str, float]]:
    """Each variant's scan_rows us per scan row, samples per CPU-second and general-loop us
    per batch row, in lockstep over
    the second half of the batches (the first half warms up: every server's first sight
    makes its windows, and the garbage collector's passes over them fall there), the order
    of the variants turning from batch to batch (none always finds the batch cold)."""
    dets = [variant(servers, v) for v in names]
    cpu = [0.0] * len(dets)
    nxt = 0.25
    warm = len(batches) // 2
    for j, b in enumerate(batches):
        last = float(b.now[-1])
        if j == warm:
            for _, acc in dets:
                acc[:] = [0.0, 0.0, 0.0, 0.0]
        for k in range(len(dets)):
            i = (j + k) % len(dets)
            det = dets[i][0]
            t0 = time.process_time()
            det.ingest_columns(b)
            t = nxt
            while last >= t:
                det.evaluate(t, at_of(t))
                t += 0.25
            if j >= warm:
                cpu[i] += time.process_time() - t0
        while last >= nxt:
            nxt += 0.25
    want = windows(dets[0][0])
    for v, (det, _) in zip(names, dets, strict=True):
        if windows(det) != want:
            raise SystemExit(f"MISMATCH: {v}'s scan windows differ from {names[0]}'s")
    n = sum(len(b) for b in batches[warm:])
    return ({v: acc[0] / max(acc[1], 1) * 1e6 for v, (_, acc) in zip(names, dets, strict=True)},
            {v: n / c for v, c in zip(names, cpu, strict=True)},
            {v: acc[2] / max(acc[3], 1) * 1e6 for v, (_, acc) in zip(names, dets, strict=True)})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--fleet-samples", type=int, default=480_000)
    ap.add_argument("--heavy-samples", type=int, default=400_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--cases", default="fleet,heavy,span",
                    help="comma-separated: fleet, heavy, span")
    args = ap.parse_args()
    names = ["python_bulk", "python"]
    if SCANWIN_C_ERROR is None:
        names = ["c", "c_bulk", *names]
    else:
        print(f"{SCANWIN_C_ERROR}: Python variants only")
    cases: dict[str, tuple[list[ServerSpec], list[SampleColumns]]] = {}
    want = args.cases.split(",")
    if "fleet" in want:
        cols = corpus(args.fleet_samples)
        cases["fleet"] = (fleet(), [take(cols, lo, min(len(cols), lo + 7_700))
                                    for lo in range(0, len(cols), 7_700)])
    for case, ports in (("heavy", (22, 80, 443, 3389)), ("span", (22, 80, 443, 25, 587))):
        if case in want:
            specs, cols = heavy(args.heavy_samples, ports=ports)
            cases[case] = (specs, [take(cols, lo, min(len(cols), lo + 4_096))
                                   for lo in range(0, len(cols), 4_096)])
    out: dict[str, Any] = {"scanwin_c_built": SCANWIN_C_ERROR is None}
    for case, (servers, batches) in cases.items():
        us: dict[str, list[float]] = {v: [] for v in names}
        rate: dict[str, list[float]] = {v: [] for v in names}
        gen: dict[str, list[float]] = {v: [] for v in names}
        for rep in range(args.reps):
            u, r, g = side_by_side(servers, batches, names)
            for v in names:
                us[v].append(u[v])
                rate[v].append(r[v])
                gen[v].append(g[v])
            print(f"{case} rep {rep}: " + ", ".join(
                f"{v} {u[v]:.3f} us/scan row, {g[v]:.3f} us/row general loop, "
                f"{r[v]:,.0f} samples/CPU-s" for v in names))
        for v in names:
            out[f"{case}_{v}_us_per_scan_row"] = round(statistics.median(us[v]), 3)
            out[f"{case}_{v}_samples_per_cpu_s"] = round(statistics.median(rate[v]))
            out[f"{case}_{v}_general_us_per_row"] = round(statistics.median(gen[v]), 3)
        best = names[0]
        print(f"{case} median: " + ", ".join(
            f"{v} {out[f'{case}_{v}_us_per_scan_row']:.3f} us/scan row, "
            f"{out[f'{case}_{v}_general_us_per_row']:.3f} us/row general loop "
            f"({out[f'{case}_{v}_samples_per_cpu_s']:,} samples/CPU-s)" for v in names))
        for v in names[1:]:
            ratio = out[f"{case}_{v}_us_per_scan_row"] / max(out[f"{case}_{best}_us_per_scan_row"],
                                                          1e-9)
            out[f"{case}_ratio_{v}_vs_{best}_scan"] = round(ratio, 2)
        print(f"{case}: scan_rows cost against {best}: " + ", ".join(
            f"{v} {out[f'{case}_ratio_{v}_vs_{best}_scan']:.2f}x" for v in names[1:]))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
