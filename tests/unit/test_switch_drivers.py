"""One contract suite for every switch vendor: names, rendering, read-back, errors, sessions."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import paramiko
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from netmiko.exceptions import (
    NetmikoAuthenticationException,
    NetmikoTimeoutException,
    ReadTimeout,
)
from netmiko.ssh_dispatcher import CLASS_MAPPER
from rackwarden.agent import config as configmod
from rackwarden.agent.metrics import Metrics
from rackwarden.agent.wiring import ssh_host_keys, switch_driver
from rackwarden.drivers.switch import (
    DRIVERS,
    AuthenticationFailed,
    CommandRejected,
    DriverError,
    HostKeyRejected,
    InvalidPortName,
    PermanentDriverError,
    SessionDropped,
    SwitchUnreachable,
    TransientDriverError,
    UnexplainedReply,
    UnknownVendor,
    VendorCli,
    WrongVendor,
    change_script,
    error_match,
    port_name_problem,
    save_succeeded,
    vendor_cli,
)
from rackwarden.drivers.switch.base import (
    FORBIDDEN_PORT_CHARS,
    looks_like,
    pending_question,
    prompt_vendors,
    unexplained_lines,
)
from rackwarden.drivers.switch.session import NetmikoSwitch, SwitchTarget

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "switch"
VENDORS = sorted(DRIVERS)


def manifest(vendor: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / vendor / "manifest.json").read_text())
    return data


def fixture(vendor: str, name: str) -> str:
    return (FIXTURES / vendor / name).read_text()


def cases(key: str, *fields: str) -> list[Any]:
    """(vendor, entry...) rows from every vendor's manifest, for parametrize."""
    rows: list[Any] = []
    for vendor in VENDORS:
        for entry in manifest(vendor)[key]:
            if isinstance(entry, str):
                rows.append(pytest.param(vendor, entry, id=f"{vendor}-{entry}"))
            else:
                values = [entry[f] for f in fields]
                rows.append(
                    pytest.param(vendor, *values, id=f"{vendor}-{'-'.join(map(str, values))}")
                )
    return rows


# ------------------------------------------------------------------------------ registry


def test_registry_names_are_module_names_and_netmiko_device_types() -> None:
    for name, cli in DRIVERS.items():
        assert cli.NAME == name
        assert getattr(cli, "__name__", "").rsplit(".", 1)[-1] == name
        assert name in CLASS_MAPPER, f"{name} is not a netmiko device_type"


def test_every_vendor_has_one_fixture_folder_and_no_folder_is_orphaned() -> None:
    folders = {p.name for p in FIXTURES.iterdir() if p.is_dir()}
    assert folders == set(DRIVERS)


def test_unknown_vendor_is_a_permanent_error_naming_the_choices() -> None:
    with pytest.raises(UnknownVendor) as info:
        vendor_cli("cisco_nxos")
    assert isinstance(info.value, PermanentDriverError)
    assert "cisco_ios" in str(info.value)


def test_error_tree() -> None:
    assert issubclass(TransientDriverError, DriverError)
    assert issubclass(PermanentDriverError, DriverError)
    assert issubclass(InvalidPortName, PermanentDriverError)
    assert issubclass(CommandRejected, PermanentDriverError)
    assert issubclass(SessionDropped, TransientDriverError)
    assert issubclass(SwitchUnreachable, TransientDriverError)


@pytest.mark.parametrize("vendor", VENDORS)
def test_fixture_set_covers_the_contract(vendor: str) -> None:
    m = manifest(vendor)
    assert {r["admin"] for r in m["readback"]} == {"up", "down", "unknown"}
    assert m["errors"] and m["success"]
    if DRIVERS[vendor].SAVE is None:
        assert not m["save"]
    else:
        assert {s["ok"] for s in m["save"]} == {True, False}


# ------------------------------------------------------------------------------ rendering

# What each vendor types for the manifest's port: shut, restore, read-back (table-driven).
EXPECTED: dict[str, tuple[tuple[str, ...], tuple[str, ...], str]] = {
    "cisco_ios": (
        ("configure terminal", "interface GigabitEthernet1/0/12", "shutdown", "end"),
        ("configure terminal", "interface GigabitEthernet1/0/12", "no shutdown", "end"),
        "show interfaces GigabitEthernet1/0/12",
    ),
    "arista_eos": (
        ("configure terminal", "interface Ethernet12", "shutdown", "end"),
        ("configure terminal", "interface Ethernet12", "no shutdown", "end"),
        "show interfaces Ethernet12",
    ),
    "huawei": (
        ("system-view", "interface GigabitEthernet0/0/10", "shutdown", "return"),
        ("system-view", "interface GigabitEthernet0/0/10", "undo shutdown", "return"),
        "display interface GigabitEthernet0/0/10",
    ),
    "hp_comware": (
        ("system-view", "interface GigabitEthernet1/0/10", "shutdown", "return"),
        ("system-view", "interface GigabitEthernet1/0/10", "undo shutdown", "return"),
        "display interface GigabitEthernet1/0/10",
    ),
    "juniper_junos": (
        ("configure private", "set interfaces ge-0/0/10 disable", "commit and-quit"),
        ("configure private", "delete interfaces ge-0/0/10 disable", "commit and-quit"),
        "show interfaces ge-0/0/10 terse",
    ),
    "linux": (
        ("ip link set dev p1 down",),
        ("ip link set dev p1 up",),
        "ip -o link show dev p1",
    ),
}


def test_expected_table_covers_the_registry() -> None:
    assert set(EXPECTED) == set(DRIVERS)


@pytest.mark.parametrize("vendor", VENDORS)
def test_rendering(vendor: str) -> None:
    cli = DRIVERS[vendor]
    port = manifest(vendor)["port"]
    shut, restore, readback = EXPECTED[vendor]
    s, r = change_script(cli, "shut", port), change_script(cli, "restore", port)
    assert s.commands == shut
    assert r.commands == restore
    assert cli.render_readback(port) == readback
    # The effect line is the one that differs between shut and restore.
    assert s.commands[s.effect_index] != r.commands[r.effect_index]
    assert s.commands[: s.effect_index] == r.commands[: r.effect_index]


@pytest.mark.parametrize(
    ("vendor", "short", "full"),
    [
        ("cisco_ios", "Gi1/0/12", "GigabitEthernet1/0/12"),
        ("cisco_ios", "te1/1/1", "TenGigabitEthernet1/1/1"),
        ("arista_eos", "Et12", "Ethernet12"),
        ("huawei", "GE0/0/10", "GigabitEthernet0/0/10"),
        ("huawei", "XGE0/0/1", "XGigabitEthernet0/0/1"),
        ("hp_comware", "XGE1/0/49", "Ten-GigabitEthernet1/0/49"),
        ("hp_comware", "GE1/0/10", "GigabitEthernet1/0/10"),
    ],
)
def test_abbreviations_render_the_full_name(vendor: str, short: str, full: str) -> None:
    assert DRIVERS[vendor].canonical_port(short) == full
    assert f"interface {full}" in DRIVERS[vendor].render_shut(short)


# ------------------------------------------------------------------------------ port names

INJECTIONS = [
    "p1\nreload",
    "GigabitEthernet1/0/12\nreload",
    "GigabitEthernet1/0/12\r\nwrite erase",
    "GigabitEthernet1/0/12;reload",
    "GigabitEthernet1/0/12 | include x",
    "GigabitEthernet1/0/12\n",  # `$` would match before this newline; fullmatch does not
    "ge-0/0/10; request system reboot",
    "`reboot`",
    "$(reboot)",
    "Gi1/0/1'",
    'Gi1/0/1"',
    "Gi1/0/1\x00",
    "Gi1/0/1\x1b[2K",
    "Gi1/0/1\u2028reload",
    "Gi1/0/1\u202e",
    "",
    " ",
]


@pytest.mark.parametrize("vendor", VENDORS)
@pytest.mark.parametrize("name", INJECTIONS, ids=repr)
def test_injected_names_are_refused(vendor: str, name: str) -> None:
    cli = DRIVERS[vendor]
    for render in (cli.canonical_port, cli.render_shut, cli.render_restore, cli.render_readback):
        with pytest.raises(InvalidPortName) as info:
            render(name)
        assert "nothing was sent" in str(info.value)


NOT_ACCESS_PORTS = {
    "cisco_ios": ["Port-channel1", "Vlan120", "Loopback0", "GigabitEthernet1/0/12.100", "Gi"],
    "arista_eos": ["Port-Channel10", "Vlan120", "Management1", "Ethernet"],
    "huawei": ["Eth-Trunk1", "Vlanif120", "MEth0/0/1", "GigabitEthernet0/0/1.10"],
    "hp_comware": ["Bridge-Aggregation1", "Vlan-interface120", "M-GigabitEthernet0/0/0"],
    "juniper_junos": ["ae0", "irb.120", "ge-0/0/10.0", "vme"],
    "linux": ["..", ".", "a/b", "x" * 16, "eth0:1"],
}


@pytest.mark.parametrize("vendor", VENDORS)
def test_non_access_ports_do_not_match_the_vendor_pattern(vendor: str) -> None:
    assert set(NOT_ACCESS_PORTS) == set(DRIVERS)
    for name in NOT_ACCESS_PORTS[vendor]:
        with pytest.raises(InvalidPortName):
            DRIVERS[vendor].canonical_port(name)


BAD_CHARS = (
    sorted(FORBIDDEN_PORT_CHARS)
    + [chr(c) for c in range(32)]
    + [
        "\x7f",
        "\x85",
        "\u2028",
        "\u2029",
        "\u200b",
        "\u202e",
        "\ufeff",
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    before=st.text(max_size=24),
    bad=st.sampled_from(BAD_CHARS),
    after=st.text(max_size=24),
    vendor=st.sampled_from(VENDORS),
)
def test_any_name_with_a_forbidden_char_is_refused(
    before: str, bad: str, after: str, vendor: str
) -> None:
    with pytest.raises(InvalidPortName):
        DRIVERS[vendor].render_shut(before + bad + after)


@settings(max_examples=50, deadline=None)
@given(data=st.data(), vendor=st.sampled_from(VENDORS))
def test_names_matching_the_vendor_pattern_render_verbatim(data: Any, vendor: str) -> None:
    cli = DRIVERS[vendor]
    name = data.draw(st.from_regex(cli.INTERFACE_PATTERN, fullmatch=True))
    assert cli.canonical_port(name) == name
    script = change_script(cli, "shut", name)
    assert any(name in line for line in script.commands)
    assert all("\n" not in line and "\r" not in line for line in script.commands)


@settings(max_examples=200, deadline=None)
@given(text=st.text(), vendor=st.sampled_from(VENDORS))
def test_parsers_are_total(text: str, vendor: str) -> None:
    cli = DRIVERS[vendor]
    assert cli.parse_admin_state(text, manifest(vendor)["port"]) in ("up", "down", "unknown")
    error_match(cli, text)  # never raises


# ------------------------------------------------------------------------------ fixtures


@pytest.mark.parametrize(
    ("vendor", "file", "port", "admin"), cases("readback", "file", "port", "admin")
)
def test_readback_fixture_parses(vendor: str, file: str, port: str, admin: str) -> None:
    assert DRIVERS[vendor].parse_admin_state(fixture(vendor, file), port) == admin


@pytest.mark.parametrize(("vendor", "file"), cases("errors"))
def test_error_pattern_matches_every_error_fixture(vendor: str, file: str) -> None:
    assert error_match(DRIVERS[vendor], fixture(vendor, file)) is not None


@pytest.mark.parametrize(("vendor", "file"), cases("success"))
def test_error_pattern_ignores_every_success_fixture(vendor: str, file: str) -> None:
    assert error_match(DRIVERS[vendor], fixture(vendor, file)) is None


@pytest.mark.parametrize(("vendor", "file", "ok"), cases("save", "file", "ok"))
def test_save_transcripts(vendor: str, file: str, ok: bool) -> None:
    cli = DRIVERS[vendor]
    text = fixture(vendor, file)
    assert save_succeeded(cli, text) is ok
    assert cli.SAVE is not None
    # A finished transcript ends at the prompt: no question may still look pending.
    assert pending_question(cli.SAVE, text) is None


@pytest.mark.parametrize(("vendor", "file", "answer"), cases("questions", "file", "answer"))
def test_save_questions_get_the_vendor_answer(vendor: str, file: str, answer: str) -> None:
    spec = DRIVERS[vendor].SAVE
    assert spec is not None
    assert pending_question(spec, fixture(vendor, file)) == answer


# ------------------------------------------------------------------------------ sessions
# The real dialogue is proven against OpenSSH + the CLI emulator in
# tests/integration/test_switch_ssh.py; these pin down what the lab cannot stage cheaply.


class Mask:
    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret(***)"


class FakeConnection:
    """Stands in for a netmiko connection; answers from the vendor's fixtures."""

    active = 0
    peak = 0
    guard = threading.Lock()

    def __init__(
        self,
        vendor: str,
        fail_on: str = "",
        exc: BaseException | None = None,
        reply: str = "",
        readback: str | None = None,
        prompt: str | None = None,
    ) -> None:
        self.vendor = vendor
        self.fail_on = fail_on
        self.exc = exc
        self.reply = reply  # the device's answer to the line starting with fail_on
        self.readback = readback
        self.prompt = prompt if prompt is not None else PROMPTS[vendor]
        self.sent: list[str] = []
        self.base_prompt = "sw1"
        self.RETURN = "\n"
        self.closed = False
        with FakeConnection.guard:
            FakeConnection.active += 1
            FakeConnection.peak = max(FakeConnection.peak, FakeConnection.active)

    def _open(self) -> None:
        pass  # netmiko's seam: the fake is connected from the start

    def check_enable_mode(self) -> bool:
        return True

    def find_prompt(self) -> str:
        return self.prompt

    def send_config_set(self, commands: list[str], **kwargs: Any) -> str:
        assert kwargs["enter_config_mode"] is False and kwargs["exit_config_mode"] is False
        self.sent.extend(commands)
        time.sleep(0.005)  # widen any race between overlapping sessions
        if self.fail_on and commands[0].startswith(self.fail_on):
            if self.exc is not None:
                raise self.exc
            # As netmiko returns it: the echo, the device's reply, the next prompt.
            return f"{commands[0]}\n{self.reply}\n{self.prompt}"
        return f"{commands[0]}\n{self.prompt}"

    def send_command(self, command: str, **kwargs: Any) -> str:
        self.sent.append(command)
        if self.readback is not None:
            return self.readback
        m = manifest(self.vendor)
        down = next(r["file"] for r in m["readback"] if r["admin"] == "down")
        return fixture(self.vendor, down)

    def write_channel(self, data: str) -> None:
        pass

    def paramiko_cleanup(self) -> None:
        if not self.closed:
            self.closed = True
            with FakeConnection.guard:
                FakeConnection.active -= 1

    def disconnect(self) -> None:
        self.paramiko_cleanup()


# What each vendor's login prompt looks like (find_prompt).
PROMPTS = {
    "cisco_ios": "sw1#",
    "arista_eos": "sw1#",
    "huawei": "<sw1>",
    "hp_comware": "<sw1>",
    "juniper_junos": "rwarden@sw1>",
    "linux": "root@sw1:~#",
}


def target(vendor: str, **overrides: Any) -> SwitchTarget:
    base: dict[str, Any] = {
        "name": "sw1",
        "vendor": vendor,
        "host": "192.0.2.10",
        "username": "rackwarden",
        "password": Mask("hunter2-pw"),
        "enable_secret": Mask("hunter2-en"),
        "known_hosts": Path("/keys/known_hosts"),  # the fakes never check it
    }
    base.update(overrides)
    return SwitchTarget(**base)


@pytest.mark.parametrize("vendor", VENDORS)
def test_injected_name_is_refused_before_any_connection(vendor: str) -> None:
    calls: list[dict[str, Any]] = []
    sw = NetmikoSwitch(target(vendor), connect=lambda **kw: calls.append(kw))
    for call in (sw.shut, sw.restore, sw.read_admin_state):
        with pytest.raises(InvalidPortName):
            asyncio.run(call("p1\nreload"))
    assert calls == []


def test_inventory_limits_the_ports_and_accepts_abbreviations() -> None:
    calls: list[str] = []

    def connect(**kw: Any) -> FakeConnection:
        calls.append(kw["host"])
        return FakeConnection("cisco_ios")

    sw = NetmikoSwitch(target("cisco_ios", ports=frozenset({"Gi1/0/12"})), connect=connect)
    with pytest.raises(InvalidPortName, match="not an inventory port"):
        asyncio.run(sw.shut("GigabitEthernet1/0/13"))
    assert calls == []
    result = asyncio.run(sw.shut("GigabitEthernet1/0/12"))
    assert result.cli_admin == "down" and result.agrees and calls == ["192.0.2.10"]


def test_secrets_never_print() -> None:
    t = target("cisco_ios")
    sw = NetmikoSwitch(t, connect=lambda **kw: None)
    for text in (repr(t), str(t), repr(sw)):
        assert "hunter2" not in text


@pytest.mark.parametrize("vendor", VENDORS)
def test_one_session_at_a_time_per_switch(vendor: str) -> None:
    FakeConnection.active = FakeConnection.peak = 0
    sw = NetmikoSwitch(target(vendor), connect=lambda **kw: FakeConnection(vendor))
    port = manifest(vendor)["port"]

    async def many() -> list[Any]:
        return await asyncio.gather(*(sw.shut(port) for _ in range(6)))

    results = asyncio.run(many())
    assert FakeConnection.peak == 1
    assert all(r.cli_admin == "down" and r.agrees for r in results)


@pytest.mark.parametrize("vendor", VENDORS)
def test_error_reply_on_the_effect_line_is_permanent_and_changes_nothing(vendor: str) -> None:
    cli: VendorCli = DRIVERS[vendor]
    port = manifest(vendor)["port"]
    effect = change_script(cli, "shut", port)
    line = effect.commands[effect.effect_index]
    error_file = manifest(vendor)["errors"][0]
    reply = fixture(vendor, error_file)
    sw = NetmikoSwitch(
        target(vendor), connect=lambda **kw: FakeConnection(vendor, line, reply=reply)
    )
    with pytest.raises(CommandRejected) as info:
        asyncio.run(sw.shut(port))
    assert not info.value.outcome_unknown
    assert info.value.switch == "sw1" and info.value.port
    # The device's own error line is in the message, which the action record keeps.
    found = error_match(cli, reply)
    assert found is not None and found in str(info.value)


@pytest.mark.parametrize("vendor", VENDORS)
def test_timeouts_before_and_after_the_effect_line(vendor: str) -> None:
    cli: VendorCli = DRIVERS[vendor]
    port = manifest(vendor)["port"]
    script = change_script(cli, "shut", port)
    for index, line in enumerate(script.commands):
        conn = FakeConnection(vendor, line, ReadTimeout("Pattern not detected"))
        sw = NetmikoSwitch(target(vendor), connect=lambda conn=conn, **kw: conn)
        with pytest.raises(SessionDropped) as info:
            asyncio.run(sw.shut(port))
        # From the effect line on, the port may have changed: the caller must read it back.
        assert info.value.outcome_unknown is (index >= script.effect_index), line
        assert conn.closed


@pytest.mark.parametrize(
    ("exc", "kind", "transient"),
    [
        (
            NetmikoAuthenticationException("Authentication to device failed."),
            AuthenticationFailed,
            False,
        ),
        (NetmikoTimeoutException("TCP connection to device failed."), SwitchUnreachable, True),
        (
            NetmikoTimeoutException("Server '[192.0.2.10]:22' not found in known_hosts"),
            PermanentDriverError,
            False,
        ),
        (ConnectionRefusedError(111, "Connection refused"), SwitchUnreachable, True),
    ],
)
def test_connect_failures_are_classified(
    exc: BaseException, kind: type[DriverError], transient: bool
) -> None:
    def connect(**kw: Any) -> Any:
        raise exc

    sw = NetmikoSwitch(target("huawei"), connect=connect)
    with pytest.raises(kind) as info:
        asyncio.run(sw.shut("GigabitEthernet0/0/10"))
    assert isinstance(info.value, TransientDriverError) is transient
    assert not info.value.outcome_unknown
    assert "hunter2" not in str(info.value)


def test_missing_key_file_is_permanent_and_opens_nothing(tmp_path: Path) -> None:
    calls: list[Any] = []
    t = target("huawei", password=None, key_file=tmp_path / "absent")
    sw = NetmikoSwitch(t, connect=lambda **kw: calls.append(kw))
    with pytest.raises(PermanentDriverError, match="key file"):
        asyncio.run(sw.read_admin_state("GE0/0/10"))
    assert calls == []


def test_connect_arguments(tmp_path: Path) -> None:
    seen: dict[str, Any] = {}
    key = tmp_path / "rw"
    key.write_text("not parsed by the fake")

    def connect(**kw: Any) -> FakeConnection:
        seen.update(kw)
        return FakeConnection("hp_comware")

    t = target(
        "hp_comware",
        password=None,
        key_file=key,
        known_hosts=Path("/keys/known_hosts"),
        disabled_algorithms={"pubkeys": ("rsa-sha2-256", "rsa-sha2-512")},
        read_timeout_s=7.0,
    )
    asyncio.run(NetmikoSwitch(t, connect=connect).read_admin_state("GE1/0/10"))
    assert seen["device_type"] == "hp_comware"
    assert seen["use_keys"] is True and seen["key_file"] == str(key)
    assert "password" not in seen and seen["allow_agent"] is False
    assert seen["ssh_strict"] is True and seen["alt_key_file"] == "/keys/known_hosts"
    assert seen["disabled_algorithms"] == {"pubkeys": ["rsa-sha2-256", "rsa-sha2-512"]}
    assert seen["global_cmd_verify"] is True  # see hp_comware.CMD_VERIFY
    assert seen["fast_cli"] is True


def test_target_needs_credentials_and_a_known_vendor() -> None:
    with pytest.raises(PermanentDriverError, match="key_file or a password"):
        target("cisco_ios", password=None)
    with pytest.raises(UnknownVendor):
        target("cisco_nxos")


# ------------------------------------------------------------------------------ strict replies
# Issue 11: a line refused with text the vendor's error pattern does not know passed as
# success, and the device's words were lost. Now any reply the driver cannot explain is a
# refusal whose message (kept in the action record) carries the device's text.


def _config_transcripts(vendor: str) -> list[str]:
    return [f for f in manifest(vendor)["success"] if f.startswith("success")]


@pytest.mark.parametrize("vendor", VENDORS)
def test_every_success_transcript_is_fully_explained(vendor: str) -> None:
    cli = DRIVERS[vendor]
    port = manifest(vendor)["port"]
    echoes = change_script(cli, "shut", port).commands + change_script(cli, "restore", port).commands
    assert _config_transcripts(vendor)
    for file in _config_transcripts(vendor):
        assert unexplained_lines(cli, fixture(vendor, file), echoes) == [], file


@pytest.mark.parametrize(("vendor", "file"), cases("errors"))
def test_no_error_transcript_is_explained(vendor: str, file: str) -> None:
    assert unexplained_lines(DRIVERS[vendor], fixture(vendor, file))


@pytest.mark.parametrize(("vendor", "file"), cases("unexplained"))
def test_a_reply_the_vendor_pattern_does_not_know_fails_the_line(vendor: str, file: str) -> None:
    cli = DRIVERS[vendor]
    reply = fixture(vendor, file)
    assert error_match(cli, reply) is None  # the vendor's error pattern does not know this text
    port = manifest(vendor)["port"]
    script = change_script(cli, "shut", port)
    line = script.commands[script.effect_index]
    conn = FakeConnection(vendor, line, reply=reply)
    sw = NetmikoSwitch(target(vendor), connect=lambda **kw: conn)
    with pytest.raises(UnexplainedReply) as info:
        asyncio.run(sw.shut(port))
    assert isinstance(info.value, CommandRejected) and isinstance(info.value, PermanentDriverError)
    assert info.value.outcome_unknown  # unexplained words at the effect line: read the port back
    words = [ln.strip() for ln in reply.splitlines() if ln.strip()][-1]
    assert words in str(info.value)  # the device's own text, for the action record
    assert conn.sent[-1] == line  # nothing after it: no `end`, no read-back taken as success


@pytest.mark.parametrize("vendor", VENDORS)
def test_an_unexplained_reply_leaves_the_outcome_unknown_from_the_effect_line_on(vendor: str) -> None:
    cli = DRIVERS[vendor]
    port = manifest(vendor)["port"]
    script = change_script(cli, "shut", port)
    before = script.commands[script.effect_index - 1] if script.effect_index else None
    for line, unknown in ((script.commands[-1], True), (before, False)):
        if line is None:
            continue  # linux: the effect line is the first
        conn = FakeConnection(vendor, line, reply="Unknown command")
        sw = NetmikoSwitch(target(vendor), connect=lambda conn=conn, **kw: conn)
        with pytest.raises(UnexplainedReply) as info:
            asyncio.run(sw.shut(port))
        # From the effect line on the port may have changed; before it, it cannot have.
        assert info.value.outcome_unknown is unknown, line
        assert "Unknown command" in str(info.value)


@pytest.mark.parametrize(
    ("vendor", "file", "other"),
    [
        ("cisco_ios", "foreign_vrp_error.txt", "huawei"),
        ("arista_eos", "foreign_vrp_error.txt", "huawei"),
        ("huawei", "foreign_ios_invalid_input.txt", "cisco_ios"),
        ("hp_comware", "foreign_ios_invalid_input.txt", "cisco_ios"),
        ("juniper_junos", "foreign_ios_invalid_input.txt", "cisco_ios"),
        ("linux", "foreign_ios_invalid_input.txt", "cisco_ios"),
    ],
)
def test_another_vendors_error_text_names_the_probable_vendor(vendor: str, file: str, other: str) -> None:
    reply = fixture(vendor, file)
    assert other in looks_like(reply, DRIVERS, vendor)
    port = manifest(vendor)["port"]
    script = change_script(cli := DRIVERS[vendor], "shut", port)
    conn = FakeConnection(vendor, script.commands[script.effect_index], reply=reply)
    with pytest.raises(UnexplainedReply) as info:
        asyncio.run(NetmikoSwitch(target(vendor), connect=lambda **kw: conn).shut(port))
    assert other in str(info.value) and f"probable wrong `vendor: {cli.NAME}`" in str(info.value)


UNNAMED_READBACKS = [
    pytest.param(v, r["file"], r["port"], id=f"{v}-{r['file']}")
    for v in VENDORS
    for r in manifest(v)["readback"]
    if r["admin"] == "unknown"
]


@pytest.mark.parametrize(("vendor", "file", "port"), UNNAMED_READBACKS)
def test_a_read_back_that_does_not_name_the_port_is_an_error(vendor: str, file: str, port: str) -> None:
    text = fixture(vendor, file)
    sw = NetmikoSwitch(target(vendor), connect=lambda **kw: FakeConnection(vendor, readback=text))
    with pytest.raises(UnexplainedReply) as info:
        asyncio.run(sw.shut(port))
    assert info.value.outcome_unknown  # the shut line was sent: the port must be read back
    assert "does not name" in str(info.value)
    with pytest.raises(UnexplainedReply) as info:
        asyncio.run(sw.read_admin_state(port))
    assert not info.value.outcome_unknown


@pytest.mark.parametrize("vendor", VENDORS)
def test_each_vendor_prompt_matches_its_own_pattern(vendor: str) -> None:
    assert vendor in prompt_vendors(PROMPTS[vendor], DRIVERS)


@pytest.mark.parametrize("vendor", VENDORS)
def test_a_cli_of_another_vendor_is_reported_at_the_first_session(vendor: str) -> None:
    port = manifest(vendor)["port"]
    foreign = {o: p for o, p in PROMPTS.items() if vendor not in prompt_vendors(p, DRIVERS)}
    assert foreign
    for other, prompt in foreign.items():
        conn = FakeConnection(vendor, prompt=prompt)
        with pytest.raises(WrongVendor) as info:
            asyncio.run(NetmikoSwitch(target(vendor), connect=lambda conn=conn, **kw: conn).shut(port))
        assert isinstance(info.value, PermanentDriverError)
        assert other in str(info.value) and f"probable wrong `vendor: {vendor}`" in str(info.value)
        assert conn.sent == []  # reported before any line was typed


# ------------------------------------------------------------------------------ port names for config


@pytest.mark.parametrize("vendor", VENDORS)
def test_port_name_problem_is_exactly_the_driver_refusal(vendor: str) -> None:
    for name in [*NOT_ACCESS_PORTS[vendor], *INJECTIONS]:
        problem = port_name_problem(vendor, name)
        assert problem, name
        assert "nothing was sent" not in problem  # a config error, not a runtime message
        with pytest.raises(InvalidPortName):
            DRIVERS[vendor].canonical_port(name)
    assert port_name_problem(vendor, manifest(vendor)["port"]) is None


# ------------------------------------------------------------------------------ host keys


def test_a_target_without_host_key_verification_is_refused() -> None:
    with pytest.raises(PermanentDriverError, match="host-key verification"):
        target("cisco_ios", known_hosts=None)
    with pytest.raises(PermanentDriverError, match="pin file"):
        target("cisco_ios", known_hosts=None, host_key="pin")
    with pytest.raises(PermanentDriverError, match="host_key must be one of"):
        target("cisco_ios", host_key="accept-new")
    assert target("cisco_ios", known_hosts=None, host_key="insecure-accept-any").host_key == (
        "insecure-accept-any"
    )


def _kwargs_for(t: SwitchTarget) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def connect(**kw: Any) -> FakeConnection:
        seen.update(kw)
        return FakeConnection(t.vendor)

    asyncio.run(NetmikoSwitch(t, connect=connect).read_admin_state(manifest(t.vendor)["port"]))
    return seen


def test_host_key_modes_reach_netmiko(tmp_path: Path) -> None:
    strict = _kwargs_for(target("huawei"))
    assert strict["ssh_strict"] is True and strict["alt_key_file"] == "/keys/known_hosts"
    assert strict["system_host_keys"] is False

    pin = tmp_path / "state" / "ssh_host_keys" / "sw1"
    pinned = _kwargs_for(target("huawei", known_hosts=None, pin_file=pin))
    # Trust on first use: paramiko's AutoAddPolicy saves an unknown host's key to the file it
    # loaded, and refuses a key that differs from a loaded entry whatever the policy.
    assert pinned["ssh_strict"] is False and pinned["alt_host_keys"] is True
    assert pinned["alt_key_file"] == str(pin) and pinned["system_host_keys"] is False
    assert pin.exists() and pin.stat().st_mode & 0o777 == 0o600  # netmiko loads it only if present

    anyone = _kwargs_for(target("huawei", known_hosts=None, host_key="insecure-accept-any"))
    assert anyone["ssh_strict"] is False and anyone["alt_host_keys"] is False
    assert anyone["system_host_keys"] is False


def test_a_changed_host_key_is_refused_permanently_with_both_fingerprints(tmp_path: Path) -> None:
    offered, pinned = paramiko.ECDSAKey.generate(), paramiko.ECDSAKey.generate()

    def connect(**kw: Any) -> Any:
        # As netmiko does it: paramiko's exception re-raised as a NetmikoTimeoutException.
        try:
            raise paramiko.BadHostKeyException("[192.0.2.10]:2222", offered, pinned)
        except paramiko.SSHException as e:
            raise NetmikoTimeoutException(f"A paramiko SSHException occurred:\n\n{e}\n") from None

    pin = tmp_path / "pins" / "sw1"
    t = target("cisco_ios", known_hosts=None, pin_file=pin, port=2222)
    with pytest.raises(HostKeyRejected) as info:
        asyncio.run(NetmikoSwitch(t, connect=connect).shut("Gi1/0/12"))
    err = info.value
    assert isinstance(err, PermanentDriverError) and not isinstance(err, TransientDriverError)
    assert not err.outcome_unknown
    assert "CHANGED" in str(err) and offered.fingerprint in str(err) and pinned.fingerprint in str(err)
    assert str(pin) in str(err) and "hunter2" not in str(err)


def test_an_unknown_host_key_under_known_hosts_is_refused_before_login() -> None:
    def connect(**kw: Any) -> Any:
        raise NetmikoTimeoutException("Server '[192.0.2.10]:22' not found in known_hosts")

    with pytest.raises(HostKeyRejected, match="not in /keys/known_hosts"):
        asyncio.run(NetmikoSwitch(target("cisco_ios"), connect=connect).shut("Gi1/0/12"))


# ------------------------------------------------------------------------------ check-config
# Issue 11: a config that passes check-config (the unit's ExecStartPre) must never fail at
# start-up, when the enforcer's driver is built with every managed port's CLI name.

SWITCH_CONFIG = """\
version: 1
agent: {{state_dir: {state}}}
templates:
  rental: {{cap_mbps: 10, credit: rental}}
switches:
  sw1:
    address: 192.0.2.10
    vendor: {vendor}
    snmp: {{version: "2c", community: "x"}}
    ports: [{good}, "{bad}", Uplink9]
    protected_ports: [Uplink9]
{ssh}{cli_names}servers:
  - {{id: a, customer: c1, switch: sw1, port: {good}, ips: [192.0.2.1], template: rental,
      monthly_fee_fen: 80000}}
"""
SSH = "    ssh: {username: rw, password: pw}\n"


def switch_config(tmp: Path, vendor: str, bad: str, *, ssh: str = SSH, cli_names: str = "") -> str:
    good = manifest(vendor)["port"]
    return SWITCH_CONFIG.format(state=tmp, vendor=vendor, good=good, bad=bad, ssh=ssh, cli_names=cli_names)


def _yaml_safe(name: str) -> bool:
    return all(ch.isprintable() and ch not in '"\\' for ch in name) and name.strip() == name and bool(name)


@pytest.mark.parametrize("vendor", VENDORS)
def test_check_config_refuses_every_port_name_the_driver_would_refuse(vendor: str, tmp_path: Path) -> None:
    bad_names = [n for n in [*NOT_ACCESS_PORTS[vendor], *INJECTIONS] if _yaml_safe(n)]
    assert bad_names
    for bad in bad_names:
        text = switch_config(tmp_path, vendor, bad)
        if "[" in bad:  # `[1-4]` is a range to expand_ports; not a name anyone can write
            continue
        try:
            cfg = configmod.loads(text, "t.yaml")
        except configmod.ConfigError as e:
            line = text.splitlines().index(next(ln for ln in text.splitlines() if "ports: [" in ln)) + 1
            assert any(i.startswith(f"t.yaml:{line} switches.sw1.ports: the {vendor} driver would refuse"
                                    f" port '{bad}'") for i in e.issues), e.issues
            continue
        # What loads must build: the driver refuses nothing check-config let through.
        switch_driver(cfg.switches["sw1"])
        pytest.fail(f"{bad!r} passed check-config although the {vendor} driver refuses it")


@pytest.mark.parametrize("vendor", VENDORS)
def test_every_config_that_loads_builds_its_switch_driver(vendor: str, tmp_path: Path) -> None:
    good = manifest(vendor)["port"]
    text = switch_config(tmp_path, vendor, "srv-port-2", cli_names=f"    cli_names: {{srv-port-2: {good}}}\n")
    text = text.replace(f"ports: [{good}, ", "ports: [")  # srv-port-2 spelled as the CLI does
    text = text.replace(f"port: {good},", "port: srv-port-2,")
    cfg = configmod.loads(text, "t.yaml")
    assert switch_driver(cfg.switches["sw1"]) is not None
    # Mapped to a name the driver refuses: the error is at the cli_names entry.
    broken = text.replace(f"cli_names: {{srv-port-2: {good}}}", "cli_names: {srv-port-2: Vlan if1}")
    with pytest.raises(configmod.ConfigError) as info:
        configmod.loads(broken, "t.yaml")
    line = broken.splitlines().index(next(ln for ln in broken.splitlines() if "cli_names:" in ln)) + 1
    assert any(i.startswith(f"t.yaml:{line} switches.sw1.cli_names.srv-port-2: the {vendor} driver would"
                            " refuse this interface name") for i in info.value.issues), info.value.issues


def test_port_names_are_not_the_drivers_business_without_ssh(tmp_path: Path) -> None:
    cfg = configmod.loads(switch_config(tmp_path, "cisco_ios", "p7", ssh=""), "t.yaml")
    assert cfg.switches["sw1"].ssh is None  # SNMP only: ifNames such as `p7` are fine


def test_host_key_default_is_trust_on_first_use_pinned_in_the_state_dir(tmp_path: Path) -> None:
    cfg = configmod.loads(switch_config(tmp_path, "cisco_ios", "Gi1/0/13"), "t.yaml")
    ssh = cfg.switches["sw1"].ssh
    assert ssh is not None and ssh.host_key == "pin"
    assert ssh.pin_file == tmp_path / "ssh_host_keys" / "sw1" and cfg.warnings == ()
    driver = switch_driver(cfg.switches["sw1"])
    assert isinstance(driver, NetmikoSwitch)
    assert driver.target.host_key == "pin" and driver.target.pin_file == ssh.pin_file

    known = tmp_path / "known_hosts"
    known.write_text("")
    cfg = configmod.loads(switch_config(tmp_path, "cisco_ios", "Gi1/0/13",
                                        ssh=f"    ssh: {{username: rw, password: pw, known_hosts: {known}}}\n"),
                          "t.yaml")
    ssh = cfg.switches["sw1"].ssh
    assert ssh is not None and ssh.host_key == "known_hosts" and ssh.pin_file is None


def test_accepting_any_host_key_is_an_explicit_loud_opt_in(tmp_path: Path) -> None:
    insecure = "    ssh: {username: rw, password: pw,\n      host_key: insecure-accept-any}\n"
    text = switch_config(tmp_path, "cisco_ios", "Gi1/0/13", ssh=insecure)
    cfg = configmod.loads(text, "t.yaml")
    line = text.splitlines().index("      host_key: insecure-accept-any}") + 1
    assert len(cfg.warnings) == 1
    assert cfg.warnings[0].startswith(f"t.yaml:{line} switches.sw1.ssh.host_key: WARNING insecure-accept-any")
    metrics = Metrics()
    metrics.set_ssh_host_keys(ssh_host_keys(cfg))
    assert metrics.registry.get_sample_value("rackwarden_switch_ssh_host_key_insecure", {"switch": "sw1"}) == 1
    path = tmp_path / "rw.yaml"
    path.write_text(text)
    out = subprocess.run([sys.executable, "-m", "rackwarden.agent.cli", "check-config", str(path)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "WARNING insecure-accept-any" in out.stdout, out.stdout + out.stderr

    # The modes contradict a known_hosts file, or need one: errors, not silent choices.
    for ssh, why in (
        ("    ssh: {username: rw, password: pw, host_key: known_hosts}\n", "needs a known_hosts file"),
        (f"    ssh: {{username: rw, password: pw, host_key: pin, known_hosts: {path}}}\n",
         "not used with host_key: pin"),
        ("    ssh: {username: rw, password: pw, host_key: accept-new}\n", "is not one of"),
    ):
        with pytest.raises(configmod.ConfigError) as info:
            configmod.loads(switch_config(tmp_path, "cisco_ios", "Gi1/0/13", ssh=ssh), "t.yaml")
        assert any(why in i for i in info.value.issues), info.value.issues
