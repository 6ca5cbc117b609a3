"""`rackwarden report sla|deadlines`: a month's outage seconds and credit per server, and R13/R19.

Exit codes and the `--db` / `--config` options: cli_common.py.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from rackwarden.policies.sla import CLASSES, contract_timezone, duration_text, fraction_text, parse_period
from rackwarden.policies.sla_deadlines import Finding

from ..clock import SystemClock
from .chain import VerifyResult, ts
from .cli_common import (
    EXIT_BROKEN,
    EXIT_OK,
    Usage,
    command_parser,
    open_store,
    outage_json,
    parse_time,
    run,
    verify_text,
)
from .reports import OutageInMonth, ServerSla, deadline_findings, sla_report
from .views import OutageView, RestrictionView, WindowView

# ---------------------------------------------------------------------------------------------
# report sla


def _paid_totals(values: Sequence[str] | None) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values or ():
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9_.-]{0,63})=(\d+)", v)
        if not m:
            raise Usage(f"--paid-total {v!r}: write SERVER=FEN, e.g. web1=120000")
        out[m.group(1)] = int(m.group(2))
    return out


def _credit_text(s: ServerSla) -> str:
    if s.credit_fen is not None:
        return f"{s.credit_fen} fen"
    if s.extension_s is not None:
        return f"{fraction_text(s.month.extension_hours)} h extension"
    return "-"


def _evidence_text(v: OutageView) -> str:
    # Where and when are in the row already; the rest is the evidence.
    ev = {k: x for k, x in v.evidence.items() if k not in ("switch", "port", "poll_at")}
    return ", ".join(f"{k}={ev[k]}" for k in sorted(ev)) or "-"


def _local(at: datetime | None, s: ServerSla) -> str:
    """Report times in the contract's timezone: the one its months are cut in."""
    return "" if at is None else at.astimezone(contract_timezone(s.timezone)).isoformat()


def _window_json(w: WindowView, s: ServerSla) -> dict[str, Any]:
    """A window as declared: the notice its entry claims beside its ledger time (issue 11)."""
    m = w.window
    return {"id": m.id, "kind": m.kind, "start": _local(m.start, s), "end": _local(m.end, s),
            "servers": m.servers if m.servers == "all" else list(m.servers),
            "notified_at": _local(m.notified_at, s), "recorded_at": _local(w.declared_at, s),
            "notice_counted_from": _local(m.notice_from, s), "notice_s": m.notice_s,
            "claimed_notice_s": m.claimed_notice_s,
            "recorded_after_start": m.declared_after_start, "by": w.by, "reason": w.reason}


def _window_text(w: WindowView, s: ServerSla) -> str:
    m = w.window
    head = (f"window {m.id} {m.kind} {_local(m.start, s)} .. {_local(m.end, s)}: notified_at "
            f"{_local(m.notified_at, s)} (claimed), recorded in the ledger "
            f"{_local(w.declared_at, s)}")
    if m.declared_after_start:
        late = int((w.declared_at - m.start).total_seconds())
        return f"{head}; recorded {duration_text(late)} after its start: excuses nothing"
    counted = "notice counted from the ledger time" if m.notice_from != m.notified_at else "notice"
    return f"{head}; {counted} {duration_text(m.notice_s)} before start"


def _reclassified_text(v: OutageView, s: ServerSla) -> str:
    """Operators' decisions on an outage, each with its ledger time: past time they excused
    shows as a reclassification, never as a window."""
    return "; ".join(
        f"reclassified to {c.outage_class}{' (' + c.cause + ')' if c.cause else ''}"
        f"{' false-positive' if c.false_positive else ''} by {c.by}, ledger seq {c.seq} at "
        f"{_local(c.at, s)}: {c.reason}"
        for c in v.reclassifications)


def _outage_row(o: OutageInMonth, s: ServerSla, now: datetime) -> dict[str, Any]:
    v = o.view
    row = outage_json(v, now)
    row["start"], row["end"] = _local(v.start, s), _local(v.end, s) or None
    row["class_in_month"] = o.class_in_month
    row["seconds_in_month"] = o.seconds
    row["seconds_by_class"] = {c: o.seconds_by_class[c] for c in CLASSES}
    row["reclassified"] = [{"seq": c.seq, "class": c.outage_class, "cause": c.cause,
                            "false_positive": c.false_positive, "by": c.by, "reason": c.reason,
                            "recorded_at": _local(c.at, s)} for c in v.reclassifications]
    return row


def _report_json(rows: Sequence[ServerSla], period: str, now: datetime,
                 verified: VerifyResult) -> dict[str, Any]:
    unresolved = [
        {**_outage_row(o, s, now), "unknown_seconds": o.seconds_by_class["unknown"]}
        for s in rows for o in s.unresolved
    ]
    servers = []
    for s in rows:
        m = s.month
        servers.append({
            "id": s.server.id, "customer": s.server.customer, "template": s.server.template,
            "credit_template": s.credit_template, "timezone": s.timezone,
            "monthly_fee_fen": s.server.monthly_fee_fen, "paid_total_fen": s.paid_total_fen,
            "seconds_by_class": {c: m.seconds_by_class[c] for c in CLASSES},
            "credit_fen": s.credit_fen,
            "extension_hours": (fraction_text(m.extension_hours)
                                if s.extension_s is not None else None),
            "caps_applied": list(m.caps_applied), "reason": m.reason, "notes": list(s.notes),
            "outages": [_outage_row(o, s, now) for o in s.outages],
            "windows": [_window_json(w, s) for w in s.windows],
            "restricted": [_restricted_json(r, sec, s) for r, sec in s.restricted],
            "parts": [{"start": _local(p.start, s), "end": _local(p.end, s),
                       "class": p.outage_class,
                       "seconds": p.seconds, "creditable_seconds": p.creditable_seconds,
                       "units": p.units, "contribution_fen": fraction_text(p.credit_fen),
                       "extension_s": p.extension_s, "reason": p.reason,
                       "segments": [{"start": _local(g.start, s), "end": _local(g.end, s),
                                     "class": g.outage_class, "seconds": g.seconds,
                                     "records": list(g.records), "window": g.window,
                                     "reason": g.reason} for g in p.segments]}
                      for p in m.parts],
        })
    return {"period": period, "generated_at": ts(now),
            "ledger": {"entries": verified.entries, "head_seq": verified.head.seq,
                       "head_hash": verified.head.hash, "verified": verified.ok},
            "unresolved_unknown": unresolved, "servers": servers}


def _restriction_what(r: RestrictionView) -> str:
    if r.kind == "throttle":
        return f"throttled to {r.rate_bps} bit/s"
    return f"outbound {r.service} blocked"


def _restricted_json(r: RestrictionView, seconds: int, s: ServerSla) -> dict[str, Any]:
    return {"seq": r.seq, "kind": r.kind, "rate_bps": r.rate_bps, "service": r.service, "reason": r.reason,
            "start": _local(r.start, s), "end": _local(r.end, s), "seconds_in_month": seconds,
            "outage": False, "credit_fen": 0}


def _restricted_text(r: RestrictionView, seconds: int, s: ServerSla) -> str:
    end = _local(r.end, s) or "(in force)"
    return (f"restricted (seq {r.seq}): {_restriction_what(r)} for {r.reason}, {_local(r.start, s)} .. {end}, "
            f"{duration_text(seconds)} this month; the port forwarded: no outage, no credit")


def _report_table(rows: Sequence[ServerSla], period: str, now: datetime,
                  verified: VerifyResult) -> str:
    out = io.StringIO()
    w = out.write
    w(f"SLA report {period} (as of {ts(now)}; ledger verified, head seq {verified.head.seq} "
      f"sha256 {verified.head.hash})\n\n")
    unresolved = [(s, o) for s in rows for o in s.unresolved]
    w(f"UNRESOLVED UNKNOWN TIME: {len(unresolved)} outage(s)")
    w(" (resolve: rackwarden ledger reclassify SEQ --class … --reason …)\n" if unresolved else "\n")
    for s, o in unresolved:
        v = o.view
        end = _local(v.end, s) or "(open)"
        w(f"  seq {v.seq:<6} {s.server.id:<14} {_local(v.start, s)} .. {end}  unknown "
          f"{duration_text(o.seconds_by_class['unknown'])} this month  cause {v.cause}  "
          f"[{_evidence_text(v)}]\n")
    w("\nSERVERS\n")
    w(f"  {'server':<14} {'customer':<14} {'template':<9}"
      + "".join(f" {c:>12}" for c in CLASSES) + f"  {'credit':>18}\n")
    for s in rows:
        m = s.month
        w(f"  {s.server.id:<14} {s.server.customer:<14} {s.server.template:<9}"
          + "".join(f" {duration_text(m.seconds_by_class[c]):>12}" for c in CLASSES)
          + f"  {_credit_text(s):>18}\n")
        w(f"      {m.reason}\n")
        for note in s.notes:
            w(f"      note: {note}\n")
        for win in s.windows:
            w(f"      {_window_text(win, s)}\n")
        for r, sec in s.restricted:
            w(f"      {_restricted_text(r, sec, s)}\n")
    w("\nOUTAGES\n")
    for s in rows:
        for o in s.outages:
            v = o.view
            end = _local(v.end, s) or "(open)"
            by_class = ", ".join(f"{c} {duration_text(o.seconds_by_class[c])}"
                                 for c in CLASSES if o.seconds_by_class[c])
            fp = " false-positive" if v.false_positive else ""
            w(f"  seq {v.seq:<6} {s.server.id:<14} {_local(v.start, s)} .. {end}  class "
              f"{o.class_in_month}{fp}  cause {v.cause}  in month: {by_class or '0s'}  "
              f"[{_evidence_text(v)}]\n")
            if v.reclassifications:
                w(f"             {_reclassified_text(v, s)}\n")
    return out.getvalue()


def _report_csv(rows: Sequence[ServerSla], now: datetime) -> str:
    out = io.StringIO()
    cols = ["section", "server", "customer", "template", "seq", "start", "end", "class", "cause",
            *[f"{c}_s" for c in CLASSES], "credit_fen", "extension_hours", "detail",
            "claimed_at", "recorded_at", "reclassified"]
    wr = csv.DictWriter(out, fieldnames=cols, lineterminator="\n")
    wr.writeheader()

    def outage(section: str, s: ServerSla, o: OutageInMonth) -> dict[str, Any]:
        v = o.view
        return {"section": section, "server": s.server.id, "customer": s.server.customer,
                "template": s.server.template, "seq": v.seq, "start": _local(v.start, s),
                "end": _local(v.end, s), "class": o.class_in_month, "cause": v.cause,
                **{f"{c}_s": o.seconds_by_class[c] for c in CLASSES},
                "detail": _evidence_text(v), "reclassified": _reclassified_text(v, s)}

    # Unresolved unknown time first, as operators must act on it before anyone bills.
    for s in rows:
        for o in s.unresolved:
            wr.writerow(outage("unknown", s, o))
    for s in rows:
        m = s.month
        wr.writerow({"section": "server", "server": s.server.id, "customer": s.server.customer,
                     "template": s.server.template,
                     **{f"{c}_s": m.seconds_by_class[c] for c in CLASSES},
                     "credit_fen": "" if s.credit_fen is None else s.credit_fen,
                     "extension_hours": ("" if s.extension_s is None
                                         else fraction_text(m.extension_hours)),
                     "detail": m.reason})
    for s in rows:
        for o in s.outages:
            wr.writerow(outage("outage", s, o))
    # Windows: claimed_at is the notice the entry claims, recorded_at its ledger time.
    for s in rows:
        for win in s.windows:
            mw = win.window
            wr.writerow({"section": "window", "server": s.server.id,
                         "customer": s.server.customer, "template": s.server.template,
                         "seq": win.seq, "start": _local(mw.start, s), "end": _local(mw.end, s),
                         "cause": mw.kind, "detail": _window_text(win, s),
                         "claimed_at": _local(mw.notified_at, s),
                         "recorded_at": _local(win.declared_at, s)})
    return out.getvalue()


def main_report_sla(argv: Sequence[str]) -> int:
    """`rackwarden report sla --month YYYY-MM [--customer C] [--format table|csv|json]
    --config PATH [--db URL] [--paid-total SERVER=FEN …] [--as-of T]`."""
    prog = "rackwarden report sla"

    def body() -> int:
        p = command_parser(prog, "Outage seconds by class and SLA credit per server for one month.")
        p.add_argument("--month", required=True, help="YYYY-MM in each contract's timezone")
        p.add_argument("--customer")
        p.add_argument("--format", choices=("table", "csv", "json"), default="table")
        p.add_argument("--paid-total", action="append", metavar="SERVER=FEN",
                       help="what the customer has paid in total (R20 cap); repeatable")
        p.add_argument("--as-of", metavar="T",
                       help="count open outages up to this time instead of now (ISO-8601)")
        args = p.parse_args(list(argv))
        if not args.config:
            raise Usage("--config PATH is required: fees and templates come from it")
        try:
            parse_period(args.month)
        except ValueError as e:
            raise Usage(f"--month: {e}") from None
        paid = _paid_totals(args.paid_total)
        now = parse_time("--as-of", args.as_of) if args.as_of else SystemClock().at()
        store, cfg = open_store(args)
        assert cfg is not None
        try:
            if args.customer and not any(s.customer == args.customer for s in cfg.servers):
                raise Usage(f"--customer: no server of customer {args.customer!r} in "
                             f"{args.config}")
            unknown = sorted(set(paid) - {s.id for s in cfg.servers})
            if unknown:
                raise Usage(f"--paid-total: no server {', '.join(unknown)} in {args.config}")
            verified = store.verify()
            if not verified.ok:
                print(f"{prog}: error: {verify_text(verified)}; a report would rest on a "
                      f"tampered ledger (run rackwarden ledger verify)", file=sys.stderr)
                return EXIT_BROKEN
            rows = sla_report(store, cfg, args.month, now, customer=args.customer,
                              paid_totals=paid)
        finally:
            store.close()
        if args.format == "json":
            doc = _report_json(rows, args.month, now, verified)
            sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
        elif args.format == "csv":
            sys.stdout.write(_report_csv(rows, now))
        else:
            sys.stdout.write(_report_table(rows, args.month, now, verified))
        return EXIT_OK

    return run(prog, body)

# ---------------------------------------------------------------------------------------------
# report deadlines


def _finding_json(f: Finding) -> dict[str, Any]:
    return {"rule": f.rule, "check": f.check, "subject": f.subject, "status": f.status,
            "due_at": ts(f.due_at), "done_at": ts(f.done_at) if f.done_at else None,
            "claimed_at": ts(f.claimed_at) if f.claimed_at else None, "reason": f.reason}


def main_report_deadlines(argv: Sequence[str]) -> int:
    """`rackwarden report deadlines --config PATH [--open] [--as-of T] [--format table|json]`."""
    prog = "rackwarden report deadlines"

    def body() -> int:
        p = command_parser(prog, "R13 incident reports and R19 repair times: met, pending or breached.")
        p.add_argument("--open", action="store_true", help="only pending and breached")
        p.add_argument("--as-of", metavar="T", help="judge at this time instead of now")
        p.add_argument("--format", choices=("table", "json"), default="table")
        args = p.parse_args(list(argv))
        if not args.config:
            raise Usage("--config PATH is required: each server's contract comes from it")
        now = parse_time("--as-of", args.as_of) if args.as_of else SystemClock().at()
        store, cfg = open_store(args)
        assert cfg is not None
        try:
            findings = deadline_findings(store, cfg, now)
        finally:
            store.close()
        if args.open:
            findings = [f for f in findings if f.status != "met"]
        if args.format == "json":
            for f in findings:
                print(json.dumps(_finding_json(f), ensure_ascii=False, sort_keys=True))
            return EXIT_OK
        print(f"{'rule':<5} {'subject':<8} {'check':<16} {'status':<9} {'due':<25} reason")
        for f in findings:
            print(f"{f.rule:<5} {f.subject:<8} {f.check:<16} {f.status:<9} {ts(f.due_at):<25} "
                  f"{f.reason}")
        breached = sum(1 for f in findings if f.status == "breached")
        print(f"{len(findings)} deadlines, {breached} breached (as of {ts(now)})")
        return EXIT_OK

    return run(prog, body)
