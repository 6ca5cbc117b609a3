"""What the ledger's commands share: argument parsing, opening the store, times, exit codes.

Each `main_*(argv)` of cli.py and report_cli.py takes the arguments after its subcommand and
returns an exit code: 0 done, 1 the ledger failed verification (or refused a report on a broken
ledger), 2 bad usage or input (one line on stderr saying what to fix). The database is
`--db URL`, or the ledger of `--config PATH` (agent.ledger_url, or
sqlite:///{state_dir}/ledger.sqlite).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any, NoReturn

from rackwarden.policies.sla import counted_time
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from .. import config as configmod
from .chain import LedgerError, VerifyResult, ts
from .reports import default_url
from .store import LedgerStore
from .views import OutageView

EXIT_OK = 0
EXIT_BROKEN = 1
EXIT_USAGE = 2


class Usage(Exception):
    """Bad input: printed as one line, exit code 2."""


class CommandParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise Usage(message)


def command_parser(prog: str, description: str) -> CommandParser:
    p = CommandParser(prog=prog, description=description)
    p.add_argument("-c", "--config", metavar="PATH",
                   help="agent config; its ledger is agent.ledger_url or sqlite:///{state_dir}/ledger.sqlite")
    p.add_argument("--db", metavar="URL",
                   help="ledger database URL (sqlite:///PATH or postgresql+psycopg://…), "
                        "instead of the config's")
    return p


def load_config(path: str) -> configmod.Config:
    try:
        return configmod.load(path)
    except configmod.ConfigError as e:
        first = e.issues[0] if e.issues else str(e)
        more = f" (and {len(e.issues) - 1} more; run rackwarden check-config)" if len(
            e.issues) > 1 else ""
        raise Usage(f"{first}{more}") from None


def open_store(args: argparse.Namespace) -> tuple[LedgerStore, configmod.Config | None]:
    cfg = load_config(args.config) if args.config else None
    url = args.db or (default_url(cfg) if cfg is not None else None)
    if url is None:
        raise Usage("give --db URL or --config PATH")
    store = LedgerStore(url)
    try:
        store.start()
    except SQLAlchemyError as e:
        # The driver's own words (e.g. "file is not a database"), on one line.
        shown = make_url(url).render_as_string(hide_password=True)  # never print a password
        raise Usage(f"cannot open ledger {shown}: {getattr(e, 'orig', None) or e}") from None
    return store, cfg


def parse_time(name: str, value: str) -> datetime:
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise Usage(f"{name}: not an ISO-8601 time: {value!r}") from None
    if at.tzinfo is None or at.utcoffset() is None:
        raise Usage(
            f"{name}: {value!r} has no UTC offset; write it like 2026-11-03T02:00:00+08:00"
        )
    if at.microsecond:
        raise Usage(f"{name}: {value!r} has fractions of a second; the ledger keeps whole seconds")
    return at


def operator_name() -> str:
    # Who ran the command, for the record; sudo keeps the real name in SUDO_USER.
    return os.environ.get("SUDO_USER") or os.environ.get("USER") or "operator"


def run(prog: str, body: Callable[[], int]) -> int:
    try:
        return body()
    except Usage as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except LedgerError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as e:  # --help
        return e.code if isinstance(e.code, int) else EXIT_OK


def verify_text(r: VerifyResult) -> str:
    """`ledger verify`'s verdict, which `report sla` also prints when it refuses a broken ledger."""
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


def claimed_json(claimed: datetime | None, recorded: datetime | None) -> dict[str, Any] | None:
    """A time a person supplied, beside its entry's ledger time and the one the rules count."""
    if claimed is None:
        return None
    return {"claimed": ts(claimed), "recorded": ts(recorded) if recorded else None,
            "counted": ts(counted_time(claimed, recorded))}


def outage_json(v: OutageView, now: datetime) -> dict[str, Any]:
    """One outage as `ledger list --outages --format json` and `report sla` print it.

    `changes[].recorded_at` is each correction's ledger time; `repair` holds the R19 times
    as claimed (`--at`) and as recorded.
    """
    return {
        "seq": v.seq, "outage_id": v.outage_id, "server": v.server, "switch": v.switch,
        "port": v.port, "start": ts(v.start), "end": ts(v.end) if v.end else None,
        "open": v.open, "seconds": v.seconds(now), "class": v.outage_class, "cause": v.cause,
        "recorded_cause": v.recorded_cause, "false_positive": v.false_positive,
        "evidence": dict(v.evidence),
        "changes": [{"seq": c.seq, "kind": c.kind, "by": c.by, "class": c.outage_class,
                     "cause": c.cause, "false_positive": c.false_positive, "reason": c.reason,
                     "recorded_at": ts(c.at)}
                    for c in v.changes],
        "repair": {"ack": claimed_json(v.acknowledged_at, v.acknowledged_recorded_at),
                   "on_site": claimed_json(v.on_site_at, v.on_site_recorded_at),
                   "resolve": claimed_json(v.resolved_at, v.resolved_recorded_at)},
    }
