"""The fast SNMPv3 path (fastv3.py + usm.py + ber.py) against the pysnmp path, on one in-process
USM agent.

The agent is written with pysnmp's own USM services and pyasn1 (test_snmp_usm's oracle), so
nothing of the fast path is on its side: every recorded walk polled both ways must give the
same PortPoll, and every refusal the same error. It keeps an engine ID, boots and a clock, and
answers as RFC 3414 says: discovery Reports, notInTimeWindow, unknown user, wrong digest.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from pyasn1.codec.ber import decoder, encoder
from pyasn1.error import PyAsn1Error
from pysnmp.proto import api, error, rfc1902, rfc1905
from pysnmp.proto.mpmod.rfc3412 import ScopedPDU, SNMPv3Message
from pysnmp.proto.secmod.rfc3414.service import UsmSecurityParameters
from rackwarden.drivers.snmp import SnmpPoller, SnmpTarget, parse_if_walk, usm
from rackwarden.drivers.snmp.ifmib import Oid
from rackwarden.drivers.snmp.snmprec import read_snmprec
from rackwarden.policies.facts import PortPoll

from tests.unit.test_snmp_fastpath import FIXTURES, RECORDINGS, same_facts, typed_walk, wall
from tests.unit.test_snmp_usm import (
    AUTH_SERVICES,
    PRIV_SERVICES,
    OracleKeys,
    oracle_encode,
    oracle_keys,
)

V2C = api.PROTOCOL_MODULES[api.SNMP_VERSION_2C]
T = TypeVar("T")
AUTH_PW, PRIV_PW = "auth-pass-123", "priv-pass-456"


@dataclass
class Seen:
    flags: int
    engine_id: bytes
    user: bytes
    boots: int
    port: int
    max_repetitions: int | None = None  # None: not a GETBULK the agent could read
    report: Oid | None = None


@dataclass
class V3Agent(asyncio.DatagramProtocol):
    """A USM GETBULK responder over one recorded walk, written with pysnmp's services."""

    walk: list[tuple[Oid, Any]]
    users: dict[bytes, tuple[str | None, str | None]]  # name -> (auth, priv) protocols
    engine_id: bytes = b"\x80\x00\x1f\x88\x04rw-test-agent"
    boots: int = 1
    clock_offset: float = 0.0  # the agent's engine time runs from this
    too_big_over: int | None = None
    indefinite: bool = False  # BER indefinite lengths everywhere (pyasn1 reads them)
    forge_first: bool = False  # before each answer, an unauthenticated and a bad-digest copy
    seen: list[Seen] = field(default_factory=list)
    transport: Any = None
    started: float = field(default_factory=time.monotonic)

    def engine_time(self) -> int:
        return int(time.monotonic() - self.started + self.clock_offset)

    def restart(self, *, new_engine_id: bytes | None = None) -> None:
        self.boots += 1
        self.started, self.clock_offset = time.monotonic(), 0.0
        if new_engine_id is not None:
            self.engine_id = new_engine_id

    def keys(self, user: bytes) -> OracleKeys:
        auth, priv = self.users[user]
        return oracle_keys(auth, AUTH_PW.encode(), priv, PRIV_PW.encode(), self.engine_id)

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            msg, _ = decoder.decode(data, asn1Spec=SNMPv3Message())
            params, _ = decoder.decode(bytes(msg["msgSecurityParameters"]),
                                       asn1Spec=UsmSecurityParameters())
        except PyAsn1Error:
            return
        flags = bytes(msg["msgGlobalData"]["msgFlags"])[0]
        msg_id = int(msg["msgGlobalData"]["msgID"])
        engine_id = bytes(params["msgAuthoritativeEngineId"])
        user = bytes(params["msgUserName"])
        seen = Seen(flags, engine_id, user, int(params["msgAuthoritativeEngineBoots"]), addr[1])
        self.seen.append(seen)

        def report(oid: Oid, level: int = 0, request_id: int = 0) -> None:
            seen.report = oid
            pdu = V2C.ReportPDU()
            V2C.apiPDU.set_defaults(pdu)
            V2C.apiPDU.set_request_id(pdu, request_id)
            V2C.apiPDU.set_varbinds(pdu, [(oid, rfc1902.Counter32(1))])
            self._send(oracle_encode(msg_id=msg_id, flags=level, engine_id=self.engine_id,
                                     boots=self.boots, time=self.engine_time(), user=user,
                                     keys=self.keys(user) if level else None, pdu=pdu), addr)

        if engine_id != self.engine_id:
            return report(usm.UNKNOWN_ENGINE_ID)
        if user not in self.users:
            return report(usm.UNKNOWN_USER_NAME)
        keys = self.keys(user)
        if flags & 3 != keys.flags:
            return report(usm.UNSUPPORTED_SEC_LEVEL)
        if flags & 1:
            try:
                AUTH_SERVICES[keys.auth].authenticate_incoming_message(
                    keys.auth_key, params["msgAuthenticationParameters"], data)
            except error.StatusInformation:
                return report(usm.WRONG_DIGEST)
            t = int(params["msgAuthoritativeEngineTime"])
            if seen.boots != self.boots or abs(t - self.engine_time()) > 150:
                return report(usm.NOT_IN_TIME_WINDOW, level=1)
        if flags & 2:
            plain = PRIV_SERVICES[keys.priv].decrypt_data(
                keys.priv_key, (seen.boots, int(params["msgAuthoritativeEngineTime"]),
                                params["msgPrivacyParameters"]), msg["msgData"]["encryptedPDU"])
            scoped, _ = decoder.decode(plain, asn1Spec=ScopedPDU())
        else:
            scoped = msg["msgData"]["plaintext"]
        pdu = scoped["data"].getComponent()
        req = [tuple(o) for o, _ in V2C.apiPDU.get_varbinds(pdu)]
        nr = int(V2C.apiBulkPDU.get_non_repeaters(pdu))
        mr = int(V2C.apiBulkPDU.get_max_repetitions(pdu))
        seen.max_repetitions = mr
        resp = V2C.apiPDU.get_response(pdu)
        if self.too_big_over is not None and nr + mr * (len(req) - nr) > self.too_big_over:
            V2C.apiPDU.set_error_status(resp, 1)
            V2C.apiPDU.set_varbinds(resp, [(o, rfc1902.Null("")) for o in req])
        else:
            V2C.apiPDU.set_varbinds(resp, self._bulk(req, nr, mr))
        answer = oracle_encode(msg_id=msg_id, flags=flags & 3, engine_id=self.engine_id,
                               boots=self.boots, time=self.engine_time(), user=user, keys=keys,
                               pdu=resp)
        if self.forge_first:
            forged = V2C.apiPDU.get_response(pdu)
            V2C.apiPDU.set_varbinds(forged, [((1, 3, 6, 1, 2, 1, 1, 3, 0),
                                              rfc1902.TimeTicks(1))])
            self._send(oracle_encode(msg_id=msg_id, flags=0, engine_id=self.engine_id,
                                     boots=self.boots, time=self.engine_time(), user=user,
                                     keys=None, pdu=forged), addr)
            bad = bytearray(answer)
            bad[-1] ^= 0x55  # the ciphertext or the PDU: the digest no longer matches
            self._send(bytes(bad), addr)
        self._send(answer, addr)

    def _send(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.indefinite:
            msg, _ = decoder.decode(data, asn1Spec=SNMPv3Message())
            data = encoder.encode(msg, defMode=False)  # the digest no longer matters here
        self.transport.sendto(data, addr)

    def _bulk(self, req: list[Oid], nr: int, mr: int) -> list[Any]:
        keys = [o for o, _ in self.walk]

        def after(oid: Oid) -> tuple[Oid, Any]:
            i = bisect.bisect_right(keys, oid)
            return self.walk[i] if i < len(self.walk) else (oid, rfc1905.endOfMibView)

        out = [after(o) for o in req[:nr]]
        last = list(req[nr:])
        for _ in range(mr if last else 0):
            for k, oid in enumerate(last):
                got = after(oid)
                out.append(got)
                last[k] = got[0]
        return out


async def with_agent(agent: V3Agent, body: Callable[[int], Awaitable[T]]) -> T:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: agent, local_addr=("127.0.0.1", 0))
    try:
        return await body(transport.get_extra_info("sockname")[1])
    finally:
        transport.close()


def target(port: int, auth: str | None = "sha", priv: str | None = "aes", **kw: Any) -> SnmpTarget:
    kw.setdefault("timeout_s", 1.0)
    kw.setdefault("user", "rw")
    return SnmpTarget("sw", "127.0.0.1", port, version="3", auth_protocol=auth or "sha",
                      auth_key=AUTH_PW if auth else None, priv_protocol=priv,
                      priv_key=PRIV_PW if priv else None, **kw)


def agent_for(path: Path, auth: str | None = "sha", priv: str | None = "aes",
              **kw: Any) -> V3Agent:
    return V3Agent(typed_walk(path), {b"rw": (auth, priv)}, **kw)


@pytest.mark.parametrize(("auth", "priv", "paths", "oracle"), [
    # Every recording through the fast path against what the recording says; pysnmp as the
    # oracle too for one per security level (its pyasn1 replies cost ~0.3 s a poll here; the
    # message-level equivalence is test_snmp_usm's property test).
    ("sha", "aes", RECORDINGS, False),
    ("sha", "aes", RECORDINGS[:1], True),
    ("md5", "des", RECORDINGS[1:2], True),
    ("sha512", "aes", RECORDINGS[2:3], True),
    ("sha224", None, RECORDINGS[3:4], True),
    (None, None, RECORDINGS[4:5], True),
])
def test_every_recording_polls_the_same_through_fast_v3_and_pysnmp(
        auth: str | None, priv: str | None, paths: list[Path], oracle: bool) -> None:
    agents = [agent_for(path, auth, priv) for path in paths]

    async def body() -> tuple[list[PortPoll], list[PortPoll], dict[str, int], dict[str, int]]:
        loop = asyncio.get_running_loop()
        endpoints = [await loop.create_datagram_endpoint(lambda a=a: a,
                                                         local_addr=("127.0.0.1", 0))
                     for a in agents]
        try:
            # The agents share this event loop, and pyasn1 takes ~0.1 s per reply: room.
            targets = [SnmpTarget(**{**target(t.get_extra_info("sockname")[1], auth, priv,
                                              timeout_s=5.0).__dict__, "name": p.stem})
                       for (t, _), p in zip(endpoints, paths, strict=True)]
            async with SnmpPoller(wall=wall, mono=time.monotonic, max_concurrency=2) as fast:
                got = await fast.poll_many(targets)
                stats, fallbacks = fast.fast_v3_path_stats(), fast.fast_path_fallbacks()
            if not oracle:
                return got, got, stats, fallbacks
            async with SnmpPoller(wall=wall, mono=time.monotonic, fast_v3=False,
                                  max_concurrency=2) as slow:
                return got, await slow.poll_many(targets), stats, fallbacks
        finally:
            for t, _ in endpoints:
                t.close()

    fast, slow, stats, fallbacks = asyncio.run(body())
    assert fallbacks == {} and stats["discoveries"] == len(paths)
    for path, agent, f, s in zip(paths, agents, fast, slow, strict=True):
        assert f.error != "timeout" and s.error != "timeout", (f.error_detail, s.error_detail)
        same_facts(f, s)
        want = parse_if_walk(read_snmprec(path))
        assert dict(f.ports) == dict(want.ports), path.name
        assert f.error == ("partial" if want.problems else None), path.name
        # Both paths were on the wire, at the user's security level, from different sockets.
        levels = {x.flags & 3 for x in agent.seen if x.max_repetitions is not None}
        assert levels == {(1 if auth else 0) | (2 if priv else 0)}
        assert len({x.port for x in agent.seen}) == (2 if oracle else 1)


def test_discovery_once_then_one_round_per_poll() -> None:
    agent = agent_for(FIXTURES / "c64reset-t1.snmprec")  # 50 ifIndexes

    async def body(port: int) -> dict[str, int]:
        async with SnmpPoller(wall=wall, mono=time.monotonic) as poller:
            for _ in range(3):
                poll = await poller.poll(target(port))
                assert poll.error is None and len(poll.ports) == 50
            return poller.fast_v3_path_stats()

    stats = asyncio.run(with_agent(agent, body))
    assert stats == {"requests": 5, "unmatched_replies": 0, "icmp_errors": 0, "discoveries": 1,
                     "resyncs": 0}
    discovery, *bulks = agent.seen
    assert (discovery.engine_id, discovery.user, discovery.report) == (
        b"", b"", usm.UNKNOWN_ENGINE_ID)
    # The configured 50, the overshoot round, then one sized round per poll: 50 rows + the end.
    assert [s.max_repetitions for s in bulks] == [50, 50, 51, 51]


def test_too_big_halves_max_repetitions_on_v3_too() -> None:
    path = FIXTURES / "discont-t1.snmprec"
    agent = agent_for(path, too_big_over=150)

    async def body(port: int) -> PortPoll:
        async with SnmpPoller(wall=wall, mono=time.monotonic) as poller:
            return await poller.poll(target(port))

    poll = asyncio.run(with_agent(agent, body))
    assert poll.error is None and dict(poll.ports) == dict(parse_if_walk(read_snmprec(path)).ports)
    asked = [s.max_repetitions for s in agent.seen if s.max_repetitions is not None]
    assert asked[:3] == [50, 25, 12]


@pytest.mark.parametrize("new_engine", [False, True], ids=["boots-move-on", "new-engine-id"])
def test_an_agent_restart_resyncs_and_the_poll_succeeds(new_engine: bool) -> None:
    path = FIXTURES / "c64reset-t1.snmprec"
    agent = agent_for(path, clock_offset=5000.0)

    async def body(port: int) -> tuple[PortPoll, PortPoll, dict[str, int]]:
        async with SnmpPoller(wall=wall, mono=time.monotonic) as poller:
            first = await poller.poll(target(port))
            agent.restart(new_engine_id=b"\x80\x00\x1f\x88\x04rw-reborn" if new_engine else None)
            second = await poller.poll(target(port))
            return first, second, poller.fast_v3_path_stats()

    first, second, stats = asyncio.run(with_agent(agent, body))
    assert first.error is None and second.error is None
    assert dict(second.ports) == dict(parse_if_walk(read_snmprec(path)).ports)
    assert stats["resyncs"] == 1
    assert stats["discoveries"] == (2 if new_engine else 1)
    reports = [s.report for s in agent.seen if s.report is not None]
    assert reports[-1] == usm.UNKNOWN_ENGINE_ID if new_engine else usm.NOT_IN_TIME_WINDOW
    # The retry carried the agent's new boots.
    assert agent.seen[-1].boots == agent.boots == 2 and agent.seen[-1].report is None


@pytest.mark.parametrize(("kw", "word"), [
    ({"auth_key": "not-the-auth-key"}, "digest"),
    ({"user": "nobody"}, "user"),
    ({"priv_key": None}, "security level"),
])
def test_refusals_read_as_the_pysnmp_path_reads_them(kw: dict[str, Any], word: str) -> None:
    agent = agent_for(FIXTURES / "c64reset-t1.snmprec")

    async def body(port: int) -> tuple[PortPoll, PortPoll, dict[str, int]]:
        t = target(port, timeout_s=0.5, retries=0)
        t = SnmpTarget(**{**t.__dict__, **kw})
        async with SnmpPoller(wall=wall, mono=time.monotonic) as fast:
            got = await fast.poll(t)
            fallbacks = fast.fast_path_fallbacks()
        async with SnmpPoller(wall=wall, mono=time.monotonic, fast_v3=False) as slow:
            return got, await slow.poll(t), fallbacks

    fast, slow, fallbacks = asyncio.run(with_agent(agent, body))
    assert fast.error == "auth" and word in fast.error_detail.lower()
    assert (fast.error, fast.error_detail, dict(fast.ports)) == (
        slow.error, slow.error_detail, dict(slow.ports))
    assert fallbacks == {}


def test_forged_and_tampered_replies_are_dropped() -> None:
    path = FIXTURES / "uptimewrap-t1.snmprec"
    agent = agent_for(path, forge_first=True)

    async def body(port: int) -> tuple[PortPoll, dict[str, int]]:
        async with SnmpPoller(wall=wall, mono=time.monotonic) as poller:
            return await poller.poll(target(port)), poller.fast_v3_path_stats()

    poll, stats = asyncio.run(with_agent(agent, body))
    want = parse_if_walk(read_snmprec(path))
    assert poll.error is None and poll.sys_uptime_ticks == want.sys_uptime_ticks != 1
    assert dict(poll.ports) == dict(want.ports)
    rounds = sum(1 for s in agent.seen if s.max_repetitions is not None)
    assert stats["unmatched_replies"] == 2 * rounds  # one forged, one tampered per answer


def test_a_privacy_protocol_usm_lacks_goes_to_pysnmp_without_a_fallback() -> None:
    agent = agent_for(FIXTURES / "c64reset-t1.snmprec", "sha", "aes")

    async def body(port: int) -> tuple[PortPoll, dict[str, int], dict[str, int]]:
        t = target(port, "sha", "3des", timeout_s=0.3, retries=0)
        async with SnmpPoller(wall=wall, mono=time.monotonic) as poller:
            return await poller.poll(t), poller.fast_v3_path_stats(), poller.fast_path_fallbacks()

    poll, stats, fallbacks = asyncio.run(with_agent(agent, body))
    assert stats["requests"] == 0 and fallbacks == {}
    assert poll.error in ("auth", "timeout")  # pysnmp's 3DES against an AES user


def test_an_agent_the_codec_refuses_falls_back_to_pysnmp_and_is_counted(
        caplog: pytest.LogCaptureFixture) -> None:
    path = FIXTURES / "c64reset-t1.snmprec"
    # noAuthNoPriv: re-encoding an authenticated message would break its digest.
    agent = agent_for(path, None, None, indefinite=True)

    async def body(port: int) -> tuple[list[PortPoll], dict[str, int], dict[str, str]]:
        async with SnmpPoller(wall=wall, mono=time.monotonic) as poller:
            polls = [await poller.poll(target(port, None, None, timeout_s=0.5))
                     for _ in range(2)]
            return polls, poller.fast_path_fallbacks(), poller.fast_path_fallback_reasons()

    with caplog.at_level(logging.WARNING, logger="rackwarden.drivers.snmp.poller"):
        polls, fallbacks, reasons = asyncio.run(with_agent(agent, body))
    want = parse_if_walk(read_snmprec(path))
    for poll in polls:
        assert poll.error is None and dict(poll.ports) == dict(want.ports)
    assert fallbacks == {"sw": 2} and "indefinite length" in reasons["sw"]
    assert len(caplog.records) == 1 and "fast v3 path" in caplog.records[0].getMessage()


def test_the_fast_v3_flag_follows_fast_v2c_unless_given() -> None:
    async def body() -> list[bool]:
        out = []
        for kw in ({}, {"fast_v2c": False}, {"fast_v2c": False, "fast_v3": True},
                   {"fast_v3": False}):
            async with SnmpPoller(wall=wall, mono=time.monotonic, **kw) as poller:
                out.append(bool(poller.fast_v3_path_stats()))
        return out

    assert asyncio.run(body()) == [True, False, True, False]
