"""recvmmsg(2) through ctypes: many UDP datagrams per system call, into one buffer.

The sFlow receive thread's recvfrom loop costs a system call, a bytes object, an address tuple
and a few Python statements per datagram (~9 µs a datagram beside a ~5 µs bulk decode, measured
in bench/sflow_receive.py). MmsgReceiver takes up to `slots` datagrams in one call into one
preallocated buffer: datagram i lands at `starts[i]`, a multiple of SLOT_STRIDE (so 4-byte
aligned), its length in `lengths(n)[i]` and its sender in a sockaddr_storage array read with
numpy. Nothing per datagram is a Python object until the caller copies the datagrams out.

The buffer is an anonymous mmap of slots x 64 KiB: pages the kernel never writes cost no RSS
(a 1.3 KB datagram touches one 4 KiB page of its slot), and release() hands back the pages of
slots that held large datagrams, so a flood of 64 KB datagrams cannot pin the whole buffer.

Linux only (recvmmsg, MSG_WAITFORONE, the glibc/musl struct layout of 64-bit Linux);
`available()` says whether this process can use it, and the collector falls back to recvfrom
when it cannot.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import socket
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["SLOT_STRIDE", "MmsgReceiver", "available"]

SLOT_STRIDE = 65536  # one slot per datagram: room for any UDP payload, page aligned
_PAD = 64  # zero bytes past the last slot: the bulk decode's masked reads stay inside
_MSG_TRUNC = 0x20
_MSG_DONTWAIT = 0x40
_MSG_WAITFORONE = 0x10000  # Linux: block for the first datagram only, then take what is there
_SOCKADDR_BYTES = 128  # sizeof(struct sockaddr_storage)
# Slots holding a datagram longer than this give their pages back after the batch (release).
RELEASE_ABOVE = 16384


class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.c_void_p),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _Msghdr), ("msg_len", ctypes.c_uint)]


_recvmmsg: Callable[..., int] | None = None


def _load() -> Callable[..., int] | None:
    global _recvmmsg
    # 64-bit only: the arrays below write pointers and size_t as 64-bit words.
    if _recvmmsg is None and sys.platform.startswith("linux") and ctypes.sizeof(
            ctypes.c_void_p) == 8:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fn = libc.recvmmsg
        except (OSError, AttributeError):
            return None
        fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int,
                       ctypes.c_void_p]
        fn.restype = ctypes.c_int
        _recvmmsg = fn
    return _recvmmsg


def available() -> bool:
    """True where recvmmsg can be called: Linux with a libc that exports it."""
    return _load() is not None


def _field(raw: npt.NDArray[np.uint8], dtype: type[np.generic], offset: int, stride: int,
           n: int) -> npt.NDArray[Any]:
    """A strided numpy view of one field of an array of C structs held in `raw`."""
    view: npt.NDArray[Any] = np.ndarray(shape=(n,), dtype=dtype, buffer=raw, offset=offset,
                                        strides=(stride,))
    return view


class MmsgReceiver:
    """Receives into `slots` preallocated slots of one buffer, many datagrams per call.

    Each datagram is read with at most `datagram_bytes` bytes (recvfrom's size argument: a
    longer one is cut to that many bytes, as recvfrom cuts it). One thread calls receive();
    the arrays are reused by the next call, so read them (and copy what must outlive the
    batch) first.
    """

    def __init__(self, fd: int, family: int, slots: int, datagram_bytes: int) -> None:
        fn = _load()
        if fn is None:
            raise OSError(errno.ENOSYS, "recvmmsg is not available here")
        if family not in (socket.AF_INET, socket.AF_INET6):
            raise ValueError(f"family must be AF_INET or AF_INET6, not {family!r}")
        if not 1 <= datagram_bytes <= SLOT_STRIDE:
            raise ValueError(f"datagram_bytes must be 1..{SLOT_STRIDE}")
        self._fn = fn
        self.fd = fd
        self.family = family
        self.slots = slots
        # Private: MADV_DONTNEED then really frees the pages (a shared anonymous map keeps them).
        self.buffer = mmap.mmap(-1, slots * SLOT_STRIDE + _PAD,
                                flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.view: npt.NDArray[np.uint8] = np.frombuffer(self.buffer, dtype=np.uint8)
        self.memory = memoryview(self.buffer)
        base = self.view.ctypes.data
        self.starts: npt.NDArray[np.int64] = np.arange(slots, dtype=np.int64) * SLOT_STRIDE
        self._iov = np.zeros(slots * ctypes.sizeof(_Iovec), dtype=np.uint8)
        self._names = np.zeros((slots, _SOCKADDR_BYTES), dtype=np.uint8)
        msz = ctypes.sizeof(_Mmsghdr)
        self._msgs = np.zeros(slots * msz, dtype=np.uint8)
        isz = ctypes.sizeof(_Iovec)
        _field(self._iov, np.uint64, _Iovec.iov_base.offset, isz, slots)[:] = (
            base + self.starts).astype(np.uint64)
        _field(self._iov, np.uint64, _Iovec.iov_len.offset, isz, slots)[:] = datagram_bytes
        hdr = _Mmsghdr.msg_hdr.offset
        _field(self._msgs, np.uint64, hdr + _Msghdr.msg_name.offset, msz, slots)[:] = (
            self._names.ctypes.data + np.arange(slots, dtype=np.uint64) * _SOCKADDR_BYTES)
        self._namelen = _field(self._msgs, np.uint32, hdr + _Msghdr.msg_namelen.offset, msz,
                               slots)
        self._namelen[:] = _SOCKADDR_BYTES
        _field(self._msgs, np.uint64, hdr + _Msghdr.msg_iov.offset, msz, slots)[:] = (
            self._iov.ctypes.data + np.arange(slots, dtype=np.uint64) * isz)
        _field(self._msgs, np.uint64, hdr + _Msghdr.msg_iovlen.offset, msz, slots)[:] = 1
        self._flags = _field(self._msgs, np.int32, hdr + _Msghdr.msg_flags.offset, msz, slots)
        self._len = _field(self._msgs, np.uint32, _Mmsghdr.msg_len.offset, msz, slots)
        self._msgs_at = self._msgs.ctypes.data
        self._msz = msz

    def receive(self, at: int, wait: bool) -> int:
        """Datagrams into slots at, at+1, ...: blocks for the first one when `wait`, then takes
        what the socket holds, up to the last slot. Returns how many came (0: none waiting,
        or `wait` was woken by a shutdown); raises OSError on a socket error."""
        room = self.slots - at
        if room <= 0:
            return 0
        flags = _MSG_WAITFORONE if wait else _MSG_DONTWAIT
        while True:
            got = self._fn(self.fd, self._msgs_at + at * self._msz, room, flags, None)
            if got >= 0:
                # The kernel wrote each sender's address length: the next call needs room again.
                self._namelen[at:at + got] = _SOCKADDR_BYTES
                return got
            err = ctypes.get_errno()
            if err == errno.EINTR:
                continue
            if err in (errno.EAGAIN, errno.EWOULDBLOCK):
                return 0
            raise OSError(err, f"recvmmsg: {errno.errorcode.get(err, err)}")

    def lengths(self, n: int) -> npt.NDArray[np.int64]:
        """Bytes read for each of the first n datagrams (cut ones: the bytes kept)."""
        out: npt.NDArray[np.int64] = self._len[:n].astype(np.int64)
        return out

    def truncated(self, n: int) -> npt.NDArray[np.bool_]:
        """Which of the first n datagrams were longer than datagram_bytes (MSG_TRUNC)."""
        out: npt.NDArray[np.bool_] = (self._flags[:n] & _MSG_TRUNC) != 0
        return out

    def senders(self, n: int) -> tuple[list[str], npt.NDArray[np.int64]]:
        """The distinct sender addresses of the first n datagrams as recvfrom's text (its
        address tuple's first item), in order of first appearance, and for each datagram the
        index of its sender in that list."""
        names = self._names[:n]
        keys: npt.NDArray[np.generic]
        if self.family == socket.AF_INET:
            keys = names[:, 4:8].copy().view(np.uint32).ravel()
        else:
            keys = names[:, 8:24].copy().view(np.dtype((np.void, 16))).ravel()
        if n and (keys == keys[0]).all():  # one sender: the common case per batch
            return [self._text(names[0])], np.zeros(n, dtype=np.int64)
        _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        order = np.argsort(first, kind="stable")  # unique's order -> first-appearance order
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        texts = [self._text(names[int(first[u])]) for u in order.tolist()]
        idx: npt.NDArray[np.int64] = rank[inverse.ravel()].astype(np.int64)
        return texts, idx

    def _text(self, name: npt.NDArray[np.uint8]) -> str:
        if self.family == socket.AF_INET:
            return socket.inet_ntop(socket.AF_INET, name[4:8].tobytes())
        return socket.inet_ntop(socket.AF_INET6, name[8:24].tobytes())

    def release(self, n: int) -> None:
        """Give back the pages of slots whose datagram was long, so RSS stays small."""
        big = np.nonzero(self._len[:n] > RELEASE_ABOVE)[0]
        for i in big.tolist():
            self.buffer.madvise(mmap.MADV_DONTNEED, i * SLOT_STRIDE, SLOT_STRIDE)
