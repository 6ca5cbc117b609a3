"""Pure sFlow sequence tracking: lost datagrams/samples, agent restarts, duplicates, reordering."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from enum import Enum

import numpy as np
import numpy.typing as npt
from rackwarden.drivers.sflow import cwalk

_MOD = 1 << 32
_HALF = 1 << 31
# A datagram at most this far behind the newest is UDP reordering, not an agent restart.
REORDER_WINDOW = 64
# Uptime may step back this much on a reordered datagram; further back means a restart.
UPTIME_SLACK_MS = 1_000


# The compiled walk's row events (_sflowwalk.c enum EV_*, same order).
_EV_FIRST, _EV_IN_ORDER, _EV_GAP, _EV_DUPLICATE, _EV_LATE, _EV_RESET = range(6)
_TABLE_MIN = 64  # entries of the compiled walk's code -> slot table, at least


class SeqEvent(Enum):
    FIRST = "first"
    IN_ORDER = "in_order"
    GAP = "gap"
    LATE = "late"  # reordered: arrived after a later one; it fills a gap counted earlier
    DUPLICATE = "duplicate"
    RESET = "reset"  # the agent restarted (uptime went back) or the sequence jumped back


@dataclass(slots=True)
class _State:
    last: int
    uptime_ms: int | None


class SequenceTracker:
    """Per-key (agent, sub-agent or data source) sequence bookkeeping with plain-int counters.

    Sequence numbers are 32-bit and wrap; the difference is taken modulo 2^32, so a wrap is
    not a reset. A restart is told by uptime going back (datagrams) or by a jump back beyond
    the reorder window. `lost` is the net count of numbers never seen: a late arrival gives
    one back.
    """

    def __init__(self, max_keys: int = 65536) -> None:
        self._state: dict[Hashable, _State] = {}
        self._max_keys = max_keys  # bounds memory if a source id space is sprayed
        self.lost: dict[Hashable, int] = {}
        self.resets: dict[Hashable, int] = {}
        self.duplicates: dict[Hashable, int] = {}
        self.late: dict[Hashable, int] = {}
        self.evicted_keys = 0

    def observe(
        self, key: Hashable, sequence: int, uptime_ms: int | None = None
    ) -> tuple[SeqEvent, int]:
        """Record one sequence number; returns the event and how many numbers it skipped."""
        st = self._state.get(key)
        if st is None:
            if len(self._state) >= self._max_keys:
                self._state.clear()
                self.evicted_keys += 1
            self._state[key] = _State(sequence, uptime_ms)
            return SeqEvent.FIRST, 0
        if uptime_ms is not None and st.uptime_ms is not None:
            # Uptime is a 32-bit millisecond counter (it wraps after 49.7 days), so "back" is
            # taken modulo 2^32 as well.
            back = (st.uptime_ms - uptime_ms) % _MOD
            if UPTIME_SLACK_MS < back < _HALF:
                return self._reset(key, st, sequence, uptime_ms)
        delta = (sequence - st.last) % _MOD
        if delta == 0:
            self.duplicates[key] = self.duplicates.get(key, 0) + 1
            return SeqEvent.DUPLICATE, 0
        if delta < _HALF:
            st.last = sequence
            if uptime_ms is not None:
                st.uptime_ms = uptime_ms
            if delta == 1:
                return SeqEvent.IN_ORDER, 0
            self.lost[key] = self.lost.get(key, 0) + delta - 1
            return SeqEvent.GAP, delta - 1
        behind = _MOD - delta
        if behind <= REORDER_WINDOW:
            self.late[key] = self.late.get(key, 0) + 1
            if self.lost.get(key, 0) > 0:
                self.lost[key] -= 1
            return SeqEvent.LATE, 0
        return self._reset(key, st, sequence, uptime_ms)

    def observe_all(self, items: list[tuple[Hashable, int]]) -> list[Hashable]:
        """observe(key, sequence) for each item in order, uptime unknown; the keys that reset.

        The same bookkeeping as one observe() per item: the common case (the next number of a
        known key) is taken inline, everything else goes through observe().
        """
        state = self._state
        observe = self.observe
        resets: list[Hashable] = []
        for key, sequence in items:
            st = state.get(key)
            if st is not None and (sequence - st.last) % _MOD == 1:
                st.last = sequence
                continue
            if observe(key, sequence)[0] is SeqEvent.RESET:
                resets.append(key)
        return resets

    def _reset(
        self, key: Hashable, st: _State, sequence: int, uptime_ms: int | None
    ) -> tuple[SeqEvent, int]:
        self.resets[key] = self.resets.get(key, 0) + 1
        st.last = sequence
        st.uptime_ms = uptime_ms
        return SeqEvent.RESET, 0

    def last(self, key: Hashable) -> int | None:
        st = self._state.get(key)
        return None if st is None else st.last


class ColumnSequenceTracker:
    """SequenceTracker's bookkeeping for a whole batch of numbers at once (the columns path).

    Keys come as int64 codes (one per row, chosen by the caller, stable across batches), and
    `key_of(code)` names a code's key for the counters, which are the same dicts, keyed the
    same way, as SequenceTracker's: `lost`, `resets`, `duplicates`, `late`, `evicted_keys`,
    `last(key)`. observe_columns gives exactly what one SequenceTracker.observe per row, in
    row order, gives (tests/unit/test_sflow_columns.py holds it to that). The state is kept
    in arrays, so the common case (every key's next numbers, in order or with gaps) costs a
    few numpy calls per batch; a key whose rows hold anything else (a duplicate, a late or
    reset number, uptime going back) is walked row by row, and a batch that would pass
    `max_keys` is walked row by row whole, so eviction happens where observe() would do it.

    When the compiled sFlow helper is built (cwalk.py; `impl`, else RACKWARDEN_SFLOW_WALK,
    chooses as for the walk) the batch is instead one C pass in row order over the same
    arrays, each code found through a (code, slot) hash table kept beside them (the numpy
    calls above cost ~160 ns a row on a 9,600-key fleet's batches, the C pass ~17 ns:
    bench/sflow_walk.py). The counters stay here: only rows that change one (a gap, a
    duplicate, a late number, a reset) come back to Python, in row order.
    """

    def __init__(self, max_keys: int = 65536, impl: cwalk.Impl | None = None) -> None:
        self._max_keys = max_keys
        self._impl = impl
        # The compiled walk's open-addressing table, (code, slot) per entry, slot -1 when empty;
        # a power-of-two number of entries, at most half full. Slots below _table_n are in it
        # (the numpy path's _add leaves new slots to be entered at the next compiled call).
        self._table = np.full((_TABLE_MIN, 2), -1, dtype=np.int64)
        self._table_n = 0
        self._slot: dict[int, int] = {}  # code -> slot in the arrays below
        self._key_slot: dict[Hashable, int] = {}
        self._codes = np.zeros(64, dtype=np.int64)  # slot -> code
        # slot -> (last number, last uptime or -1: unknown), side by side: the compiled walk
        # reads both of a key at once (one cache line, not two); _last/_up are its columns.
        self._state = np.zeros((64, 2), dtype=np.int64)
        self._state[:, 1] = -1
        self._last = self._state[:, 0]
        self._up = self._state[:, 1]
        self._n = 0
        self._sorted: tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]] | None = None
        self.lost: dict[Hashable, int] = {}
        self.resets: dict[Hashable, int] = {}
        self.duplicates: dict[Hashable, int] = {}
        self.late: dict[Hashable, int] = {}
        self.evicted_keys = 0

    def last(self, key: Hashable) -> int | None:
        slot = self._key_slot.get(key)
        return None if slot is None else int(self._last[slot])

    def __len__(self) -> int:
        return self._n

    # -- state --------------------------------------------------------------------------------

    def _add(self, code: int, key: Hashable, sequence: int, uptime: int) -> int:
        n = self._n
        if n == self._codes.shape[0]:
            self._grow(n + 1)
        self._codes[n] = code
        self._last[n] = sequence
        self._up[n] = uptime
        self._slot[code] = n
        self._key_slot[key] = n
        self._n = n + 1
        self._sorted = None
        return n

    def _clear(self) -> None:
        self._slot.clear()
        self._key_slot.clear()
        self._n = 0
        self._sorted = None
        if self._table_n:
            self._table.fill(-1)
            self._table_n = 0
        self.evicted_keys += 1

    def _grow(self, slots: int) -> None:
        """Room for `slots` slots at least (doubling, so growth costs O(1) a slot)."""
        have = self._codes.shape[0]
        if slots <= have:
            return
        grow = max(slots, 2 * have) - have
        self._codes = np.concatenate([self._codes, np.zeros(grow, dtype=np.int64)])
        more = np.zeros((grow, 2), dtype=np.int64)
        more[:, 1] = -1
        self._state = np.concatenate([self._state, more])
        self._last = self._state[:, 0]
        self._up = self._state[:, 1]

    def _reserve(self, slots: int) -> None:
        """Room for `slots` slots in the arrays, and a table that holds them at most half full
        with every slot entered (the compiled walk's capacities)."""
        self._grow(slots)
        cap = self._table.shape[0]
        if 2 * slots > cap:
            while 2 * slots > cap:
                cap *= 2
            self._table = np.full((cap, 2), -1, dtype=np.int64)
            self._table_n = 0
        if self._table_n < self._n:
            cwalk.seq_index(self._table, self._codes, self._table_n, self._n)
            self._table_n = self._n

    def forget(self) -> None:
        """Drop every key's state, as an eviction does (the caller renumbers its codes)."""
        self._clear()

    def _lookup(self, codes: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """Slot of each (sorted, distinct) code, -1 for codes not tracked."""
        if self._sorted is None:
            order = np.argsort(self._codes[:self._n], kind="stable")
            self._sorted = (self._codes[:self._n][order], order.astype(np.int64))
        sc, ss = self._sorted
        pos = np.searchsorted(sc, codes)
        pos_c = np.minimum(pos, max(sc.shape[0] - 1, 0))
        found = (pos < sc.shape[0]) & (sc[pos_c] == codes) if sc.shape[0] else np.zeros(
            codes.shape[0], dtype=np.bool_)
        out: npt.NDArray[np.int64] = np.where(found, ss[pos_c] if sc.shape[0] else -1, -1)
        return out

    # -- one number ----------------------------------------------------------------------------

    def _observe(self, code: int, key_of: Callable[[int], Hashable], sequence: int,
                 uptime: int) -> SeqEvent:
        """SequenceTracker.observe on the arrays, for one row (uptime -1: unknown)."""
        slot = self._slot.get(code)
        if slot is None:
            if self._n >= self._max_keys:
                self._clear()
            self._add(code, key_of(code), sequence, uptime)
            return SeqEvent.FIRST
        key = key_of(code)
        last_up = int(self._up[slot])
        if uptime >= 0 and last_up >= 0:
            back = (last_up - uptime) % _MOD
            if UPTIME_SLACK_MS < back < _HALF:
                return self._reset(slot, key, sequence, uptime)
        delta = (sequence - int(self._last[slot])) % _MOD
        if delta == 0:
            self.duplicates[key] = self.duplicates.get(key, 0) + 1
            return SeqEvent.DUPLICATE
        if delta < _HALF:
            self._last[slot] = sequence
            if uptime >= 0:
                self._up[slot] = uptime
            if delta == 1:
                return SeqEvent.IN_ORDER
            self.lost[key] = self.lost.get(key, 0) + delta - 1
            return SeqEvent.GAP
        if _MOD - delta <= REORDER_WINDOW:
            self.late[key] = self.late.get(key, 0) + 1
            if self.lost.get(key, 0) > 0:
                self.lost[key] -= 1
            return SeqEvent.LATE
        return self._reset(slot, key, sequence, uptime)

    def _reset(self, slot: int, key: Hashable, sequence: int, uptime: int) -> SeqEvent:
        self.resets[key] = self.resets.get(key, 0) + 1
        self._last[slot] = sequence
        self._up[slot] = uptime
        return SeqEvent.RESET

    # -- a batch -------------------------------------------------------------------------------

    def observe_columns(
        self,
        codes: npt.NDArray[np.int64],
        sequences: npt.NDArray[np.int64],
        key_of: Callable[[int], Hashable],
        uptimes: npt.NDArray[np.int64] | None = None,
    ) -> list[Hashable]:
        """observe(key_of(codes[i]), sequences[i], uptimes[i]) for every row i in order (no
        uptime when `uptimes` is None); returns the keys that reset, in row order."""
        n = int(codes.shape[0])
        if n == 0:
            return []
        if cwalk.choose(self._impl) == "c":
            return self._observe_c(codes, sequences, key_of, uptimes)
        ups = uptimes if uptimes is not None else np.full(n, -1, dtype=np.int64)
        # Rows grouped by key, row order inside (one stable sort; np.unique would sort again
        # for its inverse): `gs` is each grouped row's key number, `uniq` the keys, `first`
        # each key's first row.
        shift = n.bit_length()
        if int(codes.min()) >= 0 and int(codes.max()) < 1 << (62 - shift):
            # Codes with their row number below them are distinct, so the faster unstable
            # sort gives the stable order (~half the time of a stable sort of 64-bit ints).
            order = np.argsort((codes << shift) | np.arange(n, dtype=np.int64))
        else:
            order = np.argsort(codes, kind="stable")
        sc = codes[order]
        head = np.ones(n, dtype=np.bool_)
        head[1:] = sc[1:] != sc[:-1]
        gs = np.cumsum(head) - 1
        uniq = sc[head]
        first = order[head]
        slots = self._lookup(uniq)
        new = slots < 0
        if self._n + int(new.sum()) > self._max_keys:
            # Eviction ties the keys together: one row at a time, as observe() would.
            out: list[Hashable] = []
            for code, seq, up in zip(codes.tolist(), sequences.tolist(), ups.tolist(),
                                     strict=True):
                if self._observe(code, key_of, seq, up) is SeqEvent.RESET:
                    out.append(key_of(code))
            return out
        for g in np.nonzero(new)[0].tolist():  # FIRST: the key's state is its first row
            r = int(first[g])
            slots[g] = self._add(int(uniq[g]), key_of(int(uniq[g])), int(sequences[r]),
                                 int(ups[r]))
        s = sequences[order]
        u = ups[order]
        prev = np.empty(n, dtype=np.int64)
        prev[1:] = s[:-1]
        prev[head] = self._last[slots[gs[head]]]
        # A row's uptime is held against the last KNOWN one (observe() keeps it through rows
        # without): the key's latest earlier row with one, else its state. Up to a key's first
        # odd row every row moves forward, so this is the state observe() would compare with.
        known = np.where(u >= 0, np.arange(n, dtype=np.int64), -1)
        lk = np.empty(n, dtype=np.int64)
        lk[0] = -1
        lk[1:] = np.maximum.accumulate(known)[:-1]
        gstart = np.flatnonzero(head)[gs]
        prev_up = np.where(lk >= gstart, u[np.maximum(lk, 0)], self._up[slots[gs]])
        # A new key's first row is its FIRST, already applied: it must not count again.
        skip = head & new[gs]
        d = (s - prev) % _MOD
        back = (prev_up - u) % _MOD
        odd = ~skip & ((d == 0) | (d >= _HALF)
                       | ((u >= 0) & (prev_up >= 0) & (back > UPTIME_SLACK_MS) & (back < _HALF)))
        bad = np.bincount(gs[odd], minlength=uniq.shape[0]) > 0
        ok_rows = ~bad[gs]
        # The plain keys: every row moves forward, so the state ends at the key's last row.
        tail = np.ones(n, dtype=np.bool_)
        tail[:-1] = gs[:-1] != gs[1:]
        t = tail & ok_rows
        ts = slots[gs[t]]
        self._last[ts] = s[t]
        # observe() keeps the last known uptime: a row without one leaves it be, so the state
        # takes the key's last row that has one (not its last row: that may have none).
        kr = np.flatnonzero(ok_rows & (u >= 0))
        if kr.shape[0]:
            kt = np.ones(kr.shape[0], dtype=np.bool_)
            kt[:-1] = gs[kr[:-1]] != gs[kr[1:]]
            self._up[slots[gs[kr[kt]]]] = u[kr[kt]]
        gap = np.where(ok_rows & ~skip & (d > 1), d - 1, 0)
        if gap.any():
            per = np.bincount(gs, weights=gap, minlength=uniq.shape[0])
            lost = self.lost
            for g in np.nonzero(per)[0].tolist():
                key = key_of(int(uniq[g]))
                lost[key] = lost.get(key, 0) + int(per[g])
        if not bad.any():
            return []
        # The odd keys, row by row (their FIRST row already done).
        resets: list[tuple[int, Hashable]] = []
        rows = np.nonzero(~ok_rows & ~skip)[0]
        for j, code, seq, up in zip(order[rows].tolist(), uniq[gs[rows]].tolist(),
                                    s[rows].tolist(), u[rows].tolist(), strict=True):
            if self._observe(code, key_of, seq, up) is SeqEvent.RESET:
                resets.append((j, key_of(code)))
        resets.sort(key=lambda jk: jk[0])
        return [k for _, k in resets]

    def _observe_c(
        self,
        codes: npt.NDArray[np.int64],
        sequences: npt.NDArray[np.int64],
        key_of: Callable[[int], Hashable],
        uptimes: npt.NDArray[np.int64] | None,
    ) -> list[Hashable]:
        """observe_columns by the compiled walk: the state in C, the counters here, in row
        order (only rows neither FIRST nor IN_ORDER touch them)."""
        n = int(codes.shape[0])
        codes = np.ascontiguousarray(codes, dtype=np.int64)
        sequences = np.ascontiguousarray(sequences, dtype=np.int64)
        ups = None if uptimes is None else np.ascontiguousarray(uptimes, dtype=np.int64)
        ev = np.empty(n, dtype=np.int8)
        gap = np.empty(n, dtype=np.int64)
        start = 0
        force = False
        self._reserve(max(self._n, 1))
        while True:
            n0 = self._n
            stop, n1, why = cwalk.seq_walk(codes, sequences, ups, start, force, self._table,
                                           self._codes, self._state, n0, self._max_keys,
                                           ev, gap)
            if n1 > n0:  # the new codes, FIRST rows in slot order: register their keys
                new = np.flatnonzero(ev[start:stop] == _EV_FIRST)
                slot_of, key_slot = self._slot, self._key_slot
                for slot, code in enumerate(codes[new + start].tolist(), n0):
                    slot_of[code] = slot
                    key_slot[key_of(code)] = slot
                self._n = self._table_n = n1
                self._sorted = None
            if why == cwalk.SEQ_DONE:
                break
            if why == cwalk.SEQ_GROW:  # one more slot than the arrays or the table hold
                self._reserve(n1 + 1)
                # A forced row (just after an eviction) stays forced until it is in.
                force = force and stop == start
            else:
                # Row `stop` is a new key with max_keys held: observe() evicts them all first.
                self._clear()
                force = True
            start = stop
        odd = np.flatnonzero(ev >= _EV_GAP)
        if not odd.shape[0]:
            return []
        lost, dup, late, resets = self.lost, self.duplicates, self.late, self.resets
        out: list[Hashable] = []
        for e, code, g in zip(ev[odd].tolist(), codes[odd].tolist(), gap[odd].tolist(),
                              strict=True):
            key = key_of(code)
            if e == _EV_GAP:
                lost[key] = lost.get(key, 0) + g
            elif e == _EV_DUPLICATE:
                dup[key] = dup.get(key, 0) + 1
            elif e == _EV_LATE:
                late[key] = late.get(key, 0) + 1
                if lost.get(key, 0) > 0:
                    lost[key] -= 1
            else:
                resets[key] = resets.get(key, 0) + 1
                out.append(key)
        return out
