"""A bounded ring of the raw sFlow datagrams last received, for evidence on demand.

The columns path builds no FlowSample per sample; a detection that fires needs the samples
behind it (top flows, an evidence pcap), so the collector keeps the datagrams themselves,
as the switch sent them, with their receive times, and re-decodes the few that are asked
for with the exact decoder. Each datagram gets a number, counting from 0 in receive order;
a row of the columns has `ref = number << REF_SAMPLE_BITS | k`, k the index of the sample
among its datagram's FlowSamples (batch.decode_batch_columns), so resolve() gives back
exactly the FlowSample object decode_datagram made for that row, or None once the datagram
has been evicted.

The ring is bounded by bytes (the datagrams' lengths; Python's object overhead comes on top,
about 80 bytes a datagram). One thread appends (the receive thread) while others resolve (the
event loop): a lock guards the index, decoding happens outside it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from datetime import datetime

from rackwarden.drivers.sflow.batch import REF_SAMPLE_BITS
from rackwarden.drivers.sflow.decoder import decode_datagram
from rackwarden.policies.flowfacts import FlowSample

__all__ = ["DEFAULT_RAW_RING_BYTES", "RawRing"]

DEFAULT_RAW_RING_BYTES = 8 * 1024 * 1024  # ~6,000 datagrams of ~1.3 KB: a second at 6k/s
_SAMPLE_MASK = (1 << REF_SAMPLE_BITS) - 1

_Entry = tuple[bytes, float, datetime]


class RawRing:
    """The last datagrams received, within `budget_bytes` of datagram bytes."""

    def __init__(self, budget_bytes: int = DEFAULT_RAW_RING_BYTES) -> None:
        if budget_bytes < 1:
            raise ValueError("raw ring budget must be at least 1 byte")
        self.budget_bytes = budget_bytes
        self._lock = threading.Lock()
        self._items: list[_Entry] = []
        self._head = 0  # index in _items of the oldest datagram kept
        self._first = 0  # number of _items[_head]
        self._bytes = 0
        self.evicted_total = 0

    @property
    def held_bytes(self) -> int:
        """Datagram bytes held now (at most budget_bytes)."""
        return self._bytes

    @property
    def first(self) -> int:
        """Number of the oldest datagram still held."""
        return self._first

    @property
    def next(self) -> int:
        """Number the next datagram appended will get."""
        with self._lock:
            return self._first + len(self._items) - self._head

    def __len__(self) -> int:
        with self._lock:
            return len(self._items) - self._head

    def extend(self, datagrams: Sequence[bytes], nows: Sequence[float],
               ats: Sequence[datetime]) -> int:
        """Append datagrams in receive order; returns the number of the first of them.

        A datagram larger than the whole budget is numbered, then evicted at once.
        """
        size = sum(map(len, datagrams))
        with self._lock:
            items = self._items
            number = self._first + len(items) - self._head
            items.extend(zip(datagrams, nows, ats, strict=True))
            self._bytes += size
            head = self._head
            while self._bytes > self.budget_bytes and head < len(items):
                self._bytes -= len(items[head][0])
                head += 1
            self.evicted_total += head - self._head
            self._first += head - self._head
            if head > 4096 and head * 2 > len(items):
                del items[:head]  # amortised: each entry is moved at most once per halving
                head = 0
            self._head = head
        return number

    def get(self, number: int) -> _Entry | None:
        """Datagram `number` with its receive now and at, or None if not (or no longer) held."""
        with self._lock:
            i = number - self._first
            if i < 0 or i >= len(self._items) - self._head:
                return None
            return self._items[self._head + i]

    def resolve(self, refs: Iterable[int]) -> list[FlowSample | None]:
        """The FlowSample decode_datagram gives for each ref; None for -1, for a datagram no
        longer held, or for an index the datagram does not have."""
        refs = [int(r) for r in refs]  # numpy integers too: plain ints key the dicts below
        wanted = {r >> REF_SAMPLE_BITS for r in refs if r >= 0}
        with self._lock:
            entries = {}
            for number in wanted:
                i = number - self._first
                if 0 <= i < len(self._items) - self._head:
                    entries[number] = self._items[self._head + i]
        flows: dict[int, list[FlowSample]] = {}
        for number, (data, now, at) in entries.items():
            flows[number] = [s for s in decode_datagram(data, now, at).samples
                             if type(s) is FlowSample]
        out: list[FlowSample | None] = []
        for r in refs:
            got = flows.get(r >> REF_SAMPLE_BITS) if r >= 0 else None
            k = r & _SAMPLE_MASK
            out.append(got[k] if got is not None and k < len(got) else None)
        return out
