"""Deadline checks with reasons: R12 unreachable hosts, R13 incident reports, R19 repair times.

Pure: every check takes `now` and the recorded timestamps and says `met`, `pending` (the
deadline has not passed and the obligation is still open) or `breached`. A deadline is met when
the obligation is done at or before it ("within 24 hours" includes the 24th hour's end).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Literal

from .sla import DAY_S, HOUR_S, counted_time, duration_text

FindingStatus = Literal["met", "pending", "breached"]

UNREACHABLE_AFTER_S = 7 * DAY_S  # R12, campus §7: one continuous week without service
INCIDENT_REPORT_WITHIN_S = 24 * HOUR_S  # R13, infosec §16 / rental §2.1.6


@dataclass(frozen=True, slots=True)
class Finding:
    """The state of one deadline for one subject (port, incident or outage)."""

    rule: str  # "R12", "R13", "R19"
    check: str  # "unreachable", "incident_report", "answer", "on_site", "resolve"
    subject: str
    status: FindingStatus
    due_at: datetime
    done_at: datetime | None  # the time that counted (`counted_time`)
    reason: str
    claimed_at: datetime | None = None  # what the person claimed, when it did not count

    @property
    def flagged(self) -> bool:
        """Whether operators must be told now."""
        return self.status == "breached"


@dataclass(frozen=True, slots=True)
class RepairTerms:
    """A contract's repair-time obligations, each in seconds from the fault; None = no such term."""

    name: str
    answer_within_s: int | None = None
    on_site_within_s: int | None = None
    on_site_interrupted_within_s: int | None = None
    resolve_within_s: int | None = None


REPAIR_TERMS: Mapping[str, RepairTerms] = MappingProxyType(
    {
        # colo §6.3: line faults are resolved within 24 hours.
        "colo": RepairTerms("colo", resolve_within_s=24 * HOUR_S),
        # integration §5.2: answer within 1 h; on site within 4 h, 2 h when service is down.
        "integration": RepairTerms(
            "integration",
            answer_within_s=HOUR_S,
            on_site_within_s=4 * HOUR_S,
            on_site_interrupted_within_s=2 * HOUR_S,
        ),
    }
)


def _aware(name: str, at: datetime | None) -> None:
    if at is not None and (at.tzinfo is None or at.utcoffset() is None):
        raise ValueError(f"{name} must be timezone-aware, got {at.isoformat()}")


def _deadline(
    rule: str,
    check: str,
    subject: str,
    what: str,
    since: datetime,
    within_s: int,
    done_at: datetime | None,
    now: datetime,
    recorded_at: datetime | None = None,
) -> Finding:
    due = since + timedelta(seconds=within_s)
    limit = duration_text(within_s)
    if done_at is not None:
        if done_at < since:
            raise ValueError(f"{subject}: {check} time {done_at.isoformat()} is before the start")
        counted = counted_time(done_at, recorded_at)
        took = (counted - since) // timedelta(seconds=1)
        status: FindingStatus = "met" if counted <= due else "breached"
        verdict = "within" if status == "met" else "over"
        reason = f"{rule}: {what} after {duration_text(took)}, {verdict} the {limit} limit"
        if counted == done_at:
            return Finding(rule, check, subject, status, due, done_at, reason)
        claimed = (done_at - since) // timedelta(seconds=1)
        late = duration_text((counted - done_at) // timedelta(seconds=1))
        reason += (f" (counted from its ledger time: the entry claims {duration_text(claimed)}"
                   f" but was recorded {late} after the time it claims)")
        return Finding(rule, check, subject, status, due, counted, reason, claimed_at=done_at)
    elapsed = (now - since) // timedelta(seconds=1)
    if now > due:
        reason = f"{rule}: no {what} after {duration_text(elapsed)}, limit {limit} passed"
        return Finding(rule, check, subject, "breached", due, None, reason)
    reason = f"{rule}: no {what} yet after {duration_text(elapsed)}, due within {limit}"
    return Finding(rule, check, subject, "pending", due, None, reason)


def check_unreachable(
    subject: str,
    now: datetime,
    down_since: datetime | None = None,
    silent_since: datetime | None = None,
    after_s: int = UNREACHABLE_AFTER_S,
) -> Finding | None:
    """R12: a port down, or up but silent, for `after_s` (7 days) is flagged; None if neither.

    Down and silent both mean the host provides no service, so the earlier start counts.
    """
    for name, at in (("now", now), ("down_since", down_since), ("silent_since", silent_since)):
        _aware(name, at)
    starts = [(at, how) for at, how in ((down_since, "down"), (silent_since, "silent")) if at]
    if not starts:
        return None
    since, how = min(starts, key=lambda pair: pair[0])
    due = since + timedelta(seconds=after_s)
    quiet = duration_text((now - since) // timedelta(seconds=1))
    limit = duration_text(after_s)
    # At exactly 7 days the week is complete: flag it.
    if now >= due:
        reason = f"R12: port {how} for {quiet}, at least {limit}: flag to operators"
        return Finding("R12", "unreachable", subject, "breached", due, None, reason)
    reason = f"R12: port {how} for {quiet}, flagged at {limit}"
    return Finding("R12", "unreachable", subject, "pending", due, None, reason)


def check_incident_report(
    incident: str,
    detected_at: datetime,
    reported_at: datetime | None,
    now: datetime,
    within_s: int = INCIDENT_REPORT_WITHIN_S,
    *,
    reported_recorded_at: datetime | None = None,
) -> Finding:
    """R13: a major security incident must be reported within 24 h of its detection.

    `reported_recorded_at` is when the ledger recorded the report: a claimed `reported_at`
    counts no earlier (`counted_time`). `detected_at` counts as claimed: an earlier detection
    only starts the clock sooner, against the one who claims it.
    """
    for name, at in (("detected_at", detected_at), ("reported_at", reported_at), ("now", now),
                     ("reported_recorded_at", reported_recorded_at)):
        _aware(name, at)
    return _deadline(
        "R13", "incident_report", incident, "report", detected_at, within_s, reported_at, now,
        reported_recorded_at,
    )


def check_repair(
    outage: str,
    terms: RepairTerms,
    started_at: datetime,
    now: datetime,
    acknowledged_at: datetime | None = None,
    on_site_at: datetime | None = None,
    resolved_at: datetime | None = None,
    interrupted: bool = True,
    *,
    acknowledged_recorded_at: datetime | None = None,
    on_site_recorded_at: datetime | None = None,
    resolved_recorded_at: datetime | None = None,
) -> tuple[Finding, ...]:
    """R19: one finding per repair term the contract has (answer, on site, resolve).

    `started_at` is when the contract's clock starts (the fault's start or its report).
    `interrupted` selects the shorter on-site limit when the customer's service is down.
    Each `*_recorded_at` is the earliest independent evidence of the claimed time beside it
    (the ledger's append time of the entry): the claim counts no earlier (`counted_time`).
    """
    for name, at in (
        ("started_at", started_at),
        ("now", now),
        ("acknowledged_at", acknowledged_at),
        ("on_site_at", on_site_at),
        ("resolved_at", resolved_at),
        ("acknowledged_recorded_at", acknowledged_recorded_at),
        ("on_site_recorded_at", on_site_recorded_at),
        ("resolved_recorded_at", resolved_recorded_at),
    ):
        _aware(name, at)
    out: list[Finding] = []
    if terms.answer_within_s is not None:
        out.append(
            _deadline(
                "R19",
                "answer",
                outage,
                "answer",
                started_at,
                terms.answer_within_s,
                acknowledged_at,
                now,
                acknowledged_recorded_at,
            )
        )
    on_site_s = terms.on_site_within_s
    if interrupted and terms.on_site_interrupted_within_s is not None:
        on_site_s = terms.on_site_interrupted_within_s
    if on_site_s is not None:
        what = "on site (service interrupted)" if interrupted else "on site"
        out.append(
            _deadline("R19", "on_site", outage, what, started_at, on_site_s, on_site_at, now,
                      on_site_recorded_at)
        )
    if terms.resolve_within_s is not None:
        out.append(
            _deadline(
                "R19",
                "resolve",
                outage,
                "repair",
                started_at,
                terms.resolve_within_s,
                resolved_at,
                now,
                resolved_recorded_at,
            )
        )
    return tuple(out)


def outage_repair(
    outage: str,
    outage_class: str,
    terms: RepairTerms | None,
    started_at: datetime,
    now: datetime,
    *,
    acknowledged_at: datetime | None = None,
    on_site_at: datetime | None = None,
    resolved_at: datetime | None = None,
    ended_at: datetime | None = None,
    acknowledged_recorded_at: datetime | None = None,
    on_site_recorded_at: datetime | None = None,
    resolved_recorded_at: datetime | None = None,
) -> tuple[Finding, ...]:
    """R19 for one ledger outage: only provider time under a contract with repair terms carries
    a repair duty. Customer, maintenance and excluded time carry none; unknown time is the
    RackWardenUnknownOutage alert's business until it is classified. The fault counts as
    repaired at `resolved_at`, else when the port forwarded again (`ended_at`).

    Claimed times (`acknowledged_at`, `on_site_at`, `resolved_at`) count no earlier than their
    `*_recorded_at` ledger times. A repair has a second independent witness: the agent saw the
    port forward again at `ended_at`, so a claimed repair time counts no later than that
    evidence either, and recording a repair late never makes it later than the port's return.
    """
    if outage_class != "provider" or terms is None:
        return ()
    evidence = resolved_recorded_at
    if evidence is not None and ended_at is not None and ended_at < evidence:
        evidence = ended_at
    return check_repair(outage, terms, started_at, now, acknowledged_at=acknowledged_at,
                        on_site_at=on_site_at, resolved_at=resolved_at or ended_at,
                        acknowledged_recorded_at=acknowledged_recorded_at,
                        on_site_recorded_at=on_site_recorded_at,
                        resolved_recorded_at=evidence if resolved_at is not None else None)


def open_deadlines(findings: Iterable[Finding]) -> dict[tuple[str, str, str], int]:
    """How many obligations are not done yet, by (rule, check, "pending" | "overdue")."""
    out: dict[tuple[str, str, str], int] = {}
    for f in findings:
        if f.done_at is None:
            key = (f.rule, f.check, "overdue" if f.status == "breached" else "pending")
            out[key] = out.get(key, 0) + 1
    return out
