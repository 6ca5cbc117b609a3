"""`rackwarden report overage|cap-changes`: R2's billable overage record and R3's pending objections.

`report overage` reads the usage buckets the metering service writes (agent/usage.py,
{state_dir}/usage.sqlite, opened read-only) and the ledger (throttles, cap changes); the
arithmetic is policies/overage.py. Exit codes and `--db` / `--config`: cli_common.py.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from rackwarden.policies.billing import BUCKET_S
from rackwarden.policies.cap import Direction
from rackwarden.policies.overage import (
    Bucket,
    Period,
    ServerOverage,
    server_overage,
)
from rackwarden.policies.sla import contract_timezone, duration_text, month_bounds, parse_period
from sqlalchemy.exc import SQLAlchemyError

from ..clock import SystemClock
from ..config import Config, ServerConfig
from ..usage import UsageStore
from .chain import Entry, LedgerError, VerifyResult, parse_ts, ts
from .cli_common import EXIT_BROKEN, EXIT_OK, Usage, command_parser, open_store, parse_time, run, verify_text
from .store import LedgerStore

ROUNDING = (f"bytes above the cap per {BUCKET_S} s bucket = max(0, floor(bytes - cap_bps x "
            f"{BUCKET_S} s / 8)), integers only; the bytes judged follow the template's direction; "
            f"gaps and throttled buckets are never billed")

# ---------------------------------------------------------------------------------------------
# What the ledger says: throttles and cap changes


def throttle_intervals(entries: Sequence[Entry], server: str,
                       until: datetime) -> list[tuple[datetime, datetime]]:
    """[from, to) of each throttle of `server` (`restriction_start` with restriction
    "throttle" until the `restriction_end` that refers to it; still open: until `until`)."""
    starts: dict[int, Entry] = {}
    ends: dict[int, datetime] = {}
    for e in entries:
        who = e.server or e.payload.get("server")
        if e.kind == "restriction_start" and who == server and e.payload.get("restriction") == "throttle":
            starts[e.seq] = e
        elif e.kind == "restriction_end" and e.ref_seq is not None:
            ends.setdefault(e.ref_seq, e.at)
    return sorted((s.at, ends.get(seq, until)) for seq, s in starts.items())


@dataclass(frozen=True, slots=True)
class CapChangeView:
    """A `cap_change` ledger entry (agent/enforcer.py announce_cap_changes) at `as_of`."""

    seq: int
    server: str
    customer: str | None  # None: the server is no longer in the configuration
    announced_at: datetime
    key: str
    from_bps: int | None
    to_bps: int
    effective_at: datetime
    objection_until: datetime
    short_notice: bool
    delivered: bool
    pending: bool  # the objection period has not ended at as_of
    in_config: bool  # the configuration still schedules this change


def cap_changes(entries: Sequence[Entry], cfg: Config, as_of: datetime) -> list[CapChangeView]:
    """Each announced change once (the first entry of its key), in ledger order."""
    out: list[CapChangeView] = []
    seen: set[str] = set()
    for e in entries:
        if e.kind != "cap_change" or e.server is None:
            continue
        p = e.payload
        key = str(p.get("key") or e.seq)
        if key in seen:
            continue
        seen.add(key)
        try:
            effective = parse_ts(str(p["effective_at"]))
            until = parse_ts(str(p["objection_until"]))
            to_bps = int(p["to_bps"])
        except (KeyError, ValueError, TypeError, LedgerError) as err:
            raise LedgerError(f"ledger seq {e.seq}: cap_change payload without a readable "
                              f"{err}: the ledger was written by something other than the "
                              f"enforcer") from None
        server = cfg.server(e.server)
        in_config = server is not None and any(
            at == effective and cap == to_bps for at, cap in cfg.cap_schedule(server).changes)
        from_bps = p.get("from_bps")
        out.append(CapChangeView(
            e.seq, e.server, server.customer if server else None, e.at, key,
            None if from_bps is None else int(from_bps), to_bps, effective, until,
            bool(p.get("short_notice")), bool(p.get("delivered")), until > as_of, in_config))
    return out


def _cap_text(caps: Sequence[int]) -> str:
    return "->".join(str(c) for c in caps)


# ---------------------------------------------------------------------------------------------
# report overage


@dataclass(frozen=True, slots=True)
class ServerReport:
    server: ServerConfig
    timezone: str
    overage: ServerOverage
    notes: tuple[str, ...]

    def local(self, at: datetime) -> str:
        """Times in the contract's timezone: the one its months are cut in."""
        return at.astimezone(contract_timezone(self.timezone)).isoformat()


def _usage_store(cfg: Config) -> tuple[UsageStore, Path]:
    db = cfg.agent.state_dir / "usage.sqlite"
    if not db.is_file():
        raise Usage(f"{db}: no usage database (the agent writes it while metering; is "
                    f"agent.state_dir right?)")
    # Read-only: a report never creates or alters the billing database.
    store = UsageStore(f"sqlite:///file:{db}?mode=ro&uri=true")
    try:
        store.start()
    except SQLAlchemyError as e:
        store.close()
        raise Usage(f"{db}: cannot read the usage database: {getattr(e, 'orig', None) or e}") from None
    return store, db


def overage_report(cfg: Config, usage: UsageStore, entries: Sequence[Entry], month: str,
                   as_of: datetime, customer: str | None = None) -> list[ServerReport]:
    changes = cap_changes(entries, cfg, as_of)
    rows: list[ServerReport] = []
    for s in cfg.servers:
        if customer is not None and s.customer != customer:
            continue
        t = cfg.templates[s.template]
        start, end = month_bounds(month, contract_timezone(t.timezone))
        buckets = [Bucket(b, c, o, i) for b, c, o, i in usage.buckets(s.id, start, end)]
        direction: Direction = t.direction  # type: ignore[assignment]
        ov = server_overage(s.id, buckets, cfg.cap_schedule(s), direction, start, end, as_of,
                            throttle_intervals(entries, s.id, as_of))
        notes = tuple(
            f"cap change to {c.to_bps} bit/s effective {c.effective_at.isoformat()} is open to "
            f"objection until {c.objection_until.isoformat()} (R3, ledger seq {c.seq}): time "
            f"billed under it may be disputed"
            for c in changes if c.server == s.id and c.pending and c.effective_at < end)
        if as_of < end:
            notes += (f"month not over at {ts(as_of)}: judged up to {ov.end.isoformat()}",)
        rows.append(ServerReport(s, t.timezone, ov, notes))
    return rows


def _period_json(p: Period, r: ServerReport) -> dict[str, Any]:
    return {"kind": p.kind, "start": r.local(p.start), "end": r.local(p.end),
            "seconds": p.seconds, "caps_bps": list(p.caps_bps),
            "bytes_above_cap": p.above_bytes, "billed": p.kind == "over", "buckets": p.buckets,
            "reason": p.reason}


def _report_json(rows: Sequence[ServerReport], month: str, now: datetime,
                 verified: VerifyResult) -> dict[str, Any]:
    return {
        "period": month, "generated_at": ts(now), "rounding": ROUNDING,
        "ledger": {"entries": verified.entries, "head_seq": verified.head.seq,
                   "head_hash": verified.head.hash, "verified": verified.ok},
        "servers": [{
            "id": r.server.id, "customer": r.server.customer, "template": r.server.template,
            "timezone": r.timezone, "direction": r.overage.direction,
            "start": r.local(r.overage.start), "end": r.local(r.overage.end),
            "invoice": {"over_cap_seconds": r.overage.over_seconds,
                        "bytes_above_cap": r.overage.above_bytes,
                        "caps_applied_bps": list(r.overage.caps_applied),
                        "throttled_seconds": r.overage.throttled_seconds,
                        "throttled_bytes_above_cap_not_billed": r.overage.throttled_above_bytes,
                        "gap_seconds": r.overage.gap_seconds},
            "periods": [_period_json(p, r) for p in r.overage.periods],
            "notes": list(r.notes),
        } for r in rows],
    }


CSV_COLUMNS = ["section", "server", "customer", "template", "direction", "kind", "start", "end",
               "seconds", "caps_bps", "bytes_above_cap", "billed", "throttled_s", "gap_s",
               "buckets", "reason"]


def _report_csv(rows: Sequence[ServerReport]) -> str:
    out = io.StringIO()
    wr = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    wr.writeheader()
    for r in rows:
        ov, s = r.overage, r.server
        base = {"server": s.id, "customer": s.customer, "template": s.template,
                "direction": ov.direction}
        # The invoice line first: seconds and bytes over the cap, billed; the rest for context.
        wr.writerow({**base, "section": "invoice", "start": r.local(ov.start),
                     "end": r.local(ov.end), "seconds": ov.over_seconds,
                     "caps_bps": _cap_text(ov.caps_applied), "bytes_above_cap": ov.above_bytes,
                     "billed": "yes", "throttled_s": ov.throttled_seconds,
                     "gap_s": ov.gap_seconds, "reason": "; ".join(r.notes)})
    for r in rows:
        base = {"server": r.server.id, "customer": r.server.customer,
                "template": r.server.template, "direction": r.overage.direction}
        for p in r.overage.periods:
            wr.writerow({**base, "section": "period", "kind": p.kind, "start": r.local(p.start),
                         "end": r.local(p.end), "seconds": p.seconds,
                         "caps_bps": _cap_text(p.caps_bps), "bytes_above_cap": p.above_bytes,
                         "billed": "yes" if p.kind == "over" else "no", "buckets": p.buckets,
                         "reason": p.reason})
    return out.getvalue()


def _report_table(rows: Sequence[ServerReport], month: str, now: datetime,
                  verified: VerifyResult) -> str:
    out = io.StringIO()
    w = out.write
    w(f"Overage report {month} (as of {ts(now)}; ledger verified, head seq {verified.head.seq} "
      f"sha256 {verified.head.hash})\n{ROUNDING}\n\n")
    w("INVOICE LINES (资源占用费 basis: billed seconds and bytes above the cap)\n")
    w(f"  {'server':<14} {'customer':<14} {'dir':<4} {'over cap s':>10} {'over cap':>9} "
      f"{'bytes above cap':>17} {'caps bit/s':<20} {'throttled':>10} {'gaps':>10}\n")
    for r in rows:
        ov = r.overage
        w(f"  {r.server.id:<14} {r.server.customer:<14} {ov.direction:<4} {ov.over_seconds:>10} "
          f"{duration_text(ov.over_seconds):>9} {ov.above_bytes:>17} "
          f"{_cap_text(ov.caps_applied) or '-':<20} {duration_text(ov.throttled_seconds):>10} "
          f"{duration_text(ov.gap_seconds):>10}\n")
        for note in r.notes:
            w(f"      note: {note}\n")
    w("\nPERIODS\n")
    for r in rows:
        for p in r.overage.periods:
            what = {"over": f"above cap {p.above_bytes} B, billed",
                    "throttled": f"throttled, not billed (counters {p.above_bytes} B above cap)",
                    "gap": f"gap, not billed: {p.reason}"}[p.kind]
            w(f"  {r.server.id:<14} {p.kind:<9} {r.local(p.start)} .. {r.local(p.end)} "
              f"{duration_text(p.seconds):>8}  cap {_cap_text(p.caps_bps)} bit/s  {what}\n")
    return out.getvalue()


def _verified(store: LedgerStore, prog: str) -> VerifyResult | None:
    verified = store.verify()
    if not verified.ok:
        print(f"{prog}: error: {verify_text(verified)}; a report would rest on a "
              f"tampered ledger (run rackwarden ledger verify)", file=sys.stderr)
        return None
    return verified


def main_report_overage(argv: Sequence[str]) -> int:
    """`rackwarden report overage --month YYYY-MM [--customer C] [--format table|csv|json]
    --config PATH [--db URL] [--as-of T]`."""
    prog = "rackwarden report overage"

    def body() -> int:
        p = command_parser(prog, "Per server, the time over its cap in one month and the bytes "
                                 "above it (R2), exact to the byte, from the usage buckets.")
        p.add_argument("--month", required=True, help="YYYY-MM in each contract's timezone")
        p.add_argument("--customer")
        p.add_argument("--format", choices=("table", "csv", "json"), default="table")
        p.add_argument("--as-of", metavar="T",
                       help="judge the buckets that ended by this time instead of now (ISO-8601)")
        args = p.parse_args(list(argv))
        if not args.config:
            raise Usage("--config PATH is required: caps, templates and the usage database "
                        "come from it")
        try:
            parse_period(args.month)
        except ValueError as e:
            raise Usage(f"--month: {e}") from None
        now = parse_time("--as-of", args.as_of) if args.as_of else SystemClock().at()
        store, cfg = open_store(args)
        assert cfg is not None
        try:
            if args.customer and not any(s.customer == args.customer for s in cfg.servers):
                raise Usage(f"--customer: no server of customer {args.customer!r} in "
                            f"{args.config}")
            verified = _verified(store, prog)
            if verified is None:
                return EXIT_BROKEN
            entries = store.entries(kinds=("restriction_start", "restriction_end", "cap_change"))
        finally:
            store.close()
        usage, db = _usage_store(cfg)
        try:
            rows = overage_report(cfg, usage, entries, args.month, now, args.customer)
        except SQLAlchemyError as e:
            raise Usage(f"{db}: cannot read the usage database: "
                        f"{getattr(e, 'orig', None) or e}") from None
        finally:
            usage.close()
        if args.format == "json":
            doc = _report_json(rows, args.month, now, verified)
            sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
        elif args.format == "csv":
            sys.stdout.write(_report_csv(rows))
        else:
            sys.stdout.write(_report_table(rows, args.month, now, verified))
        return EXIT_OK

    return run(prog, body)


# ---------------------------------------------------------------------------------------------
# report cap-changes


def _change_json(c: CapChangeView) -> dict[str, Any]:
    return {"seq": c.seq, "server": c.server, "customer": c.customer, "key": c.key,
            "from_bps": c.from_bps, "to_bps": c.to_bps, "effective_at": ts(c.effective_at),
            "announced_at": ts(c.announced_at), "objection_until": ts(c.objection_until),
            "pending": c.pending, "short_notice": c.short_notice, "delivered": c.delivered,
            "in_config": c.in_config}


def main_report_cap_changes(argv: Sequence[str]) -> int:
    """`rackwarden report cap-changes --config PATH [--db URL] [--pending] [--customer C]
    [--as-of T] [--format table|json]`."""
    prog = "rackwarden report cap-changes"

    def body() -> int:
        p = command_parser(prog, "R3: the cap changes announced to customers, and which are "
                                 "still open to objection.")
        p.add_argument("--pending", action="store_true",
                       help="only changes whose objection period has not ended")
        p.add_argument("--customer")
        p.add_argument("--as-of", metavar="T", help="judge at this time instead of now")
        p.add_argument("--format", choices=("table", "json"), default="table")
        args = p.parse_args(list(argv))
        if not args.config:
            raise Usage("--config PATH is required: each server's customer comes from it")
        now = parse_time("--as-of", args.as_of) if args.as_of else SystemClock().at()
        store, cfg = open_store(args)
        assert cfg is not None
        try:
            if args.customer and not any(s.customer == args.customer for s in cfg.servers):
                raise Usage(f"--customer: no server of customer {args.customer!r} in "
                            f"{args.config}")
            if _verified(store, prog) is None:
                return EXIT_BROKEN
            changes = cap_changes(store.entries(kinds=("cap_change",)), cfg, now)
        finally:
            store.close()
        if args.customer:
            changes = [c for c in changes if c.customer == args.customer]
        if args.pending:
            changes = [c for c in changes if c.pending]
        if args.format == "json":
            for c in changes:
                print(json.dumps(_change_json(c), ensure_ascii=False, sort_keys=True))
            return EXIT_OK
        print(f"{'seq':<6} {'server':<14} {'customer':<14} {'from bit/s':>11} {'to bit/s':>11} "
              f"{'effective':<25} {'objection until':<25} {'status':<8} notice")
        for c in changes:
            notice = ("delivered" if c.delivered else "NOT delivered") + (
                ", short notice" if c.short_notice else "") + (
                "" if c.in_config else ", no longer in the config")
            frm = "-" if c.from_bps is None else str(c.from_bps)
            print(f"{c.seq:<6} {c.server:<14} {c.customer or '-':<14} {frm:>11} {c.to_bps:>11} "
                  f"{ts(c.effective_at):<25} {ts(c.objection_until):<25} "
                  f"{'pending' if c.pending else 'closed':<8} {notice}")
        pending = sum(1 for c in changes if c.pending)
        print(f"{len(changes)} cap change(s), {pending} open to objection (as of {ts(now)})")
        return EXIT_OK

    return run(prog, body)
