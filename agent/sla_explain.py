"""`rackwarden sla explain`: runs the SLA credit engine on a scenario file, for disputes and audits.

Input (issue 5), times ISO-8601 with an offset, whole seconds:

    {"timezone": "Asia/Shanghai",            # optional; IANA name or "+05:30"; default Shanghai
     "period": "2026-11",
     "templates": {"name": {...}},           # optional extra credit templates (template_from_dict)
     "servers": [{"id", "template", "monthly_fee_fen", "paid_total_fen",
                  "credited_before_fen"}],   # the last is optional (earlier months' credits, R20)
     "maintenance": [{"id", "kind", "start", "end", "notified_at", "servers": [...] | "all",
                      "declared_at"}],      # the last is optional: the window's ledger time
     "outages": [{"server", "start", "end", "cause", "false_positive": false}]}

A window's `declared_at` is when the ledger recorded it (`ledger list` shows each entry's `at`):
with it, the notice counts from the later of `notified_at` and `declared_at`, and a window
declared after its start excuses nothing, as in `report sla`. Without it the claimed
`notified_at` is taken as given (a hypothetical scenario has no ledger).

Unknown keys are errors. Outage ids in the output are their JSON paths ("outages[2]"), so a
reader can find the record a reason names. Bad input: one line naming the JSON path and what is
wrong on stderr, exit code 2, nothing on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime, tzinfo
from fractions import Fraction
from pathlib import Path
from typing import Any, NoReturn

from rackwarden.policies.sla import (
    BUILTIN_TEMPLATES,
    CAUSES,
    CLASSES,
    DEFAULT_TIMEZONE,
    WINDOW_KINDS,
    CreditTemplate,
    MaintenanceWindow,
    OutageClass,
    OutagePart,
    OutageRecord,
    ServerContract,
    ServerMonth,
    TemplateError,
    contract_timezone,
    days_in_month,
    fraction_text,
    month_bounds,
    outage_class_of,
    parse_period,
    server_month,
    template_from_dict,
)

EXIT_BAD_INPUT = 2
PROG = "rackwarden sla explain"


class SlaInputError(ValueError):
    """A scenario file is wrong at `path` (a JSON path such as "outages[2].start")."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def _fail(path: str, reason: str) -> NoReturn:
    raise SlaInputError(path, reason)


def _object(
    path: str, value: object, required: Sequence[str], optional: Sequence[str]
) -> dict[str, Any]:
    if not isinstance(value, dict):
        _fail(path, f"must be an object, got {type(value).__name__}")
    for key in value:
        if key not in required and key not in optional:
            known = ", ".join([*required, *optional])
            _fail(f"{path}.{key}" if path != "$" else key, f"unknown key (known: {known})")
    for key in required:
        if key not in value:
            _fail(f"{path}.{key}" if path != "$" else key, "missing required key")
    return value


def _str(path: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        _fail(path, f"must be a non-empty string, got {value!r}")
    return value


def _fen(path: str, value: object) -> int:
    # Floats are refused rather than rounded: money in the file must already be whole fen.
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(path, f"must be a whole number of fen (integer), got {value!r}")
    if value < 0:
        _fail(path, f"must not be negative, got {value}")
    return value


def _time(path: str, value: object) -> datetime:
    if not isinstance(value, str):
        _fail(path, f"must be an ISO-8601 time string, got {value!r}")
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        _fail(path, f"not an ISO-8601 time: {value!r}")
    if at.tzinfo is None or at.utcoffset() is None:
        _fail(path, f"time {value!r} has no UTC offset; write it like 2026-11-03T10:00:00+08:00")
    if at.microsecond:
        _fail(path, f"time {value!r} has fractions of a second; outages are kept to the second")
    return at


def _list(path: str, value: object) -> list[Any]:
    if not isinstance(value, list):
        _fail(path, f"must be a list, got {type(value).__name__}")
    return value


def _templates(doc: Mapping[str, Any]) -> dict[str, CreditTemplate]:
    templates = dict(BUILTIN_TEMPLATES)
    raw = doc.get("templates", {})
    if not isinstance(raw, dict):
        _fail("templates", "must be an object of name → template")
    for name, body in raw.items():
        path = f"templates.{name}"
        if name in BUILTIN_TEMPLATES:
            _fail(path, "shadows a built-in template; choose another name")
        if not isinstance(body, dict):
            _fail(path, "must be an object")
        if body.get("name", name) != name:
            _fail(f"{path}.name", f"must equal the key {name!r} or be left out")
        try:
            templates[name] = template_from_dict({**body, "name": name})
        except TemplateError as exc:
            _fail(f"{path}.{exc.key}", exc.reason)
    return templates


def _servers(
    doc: Mapping[str, Any], templates: Mapping[str, CreditTemplate]
) -> list[tuple[ServerContract, int]]:
    out: list[tuple[ServerContract, int]] = []
    seen: set[str] = set()
    servers = _list("servers", doc["servers"])
    if not servers:
        _fail("servers", "must name at least one server")
    for i, raw in enumerate(servers):
        path = f"servers[{i}]"
        s = _object(
            path,
            raw,
            ("id", "template", "monthly_fee_fen", "paid_total_fen"),
            ("credited_before_fen",),
        )
        sid = _str(f"{path}.id", s["id"])
        if sid in seen:
            _fail(f"{path}.id", f"duplicate server id {sid!r}")
        seen.add(sid)
        tname = _str(f"{path}.template", s["template"])
        if tname not in templates:
            _fail(f"{path}.template", f"unknown template {tname!r}; known: {', '.join(templates)}")
        contract = ServerContract(
            id=sid,
            template=templates[tname],
            monthly_fee_fen=_fen(f"{path}.monthly_fee_fen", s["monthly_fee_fen"]),
            paid_total_fen=_fen(f"{path}.paid_total_fen", s["paid_total_fen"]),
        )
        before = _fen(f"{path}.credited_before_fen", s.get("credited_before_fen", 0))
        out.append((contract, before))
    return out


def _windows(doc: Mapping[str, Any], server_ids: set[str]) -> list[MaintenanceWindow]:
    out: list[MaintenanceWindow] = []
    seen: set[str] = set()
    for i, raw in enumerate(_list("maintenance", doc.get("maintenance", []))):
        path = f"maintenance[{i}]"
        w = _object(path, raw, ("id", "kind", "start", "end", "notified_at", "servers"),
                    ("declared_at",))
        wid = _str(f"{path}.id", w["id"])
        if wid in seen:
            _fail(f"{path}.id", f"duplicate window id {wid!r}")
        seen.add(wid)
        kind = w["kind"]
        if kind not in WINDOW_KINDS:
            _fail(f"{path}.kind", f"must be one of {', '.join(WINDOW_KINDS)}, got {kind!r}")
        start = _time(f"{path}.start", w["start"])
        end = _time(f"{path}.end", w["end"])
        notified = _time(f"{path}.notified_at", w["notified_at"])
        declared = (_time(f"{path}.declared_at", w["declared_at"]) if "declared_at" in w
                    else None)
        if end <= start:
            _fail(f"{path}.end", "must be after start")
        covered: tuple[str, ...] | None = None  # None = "all"
        if w["servers"] != "all":
            names = _list(f"{path}.servers", w["servers"])
            if not names:
                _fail(f"{path}.servers", 'must name at least one server, or be "all"')
            for j, name in enumerate(names):
                if _str(f"{path}.servers[{j}]", name) not in server_ids:
                    _fail(f"{path}.servers[{j}]", f"unknown server {name!r}")
            covered = tuple(names)
        out.append(
            MaintenanceWindow(
                id=wid,
                kind=kind,
                start=start,
                end=end,
                notified_at=notified,
                servers="all" if covered is None else covered,
                declared_at=declared,
            )
        )
    return out


def _outages(doc: Mapping[str, Any], server_ids: set[str]) -> list[OutageRecord]:
    out: list[OutageRecord] = []
    for i, raw in enumerate(_list("outages", doc.get("outages", []))):
        path = f"outages[{i}]"
        o = _object(path, raw, ("server", "start", "end", "cause"), ("false_positive",))
        server = _str(f"{path}.server", o["server"])
        if server not in server_ids:
            _fail(f"{path}.server", f"unknown server {server!r}")
        start = _time(f"{path}.start", o["start"])
        end = _time(f"{path}.end", o["end"])
        if end <= start:
            _fail(f"{path}.end", "must be after start")
        cause = _str(f"{path}.cause", o["cause"])
        if cause not in CAUSES:
            _fail(f"{path}.cause", f"unknown cause {cause!r}; known: {', '.join(CAUSES)}")
        fp = o.get("false_positive", False)
        if not isinstance(fp, bool):
            _fail(f"{path}.false_positive", f"must be true or false, got {fp!r}")
        try:
            outage_class_of(cause, fp)
        except ValueError as exc:
            _fail(f"{path}.false_positive", str(exc))
        out.append(OutageRecord(path, server, start, end, cause, fp))
    return out


def _classes(by_class: Mapping[OutageClass, int]) -> dict[str, int]:
    return {c: by_class[c] for c in CLASSES}


def _hours(seconds: int) -> int | str:
    # Built-in templates give whole hours; a custom unit may not, and then the exact text.
    hours = Fraction(seconds, 3600)
    return hours.numerator if hours.denominator == 1 else fraction_text(hours)


def _part_json(part: OutagePart, kind: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "server": part.server,
        "start": part.start.isoformat(),
        "end": part.end.isoformat(),
        "class": part.outage_class,
        "seconds": part.seconds,
        "seconds_by_class": _classes(part.seconds_by_class),
        "creditable_seconds": part.creditable_seconds,
        "units": part.units,
    }
    if kind == "fee_multiple":
        body["contribution_fen"] = fraction_text(part.credit_fen)
    else:
        body["extension_hours"] = _hours(part.extension_s)
    body["reason"] = part.reason
    body["segments"] = [
        {
            "start": seg.start.isoformat(),
            "end": seg.end.isoformat(),
            "class": seg.outage_class,
            "seconds": seg.seconds,
            "records": list(seg.records),
            "window": seg.window,
            "reason": seg.reason,
        }
        for seg in part.segments
    ]
    return body


def _server_json(month: ServerMonth, contract: ServerContract) -> dict[str, Any]:
    t = month.template
    body: dict[str, Any] = {
        "id": contract.id,
        "template": t.name,
        "kind": t.kind,
        "monthly_fee_fen": contract.monthly_fee_fen,
        "paid_total_fen": contract.paid_total_fen,
        "seconds_by_class": _classes(month.seconds_by_class),
    }
    if t.kind == "fee_multiple":
        body["credited_before_fen"] = month.credited_before_fen
        body["credit_before_caps_fen"] = fraction_text(month.credit_before_caps_fen)
        body["caps_applied"] = list(month.caps_applied)
        body["credit_fen"] = month.credit_fen
    else:
        body["extension_hours"] = _hours(month.extension_s)
    body["reason"] = month.reason
    body["outages"] = [_part_json(p, t.kind) for p in month.parts]
    return body


def explain(doc: dict[str, Any]) -> dict[str, Any]:
    """The credit of every server in a scenario for its period; raises SlaInputError."""
    _object(
        "$",
        doc,
        ("period", "servers"),
        ("timezone", "templates", "maintenance", "outages"),
    )
    tz_name = doc.get("timezone", DEFAULT_TIMEZONE)
    if not isinstance(tz_name, str):
        _fail("timezone", f"must be a string, got {tz_name!r}")
    try:
        tz: tzinfo = contract_timezone(tz_name)
    except ValueError as exc:
        _fail("timezone", str(exc))
    period = doc["period"]
    if not isinstance(period, str):
        _fail("period", f"must be a string YYYY-MM, got {period!r}")
    try:
        parse_period(period)
    except ValueError as exc:
        _fail("period", str(exc))
    templates = _templates(doc)
    contracts = _servers(doc, templates)
    ids = {c.id for c, _ in contracts}
    windows = _windows(doc, ids)
    records = _outages(doc, ids)
    m_start, m_end = month_bounds(period, tz)
    outside = [r.id for r in records if r.end <= m_start or r.start >= m_end]
    servers = [
        _server_json(server_month(c, records, windows, period, tz, before), c)
        for c, before in contracts
    ]
    return {
        "timezone": tz_name,
        "period": period,
        "days_in_month": days_in_month(period),
        "servers": servers,
        "outside_period": outside,
    }


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json would keep the last of two equal keys; in a dispute file that hides a mistake.
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def main(argv: list[str] | None = None) -> int:
    """`rackwarden sla explain --input FILE.json` (argv without the program and subcommand)."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="Explain SLA credits for a scenario file (issue 5)."
    )
    parser.add_argument(
        "--input", required=True, metavar="FILE.json", help='scenario file, "-" = stdin'
    )
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help and on usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_BAD_INPUT
    from .textfile import TextFileError, decode

    try:
        # Bytes, decoded here: a binary or non-UTF-8 file is named by line, not a traceback.
        if args.input == "-":
            # A replaced stdin (tests, embedding) may be text already, without a byte buffer.
            stdin = getattr(sys.stdin, "buffer", None)
            text = decode(stdin.read(), "<stdin>") if stdin is not None else sys.stdin.read()
        else:
            text = decode(Path(args.input).read_bytes(), args.input)
    except OSError as exc:
        print(f"{PROG}: error: cannot read {args.input}: {exc.strerror}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except TextFileError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        doc = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as exc:
        print(f"{PROG}: error: {args.input}:{exc.lineno}: not valid JSON: {exc.msg} (column {exc.colno})",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    except ValueError as exc:
        print(f"{PROG}: error: {args.input}: not valid JSON: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        result = explain(doc)
    except SlaInputError as exc:
        print(f"{PROG}: error: {args.input}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    # Built completely before printing, so bad input never leaves half a report on stdout.
    sys.stdout.write(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
