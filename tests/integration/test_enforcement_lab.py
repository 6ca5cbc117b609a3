"""Issue 3 in the lab: the daemon shuts an over-cap port over SSH (netmiko → sshd → CLI emulator)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rackwarden.agent.actions import ActionStore

from tests.lab.agentrun import (
    AgentProcess,
    WebhookSink,
    free_port,
    lab_rig,
    start_agent,
    start_switch_cli,
    value,
    write_lab_config,
)
from tests.lab.netlab import Lab
from tests.lab.snmpd import IF_ADMIN_STATUS, start_snmpd

pytestmark = pytest.mark.lab
OVERAGE_RULE = "    overage: {grace_s: 4, term_s: 600, restrict: {overage: shut}}\n"


def wait_for(what: str, cond: Callable[[], Any], timeout_s: float, agent: AgentProcess | None = None) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}" + (f"\n{agent.log()[-4000:]}" if agent else ""))


def cli(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rackwarden.agent.cli", *args, "-c", str(cfg)],
                          capture_output=True, text=True, timeout=150)


def forwarding(lab: Lab, i: int, seconds: float = 1.5) -> bool:
    """Does server i's traffic reach the upstream right now? Send a short burst and count."""
    before = lab.sink_received(lab.server_ip(i))
    lab.start_traffic(i, 1_000_000, seconds).wait(timeout=seconds + 10)
    time.sleep(0.3)
    return lab.sink_received(lab.server_ip(i)) > before


def test_enforce_shuts_an_over_cap_server_and_restore_brings_it_back(tmp_path: Path) -> None:
    with lab_rig() as rig:
        lab = rig.lab(Lab(22, 2, replace_stale=True))
        hook = rig.add(WebhookSink())
        snmp = start_snmpd(lab)
        sw_cli = rig.add(start_switch_cli(lab, tmp_path / "cli"))
        port = free_port()
        cfg = write_lab_config(lab, snmp, tmp_path / "rw.yaml", state_dir=tmp_path / "state",
                               interval_s=2, window_s=6, metrics_port=port, mode="enforce",
                               cli=sw_cli, rules=OVERAGE_RULE, webhook_url=hook.url)
        agent = rig.add(start_agent(cfg, port, tmp_path / "agent.log"))
        p1_index = lab.if_index("p1")
        assert forwarding(lab, 1)

        heavy = lab.start_traffic(1, 15_000_000, 40)
        light = lab.start_traffic(2, 5_000_000, 40)
        t0 = time.monotonic()
        wait_for("the shut of srv-1", lambda: value(agent.scrape(), "rackwarden_enforcement_actions_total",
                                                    action="shut", reason="overage", result="applied",
                                                    mode="enforce"), 40, agent)
        decided_s = time.monotonic() - t0
        # Window (6 s) + grace (4 s) at least; the port really stopped forwarding.
        assert decided_s >= 10, decided_s
        assert lab.link_admin_up("p1") is False
        assert snmp.get_int(f"{IF_ADMIN_STATUS}.{p1_index}") == 2
        rx = lab.port_counters("p1").rx_bytes
        received = lab.sink_received(lab.server_ip(1))
        time.sleep(2)
        assert lab.sink_received(lab.server_ip(1)) == received  # nothing gets through the bridge
        assert lab.port_counters("p1").rx_bytes == rx
        # The light server was never touched and still forwards.
        assert lab.link_admin_up("p2") is True
        light_before = lab.sink_received(lab.server_ip(2))
        time.sleep(1)
        assert lab.sink_received(lab.server_ip(2)) > light_before
        heavy.stop()
        light.stop()

        st = cli(cfg, "status", "--json")
        assert st.returncode == 0, st.stderr
        doc = json.loads(st.stdout)
        s1 = next(s for s in doc["servers"] if s["server"] == "srv-1")
        s2 = next(s for s in doc["servers"] if s["server"] == "srv-2")
        assert s1["ladder"]["overage"]["phase"] == "shut"
        assert s1["last_action"] == {**s1["last_action"], "action": "shut", "state": "APPLIED", "mode": "enforce"}
        assert s2["last_action"] is None
        m = agent.scrape()
        assert value(m, "rackwarden_server_enforcement_state", server="srv-1") == 2
        assert value(m, "rackwarden_server_enforcement_state", server="srv-2") == 0

        r = cli(cfg, "restore", "srv-1")
        assert r.returncode == 0, r.stdout + r.stderr
        assert lab.link_admin_up("p1") is True
        assert snmp.get_int(f"{IF_ADMIN_STATUS}.{p1_index}") == 1
        assert forwarding(lab, 1)

        store = ActionStore(f"sqlite:///{tmp_path / 'state' / 'ledger.sqlite'}")
        store.start()
        decisions = [(a["server"], a["decision"], a["result"].split(":")[0]) for a in store.audit_rows()]
        store.close()
        assert ("srv-1", "notify_warning", "unreachable") in decisions  # no SMTP configured: R9 records it
        assert ("srv-1", "shut", "APPLIED") in decisions
        assert ("srv-1", "restore", "APPLIED") in decisions
        assert not [d for d in decisions if d[0] == "srv-2"]
        # The emulator really received the IOS commands from netmiko.
        transcript = (tmp_path / "cli" / "cli.log").read_text()
        assert "interface GigabitEthernet0/1" in transcript and "shutdown" in transcript
        # On-call heard about both actions through the webhook.
        names = [str(e["name"]) for e in hook.events]
        assert any("RackWardenShut" in n for n in names), hook.events
        assert any("RackWardenRestore" in n for n in names), hook.events


def test_rails_in_the_lab_invalid_input_and_kill_9_between_pending_and_applied(tmp_path: Path) -> None:
    with lab_rig() as rig:
        lab = rig.lab(Lab(23, 2, replace_stale=True))
        snmp = start_snmpd(lab)
        sw_cli = rig.add(start_switch_cli(lab, tmp_path / "cli"))
        port = free_port()
        cfg = write_lab_config(lab, snmp, tmp_path / "rw.yaml", state_dir=tmp_path / "state",
                               interval_s=2, window_s=6, metrics_port=port, mode="enforce", cli=sw_cli)
        agent = rig.add(start_agent(cfg, port, tmp_path / "agent.log"))
        db = ActionStore(f"sqlite:///{tmp_path / 'state' / 'ledger.sqlite'}")
        db.start()

        # 1. The switch answers `% Invalid input`: FAILED, the port unchanged, the operator told.
        sw_cli.set_faults(reject_shutdown=True)
        r = cli(cfg, "suspend", "srv-1", "--reason", "operator", "--note", "lab rail test")
        assert r.returncode == 1, r.stdout + r.stderr
        (row,) = db.actions("srv-1")
        assert row.state == "FAILED" and "CommandRejected" in row.detail["error"]
        assert row.detail["snmp_admin"] == "up" and lab.link_admin_up("p1") is True
        assert value(agent.scrape(), "rackwarden_enforcement_actions_total", action="shut",
                     reason="operator", result="failed", mode="enforce") == 1

        # 2. kill -9 while the switch has made the change but not yet answered.
        sw_cli.set_faults(hang_after_shutdown_s=20)
        waiting = subprocess.Popen([sys.executable, "-m", "rackwarden.agent.cli", "suspend", "srv-2",
                                    "--reason", "nonpayment", "-c", str(cfg)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        rig.track(waiting.pid)
        pending = wait_for("the PENDING intent", lambda: [a for a in db.actions("srv-2") if a.state == "PENDING"],
                           30, agent)
        wait_for("the port to go down", lambda: lab.link_admin_up("p2") is False, 15, agent)
        agent.proc.kill()  # SIGKILL: no cleanup, no flush
        agent.proc.wait(timeout=10)
        waiting.wait(timeout=30)
        assert [a.state for a in db.actions("srv-2")] == ["PENDING"]

        sw_cli.set_faults()
        agent = rig.add(start_agent(cfg, port, tmp_path / "agent2.log"))
        rows = wait_for("reconciliation", lambda: [a for a in db.actions("srv-2") if a.state != "PENDING"], 20, agent)
        assert [(a.key, a.state) for a in rows] == [(pending[0].key, "APPLIED")]
        assert len(db.actions("srv-2")) == 1  # one record, now with a known state
        assert rows[0].detail["reconciled"] is True and rows[0].detail["snmp_admin"] == "down"
        assert "reconcile" in [a["decision"] for a in db.audit_rows("srv-2")]
        st = json.loads(cli(cfg, "status", "--json").stdout)
        s2 = next(s for s in st["servers"] if s["server"] == "srv-2")
        assert s2["ladder"]["nonpayment"]["phase"] == "shut" and s2["last_action"]["state"] == "APPLIED"
        assert lab.link_admin_up("p2") is False
        db.close()


def test_notify_mode_shuts_nothing_and_the_notice_reaches_the_smtp_server(tmp_path: Path) -> None:
    from email import message_from_bytes, policy

    from aiosmtpd.controller import Controller

    class Inbox:
        def __init__(self) -> None:
            self.messages: list[Any] = []

        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
            self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
            return "250 OK"

    inbox = Inbox()
    smtp_port = free_port()
    with lab_rig() as rig:
        smtp = Controller(inbox, hostname="127.0.0.1", port=smtp_port)
        smtp.start()
        rig.add(smtp)
        lab = rig.lab(Lab(24, 2, replace_stale=True))
        snmp = start_snmpd(lab)
        sw_cli = rig.add(start_switch_cli(lab, tmp_path / "cli"))
        port = free_port()
        cfg = write_lab_config(lab, snmp, tmp_path / "rw.yaml", state_dir=tmp_path / "state",
                               interval_s=2, window_s=6, metrics_port=port, mode="notify",
                               cli=sw_cli, smtp_port=smtp_port, rules=OVERAGE_RULE)
        agent = rig.add(start_agent(cfg, port, tmp_path / "agent.log"))
        heavy = lab.start_traffic(1, 15_000_000, 30)
        wait_for("the dry-run shut", lambda: value(agent.scrape(), "rackwarden_enforcement_actions_total",
                                                   action="shut", reason="overage", result="dryrun",
                                                   mode="notify"), 40, agent)
        wait_for("the warning", lambda: len(inbox.messages) >= 1, 10, agent)
        assert lab.link_admin_up("p1") is True
        assert sw_cli.sshd.connection_count() == 0  # the switch was never logged into
        received = lab.sink_received(lab.server_ip(1))
        time.sleep(1)
        assert lab.sink_received(lab.server_ip(1)) > received  # still forwarding
        heavy.stop()
        # A dry run suspends nothing, so no suspension is announced (and no restore later).
        assert [m["X-RackWarden-Key"] for m in inbox.messages] == ["srv-1:overage:1:warning"]
        warning = inbox.messages[0]
        assert warning["To"] == "noc-1@cust-1.example"
        body = warning.get_body(preferencelist=("plain",)).get_content()
        assert "srv-1" in body and "+08:00" in body
        assert any("\u4e00" <= ch <= "\u9fff" for ch in body)  # the Chinese text is there
        assert "Mbit/s" in body
        assert warning["X-RackWarden-Key"] == "srv-1:overage:1:warning"
        assert value(agent.scrape(), "rackwarden_notices_total", stage="warning", result="delivered") == 1
