"""SPAN/mirror capture: AF_PACKET frames on a thread, into FlowSample batches or SampleColumns."""

from __future__ import annotations

import errno
import logging
import select
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt
from rackwarden.drivers.capture import ringwalk
from rackwarden.drivers.capture.afpacket import (
    PKT_HDR,
    CaptureError,
    RawSocket,
    enter_netns,
)
from rackwarden.drivers.capture.columns import READ_TABLES, MacTable, frames_to_columns
from rackwarden.drivers.capture.evidence import EvidenceRing
from rackwarden.drivers.capture.rawring import RawFrameRing, at_micros
from rackwarden.drivers.packets import parse_tuple
from rackwarden.policies.flowcols import SampleColumns
from rackwarden.policies.flowfacts import (
    HEADER_ETHERNET,
    OUTPUT_IFINDEX,
    FlowSample,
    new_flow_sample,
)

log = logging.getLogger(__name__)
I64 = npt.NDArray[np.int64]

Mode = Literal["ring", "recv"]
BatchSink = Callable[[Sequence[FlowSample]], None]
ColumnSink = Callable[[SampleColumns], None]
DEFAULT_SNAPLEN = 256  # headers plus some payload for evidence; sFlow keeps 128
DEFAULT_RCVBUF_BYTES = 32 * 1024 * 1024
STATS_EVERY_S = 0.5
# Batch mode: walk the held blocks once this many frames are held, or once the oldest has
# waited this long (and never more than half the ring: _loop_ring_columns). Every batch costs
# the columns and the detector a fixed ~1-2 ms of numpy calls, whatever its size: at ~210k
# frames/s, 16,384 frames or 40 ms took 1.2-1.3x the frames per CPU-second of 4,096 or 10 ms
# (bench/capture.py runs the earlier batching beside the default). 40 ms is small against the
# detectors' 250 ms evaluation and the 2 s from flood to port down; ~16k frames of 256 bytes
# are ~21 of the default ring's 128 blocks.
DEFAULT_BATCH_FRAMES = 16384
DEFAULT_BATCH_WAIT_S = 0.04
# While blocks are held the loop sleeps until the batch is due, in steps: as long as the rate
# seen since the batch began needs to fill it to batch_frames (at most HELD_SLEEP_MAX_S, so a
# flood that starts mid-sleep fills at most ~14k frames of the ring's ~64k before the loop
# looks again), at least HELD_SLEEP_MIN_S. Fixed 2 ms steps woke the thread ~500 times a
# second: 27 ms of CPU a second at any rate, 7 % of the thread's at 300k frames/s.
HELD_SLEEP_MIN_S = 0.002
HELD_SLEEP_MAX_S = 0.01


class Clock(Protocol):
    """The agent's clock, structurally (agent/clock.py)."""

    def now(self) -> float: ...

    def at(self) -> datetime: ...


@dataclass(frozen=True, slots=True)
class MirrorSource:
    """One interface receiving mirrored frames and what its frames say about switch ports.

    An ingress mirror of port P gives `input_ifindex=P` (the frame entered the switch on P, so
    P's server sent it); an egress mirror gives `output_ifindex=P`. Leave both None for a
    shared SPAN destination: ports then come from `mac_ports` (source MAC -> input port,
    destination MAC -> output port).
    """

    ifname: str
    input_ifindex: int | None = None
    output_ifindex: int | None = None


@dataclass
class CaptureCounters:
    """What the capture did; plain attributes for the metrics module to read."""

    packets: int = 0  # frames read from the kernel
    bytes: int = 0  # wire bytes of those frames
    samples: int = 0  # FlowSamples handed on (after 1-in-N software sampling)
    drops: int = 0  # the kernel's PACKET_STATISTICS drops, summed over sources
    kernel_packets: int = 0
    batches: int = 0
    decode_errors: dict[str, int] | None = None  # parse stopped early, by reason
    exceptions: int = 0  # frames dropped because decoding raised (never propagated)
    callback_errors: int = 0
    unattributed: int = 0  # shared-mirror frames whose MACs map to no port

    def __post_init__(self) -> None:
        if self.decode_errors is None:
            self.decode_errors = {}


class _Source:
    __slots__ = ("spec", "raw", "in_if", "out_if", "by_mac")

    def __init__(self, spec: MirrorSource) -> None:
        self.spec = spec
        self.raw = RawSocket(spec.ifname)
        self.in_if = spec.input_ifindex
        self.out_if = spec.output_ifindex
        self.by_mac = spec.input_ifindex is None and spec.output_ifindex is None


class SpanCapture:
    """Reads mirrored frames on its own thread and hands FlowSample batches to `on_batch`.

    `on_batch` runs on the capture thread: keep it short or hand over (a queue, or
    loop.call_soon_threadsafe). `mode` "ring" reads a PACKET_MMAP TPACKET_V3 ring, "recv" a
    recv_into loop (bench/capture.py: bare walks 646k vs 448k frames/CPU-s on a loaded box;
    with decode + detect both are bound by Python per-frame work, ~55-70k there).
    `sample_every` N > 1 keeps one frame in N (sampling_rate N on the samples). Garbage
    frames are counted and dropped; the thread never dies of a frame. The constructor does
    no I/O; start() opens, stop() closes.

    Batch mode (`on_columns` given, ring mode only): blocks are held until `batch_frames`
    frames or `batch_wait_s` have gathered, walked in one call (ringwalk: C when built,
    else Python; `walker` forces one), their frames copied once into `raw_ring` and the
    blocks released; `on_columns` then gets one SampleColumns per batch on the capture
    thread, its `ref` column numbering the frames in `raw_ring` (raw_ring.resolve(refs)
    gives the FlowSamples the per-frame mode would have). The raw ring is the evidence in
    this mode (write_evidence reads it); `on_batch` and `evidence` must not be given.

    Ring sizing: the kernel retires a block when full or after `ring_timeout_ms`, so at low
    rates each block holds only that long; the ring then buffers ring_blocks x timeout of
    traffic (2.5 s by default) while the thread is held up, and block_size x blocks when busy.
    Many small blocks beat a few big ones: the lab lost a quarter of a 2 s flood with
    32 x 1 MiB blocks at 10 ms (320 ms of buffer) on a loaded machine.
    """

    # The C walker walks, copies and reads the columns in one pass over the ring when no frame
    # is sampled out (ringwalk.walk_copy_read_c); False: three passes, as with a 1-in-N sample
    # (bench/capture.py's same-run baseline).
    one_pass = True

    def __init__(
        self,
        sources: Sequence[MirrorSource],
        on_batch: BatchSink | None,
        clock: Clock,
        *,
        agent: str = "span",
        mode: Mode = "ring",
        netns: str | None = None,
        mac_ports: Mapping[str, int] | None = None,
        snaplen: int = DEFAULT_SNAPLEN,
        sample_every: int = 1,
        rcvbuf_bytes: int = DEFAULT_RCVBUF_BYTES,
        ring_block_size: int = 1 << 18,
        ring_blocks: int = 128,
        ring_timeout_ms: int = 20,
        batch_max: int = 2048,
        evidence: EvidenceRing | None = None,
        on_columns: ColumnSink | None = None,
        raw_ring: RawFrameRing | None = None,
        batch_frames: int = DEFAULT_BATCH_FRAMES,
        batch_wait_s: float = DEFAULT_BATCH_WAIT_S,
        walker: ringwalk.Impl | None = None,
    ) -> None:
        if not sources:
            raise ValueError("SpanCapture needs at least one mirror source")
        if sample_every < 1 or snaplen < 64:
            raise ValueError("sample_every must be >= 1 and snaplen >= 64")
        if (on_batch is None) == (on_columns is None):
            raise ValueError("SpanCapture needs exactly one of on_batch and on_columns")
        if on_columns is not None:
            if mode != "ring":
                raise ValueError("batch mode (on_columns) reads the ring: mode must be 'ring'")
            if raw_ring is None:
                raw_ring = RawFrameRing(slot=max(256, snaplen))
            if raw_ring.slot < snaplen:
                raise ValueError(f"raw_ring slots ({raw_ring.slot} bytes) must hold the "
                                 f"snaplen ({snaplen})")
            if batch_frames < 1 or batch_wait_s < 0:
                raise ValueError("batch_frames must be >= 1 and batch_wait_s >= 0")
            if evidence is not None:
                raise ValueError("batch mode keeps its evidence in raw_ring, not an EvidenceRing")
            walker = ringwalk.choose(walker)  # now: a bad RACKWARDEN_RINGWALK fails here
        self.sources = [_Source(s) for s in sources]
        self.on_batch = on_batch
        self.clock = clock
        self.agent = agent
        self.mode: Mode = mode
        self.netns = netns
        self.mac_ports = {k.lower(): v for k, v in (mac_ports or {}).items()}
        self.snaplen = snaplen
        self.sample_every = sample_every
        self.rcvbuf_bytes = rcvbuf_bytes
        self.ring_block_size = ring_block_size
        self.ring_blocks = ring_blocks
        self.ring_timeout_ms = ring_timeout_ms
        self.batch_max = batch_max
        self.evidence = evidence
        self.on_columns = on_columns
        self.raw_ring = raw_ring
        self.batch_frames = batch_frames
        self.batch_wait_s = batch_wait_s
        self.walker: ringwalk.Impl | None = walker
        self._macs = MacTable(self.mac_ports)
        self.counters = CaptureCounters()
        self._skip = 0
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle -----------------------------------------------------------------------

    def start(self, timeout_s: float = 10.0) -> None:
        """Open every source (inside `netns` when given) and start reading; raises
        CaptureError when a source cannot be opened."""
        if self._thread is not None:
            raise RuntimeError("SpanCapture already started")
        self._thread = threading.Thread(target=self._run, name=f"span-capture-{self.agent}",
                                        daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            self.stop()
            raise CaptureError("capture thread did not come up")
        if self._error is not None:
            err = self._error
            self._thread.join()
            self._thread = None
            raise err

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _open(self) -> None:
        if self.netns is not None:
            enter_netns(self.netns)  # this thread only; see afpacket.enter_netns
        for src in self.sources:
            src.raw.open(self.rcvbuf_bytes)
            if self.mode == "ring":
                frame = 2048
                src.raw.open_ring(self.ring_block_size, self.ring_blocks, frame,
                                  self.ring_timeout_ms)
        for src in self.sources:
            src.raw.stats()  # reset: only drops from now on count

    def _run(self) -> None:
        try:
            self._open()
        except BaseException as e:  # noqa: BLE001 - reported by start() on the caller's thread
            self._error = e if isinstance(e, CaptureError) else CaptureError(str(e))
            for src in self.sources:
                src.raw.close()
            self._ready.set()
            return
        self._ready.set()
        try:
            if self.mode == "ring" and self.on_columns is not None:
                self._loop_ring_columns()
            elif self.mode == "ring":
                self._loop_ring()
            else:
                self._loop_recv()
        finally:
            self._read_stats()
            for src in self.sources:
                src.raw.close()

    def _read_stats(self) -> None:
        for src in self.sources:
            try:
                pk, dr = src.raw.stats()
            except OSError:
                continue
            self.counters.kernel_packets += pk
            self.counters.drops += dr

    # ---- per frame ----------------------------------------------------------------------

    def _sample(self, src: _Source, frame: bytes, wire_len: int, now: float,
                at: datetime) -> FlowSample | None:
        """One frame to one FlowSample; None when it must be dropped (counted)."""
        c = self.counters
        try:
            t = parse_tuple(frame, HEADER_ETHERNET)
            if src.by_mac:
                in_if = self.mac_ports.get(t[0]) if t[0] is not None else None
                out_if = self.mac_ports.get(t[1]) if t[1] is not None else None
                if in_if is None and out_if is None:
                    c.unattributed += 1
            else:
                in_if = src.in_if
                out_if = src.out_if
            if t[14] is not None:
                errs = c.decode_errors
                assert errs is not None
                errs[t[14]] = errs.get(t[14], 0) + 1
            return new_flow_sample(
                "span", self.agent, in_if, out_if, self.sample_every, now, at, wire_len,
                frame, *t, HEADER_ETHERNET, OUTPUT_IFINDEX, None, None, None, None, None, None,
            )
        except Exception:  # noqa: BLE001 - a frame must never take the capture down
            c.exceptions += 1
            return None

    def _deliver(self, batch: list[FlowSample]) -> None:
        if not batch:
            return
        c = self.counters
        c.batches += 1
        c.samples += len(batch)
        if self.evidence is not None:
            self.evidence.add(batch)
        assert self.on_batch is not None
        try:
            self.on_batch(batch)
        except Exception:  # noqa: BLE001 - the consumer's bug must not stop the capture
            c.callback_errors += 1
            log.exception("span capture: batch callback failed")

    # ---- loops --------------------------------------------------------------------------

    def _loop_ring(self) -> None:
        poller = select.poll()
        for src in self.sources:
            poller.register(src.raw.fileno(), select.POLLIN | select.POLLERR)
        clock = self.clock
        c = self.counters
        snaplen = self.snaplen
        every = self.sample_every
        unpack_hdr = PKT_HDR.unpack_from
        last_stats = clock.now()
        while not self._stop.is_set():
            got = 0
            for src in self.sources:
                raw = src.raw
                ring = raw.ring
                assert ring is not None
                for base, num, first in raw.ready_blocks():
                    now = clock.now()
                    at = clock.at()
                    batch: list[FlowSample] = []
                    off = base + first
                    try:
                        for _ in range(num):
                            nxt, snap, wire, mac = unpack_hdr(ring, off)
                            if every > 1:
                                self._skip += 1
                                if self._skip < every:
                                    c.packets += 1
                                    c.bytes += wire
                                    off += nxt
                                    continue
                                self._skip = 0
                            start = off + mac
                            frame = ring[start:start + (snap if snap < snaplen else snaplen)]
                            c.packets += 1
                            c.bytes += wire
                            s = self._sample(src, frame, wire, now, at)
                            if s is not None:
                                batch.append(s)
                            off += nxt
                    except Exception:  # noqa: BLE001 - a corrupt block: count, skip, go on
                        c.exceptions += 1
                    finally:
                        raw.release(base)
                    got += num
                    self._deliver(batch)
            now = clock.now()
            if now - last_stats >= STATS_EVERY_S:
                last_stats = now
                self._read_stats()
            if not got:
                poller.poll(100)

    def _loop_ring_columns(self) -> None:
        """Batch mode: hold ready blocks per source, then _take_blocks them together."""
        poller = select.poll()
        for src in self.sources:
            poller.register(src.raw.fileno(), select.POLLIN | select.POLLERR)
        clock = self.clock
        held: list[list[tuple[int, float, int, int]]] = [[] for _ in self.sources]
        held_frames = [0] * len(self.sources)
        since = [0.0] * len(self.sources)
        wait = self.batch_wait_s
        want = self.batch_frames
        # Never hold half the ring: the kernel needs free blocks to write into, and a ring
        # of held blocks would wrap ready_blocks() onto blocks already held.
        max_held = [max(1, src.raw.block_nr // 2) for src in self.sources]
        last_stats = clock.now()
        try:
            while not self._stop.is_set():
                got = 0
                for k, src in enumerate(self.sources):
                    mine = held[k]
                    for base, num, _first in src.raw.ready_blocks():
                        now = clock.now()
                        if not mine:
                            since[k] = now
                        mine.append((base, now, at_micros(clock.at()), num))
                        held_frames[k] += num
                        got += num
                        if held_frames[k] >= want or len(mine) >= max_held[k]:
                            self._take_blocks(src, mine)
                            mine.clear()
                            held_frames[k] = 0
                    if mine and clock.now() - since[k] >= wait:
                        self._take_blocks(src, mine)
                        mine.clear()
                        held_frames[k] = 0
                now = clock.now()
                if now - last_stats >= STATS_EVERY_S:
                    last_stats = now
                    self._read_stats()
                if not got:
                    pending = [k for k in range(len(held)) if held[k]]
                    if pending:
                        # While a block is held the socket polls readable at once (the
                        # kernel looks at the block before the one it fills: ours), so a
                        # poll() here would spin until the batch is due; sleep in steps
                        # instead, to see new blocks before the batch fills up.
                        left = min(since[k] for k in pending) + wait - now
                        step = HELD_SLEEP_MAX_S
                        for k in pending:  # until the fastest source would fill its batch
                            age = now - since[k]
                            if age > 0 and held_frames[k]:
                                step = min(step, (want - held_frames[k]) * age
                                           / held_frames[k])
                        time.sleep(max(0.0, min(left, max(step, HELD_SLEEP_MIN_S))))
                    else:
                        poller.poll(100)
        finally:
            for k, src in enumerate(self.sources):
                if held[k] and src.raw.ring is not None:
                    self._take_blocks(src, held[k])
                    held[k].clear()

    def _take_blocks(self, src: _Source, blocks: Sequence[tuple[int, float, int, int]]) -> None:
        """Walk, copy out and release the held blocks [(base, now, at µs, num_pkts)], then
        deliver their frames as one SampleColumns. A broken block chain is counted in
        `exceptions` (its frames before the break are kept); nothing here raises."""
        c = self.counters
        raw = src.raw
        ring = raw.ring
        assert ring is not None
        raw_ring = self.raw_ring
        assert raw_ring is not None
        bases = [b[0] for b in blocks]
        read: ringwalk.Read | None = None
        try:
            try:
                expect = sum(b[3] for b in blocks)
                if self.sample_every == 1 and self.walker == "c" and self.one_pass:
                    # Walk, copy and column read in one pass over the ring (rw_batch).
                    w, frames, caplen, read = ringwalk.walk_copy_read_c(
                        ring, bases, raw.block_size, expect, self.snaplen, raw_ring.slot,
                        READ_TABLES)
                else:
                    w = ringwalk.walk(ring, bases, raw.block_size, impl=self.walker,
                                      expect=expect)
                c.exceptions += len(w.bad_blocks)
                c.packets += len(w)
                c.bytes += int(w.wire_len.sum())
                if read is None:
                    frames, caplen, wire, blk = self._keep_and_copy(ring, w, raw_ring.slot)
                else:
                    wire, blk = w.wire_len, w.block
            finally:
                for b in bases:
                    raw.release(b)
            nows = np.array([b[1] for b in blocks], dtype=np.float64)[blk]
            at_us = np.array([b[2] for b in blocks], dtype=np.int64)[blk]
            cols, stats = frames_to_columns(
                frames, caplen, wire, nows, agent=self.agent, sampling_rate=self.sample_every,
                input_ifindex=src.in_if, output_ifindex=src.out_if,
                macs=self._macs if src.by_mac else None, impl=self.walker, read=read)
            cols.ref = raw_ring.add(frames, caplen, wire, nows, at_us, cols.input_ifindex,
                                    cols.output_ifindex, self.agent, self.sample_every)
        except Exception:  # noqa: BLE001 - a batch must never take the capture down
            c.exceptions += 1
            log.exception("span capture: batch decode failed")
            return
        if stats.decode_errors:
            errs = c.decode_errors
            assert errs is not None
            for reason, k in stats.decode_errors.items():
                errs[reason] = errs.get(reason, 0) + k
        c.unattributed += stats.unattributed
        if not len(cols):
            return
        c.batches += 1
        c.samples += len(cols)
        assert self.on_columns is not None
        try:
            self.on_columns(cols)
        except Exception:  # noqa: BLE001 - the consumer's bug must not stop the capture
            c.callback_errors += 1
            log.exception("span capture: columns callback failed")

    def _keep_and_copy(self, ring: ringwalk.Buffer, w: ringwalk.Walk, slot: int
                       ) -> tuple[npt.NDArray[np.uint8], I64, I64, I64]:
        """The walked frames kept by 1-in-N sampling, copied out of the ring: (rows of
        `slot` bytes, captured lengths, wire lengths, block indexes)."""
        every = self.sample_every
        if every > 1:
            # Frame i is kept where the running 1-in-N counter reaches N, exactly as the
            # per-frame loops count.
            n = len(w)
            keep = np.flatnonzero((self._skip + 1 + np.arange(n)) % every == 0)
            self._skip = (self._skip + n) % every
            offs, snap = w.data_off[keep], w.snaplen[keep]
            wire, blk = w.wire_len[keep], w.block[keep]
        else:
            offs, snap, wire, blk = w.data_off, w.snaplen, w.wire_len, w.block
        caplen = np.minimum(snap, self.snaplen)
        frames = ringwalk.copy_frames(ring, offs, caplen, slot, impl=self.walker)
        return frames, caplen, wire, blk

    def _loop_recv(self) -> None:
        import socket as _socket

        poller = select.poll()
        by_fd: dict[int, _Source] = {}
        for src in self.sources:
            fd = src.raw.fileno()
            by_fd[fd] = src
            poller.register(fd, select.POLLIN | select.POLLERR)
        clock = self.clock
        c = self.counters
        snaplen = self.snaplen
        every = self.sample_every
        buf = bytearray(snaplen)
        view = memoryview(buf)
        trunc = _socket.MSG_TRUNC
        batch_max = self.batch_max
        last_stats = clock.now()
        while not self._stop.is_set():
            events = poller.poll(100)
            now = clock.now()
            at = clock.at()
            for fd, _ev in events:
                src = by_fd[fd]
                sock = src.raw.sock
                assert sock is not None
                recv_into = sock.recv_into
                batch: list[FlowSample] = []
                while len(batch) < batch_max:
                    try:
                        # MSG_TRUNC returns the frame's real length; only snaplen is copied.
                        wire = recv_into(buf, snaplen, trunc)
                    except BlockingIOError:
                        break
                    except OSError as e:
                        if e.errno in (errno.EINTR, errno.ENETDOWN):
                            break
                        raise
                    c.packets += 1
                    c.bytes += wire
                    if every > 1:
                        self._skip += 1
                        if self._skip < every:
                            continue
                        self._skip = 0
                    n = wire if wire < snaplen else snaplen
                    s = self._sample(src, bytes(view[:n]), wire, now, at)
                    if s is not None:
                        batch.append(s)
                self._deliver(batch)
            if now - last_stats >= STATS_EVERY_S:
                last_stats = now
                self._read_stats()
