"""Typed facts about sampled traffic: FlowSample per sampled packet, CounterSample per port."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Literal, TypeVar

FlowSourceKind = Literal["sflow", "span"]

# sFlow header_protocol numbers; the SPAN path always hands over Ethernet frames.
HEADER_ETHERNET = 1
HEADER_IPV4 = 11
HEADER_IPV6 = 12

# sFlow output interface formats (sflow_version_5.txt, "interface").
OUTPUT_IFINDEX = 0
OUTPUT_DISCARDED = 1
OUTPUT_MULTIPLE = 2


@dataclass(frozen=True, slots=True)
class FlowSample:
    """One sampled packet: where and how it was seen, and what its header says.

    Both the sFlow decoder and the SPAN capture produce these. `now` (monotonic seconds) and
    `at` (aware UTC) are the caller's receive time, not the switch's. Header fields are None
    where the header did not reach them (sFlow headers are cut at ~128 bytes) or the packet
    has no such field; `parse_error` says why parsing stopped early, None when it did not.

    `input_ifindex` / `output_ifindex` are switch ifIndexes; None means unknown (sFlow 0) or,
    for the output, not a single port (`output_format` 1 = discarded, 2 = several ports).
    The fields after `parse_error` are sFlow bookkeeping; the SPAN path leaves them None.
    """

    source: FlowSourceKind
    agent: str  # sFlow agent address, or the capture interface name on the SPAN path
    input_ifindex: int | None
    output_ifindex: int | None
    sampling_rate: int  # 1-in-N; 1 on an unsampled SPAN capture
    now: float
    at: datetime
    frame_length: int  # length of the packet on the wire, before sampling truncated it
    header: bytes  # the sampled bytes themselves, kept for evidence pcaps
    src_mac: str | None = None
    dst_mac: str | None = None
    vlan: int | None = None  # outermost 802.1Q/802.1ad VLAN id
    ethertype: int | None = None  # after any VLAN tags
    ip_version: int | None = None
    src_ip: str | None = None
    dst_ip: str | None = None
    protocol: int | None = None  # IP protocol, after IPv6 extension headers
    src_port: int | None = None
    dst_port: int | None = None
    tcp_flags: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None
    ip_total_length: int | None = None  # IPv4 total length; IPv6 payload length + 40
    parse_error: str | None = None
    header_protocol: int = HEADER_ETHERNET
    output_format: int = OUTPUT_IFINDEX
    sample_sequence: int | None = None
    source_id_type: int | None = None
    source_id_index: int | None = None
    sample_pool: int | None = None
    drops: int | None = None
    stripped: int | None = None

    def __post_init__(self) -> None:
        if self.at.tzinfo is None or self.at.utcoffset() is None:
            raise ValueError("FlowSample.at must be timezone-aware")

    @property
    def estimated_packets(self) -> int:
        """Packets on the wire this one sample stands for."""
        return self.sampling_rate if self.sampling_rate > 0 else 1

    @property
    def estimated_bytes(self) -> int:
        """Bytes on the wire this one sample stands for (frame length scaled by the rate)."""
        return self.frame_length * self.estimated_packets


@dataclass(frozen=True, slots=True)
class CounterSample:
    """One port's interface counters as an sFlow agent exported them (generic if_counters).

    Counters are the switch's raw values: 64-bit octets, 32-bit packet counts, all wrapping;
    sFlow agents report an unsupported counter as all ones.
    """

    source: FlowSourceKind
    agent: str
    now: float
    at: datetime
    if_index: int
    if_type: int
    if_speed_bps: int
    if_direction: int  # 0 unknown, 1 full-duplex, 2 half-duplex, 3 in, 4 out
    if_status: int  # bit 0 ifAdminStatus up, bit 1 ifOperStatus up
    in_octets: int
    in_ucast_pkts: int
    in_multicast_pkts: int
    in_broadcast_pkts: int
    in_discards: int
    in_errors: int
    in_unknown_protos: int
    out_octets: int
    out_ucast_pkts: int
    out_multicast_pkts: int
    out_broadcast_pkts: int
    out_discards: int
    out_errors: int
    promiscuous_mode: int
    sample_sequence: int | None = None
    source_id_type: int | None = None
    source_id_index: int | None = None

    def __post_init__(self) -> None:
        if self.at.tzinfo is None or self.at.utcoffset() is None:
            raise ValueError("CounterSample.at must be timezone-aware")

    @property
    def admin_up(self) -> bool:
        return bool(self.if_status & 1)

    @property
    def oper_up(self) -> bool:
        return bool(self.if_status & 2)

    @property
    def in_packets(self) -> int:
        return self.in_ucast_pkts + self.in_multicast_pkts + self.in_broadcast_pkts

    @property
    def out_packets(self) -> int:
        return self.out_ucast_pkts + self.out_multicast_pkts + self.out_broadcast_pkts


@dataclass(frozen=True, slots=True)
class FlowEstimate:
    """Traffic a set of samples stands for, scaled by each sample's sampling rate."""

    samples: int
    packets: int
    octets: int


def estimate(samples: Iterable[FlowSample]) -> FlowEstimate:
    """Scale samples up to packets and octets on the wire.

    Each sample is weighted by its own rate, because one agent may change its rate mid-window
    and the SPAN path (rate 1) and sFlow can be mixed.
    """
    n = packets = octets = 0
    for s in samples:
        rate = s.sampling_rate if s.sampling_rate > 0 else 1
        n += 1
        packets += rate
        octets += rate * s.frame_length
    return FlowEstimate(samples=n, packets=packets, octets=octets)


def scale_count(sampled: int, sampling_rate: int) -> int:
    """Estimated wire count for `sampled` events seen at 1-in-`sampling_rate`."""
    return sampled * (sampling_rate if sampling_rate > 0 else 1)


def effective_sampling_rate(pool_delta: int, samples_delta: int) -> float | None:
    """Actual 1-in-N between two flow samples of one source (sample_pool / sample count deltas).

    Agents under load sample less often than configured; detectors use this to check that the
    configured rate is believable before asking for a shutdown. None when there is nothing to
    divide.
    """
    if samples_delta <= 0 or pool_delta <= 0:
        return None
    return pool_delta / samples_delta


_T = TypeVar("_T")


def positional_builder(cls: type[_T]) -> Callable[..., _T]:
    """A fast positional constructor for a frozen slots dataclass (every field, in order).

    A frozen dataclass's __init__ sets each field through object.__setattr__, which costs
    about 11 µs for FlowSample's 32 fields on these machines, more than decoding the sample.
    Here the fields are stored into an unfrozen twin with the same slots (plain slot stores,
    about 2 µs) that is then given the frozen class; the result is an ordinary instance of
    `cls` (equality, hash, immutability). No validation runs: the decoder and the capture,
    which own their inputs, use it.
    """
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    twin: Any = type(f"_{cls.__name__}Twin", (), {"__slots__": tuple(names)})
    if twin.__slots__ != cls.__slots__:  # type: ignore[attr-defined]
        raise TypeError(f"{cls.__name__}: slot layout differs from its builder twin")
    # Generated like dataclasses generates __init__: one plain store per field.
    args = ", ".join(names)
    stores = "".join(f"    o.{name} = {name}\n" for name in names)
    src = f"def build({args}):\n    o = new(twin)\n{stores}    o.__class__ = cls\n    return o\n"
    scope: dict[str, Any] = {"new": object.__new__, "twin": twin, "cls": cls}
    exec(src, scope)  # noqa: S102 - the source is built from the dataclass's own field names
    build: Callable[..., _T] = scope["build"]
    build.__qualname__ = build.__name__ = f"new_{cls.__name__}"
    return build


new_flow_sample: Callable[..., FlowSample] = positional_builder(FlowSample)
"""FlowSample from all 33 fields positionally, skipping the frozen per-field setattr cost."""

new_counter_sample: Callable[..., CounterSample] = positional_builder(CounterSample)
"""CounterSample from all its fields positionally, as new_flow_sample."""

FLOW_SAMPLE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(FlowSample))
