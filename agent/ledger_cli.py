"""`rackwarden ledger …`, `maintenance add`, `report sla|deadlines`: the ledger for operators
and finance.

Each `main_*(argv)` takes the arguments after its subcommand and returns an exit code:
0 done, 1 the ledger failed verification (or refused a report on a broken ledger),
2 bad usage or input (one line on stderr saying what to fix). The database is `--db URL`, or
the ledger of `--config PATH` (agent.ledger_url, or sqlite:///{state_dir}/ledger.sqlite).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal, NoReturn

from rackwarden.policies.sla import (
    CAUSES,
    CLASSES,
    WINDOW_KINDS,
    contract_timezone,
    duration_text,
    fraction_text,
    parse_period,
)
from rackwarden.policies.sla_deadlines import Finding
from sqlalchemy.exc import SQLAlchemyError

from . import config as configmod
from .clock import SystemClock
from .ledger import (
    RECLASS_TARGETS,
    Entry,
    Head,
    LedgerError,
    LedgerStore,
    OutageInMonth,
    OutageView,
    ServerSla,
    VerifyResult,
    deadline_findings,
    default_url,
    sla_report,
    ts,
)

EXIT_OK = 0
EXIT_BROKEN = 1
EXIT_USAGE = 2


class _Usage(Exception):
    """Bad input: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _Usage(message)


def _parser(prog: str, description: str) -> _Parser:
    p = _Parser(prog=prog, description=description)
    p.add_argument("-c", "--config", metavar="PATH",
                   help="agent config; its ledger is agent.ledger_url or sqlite:///{state_dir}/ledger.sqlite")
    p.add_argument("--db", metavar="URL",
                   help="ledger database URL (sqlite:///PATH or postgresql+psycopg://…), "
                        "instead of the config's")
    return p


def _load_config(path: str) -> configmod.Config:
    try:
        return configmod.load(path)
    except configmod.ConfigError as e:
        first = e.issues[0] if e.issues else str(e)
        more = f" (and {len(e.issues) - 1} more; run rackwarden check-config)" if len(
            e.issues) > 1 else ""
        raise _Usage(f"{first}{more}") from None


def _open_store(args: argparse.Namespace) -> tuple[LedgerStore, configmod.Config | None]:
    cfg = _load_config(args.config) if args.config else None
    url = args.db or (default_url(cfg) if cfg is not None else None)
    if url is None:
        raise _Usage("give --db URL or --config PATH")
    store = LedgerStore(url)
    try:
        store.start()
    except SQLAlchemyError as e:
        raise _Usage(f"cannot open ledger {url}: {e}") from None
    return store, cfg


def _time(name: str, value: str) -> datetime:
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise _Usage(f"{name}: not an ISO-8601 time: {value!r}") from None
    if at.tzinfo is None or at.utcoffset() is None:
        raise _Usage(
            f"{name}: {value!r} has no UTC offset; write it like 2026-11-03T02:00:00+08:00"
        )
    if at.microsecond:
        raise _Usage(f"{name}: {value!r} has fractions of a second; the ledger keeps whole seconds")
    return at


def _operator() -> str:
    # Who ran the command, for the record; sudo keeps the real name in SUDO_USER.
    return os.environ.get("SUDO_USER") or os.environ.get("USER") or "operator"


def _run(prog: str, body: Callable[[], int]) -> int:
    try:
        return body()
    except _Usage as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except LedgerError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as e:  # --help
        return e.code if isinstance(e.code, int) else EXIT_OK


# ---------------------------------------------------------------------------------------------
# ledger verify


def _verify_text(r: VerifyResult) -> str:
    if r.ok:
        return (f"ledger OK: {r.entries} entries, head seq {r.head.seq} sha256 {r.head.hash}\n"
                f"anchor it with: rackwarden ledger verify --expect-head "
                f"{r.head.seq}:{r.head.hash}")
    what = {
        "modified": "modified entry",
        "missing": "missing entries",
        "truncated": "truncated tail",
        "beyond_head": "entries beyond the head",
        "anchor_mismatch": "anchor mismatch",
    }[r.problem or "modified"]
    return f"ledger BROKEN at seq {r.first_bad_seq}: {what}: {r.detail}"


def _verify_json(r: VerifyResult) -> dict[str, Any]:
    return {"ok": r.ok, "entries": r.entries, "last_seq": r.last_seq, "last_hash": r.last_hash,
            "head": {"seq": r.head.seq, "hash": r.head.hash}, "first_bad_seq": r.first_bad_seq,
            "problem": r.problem, "detail": r.detail}


def main_ledger_verify(argv: Sequence[str]) -> int:
    """`rackwarden ledger verify [--expect-head SEQ:HASH] [--format text|json]`."""
    prog = "rackwarden ledger verify"

    def body() -> int:
        p = _parser(prog, "Recompute the ledger's hash chain and check its head.")
        p.add_argument("--expect-head", metavar="SEQ:HASH",
                       help="a head printed earlier: also check the log still holds it")
        p.add_argument("--format", choices=("text", "json"), default="text")
        args = p.parse_args(list(argv))
        expect = None
        if args.expect_head:
            m = re.fullmatch(r"(\d+):([0-9a-f]{64})", args.expect_head)
            if not m:
                raise _Usage("--expect-head must be SEQ:HASH with a 64-digit hex sha256")
            expect = Head(int(m.group(1)), m.group(2))
        store, _ = _open_store(args)
        try:
            r = store.verify(expect)
        finally:
            store.close()
        print(json.dumps(_verify_json(r)) if args.format == "json" else _verify_text(r))
        return EXIT_OK if r.ok else EXIT_BROKEN

    return _run(prog, body)


# ---------------------------------------------------------------------------------------------
# ledger reclassify


def main_ledger_reclassify(argv: Sequence[str]) -> int:
    """`rackwarden ledger reclassify SEQ --class C --reason TEXT [--false-positive] [--cause X]`."""
    prog = "rackwarden ledger reclassify"

    def body() -> int:
        p = _parser(prog, "Correct an outage's class with a new ledger entry (the old stays).")
        p.add_argument("seq", type=int, help="the outage's seq (its outage_start entry)")
        p.add_argument("--class", dest="cls", required=True, choices=RECLASS_TARGETS,
                       help="none = it was no outage (the port forwarded)")
        p.add_argument("--reason", required=True)
        p.add_argument("--false-positive", action="store_true",
                       help="an enforcement that was RackWarden's mistake: provider time")
        p.add_argument("--cause", choices=sorted(CAUSES),
                       help="a specific cause of the class (default: the class's generic one)")
        p.add_argument("--by", default=None, help="who decides (default: the login name)")
        args = p.parse_args(list(argv))
        store, _ = _open_store(args)
        try:
            e = store.reclassify(args.seq, args.cls, args.reason, SystemClock().at(),
                                 by=args.by or _operator(), false_positive=args.false_positive,
                                 cause=args.cause)
        finally:
            store.close()
        prev = e.payload["previous"]
        print(f"seq {e.seq}: outage {e.ref_seq} ({e.server}) {prev['class']} -> "
              f"{e.payload['class']} (cause {e.payload['cause']}"
              f"{', false positive' if e.payload['false_positive'] else ''})")
        return EXIT_OK

    return _run(prog, body)


# ---------------------------------------------------------------------------------------------
# ledger list


def _entry_json(e: Entry) -> dict[str, Any]:
    return {"seq": e.seq, "at": ts(e.at), "kind": e.kind, "server": e.server, "ref": e.ref_seq,
            "payload": dict(e.payload), "hash": e.hash}


def _outage_json(v: OutageView, now: datetime) -> dict[str, Any]:
    return {
        "seq": v.seq, "outage_id": v.outage_id, "server": v.server, "switch": v.switch,
        "port": v.port, "start": ts(v.start), "end": ts(v.end) if v.end else None,
        "open": v.open, "seconds": v.seconds(now), "class": v.outage_class, "cause": v.cause,
        "recorded_cause": v.recorded_cause, "false_positive": v.false_positive,
        "evidence": dict(v.evidence),
        "changes": [{"seq": c.seq, "kind": c.kind, "by": c.by, "class": c.outage_class,
                     "cause": c.cause, "false_positive": c.false_positive, "reason": c.reason}
                    for c in v.changes],
    }


def main_ledger_list(argv: Sequence[str]) -> int:
    """`rackwarden ledger list [--outages] [--server S] [--kind K] [--since SEQ] [--limit N]`."""
    prog = "rackwarden ledger list"

    def body() -> int:
        p = _parser(prog, "List ledger entries, or outages with their current class.")
        p.add_argument("--outages", action="store_true", help="outages, not raw entries")
        p.add_argument("--server")
        p.add_argument("--kind", action="append", help="entry kind (repeatable)")
        p.add_argument("--since", type=int, default=0, metavar="SEQ", help="entries after SEQ")
        p.add_argument("--limit", type=int)
        p.add_argument("--format", choices=("table", "json"), default="table")
        args = p.parse_args(list(argv))
        store, _ = _open_store(args)
        now = SystemClock().at()
        try:
            if args.outages:
                views = [
                    v for v in store.outages(server=args.server, now=now) if v.seq > args.since
                ]
                rows = views[: args.limit] if args.limit else views
            else:
                entries = store.entries(server=args.server, kinds=args.kind,
                                        since_seq=args.since, limit=args.limit)
        finally:
            store.close()
        if args.outages:
            if args.format == "json":
                for v in rows:
                    print(json.dumps(_outage_json(v, now), ensure_ascii=False, sort_keys=True))
            else:
                print(f"{'seq':>6} {'server':<14} {'start':<25} {'end':<25} {'class':<11} "
                      f"{'cause':<20} {'duration':>10}")
                for v in rows:
                    end = ts(v.end) if v.end else "(open)"
                    print(f"{v.seq:>6} {v.server:<14} {ts(v.start):<25} {end:<25} "
                          f"{v.outage_class:<11} {v.cause or '-':<20} "
                          f"{duration_text(v.seconds(now)):>10}")
            return EXIT_OK
        if args.format == "json":
            for e in entries:
                print(json.dumps(_entry_json(e), ensure_ascii=False, sort_keys=True))
        else:
            print(f"{'seq':>6} {'at':<25} {'kind':<12} {'server':<14} {'ref':>5}  payload")
            for e in entries:
                body_ = json.dumps(dict(e.payload), ensure_ascii=False, sort_keys=True)
                ref = "" if e.ref_seq is None else str(e.ref_seq)
                print(f"{e.seq:>6} {ts(e.at):<25} {e.kind:<12} {e.server or '-':<14} {ref:>5}  "
                      f"{body_}")
        return EXIT_OK

    return _run(prog, body)


# ---------------------------------------------------------------------------------------------
# maintenance add


def main_maintenance_add(argv: Sequence[str]) -> int:
    """`rackwarden maintenance add --start T --end T --kind planned|cutover --servers a,b|all
    --notified-at T [--reason TEXT]` (times ISO-8601 with an offset)."""
    prog = "rackwarden maintenance add"

    def body() -> int:
        p = _parser(prog, "Declare a maintenance window and when customers were notified.")
        p.add_argument("--start", required=True)
        p.add_argument("--end", required=True)
        p.add_argument("--kind", required=True, choices=WINDOW_KINDS)
        p.add_argument("--servers", required=True, help="comma-separated server ids, or all")
        p.add_argument("--notified-at", required=True,
                       help="when the customers were notified (R17: notice before the start)")
        p.add_argument("--reason", default="")
        p.add_argument("--by", default=None)
        args = p.parse_args(list(argv))
        start = _time("--start", args.start)
        end = _time("--end", args.end)
        notified = _time("--notified-at", args.notified_at)
        servers: list[str] | str
        if args.servers.strip() == "all":
            servers = "all"
        else:
            servers = [s.strip() for s in args.servers.split(",") if s.strip()]
            if not servers:
                raise _Usage("--servers: name at least one server id, or all")
        store, cfg = _open_store(args)
        try:
            if cfg is not None and servers != "all":
                known = {s.id for s in cfg.servers}
                unknown = [s for s in servers if s not in known]
                if unknown:
                    raise _Usage(f"--servers: no server {', '.join(unknown)} in {args.config}")
            e = store.add_maintenance(kind=args.kind, start=start, end=end, notified_at=notified,
                                      servers=servers if servers == "all" else list(servers),
                                      at=SystemClock().at(), reason=args.reason,
                                      by=args.by or _operator())
        finally:
            store.close()
        notice = duration_text(int((start - notified).total_seconds()))
        print(f"seq {e.seq}: window M{e.seq} {args.kind} {ts(start)} .. {ts(end)} for "
              f"{'all servers' if servers == 'all' else ', '.join(servers)}, notice {notice}")
        return EXIT_OK

    return _run(prog, body)


def main_maintenance_cancel(argv: Sequence[str]) -> int:
    """`rackwarden maintenance cancel M<SEQ> --reason TEXT`: withdraw a window before it starts."""
    prog = "rackwarden maintenance cancel"

    def body() -> int:
        p = _parser(prog, "Cancel a declared maintenance window before it starts.")
        p.add_argument("window", help="the window's id as `maintenance add` printed it (M12, or 12)")
        p.add_argument("--reason", required=True)
        p.add_argument("--by", default=None)
        args = p.parse_args(list(argv))
        m = re.fullmatch(r"M?(\d+)", args.window.strip())
        if m is None:
            raise _Usage(f"window: {args.window!r} is not a window id like M12")
        store, _ = _open_store(args)
        try:
            e = store.cancel_maintenance(int(m.group(1)), SystemClock().at(),
                                         by=args.by or _operator(), reason=args.reason)
        finally:
            store.close()
        print(f"seq {e.seq}: window {e.payload['window']} cancelled")
        return EXIT_OK

    return _run(prog, body)


# ---------------------------------------------------------------------------------------------
# report sla


def _paid_totals(values: Sequence[str] | None) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values or ():
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9_.-]{0,63})=(\d+)", v)
        if not m:
            raise _Usage(f"--paid-total {v!r}: write SERVER=FEN, e.g. web1=120000")
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


def _outage_row(o: OutageInMonth, s: ServerSla, now: datetime) -> dict[str, Any]:
    v = o.view
    row = _outage_json(v, now)
    row["start"], row["end"] = _local(v.start, s), _local(v.end, s) or None
    row["class_in_month"] = o.class_in_month
    row["seconds_in_month"] = o.seconds
    row["seconds_by_class"] = {c: o.seconds_by_class[c] for c in CLASSES}
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
    return out.getvalue()


def _report_csv(rows: Sequence[ServerSla], now: datetime) -> str:
    out = io.StringIO()
    cols = ["section", "server", "customer", "template", "seq", "start", "end", "class", "cause",
            *[f"{c}_s" for c in CLASSES], "credit_fen", "extension_hours", "detail"]
    wr = csv.DictWriter(out, fieldnames=cols, lineterminator="\n")
    wr.writeheader()

    def outage(section: str, s: ServerSla, o: OutageInMonth) -> dict[str, Any]:
        v = o.view
        return {"section": section, "server": s.server.id, "customer": s.server.customer,
                "template": s.server.template, "seq": v.seq, "start": _local(v.start, s),
                "end": _local(v.end, s), "class": o.class_in_month, "cause": v.cause,
                **{f"{c}_s": o.seconds_by_class[c] for c in CLASSES},
                "detail": _evidence_text(v)}

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
    return out.getvalue()


def main_report_sla(argv: Sequence[str]) -> int:
    """`rackwarden report sla --month YYYY-MM [--customer C] [--format table|csv|json]
    --config PATH [--db URL] [--paid-total SERVER=FEN …] [--as-of T]`."""
    prog = "rackwarden report sla"

    def body() -> int:
        p = _parser(prog, "Outage seconds by class and SLA credit per server for one month.")
        p.add_argument("--month", required=True, help="YYYY-MM in each contract's timezone")
        p.add_argument("--customer")
        p.add_argument("--format", choices=("table", "csv", "json"), default="table")
        p.add_argument("--paid-total", action="append", metavar="SERVER=FEN",
                       help="what the customer has paid in total (R20 cap); repeatable")
        p.add_argument("--as-of", metavar="T",
                       help="count open outages up to this time instead of now (ISO-8601)")
        args = p.parse_args(list(argv))
        if not args.config:
            raise _Usage("--config PATH is required: fees and templates come from it")
        try:
            parse_period(args.month)
        except ValueError as e:
            raise _Usage(f"--month: {e}") from None
        paid = _paid_totals(args.paid_total)
        now = _time("--as-of", args.as_of) if args.as_of else SystemClock().at()
        store, cfg = _open_store(args)
        assert cfg is not None
        try:
            if args.customer and not any(s.customer == args.customer for s in cfg.servers):
                raise _Usage(f"--customer: no server of customer {args.customer!r} in "
                             f"{args.config}")
            unknown = sorted(set(paid) - {s.id for s in cfg.servers})
            if unknown:
                raise _Usage(f"--paid-total: no server {', '.join(unknown)} in {args.config}")
            verified = store.verify()
            if not verified.ok:
                print(f"{prog}: error: {_verify_text(verified)}; a report would rest on a "
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

    return _run(prog, body)


# ---------------------------------------------------------------------------------------------
# R19: ledger ack | on-site | resolve


def _outage_note(kind: Literal["ack", "on_site", "resolve"], word: str,
                 what: str) -> Callable[[Sequence[str]], int]:
    prog = f"rackwarden ledger {word}"

    def main(argv: Sequence[str]) -> int:
        def body() -> int:
            p = _parser(prog, f"Record that {what} for an outage (R19 repair times).")
            p.add_argument("seq", type=int, help="the outage's seq (its outage_start entry)")
            p.add_argument("--at", metavar="T", help="when it happened (ISO-8601; default now)")
            p.add_argument("--note", default="")
            p.add_argument("--by", default=None, help="who (default: the login name)")
            args = p.parse_args(list(argv))
            now = SystemClock().at()
            when = _time("--at", args.at) if args.at else None
            store, _ = _open_store(args)
            try:
                e = store.note_outage(kind, args.seq, now, by=args.by or _operator(),
                                      note=args.note, when=when)
            finally:
                store.close()
            print(f"seq {e.seq}: outage {e.ref_seq} ({e.server}) {word} at {e.payload['at']}")
            return EXIT_OK

        return _run(prog, body)

    return main


main_ledger_ack = _outage_note("ack", "ack", "someone answered the fault")
main_ledger_on_site = _outage_note("on_site", "on-site", "someone is on site")
main_ledger_resolve = _outage_note("resolve", "resolve", "the fault is repaired")


# ---------------------------------------------------------------------------------------------
# R13: ledger incident add | report


def main_ledger_incident(argv: Sequence[str]) -> int:
    """`rackwarden ledger incident add --summary TEXT --detected-at T [--server S]
    [--reported-at T]` and `rackwarden ledger incident report SEQ [--at T] [--note TEXT]`."""
    prog = "rackwarden ledger incident"

    def body() -> int:
        p = _parser(prog, "Record a major security incident and when it was reported (R13).")
        sub = p.add_subparsers(dest="action", required=True)
        a = sub.add_parser("add", help="a new incident")
        a.add_argument("--summary", required=True)
        a.add_argument("--detected-at", required=True, metavar="T")
        a.add_argument("--server", help="the server concerned, if one is")
        a.add_argument("--reported-at", metavar="T", help="if it has already been reported")
        r = sub.add_parser("report", help="the incident has now been reported")
        r.add_argument("seq", type=int, help="the incident's seq (printed by add)")
        r.add_argument("--at", metavar="T", help="when it was reported (default now)")
        r.add_argument("--note", default="")
        for x in (a, r):
            x.add_argument("-c", "--config", metavar="PATH", default=argparse.SUPPRESS)
            x.add_argument("--db", metavar="URL", default=argparse.SUPPRESS)
            x.add_argument("--by", default=None)
        args = p.parse_args(list(argv))
        now = SystemClock().at()
        store, cfg = _open_store(args)
        try:
            if args.action == "add":
                if cfg is not None and args.server and args.server not in {s.id for s in cfg.servers}:
                    raise _Usage(f"--server: no server {args.server} in {args.config}")
                e = store.add_incident(
                    summary=args.summary, detected_at=_time("--detected-at", args.detected_at),
                    at=now, by=args.by or _operator(), server=args.server,
                    reported_at=_time("--reported-at", args.reported_at) if args.reported_at
                    else None)
                print(f"seq {e.seq}: incident I{e.seq} detected {e.payload['detected_at']}"
                      f"{', reported ' + e.payload['reported_at'] if e.payload['reported_at'] else ''}")
            else:
                at = _time("--at", args.at) if args.at else now
                e = store.report_incident(args.seq, at, now, by=args.by or _operator(),
                                          note=args.note)
                print(f"seq {e.seq}: incident I{args.seq} reported {e.payload['reported_at']}")
        finally:
            store.close()
        return EXIT_OK

    return _run(prog, body)


# ---------------------------------------------------------------------------------------------
# report deadlines


def _finding_json(f: Finding) -> dict[str, Any]:
    return {"rule": f.rule, "check": f.check, "subject": f.subject, "status": f.status,
            "due_at": ts(f.due_at), "done_at": ts(f.done_at) if f.done_at else None,
            "reason": f.reason}


def main_report_deadlines(argv: Sequence[str]) -> int:
    """`rackwarden report deadlines --config PATH [--open] [--as-of T] [--format table|json]`."""
    prog = "rackwarden report deadlines"

    def body() -> int:
        p = _parser(prog, "R13 incident reports and R19 repair times: met, pending or breached.")
        p.add_argument("--open", action="store_true", help="only pending and breached")
        p.add_argument("--as-of", metavar="T", help="judge at this time instead of now")
        p.add_argument("--format", choices=("table", "json"), default="table")
        args = p.parse_args(list(argv))
        if not args.config:
            raise _Usage("--config PATH is required: each server's contract comes from it")
        now = _time("--as-of", args.as_of) if args.as_of else SystemClock().at()
        store, cfg = _open_store(args)
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

    return _run(prog, body)


COMMANDS: Mapping[tuple[str, str], Callable[[Sequence[str]], int]] = {
    ("ledger", "verify"): main_ledger_verify,
    ("ledger", "reclassify"): main_ledger_reclassify,
    ("ledger", "list"): main_ledger_list,
    ("ledger", "ack"): main_ledger_ack,
    ("ledger", "on-site"): main_ledger_on_site,
    ("ledger", "resolve"): main_ledger_resolve,
    ("ledger", "incident"): main_ledger_incident,
    ("maintenance", "add"): main_maintenance_add,
    ("maintenance", "cancel"): main_maintenance_cancel,
    ("report", "sla"): main_report_sla,
    ("report", "deadlines"): main_report_deadlines,
}
