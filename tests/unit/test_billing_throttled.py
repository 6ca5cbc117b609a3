"""The 95th percentile of a throttled server bills what was carried, not the demand its port counted.

A switch's input counter counts the frames a server sends before the ingress policer drops
the excess (the lab's veths do too), so a throttled server's usage buckets show its demand.
Its invoice is for the traffic the IDC carried: at most the policed rate while throttled.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from rackwarden.agent.usage import UsageStore
from rackwarden.policies.billing import BucketPart, carried_out_octets

T0 = datetime(2026, 11, 10, 0, 0, tzinfo=UTC)
CAP = 10_000_000
FULL_MS = 300_000


def octets(mbps: float, ms: int = FULL_MS) -> int:
    return int(mbps * 1_000_000 * ms / 8000)


def test_a_bucket_throttled_throughout_carried_the_cap() -> None:
    assert carried_out_octets(octets(15), FULL_MS, FULL_MS, CAP) == octets(10)


def test_a_bucket_throttled_for_half_carried_the_cap_for_that_half() -> None:
    # 15 Mbit/s offered all along: 150 s at line rate (as measured) + 150 s at the cap.
    assert carried_out_octets(octets(15), FULL_MS, FULL_MS // 2, CAP) == octets(15, 150_000) + octets(10, 150_000)


@pytest.mark.parametrize("mbps", [0, 3, 9.99, 10])
def test_a_throttle_never_raises_what_was_measured(mbps: float) -> None:
    assert carried_out_octets(octets(mbps), FULL_MS, FULL_MS, CAP) == octets(mbps)


def test_no_throttle_no_change() -> None:
    assert carried_out_octets(octets(15), FULL_MS, 0, CAP) == octets(15)


def test_the_month_95th_of_a_throttled_server_is_the_cap_not_the_demand(tmp_path: Path) -> None:
    store = UsageStore(f"sqlite:///{tmp_path / 'usage.sqlite'}")
    store.start()
    try:
        # 100 buckets: 80 at 4 Mbit/s, then 20 offering 15 Mbit/s (of which 18 throttled to 10).
        parts = [BucketPart(T0 + timedelta(seconds=300 * k), FULL_MS, octets(4 if k < 80 else 15), octets(1))
                 for k in range(100)]
        store.add("s1", parts)
        end = T0 + timedelta(seconds=300 * 100)
        measured, n = store.p95_bps("s1", T0, end, "max")
        assert n == 100 and measured == pytest.approx(15e6)
        throttle = [(T0 + timedelta(seconds=300 * 82), None, CAP)]  # from bucket 82 on, in force
        billed, n = store.p95_bps("s1", T0, end, "max", throttle)
        # Top 5 of 100 dropped; the 95th is bucket rank 95: a throttled one, billed at the cap.
        assert n == 100 and billed == pytest.approx(10e6)
    finally:
        store.close()
