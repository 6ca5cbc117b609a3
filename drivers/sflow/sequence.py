"""Pure sFlow sequence tracking: lost datagrams/samples, agent restarts, duplicates, reordering."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from enum import Enum

import numpy as np
import numpy.typing as npt

_MOD = 1 << 32
_HALF = 1 << 31
# A datagram at most this far behind the newest is UDP reordering, not an agent restart.
REORDER_WINDOW = 64
# Uptime may step back this much on a reordered datagram; further back means a restart.
UPTIME_SLACK_MS = 1_000


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
    """

    def __init__(self, max_keys: int = 65536) -> None:
        self._max_keys = max_keys
        self._slot: dict[int, int] = {}  # code -> slot in the arrays below
        self._key_slot: dict[Hashable, int] = {}
        self._codes = np.zeros(64, dtype=np.int64)  # slot -> code
        self._last = np.zeros(64, dtype=np.int64)
        self._up = np.full(64, -1, dtype=np.int64)  # -1: uptime unknown
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
            grow = max(64, n)
            self._codes = np.concatenate([self._codes, np.zeros(grow, dtype=np.int64)])
            self._last = np.concatenate([self._last, np.zeros(grow, dtype=np.int64)])
            self._up = np.concatenate([self._up, np.full(grow, -1, dtype=np.int64)])
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
        self.evicted_keys += 1

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
        prev_up = np.empty(n, dtype=np.int64)
        prev_up[1:] = u[:-1]
        prev_up[head] = self._up[slots[gs[head]]]
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
        known_up = u[t] >= 0
        # observe() keeps the last known uptime: a row without one leaves it be.
        last_known = np.where(known_up, u[t], self._up[ts])
        self._up[ts] = last_known
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
