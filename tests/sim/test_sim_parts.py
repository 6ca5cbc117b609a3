"""The sim's own parts: vendor CLIs driven by the real renderers, counters, the shared lease."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from rackwarden.agent import config as configmod
from rackwarden.agent.clock import FakeClock
from rackwarden.drivers.switch import huawei, juniper_junos
from rackwarden.drivers.switch.base import CommandRejected, InvalidPortName, SessionDropped

from .edges import LeaseTable, SimLease
from .switch import SimPoller, SimSwitchDriver, SimWorld

T0 = datetime(2026, 11, 1, tzinfo=UTC)
PORTS = {
    "cisco_ios": ("Gi0/[1-2]", "Gi0/1"),
    "arista_eos": ("Ethernet[1-2]", "Ethernet1"),
    "huawei": ("GigabitEthernet0/0/[1-2]", "GigabitEthernet0/0/1"),
    "hp_comware": ("GigabitEthernet1/0/[1-2]", "GigabitEthernet1/0/1"),
    "juniper_junos": ("ge-0/0/[1-2]", "ge-0/0/1"),
}


def switch_config(vendor: str, save: bool = False) -> configmod.SwitchConfig:
    spec, _ = PORTS[vendor]
    cfg = configmod.loads(f"""
version: 1
agent: {{state_dir: /nonexistent}}
templates: {{rental: {{cap_mbps: 10, credit: rental}}}}
switches:
  sw:
    address: 192.0.2.2
    vendor: {vendor}
    snmp: {{version: "2c", community: public}}
    ssh: {{username: rw, password: sim, save_config: {str(save).lower()}}}
    ports: ["{spec}"]
servers: []
""")
    return cfg.switches["sw"]


def rig(vendor: str, save: bool = False) -> tuple[SimWorld, SimSwitchDriver, str]:
    cfg = switch_config(vendor, save)
    world = SimWorld(FakeClock(T0))
    return world, SimSwitchDriver(world.ensure(cfg), cfg), PORTS[vendor][1]


@pytest.mark.parametrize("vendor", sorted(PORTS))
@pytest.mark.parametrize("save", [False, True])
def test_every_vendor_shuts_and_restores_through_its_own_renderer_and_parser(vendor: str, save: bool) -> None:
    world, driver, port = rig(vendor, save)
    p = world.switches["sw"].ports[port]
    r = asyncio.run(driver.shut(port))
    assert (p.admin, p.forwarding, r.cli_admin, r.agrees) == ("down", False, "down", True)
    assert r.saved is (True if save and driver.cli.SAVE is not None else None)
    r = asyncio.run(driver.restore(port))
    assert (p.admin, p.forwarding, r.cli_admin) == ("up", True, "up")
    assert asyncio.run(driver.read_admin_state(port)).admin == "up"


def test_a_wrong_renderer_breaks_the_sim(monkeypatch: pytest.MonkeyPatch) -> None:
    world, driver, port = rig("huawei")
    asyncio.run(driver.shut(port))
    monkeypatch.setattr(huawei, "render_restore", lambda name: (f"interface {name}", "no shutdown"))  # IOS syntax
    with pytest.raises(CommandRejected):
        asyncio.run(driver.restore(port))
    assert world.switches["sw"].ports[port].admin == "down"


def test_junos_changes_take_effect_at_the_commit_only() -> None:
    world, driver, port = rig("juniper_junos")
    world.switches["sw"].cli_fault = "drop_after_change"
    with pytest.raises(SessionDropped):
        asyncio.run(driver.shut(port))
    assert world.switches["sw"].ports[port].admin == "up"  # the private candidate died uncommitted


def test_junos_rejects_a_misspelt_statement(monkeypatch: pytest.MonkeyPatch) -> None:
    world, driver, port = rig("juniper_junos")
    monkeypatch.setattr(juniper_junos, "render_shut", lambda name: (f"set interfaces {name} shutdown",))
    with pytest.raises(CommandRejected):
        asyncio.run(driver.shut(port))
    assert world.switches["sw"].ports[port].admin == "up"


def test_the_driver_refuses_ports_outside_the_inventory_before_any_session() -> None:
    world, driver, _ = rig("cisco_ios")
    with pytest.raises(InvalidPortName):
        asyncio.run(driver.shut("Gi0/7"))
    assert world.switches["sw"].transcript == []


def test_counters_follow_the_traffic_and_stop_when_the_port_does_not_forward() -> None:
    world, driver, port = rig("cisco_ios")
    sw, clock = world.switches["sw"], world.clock
    sw.set_traffic("Gi0/1", out_bps=8_000_000, in_bps=16_000_000)
    poller = SimPoller(world)
    target = SimpleNamespace(name="sw", host="192.0.2.2", port=161, timeout_s=2.0, retries=1,
                             community=SimpleNamespace(reveal=lambda: "public"))
    first = asyncio.run(poller.poll(target))
    clock.advance(60)
    second = asyncio.run(poller.poll(target))
    a, b = first.ports["Gi0/1"], second.ports["Gi0/1"]
    assert a.in_octets is not None and a.out_octets is not None and b.in_octets is not None and b.out_octets is not None
    assert (b.in_octets - a.in_octets, b.out_octets - a.out_octets) == (60_000_000, 120_000_000)
    assert first.sys_uptime_ticks is not None and second.sys_uptime_ticks is not None
    assert second.sys_uptime_ticks - first.sys_uptime_ticks == 6000
    asyncio.run(driver.shut(port))
    clock.advance(60)
    third = asyncio.run(poller.poll(target))
    assert third.ports["Gi0/1"].in_octets == b.in_octets and third.ports["Gi0/1"].admin == "down"
    sw.snmp_fault = "timeout"
    assert asyncio.run(poller.poll(target)).error == "timeout"


def test_the_shared_lease_holds_only_its_keys_and_one_holder_per_key() -> None:
    clock = FakeClock(T0)
    table = LeaseTable()
    a = SimLease(table, holder="a", clock=clock, keys=["sw1"])
    b = SimLease(table, holder="b", clock=clock, keys=["sw1", "sw2"])
    asyncio.run(a.start())
    asyncio.run(b.start())
    assert (a.held("sw1"), a.held("sw2"), b.held("sw1"), b.held("sw2")) == (True, False, False, True)
    a.set_keys(["sw1", "sw3"])
    assert not a.held("sw3")  # until the next renewal
    asyncio.run(a.refresh())
    assert a.held("sw3")
    table.force("sw1", "b")
    a.blind_until = clock.now() + 10
    assert a.held("sw1") and not asyncio.run(a.confirm("sw1"))
    asyncio.run(a.refresh())
    assert a.held("sw1")  # it has not noticed yet
    clock.advance(10)
    asyncio.run(a.refresh())
    assert not a.held("sw1") and a.lost_total == 1
