"""5-minute bucket splitting and the nearest-rank 95th percentile, with hand computations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rackwarden.policies.billing import bucket_rate_bps, percentile_95, split_interval
from rackwarden.policies.cap import CapSchedule

T = datetime(2026, 11, 22, 2, 0, tzinfo=UTC)


def test_interval_inside_one_bucket_is_one_part() -> None:
    parts = split_interval(T, T + timedelta(seconds=60), 7_500_000, 100)
    assert [(p.bucket_start, p.covered_ms, p.out_octets, p.in_octets) for p in parts] == [
        (T, 60_000, 7_500_000, 100)]


def test_interval_across_a_boundary_is_split_by_time() -> None:
    # 04:30..05:30 past 02:00: 30 s in the 02:00 bucket, 30 s in 02:05; 1000 octets → 500 + 500.
    start = T + timedelta(seconds=270)
    parts = split_interval(start, start + timedelta(seconds=60), 1000, 3)
    assert [(p.bucket_start - T, p.covered_ms, p.out_octets, p.in_octets) for p in parts] == [
        (timedelta(0), 30_000, 500, 1), (timedelta(seconds=300), 30_000, 500, 2)]


@given(st.integers(0, 10**6), st.floats(0.001, 2000), st.integers(0, 2**40), st.integers(0, 2**40))
def test_split_never_gains_or_loses_an_octet(offset_ms: int, length_s: float, out: int, inb: int) -> None:
    start = T + timedelta(milliseconds=offset_ms)
    parts = split_interval(start, start + timedelta(seconds=length_s), out, inb)
    assert sum(p.out_octets for p in parts) == out
    assert sum(p.in_octets for p in parts) == inb
    assert all(p.out_octets >= 0 and p.in_octets >= 0 for p in parts)


@pytest.mark.parametrize("rule,expected", [
    # 300 s bucket, out 37.5 MB, in 75 MB: out = 1 Mbit/s, in = 2 Mbit/s.
    ("out", 1_000_000.0), ("in", 2_000_000.0), ("max", 2_000_000.0), ("sum", 3_000_000.0)])
def test_bucket_rate_rules(rule: str, expected: float) -> None:
    assert bucket_rate_bps(37_500_000, 75_000_000, 300_000, rule) == expected  # type: ignore[arg-type]


def test_p95_nearest_rank() -> None:
    # 20 samples 1..20: ceil(0.95 × 20) = 19 → the 19th smallest is 19; the top one is dropped.
    assert percentile_95([float(x) for x in range(20, 0, -1)]) == 19.0
    # 8640 samples (30 days of 5 min): rank ceil(8208.0) = 8208; the top 432 are dropped.
    rates = [float(x) for x in range(1, 8641)]
    assert percentile_95(rates) == 8208.0
    assert percentile_95([]) is None


def test_cap_schedule_takes_the_latest_effective_change() -> None:
    s = CapSchedule(10_000_000, ((T, 20_000_000), (T + timedelta(days=1), 5_000_000)))
    assert s.cap_at(T - timedelta(seconds=1)) == 10_000_000
    assert s.cap_at(T) == 20_000_000
    assert s.cap_at(T + timedelta(days=2)) == 5_000_000



def test_the_jitter_allowance_never_shortens_a_short_window() -> None:
    # Bug (lab): a fixed 2 s allowance let a 6 s window count as sustained after 4 s.
    from datetime import timedelta as td

    from rackwarden.policies.cap import CapRule, judge
    from rackwarden.policies.metering import RateSample

    def over(t: float) -> RateSample:
        return RateSample("sw1", "p1", T + td(seconds=t), "ok", interval_s=2.0, in_octets=1, out_octets=1,
                          in_bps=15e6, out_bps=0.0, start_at=T + td(seconds=t - 2))

    short, run = CapRule(10_000_000, window_s=6.0), None
    states = []
    for t in (2, 4, 6):
        v, run = judge("s", over(t), run, short)
        states.append(v.state)
    assert states == ["over", "over", "sustained"]  # 6 s covered, not 4
    assert CapRule(10_000_000, window_s=300.0).tolerance_s == 2.0
    assert CapRule(10_000_000, window_s=6.0).tolerance_s == 0.12
