"""UDP sFlow collector: allowed agents only, decode, count, hand samples on.

A receive thread drains the socket with plain blocking recvfrom calls (a few µs per datagram,
where asyncio's datagram protocol costs 30-49 µs, measured in PERFORMANCE-NOTES.md) and hands
batches of datagrams to the event loop, which decodes them in bulk (batch.decode_batch) and
does all the bookkeeping; `receive="asyncio"` keeps the per-datagram protocol path.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Literal, Protocol, cast

from rackwarden.drivers.sflow.batch import decode_batch
from rackwarden.drivers.sflow.decoder import DecodeResult, Sample, decode_datagram
from rackwarden.drivers.sflow.sequence import SeqEvent, SequenceTracker
from rackwarden.policies.flowfacts import FlowSample

log = logging.getLogger(__name__)

DEFAULT_PORT = 6343
DEFAULT_RCVBUF_BYTES = 16 * 1024 * 1024  # measured: loss starts near 60k datagrams/s without it
MAX_DATAGRAM = 65535
# Per-source tallies for rejected senders are capped: a spoofed flood must not grow memory.
MAX_REJECTED_SOURCES = 1024
OTHER_SOURCES = "other"
# The receive thread hands over at most this many datagrams at a time (what the socket holds
# when it wakes), and holds at most MAX_PENDING_BATCHES not yet taken by the event loop: past
# that, datagrams are dropped and counted (backlog_dropped_total) instead of queued without bound.
BATCH_MAX = 1024
MAX_PENDING_BATCHES = 64
# Python 3.11's socket module does not export it; the value is Linux's asm-generic/socket.h.
_SO_RCVBUFFORCE_LINUX = 33 if sys.platform.startswith("linux") else None


class Clock(Protocol):
    """The agent's clock, structurally (agent/clock.py): monotonic `now`, aware UTC `at`."""

    def now(self) -> float: ...

    def at(self) -> datetime: ...


SampleSink = Callable[[Sequence[Sample]], None]
Received = tuple[bytes, tuple[str | int, ...], float, datetime]
"""One datagram as the receive thread saw it: data, source address, receive now and at."""


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
      MAX_PENDING_BATCHES batches not yet taken

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
        receive: Literal["thread", "asyncio"] = "thread",
        batch_max: int = BATCH_MAX,
    ) -> None:
        if receive not in ("thread", "asyncio"):
            raise ValueError(f"receive must be 'thread' or 'asyncio', not {receive!r}")
        if batch_max < 1:
            raise ValueError("batch_max must be at least 1")
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
        self.sequence = SequenceTracker()
        self.sample_sequence = SequenceTracker()

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
            else:
                sock.setblocking(True)  # no timeout: CPython would poll() before every recvfrom
                self._loop = loop
                self._sock = sock
                self._stopping.clear()
                self._thread = threading.Thread(target=self._receive_forever, name="sflow-receive",
                                                daemon=True)
                self._thread.start()
        except BaseException:
            self._sock = None
            sock.close()
            raise
        self.bound_port = sock.getsockname()[1]
        log.info("sflow collector on %s:%s, rcvbuf %s bytes%s", self.bind, self.bound_port,
                 self.rcvbuf_bytes, " (forced)" if self.rcvbuf_forced else "")

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

    # -- receive thread ------------------------------------------------------------------------

    def _receive_forever(self) -> None:
        sock, loop, clock = self._sock, self._loop, self._clock
        assert sock is not None and loop is not None
        recvfrom = sock.recvfrom
        dontwait = socket.MSG_DONTWAIT
        stopping = self._stopping

        def post(fn: Callable[..., None], *args: object) -> bool:
            try:
                loop.call_soon_threadsafe(fn, *args)
            except RuntimeError:  # the loop is closed: nobody will take anything any more
                return False
            return True

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
            while len(batch) < self.batch_max:
                try:
                    data, addr = recvfrom(MAX_DATAGRAM, dontwait)
                except OSError:
                    break
                batch.append((data, addr, clock.now(), clock.at()))
            with self._pending_lock:
                full = self._pending >= MAX_PENDING_BATCHES
                if not full:
                    self._pending += 1
            posted = post(self._count_backlog_drop, len(batch)) if full else post(
                self._deliver, batch)
            if not posted:
                return

    def _count_backlog_drop(self, n: int) -> None:
        self.backlog_dropped_total += n

    def _deliver(self, batch: list[Received]) -> None:
        with self._pending_lock:
            self._pending -= 1
        self.datagrams_received(batch)

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
        datas: list[bytes] = []
        nows: list[float] = []
        ats: list[datetime] = []
        by_agent = self.datagrams_by_agent
        for data, addr, now, at in batch:
            source = str(addr[0])
            if not self._allowed(source):
                self.rejected_total += 1
                key = source if (source in self.rejected_by_source
                                 or len(self.rejected_by_source) < MAX_REJECTED_SOURCES) \
                    else OTHER_SOURCES
                self.rejected_by_source[key] = self.rejected_by_source.get(key, 0) + 1
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

    def error_received(self, exc: Exception) -> None:
        self.socket_errors_total += 1
        log.warning("sflow: socket error: %s", exc)

    # -- bookkeeping -------------------------------------------------------------------------

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
        self.sequence.observe((header.agent, header.sub_agent_id), header.sequence,
                              header.uptime_ms)
        if result.error is not None:
            return
        flows = 0
        if batch:
            # The same sample-sequence bookkeeping, with the in-order case taken inline.
            agent = header.agent
            items = [((agent, s.source_id_type, s.source_id_index), s.sample_sequence)
                     for s in result.samples
                     if type(s) is FlowSample and s.sample_sequence is not None]
            for key in self.sample_sequence.observe_all(items):  # type: ignore[arg-type]
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
                    event, _ = self.sample_sequence.observe(
                        (header.agent, s.source_id_type, s.source_id_index), s.sample_sequence)
                    if event is SeqEvent.RESET:
                        log.info("sflow: agent %s source %s:%s sample sequence reset",
                                 header.agent, s.source_id_type, s.source_id_index)
        self.flow_samples_total += flows
        self.counter_samples_total += len(result.samples) - flows
