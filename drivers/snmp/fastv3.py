"""SNMPv3 GETBULK over a plain asyncio datagram endpoint, with the USM of usm.py and the PDU
codec of ber.py: the v3 counterpart of fastv2c.py.

One socket serves every v3 switch. A reply is matched by msgID and must come from the address
the request went to. Before it completes a request it must be authentic (the user's HMAC over
the whole message), inside the agent's time window, at the request's security level and
decryptable; a reply that fails any of these is counted and dropped, as pysnmp drops it, so the
request times out as it would there. Unauthenticated Reports are taken, as RFC 3414 requires
(the agent cannot authenticate an unknown user or a wrong digest): they become a `UsmError`
of the kind, and in the words, the poller gives pysnmp's error indication for the same Report.

Engine state (ID, boots, time) is kept per agent address. The first request to an agent
discovers it (RFC 3414 4: an empty-engine Get, answered by a usmStatsUnknownEngineIDs Report
carrying the engine's ID, boots and time). A notInTimeWindow or unknownEngineID Report later
(the agent restarted, or its engine ID changed) resynchronises from that Report and retries the
request once. An outer message that cannot be read, or a scopedPDU that does not decode after
authentication succeeded, raises `FastPathUnavailable`: the poller then uses pysnmp.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from . import ber, usm
from .fastv2c import DatagramClient, FastPathUnavailable
from .ifmib import Oid

_ID_MAX = 2**31 - 1


@dataclass
class EngineState:
    """What we know of one authoritative engine (RFC 3414 2.3)."""

    engine_id: bytes
    boots: int
    time: int  # msgAuthoritativeEngineTime when we last synchronised
    synced_at: float  # our monotonic clock then

    def now(self, mono: float) -> tuple[int, int]:
        """(boots, time) as the agent should see them now (RFC 3414 2.2.2)."""
        return self.boots, min(_ID_MAX, self.time + int(mono - self.synced_at))


@dataclass(frozen=True)
class _Reply:
    env: usm.Envelope
    pdu: usm.ScopedPdu


@dataclass
class _Pending:
    future: asyncio.Future[_Reply]
    addr: tuple[str, int]
    creds: usm.Credentials
    flags: int
    keys: usm.Keys | None
    engine: EngineState | None  # None while discovering
    ids: list[int] = field(default_factory=list)
    garbled: str | None = None


class FastV3Client(DatagramClient[_Pending]):
    """Sends SNMPv3 GetBulkRequests and hands back the matching Responses, authenticated,
    decrypted and decoded (as ber.Message, version 3, the contextName as `community`)."""

    def __init__(self, sock: socket.socket, *, first_request_id: int = 1,
                 mono: Callable[[], float] = time.monotonic) -> None:
        super().__init__(sock, first_request_id=first_request_id)
        self._mono = mono
        # A fresh IV for every encryption under one key (RFC 3826 3.1.2.1): a 64-bit counter
        # from a random start.
        self._salt = secrets.randbits(64)
        self.engines: dict[tuple[str, int], EngineState] = {}
        self.dropped = 0  # ours by msgID but not authentic, out of the time window, or the
        # wrong security level
        self.discoveries = 0
        self.resyncs = 0

    # --- receiving ---------------------------------------------------------------------------

    def _received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            env = usm.decode_envelope(data)
        except ber.BerError as exc:
            self._undecodable(addr, exc)
            return
        found = self._pending.get(env.msg_id)
        if found is None or found.future.done():
            self.unmatched += 1
            return
        if found.addr != addr:
            self.unmatched += 1
            found.garbled = f"reply from {addr[0]}:{addr[1]}, asked {found.addr[0]}:{found.addr[1]}"
            return
        try:
            reply = self._open(data, env, found)
        except ber.BerError as exc:
            found.future.set_exception(FastPathUnavailable(f"undecodable scopedPDU: {exc}"))
            return
        except usm.UsmError:
            # Authentic but not decryptable (privacy parameters of the wrong size): pysnmp drops
            # such a reply and the request times out; so does this one.
            self.dropped += 1
            return
        if reply is None:
            self.dropped += 1
            return
        found.future.set_result(reply)

    def _open(self, data: bytes, env: usm.Envelope, pending: _Pending) -> _Reply | None:
        """The reply's scopedPDU, or None when it must be dropped (RFC 3412 7.2, 3414 3.2)."""
        keys, engine = pending.keys, pending.engine
        if env.flags & usm.FLAG_AUTH:
            if (keys is None or engine is None or keys.auth_protocol is None
                    or env.user != pending.creds.user or env.engine_id != engine.engine_id
                    or not usm.authentic(data, env, keys)):
                return None
            if not self._in_window(engine, env):
                return None
            if env.encrypted:
                if keys.priv_protocol is None:
                    return None
                plain = usm.decrypt(keys, env.boots, env.time, env.priv_params, env.scoped)
                pdu = usm.decode_scoped_pdu(plain, padded=True)
            else:
                pdu = usm.decode_scoped_pdu(env.scoped)
        else:
            pdu = usm.decode_scoped_pdu(env.scoped)
        if pdu.pdu_type == ber.REPORT:
            return _Reply(env, pdu)
        # A Response comes at the request's security level or is not ours (RFC 3412 7.2.13).
        if pdu.pdu_type != ber.RESPONSE or env.flags & 0x03 != pending.flags & 0x03:
            return None
        return _Reply(env, pdu)

    def _in_window(self, engine: EngineState, env: usm.Envelope) -> bool:
        """RFC 3414 3.2 7b for a message from the authoritative engine: take a later time as
        the new notion of it, refuse one more than 150 s behind."""
        now = self._mono()
        boots, estimate = engine.now(now)
        if env.boots > boots or (env.boots == boots and env.time > estimate):
            engine.boots, engine.time, engine.synced_at = env.boots, env.time, now
            return env.boots < _ID_MAX
        return not (env.boots == _ID_MAX or env.boots < boots
                    or env.time < estimate - usm.TIME_WINDOW_S)

    # --- sending -----------------------------------------------------------------------------

    async def _exchange(
        self,
        addr: tuple[str, int],
        creds: usm.Credentials,
        flags: int,
        engine: EngineState | None,
        build: Callable[[int, usm.Keys | None], bytes],
        *,
        timeout_s: float,
        retries: int,
    ) -> _Reply:
        """Up to 1 + retries sends of build(msg_id, keys), each waiting timeout_s."""
        if self._transport is None:
            raise RuntimeError("FastV3Client used before open() or after close()")
        keys = None
        if engine is not None and flags & usm.FLAG_AUTH:
            keys = creds.localized(engine.engine_id)
        pending = _Pending(asyncio.get_running_loop().create_future(), addr, creds, flags, keys,
                           engine)
        reply: _Reply = await self._send_and_wait(pending, lambda mid: build(mid, keys),
                                                  timeout_s=timeout_s, retries=retries)
        return reply

    async def discover(self, addr: tuple[str, int], creds: usm.Credentials, *, timeout_s: float,
                       retries: int) -> EngineState:
        """RFC 3414 4: learn the agent's engine ID, boots and time from its Report to an
        unauthenticated Get with an empty engine ID and user name."""
        def build(mid: int, _keys: usm.Keys | None) -> bytes:
            pdu = ber.encode_pdu(pdu_type=ber.GET_REQUEST, request_id=mid, error_status=0,
                                 error_index=0, varbinds=[])
            return usm.encode_request(msg_id=mid, flags=usm.FLAG_REPORTABLE, engine_id=b"",
                                      boots=0, time=0, user=b"", keys=None, pdu=pdu)

        reply = await self._exchange(addr, creds, usm.FLAG_REPORTABLE, None, build,
                                     timeout_s=timeout_s, retries=retries)
        self.discoveries += 1
        if not reply.env.engine_id:
            raise FastPathUnavailable("engine discovery: the agent's reply names no engine ID")
        state = EngineState(reply.env.engine_id, reply.env.boots, reply.env.time, self._mono())
        self.engines[addr] = state
        return state

    async def get_bulk(
        self,
        addr: tuple[str, int],
        creds: usm.Credentials,
        non_repeaters: int,
        max_repetitions: int,
        oids: list[Oid],
        *,
        timeout_s: float,
        retries: int,
    ) -> ber.Message:
        """One GETBULK at the user's security level. Raises BulkTimeout when nothing matched,
        UsmError when the agent refused (a Report), FastPathUnavailable when what came back
        could not be read."""
        engine = self.engines.get(addr)
        if engine is None:
            engine = await self.discover(addr, creds, timeout_s=timeout_s, retries=retries)
        flags = creds.flags
        for resync in (False, True):
            state = engine

            def build(mid: int, keys: usm.Keys | None, state: EngineState = state) -> bytes:
                boots, now = state.now(self._mono())
                pdu = ber.encode_pdu(
                    pdu_type=ber.GET_BULK_REQUEST, request_id=mid, error_status=non_repeaters,
                    error_index=max_repetitions, varbinds=[(o, ber.NULL, None) for o in oids])
                self._salt = (self._salt + 1) & 0xFFFFFFFFFFFFFFFF
                return usm.encode_request(msg_id=mid, flags=flags, engine_id=state.engine_id,
                                          boots=boots, time=now, user=creds.user, keys=keys,
                                          pdu=pdu, salt_counter=self._salt)

            reply = await self._exchange(addr, creds, flags, state, build, timeout_s=timeout_s,
                                         retries=retries)
            pdu = reply.pdu
            if pdu.pdu_type == ber.RESPONSE:
                return ber.Message(usm.VERSION_3, pdu.context_name, pdu.pdu_type,
                                   pdu.request_id, pdu.error_status, pdu.error_index,
                                   pdu.varbinds, pdu.tags)
            oid = pdu.varbinds[0][0] if pdu.varbinds else ()
            if oid in (usm.NOT_IN_TIME_WINDOW, usm.UNKNOWN_ENGINE_ID) and not resync:
                # The agent restarted (boots moved on) or is another engine now: take its
                # figures from the Report and try once more (RFC 3414 4, 3.2 7b).
                self.resyncs += 1
                env = reply.env
                if oid == usm.UNKNOWN_ENGINE_ID or not env.engine_id:
                    engine = await self.discover(addr, creds, timeout_s=timeout_s,
                                                 retries=retries)
                else:
                    engine = EngineState(env.engine_id, env.boots, env.time, self._mono())
                    self.engines[addr] = engine
                continue
            raise usm.UsmError(*usm.report_failure(oid))
        raise AssertionError("unreachable")
