"""Columnar sFlow v5 decode: a batch of datagrams read in bulk with numpy, exact fallback.

sFlow's fields are 32-bit words on 4-byte boundaries, so once the batch is one buffer the
k-th sample of every datagram is read by one numpy gather. Only the common, regular layout
is read that way: an IPv4 agent, compact flow samples each holding exactly one raw packet
header record, nothing left over. Any other datagram, counter samples included, goes whole to
decoder.decode_datagram, and any header the bulk read cannot parse as untagged IPv4 TCP/UDP
goes to packets.parse_tuple. The answers are decode_datagram's, datagram by datagram;
tests/unit/test_sflow_batch.py compares the two on generated, recorded, lossy and malformed
traffic. decode_batch_columns_in reads datagrams already lying 4-aligned in one buffer (the
collector's recvmmsg path) with the same code and the same answers, without joining them again.
The walk of the sample chains and the bulk header parse of the columns path are done in C when
the compiled walker is built (cwalk.py, _sflowwalk.c; RACKWARDEN_SFLOW_WALK=python|c picks one):
the same values, row for row, as the numpy code below, which stays as the fallback and the twin
tests/unit/test_sflow_cwalk.py compares it with.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import repeat
from operator import attrgetter, is_
from socket import inet_ntoa
from types import MappingProxyType
from typing import Any, cast

import numpy as np
import numpy.typing as npt
from rackwarden.drivers.packets import HeaderTuple, ip4_text, mac_text, parse_tuple
from rackwarden.drivers.sflow import cwalk
from rackwarden.drivers.sflow.decoder import (
    _NO_SKIPS,
    ADDRESS_IPV4,
    COUNTER_SAMPLE,
    COUNTER_SAMPLE_EXPANDED,
    FLOW_RECORD_RAW_HEADER,
    FLOW_SAMPLE,
    RAW_HEADER_FIXED,
    SFLOW_VERSION,
    DatagramHeader,
    DecodeResult,
    Sample,
    _counter_sample,
    decode_datagram,
)
from rackwarden.policies.flowcols import NONE, V4_MAPPED, SampleColumns, ip_words
from rackwarden.policies.flowfacts import (
    HEADER_ETHERNET,
    HEADER_IPV4,
    HEADER_IPV6,
    CounterSample,
    FlowSample,
    new_flow_sample,
)

__all__ = [
    "BULK_MIN",
    "COLUMNS_BULK_MIN",
    "REF_SAMPLE_BITS",
    "ColumnBatch",
    "decode_batch",
    "decode_batch_columns",
    "decode_batch_columns_in",
    "decode_batch_columns_in_unguarded",
    "decode_batch_columns_unguarded",
    "decode_batch_unguarded",
]

# Below this many datagrams the exact decoder is cheaper than the bulk read's fixed cost (about
# a hundred numpy calls): measured break-even near 64 datagrams of ~7 samples on the 2-core
# test machine (a batch of 1 cost ~18x decode_datagram). Same answers either way.
BULK_MIN = 64

_I64 = npt.NDArray[np.int64]
# What a batch's datagrams can be read from in place: slicing any of these gives bytes-like.
_Buffer = bytes | bytearray | mmap.mmap
_HEAD = 28  # version, address type, IPv4 address, sub-agent, sequence, uptime, sample count
# The smallest regular flow sample: type/length, 32 fixed bytes, one record's type/length and
# the raw header's 16 fixed bytes.
_MIN_FLOW = 8 + 32 + 8 + RAW_HEADER_FIXED
_PAD = 64  # zero bytes after the batch, so a masked-out gather never reads past the buffer
_ZEROS = bytes(_PAD)
_ETH_IPV4 = 0x0800
_TCP, _UDP = 6, 17
_FAST_PARSE_MIN = 48  # packets.parse_tuple's fast path wants this many header bytes
_TZINFO = attrgetter("tzinfo")


def _gather_u32(words: npt.NDArray[np.uint32], byte_off: _I64) -> _I64:
    out: _I64 = words[byte_off >> 2].astype(np.int64)
    return out


def _words_at(words: npt.NDArray[np.uint32], word_index: _I64) -> _I64:
    out: _I64 = words[word_index].astype(np.int64)
    return out


def _texts(values: _I64, width: int, fmt: Any) -> list[str]:
    """Text per value, formatting each distinct value once (the caches in packets.py)."""
    uniq, inverse = np.unique(values, return_inverse=True)
    text = [fmt(int(v).to_bytes(width, "big")) for v in uniq.tolist()]
    return [text[i] for i in inverse.tolist()]


def _be(buf: npt.NDArray[np.uint8], at: _I64, width: int) -> _I64:
    out = buf[at].astype(np.int64)
    for i in range(1, width):
        out = (out << 8) | buf[at + i]
    return out


def decode_batch(
    datagrams: Sequence[bytes | bytearray | memoryview],
    nows: Sequence[float],
    ats: Sequence[datetime],
) -> list[DecodeResult]:
    """decode_datagram(datagrams[i], nows[i], ats[i]) for every i, read in bulk.

    Never raises on bad datagrams (they come back with `error`, as from decode_datagram).
    """
    if len(datagrams) < BULK_MIN:
        return [decode_datagram(d, now, at) for d, now, at in zip(datagrams, nows, ats, strict=True)]
    try:
        return decode_batch_unguarded(datagrams, nows, ats)
    except Exception:  # noqa: BLE001 - a bulk-read bug must cost speed, not answers
        return [decode_datagram(d, now, at) for d, now, at in zip(datagrams, nows, ats, strict=True)]


@dataclass(slots=True)
class _Walked:
    """The bulk walk of a batch: which datagrams it took (`ok`) and where their samples are."""

    n: int
    datas: Sequence[bytes]
    joined: _Buffer
    buf: npt.NDArray[np.uint8]
    words: npt.NDArray[np.uint32]
    starts: _I64
    count: _I64
    ok: npt.NDArray[np.bool_]
    dg: _I64  # per sample of a taken datagram, in datagram then sample order: its datagram
    sa: _I64  # and the absolute byte offset of its type word in `joined`
    sk: _I64  # and its index among its datagram's samples
    # The counter samples met (only when the walk was asked to step over them), in walk order:
    # datagram, absolute offset of the type word, format.
    cdg: _I64
    csa: _I64
    cfmt: _I64
    # The compiled walk's rows (cwalk.Walk.rows: one row per dg/sa/sk entry, the header
    # already parsed), or None after the numpy walk.
    rows: _I64 | None = None


def _walk(
    datagrams: Sequence[bytes | bytearray | memoryview],
    nows: Sequence[float],
    ats: Sequence[datetime],
    counters: bool = False,
) -> _Walked:
    n = len(datagrams)
    if len(nows) != n or len(ats) != n:
        raise ValueError("decode_batch: one now and one at per datagram")
    datas: Sequence[bytes] = (
        cast(Sequence[bytes], datagrams) if all(map(is_, map(type, datagrams), repeat(bytes)))
        else [d if type(d) is bytes else bytes(d) for d in datagrams])
    lens = np.fromiter(map(len, datas), dtype=np.int64, count=n)
    # One buffer, each datagram starting on a 4-byte boundary so words read as one >u4 view.
    # sFlow datagrams are whole words (XDR), so they are normally joined as they are.
    padded = lens + (-lens & 3)
    starts = np.cumsum(padded) - padded
    if (padded == lens).all():
        joined = b"".join([*datas, _ZEROS])
    else:
        parts: list[bytes] = []
        for d, ln in zip(datas, lens.tolist(), strict=True):
            parts.append(d)
            if ln % 4:
                parts.append(b"\0" * (-ln % 4))
        parts.append(_ZEROS)
        joined = b"".join(parts)
    return _walk_buffer(joined, starts, lens, datas, nows, ats, counters)


def _walk_buffer(
    joined: _Buffer,
    starts: _I64,
    lens: _I64,
    datas: Sequence[bytes],
    nows: Sequence[float],
    ats: Sequence[datetime],
    counters: bool,
) -> _Walked:
    """The walk over datagrams lying in `joined` at `starts` (multiples of 4) with `lens`
    bytes, at least _PAD bytes before its end; `datas[i]` is datagram i as bytes (read only
    for the datagrams the exact decoder takes)."""
    n = int(starts.shape[0])
    buf = np.frombuffer(joined, dtype=np.uint8)
    words = np.frombuffer(joined, dtype=">u4")
    if cwalk.choose() == "c":
        return _walk_compiled(joined, buf, words, starts, lens, datas, ats, counters)

    ok = (lens >= _HEAD) & ((lens & 3) == 0)
    # Datagrams too short to read safely are read at offset 0 and masked out.
    base = np.where(ok, starts, 0) >> 2
    ok &= (words[base] == SFLOW_VERSION) & (words[base + 1] == ADDRESS_IPV4)
    count: _I64 = words[base + 6].astype(np.int64)
    ok &= count <= (lens - _HEAD) >> 3
    # A datagram without samples must be the bare header (the walk's last check, below).
    ok &= (count > 0) | (lens == _HEAD)
    # The receive clock stamps datetime.UTC: one identity test each, in C. Anything else is
    # checked as the exact decoder does.
    if not all(map(is_, map(_TZINFO, ats), repeat(UTC))):
        for i, at in enumerate(ats):
            if ok[i] and (at.tzinfo is None or at.utcoffset() is None):
                ok[i] = False  # the exact decoder reports it

    # The walk: sample k of every datagram that still has one, all at once. Only the chain
    # of sample lengths is followed here (a few numpy calls per k); what each sample holds is
    # checked afterwards for all of them in one pass. Every offset followed stays inside its
    # datagram (a sample not inside it ends the walk of its datagram), so every word read
    # below, up to 64 bytes past a sample's start, lies inside the buffer.
    idx = np.nonzero(ok & (count > 0))[0]
    st = starts[idx]
    dl = lens[idx]
    cn = count[idx]
    o = np.full(idx.size, _HEAD, dtype=np.int64)
    s_dg: list[_I64] = []
    s_a: list[_I64] = []
    s_len: list[_I64] = []
    s_fine: list[npt.NDArray[np.bool_]] = []
    k = 0
    while idx.size:
        a = st + o  # absolute byte offset of the sample's type word
        length: _I64 = words[(a >> 2) + 1].astype(np.int64)
        end = o + 8 + length
        # Inside its datagram and long enough to be read as a regular flow sample (a shorter
        # one, counter samples included, goes with its datagram to the exact decoder).
        fine = (o + _MIN_FLOW <= dl) & ((length & 3) == 0) & (end <= dl)
        s_dg.append(idx)
        s_a.append(a)
        s_len.append(length)
        s_fine.append(fine)
        k += 1
        if not fine.all():
            ok[idx[~fine]] = False
            more = fine & (cn > k)
        else:
            more = cn > k
        if more.all():
            o = end
            continue
        # Datagrams whose last sample this was: it must end the datagram (trailing bytes
        # are the exact decoder's to note).
        done = fine & ~more
        ok[idx[done & (end != dl)]] = False
        idx, st, dl, cn, o = idx[more], st[more], dl[more], cn[more], end[more]

    empty = np.zeros(0, dtype=np.int64)
    if not s_dg:
        return _Walked(n, datas, joined, buf, words, starts, count, ok, empty, empty, empty,
                       empty, empty, empty)
    sizes = [x.size for x in s_dg]
    dg = np.concatenate(s_dg)  # k-major: sample 0 of each datagram, then sample 1, ...
    sa = np.concatenate(s_a)
    slen = np.concatenate(s_len)
    fine = np.concatenate(s_fine)
    sk = np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)
    ab = sa >> 2
    fmt = words[ab]
    rlen: _I64 = words[ab + 11].astype(np.int64)
    good = fine & (fmt == FLOW_SAMPLE) & (slen >= _MIN_FLOW - 8)
    good &= (words[ab + 9] == 1) & (words[ab + 10] == FLOW_RECORD_RAW_HEADER)
    good &= (rlen >= RAW_HEADER_FIXED) & (rlen + 40 <= slen)  # the record inside it
    good &= words[ab + 15] <= rlen - RAW_HEADER_FIXED  # the header inside its record
    if counters:
        # A counter sample inside its datagram is stepped over: its records are left to the
        # exact decoder's own counter-sample reader (decode_batch_columns).
        ctr = fine & ((fmt == COUNTER_SAMPLE) | (fmt == COUNTER_SAMPLE_EXPANDED))
        ok[dg[~(good | ctr)]] = False
    else:
        ok[dg[~good]] = False

    # Samples of the taken datagrams, in datagram order then sample order: a stable sort of
    # the k-major walk by datagram (runs already sorted, so cheap).
    keep = ok[dg]
    fl = keep & good
    fdg = dg[fl]
    order = np.argsort(fdg, kind="stable")
    if counters:
        cm = keep & ctr
        cdg, csa, cfmt = dg[cm], sa[cm], fmt[cm].astype(np.int64)
    else:
        cdg = csa = cfmt = empty
    return _Walked(n, datas, joined, buf, words, starts, count, ok, fdg[order],
                   sa[fl][order], sk[fl][order], cdg, csa, cfmt)


def _walk_compiled(
    joined: _Buffer,
    buf: npt.NDArray[np.uint8],
    words: npt.NDArray[np.uint32],
    starts: _I64,
    lens: _I64,
    datas: Sequence[bytes],
    ats: Sequence[datetime],
    counters: bool,
) -> _Walked:
    """_walk_buffer's walk in C (cwalk.walk): the same datagrams taken, the same samples, and
    each flow sample's header parsed as _columns_walked parses it."""
    eligible = None
    if not all(map(is_, map(_TZINFO, ats), repeat(UTC))):
        eligible = np.fromiter((at.tzinfo is not None and at.utcoffset() is not None
                                for at in ats), dtype=np.bool_, count=len(ats))
    c = cwalk.walk(buf, starts, lens, eligible, counters)
    rows = c.rows
    ctr = c.ctr
    if ctr.shape[1] > 1:
        # The numpy walk meets them k-major (every datagram's sample 0, then sample 1, ...).
        ctr = ctr[:, np.lexsort((ctr[0], ctr[3]))]
    return _Walked(int(starts.shape[0]), datas, joined, buf, words, starts, c.count, c.ok,
                   rows[cwalk.DG], rows[cwalk.SA], rows[cwalk.SK], ctr[0], ctr[1], ctr[2],
                   rows)


def decode_batch_unguarded(
    datagrams: Sequence[bytes | bytearray | memoryview],
    nows: Sequence[float],
    ats: Sequence[datetime],
) -> list[DecodeResult]:
    """decode_batch without the last-resort guard, so tests see bulk-read bugs."""
    w = _walk(datagrams, nows, ats)
    n, datas, joined, buf, words = w.n, w.datas, w.joined, w.buf, w.words
    starts, count, ok = w.starts, w.count, w.ok
    sa = w.sa

    results: list[DecodeResult | None] = [None] * n
    for i in np.nonzero(~ok)[0].tolist():
        results[i] = decode_datagram(datas[i], nows[i], ats[i])
    fast = np.nonzero(ok)[0]
    if fast.size == 0:
        return results  # type: ignore[return-value]

    # Datagram headers of the fast ones.
    fb = starts[fast]
    agent_ip = _gather_u32(words, fb + 8)
    sub = _gather_u32(words, fb + 12).tolist()
    dseq = _gather_u32(words, fb + 16).tolist()
    uptime = _gather_u32(words, fb + 20).tolist()
    agents = _texts(agent_ip, 4, inet_ntoa)

    seq = _gather_u32(words, sa + 8)
    sid = _gather_u32(words, sa + 12)
    rate = _gather_u32(words, sa + 16)
    pool = _gather_u32(words, sa + 20)
    drops = _gather_u32(words, sa + 24)
    inp = _gather_u32(words, sa + 28)
    outp = _gather_u32(words, sa + 32)
    hproto = _gather_u32(words, sa + 48)
    frame = _gather_u32(words, sa + 52)
    stripped = _gather_u32(words, sa + 56)
    hlen = _gather_u32(words, sa + 60)
    hb = sa + 64  # first header byte
    in_fmt, in_val = inp >> 30, inp & 0x3FFFFFFF
    out_fmt, out_val = outp >> 30, outp & 0x3FFFFFFF

    # packets.parse_tuple's fast path, in bulk: untagged IPv4 without options, TCP or UDP.
    hx = np.where(hlen >= _FAST_PARSE_MIN, hb, 0)
    et = _be(buf, hx + 12, 2)
    verihl = buf[hx + 14].astype(np.int64)
    frag = _be(buf, hx + 20, 2)
    proto = buf[hx + 23].astype(np.int64)
    quick = ((hlen >= _FAST_PARSE_MIN) & (hproto == HEADER_ETHERNET) & (et == _ETH_IPV4)
             & (verihl == 0x45) & ((frag & 0x1FFF) == 0) & ((proto == _TCP) | (proto == _UDP)))
    hq = np.where(quick, hb, 0)
    m = int(sa.size)
    qi = np.nonzero(quick)[0]

    def column(values: npt.NDArray[Any], fill: Any = None) -> list[Any]:
        """A full-length column: `values` at the quick samples, `fill` elsewhere."""
        out = np.full(m, fill, dtype=object)
        out[qi] = values
        result: list[Any] = out.tolist()
        return result

    def texts(values: _I64, width: int, fmt: Any) -> list[Any]:
        # Each distinct address formatted once (the caches in packets.py), then spread.
        uniq, inverse = np.unique(values, return_inverse=True)
        text = np.array([fmt(v.to_bytes(width, "big")) for v in uniq.tolist()] + [""],
                        dtype=object)[:-1]
        return column(text[inverse])

    qproto = proto[quick]
    is_tcp = qproto == _TCP
    # The 15 fields of a HeaderTuple, column by column; the samples the bulk read cannot
    # parse are filled in by parse_tuple below.
    parsed: list[list[Any]] = [
        texts(_be(buf, hq + 6, 6)[quick], 6, mac_text),
        texts(_be(buf, hq, 6)[quick], 6, mac_text),
        [None] * m,
        column(np.full(qi.size, _ETH_IPV4, dtype=object)),
        column(np.full(qi.size, 4, dtype=object)),
        texts(_be(buf, hq + 26, 4)[quick], 4, ip4_text),
        texts(_be(buf, hq + 30, 4)[quick], 4, ip4_text),
        column(qproto.astype(object)),
        column(_be(buf, hq + 34, 2)[quick].astype(object)),
        column(_be(buf, hq + 36, 2)[quick].astype(object)),
        column(cast(npt.NDArray[Any], np.where(is_tcp, buf[hq + 47][quick].astype(object), None))),
        [None] * m,
        [None] * m,
        column(_be(buf, hq + 16, 2)[quick].astype(object)),
        [None] * m,
    ]
    del buf, words  # views of `joined`; the header slices below are plain bytes
    hb_l = hb.tolist()
    hlen_l = hlen.tolist()
    hdrs = [joined[a:a + n] for a, n in zip(hb_l, hlen_l, strict=True)]
    hproto_l = hproto.tolist()
    for j in np.nonzero(~quick)[0].tolist():
        for column_, value in zip(parsed, parse_tuple(hdrs[j], hproto_l[j]), strict=True):
            column_[j] = value

    # Per datagram values, spread to its samples (objects kept as given: now, at).
    counts = count[fast]
    fast_l = fast.tolist()

    def spread(per_datagram: list[Any]) -> list[Any]:
        arr = np.empty(len(per_datagram), dtype=object)
        arr[:] = per_datagram
        result: list[Any] = np.repeat(arr, counts).tolist()
        return result

    samples: list[Sample] = list(map(
        new_flow_sample,
        repeat("sflow", m),
        spread(agents),
        [v if v >= 0 else None for v in np.where((in_fmt == 0) & (in_val != 0), in_val, -1).tolist()],
        [v if v >= 0 else None for v in np.where((out_fmt == 0) & (out_val != 0), out_val, -1).tolist()],
        rate.tolist(),
        spread([nows[i] for i in fast_l]),
        spread([ats[i] for i in fast_l]),
        frame.tolist(),
        hdrs,
        *parsed,
        hproto_l,
        out_fmt.tolist(),
        seq.tolist(),
        (sid >> 24).tolist(),
        (sid & 0x00FFFFFF).tolist(),
        pool.tolist(),
        drops.tolist(),
        stripped.tolist(),
    ))
    j = 0
    for f, (i, c) in enumerate(zip(fast_l, counts.tolist(), strict=True)):
        results[i] = DecodeResult(DatagramHeader(agents[f], sub[f], dseq[f], uptime[f]),
                                  samples[j:j + c], None, None, _NO_SKIPS)
        j += c
    return results  # type: ignore[return-value]


# -- columns ------------------------------------------------------------------------------------

# Below this many datagrams the exact decoder plus SampleColumns.from_samples is cheaper than
# the bulk read's fixed cost (about two hundred numpy calls). Same answers either way.
COLUMNS_BULK_MIN = 16
# ref = datagram number << REF_SAMPLE_BITS | index of the flow sample among its datagram's
# FlowSamples. A 65,535-byte datagram holds at most 1,023 flow samples (64 bytes each at the
# least), so 16 bits always suffice.
REF_SAMPLE_BITS = 16
_VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)
_ETH_IPV6 = 0x86DD
# IPv6 next headers parse_tuple walks as extension headers: such rows go to parse_tuple.
_IPV6_EXT = (0, 43, 44, 51, 60, 135, 139, 140)
_PORT_PROTOS = (_TCP, _UDP, 132)
_ICMP_PROTOS = (1, 58)
_NO_FALLBACK: dict[int, DecodeResult] = {}
# Lookup tables for the bulk parse (a gather, not np.isin): VLAN TPIDs by EtherType, and
# protocol classes by IP protocol number, index 256 (= -1, no protocol) in no class.
_VLAN_TABLE = np.zeros(1 << 16, dtype=np.bool_)
_VLAN_TABLE[list(_VLAN_TPIDS)] = True
_IP_VERSION_TABLE = np.zeros(1 << 16, dtype=np.int64)  # by EtherType: 4, 6 or 0
_IP_VERSION_TABLE[_ETH_IPV4] = 4
_IP_VERSION_TABLE[_ETH_IPV6] = 6
_C_IPV6_EXT, _C_PORTS, _C_ICMP = 1, 2, 4
_PROTO_CLASS = np.zeros(257, dtype=np.uint8)
for _set, _bit in ((_IPV6_EXT, _C_IPV6_EXT), (_PORT_PROTOS, _C_PORTS), (_ICMP_PROTOS, _C_ICMP)):
    _PROTO_CLASS[list(_set)] |= _bit
del _set, _bit


@dataclass(slots=True)
class ColumnBatch:
    """decode_batch_columns' answer: the flow samples as columns, and per datagram what the
    collector's bookkeeping reads (the DatagramHeader fields, errors, skips, counter samples).

    `cols` holds every FlowSample decode_datagram yields for the batch, datagram by datagram,
    in sample order. Per datagram i (arrays of the batch's length): `header_agent[i]` indexes
    `cols.agent_names` (-1: no header decoded), with `sub_agent`, `sequence`, `uptime_ms`;
    `flows[i]` its row count. `fallback` maps the datagrams the bulk read did not take to
    decode_datagram's exact DecodeResult (errors are only there). `partial` maps the datagrams
    it took that also hold counter samples to a DecodeResult of those counter samples alone
    (read by the exact decoder's own counter-sample reader) and their skips; the flow samples
    of those datagrams are rows like any other.
    """

    cols: SampleColumns
    header_agent: _I64
    sub_agent: _I64
    sequence: _I64
    uptime_ms: _I64
    flows: _I64
    fallback: dict[int, DecodeResult]
    partial: dict[int, DecodeResult] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.header_agent.shape[0])

    def results(self) -> list[tuple[int, DecodeResult]]:
        """(datagram, result) of `fallback` and `partial` together, in datagram order."""
        if not self.partial:
            return list(self.fallback.items())
        return sorted([*self.fallback.items(), *self.partial.items()], key=lambda ir: ir[0])

    def counter_samples(self) -> list[CounterSample]:
        """The counter samples decode_datagram yields for the batch, in order."""
        return [s for _, r in self.results() if r.error is None
                for s in r.samples if type(s) is CounterSample]


def decode_batch_columns(
    datagrams: Sequence[bytes | bytearray | memoryview],
    nows: Sequence[float],
    ats: Sequence[datetime],
    *,
    first_number: int | None = None,
) -> ColumnBatch:
    """decode_datagram over the batch, the flow samples as SampleColumns; never raises on bad
    datagrams. `first_number` is the raw ring's number of datagrams[0] (RawRing.extend), from
    which each row's `ref` is made; None leaves ref -1.
    """
    if len(datagrams) >= COLUMNS_BULK_MIN:
        try:
            return decode_batch_columns_unguarded(datagrams, nows, ats, first_number=first_number)
        except Exception:  # noqa: BLE001 - a bulk-read bug must cost speed, not answers
            pass
    return _columns_exact(datagrams, nows, ats, first_number)


def _columns_exact(
    datagrams: Sequence[bytes | bytearray | memoryview],
    nows: Sequence[float],
    ats: Sequence[datetime],
    first_number: int | None,
) -> ColumnBatch:
    n = len(datagrams)
    if len(nows) != n or len(ats) != n:
        raise ValueError("decode_batch_columns: one now and one at per datagram")
    results = {i: decode_datagram(d, now, at)
               for i, (d, now, at) in enumerate(zip(datagrams, nows, ats, strict=True))}
    names: dict[str, int] = {}
    hagent = np.full(n, NONE, dtype=np.int64)
    hsub = np.zeros(n, dtype=np.int64)
    hseq = np.zeros(n, dtype=np.int64)
    hup = np.zeros(n, dtype=np.int64)
    _fill_headers(results, names, hagent, hsub, hseq, hup)
    flows = np.zeros(n, dtype=np.int64)
    cols = _fallback_columns(results, names, flows, first_number)
    if cols is None:
        cols = _empty_columns()
    cols.agent_names = list(names)
    return ColumnBatch(cols, hagent, hsub, hseq, hup, flows, results)


def _fill_headers(results: dict[int, DecodeResult], names: dict[str, int], hagent: _I64,
                  hsub: _I64, hseq: _I64, hup: _I64) -> None:
    for i, r in results.items():
        h = r.header
        if h is not None:
            hagent[i] = names.setdefault(h.agent, len(names))
            hsub[i], hseq[i], hup[i] = h.sub_agent_id, h.sequence, h.uptime_ms


def _fallback_columns(results: dict[int, DecodeResult], names: dict[str, int], flows: _I64,
                      first_number: int | None) -> SampleColumns | None:
    """The FlowSamples of the exactly decoded datagrams as rows (agents in `names`)."""
    samples: list[FlowSample] = []
    dgs: list[int] = []
    ks: list[int] = []
    for i, r in results.items():
        if r.error is not None:
            continue
        k = 0
        for s in r.samples:
            if type(s) is FlowSample:
                samples.append(s)
                dgs.append(i)
                ks.append(k)
                k += 1
        flows[i] = k
    if not samples:
        return None
    cols = SampleColumns.from_samples(samples)
    remap = np.array([names.setdefault(a, len(names)) for a in cols.agent_names], dtype=np.int64)
    cols.agent = remap[cols.agent]
    cols.objects = None
    if first_number is not None:
        cols.ref = ((np.array(dgs, dtype=np.int64) + first_number) << REF_SAMPLE_BITS) | np.array(
            ks, dtype=np.int64)
    return cols


_COLUMN_FIELDS = ("agent", "input_ifindex", "output_ifindex", "sampling_rate", "now",
                  "frame_length", "ip_version", "src_hi", "src_lo", "has_src", "dst_hi",
                  "dst_lo", "has_dst", "protocol", "src_port", "dst_port", "tcp_flags",
                  "icmp_type", "sample_sequence", "source_id_type", "source_id_index",
                  "sample_pool", "ref")


def _empty_columns() -> SampleColumns:
    i64 = np.zeros(0, dtype=np.int64)
    u64 = np.zeros(0, dtype=np.uint64)
    b = np.zeros(0, dtype=np.bool_)
    return SampleColumns([], i64, i64, i64, i64, np.zeros(0, dtype=np.float64), i64, i64,
                         u64, u64, b, u64, u64, b, i64, i64, i64, i64, i64, i64, i64, i64,
                         i64, i64)


_AGENT_TEXT: dict[int, str] = {}


def _agent_text(address: int) -> str:
    """An IPv4 agent's text, formatted once per agent (bounded: a sprayed header is cleared)."""
    text = _AGENT_TEXT.get(address)
    if text is None:
        if len(_AGENT_TEXT) >= 65536:
            _AGENT_TEXT.clear()
        text = _AGENT_TEXT[address] = inet_ntoa(address.to_bytes(4, "big"))
    return text


def _u32(words: npt.NDArray[np.uint32], at: _I64) -> _I64:
    """The 4 bytes from byte offset `at` (any alignment) as big-endian numbers, from two
    4-byte words, each read as the buffer's last word when past its end (mode="clip": such
    an offset is only read for a row whose value is masked out or parsed again)."""
    i = at >> 2
    w0 = np.take(words, i, mode="clip").astype(np.uint64)
    w1 = np.take(words, i + 1, mode="clip").astype(np.uint64)
    sh = ((at & 3) << 3).astype(np.uint64)
    # (w0 w1) >> 32 - sh holds the 4 bytes in its low 32 bits.
    out: _I64 = ((((w0 << 32) | w1) >> (32 - sh)) & 0xFFFFFFFF).astype(np.int64)
    return out


def _u64(words: npt.NDArray[np.uint32], at: _I64) -> npt.NDArray[np.uint64]:
    """The 8 bytes from byte offset `at` (any alignment) as big-endian numbers, from three
    4-byte words: everything up to at + 12 must lie inside the buffer."""
    i = at >> 2
    sh = ((at & 3) << 3).astype(np.uint64)
    w0 = words[i].astype(np.uint64)
    w1 = words[i + 1].astype(np.uint64)
    w2 = words[i + 2].astype(np.uint64)
    # w2 >> 32 (sh = 0) is 0: the words are 32-bit numbers held in 64 bits.
    out: npt.NDArray[np.uint64] = (((w0 << 32) | w1) << sh) | (w2 >> (32 - sh))
    return out


def decode_batch_columns_unguarded(
    datagrams: Sequence[bytes | bytearray | memoryview],
    nows: Sequence[float],
    ats: Sequence[datetime],
    *,
    first_number: int | None = None,
) -> ColumnBatch:
    """decode_batch_columns always through the bulk read, without the last-resort guard."""
    return _columns_walked(_walk(datagrams, nows, ats, counters=True), nows, ats, first_number)


def decode_batch_columns_in(
    buffer: _Buffer,
    starts: npt.NDArray[np.integer[Any]],
    lengths: npt.NDArray[np.integer[Any]],
    nows: Sequence[float],
    ats: Sequence[datetime],
    *,
    first_number: int | None = None,
) -> ColumnBatch:
    """decode_batch_columns over datagrams read in place: datagram i is
    `buffer[starts[i]:starts[i] + lengths[i]]`. Each start must be a multiple of 4 and the
    buffer must hold at least 64 bytes past the end of the last datagram (the bulk read's masked
    reads stay inside it; what those bytes hold does not matter). The same answers as
    decode_batch_columns on the datagrams as bytes; nothing of `buffer` is kept, so the caller
    may reuse it once this returns (mmsg.MmsgReceiver's slots).
    """
    starts, lengths, datas = _in_place(buffer, starts, lengths)
    if len(datas) >= COLUMNS_BULK_MIN:
        try:
            return _columns_walked(_walk_buffer(buffer, starts, lengths, datas, nows, ats, True),
                                   nows, ats, first_number)
        except Exception:  # noqa: BLE001 - a bulk-read bug must cost speed, not answers
            pass
    return _columns_exact(datas, nows, ats, first_number)


def decode_batch_columns_in_unguarded(
    buffer: _Buffer,
    starts: npt.NDArray[np.integer[Any]],
    lengths: npt.NDArray[np.integer[Any]],
    nows: Sequence[float],
    ats: Sequence[datetime],
    *,
    first_number: int | None = None,
) -> ColumnBatch:
    """decode_batch_columns_in always through the bulk read, without the last-resort guard."""
    starts, lengths, datas = _in_place(buffer, starts, lengths)
    return _columns_walked(_walk_buffer(buffer, starts, lengths, datas, nows, ats, True), nows,
                           ats, first_number)


class _Slices(Sequence[bytes]):
    """The datagrams of an in-place batch as bytes, each sliced when first asked for (only the
    exact decoder's datagrams are)."""

    def __init__(self, buffer: _Buffer, starts: _I64, lengths: _I64) -> None:
        self._buffer = buffer
        self._starts = starts
        self._lengths = lengths
        self._got: dict[int, bytes] = {}

    def __len__(self) -> int:
        return int(self._starts.shape[0])

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        got = self._got.get(i)
        if got is None:
            if not -len(self) <= i < len(self):
                raise IndexError(i)
            a = int(self._starts[i])
            got = self._got[i] = bytes(self._buffer[a:a + int(self._lengths[i])])
        return got


def _in_place(buffer: _Buffer, starts: npt.NDArray[np.integer[Any]],
              lengths: npt.NDArray[np.integer[Any]]) -> tuple[_I64, _I64, _Slices]:
    s = np.asarray(starts, dtype=np.int64)
    ln = np.asarray(lengths, dtype=np.int64)
    if s.shape != ln.shape or s.ndim != 1:
        raise ValueError("decode_batch_columns_in: one start and one length per datagram")
    if s.size and (int((s % 4).max()) != 0 or int(s.min()) < 0 or int(ln.min()) < 0
                   or int((s + ln).max()) + _PAD > len(buffer) or len(buffer) % 4):
        raise ValueError("decode_batch_columns_in: datagrams must start on 4-byte boundaries "
                         f"and end {_PAD} bytes before the buffer's end (a multiple of 4)")
    return s, ln, _Slices(buffer, s, ln)


@dataclass(slots=True)
class _Parsed:
    """The rows' sample fields and parsed headers, as SampleColumns holds them (`slow` rows
    still to be parsed by parse_tuple from `hb`, `hl` and `hproto`)."""

    seq: _I64
    sid: _I64
    rate: _I64
    pool: _I64
    input_ifindex: _I64
    output_ifindex: _I64
    frame: _I64
    hproto: _I64
    hb: _I64  # absolute offset of the header's first byte
    hl: _I64
    ip_version: _I64
    ipv: npt.NDArray[np.bool_]
    src_hi: npt.NDArray[np.uint64]
    src_lo: npt.NDArray[np.uint64]
    dst_hi: npt.NDArray[np.uint64]
    dst_lo: npt.NDArray[np.uint64]
    protocol: _I64
    src_port: _I64
    dst_port: _I64
    tcp_flags: _I64
    icmp_type: _I64
    slow: npt.NDArray[np.bool_]


def _parsed_compiled(rows: _I64) -> _Parsed:
    """_Parsed of the compiled walk's rows (cwalk.walk did _parsed_numpy's work per row)."""
    ipver = rows[cwalk.IPVER]
    return _Parsed(
        rows[cwalk.SEQ], rows[cwalk.SID], rows[cwalk.RATE], rows[cwalk.POOL],
        rows[cwalk.IN_IF], rows[cwalk.OUT_IF], rows[cwalk.FRAME], rows[cwalk.HPROTO],
        rows[cwalk.SA] + 64, rows[cwalk.HL], ipver, ipver >= 0,
        rows[cwalk.SRC_HI].view(np.uint64), rows[cwalk.SRC_LO].view(np.uint64),
        rows[cwalk.DST_HI].view(np.uint64), rows[cwalk.DST_LO].view(np.uint64),
        rows[cwalk.PROTO], rows[cwalk.SPORT], rows[cwalk.DPORT], rows[cwalk.FLAGS],
        rows[cwalk.ICMP], rows[cwalk.SLOW] != 0)


def _parsed_numpy(buf: npt.NDArray[np.uint8], words: npt.NDArray[np.uint32], sa: _I64) -> _Parsed:
    """The sample fields and headers of the flow samples whose type words are at `sa`."""
    sw = sa >> 2
    seq = _words_at(words, sw + 2)
    sid = _words_at(words, sw + 3)
    rate = _words_at(words, sw + 4)
    pool = _words_at(words, sw + 5)
    inp = _words_at(words, sw + 7)
    outp = _words_at(words, sw + 8)
    hproto = _words_at(words, sw + 12)
    frame = _words_at(words, sw + 13)
    hl = _words_at(words, sw + 15)
    hb = sa + 64  # first header byte, 4-aligned; hb + 64 is still inside the buffer
    hw = sw + 16

    def u8(rel: _I64) -> _I64:
        # mode="clip" reads the last byte for an offset past the buffer (a row whose header
        # is too short for it, which is `slow` or masked out).
        out: _I64 = np.take(buf, hb + rel, mode="clip").astype(np.int64)
        return out

    # packets.parse_tuple, in bulk, for Ethernet with at most one VLAN tag (or a bare IP
    # header), IPv4 with any IHL, IPv6 without extension headers, then TCP/UDP/SCTP ports,
    # TCP flags or the ICMP type, all inside the sampled bytes. Anything else (a cut header,
    # a second tag, extension headers, a bad version) is `slow`: parse_tuple per row.
    eth = hproto == HEADER_ETHERNET
    slow = ~(eth | (hproto == HEADER_IPV4) | (hproto == HEADER_IPV6))
    slow |= eth & (hl < 14)
    et = words[hw + 3] >> 16  # header bytes 12-13
    tagged = eth & _VLAN_TABLE[et]
    slow |= tagged & (hl < 18)
    et2 = words[hw + 4] >> 16  # bytes 16-17
    slow |= tagged & _VLAN_TABLE[et2]
    et = np.where(tagged, et2, et)
    off = np.where(eth, np.where(tagged, 18, 14), 0)
    want = np.where(eth, _IP_VERSION_TABLE[et], np.where(hproto == HEADER_IPV4, 4, 6))
    v4 = want == 4
    v6 = want == 6
    slow |= v4 & (off + 20 > hl)
    slow |= v6 & (off + 40 > hl)
    verihl = u8(off)
    slow |= (v4 & (verihl >> 4 != 4)) | (v6 & (verihl >> 4 != 6))
    ihl = (verihl & 0x0F) * 4
    slow |= v4 & (ihl < 20)
    ipv = v4 | v6
    proto = np.where(ipv, u8(off + np.where(v4, 9, 6)), NONE)
    pclass = _PROTO_CLASS[proto]  # proto is -1 (index 256, no class) or a byte
    slow |= v6 & ((pclass & _C_IPV6_EXT) != 0)
    # A later IPv4 fragment has no L4 header. Bytes off + 6 and 7 share one word (off is 0,
    # 14 or 18): its high half when off + 6 is a multiple of 4, else its low half.
    o6 = off + 6
    frag = words[hw + (o6 >> 2)] >> ((~o6 & 2) << 3)
    l4 = (v4 & ((frag & 0x1FFF) == 0)) | v6
    p = off + np.where(v4, ihl, 40)
    ports = l4 & ((pclass & _C_PORTS) != 0)
    tcp = ports & (proto == _TCP)
    icmp = l4 & ((pclass & _C_ICMP) != 0)
    slow |= (ports & (p + 4 > hl)) | (tcp & (p + 14 > hl)) | (icmp & (p + 2 > hl))
    sdport = _u32(words, hb + p)  # both ports
    m = int(sa.size)
    src_hi = np.zeros(m, dtype=np.uint64)
    dst_hi = np.zeros(m, dtype=np.uint64)
    mapped = np.uint64(V4_MAPPED)
    # IPv4 source and destination in one 8-byte read (off is at most 18: inside the buffer).
    sd = _u64(words, hb + off + 12)
    src_lo = np.where(v4, (sd >> 32) | mapped, np.uint64(0))
    dst_lo = np.where(v4, (sd & 0xFFFFFFFF) | mapped, np.uint64(0))
    six = np.nonzero(v6 & ~slow)[0]
    if six.size:
        b6 = hb[six] + off[six]
        src_hi[six] = _u64(words, b6 + 8)
        src_lo[six] = _u64(words, b6 + 16)
        dst_hi[six] = _u64(words, b6 + 24)
        dst_lo[six] = _u64(words, b6 + 32)
    return _Parsed(
        seq, sid, rate, pool,
        # Format 0 (the top two bits) with a nonzero index: 0 < word < 2**30.
        np.where((inp > 0) & (inp < 1 << 30), inp, NONE),
        np.where((outp > 0) & (outp < 1 << 30), outp, NONE),
        frame, hproto, hb, hl, np.where(ipv, want, NONE), ipv, src_hi, src_lo, dst_hi, dst_lo,
        proto,
        np.where(ports, sdport >> 16, NONE),
        np.where(ports, sdport & 0xFFFF, NONE),
        np.where(tcp, u8(p + 13), NONE),
        np.where(icmp, u8(p), NONE),
        slow)


def _columns_walked(w: _Walked, nows: Sequence[float], ats: Sequence[datetime],
                    first_number: int | None) -> ColumnBatch:
    n, buf, words = w.n, w.buf, w.words
    ok = w.ok
    partial = _counter_pass(w, nows, ats) if w.cdg.size else {}
    keep = ok[w.dg]  # a datagram whose counter sample is malformed goes whole to the fallback
    whole = bool(keep.all())
    dg, sa, sk = (w.dg, w.sa, w.sk) if whole else (w.dg[keep], w.sa[keep], w.sk[keep])

    results = {i: decode_datagram(w.datas[i], nows[i], ats[i])
               for i in np.nonzero(~ok)[0].tolist()}
    fast = np.nonzero(ok)[0]

    # Datagram headers: the taken ones read in bulk (agent text once per distinct address).
    names: dict[str, int] = {}
    hagent = np.full(n, NONE, dtype=np.int64)
    hsub = np.zeros(n, dtype=np.int64)
    hseq = np.zeros(n, dtype=np.int64)
    hup = np.zeros(n, dtype=np.int64)
    fb = w.starts[fast] >> 2
    uniq, inverse = np.unique(words[fb + 2], return_inverse=True)
    # `names` is empty here and distinct addresses have distinct texts: agent j of `uniq`
    # gets code j.
    get = _AGENT_TEXT.get
    for j, v in enumerate(uniq.tolist()):
        names[get(v) or _agent_text(v)] = j
    hagent[fast] = inverse
    hsub[fast] = words[fb + 3]
    hseq[fast] = words[fb + 4]
    hup[fast] = words[fb + 5]
    _fill_headers(results, names, hagent, hsub, hseq, hup)

    m = int(sa.size)
    per = np.bincount(dg, minlength=n)  # rows per datagram
    if w.rows is not None:
        p = _parsed_compiled(w.rows if whole else w.rows[:, keep])
    else:
        p = _parsed_numpy(buf, words, sa)
    cols = SampleColumns(
        agent_names=[],
        agent=hagent[dg],
        input_ifindex=p.input_ifindex,
        output_ifindex=p.output_ifindex,
        sampling_rate=p.rate,
        now=np.asarray(nows, dtype=np.float64)[dg] if m else np.zeros(0, dtype=np.float64),
        frame_length=p.frame,
        ip_version=p.ip_version,
        src_hi=p.src_hi, src_lo=p.src_lo, has_src=p.ipv.copy(),
        dst_hi=p.dst_hi, dst_lo=p.dst_lo, has_dst=p.ipv.copy(),
        protocol=p.protocol,
        src_port=p.src_port,
        dst_port=p.dst_port,
        tcp_flags=p.tcp_flags,
        icmp_type=p.icmp_type,
        sample_sequence=p.seq,
        source_id_type=p.sid >> 24,
        source_id_index=p.sid & 0x00FFFFFF,
        sample_pool=p.pool,
        # k: the row's index among its datagram's rows. That is its sample index when no
        # taken datagram holds a counter sample (all of those are in `partial`); otherwise
        # counted from the datagram's first row (dg is sorted: rows of datagram i start at
        # the sum of the earlier datagrams' row counts).
        ref=((dg + first_number) << REF_SAMPLE_BITS)
        | (sk if not partial else np.arange(m) - (np.cumsum(per) - per)[dg])
        if first_number is not None else np.full(m, NONE, dtype=np.int64),
    )
    hb, hl, hproto = p.hb, p.hl, p.hproto
    for j in np.nonzero(p.slow)[0].tolist():
        a = int(hb[j])
        _set_row(cols, j, parse_tuple(bytes(w.joined[a:a + int(hl[j])]), int(hproto[j])))

    flows = np.zeros(n, dtype=np.int64)
    if m:
        flows[fast] = per[fast]
    extra = _fallback_columns(results, names, flows, first_number)
    if extra is not None:
        # Rows of the exactly decoded datagrams go in their datagram's place.
        order = np.argsort(np.concatenate([dg, _row_datagrams(flows, results, extra)]),
                           kind="stable")
        for f in _COLUMN_FIELDS:
            setattr(cols, f, np.concatenate([getattr(cols, f), getattr(extra, f)])[order])
    cols.agent_names = list(names)
    return ColumnBatch(cols, hagent, hsub, hseq, hup, flows, results, partial)


_HEADER_WORDS = struct.Struct("!IIII").unpack_from  # sub-agent, sequence, uptime, count


def _counter_pass(w: _Walked, nows: Sequence[float],
                  ats: Sequence[datetime]) -> dict[int, DecodeResult]:
    """The counter samples of the datagrams the walk took, through decoder._counter_sample
    (the exact decoder's reader, so the same facts, skips and errors); a datagram with a
    malformed one is taken out of `w.ok`, for decode_datagram to report."""
    out: dict[int, DecodeResult] = {}
    order = np.lexsort((w.csa, w.cdg))
    current = -1
    facts: list[Sample] = []
    skipped: dict[str, int] = {}
    bad = False

    def close() -> None:
        if current >= 0 and not bad:
            data = w.datas[current]
            agent = _agent_text(int.from_bytes(data[8:12], "big"))
            sub, seq, up, _ = _HEADER_WORDS(data, 12)
            out[current] = DecodeResult(DatagramHeader(agent, sub, seq, up), facts, None, None,
                                        MappingProxyType(skipped) if skipped else _NO_SKIPS)

    for i, a, f in zip(w.cdg[order].tolist(), w.csa[order].tolist(), w.cfmt[order].tolist(),
                       strict=True):
        if i != current:
            close()
            current, facts, skipped, bad = i, [], {}, False
        if bad:
            continue
        data = w.datas[i]
        o = a - int(w.starts[i])
        length = int.from_bytes(data[o + 4:o + 8], "big")
        if _counter_sample(data, o + 8, o + 8 + length, f == COUNTER_SAMPLE_EXPANDED,
                           _agent_text(int.from_bytes(data[8:12], "big")), nows[i], ats[i],
                           facts, skipped) is not None:
            bad = True
            w.ok[i] = False
    close()
    return out


def _row_datagrams(flows: _I64, results: dict[int, DecodeResult], extra: SampleColumns) -> _I64:
    idx = np.array(sorted(results), dtype=np.int64)
    out: _I64 = np.repeat(idx, flows[idx]) if idx.size else np.zeros(0, dtype=np.int64)
    assert out.shape[0] == len(extra)
    return out


def _set_row(cols: SampleColumns, j: int, t: HeaderTuple) -> None:
    """Row j's header fields from packets.parse_tuple's answer."""
    ver, src, dst, proto, sport, dport, flags, itype = t[4], t[5], t[6], t[7], t[8], t[9], \
        t[10], t[11]
    cols.ip_version[j] = NONE if ver is None else ver
    cols.src_hi[j], cols.src_lo[j], cols.has_src[j] = ip_words(src)
    cols.dst_hi[j], cols.dst_lo[j], cols.has_dst[j] = ip_words(dst)
    cols.protocol[j] = NONE if proto is None else proto
    cols.src_port[j] = NONE if sport is None else sport
    cols.dst_port[j] = NONE if dport is None else dport
    cols.tcp_flags[j] = NONE if flags is None else flags
    cols.icmp_type[j] = NONE if itype is None else itype
