"""The `rackwarden` command: check-config, run, replay, report, sla."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from . import config as configmod


def _load_or_exit(path: str) -> configmod.Config:
    try:
        return configmod.load(path)
    except configmod.ConfigError as e:
        for issue in e.issues:
            print(issue, file=sys.stderr)
        print(f"{path}: {len(e.issues)} error(s)", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg = _load_or_exit(args.path)
    print(f"{args.path}: OK ({len(cfg.switches)} switches, {len(cfg.servers)} servers, "
          f"{len(cfg.templates)} templates, mode {cfg.agent.mode})")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .wiring import Runtime

    cfg = _load_or_exit(args.config)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.metrics_port is not None:
        import dataclasses
        cfg = dataclasses.replace(cfg, agent=dataclasses.replace(cfg.agent, metrics_port=args.metrics_port))
    asyncio.run(Runtime(cfg, Path(args.config)).run())
    return 0


def cmd_replay_snmp(args: argparse.Namespace) -> int:
    from .replay import main_replay

    return main_replay(_load_or_exit(args.config), args.input, args.explain)


def _month_bounds(month: str, tz: str) -> tuple[datetime, datetime]:
    y, m = (int(x) for x in month.split("-"))
    start = datetime(y, m, 1, tzinfo=ZoneInfo(tz))
    end = datetime(y + (m == 12), m % 12 + 1, 1, tzinfo=ZoneInfo(tz))
    return start, end


def cmd_report_usage(args: argparse.Namespace) -> int:
    from .usage import UsageStore

    cfg = _load_or_exit(args.config)
    store = UsageStore(f"sqlite:///{cfg.agent.state_dir / 'usage.sqlite'}")
    store.start()
    rows = []
    for s in cfg.servers:
        t = cfg.templates[s.template]
        start, end = _month_bounds(args.month, t.timezone)
        p95, n = store.p95_bps(s.id, start, end, t.billing_direction)  # type: ignore[arg-type]
        rows.append({"server": s.id, "customer": s.customer, "month": args.month,
                     "rule": t.billing_direction, "buckets": n,
                     "p95_bps": round(p95) if p95 is not None else None,
                     "cap_bps": cfg.cap_schedule(s).cap_at(end)})
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


def _api(args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """Call the running daemon's local API with the token from its state directory."""
    import urllib.error
    import urllib.request

    from .api import TOKEN_FILE

    cfg = _load_or_exit(args.config)
    token_path = cfg.agent.state_dir / TOKEN_FILE
    try:
        token = token_path.read_text().strip()
    except OSError as e:
        print(f"cannot read the API token {token_path}: {e.strerror} (is the daemon running?)", file=sys.stderr)
        raise SystemExit(2) from None
    url = f"http://{cfg.agent.api_listen}:{cfg.agent.api_port}{path}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=130) as r:
            doc: dict[str, Any] = json.loads(r.read())
            return doc
    except urllib.error.HTTPError as e:
        print(f"{method} {path}: {e.code} {json.loads(e.read() or b'{}').get('error', '')}", file=sys.stderr)
        raise SystemExit(1) from None
    except OSError as e:
        print(f"cannot reach the daemon at {url}: {e}", file=sys.stderr)
        raise SystemExit(2) from None


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
    if text and text[-1] in units:
        return float(text[:-1]) * units[text[-1]]
    return float(text)


def cmd_hold(args: argparse.Namespace) -> int:
    _print_status(_api(args, "POST", "/v1/hold", {"server": args.server, "seconds": _duration_s(args.duration),
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
    ru.add_argument("--month", required=True, help="YYYY-MM")
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
    h.add_argument("--for", dest="duration", required=True, help="e.g. 30m, 2h, 1d")
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
    args = build_parser().parse_args(argv)
    return int(args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
