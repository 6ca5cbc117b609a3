"""Issue 5 in the lab: a provider fault, an overage and a maintenance window, classed and credited."""

from __future__ import annotations

import calendar
import json
import math
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tests.integration.test_enforcement_lab import cli, wait_for
from tests.lab.agentrun import free_port, lab_rig, start_agent, start_switch_cli, value, write_lab_config
from tests.lab.netlab import Lab
from tests.lab.snmpd import start_snmpd

pytestmark = pytest.mark.lab
FEE = 80000  # fen, from write_lab_config


def links(lab: Lab, servers: list[int], up: bool) -> None:
    """Flip the server-side ends together: the switch ports lose carrier at the same instant."""
    procs = [subprocess.Popen(["ip", "-n", lab.server_ns(i), "link", "set", "eth0", "up" if up else "down"])
             for i in servers]
    for p in procs:
        assert p.wait(timeout=10) == 0


def iso(t: datetime) -> str:
    return t.replace(microsecond=0).isoformat()


def test_provider_fault_overage_and_maintenance_are_classed_and_credited(tmp_path: Path) -> None:
    with lab_rig() as rig:
        lab = rig.lab(Lab(25, 4, replace_stale=True))
        snmp = start_snmpd(lab)
        sw_cli = rig.add(start_switch_cli(lab, tmp_path / "cli"))
        port = free_port()
        cfg = write_lab_config(lab, snmp, tmp_path / "rw.yaml", state_dir=tmp_path / "state",
                               interval_s=1, window_s=3, metrics_port=port, mode="enforce", cli=sw_cli,
                               rules="    overage: {grace_s: 1, term_s: 3600, restrict: {overage: shut}}\n")
        agent = rig.add(start_agent(cfg, port, tmp_path / "agent.log"))
        time.sleep(3)  # baselines: every port seen up

        # 1. Provider fault: three ports lose carrier together (a line card), for ~5 s.
        links(lab, [1, 2, 4], up=False)
        time.sleep(5)
        links(lab, [1, 2, 4], up=True)
        time.sleep(3)

        # 2. srv-3 runs over its cap and is suspended (customer-caused, R2/R16), then restored.
        heavy = lab.start_traffic(3, 15_000_000, 30)
        wait_for("the overage shut", lambda: value(agent.scrape(), "rackwarden_enforcement_actions_total",
                                                   action="shut", reason="overage", result="applied",
                                                   mode="enforce"), 30, agent)
        heavy.stop()
        time.sleep(3)
        assert cli(cfg, "restore", "srv-3").returncode == 0
        time.sleep(2)

        # 3. Planned work, declared before it starts (rental: notice before the start is enough).
        # The ledger's own append time is when it was declared, so the start leaves room for the
        # CLI to start up on a busy machine: a window recorded after its start excuses nothing.
        now = datetime.now(UTC)
        start, end = now + timedelta(seconds=10), now + timedelta(seconds=22)
        r = subprocess.run([sys.executable, "-m", "rackwarden.agent.cli", "maintenance", "add", "--config", str(cfg),
                            "--start", iso(start), "--end", iso(end), "--kind", "planned", "--servers", "all",
                            "--notified-at", iso(now - timedelta(seconds=1)), "--reason", "line card swap"],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        while datetime.now(UTC) < start + timedelta(seconds=1):
            time.sleep(0.1)
        links(lab, [1, 2, 4], up=False)
        time.sleep(5)
        links(lab, [1, 2, 4], up=True)
        while datetime.now(UTC) < end + timedelta(seconds=1):
            time.sleep(0.2)

        month = datetime.now(ZoneInfo("Asia/Shanghai")).strftime("%Y-%m")
        rep = subprocess.run([sys.executable, "-m", "rackwarden.agent.cli", "report", "sla", "--config", str(cfg),
                              "--month", month, "--format", "json"], capture_output=True, text=True)
        assert rep.returncode == 0, rep.stdout + rep.stderr + agent.log()[-3000:]
        doc = json.loads(rep.stdout)
        servers = {s["id"]: s for s in doc["servers"]}
        outages = [(o["server"], o["class_in_month"], o["cause"]) for s in doc["servers"] for o in s["outages"]]

        # The three kinds, each in its class.
        assert ("srv-1", "provider", "ports_down_together") in outages, outages
        assert ("srv-3", "customer", "overage") in outages, outages
        assert ("srv-1", "maintenance", "ports_down_together") in outages, outages
        for sid in ("srv-1", "srv-2", "srv-4"):
            by = servers[sid]["seconds_by_class"]
            assert 3 <= by["provider"] <= 9 and 3 <= by["maintenance"] <= 9, (sid, by)
            assert by["customer"] == by["unknown"] == by["excluded"] == 0, (sid, by)
        s3 = servers["srv-3"]["seconds_by_class"]
        assert s3["customer"] > 0 and s3["provider"] == s3["maintenance"] == s3["unknown"] == 0, s3

        # Hand computation (R14): one provider outage of a few seconds = 1 hour;
        # credit = 2 × 1 h × fee / (24 × days in the month), rounded half-up once.
        y, m = (int(x) for x in month.split("-"))
        days = calendar.monthrange(y, m)[1]
        expected = math.floor(Fraction(2 * 1 * FEE, 24 * days) + Fraction(1, 2))
        assert servers["srv-1"]["credit_fen"] == expected, servers["srv-1"]
        assert servers["srv-3"]["credit_fen"] == 0
        # The chain the report rests on verifies.
        v = subprocess.run([sys.executable, "-m", "rackwarden.agent.cli", "ledger", "verify", "--config", str(cfg)],
                           capture_output=True, text=True)
        assert v.returncode == 0 and "ledger OK" in v.stdout, v.stdout + v.stderr
