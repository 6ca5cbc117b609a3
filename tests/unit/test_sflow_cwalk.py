"""The compiled sFlow walk (drivers/sflow/cwalk.py, _sflowwalk.c) against its numpy twin.

The bulk decode walked by the C walker must give the very ColumnBatch the numpy walker gives
(every column array, the header arrays, the exactly decoded datagrams, the counter-sample
results), and decode_batch the same DecodeResults, on generated batches of every shape
mutated at random: bit flips, cuts, overwritten words (sample counts, lengths), appended and
random bytes, VLAN-tagged, IPv6 and fragmented headers, counter samples, expanded samples.
The in-place entry point is fed datagrams with garbage between them and in the pad. The walks
themselves (taken datagrams, samples, counter samples in walk order) are compared too.
gather() against the join it replaces. test_sflow_batch.py and test_sflow_columns.py run their
equivalence tests against decode_datagram with each walker.
"""

from __future__ import annotations

import os
import random
import struct
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import TypeVar

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rackwarden.drivers.sflow import batch as batch_mod
from rackwarden.drivers.sflow import cwalk
from rackwarden.drivers.sflow.batch import (
    COLUMNS_BULK_MIN,
    ColumnBatch,
    decode_batch_columns_in_unguarded,
    decode_batch_columns_unguarded,
    decode_batch_unguarded,
)
from rackwarden.drivers.sflow.decoder import DatagramHeader
from rackwarden.drivers.sflow.encoder import encode_datagram, pack_datagrams
from rackwarden.policies.flowfacts import FlowSample

from tests.unit.test_sflow_batch import _regular, regular_datagrams
from tests.unit.test_sflow_columns import headers, mixed_datagrams
from tests.unit.test_sflow_decoder import AT, NOW, _valid_datagrams, datagrams, load

if not cwalk.compiled_available():
    print(f"\n*** test_sflow_cwalk: {cwalk.unavailable_reason()}: C walker tests SKIPPED ***")

needs_c = pytest.mark.skipif(not cwalk.compiled_available(),
                             reason=f"compiled sFlow walker not built: {cwalk.unavailable_reason()}")
T = TypeVar("T")


@contextmanager
def walking(impl: str) -> Iterator[None]:
    """The bulk read walks with `impl` (per hypothesis example, so no monkeypatch fixture)."""
    old = os.environ.get(cwalk.ENV_VAR)
    os.environ[cwalk.ENV_VAR] = impl
    try:
        yield
    finally:
        if old is None:
            del os.environ[cwalk.ENV_VAR]
        else:
            os.environ[cwalk.ENV_VAR] = old


def both(fn: Callable[[], T]) -> tuple[T, T]:
    with walking("c"):
        c = fn()
    with walking("python"):
        py = fn()
    return c, py


def _stamps(n: int, naive: Sequence[int] = ()) -> tuple[list[float], list[datetime]]:
    ats = [AT + timedelta(seconds=i * 0.01) for i in range(n)]
    for i in naive:  # a naive or a non-UTC receive time: judged per datagram
        if i < n:
            ats[i] = ats[i].replace(tzinfo=None) if i % 2 else ats[i].astimezone(
                timezone(timedelta(hours=8)))
    return [NOW + i * 0.01 for i in range(n)], ats


def assert_identical(got: ColumnBatch, want: ColumnBatch) -> None:
    """Every array of the two answers equal, dtype and all; the same results."""
    for f in batch_mod._COLUMN_FIELDS:
        g, w = getattr(got.cols, f), getattr(want.cols, f)
        assert g.dtype == w.dtype and g.shape == w.shape, f
        assert np.array_equal(g, w), (f, g.tolist()[:8], w.tolist()[:8])
    assert got.cols.agent_names == want.cols.agent_names
    assert got.cols.objects is None and want.cols.objects is None
    for f in ("header_agent", "sub_agent", "sequence", "uptime_ms", "flows"):
        g, w = getattr(got, f), getattr(want, f)
        assert g.dtype == w.dtype and np.array_equal(g, w), f
    assert list(got.fallback) == list(want.fallback)
    assert got.fallback == want.fallback
    assert sorted(got.partial) == sorted(want.partial)
    assert got.partial == want.partial


def assert_walks_equal(data: list[bytes], nows: list[float], ats: list[datetime],
                       counters: bool) -> None:
    c, py = both(lambda: batch_mod._walk(data, nows, ats, counters))
    assert np.array_equal(c.ok, py.ok)
    for f in ("dg", "sa", "sk", "cdg", "csa", "cfmt"):
        assert np.array_equal(getattr(c, f), getattr(py, f)), f
    assert c.rows is not None and py.rows is None
    ok = np.nonzero(c.ok)[0]
    assert np.array_equal(c.count[ok], py.count[ok])
    # Row by row, before parse_tuple redoes the slow ones: the same rows are slow, and every
    # value of the others is the numpy parse's.
    pc = batch_mod._parsed_compiled(c.rows)
    pn = batch_mod._parsed_numpy(py.buf, py.words, py.sa)
    assert np.array_equal(pc.slow, pn.slow)
    fast = ~pn.slow
    for f in batch_mod._Parsed.__slots__:
        a, b = getattr(pc, f), getattr(pn, f)
        assert a.dtype == b.dtype, f
        assert np.array_equal(a[fast], b[fast]), f


def assert_same_both_ways(data: list[bytes], naive: Sequence[int] = (), seed: int = 0) -> None:
    nows, ats = _stamps(len(data), naive)
    first = 3
    c, py = both(lambda: decode_batch_columns_unguarded(data, nows, ats, first_number=first))
    assert_identical(c, py)
    c, py = both(lambda: decode_batch_columns_unguarded(data, nows, ats))
    assert_identical(c, py)
    assert_walks_equal(data, nows, ats, True)
    assert_walks_equal(data, nows, ats, False)
    oc, opy = both(lambda: decode_batch_unguarded(data, nows, ats))
    assert oc == opy
    # In place: each datagram 4-aligned with garbage before, between and after it (the pad
    # too), so a read outside its datagram would show.
    rnd = random.Random(seed)
    buf = bytearray()
    starts = []
    for d in data:
        buf += rnd.randbytes(4 * rnd.randint(0, 3))
        starts.append(len(buf))
        buf += d + rnd.randbytes(-len(d) % 4)
    buf += rnd.randbytes(64 + 4 * rnd.randint(0, 2))
    s = np.array(starts, dtype=np.int64)
    ln = np.array([len(d) for d in data], dtype=np.int64)
    ic, ipy = both(lambda: decode_batch_columns_in_unguarded(bytes(buf), s, ln, nows, ats,
                                                             first_number=first))
    assert_identical(ic, ipy)
    with walking("c"):
        assert_identical(ic, decode_batch_columns_unguarded(data, nows, ats, first_number=first))


# -- generated batches, mutated ------------------------------------------------------------------

@st.composite
def header_datagrams(draw: st.DrawFn) -> list[bytes]:
    """Raw headers reaching every branch of the header parse (tags, IPv6, fragments, options,
    cuts), packed as flow samples."""
    hs = draw(st.lists(headers(), min_size=1, max_size=12))
    samples = [FlowSample("sflow", "192.0.2.1", i + 1, None, 16, NOW, AT, len(h) + 100, h,
                          header_protocol=hp, sample_sequence=i, source_id_type=0,
                          source_id_index=i + 1, sample_pool=16 * i, drops=0, stripped=4)
               for i, (h, hp) in enumerate(hs)]
    out: list[bytes] = pack_datagrams(samples, agent="192.0.2.1",
                                      max_datagram_bytes=draw(st.sampled_from([200, 1400])))
    return out


@st.composite
def shaped(draw: st.DrawFn) -> list[bytes]:
    kind = draw(st.sampled_from(["regular", "mixed", "any", "headers"]))
    if kind == "regular":
        return [draw(regular_datagrams())]
    if kind == "mixed":
        return [draw(mixed_datagrams())]
    if kind == "any":
        h, s = draw(datagrams())
        return [encode_datagram(h, s, expanded=draw(st.sampled_from([None, True])))]
    out: list[bytes] = draw(header_datagrams())
    return out


def mutate(d: bytes, data: st.DataObject) -> bytes:
    how = data.draw(st.sampled_from(["bit", "bits", "cut", "cut4", "word", "count", "length",
                                     "tail", "junk", "keep"]))
    if how in ("bit", "bits") and d:
        b = bytearray(d)
        for _ in range(1 if how == "bit" else data.draw(st.integers(2, 8))):
            i = data.draw(st.integers(0, len(b) - 1))
            b[i] ^= 1 << data.draw(st.integers(0, 7))
        return bytes(b)
    if how == "cut":
        return d[:data.draw(st.integers(0, len(d)))]
    if how == "cut4":  # a cut on a word boundary: the walk, not the 4-byte rule, must see it
        return d[:4 * data.draw(st.integers(0, len(d) // 4))]
    if how in ("word", "count", "length") and len(d) >= 28:
        if how == "count":
            off = 24
        elif how == "length":  # a sample's or a record's length word, roughly
            off = data.draw(st.sampled_from([32, 68, 72, 88, 100, 36 + 4 * 10]))
            off = min(off, len(d) - 4) & ~3
        else:
            off = 4 * data.draw(st.integers(0, len(d) // 4 - 1))
        word = data.draw(st.one_of(
            st.sampled_from([0, 1, 2, 3, 4, 5, 8, 56, 64, 0x7FFFFFFF, 0xFFFFFFFF, len(d)]),
            st.integers(0, 2**32 - 1)))
        return d[:off] + struct.pack("!I", word) + d[off + 4:]
    if how == "tail":
        return d + data.draw(st.binary(min_size=1, max_size=12))
    if how == "junk":
        return data.draw(st.binary(max_size=200))
    return d


@needs_c
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(base=st.lists(shaped(), min_size=1, max_size=5), data=st.data())
def test_the_compiled_walk_gives_the_numpy_walks_answers(base: list[list[bytes]],
                                                         data: st.DataObject) -> None:
    dgs = [d for group in base for d in group]
    out = list(dgs)
    for d in dgs * 2:
        out.append(mutate(d, data))
    while len(out) < COLUMNS_BULK_MIN:
        out += dgs
    rnd = random.Random(data.draw(st.integers(0, 2**16)))
    rnd.shuffle(out)
    naive = data.draw(st.sampled_from([(), (), (1,), (0, 3, 5)]))
    assert_same_both_ways(out, naive, seed=rnd.randint(0, 999))


@needs_c
def test_every_truncation_and_extreme_word() -> None:
    batch: list[bytes] = []
    for d in _valid_datagrams() + _regular()[:2] + [load("valid_flow_and_counter")]:
        batch.extend(d[:cut] for cut in range(len(d) + 1))
        for off in range(0, len(d) - 3, 4):
            for word in (0, 1, 2, 4, 56, 0x7FFFFFFF, 0xFFFFFFFF, len(d)):
                batch.append(d[:off] + struct.pack("!I", word) + d[off + 4:])
    assert_same_both_ways(batch)


def _samples_of(d: bytes) -> list[bytes]:
    """The samples of a datagram with an IPv4 agent, each as its bytes."""
    out = []
    off = 28
    for _ in range(struct.unpack_from("!I", d, 24)[0]):
        length = struct.unpack_from("!I", d, off + 4)[0]
        out.append(d[off:off + 8 + length])
        off += 8 + length
    return out


@needs_c
def test_many_counter_samples_fit_the_compiled_walks_output() -> None:
    """Many counter samples per datagram, beside flow samples: every one is reported (the
    output is sized from the datagrams' counts and lengths), and nothing is lost."""
    flow, counter = _samples_of(load("valid_flow_and_counter"))
    assert struct.unpack_from("!I", counter)[0] == 2 and struct.unpack_from("!I", flow)[0] == 1
    head = load("valid_flow_and_counter")[:24]
    data = []
    for i in range(COLUMNS_BULK_MIN + 4):
        samples = [counter] * (i % 12) + [flow] + [counter] * 3
        data.append(head + struct.pack("!I", len(samples)) + b"".join(samples))
    n_counters = sum(len(_samples_of(d)) - 1 for d in data)
    c, py = both(lambda: decode_batch_columns_unguarded(data, *_stamps(len(data))))
    assert_identical(c, py)
    assert len(c.partial) == len(data) and len(c.counter_samples()) == n_counters
    assert_walks_equal(data, *_stamps(len(data)), True)


@needs_c
def test_expanded_flow_samples_and_ipv6_agents_go_to_the_exact_decoder_in_both() -> None:
    regular = _regular()[0]
    flows = [s for s in batch_mod.decode_datagram(regular, NOW, AT).samples
             if type(s) is FlowSample]
    expanded = encode_datagram(DatagramHeader("192.0.2.1", 0, 1, 5), flows, expanded=True)
    six = encode_datagram(DatagramHeader("2001:db8::1", 0, 1, 5), flows)
    data = [regular, expanded, six] * COLUMNS_BULK_MIN
    c, py = both(lambda: decode_batch_columns_unguarded(data, *_stamps(len(data))))
    assert_identical(c, py)
    assert sorted(c.fallback) == [i for i in range(len(data)) if i % 3]


@needs_c
def test_the_fleet_corpus_is_walked_the_same() -> None:
    from bench.sflow_batch import build_corpus
    data, _, _ = build_corpus(1)
    assert_same_both_ways(data[:600])


# -- the loader ---------------------------------------------------------------------------------

def test_env_var_picks_the_walker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cwalk.ENV_VAR, "python")
    assert cwalk.choose() == "python"
    assert cwalk.choose("python") == "python"
    monkeypatch.setenv(cwalk.ENV_VAR, "fast")
    with pytest.raises(ValueError, match="must be 'c' or 'python'"):
        cwalk.choose()
    monkeypatch.delenv(cwalk.ENV_VAR)
    assert cwalk.choose() == ("c" if cwalk.compiled_available() else "python")


def test_the_python_walker_is_the_numpy_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cwalk.ENV_VAR, "python")
    data = _regular() * 4
    w = batch_mod._walk(data, *_stamps(len(data)), True)
    assert w.rows is None and w.ok.all()


def test_the_compiled_walker_is_built_here() -> None:
    # The dev and CI machines have a compiler (Makefile's Debian step): if this fails, the
    # C half of the tests above and in test_sflow_batch/test_sflow_columns is skipped.
    assert cwalk.compiled_available(), cwalk.unavailable_reason()


# -- gather -------------------------------------------------------------------------------------

@pytest.mark.parametrize("impl", [pytest.param("c", marks=needs_c), "python"])
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(blob=st.binary(min_size=0, max_size=600), data=st.data())
def test_gather_equals_the_join_it_replaces(impl: str, blob: bytes, data: st.DataObject) -> None:
    buf = bytearray(blob + bytes(64))
    view = memoryview(buf)
    spans = data.draw(st.lists(st.tuples(st.integers(0, len(buf)), st.integers(0, 100)),
                               max_size=20))
    spans = [(a, min(p, len(buf) - a)) for a, p in spans]
    starts = np.array([a for a, _ in spans], dtype=np.int64)
    padded = np.array([p for _, p in spans], dtype=np.int64)
    got = cwalk.gather(view, starts, padded, impl=impl)  # type: ignore[arg-type]
    want = b"".join([*(bytes(buf[a:a + p]) for a, p in spans), bytes(cwalk.GATHER_TAIL)])
    assert type(got) is bytes and got == want
    if spans:  # a span past the end is refused, not read
        bad = starts.copy()
        bad[-1] = len(buf) - int(padded[-1]) + 1
        with pytest.raises(ValueError, match="outside"):
            cwalk.gather(view, bad, padded, impl=impl)  # type: ignore[arg-type]


@pytest.mark.parametrize("impl", [pytest.param("c", marks=needs_c), "python"])
def test_gather_of_an_mmap_slot_buffer(impl: str) -> None:
    """As the collector calls it: spans of recvmmsg slots in an anonymous mmap."""
    import mmap
    m = mmap.mmap(-1, 4 * 65536)
    dgs = [d + bytes(-len(d) % 4) for d in _regular() * 3][:4]
    for k, d in enumerate(dgs):
        m[k * 65536:k * 65536 + len(d)] = d
    starts = np.arange(len(dgs), dtype=np.int64) * 65536
    padded = np.array([len(d) for d in dgs], dtype=np.int64)
    got = cwalk.gather(memoryview(m), starts, padded, impl=impl)  # type: ignore[arg-type]
    assert got == b"".join(dgs) + bytes(64)
    m.close()
