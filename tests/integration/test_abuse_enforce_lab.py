"""Issue 4 in the lab, enforcing: a SPAN-seen flood is shut; a heavy legitimate download is not."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from rackwarden.agent.actions import ActionStore

from tests.integration.test_enforcement_lab import wait_for
from tests.lab.agentrun import free_port, lab_rig, start_agent, start_switch_cli, value, write_lab_config
from tests.lab.netlab import Lab
from tests.lab.sflow_exporter import start_sflow_exporter
from tests.lab.snmpd import IF_ADMIN_STATUS, start_snmpd
from tests.lab.span import LabSpan

pytestmark = pytest.mark.lab
ATTACKER, HEAVY, QUIET = 1, 2, 3


def span_detection(lab: Lab, servers: list[int]) -> str:
    mirrors = "".join(f"      - {{switch: sw1, port: {lab.port_name(i)}, ingress: ci{i}, egress: co{i}}}\n"
                      for i in servers)
    return f"detection:\n  span:\n    netns: {lab.switch_ns}\n    mirrors:\n{mirrors}"


ABUSE_GRACE_S = 5  # short, so the lab sees R9's grace period run out


def attack(lab: Lab, i: int, *args: str) -> subprocess.Popen[str]:
    return lab.spawn(lab.server_ns(i), [sys.executable, "-m", "tests.lab.attacks", *args],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def events(proc: subprocess.Popen[str], timeout: float = 60) -> list[dict[str, Any]]:
    out, err = proc.communicate(timeout=timeout)
    got = [json.loads(ln) for ln in out.splitlines() if ln.startswith("{")]
    assert got, err
    return got


def test_span_flood_is_detected_and_shut_and_a_heavy_download_is_not(tmp_path: Path) -> None:
    with lab_rig() as rig:
        lab = rig.lab(Lab(26, 3, replace_stale=True))
        rig.add(LabSpan(lab, [ATTACKER, HEAVY, QUIET]).start())
        snmp = start_snmpd(lab)
        sw_cli = rig.add(start_switch_cli(lab, tmp_path / "cli"))
        lab.spawn(lab.upstream_ns, [sys.executable, "-m", "tests.lab.attacks", "listeners", "--addrs",
                                    lab.upstream_ip, "--bulk-addr", lab.upstream_ip, "--bulk-rate-bps",
                                    "8000000", "--bulk-duration", "6", "--lifetime", "120"])
        port = free_port()
        cfg = write_lab_config(lab, snmp, tmp_path / "rw.yaml", state_dir=tmp_path / "state", interval_s=2,
                               window_s=10, metrics_port=port, mode="enforce", cli=sw_cli,
                               extra=span_detection(lab, [ATTACKER, HEAVY, QUIET]))
        agent = rig.add(start_agent(cfg, port, tmp_path / "agent.log"))
        time.sleep(3)

        download = attack(lab, HEAVY, "download", "--dst", lab.upstream_ip)
        flood = attack(lab, ATTACKER, "udp-flood", "--dst", lab.upstream_ip, "--pps", "20000", "--duration", "6")
        wait_for("the abuse shut", lambda: value(agent.scrape(), "rackwarden_enforcement_actions_total",
                                                 action="shut", reason="abuse", result="applied",
                                                 mode="enforce"), 20, agent)
        flood_events = events(flood)
        got = events(download)[-1]
        assert got["event"] == "done" and got["rate_bps"] > 6_000_000, got  # the download ran at full speed

        assert lab.link_admin_up(lab.port_name(ATTACKER)) is False
        assert snmp.get_int(f"{IF_ADMIN_STATUS}.{lab.if_index(lab.port_name(ATTACKER))}") == 2
        assert lab.link_admin_up(lab.port_name(HEAVY)) is True
        assert lab.link_admin_up(lab.port_name(QUIET)) is True
        m = agent.scrape()
        assert (value(m, "rackwarden_detections_total", detector="flood", server="srv-1") or 0) >= 1
        assert not [k for k in m if k[0] == "rackwarden_detections_total"
                    and dict(k[1]).get("server") in ("srv-2", "srv-3") and m[k] > 0], "innocent servers detected"
        assert (value(m, "rackwarden_capture_packets_total") or 0) > 10_000
        assert (value(m, "rackwarden_detection_latency_seconds_count") or 0) >= 1

        db = ActionStore(f"sqlite:///{tmp_path / 'state' / 'ledger.sqlite'}")
        db.start()
        assert [(a.server, a.reason, a.state) for a in db.actions()] == [("srv-1", "abuse", "APPLIED")]
        shut = next(a for a in db.audit_rows("srv-1") if a["decision"] == "shut")
        db.close()
        pcap = Path(next(r for r in shut["inputs"]["evidence"]["refs"] if r.endswith(".pcap")))
        assert pcap.is_file() and pcap.is_relative_to(tmp_path / "state" / "evidence" / "srv-1")
        from scapy.layers.inet import IP, UDP
        from scapy.utils import rdpcap

        pkts = rdpcap(str(pcap))
        assert sum(1 for p in pkts if IP in p and UDP in p and p[IP].src == lab.server_ip(ATTACKER)) >= 10
        assert any(e.get("event") == "start" for e in flood_events)


def sflow_detection(lab: Lab, port: int) -> str:
    return f"detection:\n  sflow: {{listen: {lab.noc_addr}, port: {port}}}\n"


def test_sflow_flood_is_detected_and_shut_and_a_heavy_download_is_not(tmp_path: Path) -> None:
    with lab_rig() as rig:
        lab = rig.lab(Lab(28, 3, replace_stale=True))
        snmp = start_snmpd(lab)
        sw_cli = rig.add(start_switch_cli(lab, tmp_path / "cli"))
        lab.spawn(lab.upstream_ns, [sys.executable, "-m", "tests.lab.attacks", "listeners", "--addrs",
                                    lab.upstream_ip, "--bulk-addr", lab.upstream_ip, "--bulk-rate-bps",
                                    "8000000", "--bulk-duration", "6", "--lifetime", "120"])
        port, sflow_port = free_port(), free_port()
        cfg = write_lab_config(lab, snmp, tmp_path / "rw.yaml", state_dir=tmp_path / "state", interval_s=2,
                               window_s=10, metrics_port=port, mode="enforce", cli=sw_cli,
                               extra=sflow_detection(lab, sflow_port))
        # The switch's sFlow agent address, as its datagrams will carry it.
        cfg.write_text(cfg.read_text().replace("    port_speed_mbps: 100\n",
                                               f"    port_speed_mbps: 100\n    sflow_agent: {lab.mgmt_addr}\n"))
        agent = rig.add(start_agent(cfg, port, tmp_path / "agent.log"))
        rig.add(start_sflow_exporter(lab, (lab.noc_addr, sflow_port), sampling_rate=16,
                                     ports=[ATTACKER, HEAVY, QUIET], counter_interval_s=2))
        time.sleep(4)  # first polls: the agent learns the ports' ifIndexes for sFlow attribution

        download = attack(lab, HEAVY, "download", "--dst", lab.upstream_ip)
        flood = attack(lab, ATTACKER, "udp-flood", "--dst", lab.upstream_ip, "--pps", "20000", "--duration", "8")
        wait_for("the abuse shut", lambda: value(agent.scrape(), "rackwarden_enforcement_actions_total",
                                                 action="shut", reason="abuse", result="applied",
                                                 mode="enforce"), 25, agent)
        events(flood)
        got = events(download)[-1]
        assert got["event"] == "done" and got["rate_bps"] > 6_000_000, got
        assert lab.link_admin_up(lab.port_name(ATTACKER)) is False
        assert lab.link_admin_up(lab.port_name(HEAVY)) is True
        m = agent.scrape()
        assert (value(m, "rackwarden_sflow_datagrams_total") or 0) > 50
        assert (value(m, "rackwarden_detections_total", detector="flood", server="srv-1") or 0) >= 1
        assert not [k for k in m if k[0] == "rackwarden_detections_total"
                    and dict(k[1]).get("server") in ("srv-2", "srv-3") and m[k] > 0], "innocent servers detected"
        assert not [k for k in m if k[0] == "rackwarden_sflow_decode_errors_total" and m[k] > 0]
        db = ActionStore(f"sqlite:///{tmp_path / 'state' / 'ledger.sqlite'}")
        db.start()
        assert [(a.server, a.reason, a.state) for a in db.actions()] == [("srv-1", "abuse", "APPLIED")]
        db.close()


def test_scan_spoof_and_spam_are_each_shut_on_their_own_port(tmp_path: Path) -> None:
    scanner, spoofer, spammer, innocent = 1, 2, 3, 4
    with lab_rig() as rig:
        lab = rig.lab(Lab(29, 4, replace_stale=True))
        rig.add(LabSpan(lab, [1, 2, 3, 4]).start())
        extra = [f"198.19.29.{h}" for h in range(100, 141)]  # 41 mail hosts in the upstream
        subprocess.run(["ip", "-n", lab.upstream_ns, "-batch", "-"], check=True, text=True,
                       input="".join(f"addr add {a}/32 dev eth0\n" for a in extra))
        listeners = lab.spawn(lab.upstream_ns, [sys.executable, "-m", "tests.lab.attacks", "listeners",
                                                "--addrs", *extra, "--lifetime", "120"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert listeners.stdout is not None and '"ready"' in listeners.stdout.readline()
        snmp = start_snmpd(lab)
        sw_cli = rig.add(start_switch_cli(lab, tmp_path / "cli"))
        port = free_port()
        cfg = write_lab_config(lab, snmp, tmp_path / "rw.yaml", state_dir=tmp_path / "state", interval_s=2,
                               window_s=10, metrics_port=port, mode="enforce", cli=sw_cli,
                               safety="{max_shuts_per_switch: 5, max_shuts_total: 5}",
                               rules=f"    abuse: {{grace_s: {ABUSE_GRACE_S}, restrict: {{spam: shut}}}}\n",
                               extra=span_detection(lab, [1, 2, 3, 4]))
        agent = rig.add(start_agent(cfg, port, tmp_path / "agent.log"))
        time.sleep(3)

        def shut(i: int) -> bool:
            return not lab.link_admin_up(lab.port_name(i))

        events(attack(lab, scanner, "scan", "--dst", lab.upstream_ip, "--ports", "600", "--pps", "600"))
        wait_for("the scanner's shut", lambda: shut(scanner), 20, agent)
        # The spoofer sends as the innocent server: the port it entered is what counts (R4).
        events(attack(lab, spoofer, "spoof", "--src", lab.server_ip(innocent), "--dst", lab.upstream_ip,
                      "--pps", "200", "--duration", str(ABUSE_GRACE_S + 8)))
        wait_for("the spoofer's shut", lambda: shut(spoofer), 30, agent)
        events(attack(lab, spammer, "spam", "--dsts", *extra))
        wait_for("the spammer's shut", lambda: shut(spammer), 40, agent)

        assert lab.link_admin_up(lab.port_name(innocent)) is True
        m = agent.scrape()
        assert (value(m, "rackwarden_detections_total", detector="scan", server="srv-1") or 0) >= 1
        assert (value(m, "rackwarden_detections_total", detector="spoof", server="srv-2") or 0) >= 1
        assert (value(m, "rackwarden_detections_total", detector="spam", server="srv-3") or 0) >= 1
        assert not [k for k in m if k[0] == "rackwarden_detections_total"
                    and dict(k[1]).get("server") == "srv-4" and m[k] > 0], "the spoofed victim was blamed"
        db = ActionStore(f"sqlite:///{tmp_path / 'state' / 'ledger.sqlite'}")
        db.start()
        # The link drops as the switch obeys; APPLIED follows once SNMP reads it back.
        wait_for("three read-backs", lambda: all(a.state != "PENDING" for a in db.actions()), 15, agent)
        assert sorted((a.server, a.reason, a.state) for a in db.actions()) == [
            ("srv-1", "abuse", "APPLIED"), ("srv-2", "abuse", "APPLIED"), ("srv-3", "abuse", "APPLIED")]
        audit = db.audit_rows()
        rules = {a["server"]: a["rule"] for a in audit if a["decision"] == "shut"}
        warned = {a["server"]: datetime.fromisoformat(a["at"]) for a in audit if a["decision"] == "notify_warning"}
        decided = {a.server: datetime.fromisoformat(a.created_at) for a in db.actions()}
        db.close()
        assert "scan" in rules["srv-1"] and "spoof" in rules["srv-2"] and "spam" in rules["srv-3"], rules
        # R9, none of these customers can be reached: the scanner (an attack on others) is cut
        # in the very step that learnt it; the spoofer and the spammer only after the grace.
        assert decided["srv-1"] == warned["srv-1"]
        for server in ("srv-2", "srv-3"):
            assert (decided[server] - warned[server]).total_seconds() >= ABUSE_GRACE_S, (server, warned, decided)
