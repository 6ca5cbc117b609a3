"""The fast v2c path (fastv2c.py + ber.py) against the pysnmp path, on one in-process agent.

The agent is written with pysnmp's own message classes and pyasn1's encoder, so nothing of the
fast path's codec is on the agent's side: every recorded walk polled both ways must give the
same PortPoll. The agent counts what it is asked, so the tests can assert what went on the wire.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyasn1.codec.ber import decoder, encoder
from pyasn1.error import PyAsn1Error
from pysnmp.proto import api, rfc1902, rfc1905
from rackwarden.drivers.snmp import SnmpPoller, SnmpTarget, parse_if_walk
from rackwarden.drivers.snmp.ifmib import (
    ALL_COLUMNS,
    IF_COUNTER_DISCONTINUITY_TIME,
    IF_HC_IN_OCTETS,
    IF_HC_OUT_OCTETS,
    IF_HIGH_SPEED,
    IF_NAME,
    Absent,
    Oid,
    SnmpValue,
    VarBind,
    indexes_without_hc,
)
from rackwarden.drivers.snmp.snmprec import parse_oid, read_snmprec
from rackwarden.policies.facts import PortPoll

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "snmprec"
RECORDINGS = sorted(FIXTURES.glob("*.snmprec"))
V2C = api.PROTOCOL_MODULES[api.SNMP_VERSION_2C]
T = TypeVar("T")

_TYPES: dict[int, Callable[[str], Any]] = {
    2: lambda v: rfc1902.Integer32(int(v)),
    4: lambda v: rfc1902.OctetString(v.encode("latin-1")),
    5: lambda v: rfc1902.Null(""),
    6: lambda v: rfc1902.ObjectIdentifier(parse_oid(v)),
    64: lambda v: rfc1902.IpAddress(v),
    65: lambda v: rfc1902.Counter32(int(v)),
    66: lambda v: rfc1902.Gauge32(int(v)),
    67: lambda v: rfc1902.TimeTicks(int(v)),
    68: lambda v: rfc1902.Opaque(v.encode("latin-1")),
    70: lambda v: rfc1902.Counter64(int(v)),
    128: lambda v: rfc1905.noSuchObject,
    129: lambda v: rfc1905.noSuchInstance,
    130: lambda v: rfc1905.endOfMibView,
}


def typed_walk(path: Path) -> list[tuple[Oid, Any]]:
    """An .snmprec file as pysnmp-typed varbinds, sorted (what snmpsim would serve)."""
    out = []
    for line in path.read_text(encoding="latin-1").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        oid, tag, value = line.split("|", 2)
        if tag.endswith("x"):
            tag, value = tag[:-1], bytes.fromhex(value).decode("latin-1")
        out.append((parse_oid(oid), _TYPES[int(tag)](value)))
    return sorted(out, key=lambda r: r[0])


@dataclass
class Request:
    community: str
    port: int  # the poller's source port: tells the fast socket from pysnmp's
    non_repeaters: int
    max_repetitions: int
    width: int


@dataclass
class Agent(asyncio.DatagramProtocol):
    """A v2c GETBULK responder over recorded walks, one community per walk."""

    walks: dict[str, list[tuple[Oid, Any]]]
    max_varbinds: int | None = None  # cut replies here (snmpsim cuts at 64)
    too_big_over: int | None = None  # answer tooBig when more varbinds are asked for
    mute: set[str] = field(default_factory=set)
    indefinite: set[str] = field(default_factory=set)  # BER indefinite lengths (pyasn1 reads)
    status: dict[str, int] = field(default_factory=dict)  # community -> error-status
    decoys: bool = False  # send two wrong replies (request-id, community) before each answer
    requests: list[Request] = field(default_factory=list)
    transport: Any = None
    reply_via: Any = None  # another socket to answer from (a multi-homed agent)

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            msg, _ = decoder.decode(data, asn1Spec=V2C.Message())
        except PyAsn1Error:
            return  # not v2c (a v3 discovery): a v2c-only agent drops it
        community = bytes(V2C.apiMessage.get_community(msg)).decode()
        pdu = V2C.apiMessage.get_pdu(msg)
        req = [tuple(o) for o, _ in V2C.apiPDU.get_varbinds(pdu)]
        nr = int(V2C.apiBulkPDU.get_non_repeaters(pdu))
        mr = int(V2C.apiBulkPDU.get_max_repetitions(pdu))
        self.requests.append(Request(community, addr[1], nr, mr, len(req) - nr))
        if community in self.mute or community not in self.walks:
            return
        resp = V2C.apiPDU.get_response(pdu)
        if community in self.status:
            V2C.apiPDU.set_error_status(resp, self.status[community])
            V2C.apiPDU.set_error_index(resp, 1)
            V2C.apiPDU.set_varbinds(resp, [(o, rfc1902.Null("")) for o in req])
        elif self.too_big_over is not None and nr + mr * (len(req) - nr) > self.too_big_over:
            V2C.apiPDU.set_error_status(resp, 1)
            V2C.apiPDU.set_varbinds(resp, [(o, rfc1902.Null("")) for o in req])
        else:
            V2C.apiPDU.set_varbinds(resp, self._bulk(self.walks[community], req, nr, mr))
        self._send(msg, resp, community, addr)

    def _bulk(self, walk: list[tuple[Oid, Any]], req: list[Oid], nr: int, mr: int) -> list[Any]:
        keys = [o for o, _ in walk]

        def after(oid: Oid) -> tuple[Oid, Any]:
            i = bisect.bisect_right(keys, oid)
            return walk[i] if i < len(walk) else (oid, rfc1905.endOfMibView)

        out = [after(o) for o in req[:nr]]
        last = list(req[nr:])
        for _ in range(mr if last else 0):
            for k, oid in enumerate(last):
                got = after(oid)
                out.append(got)
                last[k] = got[0]
        return out[: self.max_varbinds] if self.max_varbinds else out

    def _send(self, msg: Any, resp: Any, community: str, addr: tuple[str, int]) -> None:
        if self.decoys:
            rid = int(V2C.apiPDU.get_request_id(resp))
            wrong = V2C.apiPDU.get_response(resp)
            V2C.apiPDU.set_varbinds(wrong, [((1, 3, 6, 1, 2, 1, 1, 3, 0),
                                             rfc1902.TimeTicks(1))])
            V2C.apiPDU.set_request_id(wrong, rid + 1)
            self._sendto(community, wrong, addr)
            V2C.apiPDU.set_request_id(wrong, rid)
            self._sendto(community + "-not", wrong, addr)
        self._sendto(community, resp, addr)

    def _sendto(self, community: str, pdu: Any, addr: tuple[str, int]) -> None:
        out = V2C.Message()
        V2C.apiMessage.set_defaults(out)
        V2C.apiMessage.set_community(out, community)
        V2C.apiMessage.set_pdu(out, pdu)
        kw = {"defMode": False} if community in self.indefinite else {}
        (self.reply_via or self.transport).sendto(encoder.encode(out, **kw), addr)


def wall() -> datetime:
    return datetime.now(UTC)


async def with_agent(agent: Agent, body: Callable[[int], Awaitable[T]]) -> T:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: agent, local_addr=("127.0.0.1", 0))
    try:
        return await body(transport.get_extra_info("sockname")[1])
    finally:
        transport.close()


def target(name: str, port: int, **kw: Any) -> SnmpTarget:
    kw.setdefault("timeout_s", 2.0)
    return SnmpTarget(name, "127.0.0.1", port, community=name, **kw)


def same_facts(a: PortPoll, b: PortPoll) -> None:
    assert dict(a.ports) == dict(b.ports)
    assert (a.sys_uptime_ticks, a.engine_boots, a.error, a.error_detail) == (
        b.sys_uptime_ticks, b.engine_boots, b.error, b.error_detail)


def poll_both(agent: Agent, names: list[str], **kw: Any) -> tuple[list[PortPoll], list[PortPoll],
                                                                   dict[str, int]]:
    async def body(port: int) -> tuple[list[PortPoll], list[PortPoll], dict[str, int]]:
        targets = [target(n, port, **kw) for n in names]
        async with SnmpPoller(wall=wall, mono=time.monotonic) as fast:
            got_fast = await fast.poll_many(targets)
            fallbacks = fast.fast_path_fallbacks()
        async with SnmpPoller(wall=wall, mono=time.monotonic, fast_v2c=False) as slow:
            got_slow = await slow.poll_many(targets)
        return got_fast, got_slow, fallbacks

    return asyncio.run(with_agent(agent, body))


@pytest.mark.parametrize(
    ("agent_kw", "max_repetitions"),
    [({}, 50), ({"max_varbinds": 64}, 50), ({}, 3)],
    ids=["whole-replies", "replies-cut-at-64-mid-row", "3-repetitions"],
)
def test_every_recording_polls_the_same_through_the_fast_path_and_pysnmp(
    agent_kw: dict[str, Any], max_repetitions: int
) -> None:
    agent = Agent({p.stem: typed_walk(p) for p in RECORDINGS}, **agent_kw)
    names = [p.stem for p in RECORDINGS]
    fast, slow, fallbacks = poll_both(agent, names, max_repetitions=max_repetitions)
    assert fallbacks == {}
    for name, f, s in zip(names, fast, slow, strict=True):
        same_facts(f, s)
        want = parse_if_walk(read_snmprec(FIXTURES / f"{name}.snmprec"))
        assert dict(f.ports) == dict(want.ports), name
        assert f.error == ("partial" if want.problems else None), name
    # Both pollers were on the wire, from different sockets.
    assert len({r.port for r in agent.requests}) == 2


def test_the_next_poll_is_one_round_sized_from_the_last_row_count() -> None:
    path = FIXTURES / "c64reset-t1.snmprec"  # 50 ifIndexes
    agent = Agent({"sw": typed_walk(path)})

    async def body(port: int) -> list[list[Request]]:
        rounds = []
        async with SnmpPoller(wall=wall, mono=time.monotonic) as poller:
            for _ in range(3):
                before = len(agent.requests)
                poll = await poller.poll(target("sw", port))
                assert poll.error is None and len(poll.ports) == 50
                rounds.append(agent.requests[before:])
            assert poller.fast_path_stats() == {
                "requests": 4, "unmatched_replies": 0, "icmp_errors": 0}
        return rounds

    first, second, third = asyncio.run(with_agent(agent, body))
    assert [r.max_repetitions for r in first] == [50, 50]  # the configured value, then overshoot
    assert [(r.max_repetitions, r.width) for r in second] == [(51, 7)]  # 50 rows + the end
    assert [(r.max_repetitions, r.width) for r in third] == [(51, 7)]


def test_too_big_halves_max_repetitions_and_the_switch_keeps_the_smaller_value() -> None:
    path = FIXTURES / "discont-t1.snmprec"
    agent = Agent({"sw": typed_walk(path)}, too_big_over=150)

    async def body(port: int) -> list[PortPoll]:
        async with SnmpPoller(wall=wall, mono=time.monotonic) as poller:
            return [await poller.poll(target("sw", port)) for _ in range(2)]

    polls = asyncio.run(with_agent(agent, body))
    want = parse_if_walk(read_snmprec(path))
    for poll in polls:
        assert poll.error is None and dict(poll.ports) == dict(want.ports)
    asked = [r.max_repetitions for r in agent.requests]
    assert asked[:3] == [50, 25, 12]  # 12 * 7 + 1 = 85 varbinds fit under 150
    assert max(asked[3:]) == 12  # the second poll starts from the remembered ceiling


def test_an_agent_the_codec_refuses_is_polled_through_pysnmp_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = FIXTURES / "c64reset-t1.snmprec"
    agent = Agent({"odd": typed_walk(path), "plain": typed_walk(path)}, indefinite={"odd"})

    async def body(port: int) -> tuple[list[list[PortPoll]], dict[str, int], dict[str, str]]:
        out = []
        async with SnmpPoller(wall=wall, mono=time.monotonic) as poller:
            for _ in range(2):
                # Polled together: the undecodable reply cannot say which request it answers.
                out.append(await poller.poll_many([target("odd", port, timeout_s=0.5),
                                                   target("plain", port, timeout_s=0.5)]))
            return out, poller.fast_path_fallbacks(), poller.fast_path_fallback_reasons()

    with caplog.at_level(logging.WARNING, logger="rackwarden.drivers.snmp.poller"):
        rounds, fallbacks, reasons = asyncio.run(with_agent(agent, body))
    want = parse_if_walk(read_snmprec(path))
    for odd, plain in rounds:
        assert odd.error is None and dict(odd.ports) == dict(want.ports)
        same_facts(odd, plain)
    assert fallbacks == {"odd": 2}
    assert "indefinite length" in reasons["odd"]
    assert [r.getMessage() for r in caplog.records].count(
        caplog.records[0].getMessage()) == 1 and len(caplog.records) == 1
    # "plain" stayed on the fast socket; "odd" tried it (a try and its retry), then pysnmp's.
    (fast_port,) = {r.port for r in agent.requests if r.community == "plain"}
    odd_ports = [r.port for r in agent.requests if r.community == "odd"]
    assert odd_ports[:2] == [fast_port, fast_port] and fast_port not in odd_ports[2:]
    assert len(odd_ports) > 2


def test_a_silent_agent_times_out_after_each_try_and_stays_on_the_fast_path() -> None:
    agent = Agent({"quiet": []}, mute={"quiet"})

    async def body(port: int) -> tuple[PortPoll, dict[str, int]]:
        async with SnmpPoller(wall=wall, mono=time.monotonic) as poller:
            poll = await poller.poll(target("quiet", port, timeout_s=0.2, retries=1))
            return poll, poller.fast_path_fallbacks()

    poll, fallbacks = asyncio.run(with_agent(agent, body))
    assert (poll.error, poll.error_detail, dict(poll.ports)) == (
        "timeout", "no response before timeout", {})
    assert poll.duration_s >= 0.38
    assert len(agent.requests) == 2 and fallbacks == {}


@pytest.mark.parametrize("status", [5, 16])  # genErr; authorizationError
def test_an_error_status_reads_as_the_pysnmp_path_reads_it(status: int) -> None:
    agent = Agent({"sw": typed_walk(FIXTURES / "c64reset-t1.snmprec")}, status={"sw": status})
    fast, slow, fallbacks = poll_both(agent, ["sw"])
    assert fallbacks == {}
    assert (fast[0].error, fast[0].error_detail) == (slow[0].error, slow[0].error_detail)
    assert fast[0].error == ("auth" if status == 16 else "protocol")
    assert fast[0].error_detail.startswith("agent replied ")


def test_replies_with_another_request_id_or_community_are_not_taken() -> None:
    path = FIXTURES / "uptimewrap-t1.snmprec"
    agent = Agent({"sw": typed_walk(path)}, decoys=True)
    fast, slow, fallbacks = poll_both(agent, ["sw"])
    want = parse_if_walk(read_snmprec(path))
    assert fast[0].sys_uptime_ticks == want.sys_uptime_ticks != 1  # a decoy says 1
    assert dict(fast[0].ports) == dict(want.ports)
    same_facts(fast[0], slow[0])
    assert fallbacks == {}


def test_a_v3_poll_of_a_v2c_only_agent_times_out_without_counting_a_fallback() -> None:
    agent = Agent({})

    async def body(port: int) -> tuple[PortPoll, dict[str, int]]:
        async with SnmpPoller(wall=wall, mono=time.monotonic) as poller:
            t = SnmpTarget("v3", "127.0.0.1", port, version="3", user="u", auth_key="k" * 12,
                           priv_key="p" * 12, timeout_s=0.2, retries=0)
            return await poller.poll(t), poller.fast_path_fallbacks()

    poll, fallbacks = asyncio.run(with_agent(agent, body))
    # The v3 path's engine discovery is a v3 message this v2c agent cannot decode: nothing
    # arrives as a v2c request, the poll times out, and a timeout is not a fast-path fallback.
    assert poll.error == "timeout" and fallbacks == {} and agent.requests == []


def test_replies_from_another_address_are_not_taken_and_the_switch_falls_back() -> None:
    path = FIXTURES / "c64reset-t1.snmprec"
    agent = Agent({"sw": typed_walk(path)})

    async def body(port: int) -> tuple[PortPoll, PortPoll, dict[str, str]]:
        loop = asyncio.get_running_loop()
        other, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
        agent.reply_via = other
        try:
            t = target("sw", port, timeout_s=0.3, retries=0)
            async with SnmpPoller(wall=wall, mono=time.monotonic) as fast:
                got = await fast.poll(t)
                reasons = fast.fast_path_fallback_reasons()
            async with SnmpPoller(wall=wall, mono=time.monotonic, fast_v2c=False) as slow:
                return got, await slow.poll(t), reasons
        finally:
            other.close()

    fast, slow, reasons = asyncio.run(with_agent(agent, body))
    # Whatever pysnmp makes of such an agent is what the poll says; the fast path took no
    # reply from an address it did not ask.
    assert (fast.error, fast.error_detail, dict(fast.ports)) == (
        slow.error, slow.error_detail, dict(slow.ports))
    assert reasons["sw"].startswith("reply from 127.0.0.1:")


@settings(max_examples=200)
@given(st.sampled_from(RECORDINGS), st.data())
def test_indexes_without_hc_from_the_split_columns(path: Path, data: st.DataObject) -> None:
    varbinds = read_snmprec(path)
    # Any subset, in any order, with repeats: the walk's varbinds as a faulty agent gives them.
    picked = data.draw(st.lists(st.sampled_from(varbinds), max_size=60))
    for vbs in (varbinds, picked):
        names = {o[-1] for o, _ in vbs if o[:-1] == IF_NAME}
        hc = {o[-1] for o, _ in vbs if o[:-1] in (IF_HC_IN_OCTETS, IF_HC_OUT_OCTETS)}
        assert indexes_without_hc(vbs) == names - hc


# Values an agent (or a faulty one) can put where a port's number or name belongs.
_ODD_VALUES: list[SnmpValue] = [
    0, 1, 2, 7, 8, -1, 2**32, 2**64 - 1, True, False, b"", b"gi9", b"x\x00", "str", (1, 3, 6),
    *Absent,
]
_WALKS = {p.stem: read_snmprec(p) for p in RECORDINGS}


@settings(max_examples=300)
@given(st.sampled_from(sorted(_WALKS)), st.integers(0, 2**32), st.data())
def test_the_quick_port_reading_is_the_exact_reading(
    name: str, seed: int, data: st.DataObject
) -> None:
    """parse_if_walk reads a well-formed port in one step and anything else through _Table.port:
    on recorded walks, with values replaced, rows lost or repeated and optional columns dropped,
    both readings give the same ports and the same problems in the same order."""
    varbinds, rnd = _WALKS[name], random.Random(seed)
    drop = data.draw(st.sets(st.sampled_from([IF_HIGH_SPEED, IF_COUNTER_DISCONTINUITY_TIME,
                                              IF_HC_OUT_OCTETS])))
    vbs: list[VarBind] = [(o, v) for o, v in varbinds if o[:-1] not in drop]
    # The faults go where they matter: into the columns a port is read from.
    ours = [k for k, (o, _) in enumerate(vbs) if o[:-1] in ALL_COLUMNS]
    for k in rnd.sample(ours, min(len(ours), rnd.randint(0, 40))):
        vbs[k] = (vbs[k][0], rnd.choice(_ODD_VALUES))
    loss = data.draw(st.sampled_from([0.0, 0.02, 0.3]))
    vbs = [vb for vb in vbs if rnd.random() >= loss]
    vbs += rnd.sample(varbinds, data.draw(st.integers(0, 5)))  # answered twice
    assert parse_if_walk(vbs) == parse_if_walk(vbs, exact=True)
    assert parse_if_walk(varbinds) == parse_if_walk(varbinds, exact=True)
