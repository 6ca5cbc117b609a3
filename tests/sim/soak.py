"""A month in a minute: the whole agent on simulated switches for N days, then an offline audit.

`make soak` runs 30 simulated days; `tests/sim/test_soak.py` runs a short one in `make test`.
The same agent as tests/sim (agent/wiring.Runtime on simulated switches, fake clock), with a
seeded plan of what real networks do to it over weeks: daily traffic, switch reboots that
renumber ifIndex, SNMP agent restarts, zero replies, poll loss, Counter64 wraps, a line-card
fault, a fault inside a declared maintenance window, an overage suspension, config reloads and
restarts of RackWarden itself. At the end it checks that nothing drifted:

- every 5-minute usage bucket (octets and covered time) of every server, hence the month's 95th
  percentile, equals an offline recomputation from the raw polls the agent recorded
  (`record_polls`), played through a fresh metering service in one pass;
- every server's credit in `report sla` equals an independent recomputation from the ledger's
  outage records (rental R14/R20 arithmetic written out again here, in Fractions);
- `ledger verify` passes, no change was left PENDING, the enforcement state agrees
  (tests/sim's invariants), and no exception was logged;
- the process's resident memory after warm-up grows by no more than RSS_BOUND_MB.

It prints its figures and ends with one JSON line. Usage:
    python -m tests.sim.soak --days 30 [--seed 7] [--keep DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import random
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

from rackwarden.agent import wiring
from rackwarden.agent.config import Config
from rackwarden.agent.ledger import sla_report
from rackwarden.agent.metering import MeteringService
from rackwarden.agent.pollio import poll_from_json
from rackwarden.policies.billing import BucketPart, bucket_rate_bps, percentile_95

from tests.sim.runner import _EXCEPTIONS, _REAL_LOAD, Scenario, SimAgent, _sqlite_without_fsync
from tests.sim.switch import SimPoller

# RSS growth allowed between the end of day 1 and the end (SQLite page cache included);
# 30 days measured 1.2 MB.
RSS_BOUND_MB = 16
FEE_FEN = 72_000  # every server's monthly fee: 100 fen an hour in a 30-day month
START = datetime(2026, 11, 1, 0, 0, tzinfo=UTC)  # 08:00 in Asia/Shanghai; November has 30 days
SERVERS_PER_SWITCH = 6
POLL_S = 300  # the billing poll most IDCs run (MRTG's); 30 days = 8,640 polls a switch

CONFIG = """\
version: 1
agent: {{state_dir: "${{state_dir}}", mode: enforce, record_polls: true, timezone: UTC}}
notify:
  smtp: {{host: mail.sim.invalid, from: noc@idc.example}}
  alertmanager_url: http://alertmanager.sim.invalid:9093
enforcement:
  rules:
    overage: {{grace_s: 300, term_s: 3600, restrict: {{overage: shut}}}}
templates:
  rental: {{cap_mbps: 10, window_s: 300, credit: rental, timezone: UTC}}
switches:
  sw1:
    address: 192.0.2.1
    vendor: cisco_ios
    snmp: {{version: "2c", community: public}}
    ssh: {{username: rackwarden, password: sim}}
    interval_s: {poll}
    ports: ["Gi1/0/[1-8]"]
  sw2:
    address: 192.0.2.2
    vendor: huawei
    snmp: {{version: "2c", community: public}}
    ssh: {{username: rackwarden, password: sim}}
    interval_s: {poll}
    ports: ["GigabitEthernet0/0/[1-8]"]
servers:
{servers}"""


def _config(note: str = "") -> str:
    rows = []
    for sw, fmt in (("sw1", "Gi1/0/{}"), ("sw2", "GigabitEthernet0/0/{}")):
        for i in range(1, SERVERS_PER_SWITCH + 1):
            n = len(rows) + 1
            rows.append(f"  - {{id: srv-{n}, customer: cust-{n}, switch: {sw}, port: {fmt.format(i)}, "
                        f"ips: [198.51.100.{n}], template: rental, monthly_fee_fen: {FEE_FEN}, "
                        f"contacts: [noc@cust-{n}.example]}}\n")
    return CONFIG.format(poll=POLL_S, servers="".join(rows)) + (f"# {note}\n" if note else "")


@dataclass
class Plan:
    """What happens when, drawn once from the seed: (offset seconds, what, detail)."""

    days: int
    seed: int
    events: list[tuple[int, str, dict[str, Any]]] = field(default_factory=list)

    def build(self) -> Plan:
        rng = random.Random(self.seed)
        day = 86_400
        for d in range(self.days):
            base = d * day
            for h in range(0, 24, 2):  # a daily curve, new rates every two hours
                self.events.append((base + h * 3600, "traffic", {"hour": h, "day": d}))
            # Each kind of trouble recurs on its own cycle; the first three days see every kind.
            if d % 10 == 0:  # one customer runs over the cap for an hour: notice, grace, shut, term
                who = 1 + rng.randrange(SERVERS_PER_SWITCH * 2)
                self.events.append((base + 12 * 3600, "overage", {"server": who, "mbps": 25.0}))
                self.events.append((base + 13 * 3600, "overage", {"server": who, "mbps": None}))
            if d % 6 == 0:  # twenty minutes without SNMP answers from sw1
                self.events.append((base + 9 * 3600, "snmp", {"switch": "sw1", "fault": "timeout"}))
                self.events.append((base + 9 * 3600 + 1200, "snmp", {"switch": "sw1", "fault": "ok"}))
            if d % 7 == 1:  # sw2 reboots and renumbers its ifIndex
                self.events.append((base + 3 * 3600 + 17, "reboot", {"switch": "sw2", "reindex": True}))
            if d % 4 == 1:  # sw2's agent answers zeros for a poll
                self.events.append((base + 11 * 3600 + 30, "snmp", {"switch": "sw2", "fault": "zeros"}))
                self.events.append((base + 11 * 3600 + 30 + POLL_S, "snmp", {"switch": "sw2", "fault": "ok"}))
            if d % 3 == 1:
                self.events.append((base + 7 * 3600 + 13, "reload", {}))
            if d % 9 == 1:  # planned work on sw2, declared a day ahead; the fault stays inside it
                self.events.append((max(0, base - day + 3600), "window", {"start": base + 20 * 3600,
                                                                          "end": base + 22 * 3600}))
                self.events.append((base + 20 * 3600 + 600, "link", {"switch": "sw2", "ports": [4, 5, 6], "up": False}))
                self.events.append((base + 21 * 3600, "link", {"switch": "sw2", "ports": [4, 5, 6], "up": True}))
            if d % 5 == 2:  # sw1's SNMP agent restarts; the switch does not
                self.events.append((base + 5 * 3600 + 41, "agent_restart", {"switch": "sw1"}))
            if d % 8 == 2:  # a line card: three ports of sw1 lose carrier together for 2 h 10 min
                self.events.append((base + 14 * 3600 + 5, "link", {"switch": "sw1", "ports": [1, 2, 3], "up": False}))
                self.events.append((base + 16 * 3600 + 605, "link", {"switch": "sw1", "ports": [1, 2, 3], "up": True}))
            if d % 11 == 2:  # RackWarden itself is restarted (an upgrade)
                self.events.append((base + 15 * 3600 + 29, "restart", {}))
        self.events.sort(key=lambda e: e[0])
        self._rng = rng
        return self

    def rates(self, n: int, hour: int, day: int) -> tuple[float, float]:
        """Server n's out/in Mbit/s for a two-hour slot: a daily curve with noise, under the cap."""
        rng = random.Random(self.seed * 1_000_003 + n * 7919 + day * 31 + hour)
        curve = 0.5 + 0.5 * math.sin((hour - 8) / 24 * 2 * math.pi)
        return round(1 + 7 * curve * rng.uniform(0.6, 1.0), 3), round(0.5 + 4 * curve * rng.uniform(0.3, 1.0), 3)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


class Soak:
    def __init__(self, days: int, seed: int, tmp: Path) -> None:
        self.plan = Plan(days, seed).build()
        sc = Scenario("soak", tmp / "soak.yaml", "", START, _config(),
                      {"switches": {"sw1": {"octets_at_start": 2**64 - 2 * 10**9, "uptime_s": 300 * 86400.0},
                                    "sw2": {"first_if_index": 10101}},
                       "tick_s": 30}, [])
        self.agent = SimAgent(sc, tmp)
        self.tmp = tmp
        self.overage: dict[int, float] = {}
        self.restarts = 0
        self.reloads = 0
        self.rss: list[tuple[int, float]] = []

    def _ports(self, switch: str, numbers: list[int]) -> Iterator[str]:
        fmt = "Gi1/0/{}" if switch == "sw1" else "GigabitEthernet0/0/{}"
        return (fmt.format(i) for i in numbers)

    def _server_port(self, n: int) -> tuple[str, str]:
        if n <= SERVERS_PER_SWITCH:
            return "sw1", f"Gi1/0/{n}"
        return "sw2", f"GigabitEthernet0/0/{n - SERVERS_PER_SWITCH}"

    async def _restart_rackwarden(self) -> None:
        """systemctl restart: the process goes, a new one starts on the same state directory."""
        a = self.agent
        await a.rt.stop_core()
        cfg = a._adapt(_REAL_LOAD(a.config_path))
        a.rt = wiring.Runtime(cfg, a.config_path, a.clock, poller=SimPoller(a.world), driver_factory=a._driver,
                              notices_factory=a.rt._notices_factory, oncall_factory=a.rt._oncall_factory,
                              lease_factory=a._lease)
        await a.rt.start_core()
        a._schedule_polls()
        self.restarts += 1

    async def _do(self, what: str, d: dict[str, Any]) -> None:
        a = self.agent
        if what == "traffic":
            for n in range(1, 2 * SERVERS_PER_SWITCH + 1):
                out, inn = self.plan.rates(n, d["hour"], d["day"])
                if n in self.overage:
                    out = self.overage[n]
                sw, port = self._server_port(n)
                a.world.switch(sw).set_traffic(port, out_bps=out * 1e6, in_bps=inn * 1e6)
        elif what == "overage":
            sw, port = self._server_port(d["server"])
            if d["mbps"] is None:
                self.overage.pop(d["server"], None)
                a.world.switch(sw).set_traffic(port, out_bps=2e6)
            else:
                self.overage[d["server"]] = d["mbps"]
                a.world.switch(sw).set_traffic(port, out_bps=d["mbps"] * 1e6)
        elif what == "reboot":
            sw = a.world.switch(d["switch"])
            sw.reboot()
            if d.get("reindex"):
                for p in sw.ports.values():
                    p.if_index += 100
        elif what == "agent_restart":
            a.world.switch(d["switch"]).agent_restart()
        elif what == "snmp":
            a.world.switch(d["switch"]).snmp_fault = None if d["fault"] == "ok" else d["fault"]
        elif what == "link":
            for port in self._ports(d["switch"], d["ports"]):
                a.world.switch(d["switch"]).set_link(port, d["up"])
        elif what == "window":
            at = a.clock.at()
            a.rt.ledger.add_maintenance(kind="planned", start=START + timedelta(seconds=d["start"]),
                                        end=START + timedelta(seconds=d["end"]), notified_at=at,
                                        servers=[f"srv-{n}" for n in range(SERVERS_PER_SWITCH + 1,
                                                                           2 * SERVERS_PER_SWITCH + 1)],
                                        at=at, reason="soak: planned work", by="soak")
        elif what == "reload":
            self.reloads += 1
            await a.do_reload({"config": _config(f"reload {self.reloads}")})
        elif what == "restart":
            await self._restart_rackwarden()

    async def run(self) -> dict[str, Any]:
        a = self.agent
        await a.rt.start_core()
        await a.run_until(0)
        t0 = time.process_time()
        next_check = 3600
        for offset, what, detail in self.plan.events:
            while next_check <= offset:
                await a.run_until(next_check * 1000)
                a.check_invariants()
                if next_check % 86_400 == 0:
                    self.rss.append((next_check // 86_400, _rss_mb()))
                next_check += 3600
            await a.run_until(offset * 1000)
            await self._do(what, detail)
        end = self.plan.days * 86_400
        await a.run_until(end * 1000)
        a.check_invariants()
        self.rss.append((self.plan.days, _rss_mb()))
        cpu = time.process_time() - t0
        figures = self.audit()
        figures.update(cpu_s=round(cpu, 1), restarts=self.restarts, reloads=self.reloads)
        await a.rt.stop_core()
        return figures

    # -- the audit -----------------------------------------------------------------------------

    def _offline_buckets(self, cfg: Config) -> dict[str, dict[datetime, list[int]]]:
        """The raw recorded polls through one fresh metering service, in one pass per switch."""
        got: dict[str, dict[datetime, list[int]]] = {}

        def sink(server: str, parts: list[BucketPart]) -> None:
            for p in parts:
                b = got.setdefault(server, {}).setdefault(p.bucket_start, [0, 0, 0])
                b[0] += p.covered_ms
                b[1] += p.out_octets
                b[2] += p.in_octets

        service = MeteringService(cfg, usage_sink=sink)
        polls = []
        for f in sorted((self.agent.state_dir / "polls").glob("*.jsonl")):
            with f.open() as fh:
                polls += [poll_from_json(line) for line in fh if line.strip()]
        polls.sort(key=lambda p: p.at)  # the order the agent polled them in
        for poll in polls:
            service.ingest(poll)
        return got

    def audit(self) -> dict[str, Any]:
        a = self.agent
        cfg = a.config
        usage = a.rt.daemon.usage
        assert usage is not None
        offline = self._offline_buckets(cfg)
        month_start, month_end = START, START + timedelta(days=30)
        byte_mismatch: list[str] = []
        p95: dict[str, tuple[float | None, float | None]] = {}
        billed = 0
        for s in cfg.servers:
            live = {b[0]: [b[1], b[2], b[3]] for b in usage.buckets(s.id, month_start, month_end)}
            mine = offline.get(s.id, {})
            if live != mine:
                diff = sorted(k for k in set(live) | set(mine) if live.get(k) != mine.get(k))
                byte_mismatch.append(f"{s.id}: {len(diff)} buckets differ, first {diff[0].isoformat()}: "
                                     f"live {live.get(diff[0])} offline {mine.get(diff[0])}")
            billed += sum(v[1] + v[2] for v in live.values())
            rule = cfg.templates[s.template].billing_direction
            p95[s.id] = (usage.p95_bps(s.id, month_start, month_end, rule)[0],
                         percentile_95([bucket_rate_bps(o, i, c, rule) for c, o, i in mine.values() if c > 0]))
        p95_mismatch = [f"{sid}: live {lv} offline {ov}" for sid, (lv, ov) in p95.items() if lv != ov]

        now = a.clock.at()
        report = {r.server.id: r for r in sla_report(a.rt.ledger, cfg, "2026-11", now)}
        credit_mismatch = []
        credits = {}
        for s in cfg.servers:
            want = self._credit(s.id, now)
            credits[s.id] = report[s.id].credit_fen
            if report[s.id].credit_fen != want:
                credit_mismatch.append(f"{s.id}: report {report[s.id].credit_fen} fen, recomputed {want} fen "
                                       f"({report[s.id].month.reason})")
        verified = a.rt.ledger.verify()
        growth = self.rss[-1][1] - (self.rss[1][1] if len(self.rss) > 2 else self.rss[0][1])
        classes: dict[str, int] = {}
        for v in a.rt.ledger.outages(now=now):
            classes[v.outage_class] = classes.get(v.outage_class, 0) + 1
        seconds: dict[str, int] = {}
        for r in report.values():
            for c, n in r.month.seconds_by_class.items():
                seconds[c] = seconds.get(c, 0) + n
        return {
            "days": self.plan.days, "seed": self.plan.seed, "servers": len(cfg.servers),
            "polls": sum(sw.polls for sw in a.world.switches.values()),
            "billed_octets": billed,
            "bucket_mismatches": byte_mismatch, "p95_mismatches": p95_mismatch,
            "credit_mismatches": credit_mismatch, "credits_fen": credits,
            "outages_by_class": classes, "report_seconds_by_class": seconds,
            "actions": [f"{r.action} {r.server} {r.state}" for r in a.rt.actions.actions()],
            "ledger_ok": verified.ok, "ledger_entries": verified.entries,
            "failures": [str(f) for f in a.failures],
            "exceptions": [r.getMessage() for r in _EXCEPTIONS.records if r.exc_info],
            "rss_mb": [(d, round(m, 1)) for d, m in self.rss], "rss_growth_mb": round(growth, 1),
            "rss_bound_mb": RSS_BOUND_MB,
        }

    def _credit(self, server: str, now: datetime) -> int:
        """R14/R20 for one rental server-month, from the ledger's outage records alone.

        Provider time earns 2 × the hour's fee per started hour of each outage, summed, capped at
        the monthly fee, rounded half-up once. Time inside a maintenance window declared in time
        is not provider time; the plan keeps window faults wholly inside their windows.
        """
        a = self.agent
        windows = [w.window for w in a.rt.ledger.maintenance_windows()]
        hour_fee = Fraction(FEE_FEN, 24 * 30)
        total = Fraction(0)
        for v in a.rt.ledger.outages(server=server, now=now):
            if v.outage_class != "provider":
                continue
            end = v.end or now
            start = max(v.start, START)
            if any(w.covers(server) and w.start <= start and end <= w.end and not w.declared_after_start
                   for w in windows):
                continue
            seconds = int((end - start).total_seconds())
            if seconds > 0:
                total += math.ceil(seconds / 3600) * 2 * hour_fee
        total = min(total, Fraction(FEE_FEN))
        return int(total + Fraction(1, 2))  # half-up, once


def check(fig: dict[str, Any]) -> list[str]:
    problems = []
    for k in ("bucket_mismatches", "p95_mismatches", "credit_mismatches", "failures", "exceptions"):
        problems += [f"{k}: {m}" for m in fig[k]]
    if not fig["ledger_ok"]:
        problems.append("ledger verify failed")
    if fig["rss_growth_mb"] > RSS_BOUND_MB:
        problems.append(f"RSS grew {fig['rss_growth_mb']} MB after warm-up (bound {RSS_BOUND_MB} MB)")
    return problems


def run_soak(days: int, seed: int, tmp: Path) -> dict[str, Any]:
    """As tests/sim runs a scenario: every exception the agent logs is caught, SQLite skips fsync."""
    logger = logging.getLogger("rackwarden")
    _EXCEPTIONS.records.clear()
    logger.addHandler(_EXCEPTIONS)
    try:
        with _sqlite_without_fsync():
            return asyncio.run(Soak(days, seed, tmp).run())
    finally:
        logger.removeHandler(_EXCEPTIONS)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--keep", type=Path, help="keep the state directory here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # the agent's warnings (reboots, resets) are the plan's
    with tempfile.TemporaryDirectory() as td:
        tmp = args.keep or Path(td)
        tmp.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        fig = run_soak(args.days, args.seed, tmp)
        wall = time.monotonic() - t0
    problems = check(fig)
    print(f"soak: {fig['days']} simulated days, {fig['servers']} servers, {fig['polls']} polls "
          f"in {wall:.0f} s wall, {fig['cpu_s']} CPU-s ({fig['days'] * 86400 / max(wall, 1e-9):.0f}x real time)")
    print(f"  billed {fig['billed_octets']} octets; buckets and 95th percentile equal the offline "
          f"recomputation: {not fig['bucket_mismatches'] and not fig['p95_mismatches']}")
    print(f"  credits {sum(fig['credits_fen'].values())} fen in all, equal to the recomputation from the ledger: "
          f"{not fig['credit_mismatches']}; ledger outages by class {fig['outages_by_class']}, "
          f"report seconds by class {fig['report_seconds_by_class']}")
    print(f"  RackWarden restarts {fig['restarts']}, reloads {fig['reloads']}, actions {len(fig['actions'])}; "
          f"ledger verify {'ok' if fig['ledger_ok'] else 'FAILED'}")
    print(f"  RSS by day {fig['rss_mb']}: growth after day 1 {fig['rss_growth_mb']} MB "
          f"(bound {RSS_BOUND_MB} MB)")
    for p in problems:
        print(f"  PROBLEM {p}")
    print(json.dumps({"bench": "soak", "days": fig["days"], "servers": fig["servers"], "polls": fig["polls"],
                      "wall_s": round(wall, 1), "cpu_s": fig["cpu_s"], "billed_octets": fig["billed_octets"],
                      "credits_fen": sum(fig["credits_fen"].values()), "rss_growth_mb": fig["rss_growth_mb"],
                      "rss_bound_mb": RSS_BOUND_MB, "ok": not problems}))
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
