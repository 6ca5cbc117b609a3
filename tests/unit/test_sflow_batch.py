"""The batch sFlow path gives exactly the answers of the per-datagram path.

decode_batch against decode_datagram on recorded fixtures, generated datagrams (every sample
and record shape the encoder makes, IPv4 and IPv6 agents), truncated, mutated and random
bytes, in mixed batches; the collector's datagrams_received against datagram_received on
lossy, reordered, duplicated, restarted and malformed streams (same counters, same samples
handed on); SequenceTracker.observe_all against observe; the receive thread on a real socket.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import socket
import struct
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rackwarden.drivers.sflow import cwalk
from rackwarden.drivers.sflow.batch import decode_batch, decode_batch_unguarded
from rackwarden.drivers.sflow.collector import SflowCollector
from rackwarden.drivers.sflow.decoder import DatagramHeader, Sample, decode_datagram
from rackwarden.drivers.sflow.encoder import encode_datagram, pack_datagrams
from rackwarden.drivers.sflow.sequence import SequenceTracker
from rackwarden.policies.flowfacts import FlowSample

from tests.unit.test_sflow_decoder import (
    AT,
    NOW,
    _valid_datagrams,
    datagrams,
    flow_samples,
    frames,
    load,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sflow"
FIXTURE_NAMES = sorted(p.stem for p in FIXTURES.glob("*.hex"))

if not cwalk.compiled_available():
    # Said loudly: the compiled walker's half of the tests below is skipped, which must not go
    # unseen.
    print(f"\n*** test_sflow_batch: {cwalk.unavailable_reason()}: C walker tests SKIPPED ***")

# The bulk read's two walkers (cwalk.py): the numpy one and the compiled one, skipped only
# when it is not built. Tests marked usefixtures("walker") run once with each.
WALKERS = [
    pytest.param("c", marks=pytest.mark.skipif(
        not cwalk.compiled_available(),
        reason=f"compiled sFlow walker not built: {cwalk.unavailable_reason()}")),
    "python",
]
# The walker is set once per test, not per hypothesis example: the same for all of them.
EACH_WALKER = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]


@pytest.fixture(params=WALKERS)
def walker(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    impl: str = request.param
    monkeypatch.setenv(cwalk.ENV_VAR, impl)
    return impl


def _stamps(n: int) -> tuple[list[float], list[datetime]]:
    nows = [NOW + i * 0.01 for i in range(n)]
    return nows, [AT + timedelta(seconds=i * 0.01) for i in range(n)]


def assert_same(data: Sequence[bytes | bytearray | memoryview]) -> None:
    nows, ats = _stamps(len(data))
    want = [decode_datagram(d, n, a) for d, n, a in zip(data, nows, ats, strict=True)]
    got = decode_batch_unguarded(data, nows, ats)
    assert got == want
    assert decode_batch(data, nows, ats) == want
    # Types too: the same equality could hide a numpy integer or a bytearray header.
    for g, w in zip(got, want, strict=True):
        for gs, ws in zip(g.samples, w.samples, strict=True):
            for f in dataclasses.fields(gs):
                assert type(getattr(gs, f.name)) is type(getattr(ws, f.name)), f.name


# -- decode_batch ---------------------------------------------------------------------------

@pytest.mark.usefixtures("walker")
def test_recorded_fixtures_one_batch_and_one_by_one() -> None:
    data = [load(n) for n in FIXTURE_NAMES]
    assert_same(data)
    for d in data:
        assert_same([d])


def test_empty_batch() -> None:
    assert decode_batch([], [], []) == []
    assert decode_batch_unguarded([], [], []) == []


@pytest.mark.usefixtures("walker")
def test_a_large_batch_goes_through_the_bulk_read() -> None:
    data = (_valid_datagrams() + _regular()) * 10  # over BULK_MIN; bulk and fallback mixed
    assert_same(data)


def _regular() -> list[bytes]:
    """Datagrams in the layout the bulk read takes: IPv4 agent, compact flow samples."""
    from rackwarden.drivers.packets import flow_sample_from_frame
    frame = bytes.fromhex("020000000002020000000001080045000028000100004006") + bytes(40)
    s = flow_sample_from_frame(frame, source="sflow", agent="192.0.2.1", now=NOW, at=AT,
                               sampling_rate=16, input_ifindex=3, snaplen=128)
    s = dataclasses.replace(s, sample_sequence=1, source_id_type=0, source_id_index=3,
                            sample_pool=16, drops=0, stripped=4)
    return pack_datagrams([s] * 30, agent="192.0.2.1")


@pytest.mark.usefixtures("walker")
def test_bulk_read_is_taken_on_regular_datagrams() -> None:
    """The common layout is really decoded by the bulk read, not all by the fallback."""
    import rackwarden.drivers.sflow.batch as batch

    data = _regular()
    called: list[bytes] = []
    real = batch.decode_datagram

    def spy(d: Any, now: float, at: datetime) -> Any:
        called.append(d)
        return real(d, now, at)

    nows, ats = _stamps(len(data))
    want = [real(d, n, a) for d, n, a in zip(data, nows, ats, strict=True)]
    batch.decode_datagram = spy  # type: ignore[assignment]
    try:
        got = decode_batch_unguarded(data, nows, ats)
        assert called == []
        decode_batch(data, nows, ats)  # a batch this small goes to the exact decoder
        assert len(called) == len(data) < batch.BULK_MIN
    finally:
        batch.decode_datagram = real
    assert got == want


@pytest.mark.usefixtures("walker")
@settings(max_examples=120, deadline=None, suppress_health_check=EACH_WALKER)
@given(dgs=st.lists(datagrams(), min_size=1, max_size=6), expanded=st.sampled_from([None, True]))
def test_generated_datagrams(dgs: list[tuple[DatagramHeader, list[Sample]]],
                             expanded: bool | None) -> None:
    assert_same([encode_datagram(h, s, expanded=expanded) for h, s in dgs])


@st.composite
def regular_datagrams(draw: st.DrawFn) -> bytes:
    """IPv4 agent, compact flow samples only: the layout the bulk read takes."""
    agent = draw(st.sampled_from(["192.0.2.1", "10.200.0.7"]))
    samples = draw(st.lists(flow_samples(agent), min_size=0, max_size=8))
    samples = [dataclasses.replace(s, source_id_type=s.source_id_type % 256,
                                   source_id_index=s.source_id_index % 2**24,
                                   input_ifindex=s.input_ifindex and s.input_ifindex % 2**30,
                                   output_ifindex=s.output_ifindex and s.output_ifindex % 2**30)
               for s in samples]
    return encode_datagram(DatagramHeader(agent, draw(st.integers(0, 2**32 - 1)),
                                          draw(st.integers(0, 2**32 - 1)),
                                          draw(st.integers(0, 2**32 - 1))), samples,
                           expanded=False)


@pytest.mark.usefixtures("walker")
@settings(max_examples=120, deadline=None, suppress_health_check=EACH_WALKER)
@given(dgs=st.lists(regular_datagrams(), min_size=1, max_size=8))
def test_generated_regular_datagrams(dgs: list[bytes]) -> None:
    assert_same(dgs)


@pytest.mark.usefixtures("walker")
@settings(max_examples=200, deadline=None, suppress_health_check=EACH_WALKER)
@given(base=st.lists(regular_datagrams(), min_size=1, max_size=4), data=st.data())
def test_malformed_among_good_ones(base: list[bytes], data: st.DataObject) -> None:
    """Truncated, overwritten and extended datagrams mixed into a batch of good ones."""
    out = list(base)
    for d in base:
        how = data.draw(st.sampled_from(["cut", "word", "byte", "tail", "junk"]))
        if how == "cut":
            out.append(d[:data.draw(st.integers(0, max(0, len(d) - 1)))])
        elif how == "word" and len(d) >= 4:
            off = data.draw(st.integers(0, len(d) // 4 - 1)) * 4
            word = data.draw(st.sampled_from([0, 1, 2, 3, 0x7FFFFFFF, 0xFFFFFFFF, len(d)]))
            out.append(d[:off] + struct.pack("!I", word) + d[off + 4:])
        elif how == "byte" and d:
            i = data.draw(st.integers(0, len(d) - 1))
            out.append(d[:i] + bytes([d[i] ^ data.draw(st.integers(1, 255))]) + d[i + 1:])
        elif how == "tail":
            out.append(d + data.draw(st.binary(min_size=1, max_size=9)))
        else:
            out.append(data.draw(st.binary(max_size=300)))
    random.Random(len(out)).shuffle(out)
    assert_same(out)


@pytest.mark.usefixtures("walker")
def test_every_truncation_and_extreme_word_of_the_valid_datagrams() -> None:
    batch: list[bytes] = []
    for d in _valid_datagrams():
        batch.extend(d[:cut] for cut in range(len(d) + 1))
        for off in range(0, len(d) - 3, 4):
            for word in (0, 1, 0x7FFFFFFF, 0xFFFFFFFF, len(d)):
                batch.append(d[:off] + struct.pack("!I", word) + d[off + 4:])
    assert_same(batch)


@pytest.mark.usefixtures("walker")
def test_bytearray_memoryview_and_naive_at() -> None:
    good = _valid_datagrams()[0]
    assert_same([bytearray(good), memoryview(good), good])
    naive = datetime(2025, 1, 1)
    want = [decode_datagram(good, NOW, naive)]
    assert decode_batch_unguarded([good], [NOW], [naive]) == want
    assert want[0].error == "naive_at"


@pytest.mark.usefixtures("walker")
@settings(max_examples=100, deadline=None, suppress_health_check=EACH_WALKER)
@given(frames_=st.lists(frames(), min_size=1, max_size=12))
def test_scapy_frames_through_the_bulk_parse(frames_: list[bytes]) -> None:
    from rackwarden.drivers.packets import flow_sample_from_frame
    samples = [flow_sample_from_frame(f, source="sflow", agent="192.0.2.9", now=NOW, at=AT,
                                      sampling_rate=512, input_ifindex=1 + i, snaplen=128)
               for i, f in enumerate(frames_)]
    assert_same(pack_datagrams(samples, agent="192.0.2.9", max_datagram_bytes=700))


@pytest.mark.usefixtures("walker")
def test_a_bulk_read_bug_costs_speed_not_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    import rackwarden.drivers.sflow.batch as batch

    def boom(*_: Any) -> Any:
        raise RuntimeError("bug")

    data = (_valid_datagrams() + _regular()) * 10  # over BULK_MIN: the bulk read is tried
    nows, ats = _stamps(len(data))
    want = [decode_datagram(d, n, a) for d, n, a in zip(data, nows, ats, strict=True)]
    monkeypatch.setattr(batch, "_be", boom)
    with pytest.raises(RuntimeError):
        decode_batch_unguarded(data, nows, ats)
    assert decode_batch(data, nows, ats) == want


# -- sequence tracking -----------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(items=st.lists(st.tuples(st.integers(0, 3), st.one_of(
    st.integers(0, 40), st.integers(2**32 - 5, 2**32 - 1))), max_size=80),
       max_keys=st.sampled_from([2, 65536]))
def test_observe_all_equals_observe_one_by_one(items: list[tuple[int, int]],
                                               max_keys: int) -> None:
    a, b = SequenceTracker(max_keys), SequenceTracker(max_keys)
    resets = [k for k, s in items if a.observe(k, s)[0].value == "reset"]
    assert b.observe_all(list(items)) == resets  # type: ignore[arg-type]
    assert (a.lost, a.resets, a.duplicates, a.late, a.evicted_keys) == (
        b.lost, b.resets, b.duplicates, b.late, b.evicted_keys)
    assert {k: a.last(k) for k in range(4)} == {k: b.last(k) for k in range(4)}


# -- the collector: one datagram at a time against batches -------------------------------------

class _Clock:
    def __init__(self) -> None:
        self.t, self.a = NOW, AT

    def now(self) -> float:
        return self.t

    def at(self) -> datetime:
        return self.a


def _counters(c: SflowCollector) -> dict[str, Any]:
    seq = c.sequence
    sseq = c.sample_sequence
    return {
        "datagrams": c.datagrams_total, "by_agent": c.datagrams_by_agent,
        "rejected": c.rejected_total, "rejected_by": c.rejected_by_source,
        "errors": c.decode_errors, "skipped": c.skipped, "flows": c.flow_samples_total,
        "counters": c.counter_samples_total, "callback_errors": c.callback_errors_total,
        "seq": (seq.lost, seq.resets, seq.duplicates, seq.late, seq.evicted_keys),
        "sseq": (sseq.lost, sseq.resets, sseq.duplicates, sseq.late, sseq.evicted_keys),
    }


def _both(stream: list[tuple[bytes, str]], batch_sizes: list[int]) -> None:
    got_one: list[Sample] = []
    got_batch: list[Sample] = []
    clock = _Clock()
    one = SflowCollector(allowed_agents=["192.0.2.0/24", "2001:db8::/32"],
                         on_samples=got_one.extend, clock=clock)
    many = SflowCollector(allowed_agents=["192.0.2.0/24", "2001:db8::/32"],
                          on_samples=got_batch.extend, clock=clock)
    received = []
    for i, (data, source) in enumerate(stream):
        clock.t, clock.a = NOW + i * 0.01, AT + timedelta(seconds=i * 0.01)
        one.datagram_received(data, (source, 6343))
        received.append((data, (source, 6343), clock.t, clock.a))
    i = k = 0
    while i < len(received):
        n = batch_sizes[k % len(batch_sizes)]
        many.datagrams_received(received[i:i + n])
        i += n
        k += 1
    assert got_batch == got_one
    assert _counters(many) == _counters(one)


@st.composite
def lossy_streams(draw: st.DrawFn) -> list[tuple[bytes, str]]:
    """Two agents' numbered datagrams (flow samples numbered per source), then lost,
    duplicated, reordered, restarted; malformed and unauthorised datagrams mixed in."""
    out: list[tuple[bytes, str]] = []
    for agent in ("192.0.2.1", "192.0.2.2"):
        samples = draw(st.lists(flow_samples(agent), min_size=1, max_size=30))
        seqs: dict[int, int] = {}
        numbered = []
        for s in samples:
            src = draw(st.integers(1, 3))
            seqs[src] = seqs.get(src, draw(st.sampled_from([0, 2**32 - 3]))) + 1
            numbered.append(dataclasses.replace(
                s, source_id_type=0, source_id_index=src, sample_sequence=seqs[src] % 2**32,
                input_ifindex=src, output_ifindex=None, output_format=0))
        dgs = pack_datagrams(numbered, agent=agent, max_datagram_bytes=draw(
            st.sampled_from([300, 1400])), uptime_ms=5000)
        out.extend((d, agent) for d in dgs)
    ops = draw(st.lists(st.tuples(st.sampled_from(["drop", "dup", "swap", "restart", "junk",
                                                   "reject", "cut"]),
                                  st.integers(0, 10_000)), max_size=12))
    for op, x in ops:
        if not out:
            break
        i = x % len(out)
        if op == "drop":
            del out[i]
        elif op == "dup":
            out.insert(i, out[i])
        elif op == "swap" and i + 1 < len(out):
            out[i], out[i + 1] = out[i + 1], out[i]
        elif op == "restart":  # the agent rebooted: uptime and sequence start again
            d, a = out[i]
            out[i] = (d[:16] + struct.pack("!II", 1, 10) + d[24:], a)
        elif op == "junk":
            out.insert(i, (bytes(draw(st.binary(max_size=64))), out[i][1]))
        elif op == "reject":
            out.insert(i, (out[i][0], "198.51.100.9"))
        else:
            out[i] = (out[i][0][:x % max(1, len(out[i][0]))], out[i][1])
    return out


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=lossy_streams(), sizes=st.lists(st.integers(1, 9), min_size=1, max_size=3))
def test_collector_batches_equal_one_by_one(stream: list[tuple[bytes, str]],
                                            sizes: list[int]) -> None:
    _both(stream, sizes)


@pytest.mark.usefixtures("walker")
@settings(max_examples=60, deadline=None, suppress_health_check=EACH_WALKER)
@given(dgs=st.lists(st.tuples(datagrams(), st.sampled_from(["192.0.2.1", "2001:db8::7",
                                                              "203.0.113.1"])), max_size=8))
def test_collector_on_any_datagram_shape(
        dgs: list[tuple[tuple[DatagramHeader, list[Sample]], str]]) -> None:
    _both([(encode_datagram(h, s), src) for (h, s), src in dgs], [3])


@pytest.mark.usefixtures("walker")
def test_recorded_fixtures_through_both_collectors() -> None:
    data = [load(n) for n in FIXTURE_NAMES]
    _both([(d, "192.0.2.1") for d in data] * 2, [1, 5, 100])


def test_a_failing_consumer_is_counted_once_per_batch() -> None:
    def broken(_: Sequence[Sample]) -> None:
        raise ValueError("consumer bug")

    c = SflowCollector(allowed_agents=["192.0.2.0/24"], on_samples=broken, clock=_Clock())
    d = _valid_datagrams()[0]
    c.datagrams_received([(d, ("192.0.2.1", 1), NOW, AT)] * 3)
    assert (c.callback_errors_total, c.datagrams_total) == (1, 3)


# -- the receive thread --------------------------------------------------------------------------

def test_receive_thread_hands_over_every_datagram_then_stops() -> None:
    d = _valid_datagrams()[0]
    want = decode_datagram(d, NOW, AT).samples
    got: list[Sample] = []

    async def run() -> SflowCollector:
        c = SflowCollector(allowed_agents=["127.0.0.1"], on_samples=got.extend, clock=_Clock(),
                           bind="127.0.0.1", port=0, rcvbuf_bytes=1 << 20)
        await c.start()
        assert c.bound_port is not None and c._thread is not None
        # Twenty at a time, each group taken in before the next is sent: the test is about
        # handing datagrams over, not about how many a loaded host's socket buffer holds
        # (loopback UDP drops past net.core.rmem_max, and CI hosts are loaded).
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            for group in range(10):
                for _ in range(20):
                    tx.sendto(d, ("127.0.0.1", c.bound_port))
                deadline = time.monotonic() + 30
                while c.datagrams_total < 20 * (group + 1) and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
        thread = c._thread
        c.stop()
        assert not thread.is_alive()
        return c

    c = asyncio.run(run())
    assert (c.datagrams_total, c.flow_samples_total, c.decode_errors) == (200, 200, {})
    assert got == want * 200
    assert c.sequence.duplicates == {("192.0.2.1", 0): 199}


def test_asyncio_receive_is_still_there() -> None:
    d = _valid_datagrams()[0]

    async def run() -> SflowCollector:
        c = SflowCollector(allowed_agents=["127.0.0.1"], on_samples=lambda s: None,
                           clock=_Clock(), bind="127.0.0.1", port=0, receive="asyncio")
        await c.start()
        assert c._thread is None and c.bound_port is not None
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            tx.sendto(d, ("127.0.0.1", c.bound_port))
        for _ in range(500):
            if c.datagrams_total:
                break
            await asyncio.sleep(0.01)
        c.stop()
        return c

    assert asyncio.run(run()).datagrams_total == 1


def test_bad_receive_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="receive"):
        SflowCollector(allowed_agents=[], on_samples=lambda s: None, clock=_Clock(),
                       receive="epoll")  # type: ignore[arg-type]


def test_flow_samples_are_flow_samples() -> None:  # the filter AbuseService applies
    d = load("valid_flow_and_counter")
    (r,) = decode_batch([d], [NOW], [AT])
    assert [type(s) is FlowSample for s in r.samples] == [True, False]



def _one_at_a_time_to_a_blocked_loop(n: int, gap_s: float) -> SflowCollector:
    """n datagrams sent one at a time (each a batch of its own) while the event loop is
    blocked, then the loop takes whatever the receive thread kept."""
    d = _valid_datagrams()[0]

    async def run() -> SflowCollector:
        c = SflowCollector(allowed_agents=["127.0.0.1"], on_samples=lambda s: None,
                           clock=_Clock(), bind="127.0.0.1", port=0, rcvbuf_bytes=1 << 20)
        await c.start()
        assert c.bound_port is not None
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            for _ in range(n):
                tx.sendto(d, ("127.0.0.1", c.bound_port))
                time.sleep(gap_s)  # the event loop is blocked meanwhile: nothing is taken
        deadline = time.monotonic() + 10
        while c.datagrams_total + c.backlog_dropped_total < n and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        c.stop()
        return c

    return asyncio.run(run())


def test_receive_thread_drops_and_counts_when_the_loop_falls_behind(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import rackwarden.drivers.sflow.collector as collector

    monkeypatch.setattr(collector, "MAX_PENDING_DATAGRAMS", 2)
    c = _one_at_a_time_to_a_blocked_loop(20, 0.01)
    assert c.datagrams_total + c.backlog_dropped_total == 20
    assert 2 <= c.datagrams_total < 20 and c.backlog_dropped_total > 0


def test_a_slow_loop_loses_nothing_at_a_low_rate_when_each_datagram_is_its_own_batch() -> None:
    """The backlog bound counts datagrams: 200 single-datagram batches waiting on a busy loop
    are ~260 KB, not a reason to drop (a bound of 64 batches dropped 136 of them)."""
    c = _one_at_a_time_to_a_blocked_loop(200, 0.002)
    assert (c.datagrams_total, c.backlog_dropped_total) == (200, 0)
