"""Issue 12 in the lab, the whole agent: an overage throttled instead of shut, a spammer's mail blocked.

`rackwarden run` meters the lab switch over real snmpd, decides through the ladder with the
built-in `restrict` rules, and drives the CLI emulator over real OpenSSH (IOS and VRP). The
proof is what arrives upstream and what SNMP counts: the throttled server's traffic reaches the
upstream at the cap within two polls while its port stays up, the ledger holds restricted
time and no outage, and after the term, with the demand back under the cap, full rate returns.
A spammer seen on a SPAN port loses outbound SMTP while its HTTP from the same server still
arrives.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.test_abuse_enforce_lab import attack, events, span_detection
from tests.integration.test_enforcement_lab import wait_for
from tests.integration.test_restrictions_lab import CAP_BPS, FRAME, OFFERED_BPS, measure, oper_up
from tests.lab.agentrun import WebhookSink, free_port, lab_rig, start_agent, start_switch_cli, value, write_lab_config
from tests.lab.netlab import Lab
from tests.lab.snmpd import start_snmpd
from tests.lab.span import LabSpan

pytestmark = pytest.mark.lab

POLL_S = 2
TERM_S = 10


def ledger_kinds(state: Path) -> list[str]:
    c = sqlite3.connect(state / "ledger.sqlite")
    try:
        return [r[0] for r in c.execute("SELECT kind FROM ledger_entries ORDER BY seq")]
    finally:
        c.close()


def actions(state: Path) -> list[tuple[str, str]]:
    c = sqlite3.connect(state / "ledger.sqlite")
    try:
        return [(r[0], r[1]) for r in c.execute("SELECT action, state FROM actions ORDER BY id")]
    finally:
        c.close()


@pytest.mark.parametrize("flavour,net", [("ios", 48), ("vrp", 49)])
def test_an_overage_is_throttled_to_the_cap_not_shut_and_released_after_the_term(
        tmp_path: Path, flavour: str, net: int) -> None:
    with lab_rig() as rig:
        lab = rig.lab(Lab(net, 2, replace_stale=True))
        hook = rig.add(WebhookSink())
        snmp = start_snmpd(lab)
        sw_cli = rig.add(start_switch_cli(lab, tmp_path / "cli", flavour))
        port = free_port()
        state = tmp_path / "state"
        cfg = write_lab_config(lab, snmp, tmp_path / "rw.yaml", state_dir=state, interval_s=POLL_S, window_s=6,
                               metrics_port=port, mode="enforce", cli=sw_cli, webhook_url=hook.url,
                               rules=f"    overage: {{grace_s: 2, term_s: {TERM_S}}}\n")
        agent = rig.add(start_agent(cfg, port, tmp_path / "agent.log"))
        p1 = lab.port_name(1)

        heavy = lab.start_traffic(1, OFFERED_BPS, 90, FRAME)
        try:
            wait_for("the throttle of srv-1", lambda: value(
                agent.scrape(), "rackwarden_enforcement_actions_total", action="throttle", reason="overage",
                result="applied", mode="enforce"), 45, agent)
            applied_at = time.monotonic()
            # Within two polls of the change: the bucket drains, then the upstream gets the cap.
            time.sleep(0.6)
            during = measure(lab, snmp, 1, 2.5)
            assert time.monotonic() - applied_at <= 2 * POLL_S + 1.0
            cap = CAP_BPS if flavour == "ios" else 9_984_000  # VRP polices in 64 kbit/s steps
            burst = 125_000 if flavour == "ios" else cap // 8
            bound = cap / 8 * during.seconds + burst + 20 * FRAME
            assert during.sink_bytes <= bound, (during, bound)
            assert during.uplink_out <= bound + 10_000, (during, bound)
            assert during.bps(during.port_in) > 1.2 * cap, during  # the demand, still counted
            assert during.bps(during.sink_bytes) > 0.8 * cap, during  # policed, not cut
            assert lab.link_admin_up(p1) and oper_up(lab, p1)
            m = agent.scrape()
            assert value(m, "rackwarden_server_throttled", server="srv-1") == 1
            assert value(m, "rackwarden_server_enforcement_state", server="srv-1") == 3
            assert (value(m, "rackwarden_enforcement_actions_total", action="shut", reason="overage",
                          result="applied", mode="enforce") or 0) == 0
            assert "restriction_start" in ledger_kinds(state)
            assert "outage_start" not in ledger_kinds(state)  # throttled time is no outage
            # The term passes with the demand still over the cap: the throttle stays.
            time.sleep(TERM_S + POLL_S)
            assert value(agent.scrape(), "rackwarden_server_throttled", server="srv-1") == 1
            assert lab.link_admin_up(p1)
        finally:
            heavy.stop()
        wait_for("the unthrottle of srv-1", lambda: value(
            agent.scrape(), "rackwarden_enforcement_actions_total", action="unthrottle", reason="overage",
            result="applied", mode="enforce"), 40, agent)
        assert value(agent.scrape(), "rackwarden_server_throttled", server="srv-1") == 0
        # Full rate again: what the server sends arrives.
        burst_again = lab.start_traffic(1, OFFERED_BPS, 6, FRAME)
        try:
            time.sleep(0.5)
            after = measure(lab, snmp, 1, 2.0)
        finally:
            burst_again.stop()
        assert after.bps(after.port_in) > 1.2 * CAP_BPS, after
        assert after.sink_bytes > 0.85 * after.port_in, after
        kinds = ledger_kinds(state)
        assert kinds.count("restriction_start") == 1 and kinds.count("restriction_end") == 1
        assert "outage_start" not in kinds
        assert actions(state)[:2] == [("throttle", "APPLIED"), ("unthrottle", "APPLIED")]
        assert any("RackWardenThrottle" in str(e.get("name")) for e in hook.events), hook.events


def test_a_spammer_loses_outbound_mail_while_its_web_traffic_still_arrives(tmp_path: Path) -> None:
    spammer, other = 1, 2
    with lab_rig() as rig:
        lab = rig.lab(Lab(50, 2, replace_stale=True))
        rig.add(LabSpan(lab, [spammer, other]).start())
        mail_hosts = [f"198.19.50.{h}" for h in range(100, 141)]  # 41 mail hosts in the upstream
        subprocess.run(["ip", "-n", lab.upstream_ns, "-batch", "-"], check=True, text=True,
                       input="".join(f"addr add {a}/32 dev eth0\n" for a in mail_hosts))
        listeners = lab.spawn(lab.upstream_ns, [sys.executable, "-m", "tests.lab.attacks", "listeners",
                                                "--addrs", *mail_hosts, "--lifetime", "150"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert listeners.stdout is not None and '"ready"' in listeners.stdout.readline()
        snmp = start_snmpd(lab)
        sw_cli = rig.add(start_switch_cli(lab, tmp_path / "cli"))
        port = free_port()
        state = tmp_path / "state"
        cfg = write_lab_config(lab, snmp, tmp_path / "rw.yaml", state_dir=state, interval_s=2, window_s=10,
                               metrics_port=port, mode="enforce", cli=sw_cli,
                               rules="    abuse: {grace_s: 3}\n", extra=span_detection(lab, [spammer, other]))
        agent = rig.add(start_agent(cfg, port, tmp_path / "agent.log"))
        time.sleep(3)

        before = events(attack(lab, spammer, "spam", "--dsts", *mail_hosts))
        assert before[-1]["mails"] == len(mail_hosts), before  # every mail got out before the block
        wait_for("the block of srv-1's outbound mail", lambda: value(
            agent.scrape(), "rackwarden_enforcement_actions_total", action="block", reason="abuse",
            result="applied", mode="enforce"), 40, agent)

        after = events(attack(lab, spammer, "spam", "--dsts", *mail_hosts[:5]), timeout=90)
        assert after[-1]["mails"] == 0, after  # the fan-out stops at the switch
        probe = subprocess.run(
            ["ip", "netns", "exec", lab.server_ns(spammer), sys.executable, "-m", "tests.lab.traffic", "tcp",
             "--dst", mail_hosts[0], "--port", "80", "--count", "3", "--timeout-s", "2"],
            capture_output=True, text=True, timeout=60)
        assert '"connected": 3' in probe.stdout, probe.stdout + probe.stderr  # HTTP still arrives
        p1 = lab.port_name(spammer)
        assert lab.link_admin_up(p1) and oper_up(lab, p1)
        assert value(agent.scrape(), "rackwarden_server_service_blocked", server="srv-1", service="smtp") == 1
        kinds = ledger_kinds(state)
        assert "restriction_start" in kinds and "outage_start" not in kinds
        assert ("block", "APPLIED") in actions(state) and ("shut", "APPLIED") not in actions(state)
