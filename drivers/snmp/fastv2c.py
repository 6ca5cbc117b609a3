"""SNMPv2c GETBULK over a plain asyncio datagram endpoint, decoded with the project's BER codec.

One socket serves every v2c switch. A reply is matched by request-id, and must come from the
address the request went to and echo its community; anything else is counted and dropped, as
pysnmp drops it. A reply that cannot be decoded, or that is not a v2c Response, raises
`FastPathUnavailable` for the request it came to (by source address when it has no readable
request-id): the poller then polls that switch through pysnmp instead.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from . import ber
from .ifmib import Oid

# request-id is an Integer32; ids stay positive so they read the same in every tool.
_REQUEST_ID_MAX = 2**31 - 1


class FastPathUnavailable(Exception):
    """The fast path cannot serve this switch (undecodable or unexpected reply): use pysnmp."""


class BulkTimeout(Exception):
    """No matching reply after every try."""


@dataclass
class _Pending:
    future: asyncio.Future[ber.Message]
    addr: tuple[str, int]
    community: bytes
    ids: list[int] = field(default_factory=list)
    # Why a timeout here should fall back instead: an undecodable reply came from addr, or a
    # reply to this request-id came from another address.
    garbled: str | None = None


class _Waiting(Protocol):
    """What the shared client reads of a request waiting for its reply."""

    @property
    def future(self) -> asyncio.Future[Any]: ...

    @property
    def addr(self) -> tuple[str, int]: ...

    @property
    def ids(self) -> list[int]: ...

    garbled: str | None


W = TypeVar("W", bound=_Waiting)


class DatagramClient(Generic[W]):
    """What the v2c and v3 clients share: one socket on an asyncio datagram endpoint, requests
    waiting by id, ids that wrap within Integer32, and the handling of an undecodable reply.
    A subclass matches readable replies in `_received`."""

    def __init__(self, sock: socket.socket, *, first_request_id: int = 1) -> None:
        self._sock = sock
        self._transport: asyncio.DatagramTransport | None = None
        self._pending: dict[int, W] = {}
        self._next_id = max(1, min(first_request_id, _REQUEST_ID_MAX))
        # Counters (monotonic, for metrics): requests sent (each try counts), replies dropped
        # (unknown request-id, wrong address or community), ICMP errors on the socket.
        self.sent = 0
        self.unmatched = 0
        self.icmp_errors = 0

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self), sock=self._sock)
        self._transport = transport

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        for pending in list(self._pending.values()):
            if not pending.future.done():
                pending.future.cancel()
        self._pending.clear()

    def _new_id(self) -> int:
        while True:
            rid = self._next_id
            self._next_id = 1 if rid >= _REQUEST_ID_MAX else rid + 1
            if rid not in self._pending:
                return rid

    def _received(self, data: bytes, addr: tuple[str, int]) -> None:
        raise NotImplementedError

    async def _send_and_wait(self, pending: W, build: Callable[[int], bytes], *,
                             timeout_s: float, retries: int) -> Any:
        """Up to 1 + retries sends of build(id) to pending.addr, each under an id of its own
        and waiting timeout_s: a late reply to an earlier try is as good as the latest one.

        Raises BulkTimeout when nothing matched, FastPathUnavailable when the request cannot
        be encoded or what came back from the agent's address could not be read."""
        assert self._transport is not None
        try:
            for _attempt in range(retries + 1):
                rid = self._new_id()
                pending.ids.append(rid)
                self._pending[rid] = pending
                try:
                    packet = build(rid)
                except ValueError as exc:  # an OID the agent gave us that BER cannot carry
                    raise FastPathUnavailable(f"cannot encode the request: {exc}") from None
                self._transport.sendto(packet, pending.addr)
                self.sent += 1
                try:
                    return await asyncio.wait_for(asyncio.shield(pending.future), timeout_s)
                except TimeoutError:
                    continue
            if pending.garbled is not None:
                raise FastPathUnavailable(pending.garbled)
            raise BulkTimeout()
        finally:
            for rid in pending.ids:
                self._pending.pop(rid, None)
            if not pending.future.done():
                pending.future.cancel()

    def _undecodable(self, addr: tuple[str, int], exc: Exception) -> None:
        """A reply with no id to match on. One request waiting on that address: it is the one.
        Several (one agent, several communities or users): each is marked, and one that then
        gets no reply it can read falls back instead of timing out."""
        waiting = [p for p in {id(p): p for p in self._pending.values()}.values()
                   if p.addr == addr and not p.future.done()]
        if len(waiting) == 1:
            waiting[0].future.set_exception(FastPathUnavailable(f"undecodable reply: {exc}"))
        for pending in waiting:
            pending.garbled = f"undecodable reply: {exc}"
        if not waiting:
            self.unmatched += 1


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, client: DatagramClient[Any]) -> None:
        self._client = client

    def datagram_received(self, data: bytes, addr: tuple[str | Any, ...]) -> None:
        self._client._received(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (port unreachable) carry no request-id; the request times out, as with
        # pysnmp, so that a dead agent costs exactly the configured timeout and retries.
        self._client.icmp_errors += 1


class FastV2cClient(DatagramClient[_Pending]):
    """Sends GetBulkRequests and hands back the matching Response messages, decoded."""

    def _received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            msg = ber.decode_message(data)
        except ber.BerError as exc:
            self._undecodable(addr, exc)
            return
        found = self._pending.get(msg.request_id)
        if found is None or found.future.done() or msg.community != found.community:
            self.unmatched += 1
            return
        if found.addr != addr:
            # Not taken (anyone can send one), but a multi-homed agent answers from another
            # address: if nothing else comes, the request falls back to pysnmp, not a timeout.
            self.unmatched += 1
            found.garbled = f"reply from {addr[0]}:{addr[1]}, asked {found.addr[0]}:{found.addr[1]}"
            return
        if msg.version != ber.VERSION_2C or msg.pdu_type != ber.RESPONSE:
            found.future.set_exception(
                FastPathUnavailable(
                    f"unexpected reply: version {msg.version}, PDU tag 0x{msg.pdu_type:02x}"
                )
            )
            return
        found.future.set_result(msg)

    async def get_bulk(
        self,
        addr: tuple[str, int],
        community: bytes,
        non_repeaters: int,
        max_repetitions: int,
        oids: list[Oid],
        *,
        timeout_s: float,
        retries: int,
    ) -> ber.Message:
        """One GETBULK: up to 1 + retries sends, each waiting timeout_s. A late reply to an
        earlier try is as good as the latest one (each try has its own request-id).

        Raises BulkTimeout when nothing matched, FastPathUnavailable when what came back from
        the agent's address could not be read."""
        if self._transport is None:
            raise RuntimeError("FastV2cClient.get_bulk() before open() or after close()")
        pending = _Pending(asyncio.get_running_loop().create_future(), addr, community)
        msg: ber.Message = await self._send_and_wait(
            pending, lambda rid: ber.encode_getbulk(community, rid, non_repeaters,
                                                    max_repetitions, oids),
            timeout_s=timeout_s, retries=retries)
        return msg
