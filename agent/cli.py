"""The `rackwarden` command: check-config, run, replay, report, sla."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import sys
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from . import config as configmod
from .textfile import TextFileError, read_text

# Exit codes of every `rackwarden` command (README "Exit codes"); the ledger's commands use the
# same numbers (agent/ledger/cli_common.py).
EXIT_OK = 0
EXIT_FAILED = 1  # the command ran, and what it reports failed: a skipped input line, a refused action
EXIT_BAD_INPUT = 2  # bad usage, or an input file it cannot use: nothing was done


def _load_or_exit(path: str, **how: Any) -> configmod.Config:
    try:
        return configmod.load(path, **how)
    except configmod.ConfigError as e:
        for issue in e.issues:
            print(issue, file=sys.stderr)
        print(f"{path}: {len(e.issues)} error(s)", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT) from None


def cmd_check_config(args: argparse.Namespace) -> int:
    # Without a credentials directory (a workstation, a fresh clone) a credential cannot be read,
    # which says nothing about the file: it is reported as not checked. The unit's ExecStartPre
    # runs with $CREDENTIALS_DIRECTORY set and --require-credentials, so there it is checked.
    cfg = _load_or_exit(args.path, credentials_dir=args.credentials_dir,
                        require_credentials=args.require_credentials)
    for note in cfg.unchecked:
        print(note)
    for warning in cfg.warnings:  # loads, but weaker than it should be (issue 11: SSH host keys)
        print(warning)
    unchecked = f", {len(cfg.unchecked)} credential(s) not checked" if cfg.unchecked else ""
    print(f"{args.path}: OK ({len(cfg.switches)} switches, {len(cfg.servers)} servers, "
          f"{len(cfg.templates)} templates, mode {cfg.agent.mode}{unchecked})")
    return EXIT_OK


def _compiled_helpers_error() -> str | None:
    """What is wrong with RACKWARDEN_RINGWALK, RACKWARDEN_SFLOW_WALK, RACKWARDEN_SCANWIN or
    RACKWARDEN_SNMP_BER (each "c" or "python": which twin of a compiled helper to use), or
    None."""
    from rackwarden.drivers.capture import ringwalk
    from rackwarden.drivers.sflow import cwalk
    from rackwarden.drivers.snmp import ber
    from rackwarden.policies.detect_vec import scan_loop

    from .abuse import scanwin_choice

    try:
        ringwalk.choose()
        cwalk.choose()
        scan_loop(scanwin_choice())
        ber.varbind_loop()
    except (ValueError, RuntimeError) as e:
        return str(e)
    return None


def cmd_run(args: argparse.Namespace) -> int:
    from .wiring import Runtime

    cfg = _load_or_exit(args.config)
    bad = _compiled_helpers_error()
    if bad is not None:
        print(f"rackwarden run: {bad}", file=sys.stderr)
        return EXIT_BAD_INPUT
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.metrics_port is not None:
        import dataclasses
        cfg = dataclasses.replace(cfg, agent=dataclasses.replace(cfg.agent, metrics_port=args.metrics_port))
    from .api import ApiTokenError
    from .webauth import WebConfigError

    runtime = Runtime(cfg, Path(args.config))
    # A SIGHUP reload hands every part a new snapshot; kept in this frame, the first one
    # would stay in memory for the daemon's lifetime beside it.
    del cfg
    try:
        asyncio.run(runtime.run())
    except (ApiTokenError, WebConfigError) as e:
        # A file read at start-up (the API token, a listener's TLS files) that cannot be used.
        print(f"rackwarden run: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_OK


def cmd_replay_snmp(args: argparse.Namespace) -> int:
    from .replay import main_replay

    return main_replay(_load_or_exit(args.config), args.input, args.explain)


def _month(text: str) -> str:
    """argparse type for YYYY-MM: a usage error, never a traceback."""
    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a month like 2026-11")
    return text


def _month_bounds(month: str, tz: str) -> tuple[datetime, datetime]:
    y, m = (int(x) for x in month.split("-"))
    start = datetime(y, m, 1, tzinfo=ZoneInfo(tz))
    end = datetime(y + (m == 12), m % 12 + 1, 1, tzinfo=ZoneInfo(tz))
    return start, end


def _throttles(cfg: Any) -> dict[str, list[tuple[datetime, datetime | None, int]]]:
    """Each server's throttled periods from the ledger: there the 95th counts what was carried.
    No ledger yet (a fresh install): no throttles."""
    from sqlalchemy.exc import SQLAlchemyError

    from .ledger import LedgerStore
    from .ledger.views import throttled_periods

    url = cfg.agent.ledger_database()
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return {}
    ledger = LedgerStore(url)
    out: dict[str, list[tuple[datetime, datetime | None, int]]] = {}
    try:
        ledger.start()
        by_server: dict[str, list[Any]] = {}
        for r in ledger.restrictions():  # one read for the whole fleet
            by_server.setdefault(r.server, []).append(r)
        out = {sid: throttled_periods(rs) for sid, rs in by_server.items()}
    except SQLAlchemyError as e:
        print(f"warning: ledger not read, throttled time counted as measured: {getattr(e, 'orig', None) or e}",
              file=sys.stderr)
    finally:
        ledger.close()
    return out


def cmd_report_usage(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from .usage import UsageStore

    cfg = _load_or_exit(args.config)
    db = cfg.agent.state_dir / "usage.sqlite"
    store = UsageStore(f"sqlite:///{db}")
    rows = []
    throttles = _throttles(cfg)
    try:
        store.start()
        for s in cfg.servers:
            t = cfg.templates[s.template]
            start, end = _month_bounds(args.month, t.timezone)
            p95, n = store.p95_bps(s.id, start, end, t.billing_direction,  # type: ignore[arg-type]
                                   throttles.get(s.id, ()))
            rows.append({"server": s.id, "customer": s.customer, "month": args.month,
                         "rule": t.billing_direction, "buckets": n,
                         "p95_bps": round(p95) if p95 is not None else None,
                         "cap_bps": cfg.cap_schedule(s).cap_at(end)})
    except SQLAlchemyError as e:
        # A file that is not the agent's database (damaged, or another file in its place).
        print(f"{db}: cannot read the usage database: {getattr(e, 'orig', None) or e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    finally:
        store.close()
    if args.format == "json":
        for r in rows:
            print(json.dumps(r))
    else:
        print(f"{'server':<14}{'customer':<18}{'rule':<6}{'buckets':>8}{'p95 Mbps':>10}{'cap Mbps':>10}")
        for r in rows:
            p = "-" if r["p95_bps"] is None else f"{r['p95_bps'] / 1e6:.2f}"
            print(f"{r['server']:<14}{r['customer']:<18}{r['rule']:<6}{r['buckets']:>8}{p:>10}"
                  f"{r['cap_bps'] / 1e6:>10.2f}")
    return 0


def cmd_sla_explain(args: argparse.Namespace) -> int:
    from .sla_explain import main as explain_main

    return explain_main(["--input", args.input])


def _dial_host(listen: str) -> str:
    """Where to reach a listener bound to `listen`: a wildcard bind is reached on loopback."""
    bare = listen.strip("[]")
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(bare, bare)


def _api(args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """Call the running daemon's local API with the token from its state directory.

    Over TLS (agent.api_web_config), the daemon must present exactly the certificate in its
    cert_file, checked before the token is sent: the pin needs no CA and no name in the
    certificate for the address dialled, and nothing else can stand in for the daemon.
    """
    import hashlib
    import http.client
    import ssl

    from .api import TOKEN_FILE, TOKEN_FORM
    from .webauth import WebConfigError, cert_fingerprint, load_web_config

    cfg = _load_or_exit(args.config)
    a = cfg.agent
    token_path = a.state_dir / TOKEN_FILE
    try:
        token = read_text(token_path).strip()
    except OSError as e:
        print(f"{token_path}: cannot read the API token: {e.strerror} (is the daemon running?)", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT) from None
    except TextFileError as e:
        print(f"{e} (the API token; remove the file and restart the daemon to make a new one)", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT) from None
    if not TOKEN_FORM.fullmatch(token):
        # The daemon writes secrets.token_urlsafe(); anything else would also be refused (or,
        # with a line break, turned into another header) on the way out.
        print(f"{token_path}:1: not an API token (expected one line of URL-safe base64; remove the file and "
              "restart the daemon to make a new one)", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT)
    pin = None
    try:
        wc = load_web_config(a.api_web_config) if a.api_web_config is not None else None
        if wc is not None and wc.tls is not None:
            pin = cert_fingerprint(wc.tls.cert_file)
    except WebConfigError as e:
        print(f"agent.api_web_config: {e}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT) from None
    host = _dial_host(a.api_listen)
    url = f"{'https' if pin else 'http'}://{f'[{host}]' if ':' in host else host}:{a.api_port}{path}"
    conn: http.client.HTTPConnection
    if pin is not None:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False  # the pin below decides, before anything is sent
        ctx.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection(host, a.api_port, timeout=130, context=ctx)
    else:
        conn = http.client.HTTPConnection(host, a.api_port, timeout=130)
    data = json.dumps(body).encode() if body is not None else None
    try:
        conn.connect()
        if pin is not None:
            assert isinstance(conn.sock, ssl.SSLSocket)
            presented = conn.sock.getpeercert(binary_form=True)
            if presented is None or hashlib.sha256(presented).digest() != pin:
                print(f"{url}: the server's certificate is not the one in agent.api_web_config's cert_file "
                      "(another host on that address, or a certificate changed without a restart); "
                      "the token was not sent", file=sys.stderr)
                raise SystemExit(EXIT_BAD_INPUT)
        conn.request(method, path, body=data,
                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        r = conn.getresponse()
        raw = r.read()
    except (OSError, http.client.HTTPException) as e:
        print(f"cannot reach the daemon at {url}: {e}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT) from None
    finally:
        conn.close()
    try:
        doc = json.loads(raw or b"{}")
    except ValueError:
        doc = None
    if r.status >= 400:
        why = doc.get("error", "") if isinstance(doc, dict) else r.reason
        print(f"{method} {path}: {r.status} {why}", file=sys.stderr)
        raise SystemExit(EXIT_FAILED)
    if not isinstance(doc, dict):
        print(f"{method} {path}: {r.status}: the answer is not a JSON object", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT)
    return doc


def _print_status(doc: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(doc, ensure_ascii=False, indent=1))
        return
    if "mode" in doc:
        print(f"mode: {doc['mode']}")
    print(f"{'server':<12}{'switch':<8}{'port':<10}{'ladder':<34}{'last action':<30}hold")
    for s in doc.get("servers", [doc] if "server" in doc else []):
        ladder = ", ".join(f"{k}:{v['phase']}" for k, v in s["ladder"].items()) or "-"
        la = s.get("last_action")
        last = f"{la['action']} {la['reason']} {la['state']}" if la else "-"
        print(f"{s['server']:<12}{s['switch']:<8}{s['port']:<10}{ladder:<34}{last:<30}{s.get('hold_until') or '-'}")
        for reason, why in (s.get("refused") or {}).items():
            print(f"{'':<12}shut for {reason} refused by a safety rail: {why}")
    for b in doc.get("breakers", []):
        print(f"BREAKER OPEN on {b['switch']} since {b['at']}: {b['why']}")


def cmd_status(args: argparse.Namespace) -> int:
    _print_status(_api(args, "GET", "/v1/status"), args.json)
    return 0


def cmd_suspend(args: argparse.Namespace) -> int:
    doc = _api(args, "POST", "/v1/suspend", {"server": args.server, "reason": args.reason,
                                             "note": args.note, "actor": args.actor})
    _print_status(doc, args.json)
    return 0 if doc.get("last_action", {}) and doc["last_action"]["state"] in ("APPLIED", "DRYRUN") else 1


def cmd_restore(args: argparse.Namespace) -> int:
    doc = _api(args, "POST", "/v1/restore", {"server": args.server, "actor": args.actor})
    _print_status(doc, args.json)
    return 0 if doc.get("last_action", {}) and doc["last_action"]["state"] in ("APPLIED", "DRYRUN") else 1


def _duration_s(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", text.strip())
    if m is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 30m, 2h or 1d")
    return float(m[1]) * units.get(m[2], 1)


def cmd_hold(args: argparse.Namespace) -> int:
    _print_status(_api(args, "POST", "/v1/hold", {"server": args.server, "seconds": args.duration,
                                                  "note": args.note, "actor": args.actor}), args.json)
    return 0


def cmd_breaker_reset(args: argparse.Namespace) -> int:
    _print_status(_api(args, "POST", "/v1/breaker/reset", {"switch": args.switch, "actor": args.actor}), args.json)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rackwarden", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    c = sub.add_parser("check-config", help="validate a config file offline")
    c.add_argument("path")
    c.add_argument("--credentials-dir", metavar="DIR",
                   help="where {credential: NAME} files are (default: $CREDENTIALS_DIRECTORY)")
    c.add_argument("--require-credentials", action="store_true",
                   help="a credential that cannot be read is an error, also when no credentials "
                        "directory is given (the systemd unit's ExecStartPre)")
    c.set_defaults(fn=cmd_check_config)

    r = sub.add_parser("run", help="run the daemon")
    r.add_argument("-c", "--config", required=True)
    r.add_argument("--metrics-port", type=int, help="override agent.metrics_port")
    r.add_argument("-v", "--verbose", action="store_true")
    r.set_defaults(fn=cmd_run)

    rp = sub.add_parser("replay", help="feed recorded data through the daemon's policies")
    rsub = rp.add_subparsers(dest="what", required=True)
    rs = rsub.add_parser("snmp", help="recorded SNMP polls (JSON lines) through the metering policy")
    rs.add_argument("--input", required=True, help="JSON-lines file, or - for stdin")
    rs.add_argument("--config", "-c", required=True)
    rs.add_argument("--explain", action="store_true", help="add reason, cap and run length")
    rs.set_defaults(fn=cmd_replay_snmp)

    rep = sub.add_parser("report", help="reports for billing and operations")
    repsub = rep.add_subparsers(dest="what", required=True)
    ru = repsub.add_parser("usage", help="monthly 95th percentile per server")
    ru.add_argument("--month", required=True, type=_month, help="YYYY-MM")
    ru.add_argument("-c", "--config", required=True)
    ru.add_argument("--format", choices=("table", "json"), default="table")
    ru.set_defaults(fn=cmd_report_usage)

    import getpass

    def ops(name: str, help_: str, fn: object, server: bool = True) -> argparse.ArgumentParser:
        x = sub.add_parser(name, help=help_)
        if server:
            x.add_argument("server")
        x.add_argument("-c", "--config", required=True)
        x.add_argument("--json", action="store_true")
        x.add_argument("--actor", default=f"operator:{getpass.getuser()}")
        x.set_defaults(fn=fn)
        return x

    ops("status", "servers, ladder state, last actions, breakers", cmd_status, server=False)
    su = ops("suspend", "suspend a server's port (nonpayment, abuse, operator)", cmd_suspend)
    su.add_argument("--reason", required=True, choices=("nonpayment", "abuse", "operator"))
    su.add_argument("--note", default="")
    ops("restore", "restore a suspended server's port", cmd_restore)
    h = ops("hold", "exempt a server from automation for a time", cmd_hold)
    h.add_argument("--for", dest="duration", required=True, type=_duration_s, help="e.g. 30m, 2h, 1d")
    h.add_argument("--note", default="")
    b = ops("breaker-reset", "close a switch's breaker after checking the meter", cmd_breaker_reset, server=False)
    b.add_argument("switch")

    for group, help_ in (("ledger", "outage ledger: verify | reclassify | list | ack | on-site | "
                                    "resolve | incident"),
                         ("maintenance", "maintenance windows: add | cancel")):
        g = sub.add_parser(group, help=help_)
        g.add_argument("what", help=f"see `rackwarden {group} SUBCOMMAND --help`")
    repsub.add_parser("sla", help="SLA credits per server and month (see `rackwarden report sla --help`)")
    repsub.add_parser("deadlines", help="R13 incident reports and R19 repair times "
                                        "(see `rackwarden report deadlines --help`)")
    repsub.add_parser("overage", help="R2: time and bytes over the cap per server and month "
                                      "(see `rackwarden report overage --help`)")
    repsub.add_parser("cap-changes", help="R3: announced cap changes and pending objections "
                                          "(see `rackwarden report cap-changes --help`)")

    sla = sub.add_parser("sla", help="SLA credit engine")
    slasub = sla.add_subparsers(dest="what", required=True)
    se = slasub.add_parser("explain", help="credits for a scenario file")
    se.add_argument("--input", required=True)
    se.set_defaults(fn=cmd_sla_explain)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from .ledger.cli import COMMANDS as LEDGER_COMMANDS

    # The ledger's commands parse their own arguments (agent/ledger/cli.py, agent/ledger/report_cli.py).
    if len(argv) >= 2 and (argv[0], argv[1]) in LEDGER_COMMANDS:
        return int(LEDGER_COMMANDS[(argv[0], argv[1])](argv[2:]))
    if len(argv) >= 2 and argv[0] == "report" and argv[1] in ("overage", "cap-changes"):
        from .ledger import overage_cli  # R2 overage and R3 objections: agent/ledger/overage_cli.py

        fn = overage_cli.main_report_overage if argv[1] == "overage" else overage_cli.main_report_cap_changes
        return int(fn(argv[2:]))
    args = build_parser().parse_args(argv)
    return int(args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
