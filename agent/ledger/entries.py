"""The entries each ledger act appends, built from checked input: no SQL, no clock.

The store (store.py) finds what an act refers to, calls one of these and appends the result;
which class an operator's correction records is policies/sla.py's `reclassification`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Literal

from rackwarden.policies.outages import OutageCauseChange, OutageEnd, OutageEvent, OutageStart, PortFlagged
from rackwarden.policies.sla import (
    WINDOW_KINDS,
    ReclassificationError,
    outage_class_of,
    reclassification,
)

from .chain import LedgerError, NewEntry, ts, whole_aware
from .views import IncidentView, OutageView, WindowView

NoteKind = Literal["ack", "on_site", "resolve"]


def outage_event_entries(
    events: Sequence[OutageEvent], start_seq: Callable[[OutageEnd | OutageCauseChange], int]
) -> list[NewEntry]:
    """The entries of a batch of tracker events (one poll's, say).

    An end or cause change refers to its record's outage_start: one earlier in the same batch,
    else `start_seq(event)`.
    """
    items: list[NewEntry] = []
    in_batch: dict[str, int] = {}
    for ev in events:
        if isinstance(ev, OutageStart):
            in_batch[ev.outage_id] = len(items)
            items.append(NewEntry(
                "outage_start", ev.start,
                {"outage_id": ev.outage_id, "switch": ev.switch, "port": ev.port,
                 "start": ts(ev.start), "cause": ev.cause, "state": ev.state,
                 "evidence": dict(ev.evidence)},
                server=ev.server,
            ))
            continue
        if isinstance(ev, PortFlagged):
            f = ev.finding
            items.append(NewEntry(
                "flag", ev.at,
                {"rule": f.rule, "check": f.check, "switch": ev.switch, "port": ev.port,
                 "status": f.status, "due_at": ts(f.due_at), "reason": f.reason},
                server=ev.server,
            ))
            continue
        ref_seq: int | None = None
        ref_index = in_batch.get(ev.outage_id)
        if ref_index is None:
            ref_seq = start_seq(ev)
        if isinstance(ev, OutageEnd):
            items.append(NewEntry(
                "outage_end", ev.end,
                {"outage_id": ev.outage_id, "end": ts(ev.end), "evidence": dict(ev.evidence)},
                server=ev.server, ref_seq=ref_seq, ref_index=ref_index,
            ))
        else:
            items.append(NewEntry(
                "classify", ev.at,
                {"outage_id": ev.outage_id, "class": outage_class_of(ev.cause),
                 "cause": ev.cause, "false_positive": False, "reason": ev.reason,
                 "by": "agent", "evidence": dict(ev.evidence)},
                server=ev.server, ref_seq=ref_seq, ref_index=ref_index,
            ))
    return items


def reclassify_entry(
    view: OutageView,
    outage_class: str,
    reason: str,
    at: datetime,
    *,
    by: str,
    false_positive: bool,
    cause: str | None,
) -> NewEntry:
    """An operator's correction of `view`'s class; the policy's refusal becomes a LedgerError."""
    try:
        new = reclassification(str(view.seq), view.cause, view.recorded_cause, outage_class,
                               cause, false_positive)
    except ReclassificationError as e:
        raise LedgerError(str(e)) from None
    return NewEntry(
        "reclassify", at,
        {"outage_id": view.outage_id, "class": new.outage_class, "requested_class": outage_class,
         "cause": new.cause, "false_positive": new.false_positive, "reason": reason, "by": by,
         "previous": {"class": view.outage_class, "cause": view.cause,
                      "false_positive": view.false_positive}},
        server=view.server, ref_seq=view.seq,
    )


def note_entry(kind: NoteKind, view: OutageView, at: datetime, *, by: str, note: str,
               when: datetime | None) -> NewEntry:
    """R19: someone answered, arrived on site, or repaired the fault of `view` at `when`."""
    when = at if when is None else when
    whole_aware("when", when)
    if when < view.start:
        raise LedgerError(f"{ts(when)} is before outage {view.seq} started ({ts(view.start)})")
    if when > at:
        raise LedgerError(f"{ts(when)} is in the future: record it once it has happened")
    return NewEntry(kind, at, {"outage_id": view.outage_id, "at": ts(when), "by": by,
                               "note": note}, server=view.server, ref_seq=view.seq)


def _check_reported(detected_at: datetime, reported_at: datetime, at: datetime) -> None:
    whole_aware("reported_at", reported_at)
    if reported_at < detected_at:
        raise LedgerError("reported_at is before detected_at")
    if reported_at > at:
        raise LedgerError("reported_at is in the future: record the report once made")


def incident_entry(*, summary: str, detected_at: datetime, at: datetime, by: str,
                   server: str | None, reported_at: datetime | None) -> NewEntry:
    """R13: a major security incident, reported already at `reported_at` if not None."""
    whole_aware("detected_at", detected_at)
    if not summary.strip():
        raise LedgerError("an incident needs a summary")
    if detected_at > at:
        raise LedgerError("detected_at is in the future")
    if reported_at is not None:
        _check_reported(detected_at, reported_at, at)
    return NewEntry("incident", at, {
        "summary": summary, "detected_at": ts(detected_at),
        "reported_at": ts(reported_at) if reported_at else None, "by": by,
    }, server=server)


def incident_report_entry(view: IncidentView, reported_at: datetime, at: datetime, *, by: str,
                          note: str) -> NewEntry:
    """R13: incident `view` has been reported (a new entry referring to it)."""
    if view.reported_at is not None:
        raise LedgerError(f"incident {view.incident_id} was already reported at "
                          f"{ts(view.reported_at)}")
    _check_reported(view.detected_at, reported_at, at)
    return NewEntry("incident", at, {"incident_id": view.incident_id,
                                     "reported_at": ts(reported_at), "by": by, "note": note},
                    server=view.server, ref_seq=view.seq)


def maintenance_entry(
    *,
    kind: str,
    start: datetime,
    end: datetime,
    notified_at: datetime,
    servers: Sequence[str] | Literal["all"],
    at: datetime,
    reason: str,
    by: str,
) -> NewEntry:
    """A declared maintenance window; `notified_at` is when the customers were told."""
    if kind not in WINDOW_KINDS:
        raise LedgerError(f"kind must be one of {', '.join(WINDOW_KINDS)}, got {kind!r}")
    for name, t in (("start", start), ("end", end), ("notified_at", notified_at)):
        whole_aware(name, t)
    if end <= start:
        raise LedgerError("the window's end must be after its start")
    if notified_at > at:
        raise LedgerError("notified_at is in the future: declare the window once notified")
    if servers != "all":
        servers = list(servers)
        if not servers:
            raise LedgerError('name at least one server, or "all"')
    return NewEntry(
        "maintenance", at,
        {"kind": kind, "start": ts(start), "end": ts(end), "notified_at": ts(notified_at),
         "servers": servers, "reason": reason, "by": by},
    )


def cancel_maintenance_entry(seq: int, view: WindowView | None, at: datetime, *, by: str,
                             reason: str) -> NewEntry:
    """Withdraws window M`seq` (`view`, None if unknown or cancelled) before it starts.

    A window that has started has covered real time: correct its outages with reclassify.
    """
    if view is None:
        raise LedgerError(f"no maintenance window M{seq} (or it is already cancelled)")
    if at >= view.window.start:
        raise LedgerError(
            f"window M{seq} started at {ts(view.window.start)}: it cannot be cancelled; "
            "reclassify the outages it covered instead")
    if not reason.strip():
        raise LedgerError("say why the window is cancelled")
    return NewEntry("maintenance", at, {"cancel": True, "window": f"M{seq}", "reason": reason,
                                        "by": by}, ref_seq=seq)
