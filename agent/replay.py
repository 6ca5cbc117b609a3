"""`rackwarden replay snmp`: recorded polls through exactly the daemon's metering policy."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from typing import IO, Any

from .config import Config
from .metering import MeteringService, PortReport
from .pollio import poll_from_json
from .textfile import decode_line


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


def replay(config: Config, lines: Iterable[str | bytes], out: IO[str], err: IO[str], explain: bool = False,
           name: str | None = None) -> int:
    """Write one JSON line per configured server port per poll; return the count of bad lines.

    `lines` may be bytes (a file opened in binary): each line is decoded on its own, so a line
    that is not UTF-8 text (a torn write, binary junk) is skipped and counted like any other
    malformed line instead of ending the replay.
    """
    service = MeteringService(config)
    where = name or getattr(lines, "name", "<input>")
    bad = 0
    for n, raw in enumerate(lines, 1):
        try:
            line = decode_line(raw) if isinstance(raw, bytes) else raw
            if not line.strip():
                continue
            poll = poll_from_json(line)
        except ValueError as e:  # PollFormatError, or bytes that are not text
            bad += 1
            print(f"{where}:{n}: skipped: {e}", file=err)
            continue
        if poll.switch not in config.switches:
            bad += 1
            print(f"{where}:{n}: skipped: switch '{poll.switch}' is not in the config", file=err)
            continue
        for report in service.ingest(poll):
            out.write(json.dumps(report_json(report, explain)) + "\n")
    return bad


def main_replay(config: Config, input_path: str, explain: bool = False) -> int:
    """Exit code: 0 every line replayed, 1 some skipped (each named on stderr), 2 no input to read."""
    try:
        # Binary, so that one undecodable line is skipped rather than ending the run.
        f: IO[bytes] | IO[str] = (getattr(sys.stdin, "buffer", sys.stdin) if input_path == "-"
                                  else open(input_path, "rb"))  # noqa: SIM115
    except OSError as e:
        print(f"{input_path}: cannot read: {e.strerror}", file=sys.stderr)
        return 2
    try:
        bad = replay(config, f, sys.stdout, sys.stderr, explain, name="<stdin>" if input_path == "-" else input_path)
    except OSError as e:  # a directory, an I/O error part-way
        print(f"{input_path}: cannot read: {e.strerror}", file=sys.stderr)
        return 2
    finally:
        if input_path != "-":
            f.close()
    if bad:
        print(f"{bad} line(s) could not be replayed", file=sys.stderr)
        return 1
    return 0
