"""Coverage-guided fuzzer (atheris) for the SPAN batch path against the per-frame path.

    python fuzz/span_frames_fuzz.py -max_total_time=600 [libFuzzer flags] [corpus dirs]

Each input is cut into one to four Ethernet frames and laid into a TPACKET_V3 ring as the kernel
lays it (tests/unit/test_span_columns.py `build_ring`). The per-frame capture loop reads the ring
into FlowSamples; the batch loop reads it with the compiled ring walker (one pass: walk, copy
and the C column read) and with the Python walker (numpy read), on a shared mirror (MAC
attribution) and an ingress mirror. Every row (but for the one difference policies/flowcols.py
documents: an IPv6 header's IPv4-mapped address is kept as the IPv4 address), every resolved
raw-ring frame and every counter must equal the per-frame path's, and the C column read must
equal the numpy read
on the same rows at the smallest slot (60 bytes, where reads are clipped to the row). Seeds:
frames of every shape the column read covers and of those it hands to the exact parser. Crashes,
RSS and the report as fuzz/_harness.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests/ holds the ring builder and the comparison this shares

with atheris.instrument_imports():
    from rackwarden.drivers import packets  # noqa: F401  (the exact parser: coverage steers)

import numpy as np  # noqa: E402
from _harness import Harness, write_seeds  # noqa: E402  (fuzz/ is this script's folder on sys.path)
from rackwarden.drivers.capture import ringwalk  # noqa: E402
from rackwarden.drivers.capture.columns import MacTable, frames_to_columns  # noqa: E402
from rackwarden.drivers.capture.rawring import RawFrameRing  # noqa: E402
from rackwarden.policies.flowfacts import FlowSample  # noqa: E402

from tests.unit.test_span_columns import (  # noqa: E402
    MACS,
    _counters,
    assert_same,
    batched,
    build_ring,
    per_frame,
)

C_WALK = ringwalk.compiled_available()


def split(data: bytes) -> list[bytes]:
    """One to four frames: the first byte says how many, the rest is cut evenly."""
    if not data:
        return [b""]
    n = 1 + data[0] % 4
    body = data[1:]
    step = max(1, -(-len(body) // n))
    frames = [body[i:i + step] for i in range(0, len(body), step)][:n]
    return frames or [b""]


def check_reads(frames: list[bytes]) -> None:
    """The C read and the numpy read of the same rows at a 60-byte slot agree column by column."""
    slot = 60
    rows = np.zeros((len(frames), slot), dtype=np.uint8)
    caplen = np.array([min(len(f), slot) for f in frames], dtype=np.int64)
    for i, f in enumerate(frames):
        rows[i, :caplen[i]] = np.frombuffer(f[:slot], dtype=np.uint8)
    macs = MacTable({m: 10 + i for i, m in enumerate(MACS)})
    now = np.zeros(len(frames), dtype=np.float64)
    got = [frames_to_columns(rows, caplen, caplen, now, agent="span:x", sampling_rate=1,
                             input_ifindex=None, output_ifindex=None, macs=macs, impl=impl)
           for impl in ("c", "python")]
    (c, cs), (p, ps) = got
    if cs != ps:
        raise AssertionError(f"C read stats {cs} differ from numpy's {ps}")
    for i in range(len(c)):
        if c.row(i) != p.row(i):
            raise AssertionError(f"C read row {i} {c.row(i)} differs from numpy's {p.row(i)}")


def _as_columns_keep(s: FlowSample, field: str) -> object:
    """A FlowSample field as SampleColumns can hold it: an IPv6 header's IPv4-mapped address
    (::ffff:a.b.c.d) is kept as the IPv4 address (policies/flowcols.py, the one documented
    difference; the raw ring still resolves the exact FlowSample)."""
    v = getattr(s, field)
    if field in ("src_ip", "dst_ip") and isinstance(v, str) and v.startswith("::ffff:") \
            and v.count(".") == 3:
        return v[len("::ffff:"):]
    return v


def check(data: bytes) -> None:
    frames = split(data)
    ring = build_ring(frames, [0] * len(frames))
    for kind in ("shared", "ingress"):
        want, old = per_frame(ring, kind)
        for walker in (("c", "python") if C_WALK else ("python",)):
            # A small raw ring: the default 32 MiB one per call is what the fuzzer would
            # measure, not the code.
            cols, cap = batched(ring, kind, walker, batch_frames=2,
                                raw_ring=RawFrameRing(byte_budget=1 << 14, slot=256))
            where = f"{walker} walker, {kind} mirror"
            try:
                assert_same(cols, cap, want, kept=_as_columns_keep)
            except AssertionError as e:
                raise AssertionError(f"{where}: batch differs from the per-frame path: "
                                     f"{e}") from None
            if _counters(cap) != _counters(old):
                raise AssertionError(f"{where}: counters {_counters(cap)} differ from "
                                     f"{_counters(old)}")
    if C_WALK:
        check_reads(frames)


def seed_corpus(into: Path) -> int:
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6, IPv6ExtHdrHopByHop
    from scapy.layers.l2 import ARP, Dot1Q, Ether

    e = Ether(src=MACS[0], dst=MACS[1])
    pkts = [
        e / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1, dport=25, flags="S"),
        e / IP(src="10.0.0.1", dst="10.0.0.2", options=b"\x01" * 8) / UDP(sport=5, dport=53),
        e / IP(src="10.0.0.1", dst="10.0.0.2", frag=3) / UDP(),
        e / Dot1Q(vlan=5) / IP(src="10.0.0.1", dst="10.0.0.2") / ICMP(),
        e / Dot1Q(vlan=5) / Dot1Q(vlan=6) / IP() / TCP(),
        e / IPv6(src="2001:db8::1", dst="2001:db8::2") / TCP(flags="SA"),
        e / IPv6(src="2001:db8::1", dst="2001:db8::2") / ICMPv6EchoRequest(),
        e / IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrHopByHop() / UDP(),
        e / ARP(),
    ]
    seeds = [bytes([0]) + bytes(p) for p in pkts]
    seeds.append(bytes([3]) + b"".join(bytes(p) for p in pkts[:4]))
    seeds += [s[:k] for s in seeds[:3] for k in (15, 30, 40)]
    return write_seeds(into, seeds)


# Four frames of a few hundred bytes: the header shapes, not the payload, matter.
HARNESS = Harness("span frames", check, seed_corpus, max_len=1024)

if __name__ == "__main__":
    HARNESS.run(sys.argv)
