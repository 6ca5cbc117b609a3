"""The columns path gives exactly the answers of the object path.

decode_batch_columns against decode_datagram (through SampleColumns.from_samples), field by
field, on recorded fixtures, generated datagrams of every shape (expanded samples, counter
samples, IPv6 and unknown agents), headers built to hit every branch of the bulk header parse
and cut at every length, malformed and truncated datagrams, and the benchmark's fleet corpus;
the raw ring's refs against decode_datagram's samples, before and after eviction;
ColumnSequenceTracker against SequenceTracker on lossy, reordered, duplicated and restarted
streams; the collector's columns path against its object path (the same counters), over
calls and over a real socket.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import socket
import struct
import threading
import time
from collections.abc import Hashable, Sequence
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rackwarden.drivers.sflow import batch as batch_mod
from rackwarden.drivers.sflow.batch import (
    COLUMNS_BULK_MIN,
    REF_SAMPLE_BITS,
    ColumnBatch,
    decode_batch_columns,
    decode_batch_columns_unguarded,
)
from rackwarden.drivers.sflow.collector import SflowCollector
from rackwarden.drivers.sflow.cwalk import Impl
from rackwarden.drivers.sflow.decoder import DatagramHeader, Sample, decode_datagram
from rackwarden.drivers.sflow.encoder import encode_datagram, pack_datagrams
from rackwarden.drivers.sflow.rawring import RawRing
from rackwarden.drivers.sflow.sequence import ColumnSequenceTracker, SequenceTracker
from rackwarden.policies.flowcols import SampleColumns
from rackwarden.policies.flowfacts import HEADER_ETHERNET, HEADER_IPV4, HEADER_IPV6, FlowSample

from tests.unit.test_sflow_batch import (  # noqa: F401 - walker: the fixture, used by name
    EACH_WALKER,
    FIXTURE_NAMES,
    WALKERS,
    _Clock,
    _counters,
    _regular,
    lossy_streams,
    regular_datagrams,
    walker,
)
from tests.unit.test_sflow_decoder import (
    AT,
    NOW,
    _valid_datagrams,
    counter_samples,
    datagrams,
    load,
)

FIELDS = ("input_ifindex", "output_ifindex", "sampling_rate", "now", "frame_length",
          "ip_version", "src_hi", "src_lo", "has_src", "dst_hi", "dst_lo", "has_dst",
          "protocol", "src_port", "dst_port", "tcp_flags", "icmp_type", "sample_sequence",
          "source_id_type", "source_id_index", "sample_pool")
SLOW = settings(max_examples=25, deadline=None, suppress_health_check=EACH_WALKER)


def _stamps(n: int) -> tuple[list[float], list[datetime]]:
    return [NOW + i * 0.01 for i in range(n)], [AT + timedelta(seconds=i * 0.01) for i in range(n)]


def _flows(data: Sequence[bytes | bytearray | memoryview], nows: Sequence[float],
           ats: Sequence[datetime]) -> list[list[FlowSample]]:
    out = []
    for d, now, at in zip(data, nows, ats, strict=True):
        r = decode_datagram(d, now, at)
        out.append([s for s in r.samples if type(s) is FlowSample] if r.error is None else [])
    return out


def assert_same_columns(got: SampleColumns, want: SampleColumns) -> None:
    assert len(got) == len(want)
    for f in FIELDS:
        g, w = getattr(got, f), getattr(want, f)
        assert g.dtype == w.dtype, f
        assert g.shape == w.shape, f
        bad = np.nonzero(g != w)[0]
        assert bad.size == 0, (f, bad[:5].tolist(), g[bad[:5]].tolist(), w[bad[:5]].tolist())
    assert [got.agent_names[i] for i in got.agent.tolist()] == [
        want.agent_names[i] for i in want.agent.tolist()]
    assert got.agent.dtype == np.int64 and got.ref.dtype == np.int64


def assert_batch(data: Sequence[bytes | bytearray | memoryview], first: int = 7,
                 bulk: bool = True) -> ColumnBatch:
    """Every answer decode_batch_columns gives for `data`, against decode_datagram's."""
    nows, ats = _stamps(len(data))
    results = [decode_datagram(d, n, a) for d, n, a in zip(data, nows, ats, strict=True)]
    flows = _flows(data, nows, ats)
    want = SampleColumns.from_samples([s for f in flows for s in f])
    answers = [decode_batch_columns(data, nows, ats, first_number=first)]
    if bulk:
        answers.append(decode_batch_columns_unguarded(data, nows, ats, first_number=first))
    for got in answers:
        assert_same_columns(got.cols, want)
        # Per datagram: the header fields, the row count, and exact results for the others.
        assert len(got) == len(data)
        for i, r in enumerate(results):
            h = r.header
            if h is None:
                assert got.header_agent[i] == -1
            else:
                assert (got.cols.agent_names[int(got.header_agent[i])], int(got.sub_agent[i]),
                        int(got.sequence[i]), int(got.uptime_ms[i])) == (
                    h.agent, h.sub_agent_id, h.sequence, h.uptime_ms)
            assert int(got.flows[i]) == len(flows[i])
            if i in got.fallback:
                assert got.fallback[i] == r and i not in got.partial
            elif i in got.partial:  # flow samples as rows, the counter samples exactly
                assert got.partial[i] == dataclasses.replace(
                    r, samples=[s for s in r.samples if type(s) is not FlowSample])
                assert r.error is None
            else:  # the bulk read took it whole: nothing but flow samples
                assert (r.error, dict(r.skipped), len(r.samples)) == (None, {}, len(flows[i]))
        assert got.counter_samples() == [s for r in results if r.error is None
                                         for s in r.samples if type(s) is not FlowSample]
        refs = [((first + i) << REF_SAMPLE_BITS) | k for i, f in enumerate(flows)
                for k in range(len(f))]
        assert got.cols.ref.tolist() == refs
        assert got.cols.objects is None
    nr = decode_batch_columns(data, nows, ats)
    assert nr.cols.ref.tolist() == [-1] * len(want)
    return answers[-1]


# -- decode_batch_columns -----------------------------------------------------------------------

@pytest.mark.usefixtures("walker")
def test_recorded_fixtures() -> None:
    data = [load(n) for n in FIXTURE_NAMES]
    assert_batch(data)
    assert_batch(data * 5)  # past COLUMNS_BULK_MIN
    for d in data:
        assert_batch([d])


def test_empty_batch() -> None:
    got = decode_batch_columns([], [], [])
    assert (len(got), len(got.cols), got.fallback) == (0, 0, {})
    assert len(decode_batch_columns_unguarded([], [], []).cols) == 0


@pytest.mark.usefixtures("walker")
def test_the_bulk_read_takes_regular_datagrams(monkeypatch: pytest.MonkeyPatch) -> None:
    """No decode_datagram call (so no FlowSample) for the common layout."""
    data = _regular() * 6
    assert len(data) >= COLUMNS_BULK_MIN
    nows, ats = _stamps(len(data))
    want = SampleColumns.from_samples([s for f in _flows(data, nows, ats) for s in f])
    called: list[bytes] = []
    real = batch_mod.decode_datagram

    def spy(d: Any, now: float, at: datetime) -> Any:
        called.append(d)
        return real(d, now, at)

    monkeypatch.setattr(batch_mod, "decode_datagram", spy)
    monkeypatch.setattr(batch_mod, "new_flow_sample", None)  # building one would fail
    got = decode_batch_columns(data, nows, ats)
    assert called == [] and got.fallback == {}
    assert_same_columns(got.cols, want)


@pytest.mark.usefixtures("walker")
def test_the_fleet_corpus_goes_through_the_bulk_read_whole() -> None:
    from bench.sflow_batch import build_corpus
    data, _, nsamples = build_corpus(1)
    got = assert_batch(data[:400])
    assert got.fallback == {} and len(got.cols) == 2800


@pytest.mark.usefixtures("walker")
@SLOW
@given(dgs=st.lists(datagrams(), min_size=1, max_size=6), expanded=st.sampled_from([None, True]),
       copies=st.sampled_from([1, 4]))
def test_generated_datagrams_of_every_shape(dgs: list[tuple[DatagramHeader, list[Sample]]],
                                            expanded: bool | None, copies: int) -> None:
    """IPv4, IPv6 and unknown agents, counter samples, expanded samples: the fallback."""
    assert_batch([encode_datagram(h, s, expanded=expanded) for h, s in dgs] * copies)


@pytest.mark.usefixtures("walker")
@SLOW
@given(dgs=st.lists(regular_datagrams(), min_size=1, max_size=8))
def test_generated_regular_datagrams(dgs: list[bytes]) -> None:
    assert_batch(dgs * (1 + COLUMNS_BULK_MIN // len(dgs)))


@st.composite
def mixed_datagrams(draw: st.DrawFn) -> bytes:
    """Regular datagrams with counter samples (compact or expanded) among the flow samples:
    the bulk read takes the flows, the exact reader the counters."""
    agent = draw(st.sampled_from(["192.0.2.1", "10.200.0.7"]))
    base = draw(regular_datagrams())
    flows = [s for s in decode_datagram(base, NOW, AT).samples if type(s) is FlowSample]
    flows = [dataclasses.replace(s, agent=agent) for s in flows]
    samples: list[Sample] = list(flows)
    for _ in range(draw(st.integers(1, 3))):
        samples.insert(draw(st.integers(0, len(samples))), draw(counter_samples(agent)))
    out: bytes = encode_datagram(DatagramHeader(agent, 0, draw(st.integers(0, 2**32 - 1)), 5),
                                 samples)  # each sample compact when its values fit
    return out


@pytest.mark.usefixtures("walker")
@SLOW
@given(dgs=st.lists(mixed_datagrams(), min_size=1, max_size=6), data=st.data())
def test_counter_samples_among_flow_samples(dgs: list[bytes], data: st.DataObject) -> None:
    out = dgs * (1 + COLUMNS_BULK_MIN // len(dgs))
    for d in dgs:  # and some of them broken, inside a counter sample or anywhere
        if len(d) >= 8:
            off = data.draw(st.integers(0, len(d) // 4 - 1)) * 4
            word = data.draw(st.sampled_from([0, 1, 87, 0xFFFFFFFF]))
            out.append(d[:off] + struct.pack("!I", word) + d[off + 4:])
    got = assert_batch(out)
    assert got.partial  # the path under test was taken


@pytest.mark.usefixtures("walker")
def test_the_bulk_read_takes_flows_beside_counter_samples(
        monkeypatch: pytest.MonkeyPatch) -> None:
    d = load("valid_flow_and_counter")  # IPv4 agent: a flow sample and a counter sample
    data = [d] * COLUMNS_BULK_MIN
    monkeypatch.setattr(batch_mod, "decode_datagram", None)  # calling it would fail
    got = decode_batch_columns_unguarded(data, *_stamps(len(data)))
    assert (len(got.cols), len(got.partial), got.fallback) == (len(data), len(data), {})
    assert len(got.counter_samples()) == len(data)


# Headers built to reach every branch of the bulk header parse: tags, options, fragments,
# extension headers, every L4 protocol it reads, bad versions, bare IP; then cut anywhere.
_V4 = struct.Struct("!BBHHHBBH4s4s")
_V6 = struct.Struct("!IHBB16s16s")


@st.composite
def headers(draw: st.DrawFn) -> tuple[bytes, int]:
    hproto = draw(st.sampled_from([HEADER_ETHERNET] * 6 + [HEADER_IPV4, HEADER_IPV6, 7]))
    v6 = draw(st.booleans()) if hproto in (HEADER_ETHERNET, 7) else hproto == HEADER_IPV6
    proto = draw(st.sampled_from([6, 17, 1, 58, 132, 47, 0, 43, 44, 51, 60]))
    l4 = draw(st.binary(min_size=20, max_size=20))
    if v6:
        ip = _V6.pack(draw(st.sampled_from([6 << 28, 4 << 28, 6 << 28 | 5])), 60, proto, 64,
                      draw(st.binary(min_size=16, max_size=16)),
                      draw(st.binary(min_size=16, max_size=16)))
    else:
        ihl = draw(st.sampled_from([5, 5, 5, 4, 6, 15]))
        ver = draw(st.sampled_from([4, 4, 4, 6]))
        frag = draw(st.sampled_from([0, 0, 0x4000, 0x2000, 0x0001, 0x1FFF]))
        ip = _V4.pack(ver << 4 | ihl, 0, 40, 1, frag, 64, proto, 0,
                      draw(st.binary(min_size=4, max_size=4)),
                      draw(st.binary(min_size=4, max_size=4)))
        ip += draw(st.binary(min_size=max(0, ihl * 4 - 20), max_size=max(0, ihl * 4 - 20)))
    hdr = ip + l4
    if hproto in (HEADER_ETHERNET, 7):
        et = draw(st.sampled_from([0x86DD if v6 else 0x0800] * 4 + [0x0806, 0x86DD, 0x0800]))
        tags = draw(st.sampled_from([[], [], [0x8100], [0x88A8], [0x9100, 0x8100],
                                     [0x8100, 0x8100, 0x8100]]))
        eth = draw(st.binary(min_size=12, max_size=12))
        chain = tags + [et]
        eth += struct.pack("!H", chain[0])
        for nxt in chain[1:]:
            eth += struct.pack("!HH", draw(st.integers(0, 0xFFFF)), nxt)[:4]
        hdr = eth + hdr
    # Whole, cut anywhere, or cut inside the L4 header (its last 20 bytes).
    n = len(hdr)
    cut = draw(st.one_of(st.just(n), st.integers(0, n), st.integers(n - 20, n)))
    return hdr[:cut], hproto


@pytest.mark.usefixtures("walker")
@settings(max_examples=60, deadline=None, suppress_health_check=EACH_WALKER)
@given(hs=st.lists(headers(), min_size=1, max_size=40), data=st.data())
def test_every_branch_of_the_header_parse(hs: list[tuple[bytes, int]], data: st.DataObject) -> None:
    samples = []
    for i, (h, hp) in enumerate(hs):
        samples.append(FlowSample(
            "sflow", "192.0.2.1", i + 1, None, 16, NOW, AT, len(h) + 100, h,
            header_protocol=hp, sample_sequence=i, source_id_type=0, source_id_index=i + 1,
            sample_pool=16 * i, drops=0, stripped=4))
    dgs = pack_datagrams(samples, agent="192.0.2.1",
                         max_datagram_bytes=data.draw(st.sampled_from([200, 1400])))
    assert_batch(dgs * (1 + COLUMNS_BULK_MIN // len(dgs)))


@pytest.mark.usefixtures("walker")
def test_l4_headers_cut_at_every_length() -> None:
    eth = bytes(12) + b"\x08\x00"
    samples: list[FlowSample] = []
    for proto in (6, 17, 1, 132, 47):
        ip = _V4.pack(0x45, 0, 40, 1, 0, 64, proto, 0, b"\x01\x02\x03\x04", b"\x05\x06\x07\x08")
        for cut in range(len(eth) + len(ip) + 21):
            h = (eth + ip + bytes(range(1, 21)))[:cut]
            samples.append(FlowSample("sflow", "192.0.2.1", 1, None, 16, NOW, AT, 100, h,
                                      sample_sequence=len(samples), source_id_type=0,
                                      source_id_index=1, sample_pool=1, drops=0, stripped=0))
    assert_batch(pack_datagrams(samples, agent="192.0.2.1") * 2)


@pytest.mark.usefixtures("walker")
@settings(max_examples=30, deadline=None, suppress_health_check=EACH_WALKER)
@given(base=st.lists(regular_datagrams(), min_size=1, max_size=4), data=st.data())
def test_malformed_among_good_ones(base: list[bytes], data: st.DataObject) -> None:
    out = list(base) * 4
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
    assert_batch(out)


@pytest.mark.usefixtures("walker")
def test_every_truncation_and_extreme_word() -> None:
    batch: list[bytes] = []
    for d in _valid_datagrams() + _regular()[:1]:
        batch.extend(d[:cut] for cut in range(len(d) + 1))
        for off in range(0, len(d) - 3, 4):
            for word in (0, 1, 0x7FFFFFFF, 0xFFFFFFFF, len(d)):
                batch.append(d[:off] + struct.pack("!I", word) + d[off + 4:])
    assert_batch(batch)


@pytest.mark.usefixtures("walker")
def test_bytearray_memoryview_and_naive_at() -> None:
    good = _regular()[0]
    assert_batch([bytearray(good), memoryview(good), good] * COLUMNS_BULK_MIN)
    naive = datetime(2025, 1, 1)
    got = decode_batch_columns_unguarded([good], [NOW], [naive])
    assert got.fallback[0].error == "naive_at" and len(got.cols) == 0


@pytest.mark.usefixtures("walker")
def test_a_bulk_read_bug_costs_speed_not_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    data = (_valid_datagrams() + _regular()) * 3
    nows, ats = _stamps(len(data))
    want = SampleColumns.from_samples([s for f in _flows(data, nows, ats) for s in f])

    def boom(*_: Any) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setattr(batch_mod, "_u64", boom)  # the numpy walker's header parse
    monkeypatch.setattr(batch_mod, "_parsed_compiled", boom)  # the compiled walker's
    with pytest.raises(RuntimeError):
        decode_batch_columns_unguarded(data, nows, ats)
    assert_same_columns(decode_batch_columns(data, nows, ats).cols, want)


# -- the raw ring -------------------------------------------------------------------------------

@pytest.mark.usefixtures("walker")
def test_refs_resolve_to_decode_datagrams_samples_then_none_after_eviction() -> None:
    data = (_valid_datagrams() + _regular()) * 3
    nows, ats = _stamps(len(data))
    ring = RawRing(budget_bytes=sum(map(len, data)))  # exactly the batch
    assert ring.extend([b"x" * 10], [NOW], [AT]) == 0  # something before: numbers move on
    first = ring.extend(data, nows, ats)
    assert (first, ring.first, ring.next) == (1, 1, 1 + len(data))
    got = decode_batch_columns(data, nows, ats, first_number=first)
    want = [s for f in _flows(data, nows, ats) for s in f]
    assert ring.resolve(got.cols.ref.tolist()) == want
    assert ring.resolve([-1, (first << REF_SAMPLE_BITS) | 999, 0]) == [None, None, None]
    # Evict the first half: their refs give None, the rest still resolve.
    half = len(data) // 2
    ring.extend([b"y" * sum(map(len, data[:half]))], [NOW], [AT])
    assert ring.first > first
    kept = got.cols.ref >> REF_SAMPLE_BITS >= ring.first
    resolved = ring.resolve(got.cols.ref.tolist())
    assert [r for r, k in zip(resolved, kept.tolist(), strict=True) if not k] == [None] * int(
        (~kept).sum())
    assert [r for r, k in zip(resolved, kept.tolist(), strict=True) if k] == [
        s for s, k in zip(want, kept.tolist(), strict=True) if k]
    assert ring.held_bytes <= ring.budget_bytes


def test_the_ring_stays_within_its_budget_and_counts() -> None:
    ring = RawRing(budget_bytes=10_000)
    d = _regular()[0]
    for _ in range(5000):
        ring.extend([d, d], [NOW, NOW], [AT, AT])
    assert ring.held_bytes <= 10_000 and len(ring) == 10_000 // len(d)
    assert ring.next == 10_000 and ring.evicted_total == 10_000 - len(ring)
    assert ring.get(ring.next - 1) == (d, NOW, AT) and ring.get(ring.first - 1) is None
    with pytest.raises(ValueError):
        RawRing(0)


def test_one_writer_and_readers_at_once() -> None:
    """The receive thread appends while the event loop resolves: answers stay exact."""
    data = _regular()
    nows, ats = _stamps(len(data))
    want = [s for f in _flows(data, nows, ats) for s in f]
    ring = RawRing(budget_bytes=sum(map(len, data)) * 3)
    stop = threading.Event()
    numbers: list[int] = []

    def writer() -> None:
        while not stop.is_set():
            numbers.append(ring.extend(data, nows, ats))

    t = threading.Thread(target=writer)
    t.start()
    try:
        checked = 0
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            if not numbers:
                continue
            first = numbers[-1]
            refs = decode_batch_columns(data, nows, ats, first_number=first).cols.ref.tolist()
            for r, w in zip(ring.resolve(refs), want, strict=True):
                assert r is None or r == w
                checked += r is not None
    finally:
        stop.set()
        t.join()
    assert checked > 0


# -- sequence numbers in bulk -----------------------------------------------------------------

# The sequence trackers' rows (here and tests/unit/test_sflow_seq_c.py), each key coded as
# the collector codes (agent, source id), fed in cuts of the given lengths.
Row = tuple[int, int, int]  # code, sequence, uptime (-1: unknown)


def key_of(code: int) -> Hashable:
    return ("192.0.2.1", code)


def run_columns(t: ColumnSequenceTracker, rows: list[Row], cuts: list[int],
                with_uptime: bool) -> list[Hashable]:
    got: list[Hashable] = []
    i = j = 0
    while i < len(rows):
        part = rows[i:i + cuts[j % len(cuts)]]
        got += t.observe_columns(np.array([c for c, _, _ in part], dtype=np.int64),
                                 np.array([s for _, s, _ in part], dtype=np.int64), key_of,
                                 np.array([u for _, _, u in part], dtype=np.int64)
                                 if with_uptime else None)
        i += len(part)
        j += 1
    return got


@settings(max_examples=300, deadline=None)
@given(items=st.lists(st.tuples(
    st.integers(0, 5),
    st.one_of(st.integers(0, 40), st.integers(2**32 - 5, 2**32 - 1), st.integers(0, 2**32 - 1)),
    st.one_of(st.integers(0, 3000), st.integers(2**32 - 2000, 2**32 - 1))), max_size=80),
       cuts=st.lists(st.integers(1, 30), min_size=1, max_size=4),
       max_keys=st.sampled_from([2, 3, 65536]), with_uptime=st.booleans())
@pytest.mark.parametrize("impl", WALKERS)  # the compiled walk and the numpy one
def test_column_tracker_equals_observe_one_by_one(items: list[tuple[int, int, int]],
                                                  cuts: list[int], max_keys: int,
                                                  with_uptime: bool, impl: Impl) -> None:
    a, b = SequenceTracker(max_keys), ColumnSequenceTracker(max_keys, impl=impl)
    want = [key_of(k) for k, s, u in items
            if a.observe(key_of(k), s, u if with_uptime else None)[0].value == "reset"]
    got = run_columns(b, items, cuts, with_uptime)  # fed in cuts, keyed by key_of
    assert got == want
    assert (a.lost, a.resets, a.duplicates, a.late, a.evicted_keys) == (
        b.lost, b.resets, b.duplicates, b.late, b.evicted_keys)
    assert {k: a.last(key_of(k)) for k in range(6)} == {k: b.last(key_of(k)) for k in range(6)}


@pytest.mark.usefixtures("walker")
def test_lossy_fleet_corpus_loses_the_same_in_bulk() -> None:
    """The notes' check: every 97th datagram dropped, some swapped and repeated."""
    from bench.sflow_batch import build_corpus
    data, _, _ = build_corpus(1)
    data = [d for i, d in enumerate(data) if i % 97 != 0]
    data[10], data[11] = data[11], data[10]
    data.insert(50, data[40])
    assert_collectors([(d, "10.200.0.1") for d in data], [1024, 100])


# -- the collector: columns path against the object path ------------------------------------------

def _rows(samples: Sequence[Sample]) -> list[dict[str, Any]]:
    cols = SampleColumns.from_samples([s for s in samples if type(s) is FlowSample])
    return [cols.row(i) for i in range(len(cols))]


def assert_collectors(stream: list[tuple[bytes, str]], batch_sizes: list[int]) -> None:
    objects: list[Sample] = []
    counters: list[Sample] = []
    columns: list[SampleColumns] = []
    clock = _Clock()
    nets = ["192.0.2.0/24", "2001:db8::/32", "10.200.0.0/16"]
    one = SflowCollector(allowed_agents=nets, on_samples=objects.extend, clock=clock)
    col = SflowCollector(allowed_agents=nets, on_samples=counters.extend, clock=clock,
                         on_columns=columns.append)
    received = []
    for i, (data, source) in enumerate(stream):
        received.append((data, (source, 6343), NOW + i * 0.01, AT + timedelta(seconds=i * 0.01)))
    i = k = 0
    while i < len(received):
        n = batch_sizes[k % len(batch_sizes)]
        one.datagrams_received(received[i:i + n])
        col.datagrams_received(received[i:i + n])
        i += n
        k += 1
    assert _counters(col) == _counters(one)
    assert isinstance(col.sample_sequence, ColumnSequenceTracker)
    assert counters == [s for s in objects if type(s) is not FlowSample]
    got = [c.row(j) for c in columns for j in range(len(c))]
    assert got == _rows(objects)
    assert col.raw_ring is not None
    refs = [r for c in columns for r in c.ref.tolist()]
    assert col.raw_ring.resolve(refs) == [s for s in objects if type(s) is FlowSample]


@pytest.mark.usefixtures("walker")
@settings(max_examples=40, deadline=None, suppress_health_check=EACH_WALKER)
@given(stream=lossy_streams(), sizes=st.lists(st.sampled_from([1, 3, 9, 40]), min_size=1,
                                              max_size=3))
def test_collector_columns_path_counts_the_same(stream: list[tuple[bytes, str]],
                                                sizes: list[int]) -> None:
    assert_collectors(stream, sizes)


@pytest.mark.usefixtures("walker")
@SLOW
@given(dgs=st.lists(st.tuples(datagrams(), st.sampled_from(["192.0.2.1", "2001:db8::7",
                                                              "203.0.113.1"])), max_size=8))
def test_collector_columns_path_on_any_datagram_shape(
        dgs: list[tuple[tuple[DatagramHeader, list[Sample]], str]]) -> None:
    assert_collectors([(encode_datagram(h, s), src) for (h, s), src in dgs] * 3, [3, 30])


@pytest.mark.usefixtures("walker")
def test_recorded_fixtures_through_both_paths() -> None:
    data = [load(n) for n in FIXTURE_NAMES]
    assert_collectors([(d, "192.0.2.1") for d in data] * 3, [1, 5, 100])


def test_a_failing_consumer_is_counted_once_per_batch() -> None:
    def broken(_: Any) -> None:
        raise ValueError("consumer bug")

    c = SflowCollector(allowed_agents=["192.0.2.0/24"], on_samples=broken, clock=_Clock(),
                       on_columns=broken)
    d = _valid_datagrams()[0]  # a flow and a counter sample
    c.datagrams_received([(d, ("192.0.2.1", 1), NOW, AT)] * 3)
    assert (c.callback_errors_total, c.datagrams_total) == (1, 3)


def test_without_on_columns_nothing_changes() -> None:
    c = SflowCollector(allowed_agents=[], on_samples=lambda s: None, clock=_Clock())
    assert c.raw_ring is None and type(c.sample_sequence) is SequenceTracker


def test_asyncio_receive_with_columns() -> None:
    d = _regular()[0]
    got: list[SampleColumns] = []

    async def run() -> SflowCollector:
        c = SflowCollector(allowed_agents=["127.0.0.1"], on_samples=lambda s: None,
                           clock=_Clock(), bind="127.0.0.1", port=0, receive="asyncio",
                           on_columns=got.append)
        await c.start()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            tx.sendto(d, ("127.0.0.1", c.bound_port or 0))
        for _ in range(500):
            if c.datagrams_total:
                break
            await asyncio.sleep(0.01)
        c.stop()
        return c

    c = asyncio.run(run())
    flows = len(decode_datagram(d, NOW, AT).samples)
    assert c.datagrams_total == 1 and sum(map(len, got)) == c.flow_samples_total == flows > 0


def test_receive_thread_decodes_columns_in_batches() -> None:
    """Over a real socket: every datagram counted and decoded, in batches of several."""
    d = _regular()[0]
    want = decode_datagram(d, NOW, AT).samples
    got: list[SampleColumns] = []

    async def run() -> SflowCollector:
        c = SflowCollector(allowed_agents=["127.0.0.1"], on_samples=lambda s: None,
                           clock=_Clock(), bind="127.0.0.1", port=0, rcvbuf_bytes=1 << 20,
                           on_columns=got.append, batch_wait_s=0.2)
        await c.start()
        assert c.bound_port is not None and c._thread is not None
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            for group in range(5):
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
    assert (c.datagrams_total, c.flow_samples_total, c.decode_errors) == (100, 100 * len(want), {})
    assert c.sequence.duplicates == {("192.0.2.1", 0): 99}
    assert len(got) < 100  # batched: the 200 ms wait gathers each group of 20
    rows = [cols.row(j) for cols in got for j in range(len(cols))]
    assert rows == _rows([dataclasses.replace(s, now=NOW) for s in want]) * 100


@pytest.mark.parametrize("receive", ["recvfrom", "mmsg"])
def test_a_columns_decode_bug_costs_the_batch_not_the_receive_thread(
        monkeypatch: pytest.MonkeyPatch, receive: Any) -> None:
    import rackwarden.drivers.sflow.collector as collector

    d = _regular()[0]
    calls = 0

    def flaky(real: Any) -> Any:
        def call(*args: Any, **kw: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("bug")
            return real(*args, **kw)
        return call

    monkeypatch.setattr(collector, "decode_batch_columns", flaky(decode_batch_columns))
    monkeypatch.setattr(collector, "decode_batch_columns_in",
                        flaky(batch_mod.decode_batch_columns_in))

    async def run() -> SflowCollector:
        c = SflowCollector(allowed_agents=["127.0.0.1"], on_samples=lambda s: None,
                           clock=_Clock(), bind="127.0.0.1", port=0, on_columns=lambda c: None,
                           batch_wait_s=0.0, receive=receive)
        await c.start()
        assert c.bound_port is not None
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            for k in range(2):
                tx.sendto(d, ("127.0.0.1", c.bound_port))
                deadline = time.monotonic() + 10
                while (c.datagrams_total + c.decode_errors.get("internal_error", 0) < k + 1
                       and time.monotonic() < deadline):
                    await asyncio.sleep(0.01)
        c.stop()
        return c

    c = asyncio.run(run())
    assert c.decode_errors == {"internal_error": 1} and c.datagrams_total == 1
    assert c.flow_samples_total == len(decode_datagram(d, NOW, AT).samples)


def test_agents_named_in_headers_cannot_grow_the_key_numbering(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Any agent address may come from an allowed sender: the numbering stays bounded."""
    import rackwarden.drivers.sflow.collector as collector

    monkeypatch.setattr(collector, "MAX_KEY_CODES", 64)
    c = SflowCollector(allowed_agents=["192.0.2.0/24"], on_samples=lambda s: None,
                       clock=_Clock(), on_columns=lambda cols: None)
    base = _regular()[0]
    for k in range(40):
        batch = []
        for j in range(8):
            agent = struct.pack("!I", 0x0A000000 + k * 8 + j)  # 320 agents in all
            batch.append((base[:8] + agent + base[12:], ("192.0.2.1", 1), NOW, AT))
        c.datagrams_received(batch)
    assert len(c._agent_names) <= 64 and c.sequence.evicted_keys > 0
    assert c.datagrams_total == 320 and c.decode_errors == {}
