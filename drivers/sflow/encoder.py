"""Pure sFlow v5 encoder: FlowSample/CounterSample facts to datagrams (lab exporter, fuzz seeds)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from struct import Struct

from rackwarden.drivers.sflow.decoder import (
    ADDRESS_IPV4,
    ADDRESS_IPV6,
    ADDRESS_UNKNOWN,
    COUNTER_RECORD_GENERIC,
    COUNTER_SAMPLE,
    COUNTER_SAMPLE_EXPANDED,
    FLOW_RECORD_RAW_HEADER,
    FLOW_SAMPLE,
    FLOW_SAMPLE_EXPANDED,
    GENERIC_COUNTERS_LEN,
    SFLOW_VERSION,
    DatagramHeader,
    Sample,
)
from rackwarden.policies.flowfacts import OUTPUT_IFINDEX, CounterSample, FlowSample

_U32X2 = Struct("!II").pack
_HDR_TAIL = Struct("!IIII").pack
_FLOW = Struct("!IIIIIIII").pack
_FLOW_X = Struct("!IIIIIIIIIII").pack
_RAW_HEADER = Struct("!IIIIII").pack  # record format, record length, proto, frame, stripped, hlen
_COUNTER = Struct("!III").pack
_COUNTER_X = Struct("!IIII").pack
_GENERIC = Struct("!IIQIIQIIIIIIQIIIIII").pack

DEFAULT_MAX_DATAGRAM = 1400  # what agents aim for: one datagram per Ethernet MTU


def _agent_bytes(agent: str) -> bytes:
    if not agent:
        return _U32X2(SFLOW_VERSION, ADDRESS_UNKNOWN)
    addr = ipaddress.ip_address(agent)
    if addr.version == 4:
        return _U32X2(SFLOW_VERSION, ADDRESS_IPV4) + addr.packed
    return _U32X2(SFLOW_VERSION, ADDRESS_IPV6) + addr.packed


def _pad4(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)


def encode_flow_sample(s: FlowSample, *, expanded: bool | None = None) -> bytes:
    """One flow_sample (or expanded) with a single raw packet header record.

    None bookkeeping fields (a SPAN sample) encode as 0; the source id defaults to the input
    ifIndex as agents do for port sampling. `expanded` None picks the compact form when every
    value fits it.
    """
    seq = s.sample_sequence or 0
    sid_type = s.source_id_type or 0
    sid_index = s.source_id_index if s.source_id_index is not None else (s.input_ifindex or 0)
    in_val = s.input_ifindex or 0
    out_fmt = s.output_format
    out_val = (s.output_ifindex or 0) if out_fmt == OUTPUT_IFINDEX else 0
    header = s.header
    record = _RAW_HEADER(
        FLOW_RECORD_RAW_HEADER, 16 + len(header) + (-len(header) % 4),
        s.header_protocol, s.frame_length, s.stripped or 0, len(header),
    ) + _pad4(header)
    if expanded is None:
        expanded = not (sid_type < 0x100 and sid_index < 0x1000000 and in_val < 0x40000000
                        and out_val < 0x40000000 and out_fmt < 4)
    if expanded:
        body = _FLOW_X(seq, sid_type, sid_index, s.sampling_rate, s.sample_pool or 0,
                       s.drops or 0, 0, in_val, out_fmt, out_val, 1)
        fmt = FLOW_SAMPLE_EXPANDED
    else:
        body = _FLOW(seq, sid_type << 24 | sid_index, s.sampling_rate, s.sample_pool or 0,
                     s.drops or 0, in_val, out_fmt << 30 | out_val, 1)
        fmt = FLOW_SAMPLE
    return _U32X2(fmt, len(body) + len(record)) + body + record


def encode_counter_sample(c: CounterSample, *, expanded: bool | None = None) -> bytes:
    """One counters_sample (or expanded) with a single generic interface counters record."""
    seq = c.sample_sequence or 0
    sid_type = c.source_id_type or 0
    sid_index = c.source_id_index if c.source_id_index is not None else c.if_index
    record = _U32X2(COUNTER_RECORD_GENERIC, GENERIC_COUNTERS_LEN) + _GENERIC(
        c.if_index, c.if_type, c.if_speed_bps, c.if_direction, c.if_status, c.in_octets,
        c.in_ucast_pkts, c.in_multicast_pkts, c.in_broadcast_pkts, c.in_discards, c.in_errors,
        c.in_unknown_protos, c.out_octets, c.out_ucast_pkts, c.out_multicast_pkts,
        c.out_broadcast_pkts, c.out_discards, c.out_errors, c.promiscuous_mode,
    )
    if expanded is None:
        expanded = not (sid_type < 0x100 and sid_index < 0x1000000)
    if expanded:
        body = _COUNTER_X(seq, sid_type, sid_index, 1)
        fmt = COUNTER_SAMPLE_EXPANDED
    else:
        body = _COUNTER(seq, sid_type << 24 | sid_index, 1)
        fmt = COUNTER_SAMPLE
    return _U32X2(fmt, len(body) + len(record)) + body + record


def encode_sample(s: Sample, *, expanded: bool | None = None) -> bytes:
    if isinstance(s, FlowSample):
        return encode_flow_sample(s, expanded=expanded)
    return encode_counter_sample(s, expanded=expanded)


def encode_datagram(header: DatagramHeader, samples: Sequence[Sample], *,
                    expanded: bool | None = None) -> bytes:
    """One sFlow v5 datagram; decode_datagram(encode_datagram(h, s), ...) gives back h and s.

    Raises ValueError / struct.error on values that do not fit the wire format: the encoder
    is fed by our own code, and a silent wrap would hide the bug.
    """
    parts = [
        _agent_bytes(header.agent),
        _HDR_TAIL(header.sub_agent_id, header.sequence, header.uptime_ms, len(samples)),
    ]
    parts.extend(encode_sample(s, expanded=expanded) for s in samples)
    return b"".join(parts)


def pack_datagrams(
    samples: Sequence[Sample],
    *,
    agent: str,
    sub_agent_id: int = 0,
    first_sequence: int = 1,
    uptime_ms: int = 0,
    max_datagram_bytes: int = DEFAULT_MAX_DATAGRAM,
) -> list[bytes]:
    """Pack samples into as few datagrams as fit `max_datagram_bytes`, sequence numbered.

    A sample too big for the limit on its own still goes out alone, as agents do.
    """
    head_len = len(_agent_bytes(agent)) + 16
    out: list[bytes] = []
    batch: list[bytes] = []
    size = head_len
    seq = first_sequence

    def flush() -> None:
        nonlocal batch, size, seq
        out.append(_agent_bytes(agent) + _HDR_TAIL(sub_agent_id, seq & 0xFFFFFFFF, uptime_ms,
                                                   len(batch)) + b"".join(batch))
        seq += 1
        batch = []
        size = head_len

    for s in samples:
        enc = encode_sample(s)
        if batch and size + len(enc) > max_datagram_bytes:
            flush()
        batch.append(enc)
        size += len(enc)
    if batch:
        flush()
    return out
