"""The compiled walk of an sFlow batch: sample chains followed and headers parsed in one C call.

batch._walk_buffer follows each datagram's chain of sample lengths with numpy, one round of
numpy calls per sample index, and batch._columns_walked parses every raw header with about
seventy more; both are per-sample steps that cost ~0.7 us per sample in numpy against a few
tens of ns in C (_sflowwalk.c, built by `pip install -e .` as an optional extension and loaded
with ctypes, like the SPAN ring walker in drivers/capture/ringwalk.py). The numpy code stays:
it is used when the compiled walker is not built, or when RACKWARDEN_SFLOW_WALK=python (or
impl="python") asks for it, and tests/unit/test_sflow_cwalk.py holds the two to the same
answers.

`seq_walk`/`seq_index` are sequence.ColumnSequenceTracker's per-row walk (see there).

`gather` is the collector's recvmmsg copy (accepted datagrams out of their 64 KiB slots, back
to back): one C call instead of a slice and a join part per datagram.
"""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..compiled import CompiledLib
from ..compiled import Impl as Impl  # the walkers' choice, as callers name it here

log = logging.getLogger(__name__)

I64 = npt.NDArray[np.int64]

ENV_VAR = "RACKWARDEN_SFLOW_WALK"  # "python" forces the numpy walk; "c" requires the compiled one
GATHER_TAIL = 64  # zero bytes after the gathered datagrams (batch.decode_batch_columns_in's pad)
_HEAD = 28
_MIN_FLOW = 64

# Rows of `Walk.rows`, in _sflowwalk.c's order (enum C_*).
(DG, SK, SA, SEQ, SID, RATE, POOL, IN_IF, OUT_IF, HPROTO, FRAME, HL, IPVER, PROTO, SPORT, DPORT,
 FLAGS, ICMP, SLOW, SRC_HI, SRC_LO, DST_HI, DST_LO) = range(23)
N_COLS = 23
N_KCOLS = 4  # counter samples: datagram, absolute offset, format, sample index


@dataclass(slots=True)
class Walk:
    """One batch walked in C. `rows[c]` is column c (DG, SK, ... above) of the flow samples of
    the taken datagrams, in datagram then sample order: the numpy walk's dg/sk/sa, then the
    sample's fields and the parsed header's (batch._columns_walked's values; SRC_HI..DST_LO are
    uint64 bits, SLOW 1 where parse_tuple must read the header). `ctr[c]`: the counter samples
    stepped over (datagram, offset of the type word, format, sample index), datagram-major."""

    ok: npt.NDArray[np.bool_]
    count: I64
    rows: I64
    ctr: I64


_P = ctypes.c_void_p


def _declare(lib: ctypes.CDLL) -> None:
    lib.sw_walk.restype = ctypes.c_int64
    lib.sw_walk.argtypes = [_P, ctypes.c_uint64, _P, _P, ctypes.c_int64, _P, ctypes.c_int32,
                            ctypes.c_int64, _P, ctypes.c_int64, _P, _P, _P, _P]
    lib.sw_gather.restype = ctypes.c_int64
    lib.sw_gather.argtypes = [_P, ctypes.c_uint64, _P, _P, ctypes.c_int64, _P,
                              ctypes.c_uint64, ctypes.c_uint64]
    lib.sw_seq.restype = ctypes.c_int64
    lib.sw_seq.argtypes = [_P, _P, _P, ctypes.c_int64, ctypes.c_int64, ctypes.c_int32, _P,
                           ctypes.c_int64, _P, _P, ctypes.c_int64, _P, ctypes.c_int64, _P,
                           _P]
    lib.sw_seq_index.restype = ctypes.c_int64
    lib.sw_seq_index.argtypes = [_P, ctypes.c_int64, _P, ctypes.c_int64, ctypes.c_int64,
                                 ctypes.c_int64]


# Found beside this module, loaded once (drivers/compiled.py).
_compiled = CompiledLib(Path(__file__).resolve().parent, "_sflowwalk_c",
                        what="compiled sFlow walker",
                        twin_when_missing="sFlow batches use the numpy walker",
                        twin_when_broken="using the numpy walker", env_var=ENV_VAR, log=log,
                        declare=_declare)


def compiled_available() -> bool:
    return _compiled.available()


def unavailable_reason() -> str | None:
    return _compiled.reason()


def choose(impl: Impl | None = None) -> Impl:
    """The walker to use: `impl`, else $RACKWARDEN_SFLOW_WALK, else C when built."""
    return _compiled.choose(impl)


def walk(buf: npt.NDArray[np.uint8], starts: I64, lens: I64,
         eligible: npt.NDArray[np.bool_] | None, counters: bool) -> Walk:
    """The C walk of datagrams buf[starts[i]:starts[i] + lens[i]] (starts multiples of 4).

    eligible: False for datagrams to leave to the exact decoder whatever they hold (None: all
    eligible). counters: step over counter samples (else their datagram is not taken)."""
    lib = _compiled.load()
    if lib is None:
        raise RuntimeError(f"compiled sFlow walk called but {_compiled.error}")
    n = int(starts.shape[0])
    starts = np.ascontiguousarray(starts, dtype=np.int64)
    lens = np.ascontiguousarray(lens, dtype=np.int64)
    room = np.maximum(lens - _HEAD, 0)
    # The output is sized to what the datagrams can hold, tightly, since the columns handed on
    # are views of it: no more samples than the header's count, each flow sample taking at
    # least _MIN_FLOW bytes of its datagram and each counter sample at least 8.
    count = np.zeros(n, dtype=np.int64)
    inside = (room > 0) & (starts >= 0) & (starts + lens <= buf.shape[0])
    at = starts[inside] + 24
    count[inside] = (buf[at].astype(np.int64) << 24 | buf[at + 1].astype(np.int64) << 16
                     | buf[at + 2].astype(np.int64) << 8 | buf[at + 3])
    row_cap = int(np.minimum(count, room // _MIN_FLOW).sum())
    ctr_cap = int(np.minimum(count, room >> 3).sum()) if counters else 0
    ok = np.empty(n, dtype=np.bool_)
    n_ctr = np.zeros(1, dtype=np.int64)
    elig = None if eligible is None else np.ascontiguousarray(eligible, dtype=np.bool_)
    rows = np.empty((N_COLS, max(row_cap, 1)), dtype=np.int64)
    ctr = np.empty((N_KCOLS, max(ctr_cap, 1)), dtype=np.int64)
    m = lib.sw_walk(buf.ctypes.data, buf.shape[0], starts.ctypes.data, lens.ctypes.data, n,
                    None if elig is None else elig.ctypes.data, 1 if counters else 0,
                    row_cap, rows.ctypes.data, ctr_cap, ctr.ctypes.data, n_ctr.ctypes.data,
                    ok.ctypes.data, count.ctypes.data)
    if m < 0:  # cannot happen: the capacities above are bounds
        raise RuntimeError("sFlow walk: output arrays too small")
    return Walk(ok, count, rows[:, :m], ctr[:, :int(n_ctr[0])])


# -- gather --------------------------------------------------------------------------------------

_new_bytes: Any = None
_bytes_at: Any = None
try:
    # PyBytes_FromStringAndSize(NULL, n) makes a bytes object to be filled before it is shared
    # (the documented way C builds one): the copy goes straight into it.
    _new_bytes = ctypes.pythonapi.PyBytes_FromStringAndSize
    _new_bytes.restype = ctypes.py_object
    _new_bytes.argtypes = [ctypes.c_void_p, ctypes.c_ssize_t]
    _bytes_at = ctypes.pythonapi.PyBytes_AsString
    _bytes_at.restype = ctypes.c_void_p
    _bytes_at.argtypes = [ctypes.py_object]
except (AttributeError, ValueError):  # not CPython: the Python gather
    _new_bytes = _bytes_at = None


def gather(view: Any, starts: I64, padded: I64, *, impl: Impl | None = None) -> bytes:
    """The spans view[starts[i]:starts[i] + padded[i]] back to back, then GATHER_TAIL zero bytes
    (what collector._prepare_mmsg builds for decode_batch_columns_in and the raw ring)."""
    which = choose(impl)
    if which == "c" and _new_bytes is not None:
        src = np.frombuffer(view, dtype=np.uint8)
        s = np.ascontiguousarray(starts, dtype=np.int64)
        p = np.ascontiguousarray(padded, dtype=np.int64)
        total = int(p.sum()) + GATHER_TAIL
        out: bytes = _new_bytes(None, total)
        lib = _compiled.load()
        assert lib is not None
        if lib.sw_gather(src.ctypes.data, src.shape[0], s.ctypes.data, p.ctypes.data,
                         int(s.shape[0]), _bytes_at(out), total, GATHER_TAIL) < 0:
            raise ValueError("gather: a span lies outside the buffer")
        return out
    return gather_py(view, starts, padded)


def gather_py(view: Any, starts: I64, padded: I64) -> bytes:
    """gather in Python: a slice per span and one join."""
    mv = memoryview(view).cast("B")
    parts: list[bytes | memoryview] = []
    for a, p in zip(np.asarray(starts).tolist(), np.asarray(padded).tolist(), strict=True):
        if a < 0 or p < 0 or a + p > len(mv):
            raise ValueError("gather: a span lies outside the buffer")
        parts.append(mv[a:a + p])
    parts.append(bytes(GATHER_TAIL))
    return b"".join(parts)


# -- sequence tracking ---------------------------------------------------------------------------

def _ptr(a: npt.NDArray[Any], dtype: type[np.generic], n: int) -> int:
    """a's data address, after checking it is a C-contiguous `dtype` array of >= n items (C
    trusts the capacities it is given: a wrong array must fail here, not write past one)."""
    if a.dtype != dtype or not a.flags.c_contiguous or a.size < n:
        raise ValueError(f"sequence walk: expected {n}+ contiguous {np.dtype(dtype)}, got "
                         f"{a.size} {a.dtype}")
    return int(a.ctypes.data)


def seq_index(tab: I64, kcodes: I64, start: int, stop: int) -> None:
    """Enters slots [start, stop) of kcodes in the (code, slot) table `tab` (shape (cap, 2))."""
    lib = _compiled.load()
    if lib is None:
        raise RuntimeError(f"compiled sequence walk called but {_compiled.error}")
    cap = int(tab.shape[0])
    if lib.sw_seq_index(_ptr(tab, np.int64, 2 * cap), cap, _ptr(kcodes, np.int64, stop),
                        int(kcodes.shape[0]), start, stop) < 0:
        raise RuntimeError("sequence walk: table too small or a code entered twice")


SEQ_DONE, SEQ_EVICT, SEQ_GROW = range(3)  # why seq_walk stopped (_sflowwalk.c)


def seq_walk(codes: I64, seqs: I64, ups: I64 | None, start: int, force: bool, tab: I64,
             kcodes: I64, kstate: I64, n_slots: int, max_keys: int,
             ev: npt.NDArray[np.int8], gap: I64) -> tuple[int, int, int]:
    """sw_seq over rows start.. of the batch: (the row it stopped before, or len(codes) when
    done; the number of slots after; why it stopped, SEQ_*). kstate has shape (slots, 2): last
    number, last uptime. Capacities are the arrays' own sizes."""
    lib = _compiled.load()
    if lib is None:
        raise RuntimeError(f"compiled sequence walk called but {_compiled.error}")
    n = int(codes.shape[0])
    cap = int(tab.shape[0])
    slot_cap = min(int(kcodes.shape[0]), int(kstate.shape[0]))
    io = np.array([n_slots, 0], dtype=np.int64)
    stop = int(lib.sw_seq(
        _ptr(codes, np.int64, n), _ptr(seqs, np.int64, n),
        None if ups is None else _ptr(ups, np.int64, n), n, start, 1 if force else 0,
        _ptr(tab, np.int64, 2 * cap), cap, _ptr(kcodes, np.int64, slot_cap),
        _ptr(kstate, np.int64, 2 * slot_cap), slot_cap, io.ctypes.data, max_keys,
        _ptr(ev, np.int8, n), _ptr(gap, np.int64, n)))
    if stop < 0:
        raise RuntimeError("sequence walk: state arrays too small or out of step")
    return stop, int(io[0]), int(io[1])
