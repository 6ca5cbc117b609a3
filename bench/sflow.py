"""Benchmark: sFlow v5 full decode (datagram to parsed FlowSamples) beside a bare struct walk."""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from struct import Struct

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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=6.0, help="full decode; the walk gets half")
    args = ap.parse_args()

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
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
