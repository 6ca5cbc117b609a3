"""The recvmmsg receive loop gives exactly the recvfrom loop's answers.

The same datagrams (regular, counter samples, expanded, malformed, cut, unaligned, empty, from
senders not allowed) go over real loopback UDP to a collector on each receive loop, IPv4 and
IPv6 (dual-stack) sockets, and every counter, every column row and ref, the counter samples
handed on and the raw ring's contents must be equal. Beside that: decode_batch_columns_in
against decode_batch_columns on datagrams lying in a buffer among stale bytes, a datagram cut
at the receive size (MSG_TRUNC), RawRing.extend_from against extend, the page release of
large slots, stop() waking the blocked recvmmsg, and the receive option's checks.
"""

from __future__ import annotations

import asyncio
import mmap
import random
import socket
import struct
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from rackwarden.drivers.sflow import collector as collector_mod
from rackwarden.drivers.sflow import mmsg
from rackwarden.drivers.sflow.batch import (
    ColumnBatch,
    decode_batch_columns,
    decode_batch_columns_in,
    decode_batch_columns_in_unguarded,
    decode_batch_columns_unguarded,
)
from rackwarden.drivers.sflow.collector import SflowCollector
from rackwarden.drivers.sflow.decoder import Sample
from rackwarden.drivers.sflow.rawring import RawRing
from rackwarden.policies.flowcols import SampleColumns

from tests.unit.test_sflow_batch import FIXTURE_NAMES, _Clock, _counters, _regular
from tests.unit.test_sflow_decoder import AT, NOW, _valid_datagrams, load

pytestmark = pytest.mark.skipif(not mmsg.available(), reason="recvmmsg is Linux only")

ALLOWED = ["127.0.0.1", "::1"]
REJECTED = "127.0.0.2"  # another loopback address, not allowed


def _agent(d: bytes, agent: int, seq: int) -> bytes:
    """A regular datagram re-addressed: another agent, another datagram sequence number."""
    return d[:8] + struct.pack("!I", agent) + d[12:16] + struct.pack("!I", seq) + d[20:]


def corpus() -> list[bytes]:
    """Every shape: the bulk read's layout from several agents, counter and expanded samples,
    every recorded fixture (malformed ones too), cut, unaligned and empty datagrams."""
    rnd = random.Random(7)
    regular = _regular()
    out: list[bytes] = []
    for seq in range(1, 25):
        for a in range(3):
            out.append(_agent(regular[seq % len(regular)], 0xC0000201 + a, seq))
    out += _valid_datagrams() * 3
    out += [load(name) for name in FIXTURE_NAMES]
    out += [regular[0][:n] for n in (0, 3, 27, 28, 100, 101, len(regular[0]) - 4)]
    out += [regular[1] + b"\0\0"]  # trailing bytes, unaligned
    out += [bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(4, 400))) for _ in range(10)]
    rnd.shuffle(out)
    return out


def _columns(got: Sequence[SampleColumns]) -> list[tuple[dict[str, Any], int]]:
    return [(cols.row(j), int(cols.ref[j])) for cols in got for j in range(len(cols))]


def _run(receive: str, bind: str, phases: list[list[tuple[str, bytes]]]) -> dict[str, Any]:
    """Send each phase's (source address, datagram) in order, wait until the collector has
    counted them all, then the next phase; everything the collector answered."""
    cols: list[SampleColumns] = []
    counters: list[Sample] = []

    async def run() -> SflowCollector:
        c = SflowCollector(allowed_agents=ALLOWED, on_samples=counters.extend, clock=_Clock(),
                           bind=bind, port=0, rcvbuf_bytes=8 << 20, on_columns=cols.append,
                           batch_wait_s=0.0, receive=receive)  # type: ignore[arg-type]
        await c.start()
        assert c.bound_port is not None
        senders: dict[str, socket.socket] = {}
        sent = 0
        try:
            for phase in phases:
                for source, data in phase:
                    if source not in senders:
                        fam = socket.AF_INET6 if ":" in source else socket.AF_INET
                        senders[source] = socket.socket(fam, socket.SOCK_DGRAM)
                        senders[source].bind((source, 0))
                    to = "::1" if ":" in source else "127.0.0.1"
                    senders[source].sendto(data, (to, c.bound_port))
                sent += len(phase)
                deadline = time.monotonic() + 30
                while (c.datagrams_total + c.rejected_total < sent
                       and time.monotonic() < deadline):
                    await asyncio.sleep(0.005)
        finally:
            for s in senders.values():
                s.close()
            thread = c._thread
            c.stop()
        assert thread is not None and not thread.is_alive()
        return c

    c = asyncio.run(run())
    ring = c.raw_ring
    assert ring is not None
    return {
        "loop": c.receive_loop,
        "counters": _counters(c),
        "columns": _columns(cols),
        "counter_samples": counters,
        "ring": [ring.get(i) for i in range(ring.first, ring.next)],
        "ring_numbers": (ring.first, ring.next),
    }


def _phases(sources: list[str]) -> list[list[tuple[str, bytes]]]:
    rnd = random.Random(11)
    # First stale bytes in the slots (from a sender not allowed, in a batch of their own), so
    # the recvmmsg loop reads the real datagrams over old data, not over zeros; two of them
    # large enough to have their pages given back.
    stale = [(REJECTED, bytes(rnd.getrandbits(8) for _ in range(n)))
             for n in [8000] * 30 + [20000] * 2]
    data = corpus()
    mixed = [(sources[i % len(sources)], d) for i, d in enumerate(data)]
    mixed += [(REJECTED, d) for d in data[:9]]
    rnd.shuffle(mixed)
    return [stale, mixed, mixed[:40]]  # the last: a duplicate stream for the sequence trackers


@pytest.mark.parametrize("bind,sources", [
    ("127.0.0.1", ["127.0.0.1"]),
    ("::", ["127.0.0.1", "::1"]),  # dual-stack: IPv4 senders arrive as ::ffff:127.0.0.1
])
def test_both_receive_loops_give_the_same_answers(bind: str, sources: list[str]) -> None:
    phases = _phases(sources)
    old = _run("recvfrom", bind, phases)
    new = _run("mmsg", bind, phases)
    assert (old["loop"], new["loop"]) == ("recvfrom", "recvmmsg")
    sent = sum(map(len, phases))
    assert old["counters"]["datagrams"] + old["counters"]["rejected"] == sent
    assert old["counters"]["rejected"] == len(phases[0]) + 9 + sum(
        1 for s, _ in phases[2] if s == REJECTED)
    assert old["counters"]["errors"] and old["counters"]["flows"] > 0  # malformed ones counted
    assert old["counters"]["counters"] > 0 and old["counter_samples"]
    assert len(old["counters"]["by_agent"]) == len(sources)
    for key in ("counters", "columns", "counter_samples", "ring", "ring_numbers"):
        assert new[key] == old[key], key


def test_a_datagram_cut_at_the_receive_size_is_read_as_recvfrom_reads_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Bigger than the receive size: both loops keep the first MAX_DATAGRAM bytes (recvmmsg
    flags it MSG_TRUNC) and the decoder reports the cut datagram the same way."""
    monkeypatch.setattr(collector_mod, "MAX_DATAGRAM", 600)
    regular = _regular()
    assert len(regular[0]) > 600
    phases = [[("127.0.0.1", regular[0]), ("127.0.0.1", load("valid_flow_and_counter")),
               ("127.0.0.1", regular[1])]]
    old = _run("recvfrom", "127.0.0.1", phases)
    new = _run("mmsg", "127.0.0.1", phases)
    assert [len(e[0]) for e in old["ring"]] == [600, len(load("valid_flow_and_counter")), 600]
    assert old["counters"]["errors"]
    for key in ("counters", "columns", "counter_samples", "ring", "ring_numbers"):
        assert new[key] == old[key], key


def test_receiver_reports_cut_datagrams_and_senders() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx_sock, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx2:
        rx_sock.bind(("127.0.0.1", 0))
        tx2.bind((REJECTED, 0))
        port = rx_sock.getsockname()[1]
        rx = mmsg.MmsgReceiver(rx_sock.fileno(), socket.AF_INET, 8, 100)
        payloads = [bytes(range(200)), b"abcd", bytes(100)]
        tx.sendto(payloads[0], ("127.0.0.1", port))
        tx2.sendto(payloads[1], ("127.0.0.1", port))
        tx.sendto(payloads[2], ("127.0.0.1", port))
        n = rx.receive(0, True)
        while n < 3:
            n += rx.receive(n, False)
        assert rx.lengths(n).tolist() == [100, 4, 100]
        assert rx.truncated(n).tolist() == [True, False, False]
        assert [bytes(rx.buffer[int(a):int(a) + int(ln)]) for a, ln in
                zip(rx.starts[:n], rx.lengths(n), strict=True)] == [
            payloads[0][:100], payloads[1], payloads[2]]
        assert rx.senders(n)[0] == ["127.0.0.1", REJECTED]
        assert rx.senders(n)[1].tolist() == [0, 1, 0]
        assert rx.receive(0, False) == 0  # nothing waiting: no block


def test_large_slots_give_their_pages_back() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx_sock, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        rx_sock.bind(("127.0.0.1", 0))
        port = rx_sock.getsockname()[1]
        rx = mmsg.MmsgReceiver(rx_sock.fileno(), socket.AF_INET, 4, 65535)
        tx.sendto(b"\xff" * 1000, ("127.0.0.1", port))
        tx.sendto(b"\xff" * (mmsg.RELEASE_ABOVE + 4), ("127.0.0.1", port))
        n = rx.receive(0, True)
        while n < 2:
            n += rx.receive(n, False)
        rx.release(n)
        slot = mmsg.SLOT_STRIDE
        assert bytes(rx.buffer[0:1000]) == b"\xff" * 1000  # small: kept
        assert bytes(rx.buffer[slot:slot + 8]) == bytes(8)  # large: handed back (zero pages)


def test_stop_wakes_the_blocked_recvmmsg() -> None:
    async def run() -> None:
        c = SflowCollector(allowed_agents=ALLOWED, on_samples=lambda s: None, clock=_Clock(),
                           bind="127.0.0.1", port=0, on_columns=lambda cols: None)
        await c.start()
        assert c.receive_loop == "recvmmsg"
        await asyncio.sleep(0.05)  # the thread is in recvmmsg now
        thread = c._thread
        assert thread is not None and thread.is_alive()
        c.stop()
        assert not thread.is_alive() and c.datagrams_total == 0

    asyncio.run(run())


def test_receive_option() -> None:
    with pytest.raises(ValueError, match="mmsg"):
        SflowCollector(allowed_agents=ALLOWED, on_samples=lambda s: None, clock=_Clock(),
                       receive="mmsg")  # the object path has no recvmmsg loop
    with pytest.raises(ValueError, match="receive must be"):
        SflowCollector(allowed_agents=ALLOWED, on_samples=lambda s: None, clock=_Clock(),
                       receive="poll")  # type: ignore[arg-type]

    async def loops() -> list[str | None]:
        out = []
        for kw in ({}, {"on_columns": lambda cols: None},
                   {"on_columns": lambda cols: None, "receive": "recvfrom"}):
            c = SflowCollector(allowed_agents=ALLOWED, on_samples=lambda s: None,
                               clock=_Clock(), bind="127.0.0.1", port=0, **kw)  # type: ignore[arg-type]
            await c.start()
            out.append(c.receive_loop)
            c.stop()
        return out

    assert asyncio.run(loops()) == ["recvfrom", "recvmmsg", "recvfrom"]


def _in_buffer(data: list[bytes], seed: int) -> tuple[mmap.mmap, np.ndarray, np.ndarray]:
    """The datagrams laid out as recvmmsg leaves them: 4-aligned starts, stale bytes around."""
    rnd = random.Random(seed)
    starts = []
    pos = 0
    for d in data:
        pos += 4 * rnd.randrange(0, 40)
        starts.append(pos)
        pos += len(d) + (-len(d) % 4)
    buf = mmap.mmap(-1, pos + 64 + 4 * rnd.randrange(0, 4))
    buf.write(bytes(rnd.getrandbits(8) for _ in range(len(buf))))
    for a, d in zip(starts, data, strict=True):
        buf[a:a + len(d)] = d
    return buf, np.array(starts, dtype=np.int64), np.array([len(d) for d in data], np.int64)


def _same_batch(got: ColumnBatch, want: ColumnBatch) -> None:
    assert _columns([got.cols]) == _columns([want.cols])
    for f in ("header_agent", "sub_agent", "sequence", "uptime_ms", "flows"):
        assert getattr(got, f).tolist() == getattr(want, f).tolist(), f
    assert got.cols.agent_names == want.cols.agent_names
    assert got.fallback == want.fallback and got.partial == want.partial


@pytest.mark.parametrize("seed", range(4))
def test_decode_in_place_equals_decode_of_bytes(seed: int) -> None:
    data = corpus()[seed * 7:]
    nows = [NOW + i for i in range(len(data))]
    ats = [AT] * len(data)
    buf, starts, lengths = _in_buffer(data, seed)
    want = decode_batch_columns(data, nows, ats, first_number=5)
    _same_batch(decode_batch_columns_in(buf, starts, lengths, nows, ats, first_number=5), want)
    _same_batch(decode_batch_columns_in_unguarded(buf, starts, lengths, nows, ats,
                                                  first_number=5),
                decode_batch_columns_unguarded(data, nows, ats, first_number=5))
    # A batch too small for the bulk read goes to the exact decoder, from the buffer too.
    few = slice(0, 5)
    _same_batch(decode_batch_columns_in(buf, starts[few], lengths[few], nows[few], ats[few]),
                decode_batch_columns(data[few], nows[few], ats[few]))


def test_decode_in_place_checks_the_layout() -> None:
    d = _regular()[0]
    buf = bytes(len(d) + 200)
    with pytest.raises(ValueError, match="4-byte"):
        decode_batch_columns_in(buf, np.array([2]), np.array([len(d)]), [NOW], [AT])
    with pytest.raises(ValueError, match="4-byte"):  # no 64 bytes after the last one
        decode_batch_columns_in(buf, np.array([160]), np.array([len(d)]), [NOW], [AT])
    with pytest.raises(ValueError, match="one start and one length"):
        decode_batch_columns_in(buf, np.array([0, 4]), np.array([len(d)]), [NOW], [AT])


def test_ring_extend_from_a_buffer_equals_extend() -> None:
    data = corpus()[:50]
    buf, starts, lengths = _in_buffer(data, 3)
    nows = [NOW + i for i in range(len(data))]
    ats = [AT] * len(data)
    a, b = RawRing(20_000), RawRing(20_000)
    for lo, hi in ((0, 20), (20, 50)):
        assert a.extend(data[lo:hi], nows[lo:hi], ats[lo:hi]) == b.extend_from(
            buf, starts[lo:hi].tolist(), lengths[lo:hi].tolist(), nows[lo:hi], ats[lo:hi])
    assert (a.first, a.next, a.held_bytes, a.evicted_total) == (
        b.first, b.next, b.held_bytes, b.evicted_total)
    assert a.evicted_total > 0
    assert [a.get(i) for i in range(a.first, a.next)] == [b.get(i) for i in range(b.first, b.next)]
    assert all(type(e[0]) is bytes for e in map(b.get, range(b.first, b.next)) if e)


class _OneByOne:
    """The ring as it was (a list of datagrams, evicted one at a time): the oracle."""

    def __init__(self, budget: int) -> None:
        self.budget, self.items, self.first, self.held, self.evicted = budget, [], 0, 0, 0

    def extend(self, data: list[bytes], nows: list[float], ats: list[Any]) -> int:
        number = self.first + len(self.items)
        self.items += list(zip(data, nows, ats, strict=True))
        self.held += sum(map(len, data))
        while self.held > self.budget and self.items:
            self.held -= len(self.items.pop(0)[0])
            self.first += 1
            self.evicted += 1
        return number


@pytest.mark.parametrize("seed", range(6))
def test_the_chunked_ring_evicts_exactly_as_one_by_one(seed: int) -> None:
    """Datagram by datagram, oldest first, the fewest that bring it within budget (zero-length
    and over-budget datagrams included), whatever the chunks."""
    rnd = random.Random(seed)
    budget = rnd.choice([1, 50, 700, 5000])
    ring, oracle = RawRing(budget), _OneByOne(budget)
    for step in range(300):
        data = [bytes([step % 251]) * rnd.choice([0, 0, 1, 3, 40, 200, 900, 6000])
                for _ in range(rnd.randrange(0, 12))]
        nows = [NOW + step] * len(data)
        ats = [AT] * len(data)
        if rnd.random() < 0.5:
            got = ring.extend(data, nows, ats)
        else:
            buf, starts, lengths = _in_buffer(data, step)
            got = ring.extend_from(buf, starts.tolist(), lengths.tolist(), nows, ats)
        assert got == oracle.extend(data, nows, ats)
        assert (ring.first, ring.next, len(ring), ring.held_bytes, ring.evicted_total) == (
            oracle.first, oracle.first + len(oracle.items), len(oracle.items), oracle.held,
            oracle.evicted)
        assert [ring.get(i) for i in range(ring.first - 2, ring.next + 1)] == [
            None, None, *oracle.items, None]


def test_a_bad_walker_choice_fails_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    """RACKWARDEN_SFLOW_WALK is checked when the columns collector is made: a typo must not
    turn into a quietly slower decode (the bulk decode's guard takes the exact decoder on any
    error)."""
    monkeypatch.setenv("RACKWARDEN_SFLOW_WALK", "fast")
    with pytest.raises(ValueError, match="RACKWARDEN_SFLOW_WALK"):
        SflowCollector(allowed_agents=ALLOWED, on_samples=lambda s: None, clock=_Clock(),
                       bind="127.0.0.1", port=0, on_columns=lambda c: None)
    # The object path does not use the walker: it is not checked there.
    SflowCollector(allowed_agents=ALLOWED, on_samples=lambda s: None, clock=_Clock(),
                   bind="127.0.0.1", port=0)
