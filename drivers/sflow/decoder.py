"""Bounded sFlow v5 datagram decoder: bytes in, FlowSample/CounterSample facts out, never raises."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from socket import AF_INET6, inet_ntoa, inet_ntop
from struct import Struct
from types import MappingProxyType
from typing import TypeAlias

from rackwarden.drivers.packets import parse_tuple
from rackwarden.policies.flowfacts import (
    CounterSample,
    FlowSample,
    estimate,
    new_counter_sample,
    new_flow_sample,
    scale_count,
)

__all__ = [
    "DatagramHeader",
    "DecodeResult",
    "Sample",
    "decode_datagram",
    "decode_unguarded",
    "ERROR_REASONS",
    "estimate",
    "scale_count",
]

Sample: TypeAlias = FlowSample | CounterSample

# Error reasons: the datagram is malformed and is dropped whole (DecodeResult.error).
TOO_SHORT = "too_short"  # shorter than the fixed datagram header
BAD_VERSION = "bad_version"  # not sFlow version 5
BAD_ADDRESS_TYPE = "bad_address_type"  # agent address type other than 0, 1, 2
SAMPLE_COUNT_OVERFLOW = "sample_count_overflow"  # more samples than bytes could hold
TRUNCATED_SAMPLE = "truncated_sample"  # datagram ends inside a sample's type/length
SAMPLE_LENGTH_OVERFLOW = "sample_length_overflow"  # sample length past the datagram end
SAMPLE_TOO_SHORT = "sample_too_short"  # sample shorter than its format's fixed fields
RECORD_COUNT_OVERFLOW = "record_count_overflow"  # more records than the sample could hold
TRUNCATED_RECORD = "truncated_record"  # sample ends inside a record's type/length
RECORD_LENGTH_OVERFLOW = "record_length_overflow"  # record length past its sample's end
RECORD_TOO_SHORT = "record_too_short"  # known record shorter than its fixed fields
HEADER_LENGTH_OVERFLOW = "header_length_overflow"  # sampled header past its record's end
NAIVE_AT = "naive_at"  # the caller passed a naive datetime: a bug upstream, not bad input
INTERNAL_ERROR = "internal_error"  # a decoder bug; decode_datagram turns it into a count

ERROR_REASONS: tuple[str, ...] = (
    TOO_SHORT, BAD_VERSION, BAD_ADDRESS_TYPE, SAMPLE_COUNT_OVERFLOW, TRUNCATED_SAMPLE,
    SAMPLE_LENGTH_OVERFLOW, SAMPLE_TOO_SHORT, RECORD_COUNT_OVERFLOW, TRUNCATED_RECORD,
    RECORD_LENGTH_OVERFLOW, RECORD_TOO_SHORT, HEADER_LENGTH_OVERFLOW, NAIVE_AT, INTERNAL_ERROR,
)

# Skip reasons: legal sFlow that we do not use (DecodeResult.skipped); the datagram is kept.
UNKNOWN_SAMPLE = "unknown_sample_format"
UNKNOWN_FLOW_RECORD = "unknown_flow_record"
UNKNOWN_COUNTER_RECORD = "unknown_counter_record"
FLOW_SAMPLE_WITHOUT_HEADER = "flow_sample_without_header"
EXTRA_HEADER_RECORD = "extra_header_record"
TRAILING_BYTES = "trailing_bytes"

SFLOW_VERSION = 5
ADDRESS_UNKNOWN = 0
ADDRESS_IPV4 = 1
ADDRESS_IPV6 = 2

# data_format = enterprise << 12 | format; enterprise 0 is sFlow.org's standard structures.
FLOW_SAMPLE = 1
COUNTER_SAMPLE = 2
FLOW_SAMPLE_EXPANDED = 3
COUNTER_SAMPLE_EXPANDED = 4
FLOW_RECORD_RAW_HEADER = 1
COUNTER_RECORD_GENERIC = 1

FLOW_SAMPLE_FIXED = 32  # seq, source_id, rate, pool, drops, input, output, record count
FLOW_SAMPLE_EXPANDED_FIXED = 44
COUNTER_SAMPLE_FIXED = 12  # seq, source_id, record count
COUNTER_SAMPLE_EXPANDED_FIXED = 16
RAW_HEADER_FIXED = 16  # protocol, frame_length, stripped, header length
GENERIC_COUNTERS_LEN = 88
MIN_ITEM = 8  # data_format + length: the smallest a sample or record can be

_U32 = Struct("!I").unpack_from
_U32X2 = Struct("!II").unpack_from
_U32X4 = Struct("!IIII").unpack_from
_FLOW = Struct("!IIIIIIII").unpack_from
_FLOW_X = Struct("!IIIIIIIIIII").unpack_from
_COUNTER = Struct("!III").unpack_from
_COUNTER_X = Struct("!IIII").unpack_from
_GENERIC = Struct("!IIQIIQIIIIIIQIIIIII").unpack_from

_NO_SKIPS: Mapping[str, int] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class DatagramHeader:
    """The sFlow v5 datagram header; `agent` is "" when the agent sent address type unknown."""

    agent: str
    sub_agent_id: int
    sequence: int
    uptime_ms: int


@dataclass(frozen=True, slots=True)
class DecodeResult:
    """One datagram's outcome.

    On error the datagram is dropped whole: `samples` is empty, `error` names the reason and
    `error_offset` where it was found; `header` is kept when it decoded, so the error can be
    charged to its agent. `skipped` counts legal records we do not use, by reason.
    """

    header: DatagramHeader | None
    samples: list[Sample]
    error: str | None = None
    error_offset: int | None = None
    skipped: Mapping[str, int] = field(default_factory=lambda: _NO_SKIPS)


def _fail(reason: str, offset: int, header: DatagramHeader | None = None) -> DecodeResult:
    return DecodeResult(header, [], reason, offset)


def decode_datagram(
    data: bytes | bytearray | memoryview, now: float, at: datetime
) -> DecodeResult:
    """Decode one sFlow v5 datagram. Never raises; a malformed datagram comes back with `error`.

    `now` (monotonic s) and `at` (aware UTC) are the receive time, stamped on every sample.
    """
    try:
        return decode_unguarded(data, now, at)
    except Exception:  # noqa: BLE001 - a decoder bug must cost one datagram, not the collector
        return _fail(INTERNAL_ERROR, 0)


def decode_unguarded(
    data: bytes | bytearray | memoryview, now: float, at: datetime
) -> DecodeResult:
    """decode_datagram without the last-resort guard, so the fuzzer and tests see real bugs."""
    if at.tzinfo is None or at.utcoffset() is None:
        return _fail(NAIVE_AT, 0)
    if type(data) is not bytes:
        data = bytes(data)
    n = len(data)
    if n < 8:
        return _fail(TOO_SHORT, 0)
    version, atype = _U32X2(data, 0)
    if version != SFLOW_VERSION:
        return _fail(BAD_VERSION, 0)
    if atype == ADDRESS_IPV4:
        if n < 12:
            return _fail(TOO_SHORT, 8)
        agent = inet_ntoa(data[8:12])
        off = 12
    elif atype == ADDRESS_IPV6:
        if n < 24:
            return _fail(TOO_SHORT, 8)
        agent = inet_ntop(AF_INET6, data[8:24])
        off = 24
    elif atype == ADDRESS_UNKNOWN:
        agent = ""
        off = 8
    else:
        return _fail(BAD_ADDRESS_TYPE, 4)
    if off + 16 > n:
        return _fail(TOO_SHORT, off)
    sub_agent, seq, uptime, count = _U32X4(data, off)
    header = DatagramHeader(agent, sub_agent, seq, uptime)
    off += 16
    # Bound the count before looping so 0xFFFFFFFF costs one comparison, not 4G iterations.
    if count > (n - off) // MIN_ITEM:
        return _fail(SAMPLE_COUNT_OVERFLOW, off - 4, header)

    samples: list[Sample] = []
    append = samples.append
    skipped: dict[str, int] = {}
    # Flow samples are decoded inline: they are nearly all the traffic, and a call per sample
    # cost more than the walk itself here. Every read below is bounded by the sample's end.
    for _ in range(count):
        if off + 8 > n:
            return _fail(TRUNCATED_SAMPLE, off, header)
        fmt, length = _U32X2(data, off)
        start = off + 8
        end = start + length
        if end > n:
            return _fail(SAMPLE_LENGTH_OVERFLOW, off + 4, header)
        off = end
        if fmt == FLOW_SAMPLE:
            if length < FLOW_SAMPLE_FIXED:
                return _fail(SAMPLE_TOO_SHORT, start, header)
            seq, sid, rate, pool, drops, inp, outp, nrec = _FLOW(data, start)
            sid_type = sid >> 24
            sid_index = sid & 0x00FFFFFF
            in_fmt = inp >> 30
            in_val = inp & 0x3FFFFFFF
            out_fmt = outp >> 30
            out_val = outp & 0x3FFFFFFF
            p = start + FLOW_SAMPLE_FIXED
        elif fmt == FLOW_SAMPLE_EXPANDED:
            if length < FLOW_SAMPLE_EXPANDED_FIXED:
                return _fail(SAMPLE_TOO_SHORT, start, header)
            (seq, sid_type, sid_index, rate, pool, drops, in_fmt, in_val, out_fmt, out_val,
             nrec) = _FLOW_X(data, start)
            p = start + FLOW_SAMPLE_EXPANDED_FIXED
        elif fmt == COUNTER_SAMPLE or fmt == COUNTER_SAMPLE_EXPANDED:
            err = _counter_sample(data, start, end, fmt == COUNTER_SAMPLE_EXPANDED, agent, now,
                                  at, samples, skipped)
            if err is not None:
                return _fail(err[0], err[1], header)
            continue
        else:
            _skip(skipped, UNKNOWN_SAMPLE)
            continue

        # A flow sample's records: keep the first raw packet header, skip the rest by length.
        if nrec > (end - p) // MIN_ITEM:
            return _fail(RECORD_COUNT_OVERFLOW, p - 4, header)
        hdr = None
        proto = frame_length = stripped = 0
        for _ in range(nrec):
            if p + 8 > end:
                return _fail(TRUNCATED_RECORD, p, header)
            rfmt, rlen = _U32X2(data, p)
            rstart = p + 8
            p = rstart + rlen
            if p > end:
                return _fail(RECORD_LENGTH_OVERFLOW, rstart - 4, header)
            if rfmt == FLOW_RECORD_RAW_HEADER:
                if rlen < RAW_HEADER_FIXED:
                    return _fail(RECORD_TOO_SHORT, rstart, header)
                hproto, hframe, hstripped, hlen = _U32X4(data, rstart)
                hstart = rstart + RAW_HEADER_FIXED
                if hlen > p - hstart:
                    return _fail(HEADER_LENGTH_OVERFLOW, rstart + 12, header)
                if hdr is None:
                    hdr = data[hstart:hstart + hlen]
                    proto, frame_length, stripped = hproto, hframe, hstripped
                else:
                    _skip(skipped, EXTRA_HEADER_RECORD)
            else:
                _skip(skipped, UNKNOWN_FLOW_RECORD)
        if hdr is None:
            _skip(skipped, FLOW_SAMPLE_WITHOUT_HEADER)
            continue
        append(new_flow_sample(
            "sflow", agent,
            in_val if in_fmt == 0 and in_val else None,
            out_val if out_fmt == 0 and out_val else None,
            rate, now, at, frame_length, hdr,
            *parse_tuple(hdr, proto),
            proto, out_fmt, seq, sid_type, sid_index, pool, drops, stripped,
        ))
    if off != n:
        # Trailing bytes are odd but harmless: every declared sample decoded inside bounds.
        skipped[TRAILING_BYTES] = 1
    return DecodeResult(header, samples, None, None,
                        MappingProxyType(skipped) if skipped else _NO_SKIPS)


# The counter sample decoder appends its facts and counts what it skips; it returns None, or
# (error reason, offset) when the sample is malformed and the datagram must be dropped.
_Error = tuple[str, int] | None


def _skip(skipped: dict[str, int], reason: str) -> None:
    skipped[reason] = skipped.get(reason, 0) + 1


def _counter_sample(data: bytes, off: int, end: int, expanded: bool, agent: str, now: float,
                    at: datetime, out: list[Sample], skipped: dict[str, int]) -> _Error:
    if expanded:
        if end - off < COUNTER_SAMPLE_EXPANDED_FIXED:
            return (SAMPLE_TOO_SHORT, off)
        seq, sid_type, sid_index, nrec = _COUNTER_X(data, off)
        off += COUNTER_SAMPLE_EXPANDED_FIXED
    else:
        if end - off < COUNTER_SAMPLE_FIXED:
            return (SAMPLE_TOO_SHORT, off)
        seq, sid, nrec = _COUNTER(data, off)
        sid_type, sid_index = sid >> 24, sid & 0x00FFFFFF
        off += COUNTER_SAMPLE_FIXED
    if nrec > (end - off) // MIN_ITEM:
        return (RECORD_COUNT_OVERFLOW, off - 4)
    for _ in range(nrec):
        if off + 8 > end:
            return (TRUNCATED_RECORD, off)
        rfmt, rlen = _U32X2(data, off)
        rstart = off + 8
        rend = rstart + rlen
        if rend > end:
            return (RECORD_LENGTH_OVERFLOW, off + 4)
        if rfmt == COUNTER_RECORD_GENERIC:
            if rlen < GENERIC_COUNTERS_LEN:
                return (RECORD_TOO_SHORT, rstart)
            out.append(new_counter_sample("sflow", agent, now, at, *_GENERIC(data, rstart),
                                          seq, sid_type, sid_index))
        else:
            _skip(skipped, UNKNOWN_COUNTER_RECORD)
        off = rend
    return None
