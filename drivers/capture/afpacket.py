"""Linux AF_PACKET plumbing: raw sockets, the TPACKET_V3 mmap ring, kernel drop counters, setns."""

from __future__ import annotations

import ctypes
import mmap
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
TPACKET_V3 = 2
SO_RCVBUFFORCE = 33  # not exported by Python 3.11's socket module; asm-generic/socket.h
TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
CLONE_NEWNET = 0x40000000

_REQ3 = struct.Struct("IIIIIII")  # block_size, block_nr, frame_size, frame_nr, tov, priv, feat
_STATS_V1 = struct.Struct("II")  # tp_packets, tp_drops
_STATS_V3 = struct.Struct("III")  # + tp_freeze_q_cnt
# tpacket_block_desc: version, offset_to_priv, then tpacket_hdr_v1: block_status, num_pkts,
# offset_to_first_pkt.
BLOCK_STATUS_OFF = 8
_BLOCK_HDR = struct.Struct("III")  # read at BLOCK_STATUS_OFF
# tpacket3_hdr: tp_next_offset, (sec, nsec skipped), tp_snaplen, tp_len, (status), tp_mac.
_PKT_HDR = struct.Struct("I8xII4xH")
_U32 = struct.Struct("I")


class CaptureError(OSError):
    """The capture could not be set up; the message says which interface and what to check."""


class RawSocket:
    """One AF_PACKET socket bound to an interface, read either by recv_into or from its ring."""

    def __init__(self, ifname: str) -> None:
        self.ifname = ifname
        self.sock: socket.socket | None = None
        self.ring: mmap.mmap | None = None
        self.block_size = 0
        self.block_nr = 0
        self.next_block = 0
        self.rcvbuf_bytes = 0
        self._v3 = False

    def open(self, rcvbuf_bytes: int) -> None:
        try:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        except PermissionError as e:
            raise CaptureError(f"{self.ifname}: AF_PACKET needs root or CAP_NET_RAW") from e
        try:
            # FORCE passes net.core.rmem_max (root); the plain option is the fallback.
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf_bytes)
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf_bytes)
            self.rcvbuf_bytes = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            sock.bind((self.ifname, ETH_P_ALL))
        except OSError as e:
            sock.close()
            raise CaptureError(f"{self.ifname}: cannot bind a packet socket: {e}") from e
        sock.setblocking(False)
        self.sock = sock

    def open_ring(self, block_size: int, block_nr: int, frame_size: int, timeout_ms: int) -> None:
        """Switch to a TPACKET_V3 ring; must follow open() and precede any read."""
        assert self.sock is not None
        if block_size % mmap.PAGESIZE or block_size % frame_size:
            raise CaptureError("ring block size must be a multiple of the page and frame size")
        try:
            self.sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
            req = _REQ3.pack(block_size, block_nr, frame_size,
                             block_size // frame_size * block_nr, timeout_ms, 0, 0)
            self.sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
            self.ring = mmap.mmap(self.sock.fileno(), block_size * block_nr,
                                  mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError as e:
            raise CaptureError(f"{self.ifname}: cannot set up a TPACKET_V3 ring: {e}") from e
        self.block_size = block_size
        self.block_nr = block_nr
        self.next_block = 0
        self._v3 = True

    def fileno(self) -> int:
        assert self.sock is not None
        return self.sock.fileno()

    def stats(self) -> tuple[int, int]:
        """(packets, drops) since the last call: the kernel resets them on every read."""
        if self.sock is None:
            return (0, 0)
        st = _STATS_V3 if self._v3 else _STATS_V1
        raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, st.size)
        vals = st.unpack(raw[: st.size])
        return (int(vals[0]), int(vals[1]))

    def ready_blocks(self) -> Iterator[tuple[int, int, int]]:
        """(block offset, packet count, offset of the first packet) of each block the kernel
        has handed over, in ring order; the caller must release() each before the next."""
        ring = self.ring
        assert ring is not None
        while True:
            base = self.next_block * self.block_size
            status, num, first = _BLOCK_HDR.unpack_from(ring, base + BLOCK_STATUS_OFF)
            if not status & TP_STATUS_USER:
                return
            yield base, num, first
            self.next_block = (self.next_block + 1) % self.block_nr

    def release(self, base: int) -> None:
        assert self.ring is not None
        _U32.pack_into(self.ring, base + BLOCK_STATUS_OFF, TP_STATUS_KERNEL)

    def close(self) -> None:
        if self.ring is not None:
            try:
                self.ring.close()
            except BufferError:
                pass  # a memoryview still points into it; the socket close frees the ring
            self.ring = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None


PKT_HDR = _PKT_HDR


_libc: ctypes.CDLL | None = None


def enter_netns(name: str) -> None:
    """Move the calling thread into network namespace `name` (as `ip netns exec` does).

    Only this thread moves: sockets it opens stay in that namespace wherever they are used,
    so a dedicated capture thread can enter the switch's namespace without moving the agent.
    """
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    path = f"/run/netns/{name}"
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        raise CaptureError(f"network namespace {name!r}: {e}") from e
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise CaptureError(f"setns({name}): {os.strerror(err)}")
    finally:
        os.close(fd)


_T = TypeVar("_T")


def run_in_netns(name: str | None, fn: Callable[[], _T]) -> _T:
    """Call fn in a throwaway thread inside namespace `name` (None: here) and return its value."""
    if name is None:
        return fn()
    box: list[_T] = []
    err: list[BaseException] = []

    def body() -> None:
        try:
            enter_netns(name)
            box.append(fn())
        except BaseException as e:  # noqa: BLE001 - handed back to the caller's thread
            err.append(e)

    t = threading.Thread(target=body, name=f"netns-{name}")
    t.start()
    t.join()
    if err:
        raise err[0]
    return box[0]
