"""Pure sFlow sequence tracking: lost datagrams/samples, agent restarts, duplicates, reordering."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from enum import Enum

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
