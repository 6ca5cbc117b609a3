"""Graceful restrictions in the sim (issue 12): every vendor's real renderer typed into its
simulated CLI, read back with its real parser, and the effect on the simulated traffic.

Demand and forwarding are measured apart, as on a switch: ifHCInOctets (through the agent's own
IF-MIB parser) counts all the server sent; `forwarded_octets` is what went on upstream.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from rackwarden.agent import config as configmod
from rackwarden.agent.clock import FakeClock
from rackwarden.drivers.switch import huawei
from rackwarden.drivers.switch.base import CommandRejected, SessionDropped
from rackwarden.drivers.switch.restrictions import RestrictionRefused, restriction_cli

from .switch import SimError, SimPoller, SimPort, SimSwitch, SimSwitchDriver, SimWorld
from .test_sim_parts import PORTS, T0, switch_config

VENDORS = {**PORTS, "linux": ("p[1-2]", "p1")}
CAP = 10_000_000
MINUTE = 60.0


def rig(vendor: str, save: bool = False) -> tuple[SimWorld, SimSwitch, SimSwitchDriver, str, SimPort]:
    spec, port = VENDORS[vendor]
    cfg = switch_config(vendor, save) if vendor in PORTS else linux_config(spec)
    world = SimWorld(FakeClock(T0))
    sw = world.ensure(cfg)
    driver = SimSwitchDriver(sw, cfg)
    # The inventory names the CLI spelling here, so the sim port is found by its CLI name.
    p = sw.port_by_cli(port)
    assert p is not None
    return world, sw, driver, port, p


def linux_config(spec: str) -> configmod.SwitchConfig:
    """The lab's Linux "switch" (test_sim_parts covers the switch vendors)."""
    cfg = configmod.loads(f"""
version: 1
agent: {{state_dir: /nonexistent}}
templates: {{rental: {{cap_mbps: 10, credit: rental}}}}
switches:
  sw:
    address: 192.0.2.2
    vendor: linux
    snmp: {{version: "2c", community: public}}
    ssh: {{username: rw, password: sim}}
    ports: ["{spec}"]
servers: []
""")
    return cfg.switches["sw"]


def if_in_octets(world: SimWorld, p: SimPort) -> int:
    """ifHCInOctets of the port as the agent's poller reads it."""
    target = SimpleNamespace(name="sw", host="192.0.2.2", port=161, timeout_s=2.0, retries=1,
                             community=SimpleNamespace(reveal=lambda: "public"))
    poll = asyncio.run(SimPoller(world).poll(target))
    octets = poll.ports[p.name].in_octets
    assert octets is not None
    return octets


def over_a_minute(world: SimWorld, p: SimPort) -> tuple[int, float, float]:
    """(ifIn octets, forwarded octets, forwarded SMTP octets) the port adds in one minute."""
    in0, fw0, smtp0 = if_in_octets(world, p), p.forwarded_octets, p.forwarded_smtp_octets
    world.clock.advance(MINUTE)
    return if_in_octets(world, p) - in0, p.forwarded_octets - fw0, p.forwarded_smtp_octets - smtp0


@pytest.mark.parametrize("vendor", sorted(VENDORS))
def test_throttle_caps_what_the_port_forwards_while_ifin_counts_the_demand(vendor: str) -> None:
    world, sw, driver, port, p = rig(vendor)
    sw.set_traffic(p.name, out_bps=15_000_000, in_bps=2_000_000)
    assert over_a_minute(world, p)[:2] == (15_000_000 * 60 // 8, 15_000_000 * 60 / 8)

    r = asyncio.run(driver.throttle(port, CAP))
    assert r.rate is not None and r.rate.applied_bps <= CAP
    assert (r.action, r.reading.state, r.reading.rate_bps, r.agrees) == ("throttle", "present", r.rate.applied_bps,
                                                                          True)
    assert p.policer_bps == r.rate.applied_bps and (p.admin, p.forwarding) == ("up", True)
    demand, forwarded, _ = over_a_minute(world, p)
    assert demand == 15_000_000 * 60 // 8  # input counters count frames before the policer drops them
    assert 0 < forwarded <= r.rate.applied_bps * MINUTE / 8
    assert forwarded == pytest.approx(r.rate.applied_bps * MINUTE / 8)
    again = asyncio.run(driver.read_restriction(port, "throttle"))
    assert (again.state, again.rate_bps) == ("present", r.rate.applied_bps)

    r = asyncio.run(driver.unthrottle(port))
    assert (r.reading.state, r.agrees, p.throttled) == ("absent", True, False)
    assert over_a_minute(world, p)[1] == pytest.approx(15_000_000 * MINUTE / 8)
    assert asyncio.run(driver.read_restriction(port, "throttle")).state == "absent"


@pytest.mark.parametrize("vendor", sorted(VENDORS))
def test_block_smtp_stops_the_smtp_share_and_the_rest_passes(vendor: str) -> None:
    world, sw, driver, port, p = rig(vendor)
    sw.set_traffic(p.name, out_bps=8_000_000, smtp_bps=2_000_000)
    assert asyncio.run(driver.read_restriction(port, "block", "smtp")).state == "absent"

    r = asyncio.run(driver.block_service(port, "smtp"))
    assert (r.action, r.service, r.reading.state, r.agrees) == ("block", "smtp", "present", True)
    assert p.blocked_tcp == {25, 465, 587} and not p.forwards_tcp(25) and p.forwards_tcp(80)
    demand, forwarded, smtp = over_a_minute(world, p)
    assert (demand, smtp) == (8_000_000 * 60 // 8, 0.0)
    assert forwarded == pytest.approx(6_000_000 * MINUTE / 8)
    assert (p.forwarded_smtp_bps, p.forwarded_other_bps) == (0.0, 6_000_000)

    r = asyncio.run(driver.unblock_service(port, "smtp"))
    assert (r.reading.state, r.agrees, p.forwards_tcp(25)) == ("absent", True, True)
    _, forwarded, smtp = over_a_minute(world, p)
    assert (forwarded, smtp) == (pytest.approx(8_000_000 * MINUTE / 8), pytest.approx(2_000_000 * MINUTE / 8))


@pytest.mark.parametrize("vendor", sorted(VENDORS))
def test_throttle_and_block_live_side_by_side_and_come_off_one_at_a_time(vendor: str) -> None:
    world, sw, driver, port, p = rig(vendor)
    sw.set_traffic(p.name, out_bps=15_000_000, smtp_bps=3_000_000)
    asyncio.run(driver.block_service(port, "smtp"))
    t = asyncio.run(driver.throttle(port, CAP))
    assert t.agrees and asyncio.run(driver.read_restriction(port, "block", "smtp")).state == "present"
    assert t.rate is not None and p.forwarded_out_bps == t.rate.applied_bps and p.forwarded_smtp_bps == 0.0
    u = asyncio.run(driver.unthrottle(port))
    assert u.agrees and asyncio.run(driver.read_restriction(port, "block", "smtp")).state == "present"
    assert (p.forwarded_out_bps, p.forwarded_smtp_bps) == (12_000_000, 0.0)
    b = asyncio.run(driver.unblock_service(port, "smtp"))
    assert b.agrees and (p.forwarded_out_bps, p.throttled, p.blocked_tcp) == (15_000_000, False, frozenset())


@pytest.mark.parametrize("vendor", sorted(VENDORS))
def test_a_platform_without_the_policer_fails_the_throttle(vendor: str) -> None:
    world, sw, driver, port, p = rig(vendor)
    sw.set_traffic(p.name, out_bps=15_000_000)
    sw.cli_fault = "refuse_throttle"
    with pytest.raises(CommandRejected) as info:
        asyncio.run(driver.throttle(port, CAP))
    # The device's own refusal travels in the error (old Comware: `% Unrecognized command`).
    assert info.value.detail == sw.transcript[-1][2] != ""
    assert (p.throttled, p.forwarded_out_bps, driver.calls[-1].outcome) == (False, 15_000_000, "CommandRejected")
    sw.cli_fault = None
    assert asyncio.run(driver.read_restriction(port, "throttle")).state == "absent"


def test_old_comware_refuses_qos_lr_inbound_as_the_real_one_does() -> None:
    world, sw, driver, port, p = rig("hp_comware")
    sw.cli_fault = "refuse_throttle"
    with pytest.raises(CommandRejected) as info:
        asyncio.run(driver.throttle(port, CAP))
    typed, answer = sw.transcript[-1][1:]
    assert typed.startswith("qos lr inbound cir ") and "% Unrecognized command found at '^' position." in answer
    assert info.value.outcome_unknown  # the effect line itself: the driver cannot tell, it must read back


@pytest.mark.parametrize("vendor", sorted(VENDORS))
def test_a_platform_without_the_acl_fails_the_block(vendor: str) -> None:
    world, sw, driver, port, p = rig(vendor)
    sw.cli_fault = "refuse_block"
    with pytest.raises(CommandRejected):
        asyncio.run(driver.block_service(port, "smtp"))
    assert p.blocked_tcp == frozenset()


@pytest.mark.parametrize("vendor", sorted(VENDORS))
def test_drop_faults_on_a_throttle_leave_the_outcome_known_or_unknown(vendor: str) -> None:
    world, sw, driver, port, p = rig(vendor)
    sw.cli_fault = "drop_before_change"
    with pytest.raises(SessionDropped) as before:
        asyncio.run(driver.throttle(port, CAP))
    assert not before.value.outcome_unknown and not p.throttled
    sw.cli_fault = "drop_after_change"
    with pytest.raises(SessionDropped) as after:
        asyncio.run(driver.throttle(port, CAP))
    assert after.value.outcome_unknown
    sw.cli_fault = None
    # Whatever the effect line did (Junos: nothing until the commit), a read-back tells it.
    reading = asyncio.run(driver.read_restriction(port, "throttle"))
    assert reading.state == ("present" if p.throttled else "absent")
    # The effect line attaches the policer on VRP, Comware and Linux; on IOS/EOS it is the
    # `police` line of a policy-map not yet attached (it changes the rate of one that is), and on
    # Junos nothing happens before the commit.
    assert p.throttled is (vendor in ("huawei", "hp_comware", "linux"))


@pytest.mark.parametrize("vendor", sorted(VENDORS))
def test_a_locked_configuration_refuses_restrictions_as_it_refuses_a_shut(vendor: str) -> None:
    world, sw, driver, port, p = rig(vendor)
    sw.cli_fault = "reject"
    with pytest.raises(CommandRejected):
        asyncio.run(driver.throttle(port, CAP))
    with pytest.raises(CommandRejected):
        asyncio.run(driver.block_service(port, "smtp"))
    assert (p.throttled, p.blocked_tcp) == (False, frozenset())


@pytest.mark.parametrize("vendor", sorted(VENDORS))
def test_what_the_vendor_cannot_render_is_refused_before_any_session(vendor: str) -> None:
    world, sw, driver, port, p = rig(vendor)
    with pytest.raises(RestrictionRefused):
        asyncio.run(driver.throttle(port, 1000))  # below every vendor's policer minimum
    with pytest.raises(RestrictionRefused):
        asyncio.run(driver.block_service(port, "ftp"))
    with pytest.raises(RestrictionRefused):
        asyncio.run(driver.read_restriction(port, "block", "ftp"))
    assert sw.transcript == []


def test_a_rate_the_vendor_rounds_is_enforced_as_rounded_down() -> None:
    world, sw, driver, port, p = rig("huawei")
    sw.set_traffic(p.name, out_bps=15_000_000)
    r = asyncio.run(driver.throttle(port, CAP))
    assert r.rate is not None and r.rate.rounded and r.rate.applied_bps == 9_984_000  # 64 kbit/s steps
    assert (r.reading.rate_bps, p.forwarded_out_bps) == (9_984_000, 9_984_000)


def test_a_wrong_restriction_renderer_breaks_the_sim(monkeypatch: pytest.MonkeyPatch) -> None:
    world, sw, driver, port, p = rig("huawei")
    rcli = restriction_cli(driver.cli)
    good = rcli.render_throttle(port, CAP)
    bad = type(good)(lines=(good.lines[0], "qos car inbound cir 9984"), effect_index=1, rate=good.rate)
    monkeypatch.setattr(huawei, "render_throttle", lambda name, rate: bad)
    with pytest.raises(CommandRejected):
        asyncio.run(driver.throttle(port, CAP))
    assert not p.throttled


def test_a_restriction_survives_a_reboot_only_when_saved() -> None:
    world, sw, driver, port, p = rig("cisco_ios")
    asyncio.run(driver.throttle(port, CAP))
    sw.reboot()
    assert not p.throttled
    world, sw, driver, port, p = rig("cisco_ios", save=True)
    r = asyncio.run(driver.throttle(port, CAP))
    assert r.saved is True
    sw.reboot()
    assert p.policer_bps == CAP


def test_junos_keeps_one_filter_per_port_with_the_block_term_first() -> None:
    world, sw, driver, port, p = rig("juniper_junos")
    asyncio.run(driver.throttle(port, CAP))
    asyncio.run(driver.block_service(port, "smtp"))
    session = sw.open_session()
    shown = session.send("show configuration firewall | display set | match RW-").splitlines()
    terms = [ln.split(" term ")[1].split()[0] for ln in shown if " term " in ln]
    assert terms.index("rw-smtp") < terms.index("rw-accept")
    assert "set firewall policer RW-THROTTLE-GE-0-0-1 if-exceeding bandwidth-limit 10m" in shown


def test_linux_refuses_to_delete_a_policer_that_is_not_there() -> None:
    world, sw, driver, port, p = rig("linux")
    with pytest.raises(CommandRejected) as info:
        asyncio.run(driver.unthrottle(port))
    assert "Cannot find specified filter chain" in info.value.detail


def test_the_smtp_share_is_part_of_what_the_server_sends() -> None:
    world, sw, driver, port, p = rig("cisco_ios")
    with pytest.raises(SimError):
        sw.set_traffic(p.name, out_bps=1_000_000, smtp_bps=2_000_000)
    sw.set_traffic(p.name, out_bps=3_000_000, smtp_bps=1_000_000)
    assert (p.smtp_bps, p.forwarded_smtp_bps, p.forwarded_other_bps) == (1_000_000, 1_000_000, 2_000_000)
