"""Walk a run of TPACKET_V3 ring blocks in one call: every frame's place and header as arrays.

The SPAN batch path (span.SpanCapture with `on_columns`) holds a few ring blocks, walks them
here, copies the frames out (copy_frames) and releases the blocks. Following tp_next_offset
is inherently one frame after another, so it is done in C (_ringwalk.c, built by
`pip install -e .` as an optional extension and loaded with ctypes); the pure-Python walker
below gives identical results and is used when the compiled one is not built, or when
RACKWARDEN_RINGWALK=python (or impl="python") asks for it. With the C side, the walk, the
copy and the column read (columns.frames_to_columns' numpy read, in C) can be one pass over
the ring (walk_copy_read_c), which the capture uses when it keeps every frame.

Both are bounds-checked the same way: a block whose header, chain or frame data points
outside the block stops at that frame (frames before it are kept) and is reported in
`bad_blocks`; nothing outside the ring is read.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from rackwarden.policies.flowcols import NONE, V4_MAPPED

from ..compiled import CompiledLib
from ..compiled import Impl as Impl  # the walkers' choice, as callers name it here

log = logging.getLogger(__name__)

I64 = npt.NDArray[np.int64]
Buffer = mmap.mmap | bytearray | bytes | memoryview

ENV_VAR = "RACKWARDEN_RINGWALK"  # "python" forces the fallback; "c" requires the compiled one
BLOCK_STATUS_OFF = 8
PKT_HDR_LEN = 48  # sizeof(struct tpacket3_hdr)
TP_STATUS_VLAN_VALID = 0x10
TP_STATUS_VLAN_TPID_VALID = 0x40

_BLOCK_NUM_FIRST = struct.Struct("=II")  # num_pkts, offset_to_first_pkt (after block_status)
# tpacket3_hdr: tp_next_offset, (sec, nsec), tp_snaplen, (len, status), tp_mac.
_CHAIN = struct.Struct("=I8xI8xH")
_BIG_ENDIAN = sys.byteorder == "big"
_FIELDS = ("data_off", "snaplen", "wire_len", "sec", "nsec", "status", "vlan_tci",
           "vlan_tpid", "block")


@dataclass(slots=True)
class Walk:
    """The frames of a run of blocks, in ring order; row i of every array is frame i."""

    data_off: I64  # offset of the frame's first byte in the ring (block base + tp_mac)
    snaplen: I64  # tp_snaplen: bytes captured in the ring
    wire_len: I64  # tp_len: the frame's length on the wire
    sec: I64
    nsec: I64
    status: I64  # tp_status (TP_STATUS_VLAN_VALID: the kernel took a VLAN tag off)
    vlan_tci: I64
    vlan_tpid: I64
    block: I64  # index into the `bases` given
    bad_blocks: list[int]  # indexes of blocks whose chain broke (their frames before it kept)

    def __len__(self) -> int:
        return int(self.data_off.shape[0])

    @property
    def vlan_valid(self) -> npt.NDArray[np.bool_]:
        out: npt.NDArray[np.bool_] = (self.status & TP_STATUS_VLAN_VALID) != 0
        return out


def _make(cols: list[I64], bad: list[int]) -> Walk:
    return Walk(cols[0], cols[1], cols[2], cols[3], cols[4], cols[5], cols[6], cols[7], cols[8],
                bad_blocks=bad)


_P = ctypes.c_void_p


def _declare(lib: ctypes.CDLL) -> None:
    lib.rw_walk.restype = ctypes.c_int64
    walk_args: list[Any] = [_P, ctypes.c_uint64, ctypes.c_uint64, _P, ctypes.c_int64,
                            ctypes.c_int64]
    lib.rw_walk.argtypes = walk_args + [_P] * 11
    lib.rw_copy.restype = ctypes.c_int64
    lib.rw_copy.argtypes = [_P, ctypes.c_uint64, _P, _P, ctypes.c_int64, _P, ctypes.c_int64]
    lib.rw_columns.restype = None
    columns_args: list[Any] = [_P, ctypes.c_int64, ctypes.c_int64, _P, _P, _P, _P, _P,
                               ctypes.c_int64, ctypes.c_uint64]
    lib.rw_columns.argtypes = columns_args + [_P] * 13
    batch_args: list[Any] = walk_args + [_P] * 11 + [ctypes.c_int64, _P, ctypes.c_int64, _P,
                                                     _P, _P, _P, _P, ctypes.c_int64,
                                                     ctypes.c_uint64]
    lib.rw_batch.restype = ctypes.c_int64
    lib.rw_batch.argtypes = batch_args + [_P] * 13


# Found beside this module, loaded once (drivers/compiled.py).
_compiled = CompiledLib(Path(__file__).resolve().parent, "_ringwalk_c",
                        what="compiled ring walker",
                        twin_when_missing="SPAN batches use the Python walker",
                        twin_when_broken="using the Python walker", env_var=ENV_VAR, log=log,
                        declare=_declare)


def compiled_available() -> bool:
    return _compiled.available()


def unavailable_reason() -> str | None:
    return _compiled.reason()


def choose(impl: Impl | None = None) -> Impl:
    """The walker to use: `impl`, else $RACKWARDEN_RINGWALK, else C when built."""
    return _compiled.choose(impl)


def _u8(ring: Buffer) -> npt.NDArray[np.uint8]:
    return np.frombuffer(ring, dtype=np.uint8)


def max_frames(block_size: int, nblocks: int) -> int:
    """An upper bound of the frames nblocks blocks can hold (each frame has a 48-byte header)."""
    return nblocks * (block_size // PKT_HDR_LEN)


def walk(ring: Buffer, bases: list[int], block_size: int, *, impl: Impl | None = None,
         expect: int | None = None) -> Walk:
    """Every frame of the blocks at `bases` (each block_size bytes), in order.

    `expect`: the frames the block headers announce (the caller read num_pkts already); it
    only sizes the output arrays, which grow to the blocks' capacity when it is short."""
    which = choose(impl)
    if which == "c":
        for cap in _caps(expect, block_size, len(bases)):
            w = _walk_c(ring, bases, block_size, cap)
            if w is not None:
                return w
        raise RuntimeError("ring walk: output arrays too small")  # no block holds more
    return _walk_py(ring, bases, block_size)


def _caps(expect: int | None, block_size: int, nblocks: int) -> list[int]:
    """Output array sizes for a C walk to try in turn: the frames the block headers announce
    (`expect`), then what the blocks can hold at most."""
    bound = max_frames(block_size, nblocks)
    return [expect, bound] if expect is not None and 0 <= expect < bound else [bound]


def _walk_c(ring: Buffer, bases: list[int], block_size: int, cap: int) -> Walk | None:
    lib = _compiled.load()
    assert lib is not None
    buf = _u8(ring)
    out = np.empty((9, cap), dtype=np.int64)
    bases_a = np.asarray(bases, dtype=np.int64)
    bad = np.empty(max(1, len(bases)), dtype=np.int64)
    n_bad = np.zeros(1, dtype=np.int64)
    row = out.ctypes.data
    step = out.strides[0]
    n = lib.rw_walk(buf.ctypes.data, buf.shape[0], block_size, bases_a.ctypes.data, len(bases),
                    cap, *[row + k * step for k in range(9)], bad.ctypes.data, n_bad.ctypes.data)
    if n < 0:  # more frames than `cap`
        return None
    cols = [out[k, :n] for k in range(9)]
    return _make(cols, [int(b) for b in bad[: int(n_bad[0])]])


def _walk_py(ring: Buffer, bases: list[int], block_size: int) -> Walk:
    # Python's only per-frame work is following the chain (one unpack, a few list stores);
    # the other header fields are then read for all frames at once with numpy.
    ring_len = len(ring)
    num_first = _BLOCK_NUM_FIRST.unpack_from
    chain = _CHAIN.unpack_from
    offs: list[int] = []
    blks: list[int] = []
    bad: list[int] = []
    for b, base in enumerate(bases):
        if base < 0 or block_size < BLOCK_STATUS_OFF + 12 or base > ring_len \
                or block_size > ring_len - base:
            bad.append(b)
            continue
        end = base + block_size
        num, first = num_first(ring, base + BLOCK_STATUS_OFF + 4)
        off = base + first
        low = base + BLOCK_STATUS_OFF + 12
        last = num - 1
        for i in range(num):
            if off < low or off > end or end - off < PKT_HDR_LEN:
                bad.append(b)
                break
            nxt, snap, mac = chain(ring, off)
            if mac + snap > end - off:
                bad.append(b)
                break
            offs.append(off)
            blks.append(b)
            if i < last:
                if nxt < PKT_HDR_LEN:
                    bad.append(b)
                    break
                off += nxt
    h = np.array(offs, dtype=np.int64)
    buf = _u8(ring)

    def u32(at: int) -> I64:
        p = h + at
        v = buf[p].astype(np.int64) | (buf[p + 1].astype(np.int64) << 8) \
            | (buf[p + 2].astype(np.int64) << 16) | (buf[p + 3].astype(np.int64) << 24)
        if _BIG_ENDIAN:  # the kernel writes native order
            v = buf[p + 3].astype(np.int64) | (buf[p + 2].astype(np.int64) << 8) \
                | (buf[p + 1].astype(np.int64) << 16) | (buf[p].astype(np.int64) << 24)
        return v

    mac_ = u32(24) & 0xFFFF if not _BIG_ENDIAN else u32(24) >> 16
    return _make([h + mac_, u32(12), u32(16), u32(4), u32(8), u32(20), u32(32), u32(36),
                  np.array(blks, dtype=np.int64)], bad)


def copy_frames(ring: Buffer, offs: I64, lens: I64, slot: int, *,
                impl: Impl | None = None) -> npt.NDArray[np.uint8]:
    """Frame i's first lens[i] bytes from the ring as row i of an (n, slot) array, zero-padded.

    lens[i] must be <= slot; a range outside the ring leaves its row zero (the walker never
    returns one)."""
    n = int(offs.shape[0])
    dst = np.empty((n, slot), dtype=np.uint8)
    if n == 0:
        return dst
    which = choose(impl)
    offs = np.ascontiguousarray(offs, dtype=np.int64)
    lens = np.ascontiguousarray(lens, dtype=np.int64)
    if which == "c":
        lib = _compiled.load()
        assert lib is not None
        buf = _u8(ring)
        lib.rw_copy(buf.ctypes.data, buf.shape[0], offs.ctypes.data, lens.ctypes.data, n,
                    dst.ctypes.data, slot)
        return dst
    dst[:] = 0
    ring_len = len(ring)
    flat = memoryview(dst.reshape(-1))  # type: ignore[arg-type]
    for i, (o, ln) in enumerate(zip(offs.tolist(), lens.tolist(), strict=True)):
        if o < 0 or ln < 0 or ln > slot or o > ring_len or ln > ring_len - o:
            continue
        at = i * slot
        flat[at:at + ln] = ring[o:o + ln]
    return dst


@dataclass(frozen=True, slots=True)
class Read:
    """The bulk column read of a batch (read_columns_c, walk_copy_read_c): ok per row, ints
    rows ip_version, protocol, src_port, dst_port, tcp_flags, icmp_type, smac, dmac; words
    rows src_hi, src_lo, dst_hi, dst_lo."""

    ok: npt.NDArray[np.bool_]
    ints: I64
    words: npt.NDArray[np.uint64]

    @classmethod
    def empty(cls, n: int) -> Read:
        return cls(np.empty(n, dtype=np.bool_), np.empty((8, n), dtype=np.int64),
                   np.empty((4, n), dtype=np.uint64))

    def head(self, n: int) -> Read:
        return Read(self.ok[:n], self.ints[:, :n], self.words[:, :n])

    def args(self, tables: tuple[npt.NDArray[np.bool_], ...]) -> list[Any]:
        """rw_columns' and rw_batch's arguments from `tables` on (READ_OUT_ARGS in C)."""
        ip, wp = self.ints.ctypes.data, self.words.ctypes.data
        si, sw = self.ints.strides[0], self.words.strides[0]
        return [*[np.ascontiguousarray(t, dtype=np.bool_).ctypes.data for t in tables], NONE,
                V4_MAPPED, self.ok.ctypes.data, *[ip + k * si for k in range(6)],
                *[wp + k * sw for k in range(4)], ip + 6 * si, ip + 7 * si]


def walk_copy_read_c(ring: Buffer, bases: list[int], block_size: int, expect: int,
                     snap_limit: int, slot: int, tables: tuple[npt.NDArray[np.bool_], ...]
                     ) -> tuple[Walk, npt.NDArray[np.uint8], I64, Read]:
    """walk(), copy_frames(offs, min(snaplen, snap_limit), slot) and read_columns_c() of the
    copy, in one pass over the ring (rw_batch): the same answers as the three. Compiled side
    only (check choose()); `expect` as walk's."""
    lib = _compiled.load()
    assert lib is not None
    if slot < 60:
        raise ValueError(f"walk_copy_read_c: rows of {slot} bytes, at least 60")
    buf = _u8(ring)
    bases_a = np.asarray(bases, dtype=np.int64)
    for cap in _caps(expect, block_size, len(bases)):
        out = np.empty((10, cap), dtype=np.int64)  # the walk's 9 columns, then caplen
        dst = np.empty((cap, slot), dtype=np.uint8)
        read = Read.empty(cap)
        bad = np.empty(max(1, len(bases)), dtype=np.int64)
        n_bad = np.zeros(1, dtype=np.int64)
        row, step = out.ctypes.data, out.strides[0]
        n = lib.rw_batch(buf.ctypes.data, buf.shape[0], block_size, bases_a.ctypes.data,
                         len(bases), cap, *[row + k * step for k in range(9)], bad.ctypes.data,
                         n_bad.ctypes.data, snap_limit, dst.ctypes.data, slot,
                         row + 9 * step, *read.args(tables))
        if n >= 0:
            w = _make([out[k, :n] for k in range(9)], [int(b) for b in bad[: int(n_bad[0])]])
            return w, dst[:n], out[9, :n], read.head(n)
    raise RuntimeError("ring walk: output arrays too small")  # no block holds more


def read_columns_c(frames: npt.NDArray[np.uint8], caplen: I64,
                   tables: tuple[npt.NDArray[np.bool_], ...]) -> Read:
    """columns.frames_to_columns' bulk read in C (rw_columns). `tables` are columns' (tpid,
    ipv6 extension, port protocol, icmp protocol) lookup tables. Compiled side only: check
    choose()."""
    lib = _compiled.load()
    assert lib is not None
    n, slot = int(frames.shape[0]), int(frames.shape[1])
    frames = np.ascontiguousarray(frames)
    caplen = np.ascontiguousarray(caplen, dtype=np.int64)
    read = Read.empty(n)
    lib.rw_columns(frames.ctypes.data, n, slot, caplen.ctypes.data, *read.args(tables))
    return read
