"""Captured Ethernet frames to SampleColumns in bulk: numpy gathers, exact per-frame fallback.

Input is a batch of frames copied out of the ring as rows of a (n, slot) uint8 array (zero
past each frame's captured length). The common frames are read column-wise: Ethernet with
0 or 1 VLAN tag, then IPv4 (any IHL, fragments included) or IPv6 without extension headers,
then TCP/UDP/SCTP ports and flags or the ICMP type; other EtherTypes give a row with no IP
fields, as packets.parse_tuple does. Anything else (truncated headers, a bad IP version or
IHL, QinQ, IPv6 extension headers) goes through packets.parse_tuple one frame at a time. A
row equals the FlowSample that span.SpanCapture._sample builds for the frame, field by field
(tests/unit/test_span_columns.py holds it to that), and port attribution is the same:
per-source ifIndexes, or source/destination MAC through `mac_ports` on a shared mirror.
The bulk read runs in C when the ring walker is built (ringwalk.read_columns_c, or within
the ring walk itself: ringwalk.walk_copy_read_c); the numpy read here is its twin and
reference, held equal to it on any bytes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from rackwarden.drivers.capture import ringwalk
from rackwarden.drivers.packets import parse_tuple
from rackwarden.policies.flowcols import NONE, V4_MAPPED, SampleColumns, ip_words
from rackwarden.policies.flowfacts import HEADER_ETHERNET

__all__ = ["MacTable", "ParseStats", "frames_to_columns"]

I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]


def _lut(size: int, members: tuple[int, ...]) -> npt.NDArray[np.bool_]:
    # Membership as one gather: np.isin costs ~10x more per call on a batch of a few hundred.
    t = np.zeros(size, dtype=np.bool_)
    t[list(members)] = True
    return t


_TPID = _lut(1 << 16, (0x8100, 0x88A8, 0x9100))
# IPv6 extension headers packets.parse_tuple walks (its _IPV6_EXT_8OCTET, fragment, AH).
_IPV6_EXT = _lut(256, (0, 43, 44, 51, 60, 135, 139, 140))
_PORT_PROTO = _lut(256, (6, 17, 132))
_ICMP_PROTO = _lut(256, (1, 58))
READ_TABLES = (_TPID, _IPV6_EXT, _PORT_PROTO, _ICMP_PROTO)  # the C read's lookup tables
_HDR_END = 56  # Ethernet + IPv6 fixed header, after the VLAN tag is cut out
_BE: dict[int, np.dtype[Any]] = {2: np.dtype(">u2"), 4: np.dtype(">u4"), 8: np.dtype(">u8")}
_MAC_RE = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}")


class MacTable:
    """mac_ports (lower-case "aa:bb:cc:dd:ee:ff" -> ifIndex) as a sorted array of 48-bit keys.

    Only keys in parse_tuple's own MAC text form can ever match a frame, so only those are
    kept in the array; the text dict stays for the per-frame fallback rows."""

    def __init__(self, mac_ports: Mapping[str, int]) -> None:
        self.text = dict(mac_ports)
        pairs = sorted((int(k.replace(":", ""), 16), v) for k, v in self.text.items()
                       if _MAC_RE.fullmatch(k))
        self.keys = np.array([k for k, _ in pairs], dtype=np.int64)
        self.vals = np.array([v for _, v in pairs], dtype=np.int64)

    def lookup(self, macs: I64) -> I64:
        """ifIndex per 48-bit MAC, -1 where unknown."""
        if self.keys.shape[0] == 0:
            return np.full(macs.shape[0], NONE, dtype=np.int64)
        i = np.searchsorted(self.keys, macs)
        i = np.minimum(i, self.keys.shape[0] - 1)
        out: I64 = np.where(self.keys[i] == macs, self.vals[i], NONE)
        return out


@dataclass(slots=True)
class ParseStats:
    """What the batch parse counted, for CaptureCounters (same meaning as _sample's)."""

    decode_errors: dict[str, int]
    unattributed: int
    fallback: int  # rows that went through parse_tuple


def _opt(v: int | None) -> int:
    return NONE if v is None else v


def _read_numpy(frames: U8, L: I64) -> tuple[Any, ...]:
    """The bulk read in numpy (the reference; drivers/capture/_ringwalk.c rw_columns is its
    twin): ok, has_ip, ip_version, protocol, src_port, dst_port, tcp_flags, icmp_type,
    src_hi, src_lo, dst_hi, dst_lo, smac, dmac; rows not ok are the exact parser's."""
    n, slot = int(frames.shape[0]), int(frames.shape[1])
    flat = frames.reshape(-1)
    rowbase = np.arange(n, dtype=np.int64) * slot
    top = slot - 1

    # The fixed headers as one (n, 56) block with the VLAN tag (if any) cut out, so every
    # field up to the IPv6 addresses sits at one column for all rows and reads as a view.
    et0 = frames[:, 12:14].view(">u2")[:, 0].astype(np.int64)
    tagged = _TPID[et0]
    if tagged.any():
        rows = np.flatnonzero(tagged)
        H = frames[:, :_HDR_END].copy()
        H[rows, 12:_HDR_END] = frames[rows, 16:_HDR_END + 4]
    else:
        H = frames[:, :_HDR_END]

    def u(col: int, width: int) -> npt.NDArray[Any]:
        out: npt.NDArray[Any] = H[:, col:col + width].view(_BE[width])[:, 0]
        return out

    l2 = 14 + 4 * tagged.astype(np.int64)
    et = u(12, 2).astype(np.int64)
    ok = (L >= 14) & (~tagged | ((L >= 18) & ~_TPID[et]))
    is4 = et == 0x0800
    is6 = et == 0x86DD
    ip = is4 | is6
    vb = H[:, 14].astype(np.int64)
    ok &= ~ip | ((L > l2) & ((vb >> 4) == np.where(is4, 4, 6)))
    ihl = (vb & 0x0F) * 4
    ok &= ~is4 | ((L >= l2 + 20) & (ihl >= 20))
    frag = u(20, 2).astype(np.int64) & 0x1FFF
    proto8 = np.where(is4, H[:, 23], H[:, 20]).astype(np.int64)  # a byte: indexes the tables
    proto = np.where(ip, proto8, NONE)
    ok &= ~is6 | ((L >= l2 + 40) & ~_IPV6_EXT[proto8])
    p = rowbase + np.where(is4, l2 + ihl, l2 + 40)  # the L4 header, in `flat`
    l4 = ip & ~(is4 & (frag != 0))  # a later IPv4 fragment has no L4 header
    ports = l4 & _PORT_PROTO[proto8]
    tcp = ports & (proto == 6)
    icmp = l4 & _ICMP_PROTO[proto8]
    need = np.where(tcp, 14, np.where(ports, 4, np.where(icmp, 2, 0)))
    ok &= L >= p - rowbase + need

    last = rowbase + top  # a read past the row is clipped to it; only masked rows do that

    def g(at: I64) -> I64:
        out: I64 = flat[np.minimum(at, last)].astype(np.int64)
        return out

    b0 = g(p)
    b2 = g(p + 2)
    ip_version = np.where(ip, np.where(is4, 4, 6), NONE)
    protocol = proto
    src_port = np.where(ports, (b0 << 8) | g(p + 1), NONE)
    dst_port = np.where(ports, (b2 << 8) | g(p + 3), NONE)
    tcp_flags = np.where(tcp, g(p + 13), NONE)
    icmp_type = np.where(icmp, b0, NONE)

    m4 = is4 & ok
    m6 = is6 & ok
    zero = np.uint64(0)
    v4src = u(26, 4).astype(np.uint64) | np.uint64(V4_MAPPED)
    v4dst = u(30, 4).astype(np.uint64) | np.uint64(V4_MAPPED)
    src_hi = np.where(m6, u(22, 8), zero).astype(np.uint64)
    src_lo = np.where(m6, u(30, 8), np.where(m4, v4src, zero)).astype(np.uint64)
    dst_hi = np.where(m6, u(38, 8), zero).astype(np.uint64)
    dst_lo = np.where(m6, u(46, 8), np.where(m4, v4dst, zero)).astype(np.uint64)
    has_ip = ip & ok
    dmac = (u(0, 8) >> np.uint64(16)).astype(np.int64)
    smac = (u(4, 8) & np.uint64(0xFFFF_FFFF_FFFF)).astype(np.int64)
    return (ok, has_ip, ip_version, protocol, src_port, dst_port, tcp_flags, icmp_type,
            src_hi, src_lo, dst_hi, dst_lo, smac, dmac)


def frames_to_columns(
    frames: U8,
    caplen: I64,
    wire: I64,
    now: npt.NDArray[np.float64],
    *,
    agent: str,
    sampling_rate: int,
    input_ifindex: int | None,
    output_ifindex: int | None,
    macs: MacTable | None,
    ref: I64 | None = None,
    impl: ringwalk.Impl | None = None,
    read: ringwalk.Read | None = None,
) -> tuple[SampleColumns, ParseStats]:
    """Columns of n frames (row i: frames[i, :caplen[i]], wire length wire[i], seen at now[i]).

    `macs` given: attribute by MAC (a shared mirror; the source's ifIndexes are ignored), as
    _sample does when the MirrorSource has neither ifIndex. `impl` chooses the bulk read as
    ringwalk.choose does: C (rw_columns) when built, else numpy; both give the same rows.
    `read`: the C read of these very rows, already made (ringwalk.walk_copy_read_c)."""
    n, slot = int(frames.shape[0]), int(frames.shape[1])
    if slot < _HDR_END + 4:
        raise ValueError(f"frames_to_columns: rows of {slot} bytes, at least {_HDR_END + 4}")
    L = caplen.astype(np.int64)
    if read is not None or ringwalk.choose(impl) == "c":
        if read is None:
            read = ringwalk.read_columns_c(frames, L, READ_TABLES)
        ok, ints, words = read.ok, read.ints, read.words
        ip_version, protocol, src_port, dst_port, tcp_flags, icmp_type, smac, dmac = ints
        src_hi, src_lo, dst_hi, dst_lo = words
        has_ip = ok & (ip_version != NONE)
    else:
        (ok, has_ip, ip_version, protocol, src_port, dst_port, tcp_flags, icmp_type,
         src_hi, src_lo, dst_hi, dst_lo, smac, dmac) = _read_numpy(frames, L)

    if macs is not None:
        in_if = np.where(ok, macs.lookup(smac), NONE)
        out_if = np.where(ok, macs.lookup(dmac), NONE)
    else:
        in_if = np.full(n, _opt(input_ifindex), dtype=np.int64)
        out_if = np.full(n, _opt(output_ifindex), dtype=np.int64)

    errors: dict[str, int] = {}
    slow = np.flatnonzero(~ok)
    has_src = has_ip.copy()
    has_dst = has_ip.copy()
    if slow.shape[0]:
        # The exact path, frame by frame: what the vector read above does not cover.
        for i in slow.tolist():
            t = parse_tuple(frames[i, :int(L[i])].tobytes(), HEADER_ETHERNET)
            ip_version[i] = _opt(t[4])
            protocol[i] = _opt(t[7])
            src_port[i] = _opt(t[8])
            dst_port[i] = _opt(t[9])
            tcp_flags[i] = _opt(t[10])
            icmp_type[i] = _opt(t[11])
            sh, sl, sp = ip_words(t[5])
            dh, dl, dp = ip_words(t[6])
            src_hi[i], src_lo[i], has_src[i] = sh, sl, sp
            dst_hi[i], dst_lo[i], has_dst[i] = dh, dl, dp
            if macs is not None:
                in_if[i] = _opt(macs.text.get(t[0]) if t[0] is not None else None)
                out_if[i] = _opt(macs.text.get(t[1]) if t[1] is not None else None)
            if t[14] is not None:
                errors[t[14]] = errors.get(t[14], 0) + 1
    unattributed = int(np.count_nonzero((in_if == NONE) & (out_if == NONE))) if macs else 0

    none = np.full(n, NONE, dtype=np.int64)
    cols = SampleColumns(
        agent_names=[agent],
        agent=np.zeros(n, dtype=np.int64),
        input_ifindex=in_if,
        output_ifindex=out_if,
        sampling_rate=np.full(n, sampling_rate, dtype=np.int64),
        now=np.asarray(now, dtype=np.float64),
        frame_length=wire.astype(np.int64),
        ip_version=ip_version,
        src_hi=src_hi,
        src_lo=src_lo,
        has_src=has_src,
        dst_hi=dst_hi,
        dst_lo=dst_lo,
        has_dst=has_dst,
        protocol=protocol,
        src_port=src_port,
        dst_port=dst_port,
        tcp_flags=tcp_flags,
        icmp_type=icmp_type,
        sample_sequence=none,
        source_id_type=none.copy(),
        source_id_index=none.copy(),
        sample_pool=none.copy(),
        ref=ref if ref is not None else none.copy(),
    )
    return cols, ParseStats(errors, unattributed, int(slow.shape[0]))
