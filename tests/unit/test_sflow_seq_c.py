"""ColumnSequenceTracker's compiled walk (_sflowwalk.c sw_seq) against its numpy twin and the
reference, SequenceTracker.observe one row at a time.

Streams are generated per key from its current number: the next one, a gap, a duplicate, a late
one inside the reorder window, one further back (a reset), a random jump, across the 2^32 wrap;
uptimes go forward, back by less and by more than the slack, wrap, or are unknown (row by row).
Keys come from a few small codes, negative ones (the collector's wide keys) and large ones,
and from thousands of fresh codes (the table grows); small max_keys evict in mid-batch. Every
counter dict, last(key) of every key, evicted_keys and the keys returned as reset must agree.
"""

from __future__ import annotations

import random
from collections.abc import Hashable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rackwarden.drivers.sflow import cwalk
from rackwarden.drivers.sflow.sequence import (
    REORDER_WINDOW,
    UPTIME_SLACK_MS,
    ColumnSequenceTracker,
    SequenceTracker,
)

from tests.unit.test_sflow_columns import Row, key_of, run_columns
from tests.unit.test_sflow_cwalk import walking

if not cwalk.compiled_available():
    print(f"\n*** test_sflow_seq_c: {cwalk.unavailable_reason()}: C sequence walk tests "
          "SKIPPED ***")

needs_c = pytest.mark.skipif(not cwalk.compiled_available(),
                             reason=f"compiled sFlow walker not built: {cwalk.unavailable_reason()}")
IMPLS = [pytest.param("c", marks=needs_c), "python"]
MOD = 1 << 32
# A few codes of each kind the collector makes: packed (agent << 32 | ...), wide (negative).
CODES = [0, 1, 2, 7, (3 << 32) | (0 << 24) | 5, (3 << 32) | (1 << 24) | 5, -1, -2, (1 << 61) + 3]

@st.composite
def streams(draw: st.DrawFn) -> list[Row]:
    """Rows made from each key's current number and uptime, so that in-order runs, gaps,
    duplicates, late numbers and resets all come up."""
    fresh = draw(st.integers(0, 3))  # how often (in 4) a row names a code never seen
    n = draw(st.integers(0, 120))
    seq: dict[int, int] = {}
    up: dict[int, int] = {}
    rows: list[Row] = []
    next_fresh = 1000
    for _ in range(n):
        if draw(st.integers(0, 3)) < fresh:
            code = next_fresh
            next_fresh += draw(st.integers(1, 1 << 20))
        else:
            code = draw(st.sampled_from(CODES))
        s = seq.get(code, draw(st.sampled_from([0, MOD - 3, draw(st.integers(0, MOD - 1))])))
        op = draw(st.sampled_from(["next", "next", "next", "gap", "dup", "late", "back",
                                   "jump"]))
        if op == "next":
            s += 1
        elif op == "gap":
            s += draw(st.integers(2, 70))
        elif op == "late":
            s -= draw(st.integers(1, REORDER_WINDOW + 1))
        elif op == "back":
            s -= draw(st.integers(REORDER_WINDOW, 1 << 31))
        elif op == "jump":
            s = draw(st.integers(0, MOD - 1))
        s %= MOD
        u = up.get(code, draw(st.sampled_from([0, 5_000, MOD - 500])))
        uop = draw(st.sampled_from(["none", "fwd", "fwd", "back_small", "back_big", "same"]))
        if uop == "fwd":
            u += draw(st.integers(1, 3_000))
        elif uop == "back_small":
            u -= draw(st.integers(1, UPTIME_SLACK_MS))
        elif uop == "back_big":
            u -= draw(st.integers(UPTIME_SLACK_MS + 1, 1 << 31))
        u %= MOD
        if op in ("next", "gap", "jump"):
            seq[code] = s
        if uop != "none":
            up[code] = u
        rows.append((code, s, -1 if uop == "none" else u))
    return rows


def reference(rows: list[Row], max_keys: int, with_uptime: bool) -> tuple[SequenceTracker,
                                                                           list[Hashable]]:
    ref = SequenceTracker(max_keys)
    resets = [key_of(c) for c, s, u in rows
              if ref.observe(key_of(c), s, (None if u < 0 else u) if with_uptime else None)[0]
              .value == "reset"]
    return ref, resets


def assert_same(ref: SequenceTracker, want: list[Hashable], t: ColumnSequenceTracker,
                got: list[Hashable], codes: set[int]) -> None:
    assert got == want
    assert (t.lost, t.resets, t.duplicates, t.late, t.evicted_keys) == (
        ref.lost, ref.resets, ref.duplicates, ref.late, ref.evicted_keys)
    assert {c: t.last(key_of(c)) for c in codes} == {c: ref.last(key_of(c)) for c in codes}


@needs_c
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=streams(), cuts=st.lists(st.integers(1, 60), min_size=1, max_size=4),
       max_keys=st.sampled_from([0, 1, 2, 3, 7, 65536]), with_uptime=st.booleans())
def test_c_numpy_and_observe_agree(rows: list[Row], cuts: list[int], max_keys: int,
                                   with_uptime: bool) -> None:
    ref, want = reference(rows, max_keys, with_uptime)
    codes = {c for c, _, _ in rows}
    for impl in ("c", "python"):
        t = ColumnSequenceTracker(max_keys, impl=impl)
        assert_same(ref, want, t, run_columns(t, rows, cuts, with_uptime), codes)


@pytest.mark.parametrize("impl", IMPLS)
def test_the_last_known_uptime_is_kept_through_rows_without_one(impl: cwalk.Impl) -> None:
    """observe() holds a row's uptime against the last KNOWN one: a row without uptime between
    them does not hide that uptime went back by more than the slack (the numpy walk held it
    against the row just before, or the key's state before the batch)."""
    code = np.array([5, 5, 5, 5], dtype=np.int64)
    seq = np.array([1, 2, 3, 4], dtype=np.int64)
    up = np.array([5_000, 9_000, -1, 6_000], dtype=np.int64)
    for split in (4, 3):  # inside one batch, and across two
        t = ColumnSequenceTracker(impl=impl)
        got = t.observe_columns(code[:split], seq[:split], key_of, up[:split])
        got += t.observe_columns(code[split:], seq[split:], key_of, up[split:])
        assert got == [key_of(5)]
        assert t.resets == {key_of(5): 1}


@needs_c
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n_keys=st.integers(1, 5_000), rounds=st.integers(1, 4), batch=st.integers(1, 3_000),
       max_keys=st.sampled_from([50, 999, 65536]), seed=st.integers(0, 2**32 - 1))
def test_many_keys_grow_the_table_and_evict_mid_batch(n_keys: int, rounds: int, batch: int,
                                                       max_keys: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 1 << 40, size=n_keys)  # sparse codes: the table must hash them
    order = np.concatenate([rng.permutation(n_keys) for _ in range(rounds)])
    lose = random.Random(seed)
    drop = [lose.random() < 0.05 for _ in range(order.shape[0])]  # numbers lost: gaps
    counts = np.zeros(n_keys, dtype=np.int64)
    seqs = np.empty(order.shape[0], dtype=np.int64)
    for i, k in enumerate(order.tolist()):
        counts[k] += 1 + int(drop[i])
        seqs[i] = (MOD - 2 + counts[k]) % MOD  # across the wrap
    rows = [(int(base[k]), int(s), -1) for k, s in zip(order.tolist(), seqs.tolist(),
                                                        strict=True)]
    ref, want = reference(rows, max_keys, False)
    codes = {c for c, _, _ in rows}
    for impl in ("c", "python"):
        t = ColumnSequenceTracker(max_keys, impl=impl)
        assert_same(ref, want, t, run_columns(t, rows, [batch], False), codes)
        assert len(t) <= max_keys


@needs_c
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=streams(), cuts=st.lists(st.integers(1, 40), min_size=1, max_size=4),
       impls=st.lists(st.sampled_from(["c", "python"]), min_size=1, max_size=6),
       max_keys=st.sampled_from([2, 5, 65536]), forget_at=st.integers(0, 8))
def test_switching_walks_between_batches_and_forget(rows: list[Row], cuts: list[int],
                                                    impls: list[str], max_keys: int,
                                                    forget_at: int) -> None:
    """One tracker, its batches walked by either implementation as $RACKWARDEN_SFLOW_WALK says
    (the numpy path adds slots the compiled walk's table has not seen yet), forget() between."""
    ref_t = SequenceTracker(max_keys)
    t = ColumnSequenceTracker(max_keys)
    want: list[Hashable] = []
    got: list[Hashable] = []
    i = j = 0
    while i < len(rows):
        part = rows[i:i + cuts[j % len(cuts)]]
        if j == forget_at:
            t.forget()
            ref_t._state.clear()  # what forget() is: every key's state dropped, an eviction
            ref_t.evicted_keys += 1
        want += [key_of(c) for c, s, u in part
                 if ref_t.observe(key_of(c), s, None if u < 0 else u)[0].value == "reset"]
        with walking(impls[j % len(impls)]):
            got += t.observe_columns(np.array([c for c, _, _ in part], dtype=np.int64),
                                     np.array([s for _, s, _ in part], dtype=np.int64), key_of,
                                     np.array([u for _, _, u in part], dtype=np.int64))
        i += len(part)
        j += 1
    assert_same(ref_t, want, t, got, {c for c, _, _ in rows})


@needs_c
def test_the_compiled_walk_is_the_one_taken() -> None:
    t = ColumnSequenceTracker(impl="c")
    t.observe_columns(np.array([3, 4, 3], dtype=np.int64), np.array([1, 1, 2], dtype=np.int64),
                      key_of)
    assert t._table_n == 2 and t.last(key_of(3)) == 2  # entered in the compiled walk's table
    p = ColumnSequenceTracker(impl="python")
    p.observe_columns(np.array([3], dtype=np.int64), np.array([1], dtype=np.int64), key_of)
    assert p._table_n == 0


@needs_c
def test_the_kernel_stops_at_what_would_not_fit_and_refuses_bad_arrays() -> None:
    """Capacities are the arrays' own: a new key the state or the table has no room for stops
    the walk before its row (the tracker grows them and goes on); a state out of step with
    the table, or an array of the wrong type or size, is an error, never a write past it."""
    n = 4
    codes = np.arange(n, dtype=np.int64)
    seqs = np.zeros(n, dtype=np.int64)
    ev = np.empty(n, dtype=np.int8)
    gap = np.empty(n, dtype=np.int64)

    def fresh(slots: int, table: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (np.full((table, 2), -1, dtype=np.int64), np.zeros(slots, dtype=np.int64),
                np.zeros((slots, 2), dtype=np.int64))

    tab, kc, ks = fresh(2, 64)  # 4 new keys, 2 slots
    assert cwalk.seq_walk(codes, seqs, None, 0, False, tab, kc, ks, 0, 100, ev, gap) == (
        2, 2, cwalk.SEQ_GROW)
    tab, kc, ks = fresh(8, 4)  # a table of 4 holds 2 keys at most half full
    assert cwalk.seq_walk(codes, seqs, None, 0, False, tab, kc, ks, 0, 100, ev, gap) == (
        2, 2, cwalk.SEQ_GROW)
    tab, kc, ks = fresh(8, 64)  # max_keys=3: it stops before the fourth, for an eviction
    assert cwalk.seq_walk(codes, seqs, None, 0, False, tab, kc, ks, 0, 3, ev, gap) == (
        3, 3, cwalk.SEQ_EVICT)
    assert ev[:3].tolist() == [0, 0, 0] and kc[:3].tolist() == [0, 1, 2]
    # Forced, the row it stopped at goes in whatever max_keys is (after the eviction).
    tab, kc, ks = fresh(8, 64)
    assert cwalk.seq_walk(codes, seqs, None, 3, True, tab, kc, ks, 0, 0, ev, gap) == (
        4, 1, cwalk.SEQ_DONE)
    tab, kc, ks = fresh(8, 64)
    with pytest.raises(RuntimeError, match="too small"):
        cwalk.seq_index(np.full((4, 2), -1, dtype=np.int64), kc, 0, 3)
    with pytest.raises(ValueError, match="contiguous"):  # a slot past the state arrays
        cwalk.seq_index(tab, kc, 0, 9)
    cwalk.seq_index(tab, np.arange(8, dtype=np.int64), 0, 3)
    with pytest.raises(RuntimeError, match="out of step"):  # the table holds slots 0..2
        cwalk.seq_walk(codes, seqs, None, 0, False, tab, kc, ks, 1, 100, ev, gap)
    with pytest.raises(RuntimeError, match="out of step"):  # more slots than the arrays
        cwalk.seq_walk(codes, seqs, None, 0, False, tab, kc, ks, 9, 100, ev, gap)
    with pytest.raises(RuntimeError):  # not a power of two
        cwalk.seq_walk(codes, seqs, None, 0, False, np.full((48, 2), -1, dtype=np.int64), kc,
                       ks, 0, 100, ev, gap)
    with pytest.raises(ValueError, match="contiguous"):
        cwalk.seq_walk(codes.astype(np.int32), seqs, None, 0, False, tab, kc, ks, 3, 100, ev,
                       gap)
    with pytest.raises(ValueError, match="contiguous"):
        cwalk.seq_walk(codes, seqs, None, 0, False, tab, kc, ks, 3, 100, ev[:2], gap)
    with pytest.raises(ValueError, match="contiguous"):
        cwalk.seq_walk(codes, seqs, None, 0, False, tab, kc, ks[:, 0], 3, 100, ev, gap)


def test_without_the_compiled_helper_the_numpy_walk_answers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Not built (or not loadable): the tracker takes the numpy walk, and still answers as
    observe() does; asking for C by name is an error that says why."""
    monkeypatch.setattr(cwalk._compiled, "lib", None)
    monkeypatch.setattr(cwalk._compiled, "error", "compiled sFlow walker not built (test)")
    monkeypatch.delenv(cwalk.ENV_VAR, raising=False)
    rows: list[Row] = [(1, 5, -1), (2, 9, -1), (1, 7, -1), (1, 7, -1), (2, 3, -1)]
    ref, want = reference(rows, 65536, False)
    t = ColumnSequenceTracker()
    assert_same(ref, want, t, run_columns(t, rows, [2], False), {1, 2})
    assert t._table_n == 0  # no compiled table was filled
    with pytest.raises(RuntimeError, match="not built"):
        ColumnSequenceTracker(impl="c").observe_columns(
            np.array([1], dtype=np.int64), np.array([1], dtype=np.int64), key_of)
