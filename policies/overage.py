"""Overage for invoices (R2, R3): the time a server spent above its cap in a month, and the
bytes it sent above the cap then, exact to the byte, from the 5-minute usage buckets.

The arithmetic is integer only (bytes, bit/s, milliseconds); no float ever touches a billed
figure.

- A bucket's judged bytes follow the template's `direction`, as the cap verdict judges it
  (`policies/cap.judged_rate`): `out` what the server sent, `in` what it received, `max` the
  larger, `sum` both.
- Its allowance is the cap × the bucket's 300 s / 8, in bytes. When a cap change (R3) takes
  effect inside a bucket each cap counts for its own share of the bucket, to the millisecond.
- Bytes above the cap = max(0, floor(judged − allowance)). The exact difference is worked out
  in 1/8000 byte (bit/s × ms) and rounded DOWN to a whole byte: the customer is never billed
  for a fraction of a byte. A bucket is over its cap when at least one whole byte is above it;
  a bucket exactly at the cap (or less than a byte above it) is not over, as the cap verdict
  calls a rate over only when it is strictly above.
- Adjacent over-cap buckets under the same cap merge into one period; a period never spans a
  cap change (a bucket a change falls inside is a period of its own, with both caps).
- A gap is never billed: a bucket with no row, or measured for less than its 300 s (a counter
  reset, metering starting or stopping: the bytes of the unmeasured part are unknown), or for
  more (double counting). A gap is shown, never filled in or guessed.
- Throttled time is never billed: a bucket that overlaps a throttle the ledger recorded
  (`restriction_start` with restriction "throttle" until its `restriction_end`) shows the
  demand the switch policed away, not traffic it carried. It is shown as "throttled, not
  billed" with the bytes its counters showed above the cap, for the record.

Known limit: a `gap` sample of the metering policy (an interval longer than max_gap_s) spreads
its bytes evenly over the buckets it covers, and the buckets do not say so. Such buckets are
judged as measured; evening out can only lower the bytes above the cap (max(0, ·) is convex),
so it never bills more than was sent above the cap, though it may spread the over-cap time.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from .billing import BUCKET_S
from .cap import CapSchedule, Direction

BUCKET_MS = BUCKET_S * 1000
# Each poll's share of a bucket is rounded to the millisecond (billing.split_interval), so a
# fully measured bucket may add up to a few ms more or less than 300 s; a second either way
# is rounding, anything beyond is time nobody measured (or measured twice).
COVERED_TOLERANCE_MS = 1000
MS_BITS_PER_BYTE = 8 * 1000  # cap_bps × ms is in bit·ms; 8000 of them make one byte
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

BucketState = Literal["over", "under", "throttled", "gap"]
PeriodKind = Literal["over", "throttled", "gap"]


@dataclass(frozen=True, slots=True)
class Bucket:
    """One stored usage bucket (agent/usage.py `usage_5m`); out/in are the server's view."""

    start: datetime  # aware UTC, aligned to BUCKET_S
    covered_ms: int
    out_octets: int
    in_octets: int


@dataclass(frozen=True, slots=True)
class BucketVerdict:
    start: datetime
    state: BucketState
    caps_bps: tuple[int, ...]  # the caps in force during the bucket, in order (two at a change)
    judged_bytes: int | None  # None for a gap
    allowance_bytes: int  # floor of the exact allowance, for display only
    above_bytes: int  # 0 unless over (or, not billed, throttled)
    reason: str = ""

    @property
    def end(self) -> datetime:
        return self.start + timedelta(seconds=BUCKET_S)


@dataclass(frozen=True, slots=True)
class Period:
    """Adjacent buckets of one kind: over the cap (billed), throttled (not billed) or a gap."""

    kind: PeriodKind
    start: datetime
    end: datetime
    caps_bps: tuple[int, ...]
    above_bytes: int  # over: billed; throttled: the counters' demand above the cap, not billed
    buckets: int
    reason: str

    @property
    def seconds(self) -> int:
        return int((self.end - self.start).total_seconds())


@dataclass(frozen=True, slots=True)
class ServerOverage:
    """One server's month: its periods and the line an invoice uses (资源占用费 basis)."""

    server: str
    direction: Direction
    start: datetime  # the first bucket judged
    end: datetime  # the end of the last bucket judged
    periods: tuple[Period, ...]
    measured_buckets: int  # buckets judged against the cap (over, under or throttled)

    def _total(self, kind: PeriodKind) -> tuple[int, int]:
        ps = [p for p in self.periods if p.kind == kind]
        return sum(p.seconds for p in ps), sum(p.above_bytes for p in ps)

    @property
    def over_seconds(self) -> int:
        return self._total("over")[0]

    @property
    def above_bytes(self) -> int:
        """The invoice's figure: bytes sent above the cap in over-cap periods."""
        return self._total("over")[1]

    @property
    def throttled_seconds(self) -> int:
        return self._total("throttled")[0]

    @property
    def throttled_above_bytes(self) -> int:
        return self._total("throttled")[1]

    @property
    def gap_seconds(self) -> int:
        return self._total("gap")[0]

    @property
    def caps_applied(self) -> tuple[int, ...]:
        """The caps of the over-cap periods, in order of first use."""
        out: list[int] = []
        for p in self.periods:
            if p.kind == "over":
                out.extend(c for c in p.caps_bps if c not in out)
        return tuple(out)


def judged_bytes(direction: Direction, out_octets: int, in_octets: int) -> int:
    """The bytes the direction rule compares with the cap (as `cap.judged_rate` does rates)."""
    if direction == "out":
        return out_octets
    if direction == "in":
        return in_octets
    if direction == "max":
        return max(out_octets, in_octets)
    return out_octets + in_octets


def _ms(at: datetime) -> int:
    """Milliseconds since the epoch, exactly. Inside the month's loop every time is such an
    integer: comparing aware datetimes of different zones costs a UTC offset lookup each time."""
    return (at - EPOCH) // timedelta(milliseconds=1)


@dataclass(frozen=True, slots=True)
class _Schedule:
    """A CapSchedule in epoch milliseconds."""

    base_bps: int
    effective_ms: tuple[int, ...]
    caps_bps: tuple[int, ...]

    @classmethod
    def of(cls, schedule: CapSchedule) -> _Schedule:
        return cls(schedule.base_cap_bps, tuple(_ms(eff) for eff, _ in schedule.changes),
                   tuple(cap for _, cap in schedule.changes))

    def cap_at(self, ms: int) -> int:
        """As CapSchedule.cap_at: the latest change effective at or before `ms`."""
        i = bisect_right(self.effective_ms, ms)
        return self.caps_bps[i - 1] if i else self.base_bps

    def pieces(self, start_ms: int, end_ms: int) -> list[tuple[int, int]]:
        """(cap_bps, ms) for each cap in force during [start_ms, end_ms), in order."""
        lo, hi = bisect_right(self.effective_ms, start_ms), bisect_left(self.effective_ms, end_ms)
        cuts = [start_ms, *self.effective_ms[lo:hi], end_ms]
        out: list[tuple[int, int]] = []
        for a, b in zip(cuts, cuts[1:], strict=False):
            cap = self.cap_at(a)
            if out and out[-1][0] == cap:
                out[-1] = (cap, out[-1][1] + b - a)
            elif b > a:
                out.append((cap, b - a))
        return out


def cap_pieces(schedule: CapSchedule, start: datetime, end: datetime) -> list[tuple[int, int]]:
    """(cap_bps, ms) for each cap in force during [start, end), in order."""
    return _Schedule.of(schedule).pieces(_ms(start), _ms(end))


def above_cap(judged: int, pieces: Sequence[tuple[int, int]]) -> int:
    """Whole bytes above the allowance of `pieces`, rounded down; 0 when at or under it."""
    excess = judged * MS_BITS_PER_BYTE - sum(cap * ms for cap, ms in pieces)
    return excess // MS_BITS_PER_BYTE if excess > 0 else 0


def _judge(slot_ms: int, bucket: Bucket | None, schedule: _Schedule, direction: Direction,
           throttles_ms: Sequence[tuple[int, int]]) -> BucketVerdict:
    end_ms = slot_ms + BUCKET_MS
    slot = EPOCH + timedelta(milliseconds=slot_ms)
    pieces = schedule.pieces(slot_ms, end_ms)
    caps = tuple(c for c, _ in pieces)
    allowance = sum(cap * ms for cap, ms in pieces) // MS_BITS_PER_BYTE
    if bucket is None:
        return BucketVerdict(slot, "gap", caps, None, allowance, 0, "no usage recorded")
    if abs(bucket.covered_ms - BUCKET_MS) > COVERED_TOLERANCE_MS:
        what = "partly measured" if bucket.covered_ms < BUCKET_MS else "measured more than once"
        return BucketVerdict(slot, "gap", caps, None, allowance, 0,
                             f"{what}: {bucket.covered_ms} ms of {BUCKET_MS} ms")
    judged = judged_bytes(direction, bucket.out_octets, bucket.in_octets)
    above = above_cap(judged, pieces)
    if any(a < end_ms and b > slot_ms for a, b in throttles_ms):
        return BucketVerdict(slot, "throttled", caps, judged, allowance, above,
                             "throttled, not billed")
    return BucketVerdict(slot, "over" if above > 0 else "under", caps, judged, allowance, above)


def judge_bucket(slot: datetime, bucket: Bucket | None, schedule: CapSchedule,
                 direction: Direction, throttles: Sequence[tuple[datetime, datetime]]) -> BucketVerdict:
    """One 5-minute slot: a gap, throttled, over or under its cap."""
    return _judge(_ms(slot), bucket, _Schedule.of(schedule), direction,
                  [(_ms(a), _ms(b)) for a, b in throttles])


def _aligned_up_ms(at: datetime) -> int:
    return -(-_ms(at) // BUCKET_MS) * BUCKET_MS


def slots(start: datetime, end: datetime, until: datetime) -> list[int]:
    """The buckets (epoch ms) of [start, end), those starting in it as UsageStore.buckets
    selects them, that have ended by `until`: a bucket still filling is not judged yet."""
    return list(range(_aligned_up_ms(start), min(_ms(end), _ms(until) - BUCKET_MS + 1), BUCKET_MS))


def _gap_reason(vs: Sequence[BucketVerdict]) -> str:
    reasons = sorted({v.reason for v in vs})
    return "; ".join(reasons)


def merge(verdicts: Sequence[BucketVerdict]) -> list[Period]:
    """Adjacent buckets of one kind become a period; an over-cap period ends at a cap change."""
    out: list[Period] = []
    run: list[BucketVerdict] = []

    def flush() -> None:
        if not run:
            return
        kind = run[0].state
        assert kind != "under"
        caps: list[int] = []
        for v in run:
            caps.extend(c for c in v.caps_bps if not caps or caps[-1] != c)
        reason = {"over": "over the cap: billable", "throttled": "throttled, not billed",
                  "gap": _gap_reason(run)}[kind]
        out.append(Period(kind, run[0].start, run[-1].end, tuple(caps),
                          sum(v.above_bytes for v in run), len(run), reason))
        run.clear()

    for v in verdicts:
        joins = (bool(run) and run[-1].end == v.start and run[-1].state == v.state
                 and (v.state != "over" or (len(v.caps_bps) == 1 and run[-1].caps_bps == v.caps_bps)))
        if not joins:
            flush()
        if v.state != "under":
            run.append(v)
    flush()
    return out


def server_overage(server: str, buckets: Sequence[Bucket], schedule: CapSchedule,
                   direction: Direction, start: datetime, end: datetime, until: datetime,
                   throttles: Sequence[tuple[datetime, datetime]] = ()) -> ServerOverage:
    """One server's overage over the buckets of [start, end) that ended by `until`.

    `throttles` are [from, to) intervals the port was throttled (open ones end at `until`).
    """
    by_start = {_ms(b.start): b for b in buckets}
    sched = _Schedule.of(schedule)
    throttles_ms = [(_ms(a), _ms(b)) for a, b in throttles]
    ss = slots(start, end, until)
    verdicts: list[BucketVerdict] = []
    under = 0
    for s in ss:
        b = by_start.get(s)
        # Most buckets of a month are fully measured, under one cap and under it: they are
        # counted and skipped (merge needs only the others; an absent bucket breaks a run).
        if b is not None and abs(b.covered_ms - BUCKET_MS) <= COVERED_TOLERANCE_MS:
            i = bisect_right(sched.effective_ms, s)
            if i == bisect_left(sched.effective_ms, s + BUCKET_MS):
                cap = sched.caps_bps[i - 1] if i else sched.base_bps
                judged = judged_bytes(direction, b.out_octets, b.in_octets)
                if (judged * MS_BITS_PER_BYTE - cap * BUCKET_MS < MS_BITS_PER_BYTE
                        and not any(a < s + BUCKET_MS and z > s for a, z in throttles_ms)):
                    under += 1
                    continue
        verdicts.append(_judge(s, b, sched, direction, throttles_ms))
    first = ss[0] if ss else _aligned_up_ms(start)
    last = ss[-1] + BUCKET_MS if ss else first
    return ServerOverage(server, direction, EPOCH + timedelta(milliseconds=first),
                         EPOCH + timedelta(milliseconds=last), tuple(merge(verdicts)),
                         under + sum(1 for v in verdicts if v.state != "gap"))
