"""Lab traffic: a rate-paced UDP sender (L2 bits per second) and a counting UDP sink."""

from __future__ import annotations

import argparse
import errno
import json
import os
import select
import signal
import socket
import sys
import time
from dataclasses import asdict, dataclass
from types import FrameType

ETH_HEADER = 14  # dst MAC, src MAC, EtherType; veth counters exclude the 4-byte FCS
IPV4_HEADER = 20
UDP_HEADER = 8
L2_OVERHEAD = ETH_HEADER + IPV4_HEADER + UDP_HEADER
MIN_FRAME = 60  # shorter frames are padded on the wire, which would skew the byte accounting
MAX_FRAME = 1514  # one 1500-byte MTU datagram, so no IP fragmentation

# Errors a flooding host shrugs off: a downed port, a full queue, an ICMP unreachable echoed
# back. They are counted, not fatal, so a shut port does not end the run.
_SOFT_ERRNOS = {errno.ENOBUFS, errno.EAGAIN, errno.ECONNREFUSED, errno.EHOSTUNREACH,
                errno.ENETUNREACH, errno.ENETDOWN, errno.EPERM}


@dataclass(frozen=True)
class SendResult:
    """What a sender run did, in the switch's units (L2 bytes without FCS)."""

    frames_sent: int
    l2_bytes_sent: int
    elapsed_s: float
    rate_bps_achieved: float
    send_errors: int
    target_rate_bps: float
    frame_bytes: int
    frames_skipped: int = 0  # due while the sender was starved beyond its backlog: never sent
    timeline: list[tuple[float, int]] | None = None  # (wall time, L2 bytes sent so far)


def payload_len(frame_bytes: int) -> int:
    """UDP payload that makes an Ethernet frame (no FCS) of exactly frame_bytes."""
    if not MIN_FRAME <= frame_bytes <= MAX_FRAME:
        raise ValueError(f"frame_bytes must be {MIN_FRAME}..{MAX_FRAME}, got {frame_bytes}")
    return frame_bytes - L2_OVERHEAD


class _Stop:
    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True


def send_udp(
    dst: str,
    port: int,
    rate_bps: float,
    duration_s: float,
    frame_bytes: int = 1400,
    burst_frames: int = 4,
    stop: _Stop | None = None,
    max_backlog_s: float = 0.2,
    timeline_step_s: float = 0.1,
) -> SendResult:
    """Send UDP so the switch counts rate_bps of L2 traffic for duration_s seconds.

    Paced like a NIC with a small queue: a late wake-up is made up by a short burst of at most
    max_backlog_s worth of frames; anything older is skipped, not sent. So no window of the
    run carries much more than rate_bps (a 5 Mbit/s server starved for a second must not
    burst to 10 Mbit/s in the next one), and a starved sender shows as a lower achieved rate.
    `timeline` records (wall time, L2 bytes sent so far) every timeline_step_s, so a test can
    compare a meter with what was sent in exactly the meter's window.
    """
    if rate_bps <= 0 or duration_s <= 0:
        raise ValueError("rate_bps and duration_s must be positive")
    payload = os.urandom(payload_len(frame_bytes))
    frame_interval_s = frame_bytes * 8 / rate_bps
    max_backlog = max(burst_frames, int(max_backlog_s / frame_interval_s))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    # Unconnected sendto: ICMP port unreachables are then not reported back as ECONNREFUSED.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    slot = ok = errors = skipped = 0  # slot: frames due so far, sent or skipped
    timeline: list[tuple[float, int]] = [(time.time(), 0)]
    start = time.monotonic()
    end = start + duration_s
    next_mark = start + timeline_step_s
    try:
        while stop is None or not stop.requested:
            now = time.monotonic()
            if now >= next_mark:
                timeline.append((time.time(), ok * frame_bytes))
                next_mark = now + timeline_step_s
            if now >= end:
                break
            due = int((now - start) / frame_interval_s) + 1
            if due - slot > max_backlog:
                skipped += due - slot - max_backlog
                slot = due - max_backlog
            batch = min(due - slot, burst_frames)
            for _ in range(batch):
                slot += 1
                try:
                    sock.sendto(payload, (dst, port))
                    ok += 1
                except OSError as exc:
                    if exc.errno not in _SOFT_ERRNOS:
                        raise
                    # A failed frame is still spent, so a dead port does not cause a burst of
                    # catch-up traffic when it comes back.
                    errors += 1
                    break
            if slot >= due:
                next_at = start + slot * frame_interval_s
                delay = min(next_at, end, next_mark) - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
    finally:
        sock.close()
    timeline.append((time.time(), ok * frame_bytes))
    elapsed = min(time.monotonic(), end) - start
    l2 = ok * frame_bytes
    return SendResult(
        frames_sent=ok,
        l2_bytes_sent=l2,
        elapsed_s=round(elapsed, 6),
        rate_bps_achieved=round(l2 * 8 / elapsed, 1) if elapsed > 0 else 0.0,
        send_errors=errors,
        target_rate_bps=rate_bps,
        frame_bytes=frame_bytes,
        frames_skipped=skipped,
        timeline=timeline,
    )


def sent_between(timeline: list[tuple[float, int]] | list[list[float]], t0: float, t1: float) -> float:
    """L2 bytes a sender sent between wall times t0 and t1, interpolated within its timeline."""

    def at(t: float) -> float:
        points = [(float(a), float(b)) for a, b in timeline]
        if t <= points[0][0]:
            return points[0][1]
        for (ta, ba), (tb, bb) in zip(points, points[1:], strict=False):
            if ta <= t <= tb:
                return ba if tb == ta else ba + (bb - ba) * (t - ta) / (tb - ta)
        return points[-1][1]

    return at(t1) - at(t0)


def run_sink(bind: str, port: int, stats_file: str, stop: _Stop, flush_s: float = 0.05) -> None:
    """Receive and drop UDP, keeping per-source counts in a JSON file (atomically replaced)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
    sock.bind((bind, port))
    sock.setblocking(False)
    counts: dict[str, list[int]] = {}
    buf = bytearray(65536)
    dirty = True
    last_flush = 0.0

    def flush() -> None:
        tmp = stats_file + ".tmp"
        with open(tmp, "w") as fh:
            json.dump({"sources": {s: {"packets": c[0], "bytes": c[1]}
                                   for s, c in counts.items()}}, fh)
        os.replace(tmp, stats_file)

    flush()
    while not stop.requested:
        ready, _, _ = select.select([sock], [], [], flush_s)
        if ready:
            while True:
                try:
                    n, (src, _sport) = sock.recvfrom_into(buf)
                except BlockingIOError:
                    break
                c = counts.setdefault(src, [0, 0])
                c[0] += 1
                c[1] += n
                dirty = True
        now = time.monotonic()
        if dirty and now - last_flush >= flush_s:
            flush()
            dirty = False
            last_flush = now
    flush()
    sock.close()


def tcp_probe(dst: str, port: int, count: int, timeout_s: float, payload: int = 1000) -> dict[str, int]:
    """Open `count` TCP connections to dst:port, each sending `payload` bytes (an SMTP fan-out
    or HTTP requests, as far as a switch ACL can tell); how many connected and were sent."""
    done = failed = 0
    for _ in range(count):
        try:
            with socket.create_connection((dst, port), timeout=timeout_s) as sock:
                sock.sendall(b"x" * payload)
            done += 1
        except OSError:
            failed += 1
    return {"port": port, "connected": done, "failed": failed}


def run_tcp_sink(bind: str, ports: list[int], stats_file: str, stop: _Stop) -> None:
    """Accept TCP on `ports`; per source address and port: connections accepted and bytes
    received, in a JSON file ({source: {port: {"connections", "bytes"}}})."""
    listeners = {}
    for port in ports:
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((bind, port))
        srv.listen(64)
        listeners[srv] = port
    counts: dict[str, dict[int, list[int]]] = {}
    conns: dict[socket.socket, list[int]] = {}

    def flush() -> None:
        with open(stats_file + ".tmp", "w") as fh:
            json.dump({src: {str(p): {"connections": c[0], "bytes": c[1]} for p, c in per.items()}
                       for src, per in counts.items()}, fh)
        os.replace(stats_file + ".tmp", stats_file)

    flush()
    while not stop.requested:
        ready, _, _ = select.select([*listeners, *conns], [], [], 0.05)
        for sock in ready:
            if sock in listeners:
                conn, (src, _sport) = sock.accept()
                count = counts.setdefault(src, {p: [0, 0] for p in ports})[listeners[sock]]
                count[0] += 1
                conns[conn] = count
                continue
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            if data:
                conns[sock][1] += len(data)
            else:
                del conns[sock]
                sock.close()
        if ready:
            flush()
    flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.lab.traffic", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    udp = sub.add_parser("udp", help="rate-paced UDP sender; prints one JSON line at the end")
    udp.add_argument("--dst", required=True)
    udp.add_argument("--port", type=int, default=9)
    udp.add_argument("--rate-bps", type=float, required=True, help="L2 bits/s (frame, no FCS)")
    udp.add_argument("--duration-s", type=float, required=True)
    udp.add_argument("--frame-bytes", type=int, default=1400)
    udp.add_argument("--burst-frames", type=int, default=4)
    sink = sub.add_parser("sink", help="count and drop UDP; per-source counts in a JSON file")
    sink.add_argument("--bind", required=True)
    sink.add_argument("--port", type=int, default=9)
    sink.add_argument("--stats-file", required=True)
    tcp = sub.add_parser("tcp", help="open TCP connections and send a little; prints one JSON line")
    tcp.add_argument("--dst", required=True)
    tcp.add_argument("--port", type=int, required=True)
    tcp.add_argument("--count", type=int, default=3)
    tcp.add_argument("--timeout-s", type=float, default=1.0)
    tsink = sub.add_parser("tcp-sink", help="accept TCP on several ports; per-port counts in a JSON file")
    tsink.add_argument("--bind", required=True)
    tsink.add_argument("--ports", required=True, help="comma-separated")
    tsink.add_argument("--stats-file", required=True)
    args = parser.parse_args(argv)

    stop = _Stop()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.cmd == "udp":
        result = send_udp(args.dst, args.port, args.rate_bps, args.duration_s,
                          args.frame_bytes, args.burst_frames, stop)
        print(json.dumps(asdict(result)), flush=True)
        return 0
    if args.cmd == "tcp":
        print(json.dumps(tcp_probe(args.dst, args.port, args.count, args.timeout_s)), flush=True)
        return 0
    if args.cmd == "tcp-sink":
        run_tcp_sink(args.bind, [int(p) for p in args.ports.split(",")], args.stats_file, stop)
        return 0
    run_sink(args.bind, args.port, args.stats_file, stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
