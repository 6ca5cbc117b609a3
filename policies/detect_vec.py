"""Columnar abuse detector: AbuseDetector's answers, with per-server state in arrays.

VectorDetector is a drop-in for detect.AbuseDetector (same constructor, `ingest`, `evaluate`,
`process`, `active`, `stats`) that also takes SampleColumns (`ingest_columns`), so a columnar
decoder never builds a FlowSample per packet. It gives exactly AbuseDetector's detections,
active list and counters (tests/unit/test_detect_vec.py compares the two on random streams);
the two documented differences are in evidence and top flows, below.

How the state is laid out, and why each part is exact:

* Attribution. (agent, ifIndex) -> server through a dense [agent, ifIndex] table when the
  configured ifIndexes are small, else a sorted int64 key array and searchsorted;
  the by-IP fallback (only when neither port is known, no spoof check) through a sorted array
  of the assigned addresses, as ingest does.
* Rate windows. `_Buckets` as arrays [server, slot, field]. A ring slot's id only ever grows
  (a sample for an older bucket is dropped, one for a newer bucket resets the slot), so after a
  batch a slot holds bucket M = max(its id, the batch's buckets for it) and exactly the rows of
  bucket M (plus its old counts when M was already its id): one maximum, one reset, one
  bincount per field. `_Buckets.done + cur` is the sum over every slot, which is what the
  screen reads. Every count is an integer-valued float64, so sums are exact in any order.
* Distinct windows (spam, scan, spoof, proxy) are created per server only when first used,
  keyed by the address as an int (not its text), and fed in row order, so eviction,
  saturation and order of last sight are AbuseDetector's. Each window takes one kind of row
  only, so the windows are independent: the scan windows (hosts; (host, port) pairs), which
  take most rows of a healthy fleet, are `_Win` (detect._Distinct's rules over a plain dict
  with int keys, no tuple per pair; bench/detect_vec.py measures it) fed by their own loop
  over the rows sorted by server (stably: each server's rows stay in row order), which runs
  in C (policies/_scanwin.c: the same dict operations in the same order on the same dicts)
  when that optional extension is built, else in Python (`scanwin` chooses). The spam
  destinations (a SPAN port's mail senders: one row per SYN) are a `_Win` too, fed the same
  way by a single-window twin of that loop (`_spam_rows`); the others keep
  `detect._Distinct`, fed by the general loop. Texts are built only for a server the screen
  flags.
* Declared and allowed ports (R8): membership by a sorted (server, port) key array; only the
  rows on an undeclared port reach the window loop (its `undeclared` window keeps
  _ServerState's text keys).
* Destination whitelists: each network as a 128-bit value and mask; an outbound row to a
  whitelisted destination counts for the source checks (addresses in use, spoofing) and
  nothing else, as in _ServerState.outbound. (Before, such servers kept a _ServerState fed
  FlowSamples resolved per row: at 10 % of a fleet that was ~30 MB of evidence objects and a
  datagram decode per row.)
* The sampling-rate check (`_check_rate`) per (agent, source type, source index) in arrays:
  each pass takes every source's next judging sample at once; a batch needs as many passes as
  the most judgements one source makes in it (usually one).
* `evaluate` screens every touched server at once (rates from the bucket arrays, addresses in
  use) and builds a detect._ServerState only for a flagged server or one with an active
  detection, whose findings go through AbuseDetector's own _judge/_emit. Windows are pruned at
  the same evaluations as AbuseDetector's (a server's windows are skipped while nothing in
  them can expire: its due time is a lower bound of key time plus window length), and only
  servers whose windows reached a count rule since their last check ("hot") get the window
  rules.

Evidence and top flows come from a bounded store of the last `evidence_rows` attributed rows
(compact columns, each row's `ref`, and its FlowSample when the columns carried `objects`):
* A Detection's `evidence` is, per evidence kind, the newest `evidence_samples` of the server's
  rows of that kind that the store still holds, oldest first: equal to AbuseDetector's whenever
  the store holds them all, else its newest part. A row's FlowSample is the one the columns
  carried (`objects`), else `resolve(refs)` (the raw datagram ring), else one rebuilt from the
  columns (header b"", `at` from the latest evaluate's (now, at) pair).
* `top_flows` replays the server's stored rows through the flow table (cap and the prunes
  evaluate made, in order): equal to AbuseDetector's whenever the store holds every row of the
  server since its oldest live flow began, else the flows of the rows it holds.
* An IPv6 packet with an IPv4-mapped address (::ffff:a.b.c.d) is keyed as the IPv4 address
  (SampleColumns cannot tell them apart), and so matches a whitelisted IPv4 network, not an
  IPv6 one; AbuseDetector keys the two texts apart.
* A sample_pool or sample_sequence of -1 reads as absent (SampleColumns' encoding of None).
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from itertools import compress, repeat
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from . import detect
from .detect import (
    _SCREEN_MARGIN,
    AbuseDetector,
    Detection,
    DetectorStats,
    DetectThresholds,
    Exemption,
    FlowSummary,
    ServerSpec,
    _Active,
    _Buckets,
    _Distinct,
    _FlowKey,
    _ServerState,
)
from .flowcols import NONE, SampleColumns, ip_words, words_ip
from .flowfacts import FlowSample

# The scan-window row loop in C (policies/_scanwin.c): an optional extension, so a machine
# without a compiler or Python's headers still installs and runs the Python loop below.
try:
    from ._scanwin_c import distinct_rows as _distinct_rows_c
    from ._scanwin_c import scan_rows as _scan_rows_c
except ImportError as exc:  # pragma: no cover - depends on the build
    _scan_rows_c = None
    _distinct_rows_c = None
    SCANWIN_C_ERROR: str | None = f"the compiled scan-window loop is not built ({exc})"
else:
    SCANWIN_C_ERROR = None

__all__ = ["Resolver", "VectorDetector"]

Resolver = Callable[[npt.NDArray[np.int64]], list[FlowSample | None]]
"""Turns SampleColumns `ref`s into the FlowSamples they were decoded from (None: gone)."""

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
B1 = npt.NDArray[np.bool_]

_M32 = 0xFFFFFFFF
_M64 = (1 << 64) - 1
_TCP, _UDP, _ICMP, _ICMP6 = 6, 17, 1, 58
_SYN, _RST, _ACK = 0x02, 0x04, 0x10
# Odd multipliers for an address's 64-bit fingerprint (hi * m ^ lo): the first that keeps the
# assigned addresses' fingerprints distinct is used, so a lookup is one uint64 searchsorted
# and a check of both words (exact: a fingerprint names at most one assigned address).
_FP_MULTS = (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93,
             0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53, 0x94D049BB133111EB, 0xBF58476D1CE4E5B9)

# Outbound bucket fields (detect._B_PKTS .. _B_RATE, in that order) and inbound ones.
_O_PKTS, _O_BYTES, _O_UDP, _O_ICMP, _O_SYN, _O_RESP, _O_RESP_BYTES, _O_SAMPLES, _O_RATE = range(9)
_I_PKTS, _I_BYTES, _I_SAMPLES, _I_RATE = range(4)

# Per-row actions of the window loop (bits of `code`).
_A_SPOOF, _A_SPAM, _A_SCAN, _A_FANOUT, _A_ANSWERED, _A_CLIENT, _A_PROXY_IN = (
    1, 2, 4, 8, 16, 32, 64)
# Undeclared service ports (R8), in _ServerState.outbound's order within a row.
_A_OUT_TCP, _A_IN_TCP, _A_IN_UDP, _A_OUT_UDP = (128, 256, 512, 1024)
_A_SENDER = 1 | 2 | 4 | 8 | 128 | 256 | 512 | 1024
_A_RECEIVER = 16 | 32 | 64
# Evidence kinds of a stored row (bits of `ev`): the sender's deques, then the receiver's.
_E_FLOOD, _E_SPAM, _E_SCAN, _E_SPOOF, _E_PROXY, _E_FLOW, _E_PROXY_IN = (
    1, 2, 4, 8, 16, 32, 64)
_E_PORTS = 128  # one row adds one undeclared port at most (in/udp needs dport >= 1024)
_EV_KINDS = (("ev_flood", _E_FLOOD), ("ev_spam", _E_SPAM), ("ev_scan", _E_SCAN),
             ("ev_spoof", _E_SPOOF), ("ev_proxy", _E_PROXY), ("ev_ports", _E_PORTS))

_BULK_ROWS = 16  # a server's scan rows in one batch from which _scan_bulk takes them
_NEVER = 1 << 62  # a count no window reaches (a declared mail server's spam rule)
_NO_BULK = _NEVER  # (with the C loop: never)
_DENSE_PORTS = 1 << 18  # entries of the dense port table at most (2 MB)
_EV_CACHE = 4096  # evidence FlowSamples kept by stored row (see _stored_samples)
_STORE_COLS = ("agent", "input_ifindex", "output_ifindex", "sampling_rate", "frame_length",
               "ip_version", "protocol", "src_port", "dst_port", "tcp_flags", "icmp_type",
               "sample_sequence", "source_id_type", "source_id_index", "sample_pool", "ref")


class _Win:
    """detect._Distinct over a plain dict with int keys: the same keys in the same order of
    last sight, the same evictions and saturation, with no linked-list node per key (as an
    OrderedDict has) and no tuple per (host, port) pair.

    A re-sighted key is popped and stored again, which moves it to the end as
    OrderedDict.move_to_end does; the oldest key is the dict's first. A grouped window's keys
    are (host << 64 | port as 64 bits) and its group is the host.
    """

    __slots__ = ("window_s", "cap", "seen", "saturated_until", "groups")

    def __init__(self, window_s: float, cap: int, grouped: bool = False) -> None:
        self.window_s = window_s
        self.cap = cap
        self.seen: dict[int, float] = {}
        self.saturated_until = float("-inf")
        self.groups: dict[int, int] | None = {} if grouped else None

    def add(self, key: int, now: float) -> None:
        seen = self.seen
        if seen.pop(key, None) is None:
            if len(seen) >= self.cap:
                old = next(iter(seen))
                del seen[old]
                self._ungroup(old)
                self.saturated_until = now + self.window_s
            groups = self.groups
            if groups is not None:
                g = key >> 64
                groups[g] = groups.get(g, 0) + 1
        seen[key] = now

    def _ungroup(self, key: int) -> None:
        groups = self.groups
        if groups is not None:
            g = key >> 64
            left = groups.get(g, 0) - 1
            if left > 0:
                groups[g] = left
            else:
                groups.pop(g, None)

    def prune(self, now: float) -> None:
        """_Distinct.prune: drop the keys before the first one still in the window."""
        cutoff = now - self.window_s
        gone: list[int] = []
        for key, t in self.seen.items():
            if t >= cutoff:
                break
            gone.append(key)
        for key in gone:
            del self.seen[key]
            self._ungroup(key)

    def max_group(self) -> tuple[object, int]:
        if not self.groups:
            return (None, 0)
        g = max(self.groups, key=self.groups.__getitem__)
        return (g, self.groups[g])


class _Windows:
    """A vector server's distinct windows (detect._Distinct, keyed by address ints; the scan
    and spam windows _Win), each made on first use, and the per-row state the proxy rule
    reads in order."""

    __slots__ = ("spam_dsts", "scan_hosts", "scan_pairs", "scan_answered", "spoof_srcs",
                 "spoof_hits", "proxy_clients", "proxy_fanout", "last_proxy_in", "undeclared",
                 "undeclared_hits")

    def __init__(self) -> None:
        self.spam_dsts: _Win | None = None
        self.scan_hosts: _Win | None = None
        self.scan_pairs: _Win | None = None
        self.scan_answered: _Distinct | None = None
        self.spoof_srcs: _Distinct | None = None
        self.spoof_hits: deque[float] | None = None
        self.proxy_clients: _Distinct | None = None
        self.proxy_fanout: _Distinct | None = None
        self.last_proxy_in = float("-inf")
        self.undeclared: _Distinct | None = None  # keyed by text, as _ServerState's
        self.undeclared_hits: dict[str, int] | None = None

    def all(self) -> tuple[_Distinct | _Win | None, ...]:
        return (self.spam_dsts, self.scan_hosts, self.scan_pairs, self.scan_answered,
                self.spoof_srcs, self.proxy_clients, self.proxy_fanout, self.undeclared)

    def undeclared_add(self, what: str, now: float) -> None:
        """_ServerState._undeclared without the evidence (the row store keeps that)."""
        d = self.undeclared
        if d is None:
            raise AssertionError("undeclared window used before it was made")
        d.add(what, now)
        hits = self.undeclared_hits
        assert hits is not None
        if len(hits) < 256 or what in hits:
            hits[what] = hits.get(what, 0) + 1


@lru_cache(maxsize=1 << 16)
def _text(a: int) -> str:
    """An address int as AbuseDetector's text (cached: a flagged server's windows are
    copied at every evaluation while it is judged)."""
    return words_ip(a >> 64, a & _M64)


def _text_port(k: tuple[int, int]) -> tuple[str, int | None]:
    return (_text(k[0]), None if k[1] == NONE else k[1])


def _text_pair(k: int) -> tuple[str, int | None]:
    p = k & _M64
    return _text_port((k >> 64, p - (1 << 64) if p >> 63 else p))


def _copy_distinct(src: _Distinct | _Win | None, dst: _Distinct,
                   conv: Callable[[Any], Any] | None = None) -> None:
    """dst becomes src, order, groups and saturation kept, each key through `conv` (to
    AbuseDetector's text, or to a pair int), or as it is where findings only counts keys."""
    if src is None:
        return
    seen: Mapping[Any, float] = src.seen
    dst.seen = OrderedDict(seen if conv is None else ((conv(k), v) for k, v in seen.items()))
    dst.saturated_until = src.saturated_until
    groups: Mapping[Any, int] | None = src.groups
    if groups is not None:  # only the scan pairs' (int hosts: _IntPairs names the top one)
        dst.groups = dict(groups)


class _Lazy(Sequence[FlowSample]):
    """A finding's evidence, made on first read (see _VecState._fill)."""

    __slots__ = ("_make", "_made")

    def __init__(self, make: Callable[[], tuple[FlowSample, ...]]) -> None:
        self._make: Callable[[], tuple[FlowSample, ...]] | None = make
        self._made: tuple[FlowSample, ...] = ()

    def _get(self) -> tuple[FlowSample, ...]:
        if self._make is not None:
            self._made, self._make = self._make(), None
        return self._made

    def __len__(self) -> int:
        return len(self._get())

    def __getitem__(self, i: Any) -> Any:
        return self._get()[i]

    def __iter__(self) -> Iterator[FlowSample]:
        return iter(self._get())


class _IntPairs(_Distinct):
    """A copy of a scan-pairs _Win as findings reads it: keys stay ints (findings only counts
    them, tests membership and reads times), the top host comes out as text."""

    __slots__ = ()

    def max_group(self) -> tuple[object, int]:
        g, n = super().max_group()
        return (None if g is None else _text(g), n)


def _pair_int(k: tuple[int, int]) -> int:
    """A scan_answered key (address, port) as a scan-pairs key."""
    return k[0] << 64 | (k[1] & _M64)


class _VecState(_ServerState):
    """A vector server as detect._ServerState, built for findings; its top flows are replayed
    from the detector's row store when a Detection is built (now or later, from active())."""

    def __init__(self, spec: ServerSpec, t: DetectThresholds, det: VectorDetector,
                 index: int) -> None:
        super().__init__(spec, t)
        self._det = det
        self._index = index
        self._filled = False

    def _fill(self) -> None:
        """The evidence deques from the row store, on first need: a finding that is held back
        (repeat_s) is never built, and resolving evidence costs a decode per row. Read within
        the evaluation that made this view, so the store is the one it screened."""
        if self._filled:
            return
        self._filled = True
        det = self._det
        for name, rows in det._evidence(self._index, self.t.evidence_samples).items():
            getattr(self, name).extend(rows)
        if det._seq > det._cap:
            # The store has dropped rows, maybe this server's: a short ev_flood no longer
            # proves it holds every flood sample, so onset must not take its first as exact.
            self.ev_flood = deque(self.ev_flood, maxlen=len(self.ev_flood))

    def evidence(self, name: str,
                 keep: Callable[[FlowSample], bool] | None = None) -> Sequence[FlowSample]:
        def made() -> tuple[FlowSample, ...]:
            self._fill()
            return tuple(_ServerState.evidence(self, name, keep))
        return _Lazy(made)

    def onset(self, f: Any, now: float) -> float | None:
        self._fill()
        return super().onset(f, now)

    def top_flows(self, pred: Callable[[_FlowKey], bool] | None,
                  n: int) -> tuple[FlowSummary, ...]:
        flows = self._det._replay_flows(self._index)
        items = [(k, v) for k, v in flows.items() if pred is None or pred(k)]
        items.sort(key=lambda kv: (-kv[1][0], kv[0]))
        return tuple(
            FlowSummary(k[0], k[1], k[2], k[3], k[4], int(v[0]), int(v[1]), int(v[2]))
            for k, v in items[:n]
        )


def _addrs(hi: npt.NDArray[np.uint64], lo: npt.NDArray[np.uint64], rows: I64) -> list[int]:
    """The rows' addresses as ints (hi << 64 | lo)."""
    h = hi[rows]
    out: list[int] = lo[rows].tolist()
    for j in np.flatnonzero(h).tolist():
        out[j] |= int(h[j]) << 64
    return out


def _floor_div(a: F64, b: F64) -> I64:
    """a // b as Python's float floor division gives it (as _Buckets computes bucket ids),
    without numpy's floor_divide (an fmod per element, ~10x the cost): floor(a / b) is exact
    unless a / b lies within rounding of an integer, and only those rows are recomputed."""
    q = a / b
    f = np.floor(q)
    tol = np.abs(q) * 2.0 ** -46 + 2.0 ** -40  # many ulps of q: rounding cannot cross it
    near = (q - f <= tol) | (q - f >= 1 - tol)
    if near.any():
        f[near] = np.floor_divide(a[near], b[near])
    return f.astype(np.int64)


def _last_wins(idx: I64, vals: F64, arr: F64) -> None:
    """arr[idx] = vals where later rows win (numpy leaves repeated-index stores unordered)."""
    if idx.size == 0:
        return
    u, first = np.unique(idx[::-1], return_index=True)
    arr[u] = vals[::-1][first]


def _scan_loop_py(srv: I64, hi: npt.NDArray[np.uint64], lo: npt.NDArray[np.uint64],
                  port: I64, now: F64, hs_l: list[dict[int, float] | None],
                  ps_l: list[dict[int, float]], pg_l: list[dict[int, int]],
                  hosts_l: list[_Win | None], pairs_l: list[_Win | None], caps: list[int],
                  th_h: list[int], th_p: list[int], hot: set[int],
                  new_scan: Callable[[int], None]) -> None:
    """VectorDetector._scan_rows' row loop: each row (server, destination host, destination
    port, time) into the server's scan windows, in row order (policies/_scanwin.c is its
    twin in C, with the same arguments; tests/unit/test_scanwin_c.py holds them equal).

    _Win.add inlined (but for an eviction) on the windows' own dicts. A server goes hot when
    a scan window reaches its count rule, checked only when the window grows: a window that
    reached its rule without a flag at the last screen and merely re-sights keys since cannot
    be flagged by it, and every other rule's rows make their server hot themselves."""
    addrs: list[int] = lo.tolist()
    for j in np.flatnonzero(hi).tolist():
        addrs[j] |= int(hi[j]) << 64
    for s, a, p, t in zip(srv.tolist(), addrs, port.tolist(), now.tolist(), strict=True):
        seen = hs_l[s]
        if seen is None:
            new_scan(s)
            seen = hs_l[s]
            assert seen is not None
        if seen.pop(a, None) is None:
            if len(seen) < caps[s]:
                seen[a] = t
            else:
                hosts_l[s].add(a, t)
            if len(seen) >= th_h[s]:
                hot.add(s)
        else:
            seen[a] = t
        seen = ps_l[s]
        k = a << 64 | (p & _M64)  # host, then the port (-1: none) as 64 bits
        if seen.pop(k, None) is None:
            if len(seen) < caps[s]:
                seen[k] = t
                groups = pg_l[s]
                groups[a] = groups.get(a, 0) + 1
            else:
                pairs_l[s].add(k, t)
            if len(seen) >= th_p[s]:
                hot.add(s)
        else:
            seen[k] = t


def _distinct_loop_py(srv: I64, hi: npt.NDArray[np.uint64], lo: npt.NDArray[np.uint64],
                      now: F64, seen_l: list[dict[int, float] | None],
                      win_l: list[_Win | None], caps: list[int], th: list[int], hot: set[int],
                      new_win: Callable[[int], None]) -> None:
    """VectorDetector._spam_rows' row loop: each row (server, destination, time) into the
    server's one window of address ints (the spam destinations), in row order; the hosts half
    of _scan_loop_py's row, and like it twinned in C (policies/_scanwin.c, distinct_rows, with
    the same arguments; tests/unit/test_scanwin_c.py holds them equal).

    _Win.add inlined (but for an eviction) on the window's own dict. A server goes hot when
    its window reaches th[s], checked only when a key enters (the window grows, or evicts at
    its cap), where the general loop checked every row. That is exact: a server leaves `hot`
    only at a screen that found this window below its rule (the screen re-checks every hot
    server and drops it only when no rule holds); from then on the window changes only by
    new keys (checked here), re-sights (no change in size) and prunes (it shrinks), so it
    cannot reach th[s] unseen. A declared mail server gets no spam rows (_vector_rows), and
    its th[s] is _NEVER all the same (AbuseDetector never counts its mail as spam), so
    it never goes hot by this window."""
    addrs: list[int] = lo.tolist()
    for j in np.flatnonzero(hi).tolist():
        addrs[j] |= int(hi[j]) << 64
    for s, a, t in zip(srv.tolist(), addrs, now.tolist(), strict=True):
        seen = seen_l[s]
        if seen is None:
            new_win(s)
            seen = seen_l[s]
            assert seen is not None
        if seen.pop(a, None) is None:
            if len(seen) < caps[s]:
                seen[a] = t
            else:
                win = win_l[s]
                assert win is not None
                win.add(a, t)
            if len(seen) >= th[s]:
                hot.add(s)
        else:
            seen[a] = t


ScanLoop = Callable[..., None]
ScanImpl = Literal["c", "python"]


def scan_loop(impl: str | None = None) -> tuple[ScanImpl, ScanLoop]:
    """The scan-window row loop to use: `impl` ("c" or "python"), else the compiled one when
    it is built (policies/_scanwin.c, an optional extension of `pip install -e .`), else
    Python. RuntimeError when "c" is asked for and it is not built."""
    if impl == "python":
        return "python", _scan_loop_py
    if impl not in (None, "c"):
        raise ValueError(f"scanwin must be 'c' or 'python', not {impl!r}")
    if _scan_rows_c is not None:
        return "c", _scan_rows_c
    if impl == "c":
        raise RuntimeError(f"scanwin 'c' asked for, but {SCANWIN_C_ERROR}")
    return "python", _scan_loop_py


def distinct_loop(impl: ScanImpl) -> ScanLoop:
    """The spam-window row loop that goes with scan_loop's choice `impl` (the C one and the
    Python one are built and chosen together)."""
    if impl == "c":
        if _distinct_rows_c is None:  # pragma: no cover - scan_loop said "c"
            raise RuntimeError(f"scanwin 'c' asked for, but {SCANWIN_C_ERROR}")
        loop: ScanLoop = _distinct_rows_c
        return loop
    return _distinct_loop_py


class VectorDetector(AbuseDetector):
    """AbuseDetector's detectors over columns; see the module docstring.

    `scanwin` picks the scan-window and spam-window row loops (scan_loop, distinct_loop):
    "c" (RuntimeError when the extension is not built), "python", or None for C when
    built."""

    def __init__(
        self,
        servers: Iterable[ServerSpec],
        templates: Mapping[str, DetectThresholds] | None = None,
        default: DetectThresholds | None = None,
        exemptions: Iterable[Exemption] = (),
        *,
        resolve: Resolver | None = None,
        evidence_rows: int = 1 << 15,
        scanwin: str | None = None,
    ) -> None:
        if evidence_rows < 1:
            raise ValueError("evidence_rows must be at least 1")
        self.default = default or DetectThresholds()
        self.screen = True
        self.templates = dict(templates or {})
        self.resolve = resolve
        specs: list[ServerSpec] = []
        index: dict[str, int] = {}
        owner_of_port: dict[tuple[str, int], str] = {}
        self._owners: dict[str, str] = {}
        by_ip: dict[str, int] = {}
        for spec in servers:
            if spec.id in index:
                raise ValueError(f"server {spec.id!r} listed twice")
            index[spec.id] = len(specs)
            for p in spec.ports:
                if p in owner_of_port:
                    raise ValueError(f"port {p} given to {owner_of_port[p]} and {spec.id}")
                owner_of_port[p] = spec.id
            for a in spec.ips:
                by_ip[a] = len(specs)
                self._owners[a] = spec.id
            specs.append(spec)
        self._specs = specs
        self._index = index
        self._ids = [s.id for s in specs]
        n = len(specs)
        self._t = [self.templates.get(s.template, self.default) for s in specs]
        self._states: dict[str, _ServerState] = {}  # AbuseDetector's; always empty here
        # Destination whitelists as 128-bit (value, mask) words, IPv4 networks as ::ffff:0:0/96
        # (SampleColumns' IPv4 form), grouped by server: _wl_at[s] .. _wl_at[s + 1].
        nets: list[tuple[int, int, int, int, int]] = []
        for i, spec in enumerate(specs):
            for text in spec.whitelist:
                net = ipaddress.ip_network(text, strict=False)
                value = int(net.network_address)
                plen = net.prefixlen
                if net.version == 4:
                    value, plen = 0xFFFF << 32 | value, plen + 96
                mask = ((1 << plen) - 1) << (128 - plen)
                nets.append((i, value >> 64, value & _M64, mask >> 64, mask & _M64))
        nets.sort(key=lambda x: x[0])
        self._wl_srv = np.array([x[0] for x in nets], dtype=np.int64)
        self._wl_words = np.array([x[1:] for x in nets], dtype=np.uint64).reshape(-1, 4)
        self._wl_at = np.searchsorted(self._wl_srv, np.arange(n + 1))
        # Templates: per-server index, and the per-template values the vector code reads.
        tlist: list[DetectThresholds] = []
        tix = np.zeros(n, dtype=np.int64)
        for i, t in enumerate(self._t):
            for j, u in enumerate(tlist):
                if u is t:
                    tix[i] = j
                    break
            else:
                tix[i] = len(tlist)
                tlist.append(t)
        self._tlist = tlist
        self._tix = tix
        self._luts: dict[str, npt.NDArray[np.bool_]] = {}  # _member's port tables

        def per(name: str) -> F64:
            return np.array([float(getattr(t, name)) for t in self._t], dtype=np.float64)

        self._bucket_s = per("bucket_s")
        self._nslots = np.array([max(1, round(t.rate_window_s / t.bucket_s)) for t in self._t],
                                dtype=np.int64)
        self._window = per("rate_window_s")
        self._lim = np.stack([per("flood_pps"), per("flood_bps"), per("udp_pps"),
                              per("icmp_pps"), per("syn_pps")]) if n else np.zeros((5, 0))
        self._flow_horizon = np.array([max(t.rate_window_s, t.spoof_window_s) for t in self._t],
                                      dtype=np.float64)
        self._mail = np.array([s.mail_server for s in specs], dtype=np.bool_)
        self._has_declared = np.array([s.declared_ports is not None for s in specs],
                                      dtype=np.bool_)
        self._has_allowed = np.array([s.allowed_out_ports is not None for s in specs],
                                     dtype=np.bool_)

        def port_keys(name: str) -> I64:
            return np.array(sorted({i << 32 | p for i, sp in enumerate(specs)
                                    for p in (getattr(sp, name) or ()) if 0 <= p <= _M32}),
                            dtype=np.int64)

        self._declared_keys = port_keys("declared_ports")
        self._allowed_keys = port_keys("allowed_out_ports")
        self._contract = np.array([s.contract_ips for s in specs], dtype=np.int64)
        nmax = int(self._nslots.max()) if n else 1
        self._nmax = nmax
        self._out_ids = np.full((n * nmax,), -1, dtype=np.int64)
        self._out_vals = np.zeros((9, n * nmax), dtype=np.float64)  # [field, slot]
        self._in_ids = np.full((n * nmax,), -1, dtype=np.int64)
        self._in_vals = np.zeros((4, n * nmax), dtype=np.float64)
        self._dirty = np.zeros(n, dtype=np.bool_)
        self._unscreened = np.array([not t.response_ratio >= 0 for t in self._t], dtype=np.bool_)
        self._rate_suspect = np.full(n, -np.inf, dtype=np.float64)
        self._reply_until = np.full(n, -np.inf, dtype=np.float64)
        self._last_flow_prune = np.full(n, -np.inf, dtype=np.float64)
        self._win: dict[int, _Windows] = {}
        # Servers whose windows may satisfy a count rule (the screen re-checks them), and for
        # each server a time before which none of its window keys can expire (min over its
        # keys of time + that window's length, or a lower bound of it): until then a prune
        # would remove nothing, so the screen skips it (as _ServerState.floor does).
        self._hot: set[int] = set()
        self._wdue = np.full(n, np.inf, dtype=np.float64)
        self._scanwin = np.array([t.scan_window_s for t in self._t], dtype=np.float64)
        # The scan windows by server (the same objects as _Windows'), for _scan_rows' loop;
        # servers that ever received a proxy-bound packet (only theirs can fan out).
        self._scan_h: list[_Win | None] = [None] * n
        self._scan_p: list[_Win | None] = [None] * n
        # Their dicts (seen of hosts, seen and groups of pairs: the same objects, never
        # replaced) and caps, for the loop without attribute lookups.
        self._scan_hs: list[dict[int, float] | None] = [None] * n
        self._scan_ps: list[dict[int, float]] = [{}] * n
        self._scan_pg: list[dict[int, int]] = [{}] * n
        self._caps = [t.distinct_cap for t in self._t]
        # The scan-window row loop, "c" or "python" (scan_loop; None: C when built). The C
        # loop takes a server's many rows for less than _scan_bulk does (bench/scanwin.py,
        # `heavy`), so with it every row takes the loop.
        self.scanwin, self._scan_loop = scan_loop(scanwin)
        # The spam windows likewise (_spam_rows): the windows, their dicts (never replaced),
        # and each server's count rule, none for a declared mail server (see
        # _distinct_loop_py).
        self._distinct_loop = distinct_loop(self.scanwin)
        self._spam_w: list[_Win | None] = [None] * n
        self._spam_s: list[dict[int, float] | None] = [None] * n
        self._th_spam = [_NEVER if spec.mail_server else t.spam_distinct_dsts
                         for spec, t in zip(specs, self._t, strict=True)]
        self._bulk_rows = _BULK_ROWS if self.scanwin == "python" else _NO_BULK
        self._proxied = np.zeros(n, dtype=np.bool_)
        self._follow = np.array([t.proxy_follow_s for t in self._t], dtype=np.float64)
        self._th_hosts = [t.scan_distinct_hosts for t in self._t]
        self._th_ports = [t.scan_distinct_ports for t in self._t]
        self._minwin = np.array([min(t.spam_window_s, t.scan_window_s, t.spoof_window_s,
                                     t.ports_window_s,
                                     t.proxy_window_s) for t in self._t], dtype=np.float64)
        # Attribution tables.
        self._agents: dict[str, int] = {}
        self._agent_names: list[str] = []
        pk = []
        for p, sid in owner_of_port.items():
            if 0 <= p[1] <= _M32:
                pk.append((self._agent_id(p[0]) << 32 | p[1], index[sid]))
        pk.sort()
        self._port_keys = np.array([k for k, _ in pk], dtype=np.int64)
        self._port_srv = np.array([s for _, s in pk], dtype=np.int64)
        # The same as a dense [agent, ifIndex] table when that is small (switches number
        # their ports from 1 on; some vendors from 10,000 or more: those keep searchsorted).
        width = int((self._port_keys & _M32).max()) + 1 if pk else 0
        self._port_width = width
        self._port_dense: I64 | None = None
        if pk and len(self._agent_names) * width <= _DENSE_PORTS:
            dense = np.full(len(self._agent_names) * width, -1, dtype=np.int64)
            dense[(self._port_keys >> 32) * width + (self._port_keys & _M32)] = self._port_srv
            self._port_dense = dense
        # Assigned addresses by fingerprint; by-IP owner; (address, server) pairs.
        words = {a: ip_words(a)[:2] for a in by_ip}
        uniq = sorted(set(words.values()))
        ahi = np.array([w[0] for w in uniq], dtype=np.uint64)
        alo = np.array([w[1] for w in uniq], dtype=np.uint64)
        for m in _FP_MULTS:
            fp = (ahi * np.uint64(m)) ^ alo
            if np.unique(fp).size == fp.size:
                self._fp_mult = np.uint64(m)
                break
        else:  # pragma: no cover - eight 64-bit collisions in one fleet
            raise ValueError("assigned addresses collide under every fingerprint")
        o = np.argsort(fp, kind="stable")
        self._fp, self._ahi, self._alo = fp[o], ahi[o], alo[o]
        at_of = {w: int(k) for k, w in zip(np.argsort(o).tolist(), uniq, strict=True)}
        self._ip_srv = np.full(len(uniq), -1, dtype=np.int64)
        for a, srv in by_ip.items():
            self._ip_srv[at_of[words[a]]] = srv
        pairs = sorted({at_of[words[a]] * max(n, 1) + i for i, sp in enumerate(specs)
                        for a in sp.ips})
        self._pair_keys = np.array(pairs, dtype=np.int64)
        self._pair_srv = self._pair_keys % max(n, 1)
        self._pair_text = [words_ip(int(self._ahi[k // max(n, 1)]), int(self._alo[k // max(n, 1)]))
                           for k in pairs]
        self._used = np.zeros(len(pairs), dtype=np.bool_)
        # The sampling-rate check: sorted packed source keys and their baselines.
        self._rc_key = np.zeros(0, dtype=np.int64)
        self._rc_seq = np.zeros(0, dtype=np.int64)
        self._rc_pool = np.zeros(0, dtype=np.int64)
        self._rc_odd: dict[tuple[int, int, int], int] = {}  # keys too wide to pack
        # The row store (evidence, top flows) and the flow-table prunes evaluate made.
        r = evidence_rows
        self._cap = r
        self._seq = 0
        self._s_seq = np.full(r, -1, dtype=np.int64)
        self._s_out = np.full(r, -1, dtype=np.int64)
        self._s_in = np.full(r, -1, dtype=np.int64)
        self._s_ev = np.zeros(r, dtype=np.uint16)
        self._s_now = np.zeros(r, dtype=np.float64)
        self._s_words = np.zeros((r, 4), dtype=np.uint64)
        self._s_has = np.zeros((r, 2), dtype=np.bool_)
        self._s_cols = {c: np.zeros(r, dtype=np.int64) for c in _STORE_COLS}
        self._s_obj: list[FlowSample | None] = [None] * r
        self._has_objs = False  # whether any stored row ever carried its FlowSample
        self._ev_cache: dict[int, FlowSample] = {}  # see _stored_samples
        self._pev: deque[tuple[int, I64, F64]] = deque()  # (seq, servers, horizons)
        self._clock: tuple[float, datetime] | None = None
        self._exemptions: tuple[Exemption, ...] = tuple(exemptions)
        self._active: dict[tuple[str, str, str], _Active] = {}
        self.stats = DetectorStats()

    def _agent_id(self, name: str) -> int:
        a = self._agents.get(name)
        if a is None:
            a = self._agents[name] = len(self._agents)
            self._agent_names.append(name)
        return a

    def server_ids(self) -> list[str]:
        return list(self._ids)

    # ---- samples in ----------------------------------------------------------------------

    def ingest(self, samples: Iterable[FlowSample]) -> None:
        batch = list(samples)
        if batch:
            self.ingest_columns(SampleColumns.from_samples(batch))

    def ingest_columns(self, cols: SampleColumns) -> None:
        n = len(cols)
        if n == 0:
            return
        ag = np.array([self._agent_id(a) for a in cols.agent_names], dtype=np.int64)[cols.agent]
        sp = self._port_lookup(ag, cols.input_ifindex)
        rp = self._port_lookup(ag, cols.output_ifindex)
        port_hit = (sp >= 0) | (rp >= 0)
        si = np.full(n, -1, dtype=np.int64)
        ri = np.full(n, -1, dtype=np.int64)
        miss = np.flatnonzero(~port_hit)  # only these fall back to the assigned IPs
        if miss.size:
            m = miss[cols.has_src[miss]]
            si[m] = self._ip_lookup(cols.src_hi[m], cols.src_lo[m])
            m = miss[cols.has_dst[miss]]
            ri[m] = self._ip_lookup(cols.dst_hi[m], cols.dst_lo[m])
        sender = np.where(port_hit, sp, si)
        receiver = np.where(port_hit, rp, ri)
        receiver = np.where(receiver == sender, -1, receiver)
        ip_hit = ~port_hit & (sender >= 0) | ~port_hit & (receiver >= 0)
        self.stats.samples += n
        self.stats.by_port += int(np.count_nonzero(port_hit))
        self.stats.by_ip += int(np.count_nonzero(ip_hit))
        self.stats.unattributed += int(np.count_nonzero(~port_hit & ~ip_hit))
        self._check_rates(cols, ag, np.where(sp >= 0, sp, rp))
        if not self._ids:
            return
        if (sender >= 0).any() or (receiver >= 0).any():
            self._vector_rows(cols, ag, sender, receiver, port_hit)

    def _port_lookup(self, ag: I64, ifindex: I64) -> I64:
        dense = self._port_dense
        if dense is not None:
            w = self._port_width
            ok = (ifindex >= 0) & (ifindex < w) & (ag < dense.size // w)
            return np.where(ok, dense[np.where(ok, ag * w + ifindex, 0)], -1)
        keys = self._port_keys
        out = np.full(ag.shape[0], -1, dtype=np.int64)
        if keys.size == 0:
            return out
        ok = (ifindex >= 0) & (ifindex <= _M32)
        q = (ag << 32) | np.where(ok, ifindex, 0)
        i = np.minimum(np.searchsorted(keys, q), keys.size - 1)
        hit = ok & (keys[i] == q)
        out[hit] = self._port_srv[i[hit]]
        return out

    def _addr(self, hi: npt.NDArray[np.uint64], lo: npt.NDArray[np.uint64]) -> I64:
        """Index of each address among the assigned ones, -1 when not assigned."""
        fps = self._fp
        if fps.size == 0 or hi.size == 0:
            return np.full(hi.shape[0], -1, dtype=np.int64)
        q = (hi * self._fp_mult) ^ lo
        i = np.minimum(np.searchsorted(fps, q), fps.size - 1)
        hit = (fps[i] == q) & (self._ahi[i] == hi) & (self._alo[i] == lo)
        return np.where(hit, i, -1)

    def _ip_lookup(self, hi: npt.NDArray[np.uint64], lo: npt.NDArray[np.uint64]) -> I64:
        a = self._addr(hi, lo)
        if a.size == 0 or self._ip_srv.size == 0:
            return a
        return np.where(a >= 0, self._ip_srv[np.maximum(a, 0)], -1)

    def _own(self, hi: npt.NDArray[np.uint64], lo: npt.NDArray[np.uint64], srv: I64) -> I64:
        """Index of (address, server) among the assigned pairs, -1 when not the server's."""
        keys = self._pair_keys
        a = self._addr(hi, lo)
        if keys.size == 0 or a.size == 0:
            return np.full(hi.shape[0], -1, dtype=np.int64)
        q = a * max(len(self._ids), 1) + srv
        i = np.minimum(np.searchsorted(keys, q), keys.size - 1)
        return np.where((a >= 0) & (keys[i] == q), i, -1)

    # ---- rows ------------------------------------------------------------------------------

    def _rebuild(self, kw: dict[str, Any]) -> FlowSample:
        """A FlowSample from column values alone: no header bytes; `at` from the clock pair
        of the latest evaluate (the columns carry no wall time)."""
        now, at = self._clock or (0.0, datetime.fromtimestamp(0, UTC))
        try:
            when = at + timedelta(seconds=kw["now"] - now)
        except (OverflowError, ValueError):
            when = at
        return FlowSample(source="sflow", at=when, header=b"", **kw)

    def _vector_rows(self, cols: SampleColumns, ag: I64, so: I64, ro: I64,
                     port_hit: B1) -> None:
        n = len(cols)
        now = cols.now
        rate = np.where(cols.sampling_rate > 0, cols.sampling_rate, 1)
        size = cols.frame_length * rate
        proto = cols.protocol
        flags = cols.tcp_flags
        sport = cols.src_port
        dport = cols.dst_port
        has_src, has_dst = cols.has_src, cols.has_dst
        out_rows = so >= 0
        in_rows = ro >= 0
        if not np.isfinite(now[out_rows | in_rows]).all():
            raise ValueError("cannot convert float NaN or infinity to integer: a sample's "
                             "`now` must be finite")
        s0 = np.maximum(so, 0)
        r0 = np.maximum(ro, 0)
        self._dirty[so[out_rows]] = True
        self._dirty[ro[in_rows]] = True
        ev = np.zeros(n, dtype=np.uint16)
        code = np.zeros(n, dtype=np.uint16)
        # Outbound: addresses in use, spoofed sources.
        own = np.full(n, -1, dtype=np.int64)
        osrc = np.flatnonzero(out_rows & has_src)
        own[osrc] = self._own(cols.src_hi[osrc], cols.src_lo[osrc], so[osrc])
        self._used[own[own >= 0]] = True
        spoof = out_rows & has_src & (own < 0) & port_hit & ~_local_only(cols.src_hi,
                                                                         cols.src_lo)
        code |= np.uint16(_A_SPOOF) * spoof
        ev |= np.uint16(_E_SPOOF) * spoof
        # A whitelisted destination: the source checks above, nothing else (as outbound).
        wl = out_rows & has_dst & (self._wl_at[s0 + 1] > self._wl_at[s0])
        if wl.any():
            rows = np.flatnonzero(wl)
            hit = self._whitelisted(so[rows], cols.dst_hi[rows], cols.dst_lo[rows])
            out_rows = out_rows.copy()
            out_rows[rows[hit]] = False
        # Outbound classification, as _ServerState.outbound.
        tcp = proto == _TCP
        hasf = flags >= 0
        f = np.where(hasf, flags, 0)
        syn_bit = (f & _SYN) != 0
        ack = (f & _ACK) != 0
        rst = (f & _RST) != 0
        tcpf = tcp & hasf
        icmp_t = cols.icmp_type
        response = (tcpf & ((syn_bit & ack) | (~syn_bit & rst))) | (
            (proto == _ICMP) & ((icmp_t == 0) | (icmp_t == 3) | (icmp_t == 4) | (icmp_t == 11)
                                | (icmp_t == 12))) | (
            (proto == _ICMP6) & (icmp_t >= 0) & ((icmp_t < 128) | (icmp_t == 129)))
        syn = tcpf & syn_bit & ~ack
        self._unscreened[so[out_rows & (size < 0)]] = True
        ev |= np.uint16(_E_FLOOD) * out_rows
        ev |= np.uint16(_E_FLOW) * (out_rows & has_dst)
        if out_rows.any():
            rows = np.flatnonzero(out_rows)
            resp = response[rows]
            r = rate[rows].astype(np.float64)
            z = np.zeros(rows.size, dtype=np.float64)
            sz = size[rows].astype(np.float64)
            init = ~resp
            p = proto[rows]
            fields = [
                np.where(init, r, z), np.where(init, sz, z),
                np.where(init & (p == _UDP), r, z),
                np.where(init & ((p == _ICMP) | (p == _ICMP6)), r, z),
                np.where(init & (p != _UDP) & (p != _ICMP) & (p != _ICMP6) & syn[rows], r, z),
                np.where(resp, r, z), np.where(resp, sz, z), np.ones(rows.size), r]
            self._bucket_add(self._out_ids, self._out_vals, so[rows], now[rows], fields)
        # Windows the sender adds to (only with a destination).
        dst_out = out_rows & has_dst
        mail = self._member(s0, dport, "mail_ports") & ~self._mail[s0]
        pp_out = self._member(s0, dport, "proxy_ports")
        tcp_syn = dst_out & syn
        code |= np.uint16(_A_SPAM) * (tcp_syn & mail)
        ev |= np.uint16(_E_SPAM) * (tcp_syn & mail)
        code |= np.uint16(_A_SCAN) * tcp_syn
        ev |= np.uint16(_E_SCAN) * tcp_syn
        code |= np.uint16(_A_FANOUT) * (tcp_syn & ~pp_out)
        # The elif chain of outbound: a SYN-ACK without a source port falls through to it.
        mid_mail = dst_out & tcpf & ~syn & ~(syn_bit & (sport >= 0)) & mail & ~rst
        code |= np.uint16(_A_SPAM) * mid_mail
        ev |= np.uint16(_E_SPAM) * mid_mail
        udp_pair = dst_out & (proto == _UDP) & (dport >= 0) & (sport >= 0)
        code |= np.uint16(_A_SCAN) * udp_pair
        # Declared ports (R8): only servers that declared any are judged.
        has_decl = self._has_declared[s0]
        has_allow = self._has_allowed[s0]
        code |= np.uint16(_A_OUT_TCP) * (
            tcp_syn & has_allow & ~self._port_in(self._allowed_keys, s0, dport))
        code |= np.uint16(_A_IN_TCP) * (
            dst_out & tcpf & ~syn & syn_bit & (sport >= 0) & has_decl
            & ~self._port_in(self._declared_keys, s0, sport))
        code |= np.uint16(_A_IN_UDP) * (
            udp_pair & has_decl & (sport < 1024) & (dport >= 1024)
            & ~self._port_in(self._declared_keys, s0, sport))
        code |= np.uint16(_A_OUT_UDP) * (
            udp_pair & has_allow & (dport < 1024) & ~self._port_in(self._allowed_keys, s0, dport))
        # Inbound.
        if in_rows.any():
            rows = np.flatnonzero(in_rows)
            r = rate[rows].astype(np.float64)
            # inbound never sets _B_RATE: that slot stays 0, as in _ServerState.inbound.
            fields = [r, size[rows].astype(np.float64), np.ones(rows.size), np.zeros(rows.size)]
            self._bucket_add(self._in_ids, self._in_vals, ro[rows], now[rows], fields)
            one = rows[rate[rows] == 1]
            _last_wins(ro[one], now[one] + self._scan_window(ro[one]), self._reply_until)
        to_proxy = in_rows & tcpf & self._member(r0, dport, "proxy_ports") & has_src
        code |= np.uint16(_A_ANSWERED) * (in_rows & tcpf & syn_bit & ack & has_src)
        client = in_rows & tcpf & syn_bit & ~ack & to_proxy
        code |= np.uint16(_A_CLIENT) * client
        ev |= np.uint16(_E_PROXY_IN) * client
        code |= np.uint16(_A_PROXY_IN) * (to_proxy & ~rst)
        self._window_rows(cols, code, ev, so, ro)
        self._store(cols, ag, so, ro, ev)

    def _whitelisted(self, srv: I64, hi: npt.NDArray[np.uint64],
                     lo: npt.NDArray[np.uint64]) -> B1:
        """Whether each row's destination is in its server's whitelist (every row's server
        has one): rows expanded by their server's networks, matched under each mask."""
        start = self._wl_at[srv]
        count = self._wl_at[srv + 1] - start
        row = np.repeat(np.arange(srv.size), count)
        net = np.arange(row.size) - np.repeat(np.cumsum(count) - count, count) + start[row]
        w = self._wl_words[net]
        match = ((hi[row] & w[:, 2]) == w[:, 0]) & ((lo[row] & w[:, 3]) == w[:, 1])
        return np.bincount(row[match], minlength=srv.size) > 0

    def _port_in(self, keys: I64, srv: I64, port: I64) -> B1:
        """(server, port) among the sorted keys (server << 32 | port), per row."""
        if keys.size == 0:
            return np.zeros(srv.shape[0], dtype=np.bool_)
        ok = (port >= 0) & (port <= _M32)
        q = (srv << 32) | np.where(ok, port, 0)
        i = np.minimum(np.searchsorted(keys, q), keys.size - 1)
        return np.asarray(ok & (keys[i] == q), dtype=np.bool_)

    def _scan_window(self, srv: I64) -> F64:
        return np.array([self._t[s].scan_window_s for s in srv.tolist()], dtype=np.float64)

    def _member(self, srv: I64, port: I64, name: str) -> B1:
        """port in getattr(server's template, name), per row."""
        lut = self._luts.get(name)
        if lut is None:  # [template, port]; column 65536 stands for any port out of range
            lut = np.zeros((max(len(self._tlist), 1), 65537), dtype=np.bool_)
            for j, t in enumerate(self._tlist):
                ports = [p for p in getattr(t, name) if 0 <= p <= 65535]
                lut[j, ports] = True
            self._luts[name] = lut
        pc = np.where((port >= 0) & (port <= 65535), port, 65536)
        if lut.shape[0] == 1:
            return np.asarray(lut[0, pc], dtype=np.bool_)
        return np.asarray(lut[self._tix[srv], pc], dtype=np.bool_)

    def _bucket_add(self, ids: I64, vals: F64, srv: I64, now: F64, fields: list[F64]) -> None:
        """Rows into the rate rings: see the module docstring for why this is _Buckets.at.

        Only the slots the rows touch are read or written (a ring holds servers x slots), with
        no sort: a row for a newer bucket than its slot's moves the slot to the newest such
        bucket and clears it, then the rows of each slot's bucket add in (the last field, the
        sampling rate, is a maximum)."""
        bid = _floor_div(now, self._bucket_s[srv])
        flat = srv * self._nmax + bid % self._nslots[srv]
        adv = bid > ids[flat]
        if adv.any():
            fa = flat[adv]
            np.maximum.at(ids, fa, bid[adv])
            for row in vals:
                row[fa] = 0.0
        keep = bid == ids[flat]
        last = len(fields) - 1
        if keep.all():
            for j, f in enumerate(fields):
                (np.maximum if j == last else np.add).at(vals[j], flat, f)
        else:
            fk = flat[keep]
            for j, f in enumerate(fields):
                (np.maximum if j == last else np.add).at(vals[j], fk, f[keep])

    def _window_rows(self, cols: SampleColumns, code: npt.NDArray[np.uint16],
                     ev: npt.NDArray[np.uint16], so: I64, ro: I64) -> None:
        """The rows that add to distinct windows, in row order (eviction is order-bound).

        Each window is fed by one kind of row only, so the windows are independent: the scan
        windows (most rows of a healthy fleet) go through _scan_rows' own loop, in row order,
        and the general loop below takes the other kinds, also in row order. A fan-out row
        whose server never received a proxy-bound packet adds nothing (its last_proxy_in is
        -inf), so it skips the general loop."""
        all_rows = np.flatnonzero(code)
        if all_rows.size == 0:
            return
        c_all = code[all_rows]
        self._scan_rows(cols, all_rows[(c_all & _A_SCAN) != 0], so)
        self._spam_rows(cols, all_rows[(c_all & _A_SPAM) != 0], so)
        loop_code = code & np.uint16(~_A_SCAN & 0xFFFF)
        self._proxied[ro[all_rows[(c_all & _A_PROXY_IN) != 0]]] = True
        fan = all_rows[(c_all & _A_FANOUT) != 0]
        if fan.size:
            sf = so[fan]
            idle = ~self._proxied[sf] & np.isfinite(self._follow[sf])
            loop_code[fan[idle]] &= np.uint16(~_A_FANOUT & 0xFFFF)
        rows = all_rows[(loop_code[all_rows] & np.uint16(~_A_SPAM & 0xFFFF)) != 0]
        wins = self._win
        tl = self._t

        srcs = _addrs(cols.src_hi, cols.src_lo, rows)
        dsts = _addrs(cols.dst_hi, cols.dst_lo, rows)
        hot = self._hot
        # The other windows (not the scan and spam ones: their own loops), each in row order.
        for i, c, s, r, now, a_src, a_dst, sport, dport in zip(
                rows.tolist(), loop_code[rows].tolist(), so[rows].tolist(), ro[rows].tolist(),
                cols.now[rows].tolist(), srcs, dsts, cols.src_port[rows].tolist(),
                cols.dst_port[rows].tolist(), strict=True):
            if c & _A_SENDER:
                w = wins.get(s)
                if w is None:
                    w = wins[s] = _Windows()
                t = tl[s]
                # Fan-out reads last_proxy_in, which the proxy-bound rows set in row order.
                if c & _A_FANOUT and now - w.last_proxy_in <= t.proxy_follow_s:
                    if w.proxy_fanout is None:
                        w.proxy_fanout = _Distinct(t.proxy_window_s, t.distinct_cap)
                    w.proxy_fanout.add((a_dst, dport), now)
                    ev[i] |= _E_PROXY
                    hot.add(s)
                if c & _A_SPOOF:
                    if w.spoof_srcs is None:
                        w.spoof_srcs = _Distinct(t.spoof_window_s, t.distinct_cap)
                        w.spoof_hits = deque(maxlen=max(t.spoof_min_samples * 4, 64))
                    w.spoof_srcs.add(a_src, now)
                    assert w.spoof_hits is not None
                    w.spoof_hits.append(now)
                    hot.add(s)
                if c & 1920:  # any undeclared port: _ServerState.outbound's order
                    if w.undeclared is None:
                        w.undeclared = _Distinct(t.ports_window_s, 256)
                        w.undeclared_hits = {}
                    if c & _A_OUT_TCP:
                        w.undeclared_add(f"out/tcp/{None if dport == NONE else dport}", now)
                    if c & _A_IN_TCP:
                        w.undeclared_add(f"in/tcp/{sport}", now)
                    if c & _A_IN_UDP:
                        w.undeclared_add(f"in/udp/{sport}", now)
                    if c & _A_OUT_UDP:
                        w.undeclared_add(f"out/udp/{dport}", now)
                    ev[i] |= _E_PORTS
                    hot.add(s)
            if c & _A_RECEIVER:
                w = wins.get(r)
                if w is None:
                    w = wins[r] = _Windows()
                t = tl[r]
                if c & _A_ANSWERED:
                    if w.scan_answered is None:
                        w.scan_answered = _Distinct(t.scan_window_s, t.distinct_cap)
                    w.scan_answered.add((a_src, sport), now)
                if c & _A_CLIENT:
                    if w.proxy_clients is None:
                        w.proxy_clients = _Distinct(t.proxy_window_s, t.distinct_cap)
                    w.proxy_clients.add((a_src, sport), now)
                    hot.add(r)
                if c & _A_PROXY_IN:
                    w.last_proxy_in = now
        # No key can expire before its server's due time (see _screen): a row that adds only
        # to the scan windows (an idle fan-out adds nothing) brings it to now + scan_window_s
        # at the earliest, any other row to now + the server's shortest window.
        out_rows = all_rows[(c_all & _A_SENDER) != 0]
        if out_rows.size:
            srv = so[out_rows]
            only_scan = (loop_code[out_rows] & np.uint16(_A_SENDER & 0xFFFF)) == 0
            np.minimum.at(self._wdue, srv, cols.now[out_rows] + np.where(
                only_scan, self._scanwin[srv], self._minwin[srv]))
        in_rows = all_rows[(c_all & _A_RECEIVER) != 0]
        if in_rows.size:
            srv = ro[in_rows]
            np.minimum.at(self._wdue, srv, cols.now[in_rows] + self._minwin[srv])

    def _new_scan(self, s: int) -> None:
        """Server s's scan windows (hosts, then (host, port) pairs grouped by host), made on
        its first scan row (and its _Windows with them, if it has none yet)."""
        w = self._win.get(s)
        if w is None:
            w = self._win[s] = _Windows()
        t = self._t[s]
        d = w.scan_hosts = self._scan_h[s] = _Win(t.scan_window_s, t.distinct_cap)
        p = w.scan_pairs = self._scan_p[s] = _Win(t.scan_window_s, t.distinct_cap, grouped=True)
        assert p.groups is not None
        self._scan_hs[s], self._scan_ps[s], self._scan_pg[s] = d.seen, p.seen, p.groups

    def _new_spam(self, s: int) -> None:
        """Server s's spam-destination window, made on its first spam row (and its _Windows
        with it, if it has none yet)."""
        w = self._win.get(s)
        if w is None:
            w = self._win[s] = _Windows()
        t = self._t[s]
        d = w.spam_dsts = self._spam_w[s] = _Win(t.spam_window_s, t.distinct_cap)
        self._spam_s[s] = d.seen

    def _spam_rows(self, cols: SampleColumns, rows: I64, so: I64) -> None:
        """The spam rows (to a mail port, from a server that is not a declared mail server,
        not to a whitelisted destination) into their senders' spam windows, each server's
        in row order (as _scan_rows orders them), with nothing else done per row."""
        if rows.size == 0:
            return
        rows = rows[np.argsort(so[rows], kind="stable")]

        def col(a: npt.NDArray[Any], t: type[np.generic]) -> npt.NDArray[Any]:
            return np.ascontiguousarray(a[rows], dtype=t)

        self._distinct_loop(np.ascontiguousarray(so[rows], dtype=np.int64),
                            col(cols.dst_hi, np.uint64), col(cols.dst_lo, np.uint64),
                            col(cols.now, np.float64), self._spam_s, self._spam_w, self._caps,
                            self._th_spam, self._hot, self._new_spam)

    def _scan_rows(self, cols: SampleColumns, rows: I64, so: I64) -> None:
        """The scan rows (outbound SYNs, UDP with both ports) into their senders' scan
        windows, in row order, with nothing else done per row."""
        if rows.size == 0:
            return
        # Each server's rows in row order, the servers one after another: the windows of two
        # servers are independent, and their objects are then visited in memory order.
        rows = rows[np.argsort(so[rows], kind="stable")]
        srv = so[rows]
        # A server with many rows in the batch (an attacker, a SPAN port) takes them in bulk
        # (with the Python loop; see _bulk_rows).
        heads = np.flatnonzero(np.diff(srv, prepend=-1))
        counts = np.diff(heads, append=srv.size)
        bulk = counts >= self._bulk_rows
        if bulk.any():
            keep = np.ones(srv.size, dtype=np.bool_)
            for h, c in zip(heads[bulk].tolist(), counts[bulk].tolist(), strict=True):
                if self._scan_bulk(cols, rows[h:h + c], int(srv[h])):
                    keep[h:h + c] = False
            rows, srv = rows[keep], srv[keep]
        if rows.size:
            # The C loop reads these as native 64-bit arrays (a no-op for SampleColumns' own).
            def col(a: npt.NDArray[Any], t: type[np.generic]) -> npt.NDArray[Any]:
                return np.ascontiguousarray(a[rows], dtype=t)

            self._scan_loop(np.ascontiguousarray(srv, dtype=np.int64),
                            col(cols.dst_hi, np.uint64), col(cols.dst_lo, np.uint64),
                            col(cols.dst_port, np.int64), col(cols.now, np.float64),
                            self._scan_hs, self._scan_ps, self._scan_pg, self._scan_h,
                            self._scan_p, self._caps, self._th_hosts, self._th_ports, self._hot,
                            self._new_scan)

    def _scan_bulk(self, cols: SampleColumns, rows: I64, s: int) -> bool:
        """Server s's scan rows (in row order) at once, where no window can reach its cap:
        without evictions a window ends as its keys before the batch that the batch does not
        sight, then the batch's keys in order of last sight at their last times, and it grew
        by the keys it did not hold. Dict operations run in C (map, zip, update); False
        (nothing done) when a cap is within reach: the row loop handles the evictions."""
        if self._scan_hs[s] is None:
            self._new_scan(s)
        hosts = self._scan_hs[s]
        pairs = self._scan_ps[s]
        groups = self._scan_pg[s]
        assert hosts is not None
        m = rows.size
        cap = self._caps[s]
        if len(hosts) + m > cap or len(pairs) + m > cap:
            return False
        addrs = _addrs(cols.dst_hi, cols.dst_lo, rows)
        ports = cols.dst_port[rows].astype(np.uint64).tolist()  # -1 (none) as 2**64 - 1
        times = cols.now[rows].tolist()
        hot = False
        for seen, keys, th, grouped in (
                (hosts, addrs, self._th_hosts[s], False),
                (pairs, [a << 64 | p for a, p in zip(addrs, ports, strict=True)],
                 self._th_ports[s], True)):
            last = dict(zip(keys, range(m), strict=True))  # key -> its last row
            order = sorted(last.values())  # the keys' last rows, in row order
            ks = [keys[i] for i in order]
            was = list(map(seen.pop, ks, repeat(None)))
            seen.update(zip(ks, [times[i] for i in order], strict=True))
            new = was.count(None)
            if new:
                hot = hot or len(seen) >= th
                if grouped:
                    # In order of first sight, as the row loop makes the groups: a tie in
                    # max_group goes to the group made first (the host a detection names).
                    fresh = set(compress(ks, [x is None for x in was]))
                    for k in dict.fromkeys(keys):
                        if k in fresh:
                            g = k >> 64
                            groups[g] = groups.get(g, 0) + 1
        if hot:
            self._hot.add(s)
        return True

    def _store(self, cols: SampleColumns, ag: I64, so: I64, ro: I64,
               ev: npt.NDArray[np.uint16]) -> None:
        """Keep the attributed rows in the bounded store (the newest `_cap`).

        The rows go to consecutive positions from seq % cap, wrapping once at most: two slice
        copies per column (a fancy-indexed store costs ~10x a slice's)."""
        rows = np.flatnonzero((so >= 0) | (ro >= 0))
        if rows.size > self._cap:
            self._seq += rows.size - self._cap
            rows = rows[-self._cap:]
        k = rows.size
        if k == 0:
            return
        whole = k == len(cols)
        cap = self._cap
        at0 = self._seq % cap
        first = min(k, cap - at0)

        def put(dst: npt.NDArray[Any], v: npt.NDArray[Any]) -> None:
            dst[at0:at0 + first] = v[:first]
            if k > first:
                dst[:k - first] = v[first:]

        def col(v: npt.NDArray[Any]) -> npt.NDArray[Any]:
            return v if whole else v[rows]

        put(self._s_seq, self._seq + np.arange(k))
        self._seq += k
        put(self._s_out, col(so))
        put(self._s_in, col(ro))
        put(self._s_ev, col(ev))
        put(self._s_now, col(cols.now))
        for j, w in enumerate((cols.src_hi, cols.src_lo, cols.dst_hi, cols.dst_lo)):
            put(self._s_words[:, j], col(w))
        put(self._s_has[:, 0], col(cols.has_src))
        put(self._s_has[:, 1], col(cols.has_dst))
        for c, a in self._s_cols.items():
            put(a, col(ag if c == "agent" else getattr(cols, c)))
        objs = self._s_obj
        start = at0
        if cols.objects is not None:
            src = cols.objects
            got = [src[i] for i in rows.tolist()]
            objs[start:start + first] = got[:first]
            objs[:k - first] = got[first:]
        elif self._has_objs:
            objs[start:start + first] = [None] * first
            objs[:k - first] = [None] * (k - first)
        self._has_objs = self._has_objs or cols.objects is not None

    # ---- the sampling-rate check ---------------------------------------------------------

    def _check_rates(self, cols: SampleColumns, ag: I64, st: I64) -> None:
        """_check_rate over a batch: same baselines, same judgements, same last writer."""
        rows = np.flatnonzero((cols.sample_pool != NONE) & (cols.sample_sequence != NONE))
        if rows.size == 0:
            return
        typ = cols.source_id_type[rows]
        idx = cols.source_id_index[rows]
        a = ag[rows]
        packable = (typ >= -1) & (typ < 255) & (idx >= -1) & (idx < (1 << 32) - 1) & (
            a < (1 << 21))
        key = (a << 41) | ((typ + 1) << 32) | (idx + 1)
        for q in np.flatnonzero(~packable).tolist():
            k3 = (int(a[q]), int(typ[q]), int(idx[q]))
            odd = self._rc_odd.get(k3)
            if odd is None:
                odd = self._rc_odd[k3] = -1 - len(self._rc_odd)
            key[q] = odd
        seq = cols.sample_sequence[rows]
        pool = cols.sample_pool[rows]
        # Most rows judge nothing: a known source short of RATE_CHECK_SAMPLES since its
        # baseline. Only the rows of sources with a row that may judge (new, or far enough
        # against the baseline before the batch) go on: a baseline moved within the batch can
        # make any later row of its source judge (sequence numbers may run backwards). Not
        # when new sources may overflow RATE_CHECK_KEYS: that starts afresh mid-batch.
        rk = self._rc_key
        if rk.size:
            at_ = np.minimum(np.searchsorted(rk, key), rk.size - 1)
            new = rk[at_] != key
            may = new | (((seq - self._rc_seq[at_]) & _M32) >= detect.RATE_CHECK_SAMPLES)
            if rk.size + np.count_nonzero(new) > detect.RATE_CHECK_KEYS:
                pass
            elif not may.any():
                return
            elif np.count_nonzero(may) * 4 < may.size:
                sel = np.isin(key, key[may])
                rows, key, seq, pool = rows[sel], key[sel], seq[sel], pool[sel]
        uk, first = np.unique(key, return_index=True)
        rk = self._rc_key
        old_i: I64 = np.asarray(np.searchsorted(rk, uk), dtype=np.int64)
        known = (rk[np.minimum(old_i, rk.size - 1)] == uk) if rk.size else np.zeros(
            uk.size, dtype=np.bool_)
        new_keys = uk[~known][np.argsort(first[~known], kind="stable")]
        if self._rc_key.size + new_keys.size > detect.RATE_CHECK_KEYS:
            self._check_rates_rowwise(rows, key, seq, pool, cols, st)
            return
        # Baselines of the keys this batch sees, new keys without one (has=False).
        has = known.copy()
        b_seq = np.zeros(uk.size, dtype=np.int64)
        b_pool = np.zeros(uk.size, dtype=np.int64)
        b_seq[known] = self._rc_seq[old_i[known]]
        b_pool[known] = self._rc_pool[old_i[known]]
        slot = np.searchsorted(uk, key)
        order = np.argsort(slot, kind="stable")
        o_slot = slot[order]
        o_seq = seq[order]
        o_pool = pool[order]
        pos = np.arange(order.size)
        ptr = np.searchsorted(o_slot, np.arange(uk.size))  # next row each key may judge
        hits: list[tuple[I64, I64, F64]] = []
        while True:
            dseq = (o_seq - b_seq[o_slot]) & _M32
            trig = (~has[o_slot] | (dseq >= detect.RATE_CHECK_SAMPLES)) & (pos >= ptr[o_slot])
            if not trig.any():
                break
            cand = np.flatnonzero(trig)
            ks, firsts = np.unique(o_slot[cand], return_index=True)
            j = cand[firsts]
            judged = has[ks]
            d = dseq[j]
            eff = ((o_pool[j] - b_pool[ks]) & _M32).astype(np.float64) / np.maximum(d, 1)
            b_seq[ks] = o_seq[j]
            b_pool[ks] = o_pool[j]
            has[ks] = True
            ptr[ks] = j + 1
            row = rows[order[j]]
            srv = st[row]
            m = judged & (d <= 1 << 20) & (srv >= 0)
            if m.any():
                row, srv, eff = row[m], srv[m], eff[m]
                declared = np.maximum(1, cols.sampling_rate[row]).astype(np.float64)
                drift = np.array([self._t[s].max_rate_drift for s in srv.tolist()],
                                 dtype=np.float64)
                bad = (eff > declared * drift) | (eff * drift < declared)
                if bad.any():
                    row, srv = row[bad], srv[bad]
                    hits.append((row, srv, cols.now[row] + self._window[srv] * 5))
        if new_keys.size:
            allk = np.concatenate([self._rc_key, new_keys])
            seqs = np.concatenate([self._rc_seq, np.zeros(new_keys.size, dtype=np.int64)])
            pools = np.concatenate([self._rc_pool, np.zeros(new_keys.size, dtype=np.int64)])
            o = np.argsort(allk, kind="stable")
            self._rc_key, self._rc_seq, self._rc_pool = allk[o], seqs[o], pools[o]
        at = np.searchsorted(self._rc_key, uk)
        self._rc_seq[at] = b_seq
        self._rc_pool[at] = b_pool
        if hits:
            self._suspect(np.concatenate([h[0] for h in hits]),
                          np.concatenate([h[1] for h in hits]),
                          np.concatenate([h[2] for h in hits]))

    def _suspect(self, row: I64, srv: I64, until: F64) -> None:
        o = np.argsort(row, kind="stable")
        _last_wins(srv[o], until[o], self._rate_suspect)

    def _check_rates_rowwise(self, rows: I64, key: I64, seq: I64, pool: I64,
                             cols: SampleColumns, st: I64) -> None:
        """_check_rate one row at a time: only for a batch that may hit RATE_CHECK_KEYS."""
        state = dict(zip(self._rc_key.tolist(),
                         zip(self._rc_seq.tolist(), self._rc_pool.tolist(), strict=True),
                         strict=True))
        hit_rows: list[int] = []
        hit_srv: list[int] = []
        hit_until: list[float] = []
        for j, (k, sq, pl) in enumerate(zip(key.tolist(), seq.tolist(), pool.tolist(),
                                            strict=True)):
            prev = state.get(k)
            if prev is None:
                if len(state) >= detect.RATE_CHECK_KEYS:
                    state.clear()
                state[k] = (sq, pl)
                continue
            dseq = (sq - prev[0]) & _M32
            if dseq < detect.RATE_CHECK_SAMPLES:
                continue
            state[k] = (sq, pl)
            i = int(rows[j])
            s = int(st[i])
            if dseq > 1 << 20 or s < 0:
                continue
            eff = ((pl - prev[1]) & _M32) / dseq
            declared = max(1, int(cols.sampling_rate[i]))
            drift = self._t[s].max_rate_drift
            if eff > declared * drift or eff * drift < declared:
                hit_rows.append(i)
                hit_srv.append(s)
                hit_until.append(float(cols.now[i]) + self._t[s].rate_window_s * 5)
        ks = np.array(sorted(state), dtype=np.int64)
        self._rc_key = ks
        self._rc_seq = np.array([state[k][0] for k in ks.tolist()], dtype=np.int64)
        self._rc_pool = np.array([state[k][1] for k in ks.tolist()], dtype=np.int64)
        if hit_rows:
            self._suspect(np.array(hit_rows, dtype=np.int64), np.array(hit_srv, dtype=np.int64),
                          np.array(hit_until, dtype=np.float64))

    # ---- decisions out -------------------------------------------------------------------

    def evaluate(self, now: float, at: datetime) -> list[Detection]:
        """AbuseDetector.evaluate: the same servers judged in the same order, the vector ones
        screened in one pass."""
        self._clock = (now, at)
        out: list[Detection] = []
        active_servers = {k[0] for k in self._active}
        cand = self._dirty.copy()
        for sid in active_servers:
            cand[self._index[sid]] = True
        vec = np.flatnonzero(cand)
        self._dirty[vec] = False
        # Flow-table prunes (_ServerState.prune) of the vector servers, kept to replay.
        due = vec[now - self._last_flow_prune[vec] >= self._bucket_s[vec] * 4]
        if due.size:
            self._last_flow_prune[due] = now
            self._pev.append((self._seq, due, now - self._flow_horizon[due]))
            oldest = self._seq - self._cap
            while self._pev and self._pev[0][0] < oldest:
                self._pev.popleft()
        flagged = self._screen(vec, now)
        # Only these can give or end a detection, judged in server order.
        for s in sorted(flagged.union([self._index[sid] for sid in active_servers])):
            self._judge(self._ids[s], self._view(s, now), now, at, out)
        return out

    def _screen(self, vec: I64, now: float) -> set[int]:
        """_ServerState.screen for many servers: prunes their windows; the flagged ones."""
        if vec.size == 0:
            return set()
        # done + cur of every slot, [k, field]: the additive fields (all but the rate) summed
        # over each server's slots in place (contiguous), then the screened servers taken.
        n = len(self._ids)
        o = self._out_vals[:_O_RATE].reshape(_O_RATE, n, self._nmax).sum(axis=2)[:, vec].T
        w = self._window[vec] / _SCREEN_MARGIN
        lim = self._lim[:, vec]
        hit = ((o[:, _O_PKTS] + o[:, _O_RESP]) / w >= lim[0]) | (
            (o[:, _O_BYTES] + o[:, _O_RESP_BYTES]) * 8 / w >= lim[1]) | (
            o[:, _O_UDP] / w >= lim[2]) | (o[:, _O_ICMP] / w >= lim[3]) | (
            o[:, _O_SYN] / w >= lim[4]) | self._unscreened[vec]
        used = np.bincount(self._pair_srv[self._used], minlength=len(self._ids))
        hit |= used[vec] > self._contract[vec]
        flagged = set(vec[hit].tolist())
        wins = self._win
        tl = self._t
        due = self._wdue
        # A key expires when t < now - window_s; due holds t + window_s, rounded: the margin
        # keeps a rounding from ever skipping a prune that would remove a key.
        for s in vec[due[vec] < now + (abs(now) * 1e-12 + 1e-9)].tolist():
            w_ = wins.get(s)
            low = float("inf")
            if w_ is not None:
                for d in w_.all():
                    if d is not None and d.seen:
                        d.prune(now)
                        if d.seen:
                            low = min(low, min(d.seen.values()) + d.window_s)
            due[s] = low
        # Pruning only shrinks windows: a server not hot since its last check stays below
        # every count rule.
        cand = np.zeros(len(self._ids), dtype=np.bool_)
        cand[vec] = True
        for s in [s for s in self._hot if cand[s]]:
            w_ = wins[s]
            t = tl[s]
            hits = w_.undeclared_hits
            if hits:  # _ServerState.prune: hits of ports no longer in the window go
                und = w_.undeclared
                assert und is not None
                for what in [k for k in hits if k not in und]:
                    del hits[what]
            if hits or (w_.spoof_srcs is not None and w_.spoof_srcs.seen) or (
                    w_.spam_dsts is not None and not self._mail[s]
                    and len(w_.spam_dsts.seen) >= t.spam_distinct_dsts) or (
                    w_.scan_hosts is not None
                    and len(w_.scan_hosts.seen) >= t.scan_distinct_hosts) or (
                    w_.scan_pairs is not None
                    and len(w_.scan_pairs.seen) >= t.scan_distinct_ports
                    and w_.scan_pairs.max_group()[1] >= t.scan_distinct_ports) or (
                    w_.proxy_clients is not None and w_.proxy_fanout is not None
                    and len(w_.proxy_clients.seen) >= t.proxy_min_clients
                    and len(w_.proxy_fanout.seen) >= t.proxy_min_fanout):
                flagged.add(s)
            else:
                self._hot.discard(s)
        return flagged

    def _view(self, s: int, now: float) -> _VecState:
        """Server s as a detect._ServerState, for findings, _emit and _build."""
        spec = self._specs[s]
        t = self._t[s]
        st = _VecState(spec, t, self, s)
        st.out = self._buckets(self._out_ids, self._out_vals, s, t, (1, 2, 3, 4, 5, 6, 7, 8, 9))
        st.inb = self._buckets(self._in_ids, self._in_vals, s, t, (1, 2, 8, 9))
        w = self._win.get(s)
        if w is not None:
            _copy_distinct(w.spam_dsts, st.spam_dsts, _text)
            # The scan windows (the largest) stay int-keyed: findings counts them, tests
            # answered keys against the pairs and names only the top host.
            st.scan_pairs.__class__ = _IntPairs
            _copy_distinct(w.scan_hosts, st.scan_hosts)
            _copy_distinct(w.scan_pairs, st.scan_pairs)
            _copy_distinct(w.scan_answered, st.scan_answered, _pair_int)
            _copy_distinct(w.spoof_srcs, st.spoof_srcs, _text)
            _copy_distinct(w.proxy_clients, st.proxy_clients, _text_port)
            _copy_distinct(w.proxy_fanout, st.proxy_fanout, _text_port)
            _copy_distinct(w.undeclared, st.undeclared, str)
            if w.undeclared_hits is not None:
                st.undeclared_hits = dict(w.undeclared_hits)
            if w.spoof_hits is not None:
                st.spoof_hits.extend(w.spoof_hits)
            st.last_proxy_in = w.last_proxy_in
        st.used_ips = {self._pair_text[i] for i in np.flatnonzero(
            self._used & (self._pair_srv == s)).tolist()}
        st.seen_reply_window_until = float(self._reply_until[s])
        st.rate_suspect_until = float(self._rate_suspect[s])
        st.unscreened = bool(self._unscreened[s])
        st.last_flow_prune = now  # the store's replay already holds this call's prune
        return st

    def _buckets(self, ids: I64, vals: F64, s: int, t: DetectThresholds,
                 slots: Sequence[int]) -> _Buckets:
        b = _Buckets(t.rate_window_s, t.bucket_s)
        base = s * self._nmax
        for j in range(b.n):
            ring = b.ring[j]
            ring[0] = float(ids[base + j])
            for f, v in zip(slots, vals[:, base + j].tolist(), strict=True):
                ring[f] = v
        return b

    # ---- the row store: evidence and top flows -------------------------------------------

    def _server_rows(self, s: int) -> I64:
        """Store positions of server s's rows, oldest first."""
        pos = np.flatnonzero(((self._s_out == s) | (self._s_in == s)) & (self._s_seq >= 0))
        return pos[np.argsort(self._s_seq[pos], kind="stable")]

    def _evidence(self, s: int, keep: int) -> dict[str, list[FlowSample]]:
        pos = self._server_rows(s)
        out_role = self._s_out[pos] == s
        ev = self._s_ev[pos]
        picked: dict[str, I64] = {}
        for name, bit in _EV_KINDS:
            m = out_role & ((ev & bit) != 0)
            if bit == _E_PROXY:
                m |= ~out_role & ((ev & _E_PROXY_IN) != 0)
            picked[name] = pos[m][-keep:]
        need = np.unique(np.concatenate(list(picked.values()))) if picked else pos[:0]
        made = dict(zip(need.tolist(), self._stored_samples(need), strict=True))
        return {name: [made[p] for p in rows.tolist()] for name, rows in picked.items()}

    def _stored_samples(self, pos: I64) -> list[FlowSample]:
        """The FlowSamples of stored rows: carried, else resolved from the ref, else rebuilt.

        Resolved ones are kept by the row's sequence number (the newest _EV_CACHE): an
        ongoing detection is judged at every evaluation with mostly the same evidence rows,
        and resolving one costs a datagram decode. A kept sample outlives its datagram in
        the raw ring, so such a row's evidence keeps its header bytes."""
        plist = pos.tolist()
        seqs = self._s_seq[pos].tolist()
        cache = self._ev_cache
        got: list[FlowSample | None] = [self._s_obj[p] or cache.get(q)
                                        for p, q in zip(plist, seqs, strict=True)]
        refs = self._s_cols["ref"][pos]
        ask = np.flatnonzero(np.array([g is None for g in got], dtype=np.bool_) & (refs >= 0))
        if self.resolve is not None and ask.size:
            for j, smp in zip(ask.tolist(), self.resolve(refs[ask]), strict=True):
                got[j] = smp
                if smp is not None:
                    if len(cache) >= _EV_CACHE:
                        del cache[next(iter(cache))]
                    cache[seqs[j]] = smp
        return [g if g is not None else self._rebuild(self._stored_row(p))
                for g, p in zip(got, plist, strict=True)]

    def _stored_row(self, p: int) -> dict[str, Any]:
        c = {k: int(a[p]) for k, a in self._s_cols.items()}

        def opt(k: str) -> int | None:
            return None if c[k] == NONE else c[k]

        w = self._s_words[p].tolist()
        has = self._s_has[p].tolist()
        return {
            "agent": self._agent_names[c["agent"]],
            "input_ifindex": opt("input_ifindex"), "output_ifindex": opt("output_ifindex"),
            "sampling_rate": c["sampling_rate"], "now": float(self._s_now[p]),
            "frame_length": c["frame_length"], "ip_version": opt("ip_version"),
            "src_ip": words_ip(w[0], w[1]) if has[0] else None,
            "dst_ip": words_ip(w[2], w[3]) if has[1] else None,
            "protocol": opt("protocol"), "src_port": opt("src_port"),
            "dst_port": opt("dst_port"), "tcp_flags": opt("tcp_flags"),
            "icmp_type": opt("icmp_type"), "sample_sequence": opt("sample_sequence"),
            "source_id_type": opt("source_id_type"),
            "source_id_index": opt("source_id_index"), "sample_pool": opt("sample_pool"),
        }

    def _replay_flows(self, s: int) -> dict[_FlowKey, list[float]]:
        """Server s's flow table (_ServerState.outbound's), replayed from the store with the
        prunes evaluate made between the rows."""
        pos = self._server_rows(s)
        pos = pos[(self._s_out[pos] == s) & ((self._s_ev[pos] & _E_FLOW) != 0)]
        events = [(q, float(h[srv == s][0])) for q, srv, h in self._pev if (srv == s).any()]
        cap = self._t[s].flow_table_cap
        flows: dict[_FlowKey, list[float]] = {}
        seqs = self._s_seq[pos].tolist()
        # The rows' flow keys and counts, column by column (as _ServerState.outbound makes
        # them: an absent protocol or port is 0, an absent source "").
        c = self._s_cols
        rate = c["sampling_rate"][pos]
        rate = np.where(rate > 0, rate, 1)
        sizes = (c["frame_length"][pos] * rate).tolist()

        def zero(name: str) -> list[int]:
            v = c[name][pos]
            out: list[int] = np.where(v == NONE, 0, v).tolist()
            return out

        w = self._s_words[pos]
        has = self._s_has[pos]
        srcs = [_text(h << 64 | lo) if ok else "" for h, lo, ok in zip(
            w[:, 0].tolist(), w[:, 1].tolist(), has[:, 0].tolist(), strict=True)]
        # Flow rows all have a destination (_E_FLOW is set only then).
        dsts = [_text(h << 64 | lo) for h, lo in zip(w[:, 2].tolist(), w[:, 3].tolist(),
                                                      strict=True)]
        e = 0
        for q, r, size, now, key in zip(
                seqs, rate.tolist(), sizes, self._s_now[pos].tolist(),
                zip(zero("protocol"), srcs, dsts, zero("src_port"), zero("dst_port"),
                    strict=True), strict=True):
            while e < len(events) and events[e][0] <= q:
                horizon = events[e][1]
                for k in [k for k, v in flows.items() if v[3] < horizon]:
                    del flows[k]
                e += 1
            f = flows.get(key)
            if f is not None:
                f[0] += r
                f[1] += size
                f[2] += 1
                f[3] = now
            elif len(flows) < cap:
                flows[key] = [r, size, 1, now]
        for _q, horizon in events[e:]:
            for k in [k for k, v in flows.items() if v[3] < horizon]:
                del flows[k]
        return flows


def _local_only(hi: npt.NDArray[np.uint64], lo: npt.NDArray[np.uint64]) -> B1:
    """detect._is_local_only on the addresses' texts, from their words (see words_ip)."""
    mapped = (hi == 0) & ((lo >> np.uint64(32)) == np.uint64(0xFFFF))
    v4 = mapped & ((lo == np.uint64(0xFFFF_0000_0000))
                   | (((lo >> np.uint64(16)) & np.uint64(0xFFFF)) == np.uint64(0xA9FE)))
    h1 = hi >> np.uint64(48)
    v6 = ~mapped & (((hi == 0) & (lo == 0))
                    | ((h1 >= np.uint64(0xFE80)) & (h1 <= np.uint64(0xFEBF)))
                    | ((h1 >= np.uint64(0xFE8)) & (h1 <= np.uint64(0xFEB))))
    return np.asarray(v4 | v6, dtype=np.bool_)
