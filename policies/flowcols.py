"""Sampled packets as columns: one numpy array per FlowSample field, for the batch paths.

The columnar decoders (sFlow batches, SPAN ring blocks) hand the detectors a SampleColumns
instead of one FlowSample per packet. Row i of every array is one sampled packet; an absent
field (FlowSample's None) is -1 in the integer columns. Addresses are 128-bit integers split
into two uint64 words, IPv4 as the IPv4-mapped IPv6 address (::ffff:a.b.c.d), so one sorted
array of owned addresses serves both families. `agents` names the sFlow agent (or SPAN
capture) of each row through an index into `agent_names`.

`ref` ties a row to the raw bytes it came from (the raw evidence ring's datagram or frame
number), so evidence can be re-decoded exactly when a detection fires; -1 when the row was
built from a FlowSample (from_samples), whose object is then kept in `objects`.
On the sFlow path (drivers/sflow/batch.decode_batch_columns) ref = datagram number << 16 | k,
the datagram's number in the collector's RawRing and k the row's index among that datagram's
FlowSamples; RawRing.resolve(refs) gives back decode_datagram's own FlowSample objects.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from .flowfacts import FlowSample

__all__ = ["NONE", "V4_MAPPED", "SampleColumns", "ip_words", "words_ip"]

NONE = -1
V4_MAPPED = 0xFFFF_0000_0000  # low word of ::ffff:0.0.0.0
_MASK64 = (1 << 64) - 1

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
F64 = npt.NDArray[np.float64]


def ip_words(text: str | None) -> tuple[int, int, bool]:
    """(high, low, present) of an address text; IPv4 as the IPv4-mapped IPv6 address."""
    if text is None:
        return (0, 0, False)
    a = ipaddress.ip_address(text)
    v = int(a) | V4_MAPPED if a.version == 4 else int(a)
    return (v >> 64, v & _MASK64, True)


def words_ip(hi: int, lo: int) -> str:
    """The address text of (high, low) as packets.parse_tuple writes it (inet_ntop):
    IPv4-mapped addresses print as IPv4, and IPv6 as RFC 5952 (ipaddress) but for one whose
    first six 16-bit words are 0 and the seventh is not, which inet_ntop writes ::a.b.c.d
    where ipaddress writes ::a0b:c0d (glibc's inet_ntop6; a policy module stays off socket)."""
    if hi == 0 and (lo >> 32) == 0xFFFF:
        return str(ipaddress.IPv4Address(lo & 0xFFFF_FFFF))
    if hi == 0 and (lo >> 32) == 0 and (lo >> 16) & 0xFFFF:
        return "::" + str(ipaddress.IPv4Address(lo))
    return str(ipaddress.IPv6Address((hi << 64) | lo))


@dataclass(slots=True)
class SampleColumns:
    """n sampled packets, one array per field (see the module docstring for encodings)."""

    agent_names: list[str]
    agent: I64  # index into agent_names
    input_ifindex: I64
    output_ifindex: I64
    sampling_rate: I64
    now: F64
    frame_length: I64
    ip_version: I64  # 4, 6 or -1
    src_hi: U64
    src_lo: U64
    has_src: npt.NDArray[np.bool_]
    dst_hi: U64
    dst_lo: U64
    has_dst: npt.NDArray[np.bool_]
    protocol: I64
    src_port: I64
    dst_port: I64
    tcp_flags: I64
    icmp_type: I64
    sample_sequence: I64
    source_id_type: I64
    source_id_index: I64
    sample_pool: I64
    ref: I64
    objects: list[FlowSample] | None = field(default=None)

    def __len__(self) -> int:
        return int(self.now.shape[0])

    @classmethod
    def from_samples(cls, samples: Sequence[FlowSample]) -> SampleColumns:
        """Columns of FlowSamples (the exact path's output, and the tests' reference)."""
        names: dict[str, int] = {}
        n = len(samples)

        def ints(values: list[int | None]) -> I64:
            return np.array([NONE if v is None else v for v in values], dtype=np.int64)

        src = [ip_words(s.src_ip) for s in samples]
        dst = [ip_words(s.dst_ip) for s in samples]
        cols = cls(
            agent_names=[],
            agent=np.array([names.setdefault(s.agent, len(names)) for s in samples],
                           dtype=np.int64),
            input_ifindex=ints([s.input_ifindex for s in samples]),
            output_ifindex=ints([s.output_ifindex for s in samples]),
            sampling_rate=ints([s.sampling_rate for s in samples]),
            now=np.array([s.now for s in samples], dtype=np.float64),
            frame_length=ints([s.frame_length for s in samples]),
            ip_version=ints([s.ip_version for s in samples]),
            src_hi=np.array([w[0] for w in src], dtype=np.uint64).reshape(n),
            src_lo=np.array([w[1] for w in src], dtype=np.uint64).reshape(n),
            has_src=np.array([w[2] for w in src], dtype=np.bool_).reshape(n),
            dst_hi=np.array([w[0] for w in dst], dtype=np.uint64).reshape(n),
            dst_lo=np.array([w[1] for w in dst], dtype=np.uint64).reshape(n),
            has_dst=np.array([w[2] for w in dst], dtype=np.bool_).reshape(n),
            protocol=ints([s.protocol for s in samples]),
            src_port=ints([s.src_port for s in samples]),
            dst_port=ints([s.dst_port for s in samples]),
            tcp_flags=ints([s.tcp_flags for s in samples]),
            icmp_type=ints([s.icmp_type for s in samples]),
            sample_sequence=ints([s.sample_sequence for s in samples]),
            source_id_type=ints([s.source_id_type for s in samples]),
            source_id_index=ints([s.source_id_index for s in samples]),
            sample_pool=ints([s.sample_pool for s in samples]),
            ref=np.full(n, NONE, dtype=np.int64),
            objects=list(samples),
        )
        cols.agent_names = list(names)
        return cols

    def row(self, i: int) -> dict[str, Any]:
        """Row i as FlowSample field values (None for absent), for messages and tests."""
        def opt(a: I64) -> int | None:
            v = int(a[i])
            return None if v == NONE else v

        return {
            "agent": self.agent_names[int(self.agent[i])],
            "input_ifindex": opt(self.input_ifindex), "output_ifindex": opt(self.output_ifindex),
            "sampling_rate": int(self.sampling_rate[i]), "now": float(self.now[i]),
            "frame_length": int(self.frame_length[i]), "ip_version": opt(self.ip_version),
            "src_ip": words_ip(int(self.src_hi[i]), int(self.src_lo[i]))
            if self.has_src[i] else None,
            "dst_ip": words_ip(int(self.dst_hi[i]), int(self.dst_lo[i]))
            if self.has_dst[i] else None,
            "protocol": opt(self.protocol), "src_port": opt(self.src_port),
            "dst_port": opt(self.dst_port), "tcp_flags": opt(self.tcp_flags),
            "icmp_type": opt(self.icmp_type), "sample_sequence": opt(self.sample_sequence),
            "source_id_type": opt(self.source_id_type),
            "source_id_index": opt(self.source_id_index), "sample_pool": opt(self.sample_pool),
        }
