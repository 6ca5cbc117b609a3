"""Columnar sFlow v5 decode: a batch of datagrams read in bulk with numpy, exact fallback.

sFlow's fields are 32-bit words on 4-byte boundaries, so once the batch is one buffer the
k-th sample of every datagram is read by one numpy gather. Only the common, regular layout
is read that way: an IPv4 agent, compact flow samples each holding exactly one raw packet
header record, nothing left over. Any other datagram, counter samples included, goes whole to
decoder.decode_datagram, and any header the bulk read cannot parse as untagged IPv4 TCP/UDP
goes to packets.parse_tuple. The answers are decode_datagram's, datagram by datagram;
tests/unit/test_sflow_batch.py compares the two on generated, recorded, lossy and malformed
traffic.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from itertools import repeat
from socket import inet_ntoa
from typing import Any, cast

import numpy as np
import numpy.typing as npt
from rackwarden.drivers.packets import ip4_text, mac_text, parse_tuple
from rackwarden.drivers.sflow.decoder import (
    _NO_SKIPS,
    ADDRESS_IPV4,
    FLOW_RECORD_RAW_HEADER,
    FLOW_SAMPLE,
    RAW_HEADER_FIXED,
    SFLOW_VERSION,
    DatagramHeader,
    DecodeResult,
    Sample,
    decode_datagram,
)
from rackwarden.policies.flowfacts import HEADER_ETHERNET, new_flow_sample

__all__ = ["BULK_MIN", "decode_batch", "decode_batch_unguarded"]

# Below this many datagrams the exact decoder is cheaper than the bulk read's fixed cost (about
# a hundred numpy calls): measured break-even near 64 datagrams of ~7 samples on the 2-core
# test machine (a batch of 1 cost ~18x decode_datagram). Same answers either way.
BULK_MIN = 64

_I64 = npt.NDArray[np.int64]
_HEAD = 28  # version, address type, IPv4 address, sub-agent, sequence, uptime, sample count
# The smallest regular flow sample: type/length, 32 fixed bytes, one record's type/length and
# the raw header's 16 fixed bytes.
_MIN_FLOW = 8 + 32 + 8 + RAW_HEADER_FIXED
_PAD = 64  # zero bytes after the batch, so a masked-out gather never reads past the buffer
_ETH_IPV4 = 0x0800
_TCP, _UDP = 6, 17
_FAST_PARSE_MIN = 48  # packets.parse_tuple's fast path wants this many header bytes


def _gather_u32(words: npt.NDArray[np.uint32], byte_off: _I64) -> _I64:
    out: _I64 = words[byte_off >> 2].astype(np.int64)
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


def decode_batch_unguarded(
    datagrams: Sequence[bytes | bytearray | memoryview],
    nows: Sequence[float],
    ats: Sequence[datetime],
) -> list[DecodeResult]:
    """decode_batch without the last-resort guard, so tests see bulk-read bugs."""
    n = len(datagrams)
    if len(nows) != n or len(ats) != n:
        raise ValueError("decode_batch: one now and one at per datagram")
    datas = [d if type(d) is bytes else bytes(d) for d in datagrams]
    lens_list = [len(d) for d in datas]
    # One buffer, each datagram starting on a 4-byte boundary so words read as one >u4 view.
    parts: list[bytes] = []
    starts_list: list[int] = []
    pos = 0
    for d, ln in zip(datas, lens_list, strict=True):
        starts_list.append(pos)
        parts.append(d)
        pad = -ln % 4
        if pad:
            parts.append(b"\0" * pad)
        pos += ln + pad
    parts.append(b"\0" * _PAD)
    joined = b"".join(parts)
    buf = np.frombuffer(joined, dtype=np.uint8)
    words = np.frombuffer(joined, dtype=">u4")
    starts = np.array(starts_list, dtype=np.int64)
    lens = np.array(lens_list, dtype=np.int64)

    ok = (lens >= _HEAD) & (lens % 4 == 0)
    # Datagrams too short to read safely are read at offset 0 and masked out.
    base = np.where(ok, starts, 0)
    version = _gather_u32(words, base)
    atype = _gather_u32(words, base + 4)
    count = _gather_u32(words, base + 24)
    ok &= (version == SFLOW_VERSION) & (atype == ADDRESS_IPV4)
    ok &= count <= (lens - _HEAD) // 8
    for i, at in enumerate(ats):
        if ok[i] and (at.tzinfo is None or at.utcoffset() is None):
            ok[i] = False  # the exact decoder reports it

    # The walk: sample k of every datagram that has one, all at once.
    off = np.full(n, _HEAD, dtype=np.int64)
    s_dgram: list[_I64] = []
    s_start: list[_I64] = []
    s_k: list[_I64] = []
    k = 0
    cmax = int(count[ok].max()) if ok.any() else 0
    while k < cmax:
        act = ok & (count > k)
        idx = np.nonzero(act)[0]
        if idx.size == 0:
            break
        o = off[idx]
        dlen = lens[idx]
        a = starts[idx] + o  # absolute byte offset of the sample's type word
        good = o + _MIN_FLOW <= dlen
        a = np.where(good, a, 0)
        fmt = _gather_u32(words, a)
        length = _gather_u32(words, a + 4)
        end = o + 8 + length
        good &= (fmt == FLOW_SAMPLE) & (length % 4 == 0) & (end <= dlen)
        good &= length >= _MIN_FLOW - 8
        nrec = _gather_u32(words, a + 36)
        rfmt = _gather_u32(words, a + 40)
        rlen = _gather_u32(words, a + 44)
        hlen = _gather_u32(words, a + 60)
        good &= (nrec == 1) & (rfmt == FLOW_RECORD_RAW_HEADER) & (rlen >= RAW_HEADER_FIXED)
        good &= o + 48 + rlen <= end  # the record inside its sample
        good &= hlen <= rlen - RAW_HEADER_FIXED  # the header inside its record
        ok[idx[~good]] = False
        off[idx] = end
        s_dgram.append(idx[good])
        s_start.append(a[good])
        s_k.append(np.full(int(good.sum()), k, dtype=np.int64))
        k += 1
    ok &= off == lens  # trailing bytes are the exact decoder's to note

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

    # Samples of the fast datagrams, in datagram order then sample order.
    dg = np.concatenate(s_dgram) if s_dgram else np.zeros(0, dtype=np.int64)
    sa = np.concatenate(s_start) if s_start else np.zeros(0, dtype=np.int64)
    sk = np.concatenate(s_k) if s_k else np.zeros(0, dtype=np.int64)
    keep = ok[dg]
    dg, sa, sk = dg[keep], sa[keep], sk[keep]
    order = np.lexsort((sk, dg))
    dg, sa = dg[order], sa[order]

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
        for field, value in zip(parsed, parse_tuple(hdrs[j], hproto_l[j]), strict=True):
            field[j] = value

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
