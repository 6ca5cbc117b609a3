"""Benchmark: the sFlow receive thread's CPU per datagram, recvmmsg against recvfrom, same run.

bench/sflow_batch.py's fleet datagrams (~1.3 KB, 7 flow samples each) are sent over loopback
UDP into an SflowCollector's socket, --batch at a time, while no receive thread runs; then the
collector's own receive loop (the real SflowCollector._receive_forever or _receive_mmsg, on a
thread of its own) drains them: receive, allow-list, raw ring and the bulk column decode, the
part that runs on the receive thread. The event loop is a stub that takes the prepared
batches and does nothing with them, so the figure is the receive thread's work alone,
measured with time.thread_time() on that thread. The two loops alternate, --reps times each;
figures are medians, in µs of receive-thread CPU per datagram, and the median of the same-rep
ratios, beside decode_batch_columns alone on the same datagrams (the decode share, timed on
the main thread after them). Also the process RSS before and after the
recvmmsg buffer is made and filled (fleet datagrams, then 64 KB ones). Ends with one JSON
line.
"""

from __future__ import annotations

import argparse
import gc
import json
import socket
import statistics
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class _WallClock:
    def now(self) -> float:
        return time.monotonic()

    def at(self) -> datetime:
        return datetime.now(UTC)


class _StubLoop:
    """call_soon_threadsafe that only hands the batch back (no event loop work is timed)."""

    def __init__(self, col: Any) -> None:
        self.col = col
        self.datagrams = 0
        self.accepted = 0
        self.samples = 0

    def call_soon_threadsafe(self, fn: Any, *args: Any) -> None:
        if fn.__name__ == "_deliver_columns":
            prepared, n = args
            with self.col._pending_lock:
                self.col._pending -= n
            self.accepted += sum(k for _, k in prepared.accepted)
            self.samples += len(prepared.decoded.cols) if prepared.decoded is not None else 0
        self.datagrams += args[-1] if fn.__name__ in ("_deliver_columns",
                                                      "_count_failed_batch",
                                                      "_count_backlog_drop") else 0


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _one(mode: str, datagrams: list[bytes], batch: int) -> tuple[float, int, int]:
    """Receive-thread CPU seconds to take len(datagrams) datagrams, and what it took."""
    from rackwarden.drivers.sflow import mmsg
    from rackwarden.drivers.sflow.collector import MAX_DATAGRAM, SflowCollector
    from rackwarden.drivers.sflow.rawring import RawRing

    col = SflowCollector(allowed_agents=["127.0.0.1"], on_samples=lambda s: None,
                         clock=_WallClock(), bind="127.0.0.1", port=0, batch_max=1024,
                         on_columns=lambda c: None, raw_ring=RawRing(), batch_wait_s=0.0)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    col._raise_rcvbuf(sock)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    col._sock = sock
    stub = _StubLoop(col)
    col._loop = stub  # type: ignore[assignment]
    if mode == "recvmmsg":
        col._mmsg = mmsg.MmsgReceiver(sock.fileno(), socket.AF_INET, 1024, MAX_DATAGRAM)
        target = col._receive_mmsg
    else:
        target = col._receive_forever
    cpu = [0.0]

    def run() -> None:
        t0 = time.thread_time()
        target()
        cpu[0] = time.thread_time() - t0

    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    total_cpu = 0.0
    for i in range(0, len(datagrams), batch):
        for d in datagrams[i:i + batch]:
            tx.sendto(d, ("127.0.0.1", port))
        want = stub.datagrams + len(datagrams[i:i + batch])
        col._stopping.clear()
        th = threading.Thread(target=run)
        th.start()
        deadline = time.monotonic() + 30
        while stub.datagrams < want and time.monotonic() < deadline:
            time.sleep(0.002)
        col._stopping.set()
        try:
            sock.shutdown(socket.SHUT_RD)
        except OSError:
            pass
        th.join(5)
        total_cpu += cpu[0]
        # A shutdown socket stays readable-at-EOF: the next round gets a fresh one on the same
        # collector (and a fresh recvmmsg receiver), the old one's queue being empty.
        sock.close()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        col._raise_rcvbuf(sock)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        col._sock = sock
        if mode == "recvmmsg":
            col._mmsg = mmsg.MmsgReceiver(sock.fileno(), socket.AF_INET, 1024, MAX_DATAGRAM)
    sock.close()
    tx.close()
    return total_cpu, stub.accepted, stub.samples


def _rss_probe(datagrams: list[bytes]) -> dict[str, float]:
    """RSS (MB) before and after a recvmmsg receiver is made, after batches of the fleet's
    datagrams, and after 64 KB datagrams (whose slots release() gives back)."""
    from rackwarden.drivers.sflow import mmsg
    from rackwarden.drivers.sflow.collector import MAX_DATAGRAM

    out = {"before": _rss_kb() / 1024}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        try:  # as the collector: past net.core.rmem_max when allowed
            sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), 16 << 20)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
        sock.bind(("127.0.0.1", 0))
        to = sock.getsockname()
        rx = mmsg.MmsgReceiver(sock.fileno(), socket.AF_INET, 1024, MAX_DATAGRAM)
        out["made"] = _rss_kb() / 1024

        def drain(payloads: list[bytes]) -> None:
            for i in range(0, len(payloads), 512):
                for d in payloads[i:i + 512]:
                    tx.sendto(d, to)
                got, deadline = 0, time.monotonic() + 5
                while got < len(payloads[i:i + 512]) and time.monotonic() < deadline:
                    got += rx.receive(got, False)
                rx.release(got)

        drain(datagrams[:4096])
        out["fleet"] = _rss_kb() / 1024
        drain([b"\0" * 60000] * 256)
        out["large_released"] = _rss_kb() / 1024
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--agents", type=int, default=20)
    ap.add_argument("--samples-per-port", type=int, default=60)
    ap.add_argument("--batch", type=int, default=4096,
                    help="datagrams sent into the socket before the loop drains them")
    args = ap.parse_args()

    from rackwarden.drivers.sflow import mmsg
    from rackwarden.drivers.sflow.batch import decode_batch_columns

    from bench.sflow_batch import build_corpus

    if not mmsg.available():
        print("recvmmsg is not available here")
        return 1
    datagrams, _, nsamples = build_corpus(args.samples_per_port, agents=args.agents)
    n = len(datagrams)
    print(f"corpus: {n} datagrams, {nsamples} flow samples, "
          f"{sum(map(len, datagrams)) / n:.0f} bytes/datagram; sent {args.batch} at a time")
    rss = _rss_probe(datagrams)
    print(f"RSS: {rss['before']:.1f} MB, {rss['made']:.1f} with a 1,024-slot recvmmsg buffer "
          f"(64 MiB mapped), {rss['fleet']:.1f} after 4,096 fleet datagrams, "
          f"{rss['large_released']:.1f} after 256 datagrams of 60 KB (released)")
    rss0 = _rss_kb()
    figs: dict[str, list[float]] = {"recvfrom": [], "recvmmsg": [], "decode": []}
    for rep in range(args.reps):
        gc.collect()  # the last rep's collectors and their buffers
        for mode in ("recvfrom", "recvmmsg"):
            cpu, got, samples = _one(mode, datagrams, args.batch)
            if got != n or samples != nsamples:
                print(f"{mode}: took {got} of {n} datagrams, {samples} samples: loss, retry "
                      "with a smaller --batch")
                return 1
            figs[mode].append(cpu / n * 1e6)
        nows = [1000.0] * n
        ats = [datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=0)] * n
        t0 = time.thread_time()
        for i in range(0, n, 1024):
            decode_batch_columns(datagrams[i:i + 1024], nows[i:i + 1024], ats[i:i + 1024])
        figs["decode"].append((time.thread_time() - t0) / n * 1e6)
        print(f"rep {rep + 1}: recvfrom {figs['recvfrom'][-1]:.2f} µs/datagram, recvmmsg "
              f"{figs['recvmmsg'][-1]:.2f}, decode_batch_columns alone {figs['decode'][-1]:.2f}")
    rss1 = _rss_kb()
    med = {k: statistics.median(v) for k, v in figs.items()}
    # Same-rep ratios (the two loops ran back to back), then their median: the machine's load
    # moves between reps more than between the two halves of one.
    ratio = statistics.median(a / b for a, b in zip(figs["recvfrom"], figs["recvmmsg"],
                                                     strict=True))
    print(f"median receive-thread CPU per datagram: recvfrom loop {med['recvfrom']:.2f} µs, "
          f"recvmmsg loop {med['recvmmsg']:.2f} µs; same-rep ratio {ratio:.2f}x; decode alone "
          f"{med['decode']:.2f} µs")
    print("receive thread minus decode_batch_columns alone (approximate): recvfrom "
          f"{med['recvfrom'] - med['decode']:.2f} µs, recvmmsg "
          f"{med['recvmmsg'] - med['decode']:.2f} µs per datagram")
    print(f"process RSS {rss0 / 1024:.1f} MB before the reps, {rss1 / 1024:.1f} MB after")
    print(json.dumps({
        "recvfrom_us_per_datagram": round(med["recvfrom"], 3),
        "recvmmsg_us_per_datagram": round(med["recvmmsg"], 3),
        "decode_us_per_datagram": round(med["decode"], 3),
        "ratio_recvfrom_vs_recvmmsg": round(ratio, 3),
        "recvmmsg_samples_per_receive_cpu_s": round(nsamples / n / med["recvmmsg"] * 1e6),
        "recvfrom_samples_per_receive_cpu_s": round(nsamples / n / med["recvfrom"] * 1e6),
        "datagrams": n, "reps": args.reps, "rss_mb_before": round(rss0 / 1024, 1),
        "rss_mb_after": round(rss1 / 1024, 1),
        "recvmmsg_buffer_rss_mb": round(rss["fleet"] - rss["before"], 1),
        "recvmmsg_buffer_rss_mb_after_large": round(rss["large_released"] - rss["before"], 1),
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
