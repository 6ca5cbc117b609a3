"""Lab abuse traffic run inside a namespace: floods, spam, scans, spoofing, proxy, a download.

Usage: `ip netns exec NS python -m tests.lab.attacks KIND [options]`. Packets are crafted with
scapy once and sent through a raw IP socket (the kernel routes and resolves the next hop, so
spoofed sources and bare SYNs go out exactly as built). Every sender is bounded in packets and
time, prints `{"event": "start", "now": <monotonic>}` when its first packet leaves (the clock
is shared across namespaces) and a JSON summary when done.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import time
from collections.abc import Sequence

MAX_DURATION_S = 30.0
MAX_PACKETS = 2_000_000


def _emit(obj: dict[str, object]) -> None:
    print(json.dumps(obj), flush=True)


def _raw_ip_socket() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)  # implies HDRINCL
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    return s


def _paced_send(packets: Sequence[tuple[bytes, str]], pps: float, duration_s: float,
                limit: int) -> dict[str, object]:
    """Send (ip packet, dst) cyclically at `pps` for `duration_s` or `limit` packets."""
    duration_s = min(duration_s, MAX_DURATION_S)
    limit = min(limit, MAX_PACKETS)
    sock = _raw_ip_socket()
    sent = errors = 0
    start = time.monotonic()
    _emit({"event": "start", "now": start})
    n = len(packets)
    end = start + duration_s
    while sent < limit:
        now = time.monotonic()
        if now >= end:
            break
        due = min(limit, int((now - start) * pps) + 1)
        while sent < due:
            pkt, dst = packets[sent % n]
            try:
                sock.sendto(pkt, (dst, 0))
            except OSError:
                errors += 1  # ENOBUFS under a flood is the point, not a failure
            sent += 1
        if sent >= due:
            time.sleep(0.0005)
    elapsed = time.monotonic() - start
    sock.close()
    return {"event": "done", "sent": sent, "errors": errors, "elapsed_s": round(elapsed, 3),
            "pps": round(sent / elapsed if elapsed else 0.0, 1)}


def _src_ip(dst: str) -> str:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect((dst, 9))
        return str(probe.getsockname()[0])
    finally:
        probe.close()


def udp_flood(a: argparse.Namespace) -> dict[str, object]:
    from scapy.layers.inet import IP, UDP

    src = a.src or _src_ip(a.dst)
    payload = os.urandom(max(0, a.size - 42))
    pkts = [(bytes(IP(src=src, dst=a.dst) / UDP(sport=20000 + i, dport=a.port) / payload),
             a.dst) for i in range(64)]
    return _paced_send(pkts, a.pps, a.duration, a.count)


def syn_flood(a: argparse.Namespace) -> dict[str, object]:
    from scapy.layers.inet import IP, TCP

    src = a.src or _src_ip(a.dst)
    pkts = [(bytes(IP(src=src, dst=a.dst) / TCP(sport=1024 + i, dport=a.port, flags="S",
                                                 seq=i * 7919)), a.dst) for i in range(1024)]
    return _paced_send(pkts, a.pps, a.duration, a.count)


def scan(a: argparse.Namespace) -> dict[str, object]:
    from scapy.layers.inet import IP, TCP

    src = _src_ip(a.dst)
    ports = range(a.first_port, a.first_port + a.ports)
    pkts = [(bytes(IP(src=src, dst=a.dst) / TCP(sport=41000, dport=p, flags="S")), a.dst)
            for p in ports]
    return _paced_send(pkts, a.pps, a.duration, len(pkts))


def spoof(a: argparse.Namespace) -> dict[str, object]:
    """UDP with another server's address as the source: IP theft as R4 means it."""
    from scapy.layers.inet import IP, UDP

    pkts = [(bytes(IP(src=a.src, dst=a.dst) / UDP(sport=30000 + i, dport=a.port) / (b"x" * 64)),
             a.dst) for i in range(16)]
    return _paced_send(pkts, a.pps, a.duration, a.count)


# ---- real TCP services ---------------------------------------------------------------------

async def _smtp_session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        writer.write(b"220 lab ESMTP\r\n")
        await writer.drain()
        in_data = False
        while line := await asyncio.wait_for(reader.readline(), 10):
            if in_data:
                if line == b".\r\n":
                    in_data = False
                    writer.write(b"250 queued\r\n")
                continue
            cmd = line[:4].upper()
            if cmd == b"DATA":
                in_data = True
                writer.write(b"354 go on\r\n")
            elif cmd == b"QUIT":
                writer.write(b"221 bye\r\n")
                await writer.drain()
                break
            else:
                writer.write(b"250 ok\r\n")
            await writer.drain()
    except (TimeoutError, OSError):
        pass
    finally:
        writer.close()


async def _http_session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        await asyncio.wait_for(reader.readline(), 5)
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
    except (TimeoutError, OSError):
        pass
    finally:
        writer.close()


async def _bulk_session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        rate_bps: float, duration_s: float) -> None:
    """Send `rate_bps` of payload for `duration_s`: the legitimate heavy download."""
    chunk = os.urandom(8192)
    start = time.monotonic()
    sent = 0
    try:
        while (now := time.monotonic()) - start < min(duration_s, MAX_DURATION_S):
            due = int((now - start) * rate_bps / 8)
            while sent < due:
                writer.write(chunk)
                sent += len(chunk)
            await writer.drain()
            await asyncio.sleep(0.005)
    except OSError:
        pass
    finally:
        writer.close()


async def _listeners(a: argparse.Namespace) -> None:
    servers = []
    for addr in a.addrs:
        servers.append(await asyncio.start_server(_smtp_session, addr, 25, reuse_address=True))
        servers.append(await asyncio.start_server(_http_session, addr, 80, reuse_address=True))
    if a.bulk_addr:
        async def bulk(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await _bulk_session(r, w, a.bulk_rate_bps, a.bulk_duration)
        servers.append(await asyncio.start_server(bulk, a.bulk_addr, a.bulk_port,
                                                  reuse_address=True))
    _emit({"event": "ready", "listeners": len(servers)})
    await asyncio.sleep(a.lifetime)


async def _smtp_client(dst: str, src: str | None) -> bool:
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(dst, 25, local_addr=(src, 0) if src else None), 5)
    except (TimeoutError, OSError):
        return False
    ok = False
    try:
        await reader.readline()
        for cmd in (b"EHLO spam.example\r\n", b"MAIL FROM:<a@spam.example>\r\n",
                    f"RCPT TO:<victim@{dst}>\r\n".encode(), b"DATA\r\n"):
            writer.write(cmd)
            await writer.drain()
            await reader.readline()
        writer.write(b"Subject: buy now\r\n\r\ncheap\r\n.\r\nQUIT\r\n")
        await writer.drain()
        ok = (await reader.readline()).startswith(b"250")
    except (TimeoutError, OSError):
        pass
    finally:
        writer.close()
    return ok


async def _spam(a: argparse.Namespace) -> dict[str, object]:
    _emit({"event": "start", "now": time.monotonic()})
    results = await asyncio.gather(*(_smtp_client(d, None) for d in a.dsts))
    return {"event": "done", "mails": sum(results), "destinations": len(a.dsts)}


async def _proxy_server(a: argparse.Namespace) -> None:
    """A minimal HTTP CONNECT proxy: the R7 behaviour the lab's proxy server shows."""

    async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
        except OSError:
            pass
        finally:
            w.close()

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            _method, target, _ver = line.decode().split()
            host, port = target.rsplit(":", 1)
            ur, uw = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 5)
        except (TimeoutError, OSError, ValueError):
            writer.close()
            return
        writer.write(b"HTTP/1.0 200 Connection established\r\n\r\n")
        await writer.drain()
        await asyncio.gather(pipe(reader, uw), pipe(ur, writer))

    server = await asyncio.start_server(session, "0.0.0.0", a.port, reuse_address=True)
    _emit({"event": "ready"})
    async with server:
        await asyncio.sleep(a.lifetime)


async def _proxy_client(proxy: str, port: int, target: str) -> bool:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(proxy, port), 5)
    except (TimeoutError, OSError):
        return False
    ok = False
    try:
        writer.write(f"CONNECT {target}:80 HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 5)
        await asyncio.wait_for(reader.readline(), 5)
        writer.write(b"GET / HTTP/1.0\r\n\r\n")
        await writer.drain()
        body = await asyncio.wait_for(reader.read(), 5)
        ok = b"200" in status and body.endswith(b"ok")
    except (TimeoutError, OSError):
        pass
    finally:
        writer.close()
    return ok


async def _proxy_clients(a: argparse.Namespace) -> dict[str, object]:
    _emit({"event": "start", "now": time.monotonic()})
    targets = [a.targets[i % len(a.targets)] for i in range(a.connections)]
    results = await asyncio.gather(*(_proxy_client(a.proxy, a.port, t) for t in targets))
    return {"event": "done", "relayed": sum(results), "connections": a.connections}


async def _download(a: argparse.Namespace) -> dict[str, object]:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(a.dst, a.port), 5)
    start = time.monotonic()
    _emit({"event": "start", "now": start})
    got = 0
    while data := await asyncio.wait_for(reader.read(1 << 16), MAX_DURATION_S):
        got += len(data)
    writer.close()
    elapsed = time.monotonic() - start
    return {"event": "done", "bytes": got, "elapsed_s": round(elapsed, 3),
            "rate_bps": round(got * 8 / elapsed if elapsed else 0.0)}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tests.lab.attacks")
    sub = p.add_subparsers(dest="kind", required=True)
    for kind in ("udp-flood", "syn-flood", "spoof"):
        q = sub.add_parser(kind)
        q.add_argument("--dst", required=True)
        q.add_argument("--port", type=int, default=9 if kind != "syn-flood" else 80)
        q.add_argument("--src", default=None, required=kind == "spoof")
        q.add_argument("--pps", type=float, default=20_000)
        q.add_argument("--duration", type=float, default=3.0)
        q.add_argument("--count", type=int, default=100_000)
        q.add_argument("--size", type=int, default=512)
    q = sub.add_parser("scan")
    q.add_argument("--dst", required=True)
    q.add_argument("--first-port", type=int, default=1)
    q.add_argument("--ports", type=int, default=1000)
    q.add_argument("--pps", type=float, default=500)
    q.add_argument("--duration", type=float, default=5.0)
    q = sub.add_parser("listeners")
    q.add_argument("--addrs", nargs="+", required=True)
    q.add_argument("--bulk-addr", default=None)
    q.add_argument("--bulk-port", type=int, default=5001)
    q.add_argument("--bulk-rate-bps", type=float, default=8_000_000)
    q.add_argument("--bulk-duration", type=float, default=4.0)
    q.add_argument("--lifetime", type=float, default=300.0)
    q = sub.add_parser("spam")
    q.add_argument("--dsts", nargs="+", required=True)
    q = sub.add_parser("proxy-server")
    q.add_argument("--port", type=int, default=3128)
    q.add_argument("--lifetime", type=float, default=300.0)
    q = sub.add_parser("proxy-clients")
    q.add_argument("--proxy", required=True)
    q.add_argument("--port", type=int, default=3128)
    q.add_argument("--targets", nargs="+", required=True)
    q.add_argument("--connections", type=int, default=40)
    q = sub.add_parser("download")
    q.add_argument("--dst", required=True)
    q.add_argument("--port", type=int, default=5001)
    a = p.parse_args(argv)

    if a.kind == "udp-flood":
        result = udp_flood(a)
    elif a.kind == "syn-flood":
        result = syn_flood(a)
    elif a.kind == "spoof":
        result = spoof(a)
    elif a.kind == "scan":
        result = scan(a)
    elif a.kind == "listeners":
        asyncio.run(asyncio.wait_for(_listeners(a), a.lifetime + 5))
        return 0
    elif a.kind == "proxy-server":
        asyncio.run(_proxy_server(a))
        return 0
    elif a.kind == "spam":
        result = asyncio.run(_spam(a))
    elif a.kind == "proxy-clients":
        result = asyncio.run(_proxy_clients(a))
    else:
        result = asyncio.run(_download(a))
    _emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
