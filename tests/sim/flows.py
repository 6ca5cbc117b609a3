"""Synthetic sFlow samples: real Ethernet/IPv4 headers, parsed by the agent's own header parser.

A generator stands for one traffic pattern a server sends (a UDP flood, an SMTP fan-out, a
scan); each evaluation slice of the runner asks it for the samples an sFlow agent on the
switch would have exported in that slice (packets per second over the sampling rate), with
their receive times spread evenly across the slice. The switch port must be forwarding: a
shut or broken port sends nothing upstream, so it yields nothing.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from datetime import timedelta

from rackwarden.agent.clock import FakeClock
from rackwarden.drivers.packets import flow_sample_from_frame
from rackwarden.policies.flowfacts import FlowSample

KINDS = ("udp_flood", "syn_flood", "icmp_flood", "smtp_fanout", "scan")
_TCP, _UDP, _ICMP = 6, 17, 1
_SYN = 0x02
SNAPLEN = 128


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return int(~s & 0xFFFF)


def ipv4_frame(src: str, dst: str, proto: int, l4: bytes, wire_len: int, *,
               src_mac: bytes = b"\x02\x00\x00\x00\x00\x01", dst_mac: bytes = b"\x02\x00\x00\x00\x00\xfe") -> bytes:
    """An Ethernet II + IPv4 frame whose IP total length says `wire_len` - 14 (payload cut off)."""
    total = max(20 + len(l4), wire_len - 14)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0x1234, 0x4000, 64, proto, 0,
                     ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    return dst_mac + src_mac + b"\x08\x00" + ip + l4


def udp(sport: int, dport: int, length: int) -> bytes:
    return struct.pack("!HHHH", sport, dport, length, 0)


def tcp(sport: int, dport: int, flags: int, seq: int = 1) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, flags, 64240, 0, 0)


def icmp_echo(ident: int, seq: int) -> bytes:
    return struct.pack("!BBHHH", 8, 0, 0, ident, seq)


@dataclass
class FlowGen:
    """One traffic pattern of one server, active until `until_now` (monotonic) or stopped."""

    server: str
    kind: str
    src_ip: str
    pps: float  # packets per second on the wire
    sampling_rate: int
    size: int  # bytes on the wire per packet
    until_now: float | None = None
    since_now: float | None = None  # when the pattern started (monotonic): no samples before it
    target: str = "203.0.113.7"  # victim of floods
    carry: float = 0.0
    seq: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"flows kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.pps <= 0 or self.sampling_rate < 1:
            raise ValueError("flows need pps > 0 and sampling_rate >= 1")

    def _frame(self, n: int) -> bytes:
        sport = 20000 + n % 40000
        if self.kind == "udp_flood":
            return ipv4_frame(self.src_ip, self.target, _UDP, udp(sport, 53, self.size - 34), self.size)
        if self.kind == "syn_flood":
            return ipv4_frame(self.src_ip, self.target, _TCP, tcp(sport, 80, _SYN, n), self.size)
        if self.kind == "icmp_flood":
            return ipv4_frame(self.src_ip, self.target, _ICMP, icmp_echo(0x4242, n & 0xFFFF), self.size)
        # Fan-outs: every packet a connection attempt to another host (100.64.0.0/10, unused).
        dst = str(ipaddress.IPv4Address(int(ipaddress.IPv4Address("100.64.0.1")) + n))
        port = 25 if self.kind == "smtp_fanout" else 22
        return ipv4_frame(self.src_ip, dst, _TCP, tcp(sport, port, _SYN, n), self.size)

    def samples(self, t0: float, t1: float, clock: FakeClock, agent: str, if_index: int,
                uplink_index: int | None) -> list[FlowSample]:
        """The samples exported for (t0, t1], stamped at even times in it (monotonic `now`)."""
        end = t1 if self.until_now is None else min(t1, self.until_now)
        if self.since_now is not None:
            t0 = max(t0, self.since_now)
        if end <= t0:
            return []
        want = self.carry + self.pps * (end - t0) / self.sampling_rate
        n = int(want)
        self.carry = want - n
        out = []
        base_at, base_now = clock.at(), clock.now()
        for i in range(n):
            now = t0 + (end - t0) * (i + 1) / n
            at = base_at - timedelta(seconds=base_now - now)
            self.seq += self.sampling_rate
            out.append(flow_sample_from_frame(
                self._frame(self.seq), source="sflow", agent=agent, now=now, at=at, frame_length=self.size,
                sampling_rate=self.sampling_rate, input_ifindex=if_index, output_ifindex=uplink_index,
                snaplen=SNAPLEN))
        return out
