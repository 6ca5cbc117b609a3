"""asyncio UDP sFlow collector: allowed agents only, decode, count, hand samples on."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Protocol

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
# Python 3.11's socket module does not export it; the value is Linux's asm-generic/socket.h.
_SO_RCVBUFFORCE_LINUX = 33 if sys.platform.startswith("linux") else None


class Clock(Protocol):
    """The agent's clock, structurally (agent/clock.py): monotonic `now`, aware UTC `at`."""

    def now(self) -> float: ...

    def at(self) -> datetime: ...


SampleSink = Callable[[Sequence[Sample]], None]


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
    ) -> None:
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
        if self._transport is not None:
            return
        family = socket.AF_INET6 if ":" in self.bind else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self._raise_rcvbuf(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.bind, self.port))
            sock.setblocking(False)
            loop = asyncio.get_running_loop()
            transport, _ = await loop.create_datagram_endpoint(lambda: self, sock=sock)
        except BaseException:
            sock.close()
            raise
        self._transport = transport
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

    def _account(self, result: DecodeResult) -> None:
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
