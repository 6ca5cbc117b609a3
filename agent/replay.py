"""`rackwarden replay snmp`: recorded polls through exactly the daemon's metering policy."""

from __future__ import annotations

import json
import sys
from typing import IO, Any

from .config import Config
from .metering import MeteringService, PortReport
from .pollio import PollFormatError, poll_from_json


def report_json(r: PortReport, explain: bool = False) -> dict[str, Any]:
    s = r.sample
    doc: dict[str, Any] = {
        "switch": s.switch,
        "port": s.port,
        "server": r.server.id,
        "at": s.at.isoformat(),
        "in_bps": round(s.in_bps) if s.ok and s.in_bps is not None else None,
        "out_bps": round(s.out_bps) if s.ok and s.out_bps is not None else None,
        "status": s.status,
        "cap_state": r.verdict.state,
    }
    if explain:
        doc.update(reason=s.reason or r.verdict.reason, cap_bps=r.verdict.cap_bps,
                   actionable=r.verdict.actionable, covered_s=round(r.verdict.covered_s, 3))
    return doc


def replay(config: Config, lines: IO[str], out: IO[str], err: IO[str], explain: bool = False) -> int:
    """Write one JSON line per configured server port per poll; return the count of bad lines."""
    service = MeteringService(config)
    bad = 0
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            poll = poll_from_json(line)
        except PollFormatError as e:
            bad += 1
            print(f"{getattr(lines, 'name', '<input>')}:{n}: skipped: {e}", file=err)
            continue
        if poll.switch not in config.switches:
            bad += 1
            print(f"{getattr(lines, 'name', '<input>')}:{n}: skipped: switch '{poll.switch}'"
                  " is not in the config", file=err)
            continue
        for report in service.ingest(poll):
            out.write(json.dumps(report_json(report, explain)) + "\n")
    return bad


def main_replay(config: Config, input_path: str, explain: bool = False) -> int:
    with (sys.stdin if input_path == "-" else open(input_path, encoding="utf-8")) as f:
        bad = replay(config, f, sys.stdout, sys.stderr, explain)
    if bad:
        print(f"{bad} line(s) could not be replayed", file=sys.stderr)
        return 1
    return 0
