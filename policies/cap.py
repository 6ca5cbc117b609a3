"""The bandwidth-cap policy (CONTRACT_RULES R1–R3): judges each server's rate against its cap.

Direction is the server's: `out` is what the server sends (the switch port's ifIn), `in` is
what it receives (the port's ifOut). A server is `over` when its judged rate is strictly above
its cap, and `sustained` once consecutive valid over-cap samples cover the window. A sample
without a rate breaks the run: an overage claim rests only on measured intervals. So does a
sample whose interval spans a poll that was not answered (or whose reply was not trusted): its
average is billed, but it is not measured time, so the run restarts after it. A `repeat` (a
second reading too soon after the previous one to measure anything, e.g. a SIGHUP re-poll)
leaves the run as it was. An overage that is mostly inbound is a victim's, not a violator's:
it is reported, never actionable.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from .metering import RateSample

Direction = Literal["out", "in", "max", "sum"]
DIRECTIONS: tuple[Direction, ...] = ("out", "in", "max", "sum")
CapStateName = Literal["ok", "over", "sustained"]
CAP_STATE_VALUE: dict[CapStateName, int] = {"ok": 0, "over": 1, "sustained": 2}
MAX_EVIDENCE = 64  # samples kept per run: enough for a 5-minute window at 5 s polls


@dataclass(frozen=True, slots=True)
class CapRule:
    """How one server is judged: cap, window and which direction counts."""

    cap_bps: int
    window_s: float = 300.0
    direction: Direction = "out"
    # Poll jitter makes five 60 s intervals sum to 299.9 s; this much shortfall is forgiven,
    # but never more than 2 % of the window: a short window must really be waited for.
    window_tolerance_s: float = 2.0

    @property
    def tolerance_s(self) -> float:
        return min(self.window_tolerance_s, 0.02 * self.window_s)


@dataclass(frozen=True, slots=True)
class Evidence:
    """One measured interval inside an over-cap run (server's perspective)."""

    start_at: datetime
    end_at: datetime
    out_bps: float
    in_bps: float
    judged_bps: float


@dataclass(frozen=True, slots=True)
class CapRun:
    """Consecutive valid samples above the cap."""

    started_at: datetime
    covered_s: float
    inbound_dominant_s: float  # of covered_s, the time the server received more than it sent
    evidence: tuple[Evidence, ...] = ()


@dataclass(frozen=True, slots=True)
class CapVerdict:
    """The cap state of one server after one sample, with the reasons and evidence."""

    server: str
    at: datetime
    state: CapStateName
    actionable: bool
    cap_bps: int
    direction: Direction
    valid: bool  # False when the sample had no rate (the run was broken)
    judged_bps: float | None = None
    covered_s: float = 0.0
    reason: str = ""
    inbound_over: bool = False  # received more than the cap: reported, never acted on
    evidence: tuple[Evidence, ...] = field(default=())


def judged_rate(direction: Direction, out_bps: float, in_bps: float) -> float:
    """The rate the contract's direction rule compares with the cap."""
    if direction == "out":
        return out_bps
    if direction == "in":
        return in_bps
    if direction == "max":
        return max(out_bps, in_bps)
    return out_bps + in_bps


def judge(
    server: str, sample: RateSample, run: CapRun | None, rule: CapRule
) -> tuple[CapVerdict, CapRun | None]:
    """Advance one server's over-cap run by one port sample."""
    if sample.status == "repeat":
        # Nothing was measured, and nothing happened that breaks a run either.
        return _standing(server, sample, run, rule), run
    if not sample.ok or sample.in_bps is None or sample.out_bps is None:
        reason = f"no rate ({sample.status}: {sample.reason}); over-cap run broken"
        verdict = CapVerdict(
            server, sample.at, "ok", False, rule.cap_bps, rule.direction, valid=False,
            reason=reason,
        )
        return verdict, None
    if sample.spans_missed:
        # The interval averages over a poll nobody answered: billed, but not measured time.
        judged = judged_rate(rule.direction, sample.in_bps, sample.out_bps)
        reason = (f"interval spans {sample.spans_missed} unanswered poll(s): not measured time;"
                  " over-cap run restarts after it")
        verdict = CapVerdict(
            server, sample.at, "ok", False, rule.cap_bps, rule.direction, valid=False,
            judged_bps=judged, reason=reason,
        )
        return verdict, None

    # Switch port ingress is what the server sends.
    out_bps, in_bps = sample.in_bps, sample.out_bps
    judged = judged_rate(rule.direction, out_bps, in_bps)
    inbound_over = in_bps > rule.cap_bps
    if judged <= rule.cap_bps:
        verdict = CapVerdict(
            server, sample.at, "ok", False, rule.cap_bps, rule.direction, valid=True,
            judged_bps=judged, inbound_over=inbound_over,
            reason="inbound above cap (reported only)" if inbound_over else "",
        )
        return verdict, None

    interval = sample.interval_s or 0.0
    start_at = sample.start_at or sample.at
    ev = Evidence(start_at, sample.at, out_bps, in_bps, judged)
    inbound_s = interval if in_bps > out_bps else 0.0
    if run is None:
        run = CapRun(start_at, interval, inbound_s, (ev,))
    else:
        run = CapRun(
            run.started_at,
            run.covered_s + interval,
            run.inbound_dominant_s + inbound_s,
            (run.evidence + (ev,))[-MAX_EVIDENCE:],
        )
    sustained = run.covered_s + rule.tolerance_s >= rule.window_s
    victim = rule.direction != "out" and run.inbound_dominant_s * 2 > run.covered_s
    if sustained and victim:
        reason = "sustained over cap but mostly inbound: a victim, reported only"
    elif sustained:
        reason = f"over cap for {run.covered_s:.0f} s >= window {rule.window_s:g} s"
    else:
        reason = f"over cap for {run.covered_s:.0f} s of {rule.window_s:g} s window"
    verdict = CapVerdict(
        server, sample.at, "sustained" if sustained else "over", sustained and not victim,
        rule.cap_bps, rule.direction, valid=True, judged_bps=judged, covered_s=run.covered_s,
        reason=reason, inbound_over=inbound_over, evidence=run.evidence,
    )
    return verdict, run


def _standing(server: str, sample: RateSample, run: CapRun | None, rule: CapRule) -> CapVerdict:
    """The verdict of a run that this sample neither extends nor breaks."""
    if run is None:
        return CapVerdict(server, sample.at, "ok", False, rule.cap_bps, rule.direction,
                          valid=False, reason=f"{sample.status}: {sample.reason}")
    sustained = run.covered_s + rule.tolerance_s >= rule.window_s
    victim = rule.direction != "out" and run.inbound_dominant_s * 2 > run.covered_s
    last = run.evidence[-1] if run.evidence else None
    return CapVerdict(
        server, sample.at, "sustained" if sustained else "over", sustained and not victim,
        rule.cap_bps, rule.direction, valid=False,
        judged_bps=last.judged_bps if last is not None else None, covered_s=run.covered_s,
        reason=f"{sample.status}: {sample.reason}; over-cap run of {run.covered_s:.0f} s stands",
        evidence=run.evidence,
    )


@dataclass(frozen=True, slots=True)
class CapSchedule:
    """A server's cap over time (R3): caps are data with an effective date, not constants."""

    base_cap_bps: int
    changes: tuple[tuple[datetime, int], ...] = ()  # (effective_at, cap_bps), ascending

    def cap_at(self, at: datetime) -> int:
        """The cap in force at `at`: the latest change effective at or before it."""
        i = bisect_right([eff for eff, _ in self.changes], at)
        return self.changes[i - 1][1] if i else self.base_cap_bps


# R3 (rental §2.1.1): the customer may object to a new standard within 15 days of being told.
OBJECTION_PERIOD_S = 15 * 86_400


@dataclass(frozen=True, slots=True)
class CapAnnouncement:
    """One dated cap change the customer must be told of (R3), with what the notice says."""

    server: str
    key: str  # stable per server, effective time and new cap: one notice per change, ever
    effective_at: datetime
    from_bps: int
    to_bps: int
    objection_until: datetime  # 15 days from this announcement
    short_notice: bool  # takes effect before the objection period ends (or already has)


def cap_announcements(server: str, schedule: CapSchedule, at: datetime) -> list[CapAnnouncement]:
    """The cap changes to announce at `at`: every change not older than the objection period.

    A change effective long ago is history (its period is over); one still to come, or that
    took effect less than 15 days ago, is announced, and `short_notice` says when the customer
    gets fewer than 15 days before it applies. The caller sends each key once.
    """
    out = []
    previous = schedule.base_cap_bps
    for effective, cap in schedule.changes:
        if cap != previous and (effective - at).total_seconds() > -OBJECTION_PERIOD_S:
            until = at + timedelta(seconds=OBJECTION_PERIOD_S)
            out.append(CapAnnouncement(
                server=server, key=f"{server}:cap:{effective.isoformat()}:{cap}", effective_at=effective,
                from_bps=previous, to_bps=cap, objection_until=until,
                short_notice=(effective - at).total_seconds() < OBJECTION_PERIOD_S,
            ))
        previous = cap
    return out
