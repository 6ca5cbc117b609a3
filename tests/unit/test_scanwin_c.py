"""The scan-window row loop in C (policies/_scanwin.c) against its Python twin, and the
single-window loop (distinct_rows: the spam destinations) against its own.

Both loops get the same random batches on twin copies of the same per-server state (windows
made on a server's first row or earlier, some of them full, caps and count rules small so
evictions and saturation happen): every window's dict must come out with the same keys, values
AND order, every group count the same, the same saturation times and the same hot set. An
exception raised inside a window's .add or inside new_scan propagates from C as from Python,
with the rows before it done alike, and a long loop of the C one neither leaks objects nor
references. The C tests are skipped, loudly, only when the module is not built.
"""

from __future__ import annotations

import gc
import random
import sys
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rackwarden.policies import detect_vec
from rackwarden.policies.detect_vec import _distinct_loop_py, _scan_loop_py, _Win
from rackwarden.policies.flowcols import ip_words

if detect_vec.SCANWIN_C_ERROR is not None:
    print(f"\n*** test_scanwin_c: {detect_vec.SCANWIN_C_ERROR}: C scan-window tests SKIPPED ***")
pytestmark = pytest.mark.skipif(detect_vec.SCANWIN_C_ERROR is not None,
                                reason=str(detect_vec.SCANWIN_C_ERROR))

WINDOW_S = 30.0
# Destination hosts: IPv4 (as SampleColumns keeps it, ::ffff:a.b.c.d), IPv6 (high word set),
# the IPv4-mapped text of an IPv4 host (the same words), and the extremes of both words.
HOSTS = [ip_words(a)[:2] for a in (
    "198.51.100.1", "198.51.100.2", "::ffff:198.51.100.1", "10.0.0.1", "2001:db8::1",
    "2001:db8::2", "2001:db8:1::1", "fe80::1", "::", "::1",
    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "0:0:0:1::")]
PORTS = [-1, 0, 1, 22, 80, 443, 65535, 1 << 40, -(1 << 63), (1 << 63) - 1]


@dataclass
class State:
    """A detector's per-server scan lists (VectorDetector's _scan_* attributes) and hot set."""

    n: int
    caps: list[int]
    th_h: list[int]
    th_p: list[int]
    hosts_l: list[_Win | None] = field(init=False)
    pairs_l: list[_Win | None] = field(init=False)
    hs_l: list[dict[int, float] | None] = field(init=False)
    ps_l: list[dict[int, float]] = field(init=False)
    pg_l: list[dict[int, int]] = field(init=False)
    hot: set[int] = field(default_factory=set)
    made: list[int] = field(default_factory=list)  # new_scan's calls, in order
    win_cls: type[_Win] = _Win

    def __post_init__(self) -> None:
        self.hosts_l = [None] * self.n
        self.pairs_l = [None] * self.n
        self.hs_l = [None] * self.n
        self.ps_l = [{}] * self.n  # shared placeholders, as VectorDetector's
        self.pg_l = [{}] * self.n

    def new_scan(self, s: int) -> None:
        self.made.append(s)
        d = self.hosts_l[s] = self.win_cls(WINDOW_S, self.caps[s])
        p = self.pairs_l[s] = self.win_cls(WINDOW_S, self.caps[s], grouped=True)
        assert p.groups is not None
        self.hs_l[s], self.ps_l[s], self.pg_l[s] = d.seen, p.seen, p.groups

    def args(self) -> tuple[Any, ...]:
        return (self.hs_l, self.ps_l, self.pg_l, self.hosts_l, self.pairs_l, self.caps,
                self.th_h, self.th_p, self.hot, self.new_scan)

    def picture(self) -> list[Any]:
        """Everything the loops may change, orders included."""
        out: list[Any] = [sorted(self.hot), self.made]
        for s in range(self.n):
            h, p = self.hosts_l[s], self.pairs_l[s]
            if h is None or p is None:
                out.append(None)
                continue
            assert self.hs_l[s] is h.seen and self.ps_l[s] is p.seen and self.pg_l[s] is p.groups
            assert p.groups is not None
            out.append((list(h.seen.items()), h.saturated_until, list(p.seen.items()),
                        list(p.groups.items()), p.saturated_until))
        return out


Row = tuple[int, int, int, float]  # server, host index, port index, time


def arrays(rows: list[Row]) -> tuple[Any, ...]:
    return (np.array([r[0] for r in rows], dtype=np.int64),
            np.array([HOSTS[r[1]][0] for r in rows], dtype=np.uint64),
            np.array([HOSTS[r[1]][1] for r in rows], dtype=np.uint64),
            np.array([PORTS[r[2]] for r in rows], dtype=np.int64),
            np.array([r[3] for r in rows], dtype=np.float64))


@st.composite
def cases(draw: st.DrawFn) -> tuple[list[int], list[int], list[int], list[Row], list[list[Row]]]:
    """Caps and count rules per server, rows made before (through the Python loop, so some
    windows start full or near their caps), and the batches."""
    n = draw(st.integers(1, 6))
    caps = draw(st.lists(st.integers(1, 6), min_size=n, max_size=n))
    th_h = draw(st.lists(st.integers(1, 8), min_size=n, max_size=n))
    th_p = draw(st.lists(st.integers(1, 8), min_size=n, max_size=n))
    hosts = draw(st.integers(1, len(HOSTS)))  # few hosts: repeated keys
    ports = draw(st.integers(1, len(PORTS)))
    row = st.tuples(st.integers(0, n - 1), st.integers(0, hosts - 1), st.integers(0, ports - 1),
                    st.sampled_from([0.0, 1.0, 2.5, 1e9, -3.0]) | st.floats(0, 100))
    before = draw(st.lists(row, max_size=30))
    batches = draw(st.lists(st.lists(row, min_size=1, max_size=60), min_size=1, max_size=4))
    return caps, th_h, th_p, before, batches


def twins(caps: list[int], th_h: list[int], th_p: list[int],
          before: list[Row]) -> tuple[State, State]:
    out = []
    for _ in range(2):
        st_ = State(len(caps), list(caps), list(th_h), list(th_p))
        if before:
            _scan_loop_py(*arrays(before), *st_.args())
        st_.hot.clear()
        out.append(st_)
    return out[0], out[1]


@settings(max_examples=400, deadline=None)
@given(case=cases(), by_server=st.booleans())
def test_c_loop_equals_python_loop(case: tuple[Any, ...], by_server: bool) -> None:
    caps, th_h, th_p, before, batches = case
    c, py = twins(caps, th_h, th_p, before)
    assert c.picture() == py.picture()
    for batch in batches:
        if by_server:  # as _scan_rows hands them over: each server's rows together, in order
            batch = sorted(batch, key=lambda r: r[0])
        detect_vec._scan_rows_c(*arrays(batch), *c.args())
        _scan_loop_py(*arrays(batch), *py.args())
        assert c.picture() == py.picture()


@st.composite
def long_runs(draw: st.DrawFn) -> tuple[list[int], list[int], list[int], list[Row], list[list[Row]]]:
    """Runs of 8 to 120 rows per server over a few keys, with caps around the runs' distinct
    keys: the C loop's skipping of a run's middle sightings (see plan_run in _scanwin.c) is
    taken where it may be, refused at and around the cap, and both must end as the Python
    loop does."""
    n = draw(st.integers(1, 4))
    caps = draw(st.lists(st.integers(4, 48), min_size=n, max_size=n))
    th_h = draw(st.lists(st.integers(2, 40), min_size=n, max_size=n))
    th_p = draw(st.lists(st.integers(2, 60), min_size=n, max_size=n))
    hosts = draw(st.integers(1, len(HOSTS)))
    ports = draw(st.integers(1, len(PORTS)))
    rnd = random.Random(draw(st.integers(0, 2**32)))

    def run(s: int, t0: float) -> list[Row]:
        return [(s, rnd.randrange(hosts), rnd.randrange(ports), t0 + rnd.random())
                for _ in range(rnd.randint(8, 120))]

    before = [row for s in range(n) for row in run(s, 0.0)][: draw(st.integers(0, 60))]
    batches = [[row for s in rnd.sample(range(n), n) for row in run(s, 10.0 * b)]
               for b in range(1, draw(st.integers(1, 4)) + 1)]
    return caps, th_h, th_p, before, batches


@settings(max_examples=300, deadline=None)
@given(case=long_runs(), shuffled=st.booleans())
def test_long_runs_of_repeated_keys_equal_the_python_loop(case: tuple[Any, ...],
                                                          shuffled: bool) -> None:
    caps, th_h, th_p, before, batches = case
    c, py = twins(caps, th_h, th_p, before)
    for batch in batches:
        if shuffled:  # runs broken up: the same keys, shorter runs
            batch = random.Random(len(batch)).sample(batch, len(batch))
        detect_vec._scan_rows_c(*arrays(batch), *c.args())
        _scan_loop_py(*arrays(batch), *py.args())
        assert c.picture() == py.picture()


def test_skip_repeats_switch() -> None:
    """skip_repeats(False) takes every row (bench/capture.py's baseline); both ways the
    windows end as the Python loop's, and the switch hands back what it was."""
    from rackwarden.policies import _scanwin_c

    rows = [(s, h, p, float(t)) for t in range(40) for s in (0, 1) for h in (0, 1, 3)
            for p in (0, 1)]
    rows.sort(key=lambda r: r[0])
    assert _scanwin_c.skip_repeats(False) is True  # on by default
    try:
        for on in (False, True):
            _scanwin_c.skip_repeats(on)
            c, py = twins([64, 64], [9, 9], [9, 9], [])
            detect_vec._scan_rows_c(*arrays(rows), *c.args())
            _scan_loop_py(*arrays(rows), *py.args())
            assert c.picture() == py.picture()
        assert _scanwin_c.skip_repeats(True) is True
    finally:
        _scanwin_c.skip_repeats(True)


@pytest.mark.parametrize("room", [-1, 0, 1])
def test_a_run_at_the_cap(room: int) -> None:
    """A run whose distinct keys fill the window to its cap exactly, or one key past it (an
    eviction: no skipping), or one short: every case ends as the Python loop's."""
    # 12 distinct pair keys (HOSTS[2] is HOSTS[0] written as IPv4-mapped: left out)
    keys = [(h, p) for h in (0, 1, 3, 4) for p in range(3)]
    cap = len(keys) + room
    rows = [(0, h, p, float(t)) for t, (h, p) in enumerate(keys * 6)]
    c, py = twins([cap], [100], [100], [])
    detect_vec._scan_rows_c(*arrays(rows), *c.args())
    _scan_loop_py(*arrays(rows), *py.args())
    assert c.picture() == py.picture()
    assert (c.hosts_l[0].saturated_until > float("-inf")) is False
    assert (c.pairs_l[0].saturated_until > float("-inf")) is (room < 0)


def test_many_servers_and_rows() -> None:
    """A fleet-sized batch: 3,000 servers, most with a few rows, some past their caps."""
    rnd = np.random.default_rng(7)
    n, m = 3000, 40_000
    caps = rnd.integers(4, 40, n).tolist()
    th = rnd.integers(2, 30, n).tolist()
    rows = [(int(s), int(h), int(p), float(t)) for s, h, p, t in zip(
        rnd.integers(0, n, m), rnd.integers(0, len(HOSTS), m), rnd.integers(0, len(PORTS), m),
        rnd.random(m) * 60, strict=True)]
    c, py = twins(caps, th, th[::-1], rows[:5000])
    for lo in range(5000, m, 7000):
        batch = sorted(rows[lo:lo + 7000], key=lambda r: r[0])
        detect_vec._scan_rows_c(*arrays(batch), *c.args())
        _scan_loop_py(*arrays(batch), *py.args())
    assert c.picture() == py.picture()
    assert any(w is not None and w.saturated_until > float("-inf") for w in c.hosts_l)


class Boom(Exception):
    pass


class FailingWin(_Win):
    """A window whose eviction raises (after its first `ok` evictions)."""

    __slots__ = ("ok",)

    def __init__(self, window_s: float, cap: int, grouped: bool = False) -> None:
        super().__init__(window_s, cap, grouped)
        self.ok = 1

    def add(self, key: int, now: float) -> None:
        if self.ok == 0:
            raise Boom(key)
        self.ok -= 1
        super().add(key, now)


def run_both(prepare: Callable[[State], None], rows: list[Row]) -> tuple[State, State]:
    """The rows through both loops on twin states; each must raise Boom."""
    out = []
    for loop in (detect_vec._scan_rows_c, _scan_loop_py):
        s = State(2, [2, 2], [9, 9], [9, 9])
        prepare(s)
        with pytest.raises(Boom) as got:
            loop(*arrays(rows), *s.args())
        assert got.value.args[0] is not None
        out.append(s)
    return out[0], out[1]


def test_an_exception_in_add_propagates() -> None:
    def prepare(s: State) -> None:
        s.win_cls = FailingWin

    # Server 0's hosts window holds 2 (its cap); the third host evicts once, the fourth raises.
    rows = [(0, 0, 0, 1.0), (0, 3, 1, 2.0), (1, 4, 2, 3.0), (0, 4, 3, 4.0), (0, 5, 4, 5.0),
            (1, 5, 5, 6.0)]
    c, py = run_both(prepare, rows)
    assert c.picture() == py.picture()
    assert c.hs_l[1] is not None and len(c.hs_l[1]) == 1  # the row after it was not taken


def test_an_exception_in_new_scan_propagates() -> None:
    def prepare(s: State) -> None:
        def new_scan(srv: int) -> None:
            if srv == 1:
                raise Boom(srv)
            State.new_scan(s, srv)
        s.new_scan = new_scan  # type: ignore[method-assign]

    c, py = run_both(prepare, [(0, 0, 0, 1.0), (0, 1, 1, 2.0), (1, 2, 2, 3.0), (0, 2, 3, 4.0)])
    assert c.picture() == py.picture()
    assert c.hs_l[0] is not None and list(c.hs_l[0].values()) == [1.0, 2.0]


def test_a_window_that_is_not_made_is_an_assertion() -> None:
    s = State(1, [2], [2], [2])
    with pytest.raises(AssertionError):
        detect_vec._scan_rows_c(*arrays([(0, 0, 0, 1.0)]), *s.args()[:-1], lambda srv: None)


@pytest.mark.parametrize("what", ["dtype", "length", "server"])
def test_bad_arguments_are_errors(what: str) -> None:
    s = State(1, [2], [2], [2])
    srv, hi, lo, port, now = arrays([(0, 0, 0, 1.0), (0, 1, 1, 2.0)])
    if what == "dtype":
        now = now.astype(np.float32)
    elif what == "length":
        port = port[:1]
    else:
        srv = srv + 1
    with pytest.raises((TypeError, ValueError, IndexError)):
        detect_vec._scan_rows_c(srv, hi, lo, port, now, *s.args())


def test_a_long_loop_leaks_nothing() -> None:
    """Thousands of batches of new keys (each window at its cap, so every row evicts), with
    re-sightings and hot servers: no memory and no reference kept beyond the windows'."""
    rnd = np.random.default_rng(3)
    n, m = 50, 2000
    s = State(n, [8] * n, [4] * n, [4] * n)
    srv = np.sort(rnd.integers(0, n, m)).astype(np.int64)
    hi = np.where(rnd.random(m) < 0.5, rnd.integers(1, 1 << 62, m), 0).astype(np.uint64)
    port = rnd.integers(-1, 70000, m).astype(np.int64)

    def batch(i: int) -> tuple[Any, ...]:
        lo = (np.arange(m, dtype=np.uint64) + np.uint64(i * m // 2))  # half re-sighted
        return srv, hi, lo, port, np.full(m, float(i))

    args = s.args()
    refs = [sys.getrefcount(o) for o in args]
    for i in range(300):
        detect_vec._scan_rows_c(*batch(i), *args)
    gc.collect()
    tracemalloc.start()
    try:
        for i in range(300, 310):  # the windows are full and stay so
            detect_vec._scan_rows_c(*batch(i), *args)
        gc.collect()
        base = tracemalloc.get_traced_memory()[0]
        for i in range(310, 370):
            detect_vec._scan_rows_c(*batch(i), *args)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    # One leaked int or float per row would be >= 3.8 MB here.
    assert grown < 64 * 1024, grown
    assert [sys.getrefcount(o) for o in args] == refs
    assert all(len(d) == 8 for d in s.hs_l if d is not None)


# distinct_rows (the spam windows' loop) against _distinct_loop_py, as above.


@dataclass
class One:
    """A detector's per-server spam lists (VectorDetector's _spam_* attributes) and hot set."""

    n: int
    caps: list[int]
    th: list[int]
    win_l: list[_Win | None] = field(init=False)
    seen_l: list[dict[int, float] | None] = field(init=False)
    hot: set[int] = field(default_factory=set)
    made: list[int] = field(default_factory=list)  # new_win's calls, in order
    win_cls: type[_Win] = _Win

    def __post_init__(self) -> None:
        self.win_l = [None] * self.n
        self.seen_l = [None] * self.n

    def new_win(self, s: int) -> None:
        self.made.append(s)
        w = self.win_l[s] = self.win_cls(WINDOW_S, self.caps[s])
        self.seen_l[s] = w.seen

    def args(self) -> tuple[Any, ...]:
        return (self.seen_l, self.win_l, self.caps, self.th, self.hot, self.new_win)

    def picture(self) -> list[Any]:
        out: list[Any] = [sorted(self.hot), self.made]
        for s in range(self.n):
            w = self.win_l[s]
            if w is None:
                assert self.seen_l[s] is None
                out.append(None)
                continue
            assert self.seen_l[s] is w.seen
            out.append((list(w.seen.items()), w.saturated_until))
        return out


def one_arrays(rows: list[Row]) -> tuple[Any, ...]:
    srv, hi, lo, _port, now = arrays(rows)
    return srv, hi, lo, now


@st.composite
def one_cases(draw: st.DrawFn) -> tuple[list[int], list[int], list[Row], list[list[Row]]]:
    """Caps and count rules per server (a rule of sys.maxsize: a declared mail server's; one
    at, below or above the cap), rows made before (through the Python loop), the batches."""
    n = draw(st.integers(1, 6))
    caps = draw(st.lists(st.integers(1, 6), min_size=n, max_size=n))
    th = draw(st.lists(st.integers(1, 8) | st.just(sys.maxsize), min_size=n, max_size=n))
    hosts = draw(st.integers(1, len(HOSTS)))
    row = st.tuples(st.integers(0, n - 1), st.integers(0, hosts - 1), st.just(0),
                    st.sampled_from([0.0, 1.0, 2.5, 1e9, -3.0]) | st.floats(0, 100))
    before = draw(st.lists(row, max_size=30))
    batches = draw(st.lists(st.lists(row, min_size=1, max_size=60), min_size=1, max_size=4))
    return caps, th, before, batches


def one_twins(caps: list[int], th: list[int], before: list[Row]) -> tuple[One, One]:
    out = []
    for _ in range(2):
        o = One(len(caps), list(caps), list(th))
        if before:
            _distinct_loop_py(*one_arrays(before), *o.args())
        o.hot.clear()
        out.append(o)
    return out[0], out[1]


@settings(max_examples=400, deadline=None)
@given(case=one_cases(), by_server=st.booleans())
def test_c_distinct_loop_equals_python_loop(case: tuple[Any, ...], by_server: bool) -> None:
    caps, th, before, batches = case
    c, py = one_twins(caps, th, before)
    assert c.picture() == py.picture()
    for batch in batches:
        if by_server:  # as _spam_rows hands them over
            batch = sorted(batch, key=lambda r: r[0])
        detect_vec._distinct_rows_c(*one_arrays(batch), *c.args())
        _distinct_loop_py(*one_arrays(batch), *py.args())
        assert c.picture() == py.picture()
    assert not any(th[s] == sys.maxsize for s in c.hot)


@pytest.mark.parametrize("cap", [3, 4, 5])
def test_distinct_loop_at_and_around_the_cap(cap: int) -> None:
    """Four new keys, a re-sight, a fifth and sixth key (rule 4): below, at and past the cap
    (evictions and saturation from the fourth, fifth or sixth new key), the same in both,
    and the window is _Win.add's (the loop only inlines it)."""
    # (HOSTS[2] is HOSTS[0]'s words: not a new key.)
    rows: list[Row] = [(0, 0, 0, 1.0), (0, 1, 0, 2.0), (0, 3, 0, 3.0), (0, 4, 0, 4.0),
                       (0, 1, 0, 5.0), (0, 2, 0, 5.5), (0, 5, 0, 6.0), (0, 6, 0, 7.0)]
    c, py = One(1, [cap], [4]), One(1, [cap], [4])
    detect_vec._distinct_rows_c(*one_arrays(rows), *c.args())
    _distinct_loop_py(*one_arrays(rows), *py.args())
    assert c.picture() == py.picture()
    ref = _Win(WINDOW_S, cap)
    for _s, h, _p, t in rows:
        ref.add((HOSTS[h][0] << 64) | HOSTS[h][1], t)
    w = c.win_l[0]
    assert w is not None
    assert list(w.seen.items()) == list(ref.seen.items())
    assert w.saturated_until == ref.saturated_until
    assert (w.saturated_until > float("-inf")) == (cap < 6)
    assert c.hot == ({0} if cap >= 4 else set())  # at cap 3 the window never holds 4


def run_one_both(prepare: Callable[[One], None], rows: list[Row]) -> tuple[One, One]:
    out = []
    for loop in (detect_vec._distinct_rows_c, _distinct_loop_py):
        o = One(2, [2, 2], [9, 9])
        prepare(o)
        with pytest.raises(Boom) as got:
            loop(*one_arrays(rows), *o.args())
        assert got.value.args[0] is not None
        out.append(o)
    return out[0], out[1]


def test_an_exception_in_distinct_add_propagates() -> None:
    def prepare(o: One) -> None:
        o.win_cls = FailingWin

    rows = [(0, 0, 0, 1.0), (0, 3, 0, 2.0), (1, 4, 0, 3.0), (0, 4, 0, 4.0), (0, 5, 0, 5.0),
            (1, 5, 0, 6.0)]
    c, py = run_one_both(prepare, rows)
    assert c.picture() == py.picture()
    assert c.seen_l[1] is not None and len(c.seen_l[1]) == 1  # the row after it was not taken


def test_an_exception_in_new_win_propagates() -> None:
    def prepare(o: One) -> None:
        def new_win(srv: int) -> None:
            if srv == 1:
                raise Boom(srv)
            One.new_win(o, srv)
        o.new_win = new_win  # type: ignore[method-assign]

    c, py = run_one_both(prepare, [(0, 0, 0, 1.0), (0, 1, 0, 2.0), (1, 2, 0, 3.0),
                                   (0, 2, 0, 4.0)])
    assert c.picture() == py.picture()
    assert c.seen_l[0] is not None and list(c.seen_l[0].values()) == [1.0, 2.0]


def test_distinct_rows_bad_arguments_are_errors() -> None:
    o = One(1, [2], [2])
    srv, hi, lo, now = one_arrays([(0, 0, 0, 1.0), (0, 1, 0, 2.0)])
    with pytest.raises(AssertionError):
        detect_vec._distinct_rows_c(srv, hi, lo, now, *o.args()[:-1], lambda s: None)
    for bad in ((srv, hi, lo, now.astype(np.float32)), (srv, hi[:1], lo, now),
                (srv + 1, hi, lo, now)):
        with pytest.raises((TypeError, ValueError, IndexError)):
            detect_vec._distinct_rows_c(*bad, *One(1, [2], [2]).args())
    with pytest.raises(TypeError, match="distinct_rows: hot must be a set"):
        detect_vec._distinct_rows_c(srv, hi, lo, now, *o.args()[:4], [], o.new_win)


def test_a_long_distinct_loop_leaks_nothing() -> None:
    """As test_a_long_loop_leaks_nothing, for distinct_rows: full windows, every new key
    evicting, half the keys re-sighted, hot servers."""
    rnd = np.random.default_rng(5)
    n, m = 50, 2000
    o = One(n, [8] * n, [4] * n)
    srv = np.sort(rnd.integers(0, n, m)).astype(np.int64)
    hi = np.where(rnd.random(m) < 0.5, rnd.integers(1, 1 << 62, m), 0).astype(np.uint64)

    def batch(i: int) -> tuple[Any, ...]:
        lo = (np.arange(m, dtype=np.uint64) + np.uint64(i * m // 2))
        return srv, hi, lo, np.full(m, float(i))

    args = o.args()
    refs = [sys.getrefcount(x) for x in args]
    for i in range(300):
        detect_vec._distinct_rows_c(*batch(i), *args)
    gc.collect()
    tracemalloc.start()
    try:
        for i in range(300, 310):
            detect_vec._distinct_rows_c(*batch(i), *args)
        gc.collect()
        base = tracemalloc.get_traced_memory()[0]
        for i in range(310, 370):
            detect_vec._distinct_rows_c(*batch(i), *args)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024, grown
    assert [sys.getrefcount(x) for x in args] == refs
    assert all(len(d) == 8 for d in o.seen_l if d is not None)
    assert o.hot == {s for s in range(n) if o.seen_l[s] is not None}
