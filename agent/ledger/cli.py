"""`rackwarden ledger verify|reclassify|list|ack|on-site|resolve|incident`, `maintenance add|cancel`.

Exit codes and the `--db` / `--config` options: cli_common.py. `report sla|deadlines` are in
report_cli.py; COMMANDS below lists every command of both.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from rackwarden.policies.sla import (
    CAUSES,
    RECLASS_TARGETS,
    WINDOW_KINDS,
    duration_text,
)

from ..clock import SystemClock
from .chain import Entry, Head, VerifyResult, ts
from .cli_common import (
    EXIT_BROKEN,
    EXIT_OK,
    Usage,
    command_parser,
    open_store,
    operator_name,
    outage_json,
    parse_time,
    run,
    verify_text,
)
from .report_cli import main_report_deadlines, main_report_sla

# ---------------------------------------------------------------------------------------------
# ledger verify


def _verify_json(r: VerifyResult) -> dict[str, Any]:
    return {"ok": r.ok, "entries": r.entries, "last_seq": r.last_seq, "last_hash": r.last_hash,
            "head": {"seq": r.head.seq, "hash": r.head.hash}, "first_bad_seq": r.first_bad_seq,
            "problem": r.problem, "detail": r.detail}


def main_ledger_verify(argv: Sequence[str]) -> int:
    """`rackwarden ledger verify [--expect-head SEQ:HASH] [--format text|json]`."""
    prog = "rackwarden ledger verify"

    def body() -> int:
        p = command_parser(prog, "Recompute the ledger's hash chain and check its head.")
        p.add_argument("--expect-head", metavar="SEQ:HASH",
                       help="a head printed earlier: also check the log still holds it")
        p.add_argument("--format", choices=("text", "json"), default="text")
        args = p.parse_args(list(argv))
        expect = None
        if args.expect_head:
            m = re.fullmatch(r"(\d+):([0-9a-f]{64})", args.expect_head)
            if not m:
                raise Usage("--expect-head must be SEQ:HASH with a 64-digit hex sha256")
            expect = Head(int(m.group(1)), m.group(2))
        store, _ = open_store(args)
        try:
            r = store.verify(expect)
        finally:
            store.close()
        print(json.dumps(_verify_json(r)) if args.format == "json" else verify_text(r))
        return EXIT_OK if r.ok else EXIT_BROKEN

    return run(prog, body)


# ---------------------------------------------------------------------------------------------
# ledger reclassify


def main_ledger_reclassify(argv: Sequence[str]) -> int:
    """`rackwarden ledger reclassify SEQ --class C --reason TEXT [--false-positive] [--cause X]`."""
    prog = "rackwarden ledger reclassify"

    def body() -> int:
        p = command_parser(prog, "Correct an outage's class with a new ledger entry (the old stays).")
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
        store, _ = open_store(args)
        try:
            e = store.reclassify(args.seq, args.cls, args.reason, SystemClock().at(),
                                 by=args.by or operator_name(), false_positive=args.false_positive,
                                 cause=args.cause)
        finally:
            store.close()
        prev = e.payload["previous"]
        print(f"seq {e.seq}: outage {e.ref_seq} ({e.server}) {prev['class']} -> "
              f"{e.payload['class']} (cause {e.payload['cause']}"
              f"{', false positive' if e.payload['false_positive'] else ''})")
        return EXIT_OK

    return run(prog, body)

# ---------------------------------------------------------------------------------------------
# ledger list


def _entry_json(e: Entry) -> dict[str, Any]:
    return {"seq": e.seq, "at": ts(e.at), "kind": e.kind, "server": e.server, "ref": e.ref_seq,
            "payload": dict(e.payload), "hash": e.hash}



def main_ledger_list(argv: Sequence[str]) -> int:
    """`rackwarden ledger list [--outages] [--server S] [--kind K] [--since SEQ] [--limit N]`."""
    prog = "rackwarden ledger list"

    def body() -> int:
        p = command_parser(prog, "List ledger entries, or outages with their current class.")
        p.add_argument("--outages", action="store_true", help="outages, not raw entries")
        p.add_argument("--server")
        p.add_argument("--kind", action="append", help="entry kind (repeatable)")
        p.add_argument("--since", type=int, default=0, metavar="SEQ", help="entries after SEQ")
        p.add_argument("--limit", type=int)
        p.add_argument("--format", choices=("table", "json"), default="table")
        args = p.parse_args(list(argv))
        store, _ = open_store(args)
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
                    print(json.dumps(outage_json(v, now), ensure_ascii=False, sort_keys=True))
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

    return run(prog, body)


# ---------------------------------------------------------------------------------------------
# maintenance add


def main_maintenance_add(argv: Sequence[str]) -> int:
    """`rackwarden maintenance add --start T --end T --kind planned|cutover --servers a,b|all
    --notified-at T [--reason TEXT]` (times ISO-8601 with an offset)."""
    prog = "rackwarden maintenance add"

    def body() -> int:
        p = command_parser(prog, "Declare a maintenance window and when customers were notified.")
        p.add_argument("--start", required=True)
        p.add_argument("--end", required=True)
        p.add_argument("--kind", required=True, choices=WINDOW_KINDS)
        p.add_argument("--servers", required=True, help="comma-separated server ids, or all")
        p.add_argument("--notified-at", required=True,
                       help="when the customers were notified (R17: notice before the start)")
        p.add_argument("--reason", default="")
        p.add_argument("--by", default=None)
        args = p.parse_args(list(argv))
        start = parse_time("--start", args.start)
        end = parse_time("--end", args.end)
        notified = parse_time("--notified-at", args.notified_at)
        servers: list[str] | str
        if args.servers.strip() == "all":
            servers = "all"
        else:
            servers = [s.strip() for s in args.servers.split(",") if s.strip()]
            if not servers:
                raise Usage("--servers: name at least one server id, or all")
        store, cfg = open_store(args)
        try:
            if cfg is not None and servers != "all":
                known = {s.id for s in cfg.servers}
                unknown = [s for s in servers if s not in known]
                if unknown:
                    raise Usage(f"--servers: no server {', '.join(unknown)} in {args.config}")
            e = store.add_maintenance(kind=args.kind, start=start, end=end, notified_at=notified,
                                      servers=servers if servers == "all" else list(servers),
                                      at=SystemClock().at(), reason=args.reason,
                                      by=args.by or operator_name())
            # What the credit engine will count: the notice runs from the later of
            # --notified-at and the entry's ledger time, and a window recorded after its start
            # excuses nothing (views.py `fold_windows`, policies/sla.py `MaintenanceWindow`).
            window = next(w.window for w in store.maintenance_windows() if w.seq == e.seq)
        finally:
            store.close()
        notice = duration_text(window.notice_s)
        print(f"seq {e.seq}: window M{e.seq} {args.kind} {ts(start)} .. {ts(end)} for "
              f"{'all servers' if servers == 'all' else ', '.join(servers)}, "
              + ("no notice (recorded after its start)" if window.declared_after_start
                 else f"notice {notice}"))
        if window.declared_after_start:
            print(f"{prog}: warning: recorded in the ledger at {ts(window.declared_at or e.at)}, after the window "
                  f"started: it excuses nothing; excuse past outages with rackwarden ledger "
                  f"reclassify SEQ --class … --reason …", file=sys.stderr)
        elif window.notice_from != notified:
            print(f"{prog}: warning: --notified-at {ts(notified)} is earlier than this entry "
                  f"({ts(window.notice_from)}): the notice counts from the ledger time, {notice} before the "
                  f"start (--notified-at claims {duration_text(window.claimed_notice_s)})",
                  file=sys.stderr)
        return EXIT_OK

    return run(prog, body)


def main_maintenance_cancel(argv: Sequence[str]) -> int:
    """`rackwarden maintenance cancel M<SEQ> --reason TEXT`: withdraw a window before it starts."""
    prog = "rackwarden maintenance cancel"

    def body() -> int:
        p = command_parser(prog, "Cancel a declared maintenance window before it starts.")
        p.add_argument("window", help="the window's id as `maintenance add` printed it (M12, or 12)")
        p.add_argument("--reason", required=True)
        p.add_argument("--by", default=None)
        args = p.parse_args(list(argv))
        m = re.fullmatch(r"M?(\d+)", args.window.strip())
        if m is None:
            raise Usage(f"window: {args.window!r} is not a window id like M12")
        store, _ = open_store(args)
        try:
            e = store.cancel_maintenance(int(m.group(1)), SystemClock().at(),
                                         by=args.by or operator_name(), reason=args.reason)
        finally:
            store.close()
        print(f"seq {e.seq}: window {e.payload['window']} cancelled")
        return EXIT_OK

    return run(prog, body)

# ---------------------------------------------------------------------------------------------
# R19: ledger ack | on-site | resolve


def _outage_note(kind: Literal["ack", "on_site", "resolve"], word: str,
                 what: str) -> Callable[[Sequence[str]], int]:
    prog = f"rackwarden ledger {word}"

    def main(argv: Sequence[str]) -> int:
        def body() -> int:
            p = command_parser(prog, f"Record that {what} for an outage (R19 repair times).")
            p.add_argument("seq", type=int, help="the outage's seq (its outage_start entry)")
            p.add_argument("--at", metavar="T", help="when it happened (ISO-8601; default now)")
            p.add_argument("--note", default="")
            p.add_argument("--by", default=None, help="who (default: the login name)")
            args = p.parse_args(list(argv))
            now = SystemClock().at()
            when = parse_time("--at", args.at) if args.at else None
            store, _ = open_store(args)
            try:
                e = store.note_outage(kind, args.seq, now, by=args.by or operator_name(),
                                      note=args.note, when=when)
            finally:
                store.close()
            claimed = f" (recorded {ts(e.at)})" if e.payload["at"] != ts(e.at) else ""
            print(f"seq {e.seq}: outage {e.ref_seq} ({e.server}) {word} at {e.payload['at']}"
                  f"{claimed}")
            return EXIT_OK

        return run(prog, body)

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
        p = command_parser(prog, "Record a major security incident and when it was reported (R13).")
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
        store, cfg = open_store(args)
        try:
            if args.action == "add":
                if cfg is not None and args.server and args.server not in {s.id for s in cfg.servers}:
                    raise Usage(f"--server: no server {args.server} in {args.config}")
                e = store.add_incident(
                    summary=args.summary, detected_at=parse_time("--detected-at", args.detected_at),
                    at=now, by=args.by or operator_name(), server=args.server,
                    reported_at=parse_time("--reported-at", args.reported_at) if args.reported_at
                    else None)
                print(f"seq {e.seq}: incident I{e.seq} detected {e.payload['detected_at']}"
                      f"{', reported ' + e.payload['reported_at'] if e.payload['reported_at'] else ''}")
            else:
                at = parse_time("--at", args.at) if args.at else now
                e = store.report_incident(args.seq, at, now, by=args.by or operator_name(),
                                          note=args.note)
                print(f"seq {e.seq}: incident I{args.seq} reported {e.payload['reported_at']}")
        finally:
            store.close()
        return EXIT_OK

    return run(prog, body)

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
