"""Folds ledger entries into views: outages with their current class, incidents, maintenance windows.

Nothing in the log is ever updated: a correction is a later entry referring to the one it
corrects, so every view is the log folded in seq order.

Ledger time. Every entry's `at` is written when it is appended and is inside its hash, so it
cannot change unseen; and an entry cannot have been appended before the one it follows. The
ledger time of an entry is therefore its `at`, but never earlier than the `at` of any entry
before it in the fold (`LedgerClock`). Old ledgers need nothing new: `at` has always been in the
chain. Times a person supplies (a window's notice, an arrival, a report) are kept beside it
as claimed; the rules in policies/ count them no earlier than the ledger time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any

from rackwarden.policies.outages import whole_second
from rackwarden.policies.sla import Classification, MaintenanceWindow, OutageRecord, standing_class

from .chain import Entry, parse_ts


class LedgerClock:
    """The ledger time of entries folded in seq order: each `at`, never before an earlier one's.

    A caller that back-dates `at` through the Python API gains nothing against the entries
    already in the log: the chain's order proves the entry came after them.
    """

    def __init__(self) -> None:
        self._now: datetime | None = None

    def tick(self, e: Entry) -> datetime:
        at = e.at
        if at.microsecond:
            # Ledger rules work in whole seconds; rounding up never makes an entry look earlier.
            at = at.replace(microsecond=0) + timedelta(seconds=1)
        if self._now is None or at > self._now:
            self._now = at
        return self._now


@dataclass(frozen=True, slots=True)
class ClassChange:
    """One classify/reclassify entry as it applies to an outage; `at` is its ledger time."""

    seq: int
    at: datetime
    kind: str  # "classify" (agent) or "reclassify" (operator)
    by: str
    outage_class: str  # a class, or "none"
    cause: str | None
    false_positive: bool
    reason: str


@dataclass(frozen=True, slots=True)
class OutageView:
    """An outage as the log says now: its start entry, end, and current cause after corrections.

    `seq` (the outage_start entry's seq) is its identity in the ledger and in the CLI.
    """

    seq: int
    outage_id: str
    server: str
    switch: str | None
    port: str | None
    state: str
    start: datetime
    end: datetime | None
    recorded_cause: str
    cause: str | None  # None when an operator said it was no outage ("none")
    false_positive: bool
    outage_class: str  # a class, or "none"
    evidence: Mapping[str, Any]
    end_evidence: Mapping[str, Any]
    changes: tuple[ClassChange, ...] = ()
    acknowledged_at: datetime | None = None  # R19 times as claimed (`--at`)
    on_site_at: datetime | None = None
    resolved_at: datetime | None = None
    acknowledged_recorded_at: datetime | None = None  # their entries' ledger times
    on_site_recorded_at: datetime | None = None
    resolved_recorded_at: datetime | None = None

    @property
    def reclassifications(self) -> tuple[ClassChange, ...]:
        """Operators' decisions, each with its ledger time, reason and author."""
        return tuple(c for c in self.changes if c.kind == "reclassify")

    @property
    def open(self) -> bool:
        return self.end is None

    @property
    def operator_resolved(self) -> bool:
        return any(c.kind == "reclassify" for c in self.changes)

    def end_or(self, now: datetime) -> datetime:
        return self.end if self.end is not None else max(self.start, whole_second(now))

    def seconds(self, now: datetime) -> int:
        return int((self.end_or(now) - self.start) // timedelta(seconds=1))

    def record(self, now: datetime) -> OutageRecord | None:
        """The record the SLA engine takes; None if voided or of zero length."""
        if self.cause is None:
            return None
        end = self.end_or(now)
        if end <= self.start:
            return None
        return OutageRecord(f"#{self.seq}", self.server, self.start, end, self.cause,
                            self.false_positive)


@dataclass(frozen=True, slots=True)
class IncidentView:
    """An R13 security incident: when it was detected and when it was reported (if yet)."""

    seq: int
    server: str | None
    summary: str
    detected_at: datetime  # as claimed
    reported_at: datetime | None  # as claimed
    by: str
    recorded_at: datetime | None = None  # ledger time of the incident entry
    reported_recorded_at: datetime | None = None  # ledger time of the entry with reported_at

    @property
    def incident_id(self) -> str:
        return f"I{self.seq}"


@dataclass(frozen=True, slots=True)
class WindowView:
    """A declared maintenance window with when it was declared and by whom."""

    seq: int
    window: MaintenanceWindow  # its declared_at is the ledger time below
    declared_at: datetime  # ledger time of the declaration
    by: str
    reason: str



def fold_outages(entries: Iterable[Entry]) -> list[OutageView]:
    """Fold the log, in seq order, into the current view of every outage."""
    starts: dict[int, dict[str, Any]] = {}
    order: list[int] = []
    clock = LedgerClock()
    for e in sorted(entries, key=lambda x: x.seq):
        p = e.payload
        now = clock.tick(e)
        if e.kind == "outage_start":
            starts[e.seq] = {
                "start": e, "end": None, "end_evidence": {}, "agent_cause": p["cause"],
                "operator": None, "changes": [], "ack": None, "on_site": None, "resolved": None,
            }
            order.append(e.seq)
            continue
        if e.ref_seq is None or e.ref_seq not in starts:
            continue
        s = starts[e.ref_seq]
        if e.kind == "outage_end":
            s["end"] = parse_ts(p["end"])
            s["end_evidence"] = p.get("evidence", {})
        elif e.kind in ("classify", "reclassify"):
            change = ClassChange(
                e.seq, now, e.kind, str(p.get("by", "agent")), str(p["class"]),
                p.get("cause"), bool(p.get("false_positive", False)), str(p.get("reason", "")),
            )
            s["changes"].append(change)
            if e.kind == "reclassify":
                s["operator"] = change
            else:
                s["agent_cause"] = change.cause
        elif e.kind == "ack":
            s["ack"] = s["ack"] or (parse_ts(p["at"]), now)
        elif e.kind == "on_site":
            s["on_site"] = s["on_site"] or (parse_ts(p["at"]), now)
        elif e.kind == "resolve":
            s["resolved"] = (parse_ts(p["at"]), now)
    out: list[OutageView] = []
    for seq in order:
        s = starts[seq]
        e = s["start"]
        p = e.payload
        op: ClassChange | None = s["operator"]
        standing = standing_class(s["agent_cause"], None if op is None else Classification(
            op.outage_class, op.cause, op.false_positive))
        out.append(
            OutageView(
                seq=seq,
                outage_id=str(p["outage_id"]),
                server=str(e.server),
                switch=p.get("switch"),
                port=p.get("port"),
                state=str(p.get("state", "")),
                start=parse_ts(p["start"]),
                end=s["end"],
                recorded_cause=str(p["cause"]),
                cause=standing.cause,
                false_positive=standing.false_positive,
                outage_class=standing.outage_class,
                evidence=MappingProxyType(dict(p.get("evidence", {}))),
                end_evidence=MappingProxyType(dict(s["end_evidence"])),
                changes=tuple(s["changes"]),
                acknowledged_at=s["ack"] and s["ack"][0],
                on_site_at=s["on_site"] and s["on_site"][0],
                resolved_at=s["resolved"] and s["resolved"][0],
                acknowledged_recorded_at=s["ack"] and s["ack"][1],
                on_site_recorded_at=s["on_site"] and s["on_site"][1],
                resolved_recorded_at=s["resolved"] and s["resolved"][1],
            )
        )
    return out


def fold_incidents(entries: Iterable[Entry]) -> list[IncidentView]:
    """Every incident, by seq, with its report time folded in."""
    views: dict[int, IncidentView] = {}
    clock = LedgerClock()
    for e in sorted(entries, key=lambda x: x.seq):
        now = clock.tick(e)
        if e.kind != "incident":
            continue
        p = e.payload
        if e.ref_seq is None:
            reported = p.get("reported_at")
            views[e.seq] = IncidentView(e.seq, e.server, str(p["summary"]),
                                        parse_ts(p["detected_at"]),
                                        parse_ts(reported) if reported else None,
                                        str(p.get("by", "")), now, now if reported else None)
        elif e.ref_seq in views and views[e.ref_seq].reported_at is None:
            views[e.ref_seq] = replace(views[e.ref_seq], reported_at=parse_ts(p["reported_at"]),
                                       reported_recorded_at=now)
    return list(views.values())


def fold_windows(entries: Iterable[Entry]) -> list[WindowView]:
    """Declared maintenance windows, without those cancelled before they started.

    Give every entry (not only maintenance ones) for the tightest ledger times. A window's
    `declared_at` is its ledger time; a cancellation counts only if its own ledger time is
    before the window's start (a window that has started has covered real time).
    """
    out: dict[int, WindowView] = {}
    clock = LedgerClock()
    for e in sorted(entries, key=lambda x: x.seq):
        now = clock.tick(e)
        if e.kind != "maintenance":
            continue
        p = e.payload
        if e.ref_seq is not None:  # a cancellation
            target = out.get(e.ref_seq)
            if p.get("cancel") and target is not None and now < target.window.start:
                del out[e.ref_seq]
            continue
        servers = p["servers"]
        window = MaintenanceWindow(
            id=f"M{e.seq}",
            kind=p["kind"],
            start=parse_ts(p["start"]),
            end=parse_ts(p["end"]),
            notified_at=parse_ts(p["notified_at"]),
            servers="all" if servers == "all" else tuple(servers),
            declared_at=now,
        )
        by, reason = str(p.get("by", "")), str(p.get("reason", ""))
        out[e.seq] = WindowView(e.seq, window, now, by, reason)
    return list(out.values())


@dataclass(frozen=True, slots=True)
class RestrictionView:
    """A throttle or service block read back on a server's port (`restriction_start`), with its
    end when lifted. Not an outage: the port forwarded throughout."""

    seq: int
    server: str
    kind: str  # throttle | block
    start: datetime
    end: datetime | None
    rate_bps: int | None
    service: str | None
    reason: str

    def seconds_within(self, start: datetime, end: datetime, now: datetime) -> int:
        stop = min(self.end or now, end)
        return max(0, int((stop - max(self.start, start)).total_seconds()))


def fold_restrictions(entries: Iterable[Entry]) -> list[RestrictionView]:
    """restriction_start entries with the restriction_end that refers to each."""
    starts: list[Entry] = []
    ends: dict[int, datetime] = {}
    for e in entries:
        if e.kind == "restriction_start":
            starts.append(e)
        elif e.kind == "restriction_end" and e.ref_seq is not None:
            ends[e.ref_seq] = e.at
    return [RestrictionView(e.seq, e.server or "", str(e.payload.get("restriction", "")), e.at, ends.get(e.seq),
                            e.payload.get("rate_bps"), e.payload.get("service"), str(e.payload.get("reason", "")))
            for e in starts]


def throttled_periods(restrictions: Iterable[RestrictionView]) -> list[tuple[datetime, datetime | None, int]]:
    """(start, end or None while in force, rate) of each throttle: where the 95th percentile
    counts what was carried, not the demand the port's counter saw (UsageStore.billed_rates)."""
    return [(r.start, r.end, int(r.rate_bps)) for r in restrictions if r.kind == "throttle" and r.rate_bps is not None]
