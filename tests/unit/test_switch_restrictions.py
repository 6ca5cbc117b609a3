"""One contract suite for every vendor's graceful restrictions: throttle and block a service."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from rackwarden.drivers.switch import DRIVERS, CommandRejected, InvalidPortName, error_match
from rackwarden.drivers.switch.base import unexplained_lines
from rackwarden.drivers.switch.restrictions import (
    NAME_PREFIX,
    SERVICE_PORTS,
    RestrictionCli,
    RestrictionRefused,
    restriction_cli,
    restriction_script,
)
from rackwarden.drivers.switch.session import NetmikoSwitch, SwitchTarget

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "switch"
VENDORS = sorted(DRIVERS)


def cli(vendor: str) -> RestrictionCli:
    return restriction_cli(DRIVERS[vendor])


def manifest(vendor: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / vendor / "manifest.json").read_text())
    return data


def restrictions(vendor: str) -> dict[str, Any]:
    data: dict[str, Any] = manifest(vendor)["restrictions"]
    return data


def fixture(vendor: str, name: str) -> str:
    """The device text, without the leading `# source/effect` notes (a lone `#` is VRP's own)."""
    lines = (FIXTURES / vendor / name).read_text().splitlines(keepends=True)
    while lines and lines[0].startswith("# "):
        lines.pop(0)
    return "".join(lines)


def notes(vendor: str, name: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (FIXTURES / vendor / name).read_text().splitlines():
        m = re.fullmatch(r"# ([a-z ]+): (.*)", line)
        if m is None:
            break
        out[m.group(1)] = m.group(2)
    return out


def rows(key: str, *fields: str) -> list[Any]:
    out: list[Any] = []
    for vendor in VENDORS:
        for entry in restrictions(vendor)[key]:
            values = [entry] if isinstance(entry, str) else [entry.get(f) for f in fields]
            out.append(pytest.param(vendor, *values, id=f"{vendor}-{'-'.join(map(str, values))}"))
    return out


# ------------------------------------------------------------------------------ contract


def test_every_vendor_can_throttle_and_block_and_cites_its_sources() -> None:
    for vendor in VENDORS:
        r = cli(vendor)
        assert r.NAME == vendor
        assert r.THROTTLE_RATE.source
        assert restrictions(vendor)["source"], f"{vendor}: no documentation cited for its fixtures"


@pytest.mark.parametrize("vendor", VENDORS)
def test_fixture_set_covers_the_contract(vendor: str) -> None:
    m = restrictions(vendor)
    seen = {(r["kind"], r["state"]) for r in m["readback"]}
    for kind in ("throttle", "block"):
        assert {(kind, "present"), (kind, "absent"), (kind, "unknown")} <= seen, (vendor, kind)
    assert m["refusals"], f"{vendor}: no refused-command fixture"
    assert any(r["value"] is None for r in m["rates"]), f"{vendor}: no below-minimum rate"
    for entry in m["readback"]:
        assert (FIXTURES / vendor / entry["file"]).is_file()


# ------------------------------------------------------------------------------ rendering

RENDERS = ["throttle", "unthrottle", "block", "unblock"]


def render(vendor: str, what: str) -> Any:
    r, m = cli(vendor), restrictions(vendor)["render"]
    port = manifest(vendor)["port"]
    if what == "throttle":
        return r.render_throttle(port, m["throttle_bps"])
    if what == "unthrottle":
        return r.render_unthrottle(port)
    if what == "block":
        return r.render_block_service(port, m["service"])
    return r.render_unblock_service(port, m["service"])


@pytest.mark.parametrize("what", RENDERS)
@pytest.mark.parametrize("vendor", VENDORS)
def test_rendering_matches_the_cited_expectation(vendor: str, what: str) -> None:
    name = restrictions(vendor)["render"][what]
    expected = [ln for ln in fixture(vendor, name).splitlines() if ln]
    script = restriction_script(DRIVERS[vendor], render(vendor, what))
    commands, effect = script.commands, script.effect_index
    assert list(commands) == expected
    info = notes(vendor, name)
    assert info["source"], f"{name} cites no vendor document"
    assert int(info["effect line"]) == effect
    assert 0 <= effect < len(commands)
    assert render(vendor, what) == render(vendor, what)  # deterministic


@pytest.mark.parametrize("vendor", VENDORS)
def test_apply_and_remove_name_the_same_objects_and_only_ours(vendor: str) -> None:
    def objects(what: str) -> set[str]:
        return set(re.findall(r"\bRW-[A-Z0-9-]+", " ".join(render(vendor, what).lines)))

    assert objects("throttle") == objects("unthrottle") or vendor == "juniper_junos"
    assert objects("block") == objects("unblock") or vendor == "juniper_junos"
    if vendor == "juniper_junos":  # one filter per port; the removal deletes a term or policer
        assert objects("unthrottle") <= objects("throttle")
        assert objects("unblock") <= objects("block")
    for what in RENDERS:
        for line in render(vendor, what).lines:
            assert "\n" not in line and "\r" not in line
            for word in re.findall(r"\b[Rr][Ww]-[\w-]+", line):
                assert word.startswith(NAME_PREFIX) or word.startswith("rw-")  # Junos term names


# What each vendor reads back for the manifest's port (table-driven, as test_switch_drivers).
JUNOS_IF = "show configuration interfaces ge-0/0/10 | display set"
READBACK: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "cisco_ios": (
        ("show running-config interface GigabitEthernet1/0/12", "show policy-map RW-THROTTLE-GI1-0-12"),
        ("show running-config interface GigabitEthernet1/0/12", "show ip access-lists RW-SMTP-GI1-0-12"),
    ),
    "arista_eos": (
        ("show running-config interfaces Ethernet12", "show policy-map type quality-of-service RW-THROTTLE-ET12"),
        ("show running-config interfaces Ethernet12", "show ip access-lists RW-SMTP-ET12"),
    ),
    "huawei": (
        ("display current-configuration interface GigabitEthernet0/0/10",),
        ("display current-configuration interface GigabitEthernet0/0/10", "display acl name RW-SMTP-GE0-0-10"),
    ),
    "hp_comware": (
        ("display current-configuration interface GigabitEthernet1/0/10",),
        ("display current-configuration interface GigabitEthernet1/0/10", "display acl name RW-SMTP-GE1-0-10"),
    ),
    "juniper_junos": (
        (JUNOS_IF, "show configuration firewall | display set | match RW-"),
        (JUNOS_IF, "show configuration firewall | display set | match RW-"),
    ),
    "linux": (
        ("ip -o link show dev p1", "tc filter show dev p1 ingress"),
        ("ip -o link show dev p1", "tc filter show dev p1 ingress"),
    ),
}


@pytest.mark.parametrize("vendor", VENDORS)
def test_readback_commands(vendor: str) -> None:
    assert set(READBACK) == set(DRIVERS)
    port = manifest(vendor)["port"]
    throttle, block = READBACK[vendor]
    assert cli(vendor).render_restriction_readback(port, "throttle") == throttle
    assert cli(vendor).render_restriction_readback(port, "block", "smtp") == block


# ------------------------------------------------------------------------------ rates


@pytest.mark.parametrize(("vendor", "bps", "value"), rows("rates", "bps", "value"))
def test_rate_is_typed_in_the_vendor_unit_and_rounded_down(vendor: str, bps: int, value: int | None) -> None:
    r = cli(vendor)
    port = manifest(vendor)["port"]
    if value is None:
        with pytest.raises(RestrictionRefused) as info:
            r.render_throttle(port, bps)
        assert "below the policer minimum" in str(info.value) and "nothing was sent" in str(info.value)
        return
    rate = r.throttle_rate(bps)
    assert rate.value == value and rate.unit == r.THROTTLE_RATE.unit
    assert rate.applied_bps == value * r.THROTTLE_RATE.unit_bps <= bps  # never above the cap (R1)
    assert rate.rounded == (rate.applied_bps != bps)
    assert (rate.note != "") == rate.rounded  # a rounded cap says so
    if rate.rounded:
        assert str(bps) in rate.note and str(rate.applied_bps) in rate.note
    change = r.render_throttle(port, bps)
    assert change.rate == rate
    assert any(re.search(rf"(?<!\d){value}(?!\d)", line) for line in change.lines)


@settings(max_examples=300, deadline=None)
@given(vendor=st.sampled_from(VENDORS), bps=st.integers(min_value=1, max_value=400_000_000_000))
def test_a_rendered_rate_never_exceeds_the_cap_and_is_the_largest_accepted(vendor: str, bps: int) -> None:
    rule = cli(vendor).THROTTLE_RATE
    try:
        rate = cli(vendor).throttle_rate(bps)
    except RestrictionRefused:
        assert bps < rule.minimum * rule.unit_bps
        return
    assert rate.applied_bps <= bps
    assert rate.value % rule.step == 0 and rate.value >= rule.minimum
    assert bps - rate.applied_bps < rule.step * rule.unit_bps  # the next accepted value is above


@pytest.mark.parametrize("vendor", VENDORS)
@pytest.mark.parametrize("bad", [0, -1, True, 10.5, "10000000"], ids=repr)
def test_nonsense_rates_are_refused(vendor: str, bad: Any) -> None:
    with pytest.raises(RestrictionRefused):
        cli(vendor).render_throttle(manifest(vendor)["port"], bad)


@pytest.mark.parametrize("vendor", VENDORS)
def test_unknown_service_is_refused_before_anything_is_rendered(vendor: str) -> None:
    r, port = cli(vendor), manifest(vendor)["port"]
    assert "ftp" not in SERVICE_PORTS
    for call in (r.render_block_service, r.render_unblock_service):
        with pytest.raises(RestrictionRefused) as info:
            call(port, "ftp")
        assert "smtp" in str(info.value)
    with pytest.raises(RestrictionRefused):
        r.render_restriction_readback(port, "block", "ftp")


@pytest.mark.parametrize("vendor", VENDORS)
def test_smtp_blocks_every_submission_port(vendor: str) -> None:
    text = " ".join(render(vendor, "block").lines)
    for p in SERVICE_PORTS["smtp"]:
        assert re.search(rf"(?<!\d){p}(?!\d)", text), (vendor, p)


# ------------------------------------------------------------------------------ names

INJECTIONS = ["GigabitEthernet1/0/12\nreload", "ge-0/0/10; request system reboot", "p1|x", "Gi1/0/1\u2028", ""]


@pytest.mark.parametrize("vendor", VENDORS)
@pytest.mark.parametrize("name", INJECTIONS, ids=repr)
def test_injected_names_are_refused_by_every_restriction_renderer(vendor: str, name: str) -> None:
    r = cli(vendor)
    calls = (
        lambda: r.render_throttle(name, 10_000_000),
        lambda: r.render_unthrottle(name),
        lambda: r.render_block_service(name, "smtp"),
        lambda: r.render_unblock_service(name, "smtp"),
        lambda: r.render_restriction_readback(name, "throttle"),
    )
    for call in calls:
        with pytest.raises(InvalidPortName):
            call()


@settings(max_examples=150, deadline=None)
@given(data=st.data(), vendor=st.sampled_from(VENDORS))
def test_distinct_ports_get_distinct_short_safe_object_names(data: Any, vendor: str) -> None:
    pattern = DRIVERS[vendor].INTERFACE_PATTERN
    a = data.draw(st.from_regex(pattern, fullmatch=True))
    b = data.draw(st.from_regex(pattern, fullmatch=True))
    assume(a.casefold() != b.casefold())
    names_a = re.findall(r"\bRW-[A-Za-z0-9-]+", " ".join(cli(vendor).render_block_service(a, "smtp").lines))
    names_b = re.findall(r"\bRW-[A-Za-z0-9-]+", " ".join(cli(vendor).render_block_service(b, "smtp").lines))
    assert not set(names_a) & set(names_b)
    for n in names_a:
        assert re.fullmatch(r"RW-[A-Z0-9-]+", n) and len(n) <= 32  # Huawei's ACL name limit


# ------------------------------------------------------------------------------ read-back


@pytest.mark.parametrize(
    ("vendor", "file", "kind", "service", "state", "rate"),
    rows("readback", "file", "kind", "service", "state", "rate_bps"),
)
def test_readback_fixture_parses(
    vendor: str, file: str, kind: Any, service: str | None, state: str, rate: int | None
) -> None:
    port = manifest(vendor)["port"]
    got = cli(vendor).parse_restriction(fixture(vendor, file), port, kind, service)
    assert (got.kind, got.port, got.state, got.rate_bps, got.service) == (kind, port, state, rate, service)
    assert got.present == (state == "present")


@settings(max_examples=200, deadline=None)
@given(text=st.text(), vendor=st.sampled_from(VENDORS), kind=st.sampled_from(["throttle", "block"]))
def test_restriction_parsers_are_total_and_never_confirm_from_noise(text: str, vendor: str, kind: Any) -> None:
    got = cli(vendor).parse_restriction(text, manifest(vendor)["port"], kind, "smtp" if kind == "block" else None)
    assert got.state in ("present", "absent", "unknown")
    if got.state == "present" and kind == "throttle":
        assert got.rate_bps is not None and got.rate_bps > 0


@pytest.mark.parametrize("vendor", VENDORS)
def test_a_readback_of_what_was_rendered_agrees_on_the_rate(vendor: str) -> None:
    """The present fixture carries the rate the renderer types for the manifest's cap."""
    m = restrictions(vendor)
    typed = cli(vendor).throttle_rate(m["render"]["throttle_bps"]).applied_bps
    present = [r for r in m["readback"] if r["kind"] == "throttle" and r["state"] == "present"]
    assert present and all(r["rate_bps"] == typed for r in present)


# ------------------------------------------------------------------------------ replies


@pytest.mark.parametrize(("vendor", "file"), rows("refusals"))
def test_a_refused_restriction_command_is_an_error_never_a_success(vendor: str, file: str) -> None:
    text = fixture(vendor, file)
    assert error_match(DRIVERS[vendor], text) is not None
    # And not explainable as a benign reply either: the session would fail the action twice over.
    assert unexplained_lines(DRIVERS[vendor], text)


@pytest.mark.parametrize(("vendor", "file"), rows("applied"))
def test_a_clean_apply_transcript_is_fully_explained(vendor: str, file: str) -> None:
    text = fixture(vendor, file)
    echoes: tuple[str, ...] = ()
    for what in RENDERS:
        echoes += restriction_script(DRIVERS[vendor], render(vendor, what)).commands
    assert error_match(DRIVERS[vendor], text) is None
    assert unexplained_lines(DRIVERS[vendor], text, echoes) == []


# ------------------------------------------------------------------------------ sessions
# NetmikoSwitch drives the renderers and parsers above over one SSH session per action. The
# real dialogue is proven against OpenSSH + the CLI emulator, with the effect measured, in
# tests/integration/test_restrictions_lab.py; these pin down the rails for every vendor.


class Secret:
    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value


class FakeConnection:
    """A netmiko connection that answers config lines with a prompt (or `reply` on the line
    starting with `fail_on`) and read-back commands from `readback`, one output per command."""

    def __init__(self, vendor: str, readback: list[str], fail_on: str = "", reply: str = "") -> None:
        self.vendor, self.readback, self.fail_on, self.reply = vendor, list(readback), fail_on, reply
        self.config: list[str] = []
        self.commands: list[str] = []
        self.base_prompt, self.RETURN = "sw1", "\n"
        self.prompt = {"huawei": "<sw1>", "hp_comware": "<sw1>", "juniper_junos": "rwarden@sw1>",
                       "linux": "root@sw1:~#"}.get(vendor, "sw1#")

    def _open(self) -> None:
        pass

    def check_enable_mode(self) -> bool:
        return True

    def find_prompt(self) -> str:
        return self.prompt

    def send_config_set(self, commands: list[str], **kwargs: Any) -> str:
        self.config.extend(commands)
        if self.fail_on and commands[0].startswith(self.fail_on):
            return f"{commands[0]}\n{self.reply}\n{self.prompt}"
        return f"{commands[0]}\n{self.prompt}"

    def send_command(self, command: str, **kwargs: Any) -> str:
        self.commands.append(command)
        return self.readback.pop(0) if self.readback else ""

    def write_channel(self, data: str) -> None:
        pass

    def paramiko_cleanup(self) -> None:
        pass

    def disconnect(self) -> None:
        pass


def switch(vendor: str, conn: FakeConnection | None, calls: list[int] | None = None) -> NetmikoSwitch:
    def connect(**kw: Any) -> FakeConnection:
        if calls is not None:
            calls.append(1)
        assert conn is not None, "no session may be opened"
        return conn

    target = SwitchTarget(name="sw1", vendor=vendor, host="192.0.2.10", username="rackwarden",
                          password=Secret("pw"), known_hosts=Path("/keys/known_hosts"))
    return NetmikoSwitch(target, connect=connect)


def readback_file(vendor: str, kind: str, state: str) -> str:
    return next(r["file"] for r in restrictions(vendor)["readback"] if r["kind"] == kind and r["state"] == state)


@pytest.mark.parametrize("vendor", VENDORS)
def test_session_throttle_types_the_script_and_reads_it_back_in_the_same_session(vendor: str) -> None:
    port, bps = manifest(vendor)["port"], restrictions(vendor)["render"]["throttle_bps"]
    conn = FakeConnection(vendor, [fixture(vendor, readback_file(vendor, "throttle", "present"))])
    result = asyncio.run(switch(vendor, conn).throttle(port, bps))
    change = cli(vendor).render_throttle(port, bps)
    assert conn.config == list(restriction_script(DRIVERS[vendor], change).commands)
    assert conn.commands == list(cli(vendor).render_restriction_readback(port, "throttle"))
    assert result.action == "throttle" and result.rate == change.rate
    assert result.reading.state == "present" and result.agrees
    assert change.rate is not None and result.reading.rate_bps == change.rate.applied_bps


@pytest.mark.parametrize("vendor", VENDORS)
def test_session_unblock_whose_acl_listing_is_gone_reads_absent_not_an_error(vendor: str) -> None:
    """After an unblock, VRP and Comware answer `display acl name` with an error: that is the
    expected read-back, judged by the parser, not a refused command."""
    port = manifest(vendor)["port"]
    conn = FakeConnection(vendor, [fixture(vendor, readback_file(vendor, "block", "absent"))])
    result = asyncio.run(switch(vendor, conn).unblock_service(port, "smtp"))
    assert result.reading.state == "absent" and result.agrees and result.service == "smtp"
    assert conn.commands == list(cli(vendor).render_restriction_readback(port, "block", "smtp"))


@pytest.mark.parametrize(("vendor", "file"), rows("refusals"))
def test_session_a_refused_effect_line_raises_and_reports_nothing_applied(vendor: str, file: str) -> None:
    port = manifest(vendor)["port"]
    change = cli(vendor).render_throttle(port, 10_000_000)
    effect = change.lines[change.effect_index]
    conn = FakeConnection(vendor, [], fail_on=effect, reply=fixture(vendor, file))
    with pytest.raises(CommandRejected) as info:
        asyncio.run(switch(vendor, conn).throttle(port, 10_000_000))
    assert not info.value.outcome_unknown  # the refused line did not take: FAILED, not UNKNOWN
    assert conn.config[-1] == effect and conn.commands == []  # stopped there, nothing read as success


@pytest.mark.parametrize("vendor", VENDORS)
def test_session_refusals_come_before_any_session(vendor: str) -> None:
    port, calls = manifest(vendor)["port"], list[int]()
    sw = switch(vendor, None, calls)
    below = next(r["bps"] for r in restrictions(vendor)["rates"] if r["value"] is None)
    with pytest.raises(RestrictionRefused, match="nothing was sent"):
        asyncio.run(sw.throttle(port, below))
    for call in (lambda: sw.block_service(port, "ftp"), lambda: sw.unblock_service(port, "ftp"),
                 lambda: sw.read_restriction(port, "block", "ftp")):
        with pytest.raises(RestrictionRefused):
            asyncio.run(call())
    with pytest.raises(InvalidPortName):
        asyncio.run(sw.unthrottle("p1\nreload"))
    assert calls == []


@pytest.mark.parametrize("vendor", VENDORS)
def test_session_read_restriction_reports_what_the_switch_shows(vendor: str) -> None:
    port = manifest(vendor)["port"]
    for state in ("present", "unknown"):
        conn = FakeConnection(vendor, [fixture(vendor, readback_file(vendor, "block", state))])
        got = asyncio.run(switch(vendor, conn).read_restriction(port, "block", "smtp"))
        assert got.state == state and conn.config == []  # a read changes nothing
