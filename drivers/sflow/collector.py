"""UDP sFlow collector: allowed agents only, decode, count, hand samples on.

A receive thread drains the socket with plain blocking recvfrom calls (a few µs per datagram,
where asyncio's datagram protocol costs 30-49 µs, measured in PERFORMANCE-NOTES.md) and hands
batches of datagrams to the event loop, which decodes them in bulk (batch.decode_batch) and
does all the bookkeeping; `receive="asyncio"` keeps the per-datagram protocol path.

With an `on_columns` consumer the collector takes the columns path instead: the receive thread
gathers a batch (up to batch_max datagrams, or batch_wait_s after the first, whichever comes
first), keeps the raw datagrams in a bounded RawRing, decodes them into SampleColumns
(batch.decode_batch_columns, no FlowSample per sample) and posts the columns to the event
loop, which does the same bookkeeping as the object path (sequence numbers in bulk, through
ColumnSequenceTracker) and hands the columns to the consumer. Every counter has the same value
on both paths for the same datagrams.

On Linux the columns path's receive thread reads with recvmmsg(2) (mmsg.MmsgReceiver): a batch
is one or two system calls into one preallocated buffer, its senders checked against the
allow-list once per distinct address, the accepted datagrams copied once into one bytes object
that is both decoded (batch.decode_batch_columns_in) and kept by the RawRing (add_blob). The counters, columns
and ring contents are those of the recvfrom loop for the same datagrams, with one difference:
the receive time (`now`, `at`) is taken once per recvmmsg call, not once per datagram, so the
datagrams of one call share one stamp (they were all waiting in the socket when it returned;
a batch is at most two calls, batch_wait_s apart). `receive="recvfrom"` keeps the recvfrom
loop, which is also what runs where recvmmsg is missing and on the object path.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Literal, Protocol, cast

import numpy as np
import numpy.typing as npt
from rackwarden.drivers.sflow import cwalk, mmsg
from rackwarden.drivers.sflow.batch import (
    ColumnBatch,
    decode_batch,
    decode_batch_columns,
    decode_batch_columns_in,
)
from rackwarden.drivers.sflow.decoder import (
    INTERNAL_ERROR,
    DecodeResult,
    Sample,
    decode_datagram,
)
from rackwarden.drivers.sflow.rawring import DEFAULT_RAW_RING_BYTES, RawRing
from rackwarden.drivers.sflow.sequence import ColumnSequenceTracker, SeqEvent, SequenceTracker
from rackwarden.policies.flowcols import SampleColumns
from rackwarden.policies.flowfacts import FlowSample

log = logging.getLogger(__name__)

DEFAULT_PORT = 6343
DEFAULT_RCVBUF_BYTES = 16 * 1024 * 1024  # measured: loss starts near 60k datagrams/s without it
MAX_DATAGRAM = 65535
# Per-source tallies for rejected senders are capped: a spoofed flood must not grow memory.
MAX_REJECTED_SOURCES = 1024
OTHER_SOURCES = "other"
# The receive thread hands over at most this many datagrams at a time (what the socket holds
# when it wakes), and holds at most MAX_PENDING_DATAGRAMS not yet taken by the event loop: past
# that, datagrams are dropped and counted (backlog_dropped_total) instead of queued without bound.
# The bound is in datagrams, not batches: at a low rate every datagram is a batch of its own, and
# a bound of 64 batches dropped sFlow at 2,500 datagrams/s whenever evaluate() held the loop for
# a few tens of milliseconds (bench/peer_fastnetmon.py). 16,384 datagrams is ~21 MB at most.
BATCH_MAX = 4096
MAX_PENDING_DATAGRAMS = 16384
# On the columns path a batch also closes this long after its first datagram. Every batch
# costs a fixed few hundred numpy calls (decode, sequence tracking, detector) and one hand-over
# between the receive thread and the event loop, both of which want the GIL. At 30k
# datagrams/s, batches of up to 2,048 datagrams or 50 ms took 1.29x the samples per CPU-second
# of 1,024 or 20 ms, and 4,096 or 100 ms 1.03-1.14x more again (bench/sflow.py runs both
# earlier batchings beside these defaults, round by round). 100 ms is still well inside the
# detectors' 250 ms evaluation: a batch is judged at the first evaluation after it lands. At
# rates past BATCH_MAX per BATCH_WAIT_S the batches fill before their deadline and run back to
# back (what the socket holds past a full batch is the next one's), so the wait never costs
# throughput. The socket buffer (16 MiB asked, which Linux doubles) holds 100 ms of 60k
# datagrams/s with room: ~14 MB at 2,304 bytes a 1.3 KB datagram (/proc/net/udp, loopback).
BATCH_WAIT_S = 0.1
# recvmmsg's buffer has one 64 KiB slot per datagram of a batch (address space, not RSS: see
# mmsg.py); past this many a batch closes early, whatever batch_max says.
MMSG_SLOTS_MAX = 4096
# The columns path numbers sequence keys' agents (and the wide source ids of expanded samples)
# for its trackers; datagrams from allowed senders may name any agent, so past this many the
# numbering starts afresh and both trackers forget their state, as SequenceTracker's eviction
# would long have done by then (it clears at 65,536 keys).
MAX_KEY_CODES = 1 << 18
# Python 3.11's socket module does not export it; the value is Linux's asm-generic/socket.h.
_SO_RCVBUFFORCE_LINUX = 33 if sys.platform.startswith("linux") else None


class Clock(Protocol):
    """The agent's clock, structurally (agent/clock.py): monotonic `now`, aware UTC `at`."""

    def now(self) -> float: ...

    def at(self) -> datetime: ...


SampleSink = Callable[[Sequence[Sample]], None]
ColumnSink = Callable[[SampleColumns], None]
Received = tuple[bytes, tuple[str | int, ...], float, datetime]
"""One datagram as the receive thread saw it: data, source address, receive now and at."""


@dataclass(slots=True)
class _Prepared:
    """A batch as the receive thread leaves it for the event loop on the columns path."""

    # (UDP source, datagrams) of the accepted and of the refused datagrams, each source once,
    # in order of its first datagram (the order the per-source tallies must see them in)
    accepted: list[tuple[str, int]]
    rejected: list[tuple[str, int]]
    decoded: ColumnBatch | None  # None when nothing was accepted


class SflowCollector(asyncio.DatagramProtocol):
    """Receives sFlow v5 on UDP and hands decoded samples to `on_samples`.

    Only datagrams whose UDP source address is in `allowed_agents` (addresses or networks)
    are decoded; an empty list accepts nobody. A malformed datagram is counted by reason and
    dropped whole. Counters are plain attributes for the metrics module to read:

    - datagrams_total, datagrams_by_agent: accepted datagrams (by UDP source)
    - rejected_total, rejected_by_source: datagrams from senders not allowed
    - decode_errors: {reason: count}; skipped: {reason: count} of legal records not used
    - flow_samples_total, counter_samples_total
    - sequence: datagram sequence per (agent, sub-agent) — .lost, .resets, .duplicates, .late
    - sample_sequence: flow-sample sequence per (agent, source id type, index) — .lost ...
    - callback_errors_total; rcvbuf_bytes (what the kernel granted) and rcvbuf_forced
    - backlog_dropped_total: datagrams the receive thread dropped because the event loop had
      MAX_PENDING_DATAGRAMS datagrams not yet taken

    With `on_columns` (the columns path) the flow samples go to it as SampleColumns, on the
    event loop, and `on_samples` gets only the counter samples; `raw_ring` (made with
    `raw_ring_bytes` when not given) keeps the datagrams the rows' `ref` point into. The
    counters are the same; `sequence` and `sample_sequence` are then ColumnSequenceTrackers.

    `receive`: "thread" (the default) reads on a receive thread, with recvmmsg on the columns
    path where Linux has it (mmsg.available()) and recvfrom otherwise; "recvfrom" and "mmsg"
    choose the thread's loop ("mmsg" needs the columns path and recvmmsg); "asyncio" is the
    per-datagram protocol path. `receive_loop` says which one start() took.

    The constructor does no I/O; start() binds, stop() closes.
    """

    def __init__(
        self,
        *,
        allowed_agents: Iterable[str],
        on_samples: SampleSink,
        clock: Clock,
        bind: str = "0.0.0.0",
        port: int = DEFAULT_PORT,
        rcvbuf_bytes: int = DEFAULT_RCVBUF_BYTES,
        receive: Literal["thread", "recvfrom", "mmsg", "asyncio"] = "thread",
        batch_max: int = BATCH_MAX,
        on_columns: ColumnSink | None = None,
        raw_ring: RawRing | None = None,
        raw_ring_bytes: int = DEFAULT_RAW_RING_BYTES,
        batch_wait_s: float = BATCH_WAIT_S,
    ) -> None:
        if receive not in ("thread", "recvfrom", "mmsg", "asyncio"):
            raise ValueError("receive must be 'thread', 'recvfrom', 'mmsg' or 'asyncio', not "
                             f"{receive!r}")
        if receive == "mmsg" and (on_columns is None or not mmsg.available()):
            raise ValueError("receive='mmsg' needs on_columns and Linux recvmmsg")
        if batch_max < 1:
            raise ValueError("batch_max must be at least 1")
        if on_columns is not None:
            # A bad RACKWARDEN_SFLOW_WALK fails here, at start, not as a slower batch later (the
            # bulk decode's guard would quietly take the exact decoder).
            cwalk.choose()
        nets = [ipaddress.ip_network(a, strict=False) for a in allowed_agents]
        self._allowed_nets = tuple(nets)
        self._verdicts: dict[str, bool] = {}  # per source address text; bounded below
        self._on_samples = on_samples
        self._clock = clock
        self.bind = bind
        self.port = port
        self.rcvbuf_requested = rcvbuf_bytes
        self.rcvbuf_bytes: int | None = None
        self.rcvbuf_forced = False
        self.bound_port: int | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self.receive = receive
        self.batch_max = batch_max
        self._sock: socket.socket | None = None
        self._mmsg: mmsg.MmsgReceiver | None = None
        self.receive_loop: str | None = None  # "recvmmsg", "recvfrom" or "asyncio" once started
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = threading.Event()
        self._pending = 0
        self._pending_lock = threading.Lock()
        self.backlog_dropped_total = 0

        self.datagrams_total = 0
        self.datagrams_by_agent: dict[str, int] = {}
        self.rejected_total = 0
        self.rejected_by_source: dict[str, int] = {}
        self.decode_errors: dict[str, int] = {}
        self.skipped: dict[str, int] = {}
        self.flow_samples_total = 0
        self.counter_samples_total = 0
        self.callback_errors_total = 0
        self.socket_errors_total = 0
        self._on_columns = on_columns
        self.batch_wait_s = batch_wait_s
        self.raw_ring: RawRing | None = None
        self.sequence: SequenceTracker | ColumnSequenceTracker
        self.sample_sequence: SequenceTracker | ColumnSequenceTracker
        if on_columns is None:
            self.sequence = SequenceTracker()
            self.sample_sequence = SequenceTracker()
        else:
            self.raw_ring = raw_ring if raw_ring is not None else RawRing(raw_ring_bytes)
            self.sequence = ColumnSequenceTracker()
            self.sample_sequence = ColumnSequenceTracker()
        # Sequence keys as int codes on the columns path: agent text <-> a stable number, and
        # the (agent, source type, index) keys that do not pack into 32 bits (expanded samples).
        self._agent_gid: dict[str, int] = {}
        self._agent_names: list[str] = []
        self._wide_code: dict[tuple[str, int, int], int] = {}
        self._wide_key: list[tuple[str, int, int]] = []

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the UDP socket (SO_RCVBUF raised first) and start receiving."""
        if self._transport is not None or self._thread is not None:
            return
        family = socket.AF_INET6 if ":" in self.bind else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self._raise_rcvbuf(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.bind, self.port))
            loop = asyncio.get_running_loop()
            if self.receive == "asyncio":
                sock.setblocking(False)
                transport, _ = await loop.create_datagram_endpoint(lambda: self, sock=sock)
                self._transport = transport
                self.receive_loop = "asyncio"
            else:
                sock.setblocking(True)  # no timeout: CPython would poll() before every recvfrom
                target = self._receive_forever
                if self.receive == "mmsg" or (self.receive == "thread" and self._on_columns
                                              is not None and mmsg.available()):
                    self._mmsg = mmsg.MmsgReceiver(sock.fileno(), family,
                                                   min(self.batch_max, MMSG_SLOTS_MAX),
                                                   MAX_DATAGRAM)
                    target = self._receive_mmsg
                self.receive_loop = "recvmmsg" if self._mmsg is not None else "recvfrom"
                self._loop = loop
                self._sock = sock
                self._stopping.clear()
                self._thread = threading.Thread(target=target, name="sflow-receive", daemon=True)
                self._thread.start()
        except BaseException:
            self._sock = self._mmsg = None
            sock.close()
            raise
        self.bound_port = sock.getsockname()[1]
        log.info("sflow collector on %s:%s, rcvbuf %s bytes%s, %s", self.bind, self.bound_port,
                 self.rcvbuf_bytes, " (forced)" if self.rcvbuf_forced else "", self.receive_loop)

    def _raise_rcvbuf(self, sock: socket.socket) -> None:
        # SO_RCVBUF is capped by net.core.rmem_max (212992 by default); as root,
        # SO_RCVBUFFORCE ignores the cap. Linux reports back double the request (its own
        # bookkeeping), so compare against the request, not equality.
        want = self.rcvbuf_requested
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, want)
        got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        force = getattr(socket, "SO_RCVBUFFORCE", _SO_RCVBUFFORCE_LINUX)
        if got < want and force is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, force, want)
                self.rcvbuf_forced = True
            except OSError:
                log.warning("sflow: SO_RCVBUF capped at %d bytes (wanted %d); raise "
                            "net.core.rmem_max or grant CAP_NET_ADMIN", got, want)
            got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        self.rcvbuf_bytes = got

    def stop(self) -> None:
        """Close the socket; counters stay readable."""
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        thread, sock = self._thread, self._sock
        if thread is not None and sock is not None:
            self._stopping.set()
            # Wakes the blocked recvfrom (it returns b""); Linux reports ENOTCONN for an
            # unconnected UDP socket but wakes the reader all the same.
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            thread.join(timeout=2.0)
            if thread.is_alive():
                log.warning("sflow: receive thread did not stop within 2 s")
            sock.close()
            self._thread = self._sock = None
            self._mmsg = None

    # -- receive thread ------------------------------------------------------------------------

    def _post(self, fn: Callable[..., None], *args: object) -> bool:
        """fn(*args) on the event loop, from the receive thread; False once the loop is closed
        (nobody will take anything any more)."""
        loop = self._loop
        assert loop is not None
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            return False
        return True

    def _reserve(self, n: int) -> bool:
        """Take n datagrams into the backlog the event loop has yet to take; False when that
        would pass MAX_PENDING_DATAGRAMS (the caller drops and counts them)."""
        with self._pending_lock:
            if self._pending + n > MAX_PENDING_DATAGRAMS:
                return False
            self._pending += n
            return True

    def _post_columns(self, n: int, prepare: Callable[[], _Prepared]) -> bool:
        """The columns of n reserved datagrams (`prepare`, on this thread) to the event loop;
        a decode bug costs the batch (counted), not the receive thread."""
        try:
            return self._post(self._deliver_columns, prepare(), n)
        except Exception:  # noqa: BLE001 - a bug must cost this batch, not the thread
            log.exception("sflow: columns decode failed on %d datagrams", n)
            return self._post(self._count_failed_batch, n)

    def _receive_forever(self) -> None:
        sock, loop, clock = self._sock, self._loop, self._clock
        assert sock is not None and loop is not None
        recvfrom = sock.recvfrom
        dontwait = socket.MSG_DONTWAIT
        stopping = self._stopping
        columns = self._on_columns is not None
        monotonic = time.monotonic
        post = self._post

        while not stopping.is_set():
            try:
                data, addr = recvfrom(MAX_DATAGRAM)
            except OSError as exc:
                if stopping.is_set() or sock.fileno() < 0 or not post(self.error_received, exc):
                    return
                stopping.wait(0.01)  # a socket that keeps failing must not spin a core
                continue
            if stopping.is_set():
                return
            batch: list[Received] = [(data, addr, clock.now(), clock.at())]
            # Then whatever else the socket already holds, without blocking.
            deadline = monotonic() + self.batch_wait_s if columns else 0.0
            waited = False
            while len(batch) < self.batch_max:
                try:
                    data, addr = recvfrom(MAX_DATAGRAM, dontwait)
                except OSError:
                    # The socket is empty. The columns path lets datagrams gather in the socket
                    # until the batch's deadline, then drains them: one wait per batch, not a
                    # wake-up per datagram (20 ms at 66k datagrams/s is ~1.7 MB of a 16 MB
                    # buffer). stop() ends the wait at once.
                    left = deadline - monotonic()
                    if waited or left <= 0 or stopping.wait(left):
                        break
                    waited = True
                    continue
                batch.append((data, addr, clock.now(), clock.at()))
            n = len(batch)
            if not self._reserve(n):
                posted = post(self._count_backlog_drop, n)
            elif columns:
                posted = self._post_columns(n, partial(self._prepare_columns, batch))
            else:
                posted = post(self._deliver, batch)
            if not posted:
                return

    def _receive_mmsg(self) -> None:
        """_receive_forever's columns path through recvmmsg: the same batches, the same
        hand-over, one or two system calls a batch."""
        rx, sock, loop, clock = self._mmsg, self._sock, self._loop, self._clock
        assert rx is not None and sock is not None and loop is not None
        stopping = self._stopping
        monotonic = time.monotonic
        cap = rx.slots
        post = self._post

        while not stopping.is_set():
            try:
                n = rx.receive(0, True)  # blocks for one, then takes what the socket holds
            except OSError as exc:
                if stopping.is_set() or sock.fileno() < 0 or not post(self.error_received, exc):
                    return
                stopping.wait(0.01)  # a socket that keeps failing must not spin a core
                continue
            if stopping.is_set():  # stop()'s shutdown woke the call (one empty "datagram")
                return
            stamps = [(n, clock.now(), clock.at())]
            deadline = monotonic() + self.batch_wait_s
            if n < cap:
                # As the recvfrom loop: let datagrams gather until the batch's deadline, then
                # take them; stop() ends the wait at once.
                left = deadline - monotonic()
                if left > 0 and not stopping.wait(left):
                    try:
                        more = rx.receive(n, False)
                    except OSError:
                        more = 0
                    if more:
                        stamps.append((more, clock.now(), clock.at()))
                        n += more
            if not self._reserve(n):
                posted = post(self._count_backlog_drop, n)
            else:
                posted = self._post_columns(n, partial(self._prepare_mmsg, rx, n, stamps))
            rx.release(n)
            if not posted:
                return

    def _count_backlog_drop(self, n: int) -> None:
        self.backlog_dropped_total += n

    def _deliver(self, batch: list[Received]) -> None:
        with self._pending_lock:
            self._pending -= len(batch)
        self.datagrams_received(batch)

    def _count_failed_batch(self, n: int) -> None:
        with self._pending_lock:
            self._pending -= n
        self.decode_errors[INTERNAL_ERROR] = self.decode_errors.get(INTERNAL_ERROR, 0) + n

    def _deliver_columns(self, prepared: _Prepared, n: int) -> None:
        with self._pending_lock:
            self._pending -= n
        self._finish_columns(prepared)

    # -- asyncio.DatagramProtocol ------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        source = str(addr[0])
        if not self._allowed(source):
            self.rejected_total += 1
            key = source if (source in self.rejected_by_source
                             or len(self.rejected_by_source) < MAX_REJECTED_SOURCES) \
                else OTHER_SOURCES
            self.rejected_by_source[key] = self.rejected_by_source.get(key, 0) + 1
            return
        if self._on_columns is not None:
            self.datagrams_received([(data, addr, self._clock.now(), self._clock.at())])
            return
        self.datagrams_total += 1
        self.datagrams_by_agent[source] = self.datagrams_by_agent.get(source, 0) + 1
        result = decode_datagram(data, self._clock.now(), self._clock.at())
        self._account(result)
        if result.error is None and result.samples:
            try:
                self._on_samples(result.samples)
            except Exception:  # noqa: BLE001 - a consumer bug must not stop the collector
                self.callback_errors_total += 1
                if self.callback_errors_total & (self.callback_errors_total - 1) == 0:
                    log.exception("sflow: sample consumer failed (%d times so far)",
                                  self.callback_errors_total)

    def datagrams_received(self, batch: Sequence[Received]) -> None:
        """A batch of datagrams, each with its receive time: the same counters as
        datagram_received for each of them, one bulk decode, one hand-over of the samples."""
        if self._on_columns is not None:
            self._finish_columns(self._prepare_columns(batch))
            return
        datas: list[bytes] = []
        nows: list[float] = []
        ats: list[datetime] = []
        by_agent = self.datagrams_by_agent
        for data, addr, now, at in batch:
            source = str(addr[0])
            if not self._allowed(source):
                self._count_rejected(source)
                continue
            self.datagrams_total += 1
            by_agent[source] = by_agent.get(source, 0) + 1
            datas.append(data)
            nows.append(now)
            ats.append(at)
        if not datas:
            return
        results = decode_batch(datas, nows, ats)
        samples: list[Sample] = []
        for result in results:
            self._account(result, batch=True)
            if result.error is None and result.samples:
                samples.extend(result.samples)
        if samples:
            try:
                self._on_samples(samples)
            except Exception:  # noqa: BLE001 - a consumer bug must not stop the collector
                self.callback_errors_total += 1
                if self.callback_errors_total & (self.callback_errors_total - 1) == 0:
                    log.exception("sflow: sample consumer failed (%d times so far)",
                                  self.callback_errors_total)

    # -- the columns path ----------------------------------------------------------------------

    def _prepare_columns(self, batch: Sequence[Received]) -> _Prepared:
        """Allow-list, raw ring and bulk decode: the part that runs on the receive thread.
        It touches no counter (the event loop reads those): _finish_columns counts."""
        ring = self.raw_ring
        assert ring is not None
        accepted: list[str] = []
        rejected: list[str] = []
        datas: list[bytes] = []
        nows: list[float] = []
        ats: list[datetime] = []
        allowed = self._allowed
        for data, addr, now, at in batch:
            source = str(addr[0])
            if not allowed(source):
                rejected.append(source)
                continue
            accepted.append(source)
            datas.append(data)
            nows.append(now)
            ats.append(at)
        tally_ok, tally_no = list(Counter(accepted).items()), list(Counter(rejected).items())
        if not datas:
            return _Prepared(tally_ok, tally_no, None)
        first = ring.extend(datas, nows, ats)
        return _Prepared(tally_ok, tally_no,
                         decode_batch_columns(datas, nows, ats, first_number=first))

    def _prepare_mmsg(self, rx: mmsg.MmsgReceiver, n: int,
                      stamps: list[tuple[int, float, datetime]]) -> _Prepared:
        """_prepare_columns for the n datagrams in rx's slots: the allow-list once per
        distinct sender, one copy of the accepted ones both decoded and kept by the ring.
        `stamps` are (datagrams, now, at) per recvmmsg call, in order."""
        ring = self.raw_ring
        assert ring is not None
        sources, who = rx.senders(n)
        verdicts = [self._allowed(source) for source in sources]
        counts = np.bincount(who, minlength=len(sources)).tolist()
        accepted = [(src, k) for src, ok, k in zip(sources, verdicts, counts, strict=True) if ok]
        rejected = [(src, k) for src, ok, k in zip(sources, verdicts, counts, strict=True)
                    if not ok]
        if not accepted:
            return _Prepared(accepted, rejected, None)
        starts, lengths = rx.starts[:n], rx.lengths(n)
        if len(stamps) == 1:
            nows = [stamps[0][1]] * n
            ats = [stamps[0][2]] * n
        else:
            nows = [now for k, now, _ in stamps for _ in range(k)]
            ats = [at for k, _, at in stamps for _ in range(k)]
        if rejected:
            keep = np.nonzero(np.array(verdicts, dtype=np.bool_)[who])[0]
            starts, lengths = starts[keep], lengths[keep]
            kept = keep.tolist()
            nows = [nows[i] for i in kept]
            ats = [ats[i] for i in kept]
        # One copy of the accepted datagrams, back to back, each padded to a 4-byte boundary
        # (the slot's next bytes: the decoder never reads a pad), then 64 zero bytes, for both
        # the decode and the ring, which keeps it: one C call (cwalk.gather) where the sFlow
        # walker is built. Reading the slots in place costs more: 64 KiB apart, every
        # datagram is on a page of its own and the bulk read's gathers ran ~2x slower
        # (bench/sflow_receive.py).
        padded = (lengths + 3) & ~3
        blob = cwalk.gather(rx.memory, starts, padded)
        offsets = np.cumsum(padded) - padded
        first = ring.add_blob(blob, offsets, lengths, nows, ats)
        return _Prepared(accepted, rejected, decode_batch_columns_in(
            blob, offsets, lengths, nows, ats, first_number=first))

    def _finish_columns(self, prepared: _Prepared) -> None:
        """The counters and the hand-over, on the event loop."""
        for source, k in prepared.rejected:
            self._count_rejected(source, k)
        by_agent = self.datagrams_by_agent
        for source, k in prepared.accepted:
            by_agent[source] = by_agent.get(source, 0) + k
            self.datagrams_total += k
        decoded = prepared.decoded
        if decoded is None:
            return
        self._account_columns(decoded)
        cols = decoded.cols
        counters = decoded.counter_samples() if decoded.fallback or decoded.partial else []
        if not len(cols) and not counters:
            return
        assert self._on_columns is not None
        try:
            if len(cols):
                self._on_columns(cols)
            if counters:
                self._on_samples(counters)
        except Exception:  # noqa: BLE001 - a consumer bug must not stop the collector
            self.callback_errors_total += 1
            if self.callback_errors_total & (self.callback_errors_total - 1) == 0:
                log.exception("sflow: sample consumer failed (%d times so far)",
                              self.callback_errors_total)

    def _gid(self, agent: str) -> int:
        gid = self._agent_gid.get(agent)
        if gid is None:
            gid = self._agent_gid[agent] = len(self._agent_names)
            self._agent_names.append(agent)
        return gid

    def _datagram_key(self, code: int) -> Hashable:
        return (self._agent_names[code >> 32], code & 0xFFFFFFFF)

    def _sample_key(self, code: int) -> Hashable:
        if code < 0:
            return self._wide_key[-code - 1]
        return (self._agent_names[code >> 32], (code >> 24) & 0xFF, code & 0x00FFFFFF)

    def _account_columns(self, decoded: ColumnBatch) -> None:
        """_account for a whole batch: the same counters, sequence numbers taken in bulk."""
        for _, result in decoded.results():  # errors, skips, counter samples
            if result.error is not None:
                self.decode_errors[result.error] = self.decode_errors.get(result.error, 0) + 1
            for reason, count in result.skipped.items():
                self.skipped[reason] = self.skipped.get(reason, 0) + count
            if result.error is None:
                self.counter_samples_total += sum(1 for s in result.samples
                                                  if type(s) is not FlowSample)
        cols = decoded.cols
        names = cols.agent_names
        if len(self._agent_names) + len(self._wide_key) + len(names) + len(cols) > MAX_KEY_CODES:
            self._agent_gid.clear()
            self._agent_names.clear()
            self._wide_code.clear()
            self._wide_key.clear()
            cast(ColumnSequenceTracker, self.sequence).forget()
            cast(ColumnSequenceTracker, self.sample_sequence).forget()
        gids: npt.NDArray[np.int64] = np.array([self._gid(a) for a in names], dtype=np.int64)
        # Even a malformed datagram with a readable header advances its agent's sequence, so
        # it is not also counted as lost.
        has = decoded.header_agent >= 0
        if has.any():
            codes = (gids[decoded.header_agent[has]] << 32) | decoded.sub_agent[has]
            cast(ColumnSequenceTracker, self.sequence).observe_columns(
                codes, decoded.sequence[has], self._datagram_key, decoded.uptime_ms[has])
        n = len(cols)
        if n:
            sel = cols.sample_sequence >= 0
            stype, sindex = cols.source_id_type, cols.source_id_index
            codes = (gids[cols.agent] << 32) | (stype << 24) | sindex
            # Expanded samples carry 32-bit source types and indexes: those keys get a number
            # of their own (negative, so they cannot meet a packed one).
            for j in np.nonzero(sel & ((stype >> 8 != 0) | (sindex >> 24 != 0)))[0].tolist():
                wide = (names[int(cols.agent[j])], int(stype[j]), int(sindex[j]))
                code = self._wide_code.get(wide)
                if code is None:
                    code = self._wide_code[wide] = -1 - len(self._wide_key)
                    self._wide_key.append(wide)
                codes[j] = code
            resets = cast(ColumnSequenceTracker, self.sample_sequence).observe_columns(
                codes[sel], cols.sample_sequence[sel], self._sample_key)
            for key in resets:
                agent, sid_type, sid_index = cast(tuple[str, int, int], key)
                log.info("sflow: agent %s source %s:%s sample sequence reset",
                         agent, sid_type, sid_index)
        self.flow_samples_total += n

    def error_received(self, exc: Exception) -> None:
        self.socket_errors_total += 1
        log.warning("sflow: socket error: %s", exc)

    # -- bookkeeping -------------------------------------------------------------------------

    def _count_rejected(self, source: str, n: int = 1) -> None:
        # n datagrams of one source at once: the same tallies as n calls, as a source's key
        # (itself or OTHER_SOURCES) cannot change between them.
        self.rejected_total += n
        key = source if (source in self.rejected_by_source
                         or len(self.rejected_by_source) < MAX_REJECTED_SOURCES) \
            else OTHER_SOURCES
        self.rejected_by_source[key] = self.rejected_by_source.get(key, 0) + n

    def _allowed(self, source: str) -> bool:
        verdict = self._verdicts.get(source)
        if verdict is None:
            try:
                addr = ipaddress.ip_address(source)
            except ValueError:
                return False
            # A dual-stack socket reports IPv4 senders as ::ffff:a.b.c.d.
            if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
                addr = addr.ipv4_mapped
            verdict = any(addr in net for net in self._allowed_nets)
            if len(self._verdicts) >= MAX_REJECTED_SOURCES:
                self._verdicts.clear()
            self._verdicts[source] = verdict
        return verdict

    def _account(self, result: DecodeResult, batch: bool = False) -> None:
        if result.error is not None:
            self.decode_errors[result.error] = self.decode_errors.get(result.error, 0) + 1
        for reason, count in result.skipped.items():
            self.skipped[reason] = self.skipped.get(reason, 0) + count
        header = result.header
        if header is None:
            return
        # Even a malformed datagram with a readable header advances its agent's sequence, so
        # it is not also counted as lost.
        cast(SequenceTracker, self.sequence).observe((header.agent, header.sub_agent_id),
                                                     header.sequence, header.uptime_ms)
        if result.error is not None:
            return
        flows = 0
        if batch:
            # The same sample-sequence bookkeeping, with the in-order case taken inline.
            agent = header.agent
            items = [((agent, s.source_id_type, s.source_id_index), s.sample_sequence)
                     for s in result.samples
                     if type(s) is FlowSample and s.sample_sequence is not None]
            sample_sequence = cast(SequenceTracker, self.sample_sequence)
            for key in sample_sequence.observe_all(items):  # type: ignore[arg-type]
                _, sid_type, sid_index = cast(tuple[str, int, int], key)
                log.info("sflow: agent %s source %s:%s sample sequence reset",
                         header.agent, sid_type, sid_index)
            flows = sum(1 for s in result.samples if type(s) is FlowSample)
            self.flow_samples_total += flows
            self.counter_samples_total += len(result.samples) - flows
            return
        for s in result.samples:
            if type(s) is FlowSample:
                flows += 1
                if s.sample_sequence is not None:
                    event, _ = cast(SequenceTracker, self.sample_sequence).observe(
                        (header.agent, s.source_id_type, s.source_id_index), s.sample_sequence)
                    if event is SeqEvent.RESET:
                        log.info("sflow: agent %s source %s:%s sample sequence reset",
                                 header.agent, s.source_id_type, s.source_id_index)
        self.flow_samples_total += flows
        self.counter_samples_total += len(result.samples) - flows
