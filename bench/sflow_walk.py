"""Benchmark: the bulk sFlow decode walked in C (cwalk.py) against the numpy walk, same run.

bench/sflow_batch.py's fleet datagrams (~1.3 KB, 7 flow samples each) are laid out as the
collector's recvmmsg path hands them to batch.decode_batch_columns_in: --batch datagrams back
to back, 4-aligned, 64 zero bytes after, one buffer per batch. Each rep decodes every batch
with the compiled walker, then with the numpy walker (RACKWARDEN_SFLOW_WALK), timed with
time.thread_time(); figures are medians in flow samples per CPU-second, and the median of the
same-rep ratios. Both answers are checked equal first. Beside it, the collector's copy of the
accepted datagrams out of their 64 KiB recvmmsg slots: cwalk.gather in C against the join.
And the collector's per-sample sequence tracker (sequence.ColumnSequenceTracker, keyed
(agent, source id) as collector._account_columns codes them) on the same batches' columns,
compiled walk against numpy: each rep feeds a fresh tracker the corpus once (every key's
FIRST, untimed), then times the corpus again with every number moved on by its key's count,
so every key is known and every number the next one, the daemon's steady state. Both
trackers' counters are checked equal first. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import gc
import json
import mmap
import os
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SLOT = 65536  # mmsg.SLOT_STRIDE: one recvmmsg slot per datagram


def _batches(datagrams: list[bytes], size: int) -> list[tuple[bytes, np.ndarray, np.ndarray]]:
    out = []
    for i in range(0, len(datagrams), size):
        part = datagrams[i:i + size]
        lens = np.array([len(d) for d in part], dtype=np.int64)
        padded = (lens + 3) & ~3
        starts = np.cumsum(padded) - padded
        blob = b"".join([d + bytes(-len(d) % 4) for d in part] + [bytes(64)])
        out.append((blob, starts, lens))
    return out


def _cpu(fn: Callable[[], object]) -> float:
    t0 = time.thread_time()
    fn()
    return time.thread_time() - t0


def _tracker_bench(batches: list[tuple[bytes, np.ndarray, np.ndarray]],
                   stamps: list[tuple[list[float], list[datetime]]],
                   reps: int) -> tuple[dict[str, list[float]], float, int]:
    """The per-sample sequence tracker on the batches' columns: samples per CPU-second (C
    walk, numpy), the median same-rep ratio, and the rows per pass."""
    from rackwarden.drivers.sflow.batch import decode_batch_columns_in
    from rackwarden.drivers.sflow.sequence import ColumnSequenceTracker

    gid: dict[str, int] = {}
    names: list[str] = []
    cols_in: list[tuple[np.ndarray, np.ndarray]] = []
    for (blob, starts, lens), (nows, ats) in zip(batches, stamps, strict=True):
        cols = decode_batch_columns_in(blob, starts, lens, nows, ats, first_number=0).cols
        for a in cols.agent_names:
            if a not in gid:
                gid[a] = len(names)
                names.append(a)
        gids = np.array([gid[a] for a in cols.agent_names], dtype=np.int64)
        sel = cols.sample_sequence >= 0
        # collector._account_columns' codes (the fleet has no expanded source ids).
        codes = ((gids[cols.agent] << 32) | (cols.source_id_type << 24)
                 | cols.source_id_index)[sel]
        cols_in.append((np.ascontiguousarray(codes), cols.sample_sequence[sel].copy()))
    allc = np.concatenate([c for c, _ in cols_in])
    uniq, inv = np.unique(allc, return_inverse=True)
    per_key = np.bincount(inv)
    # Pass 2: every key's numbers moved on by its count, so they follow pass 1's on.
    shifted = []
    at = 0
    for c, q in cols_in:
        shifted.append((c, q + per_key[inv[at:at + c.shape[0]]]))
        at += c.shape[0]
    nrows = int(allc.shape[0])

    def key_of(code: int) -> tuple[str, int, int]:
        return (names[code >> 32], (code >> 24) & 0xFF, code & 0x00FFFFFF)

    def warm(impl: str) -> ColumnSequenceTracker:
        t = ColumnSequenceTracker(impl=impl)  # type: ignore[arg-type]
        for c, q in cols_in:
            t.observe_columns(c, q, key_of)
        return t

    def timed(t: ColumnSequenceTracker) -> float:
        def go() -> None:
            for c, q in shifted:
                t.observe_columns(c, q, key_of)
        return _cpu(go)

    check = {impl: warm(impl) for impl in ("c", "python")}
    for t in check.values():
        timed(t)
    a, b = check["c"], check["python"]
    assert (a.lost, a.resets, a.duplicates, a.late, a.evicted_keys) == (
        b.lost, b.resets, b.duplicates, b.late, b.evicted_keys)
    assert not a.lost and not a.resets and len(a) == len(b) == uniq.shape[0]
    figs: dict[str, list[float]] = {"c": [], "python": []}
    for rep in range(reps):
        gc.collect()
        for impl in ("c", "python"):
            figs[impl].append(nrows / timed(warm(impl)))
        print(f"rep {rep + 1}: sample sequence tracker: C walk {figs['c'][-1]:,.0f} "
              f"samples/CPU-s, numpy {figs['python'][-1]:,.0f}")
    ratio = statistics.median(c / p for c, p in zip(figs["c"], figs["python"], strict=True))
    mc, mp = statistics.median(figs["c"]), statistics.median(figs["python"])
    print(f"median sample sequence tracker ({uniq.shape[0]} keys, {nrows} rows a pass): C walk "
          f"{mc:,.0f} samples/CPU-s ({1e9 / mc:.0f} ns/sample), numpy {mp:,.0f} "
          f"({1e9 / mp:.0f} ns/sample); same-rep ratio {ratio:.2f}x")
    return figs, ratio, nrows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--agents", type=int, default=200)
    ap.add_argument("--samples-per-port", type=int, default=10)
    ap.add_argument("--batch", type=int, default=1024, help="datagrams per decode call")
    args = ap.parse_args()

    from rackwarden.drivers.sflow import cwalk
    from rackwarden.drivers.sflow.batch import decode_batch_columns_in

    from bench.sflow_batch import build_corpus

    if not cwalk.compiled_available():
        print(f"the compiled walker is not built: {cwalk.unavailable_reason()}")
        return 1
    datagrams, _, nsamples = build_corpus(args.samples_per_port, agents=args.agents)
    n = len(datagrams)
    batches = _batches(datagrams, args.batch)
    print(f"corpus: {n} datagrams, {nsamples} flow samples, "
          f"{sum(map(len, datagrams)) / n:.0f} bytes/datagram, {len(batches)} batches of "
          f"{args.batch}")
    at = datetime(2025, 1, 1, tzinfo=UTC)
    stamps = [([1000.0] * len(s), [at] * len(s)) for _, s, _ in batches]

    def decode_all() -> int:
        rows = 0
        for (blob, starts, lens), (nows, ats) in zip(batches, stamps, strict=True):
            rows += len(decode_batch_columns_in(blob, starts, lens, nows, ats,
                                                first_number=0).cols)
        return rows

    def run(impl: str) -> float:
        os.environ[cwalk.ENV_VAR] = impl
        try:
            return _cpu(decode_all)
        finally:
            del os.environ[cwalk.ENV_VAR]

    # The same answers (the full check is tests/unit/test_sflow_cwalk.py), and every sample
    # taken by the bulk read.
    blob, starts, lens = batches[0]
    nows, ats = stamps[0]
    got = {}
    for impl in ("c", "python"):
        os.environ[cwalk.ENV_VAR] = impl
        got[impl] = decode_batch_columns_in(blob, starts, lens, nows, ats, first_number=0)
        del os.environ[cwalk.ENV_VAR]
    a, b = got["c"].cols, got["python"].cols
    for f in ("agent", "input_ifindex", "src_lo", "dst_lo", "src_port", "dst_port", "protocol",
              "tcp_flags", "sample_sequence", "ref"):
        assert np.array_equal(getattr(a, f), getattr(b, f)), f
    assert not got["c"].fallback and not got["python"].fallback

    # The collector's copy: datagrams in 64 KiB slots of an anonymous map, gathered.
    k = min(args.batch, n)
    slots = mmap.mmap(-1, k * SLOT + 64)
    for i, d in enumerate(datagrams[:k]):
        slots[i * SLOT:i * SLOT + len(d)] = d
    view = memoryview(slots)
    sl_starts = np.arange(k, dtype=np.int64) * SLOT
    sl_padded = np.array([(len(d) + 3) & ~3 for d in datagrams[:k]], dtype=np.int64)
    assert cwalk.gather(view, sl_starts, sl_padded, impl="c") == cwalk.gather_py(
        view, sl_starts, sl_padded)
    gather_reps = max(1, 200_000 // k)

    def gathers(impl: str) -> float:
        def go() -> None:
            for _ in range(gather_reps):
                cwalk.gather(view, sl_starts, sl_padded, impl=impl)  # type: ignore[arg-type]
        return _cpu(go) / (gather_reps * k)

    figs: dict[str, list[float]] = {"c": [], "python": [], "gather_c": [], "gather_py": []}
    for rep in range(args.reps):
        gc.collect()
        for impl in ("c", "python"):
            figs[impl].append(nsamples / run(impl))
        figs["gather_c"].append(gathers("c") * 1e9)
        figs["gather_py"].append(gathers("python") * 1e9)
        print(f"rep {rep + 1}: C walk {figs['c'][-1]:,.0f} samples/CPU-s, numpy walk "
              f"{figs['python'][-1]:,.0f}; gather {figs['gather_c'][-1]:.0f} ns/datagram in C, "
              f"{figs['gather_py'][-1]:.0f} joined")
    med = {key: statistics.median(v) for key, v in figs.items()}
    # Same-rep ratios (the two walkers ran back to back), then their median: the machine's
    # load moves between reps more than between the two halves of one.
    ratio = statistics.median(c / p for c, p in zip(figs["c"], figs["python"], strict=True))
    gratio = statistics.median(p / c for c, p in zip(figs["gather_c"], figs["gather_py"],
                                                     strict=True))
    print(f"median decode_batch_columns_in: C walk {med['c']:,.0f} samples/CPU-s "
          f"({1e9 / med['c']:.0f} ns/sample), numpy walk {med['python']:,.0f} "
          f"({1e9 / med['python']:.0f} ns/sample); same-rep ratio {ratio:.2f}x")
    print(f"median gather: {med['gather_c']:.0f} ns/datagram in C, {med['gather_py']:.0f} "
          f"with the join; ratio {gratio:.2f}x")
    view.release()
    slots.close()
    tfigs, tratio, nrows = _tracker_bench(batches, stamps, args.reps)
    print(json.dumps({
        "c_walk_samples_per_cpu_s": round(med["c"]),
        "numpy_walk_samples_per_cpu_s": round(med["python"]),
        "ratio_c_vs_numpy_walk": round(ratio, 3),
        "gather_c_ns_per_datagram": round(med["gather_c"], 1),
        "gather_join_ns_per_datagram": round(med["gather_py"], 1),
        "ratio_gather_join_vs_c": round(gratio, 3),
        "c_tracker_samples_per_cpu_s": round(statistics.median(tfigs["c"])),
        "numpy_tracker_samples_per_cpu_s": round(statistics.median(tfigs["python"])),
        "ratio_c_vs_numpy_tracker": round(tratio, 3),
        "tracker_rows": nrows,
        "datagrams": n, "samples": nsamples, "batch": args.batch, "reps": args.reps,
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
