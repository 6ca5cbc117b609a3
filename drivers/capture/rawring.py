"""Evidence (R10) on the SPAN batch path: a bounded ring of the raw frames themselves.

The batch path keeps no FlowSample per frame. Instead each batch's captured bytes are copied
once into fixed slots of one preallocated array (a byte budget, like a pcap ring buffer),
with the few numbers needed to rebuild the frame's FlowSample: wire length, receive time,
the ports it was attributed to, the capture's name and sampling rate. Frame numbers (`ref`,
the SampleColumns column) grow for ever; frame r lives in slot r % capacity until it is
overwritten, after which resolve() answers None for it.

resolve() re-decodes with packets.parse_tuple, so it gives exactly the FlowSample that
span.SpanCapture._sample builds for the same frame. snapshot() answers EvidenceRing's question
(the recent frames of some ports) so write_evidence can use either ring.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt
from rackwarden.drivers.packets import parse_tuple
from rackwarden.policies.flowcols import NONE
from rackwarden.policies.flowfacts import (
    HEADER_ETHERNET,
    OUTPUT_IFINDEX,
    FlowSample,
    new_flow_sample,
)

__all__ = ["DEFAULT_BYTE_BUDGET", "RawFrameRing", "at_micros"]

I64 = npt.NDArray[np.int64]
DEFAULT_BYTE_BUDGET = 32 * 1024 * 1024  # 128k frames of 256 bytes: ~0.4 s at 300k frames/s
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def at_micros(at: datetime) -> int:
    """An aware datetime as integer microseconds since the epoch (exact, unlike a float)."""
    return (at - _EPOCH) // _US


class RawFrameRing:
    """The last `byte_budget // slot` captured frames, each in a `slot`-byte slot.

    Written by capture threads once per batch (one lock round per batch), read by whoever
    writes evidence. `slot` must be at least the capture's snaplen, so a frame is kept whole
    as captured.
    """

    def __init__(self, byte_budget: int = DEFAULT_BYTE_BUDGET, slot: int = 256) -> None:
        if slot < 64 or byte_budget < slot:
            raise ValueError("raw frame ring: slot must be >= 64 and the budget >= one slot")
        self.slot = slot
        self.capacity = byte_budget // slot
        cap = self.capacity
        # np.zeros maps untouched pages lazily: memory grows with use up to the budget.
        self._data = np.zeros((cap, slot), dtype=np.uint8)
        self._caplen = np.zeros(cap, dtype=np.int64)
        self._wire = np.zeros(cap, dtype=np.int64)
        self._now = np.zeros(cap, dtype=np.float64)
        self._at_us = np.zeros(cap, dtype=np.int64)
        self._in = np.full(cap, NONE, dtype=np.int64)
        self._out = np.full(cap, NONE, dtype=np.int64)
        self._agent = np.zeros(cap, dtype=np.int64)
        self._rate = np.ones(cap, dtype=np.int64)
        self._agents: list[str] = []
        self._agent_ix: dict[str, int] = {}
        self._next = 0  # the frame number the next frame gets
        self._lock = threading.Lock()

    @property
    def next_ref(self) -> int:
        return self._next

    def __len__(self) -> int:
        return min(self._next, self.capacity)

    def add(self, frames: npt.NDArray[np.uint8], caplen: I64, wire: I64,
            now: npt.NDArray[np.float64], at_us: I64, input_ifindex: I64, output_ifindex: I64,
            agent: str, sampling_rate: int) -> I64:
        """Keep a batch (row i of `frames`, its first caplen[i] bytes); returns the frame
        numbers given to the rows. A batch larger than the ring keeps only its tail."""
        n = int(frames.shape[0])
        if n and frames.shape[1] != self.slot:
            raise ValueError(f"raw frame ring: rows of {frames.shape[1]} bytes, slots of "
                             f"{self.slot}")
        cap = self.capacity
        with self._lock:
            a = self._agent_ix.get(agent)
            if a is None:
                a = self._agent_ix[agent] = len(self._agents)
                self._agents.append(agent)
            start = self._next
            self._next = start + n
            refs = np.arange(start, start + n, dtype=np.int64)
            lo = max(0, n - cap)  # rows before lo would be overwritten by this same batch
            i = lo
            while i < n:
                s = (start + i) % cap
                k = min(n - i, cap - s)
                sl, src = slice(s, s + k), slice(i, i + k)
                self._data[sl] = frames[src]
                self._caplen[sl] = caplen[src]
                self._wire[sl] = wire[src]
                self._now[sl] = now[src]
                self._at_us[sl] = at_us[src]
                self._in[sl] = input_ifindex[src]
                self._out[sl] = output_ifindex[src]
                self._agent[sl] = a
                self._rate[sl] = sampling_rate
                i += k
        return refs

    def _rebuild(self, rows: list[tuple[bytes, int, float, int, int, int, int, int]]
                 ) -> list[FlowSample]:
        out = []
        agents = self._agents
        for frame, wire, now, at_us, in_if, out_if, a, rate in rows:
            t = parse_tuple(frame, HEADER_ETHERNET)
            out.append(new_flow_sample(
                "span", agents[a], None if in_if == NONE else in_if,
                None if out_if == NONE else out_if, rate, now, _EPOCH + at_us * _US, wire,
                frame, *t, HEADER_ETHERNET, OUTPUT_IFINDEX, None, None, None, None, None, None,
            ))
        return out

    def _row(self, s: int) -> tuple[bytes, int, float, int, int, int, int, int]:
        return (self._data[s, :int(self._caplen[s])].tobytes(), int(self._wire[s]),
                float(self._now[s]), int(self._at_us[s]), int(self._in[s]), int(self._out[s]),
                int(self._agent[s]), int(self._rate[s]))

    def resolve(self, refs: Sequence[int] | I64) -> list[FlowSample | None]:
        """The FlowSample of each frame number; None once it has been overwritten (or was
        never given out)."""
        cap = self.capacity
        want = [int(r) for r in refs]
        rows: list[tuple[bytes, int, float, int, int, int, int, int] | None] = []
        with self._lock:
            lo = self._next - cap
            for r in want:
                rows.append(self._row(r % cap) if lo <= r < self._next and r >= 0 else None)
        present = [r for r in rows if r is not None]
        built = iter(self._rebuild(present))
        return [None if r is None else next(built) for r in rows]

    def snapshot(self, ports: Iterable[tuple[str, int]], since: float | None = None,
                 until: float | None = None) -> list[FlowSample]:
        """The kept frames of these (agent, ifIndex) ports, either direction, in time order,
        optionally within [since, until]: EvidenceRing.snapshot's answer from raw frames."""
        cap = self.capacity
        with self._lock:
            n = min(self._next, cap)
            if n == 0:
                return []
            mask = np.zeros(cap, dtype=np.bool_)
            for agent, ifx in ports:
                a = self._agent_ix.get(agent)
                if a is None:
                    continue
                mask |= (self._agent == a) & ((self._in == ifx) | (self._out == ifx))
            if n < cap:
                mask[n:] = False
            if since is not None:
                mask &= self._now >= since
            if until is not None:
                mask &= self._now <= until
            slots = np.flatnonzero(mask)
            # Oldest first: frame numbers in ring order from the oldest slot, then by time.
            refs = (slots - self._next) % cap + (self._next - cap)
            order = np.lexsort((refs, self._now[slots]))
            rows = [self._row(int(s)) for s in slots[order]]
        return self._rebuild(rows)
