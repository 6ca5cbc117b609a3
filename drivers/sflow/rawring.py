"""A bounded ring of the raw sFlow datagrams last received, for evidence on demand.

The columns path builds no FlowSample per sample; a detection that fires needs the samples
behind it (top flows, an evidence pcap), so the collector keeps the datagrams themselves,
as the switch sent them, with their receive times, and re-decodes the few that are asked
for with the exact decoder. Each datagram gets a number, counting from 0 in receive order;
a row of the columns has `ref = number << REF_SAMPLE_BITS | k`, k the index of the sample
among its datagram's FlowSamples (batch.decode_batch_columns), so resolve() gives back
exactly the FlowSample object decode_datagram made for that row, or None once the datagram
has been evicted.

The ring is bounded by bytes (the datagrams' lengths). It keeps each batch as one chunk: one
bytes object holding the batch's datagrams back to back, with numpy arrays of their offsets and
lengths, so a batch costs a handful of objects, not two per datagram, and the recvmmsg path
hands over the very buffer it decoded (add_blob, no copy). Eviction is still per datagram,
oldest first, exactly as before; a chunk's bytes are freed when its last datagram goes, so
memory can exceed the budget by at most one chunk's evicted part. One thread appends (the
receive thread) while others resolve (the event loop): a lock guards the index, decoding
happens outside it.
"""

from __future__ import annotations

import bisect
import mmap
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt
from rackwarden.drivers.sflow.batch import REF_SAMPLE_BITS
from rackwarden.drivers.sflow.decoder import decode_datagram
from rackwarden.policies.flowfacts import FlowSample

__all__ = ["DEFAULT_RAW_RING_BYTES", "RawRing"]

DEFAULT_RAW_RING_BYTES = 8 * 1024 * 1024  # ~6,000 datagrams of ~1.3 KB: a second at 6k/s
_SAMPLE_MASK = (1 << REF_SAMPLE_BITS) - 1

_Entry = tuple[bytes, float, datetime]
_I64 = npt.NDArray[np.int64]


@dataclass(slots=True)
class _Chunk:
    """One extend's datagrams: datagram i is blob[offs[i]:offs[i] + lens[i]]."""

    number: int  # number of datagram 0
    blob: bytes
    offs: _I64
    lens: _I64
    cum: _I64  # cum[i] = sum(lens[:i]), one more entry than datagrams
    nows: Sequence[float]
    ats: Sequence[datetime]
    head: int = 0  # datagrams before this one are evicted


class RawRing:
    """The last datagrams received, within `budget_bytes` of datagram bytes."""

    def __init__(self, budget_bytes: int = DEFAULT_RAW_RING_BYTES) -> None:
        if budget_bytes < 1:
            raise ValueError("raw ring budget must be at least 1 byte")
        self.budget_bytes = budget_bytes
        self._lock = threading.Lock()
        self._chunks: list[_Chunk] = []
        self._numbers: list[int] = []  # number of each chunk's datagram 0, for bisect
        self._c0 = 0  # index in _chunks of the oldest chunk still holding a datagram
        self._first = 0  # number of the oldest datagram kept
        self._next = 0
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
            return self._next

    def __len__(self) -> int:
        with self._lock:
            return self._next - self._first

    def extend(self, datagrams: Sequence[bytes], nows: Sequence[float],
               ats: Sequence[datetime]) -> int:
        """Append datagrams in receive order; returns the number of the first of them.

        A datagram larger than the whole budget is numbered, then evicted at once.
        """
        lens = np.fromiter(map(len, datagrams), dtype=np.int64, count=len(datagrams))
        return self.add_blob(b"".join(datagrams), np.cumsum(lens) - lens, lens, nows, ats)

    def extend_from(self, buffer: bytes | bytearray | mmap.mmap, starts: Sequence[int],
                    lengths: Sequence[int], nows: Sequence[float],
                    ats: Sequence[datetime]) -> int:
        """extend() with datagram i being `buffer[starts[i]:starts[i] + lengths[i]]`, copied
        (once, into one bytes object)."""
        view = memoryview(buffer)
        lens = np.array(lengths, dtype=np.int64).reshape(-1)
        blob = b"".join([view[a:a + n] for a, n in zip(starts, lens.tolist(), strict=True)])
        return self.add_blob(blob, np.cumsum(lens) - lens, lens, nows, ats)

    def add_blob(self, blob: bytes, offsets: _I64, lengths: _I64, nows: Sequence[float],
                 ats: Sequence[datetime]) -> int:
        """extend() with datagram i being `blob[offsets[i]:offsets[i] + lengths[i]]`; keeps
        `blob` itself (bytes are immutable: nothing is copied)."""
        n = int(lengths.shape[0])
        if offsets.shape != lengths.shape or len(nows) != n or len(ats) != n:
            raise ValueError("raw ring: one offset, one length, one now and one at a datagram")
        cum = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lengths, out=cum[1:])
        with self._lock:
            number = self._next
            if n:
                # Copies of the stamp lists: the caller's may change after this returns.
                self._chunks.append(_Chunk(number, blob, offsets, lengths, cum, list(nows),
                                           list(ats)))
                self._numbers.append(number)
            self._next += n
            self._bytes += int(cum[-1])
            self._evict()
        return number

    def _evict(self) -> None:
        """Drop the oldest datagrams until the bytes held are within budget: the fewest that
        do it, as a datagram-by-datagram loop would, found by bisection per chunk."""
        excess = self._bytes - self.budget_bytes
        chunks = self._chunks
        while excess > 0:
            c = chunks[self._c0]
            count = int(c.lens.shape[0])
            base = int(c.cum[c.head])
            k = int(np.searchsorted(c.cum, base + excess, side="left"))
            if k > count:
                k = count
            gone = int(c.cum[k]) - base
            self.evicted_total += k - c.head
            self._first += k - c.head
            self._bytes -= gone
            excess -= gone
            c.head = k
            if k == count:
                # Gone whole: its bytes go now (the list entry itself goes in the amortised
                # trim below; with batch-sized blobs, 64 dead ones held ~90 MB).
                c.blob, c.nows, c.ats = b"", (), ()
                self._c0 += 1
        c0 = self._c0
        if c0 > 64 and c0 * 2 > len(chunks):
            del chunks[:c0]  # amortised: each chunk is moved at most once per halving
            del self._numbers[:c0]
            self._c0 = 0

    def _entry(self, number: int) -> _Entry | None:
        """Datagram `number` (under the lock)."""
        if not self._first <= number < self._next:
            return None
        j = bisect.bisect_right(self._numbers, number, lo=self._c0) - 1
        c = self._chunks[j]
        i = number - c.number
        off = int(c.offs[i])
        return c.blob[off:off + int(c.lens[i])], c.nows[i], c.ats[i]

    def get(self, number: int) -> _Entry | None:
        """Datagram `number` with its receive now and at, or None if not (or no longer) held."""
        with self._lock:
            return self._entry(number)

    def resolve(self, refs: Iterable[int]) -> list[FlowSample | None]:
        """The FlowSample decode_datagram gives for each ref; None for -1, for a datagram no
        longer held, or for an index the datagram does not have."""
        refs = [int(r) for r in refs]  # numpy integers too: plain ints key the dicts below
        wanted = {r >> REF_SAMPLE_BITS for r in refs if r >= 0}
        with self._lock:
            entries = {}
            for number in wanted:
                entry = self._entry(number)
                if entry is not None:
                    entries[number] = entry
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
