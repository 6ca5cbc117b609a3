"""The sFlow raw ring holds about its byte budget, however large the batches it is given."""

from __future__ import annotations

import os
from datetime import UTC, datetime

from rackwarden.drivers.sflow.rawring import RawRing


def test_evicted_batches_release_their_bytes() -> None:
    """Whole batches are kept as one bytes object each; once every datagram of one is evicted
    its bytes must go, not wait for the list's amortised trim (64 dead 1.4 MB batches held
    ~90 MB beside an 8 MiB budget)."""
    ring = RawRing(budget_bytes=1 << 20)
    batch = [os.urandom(1400) for _ in range(256)]  # 358 KB a batch
    at = datetime.now(UTC)
    for i in range(100):
        ring.extend(batch, [float(i)] * len(batch), [at] * len(batch))
    held = sum(len(c.blob) for c in ring._chunks)
    assert held <= ring.budget_bytes + 2 * 1400 * len(batch)
    # What is still numbered is still readable; what was evicted is gone.
    assert ring.get(ring.next - 1) is not None
    assert ring.get(ring.next - len(ring)) is not None
    assert ring.get(ring.next - len(ring) - 1) is None
