"""One contract suite for every switch vendor: names, rendering, read-back, errors, sessions."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from netmiko.exceptions import (
    ConfigInvalidException,
    NetmikoAuthenticationException,
    NetmikoTimeoutException,
    ReadTimeout,
)
from netmiko.ssh_dispatcher import CLASS_MAPPER
from rackwarden.drivers.switch import (
    DRIVERS,
    AuthenticationFailed,
    CommandRejected,
    DriverError,
    InvalidPortName,
    PermanentDriverError,
    SessionDropped,
    SwitchUnreachable,
    TransientDriverError,
    UnknownVendor,
    VendorCli,
    change_script,
    error_match,
    save_succeeded,
    vendor_cli,
)
from rackwarden.drivers.switch.base import FORBIDDEN_PORT_CHARS, pending_question
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

    def __init__(self, vendor: str, fail_on: str = "", exc: BaseException | None = None) -> None:
        self.vendor = vendor
        self.fail_on = fail_on
        self.exc = exc
        self.sent: list[str] = []
        self.base_prompt = "sw1"
        self.RETURN = "\n"
        self.closed = False
        with FakeConnection.guard:
            FakeConnection.active += 1
            FakeConnection.peak = max(FakeConnection.peak, FakeConnection.active)

    def check_enable_mode(self) -> bool:
        return True

    def send_config_set(self, commands: list[str], **kwargs: Any) -> str:
        assert kwargs["error_pattern"] == DRIVERS[self.vendor].ERROR_PATTERN
        assert kwargs["enter_config_mode"] is False and kwargs["exit_config_mode"] is False
        self.sent.extend(commands)
        time.sleep(0.005)  # widen any race between overlapping sessions
        if self.exc is not None and commands[0].startswith(self.fail_on):
            raise self.exc
        return ""

    def send_command(self, command: str, **kwargs: Any) -> str:
        self.sent.append(command)
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


def target(vendor: str, **overrides: Any) -> SwitchTarget:
    base: dict[str, Any] = {
        "name": "sw1",
        "vendor": vendor,
        "host": "192.0.2.10",
        "username": "rackwarden",
        "password": Mask("hunter2-pw"),
        "enable_secret": Mask("hunter2-en"),
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
    exc = ConfigInvalidException(f"Invalid input detected at command: {line}")
    sw = NetmikoSwitch(target(vendor), connect=lambda **kw: FakeConnection(vendor, line, exc))
    with pytest.raises(CommandRejected) as info:
        asyncio.run(sw.shut(port))
    assert not info.value.outcome_unknown
    assert info.value.switch == "sw1" and info.value.port


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
