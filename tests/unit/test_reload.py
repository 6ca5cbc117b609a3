"""SIGHUP reaches everything that holds the config: the enforcer's modes and rails, the detectors'
exemptions, the switch drivers. Runtime is built for real (its constructor does no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from rackwarden.agent import config as configmod
from rackwarden.agent.clock import FakeClock
from rackwarden.agent.wiring import Runtime
from rackwarden.policies.detect import SCAN, SPAM

CONFIG = """\
version: 1
agent: {{state_dir: "{state}", mode: notify}}
templates:
  rental: {{cap_mbps: 10, credit: rental}}
switches:
  sw1:
    address: 192.0.2.2
    vendor: cisco_ios
    snmp: {{version: "2c", community: public}}
    ssh: {{username: rw, password: secret}}
    ports: ["Gi0/[1-4]"]
    protected_ports: [Gi0/4]
    sflow_agent: 192.0.2.2
detection:
  sflow: {{listen: 127.0.0.1, port: 16343}}
servers:
  - {{id: srv-a, customer: c1, switch: sw1, port: Gi0/1, ips: [192.0.2.11], template: rental,
     monthly_fee_fen: 80000{extra}}}
"""
NOW = datetime(2026, 11, 22, 2, 0, tzinfo=UTC)


def write(path: Path, tmp: Path, *, mode: str = "notify", extra: str = "", address: str = "192.0.2.2") -> None:
    text = CONFIG.format(state=tmp / "state", extra=extra).replace("mode: notify", f"mode: {mode}")
    path.write_text(text.replace("address: 192.0.2.2", f"address: {address}"))


def test_a_good_reload_reaches_the_enforcer_and_the_detectors(tmp_path: Path) -> None:
    path = tmp_path / "rw.yaml"
    write(path, tmp_path)
    rt = Runtime(configmod.load(path), path, clock=FakeClock(NOW))
    assert rt.abuse is not None
    driver = rt.enforcer.switches["sw1"]
    assert rt.enforcer._mode("overage") == "notify"
    assert not rt.abuse.detector.exempted("srv-a", SCAN, NOW)

    exemption = (', exemptions: [{detectors: [scan], until: "2026-11-23T00:00:00+08:00",'
                 ' reason: "booked pentest, ticket 4711"}]')
    write(path, tmp_path, mode="enforce", extra=exemption)
    assert rt.daemon.reload() is True
    assert rt.enforcer._mode("overage") == "enforce"
    assert rt.enforcer.config is rt.daemon.config
    assert rt.abuse.detector.exempted("srv-a", SCAN, NOW)
    assert not rt.abuse.detector.exempted("srv-a", SPAM, NOW)
    # Until midnight in +08:00, that is 16:00Z.
    assert not rt.abuse.detector.exempted("srv-a", SCAN, datetime(2026, 11, 22, 16, 0, tzinfo=UTC))
    assert rt.enforcer.switches["sw1"] is driver  # unchanged switch: the same driver (and lock)

    write(path, tmp_path, mode="enforce", extra=exemption, address="192.0.2.3")
    assert rt.daemon.reload() is True
    assert rt.enforcer.switches["sw1"] is not driver  # new address: a new driver

    # A bad reload changes nothing anywhere.
    path.write_text(path.read_text().replace("mode: enforce", "mode: sometimes"))
    assert rt.daemon.reload() is False
    assert rt.enforcer._mode("overage") == "enforce"


def test_exemptions_are_checked_like_the_rest_of_the_config(tmp_path: Path) -> None:
    path = tmp_path / "rw.yaml"
    write(path, tmp_path, extra=', exemptions: [{detectors: [scan, mining], until: "soon", reason: " "},'
                                ' {detectors: all, until: 2026-12-01}]')
    with pytest.raises(configmod.ConfigError) as info:
        configmod.load(path)
    lines = info.value.issues
    issues = "\n".join(lines)
    assert "servers[srv-a].exemptions[0].detectors: unknown detector 'mining'" in issues
    assert "servers[srv-a].exemptions[0].until: 'soon' is not a date" in issues
    assert "servers[srv-a].exemptions[0].reason: say why" in issues
    assert "servers[srv-a].exemptions[1].reason: required key missing" in issues
    assert all(line.startswith(f"{path}:") for line in lines)
