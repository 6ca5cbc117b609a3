"""Shared deployment in the lab: two agents, one PostgreSQL; only the lease holder enforces."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.pg import PgCluster
from tests.integration.test_enforcement_lab import wait_for
from tests.lab.agentrun import free_port, lab_rig, start_agent, start_switch_cli, value, write_lab_config
from tests.lab.netlab import Lab
from tests.lab.snmpd import start_snmpd

pytestmark = pytest.mark.lab


def test_only_the_holder_enforces_and_the_standby_takes_over(tmp_path: Path) -> None:
    with lab_rig() as rig:
        pg = PgCluster()
        pg.start()
        rig.add(pg)
        lab = rig.lab(Lab(27, 2, replace_stale=True))
        agents = {}
        url = pg.create_database()
        snmp = start_snmpd(lab)
        sw_cli = rig.add(start_switch_cli(lab, tmp_path / "cli"))
        cfgs = {}
        for name in ("a", "b"):
            port, api = free_port(), free_port()
            cfgs[name] = write_lab_config(
                lab, snmp, tmp_path / f"{name}.yaml", state_dir=tmp_path / name, interval_s=2, window_s=4,
                metrics_port=port, api_port=api, mode="enforce", cli=sw_cli,
                rules="    overage: {grace_s: 2, term_s: 3600, restrict: {overage: shut}}\n",
                )
            text = cfgs[name].read_text().replace(
                "  record_polls: true\n",
                f"  record_polls: true\n  ledger_url: \"{url}\"\n  ha: {{holder: agent-{name}, renew_s: 0.5}}\n")
            cfgs[name].write_text(text)
            agents[name] = rig.add(start_agent(cfgs[name], port, tmp_path / f"{name}.log"))
            if name == "a":  # a holds the lease before b starts
                wait_for("a's lease",
                         lambda: value(agents["a"].scrape(), "rackwarden_ha_lease_held", switch="sw1") == 1, 20)
        assert value(agents["b"].scrape(), "rackwarden_ha_lease_held", switch="sw1") == 0

        heavy = lab.start_traffic(1, 15_000_000, 60)
        wait_for("the holder's shut", lambda: value(agents["a"].scrape(), "rackwarden_enforcement_actions_total",
                                                    action="shut", reason="overage", result="applied",
                                                    mode="enforce"), 30, agents["a"])
        assert lab.link_admin_up("p1") is False
        heavy.stop()
        # The standby saw the same overage and decided nothing: no notice, no action, no outage rows.
        mb = agents["b"].scrape()
        assert not [k for k in mb if k[0] == "rackwarden_enforcement_actions_total" and mb[k] > 0]
        assert (value(mb, "rackwarden_notices_total", stage="warning", result="unreachable") or 0) == 0

        agents["a"].proc.kill()  # kill -9: the session drops, PostgreSQL frees the advisory lock
        agents["a"].proc.wait(timeout=10)
        t0 = time.monotonic()
        wait_for("b's takeover", lambda: value(agents["b"].scrape(), "rackwarden_ha_lease_held", switch="sw1") == 1,
                 15, agents["b"])
        takeover_s = time.monotonic() - t0
        print(f"\ntakeover after kill -9: {takeover_s:.2f} s")

        # b adopted a's ladder state: it knows srv-1 is suspended and can restore it.
        st = json.loads(subprocess.run([sys.executable, "-m", "rackwarden.agent.cli", "status", "--json",
                                        "-c", str(cfgs["b"])], capture_output=True, text=True, check=True).stdout)
        s1 = next(s for s in st["servers"] if s["server"] == "srv-1")
        assert s1["ladder"]["overage"]["phase"] == "shut" and s1["last_action"]["state"] == "APPLIED"
        r = subprocess.run([sys.executable, "-m", "rackwarden.agent.cli", "restore", "srv-1", "-c", str(cfgs["b"])],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        assert lab.link_admin_up("p1") is True

        # One shared ledger: the outage a recorded, b closed; the chain verifies, no duplicates.
        time.sleep(3)
        out = subprocess.run([sys.executable, "-m", "rackwarden.agent.cli", "ledger", "list", "--config",
                              str(cfgs["b"]), "--outages", "--format", "json"], capture_output=True, text=True,
                             check=True).stdout
        rows = [json.loads(x) for x in out.splitlines() if x.strip()]
        assert [(o["server"], o["cause"], o["open"]) for o in rows] == [("srv-1", "overage", False)], rows
        v = subprocess.run([sys.executable, "-m", "rackwarden.agent.cli", "ledger", "verify", "--config",
                            str(cfgs["b"])], capture_output=True, text=True)
        assert v.returncode == 0, v.stdout + v.stderr
