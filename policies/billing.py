"""Usage for invoices: 5-minute buckets of accepted octets and the monthly 95th percentile."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

BUCKET_S = 300
BillingDirection = Literal["max", "out", "in", "sum"]
BILLING_DIRECTIONS: tuple[BillingDirection, ...] = ("max", "out", "in", "sum")


@dataclass(frozen=True, slots=True)
class BucketPart:
    """The share of one measured interval that falls in one 5-minute bucket.

    out/in are the server's perspective (out = sent = the switch port's ifIn).
    """

    bucket_start: datetime  # aware UTC, aligned to BUCKET_S
    covered_ms: int
    out_octets: int
    in_octets: int


def _bucket_floor(at: datetime) -> datetime:
    epoch = int(at.timestamp())
    return datetime.fromtimestamp(epoch - epoch % BUCKET_S, tz=UTC)


def split_interval(
    start_at: datetime, end_at: datetime, out_octets: int, in_octets: int
) -> list[BucketPart]:
    """Spread one interval's octets over the buckets it covers, in proportion to time.

    Integer shares are floored and the remainder goes to the last part, so the parts always
    add up to exactly the octets measured: billing never gains or loses a byte in the split.
    """
    if end_at <= start_at:
        raise ValueError("interval must have positive length")
    total_ms = round((end_at - start_at).total_seconds() * 1000)
    parts: list[BucketPart] = []
    cursor = start_at
    used_out = used_in = 0
    while cursor < end_at:
        b = _bucket_floor(cursor)
        b_end = min(b + timedelta(seconds=BUCKET_S), end_at)
        ms = round((b_end - cursor).total_seconds() * 1000)
        last = b_end >= end_at
        if last:
            o, i = out_octets - used_out, in_octets - used_in
        else:
            o = out_octets * ms // total_ms if total_ms else 0
            i = in_octets * ms // total_ms if total_ms else 0
        used_out += o
        used_in += i
        parts.append(BucketPart(b, ms, o, i))
        cursor = b_end
    return parts


def bucket_rate_bps(out_octets: int, in_octets: int, covered_ms: int, rule: BillingDirection) -> float:
    """A bucket's billable rate: octets over the time actually measured in it."""
    if covered_ms <= 0:
        raise ValueError("bucket has no measured time")
    if rule == "out":
        octets = out_octets
    elif rule == "in":
        octets = in_octets
    elif rule == "sum":
        octets = out_octets + in_octets
    else:
        # max(in, out) per sample is the usual IDC rule.
        octets = max(out_octets, in_octets)
    return octets * 8 * 1000 / covered_ms


def carried_out_octets(out_octets: int, covered_ms: int, throttled_ms: int, rate_bps: int) -> int:
    """What a bucket's outbound carried when the port was throttled for `throttled_ms` of it.

    The port's input counter counts what the server offered, including what the policer
    dropped; the invoice is for what was carried. The throttled share of the bucket carried at
    most `rate_bps` (integer: floor of bits to octets); the rest is taken as measured, spread
    evenly over the bucket. Never more than measured.
    """
    if covered_ms <= 0 or throttled_ms <= 0:
        return out_octets
    throttled_ms = min(throttled_ms, covered_ms)
    free = out_octets * (covered_ms - throttled_ms) // covered_ms
    policed = min(out_octets - free, rate_bps * throttled_ms // 8000)
    return free + policed


def percentile_95(rates: Iterable[float]) -> float | None:
    """Nearest-rank 95th percentile: sort, drop the top 5 %, take the highest left."""
    ordered = sorted(rates)
    if not ordered:
        return None
    rank = math.ceil(0.95 * len(ordered))
    return ordered[rank - 1]
