"""Issue 11 in the lab: switch faults over real SSH never end as a false success or a second shut.

Real netmiko, through a TCP fault proxy (tests/lab/faultproxy.py), into a real OpenSSH whose
login shell is the IOS emulator (tests/lab/cli_emulator.py), which moves real veth ports in a
network namespace. The enforcer is the real one, built from a real config by the agent's own
wiring (`switch_driver`), with its read-back reading the kernel's IFF_UP of the port: what
snmpd reports as ifAdminStatus in the full lab (tests/integration/test_enforcement_lab.py).

Every case ends with: one action record; a state decided by the read-back (APPLIED, FAILED or
UNKNOWN), paged when not APPLIED; no second shut; and a person's `no shutdown` standing.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paramiko
import pytest
from rackwarden.agent import config as configmod
from rackwarden.agent.actions import ActionRow, ActionStore
from rackwarden.agent.clock import SystemClock
from rackwarden.agent.enforcer import Enforcer
from rackwarden.agent.metering import PortReport
from rackwarden.agent.metrics import Metrics
from rackwarden.agent.wiring import switch_driver
from rackwarden.drivers.switch import DriverError
from rackwarden.drivers.switch.session import NetmikoSwitch, SwitchTarget
from rackwarden.policies.cap import CapVerdict
from rackwarden.policies.metering import RateSample

from tests.lab.faultproxy import FaultProxy
from tests.lab.sshd import SshdHandle, start_sshd

pytestmark = pytest.mark.lab

NS = "rwt11-sw"
ROOT_IF, NS_IF = "rwt11-m0", "rwt11-m1"
ROOT_ADDR, SWITCH_ADDR = "198.19.211.1", "198.19.211.2"
SSH_PORT = 2211
EMULATOR = Path(__file__).resolve().parents[1] / "lab" / "cli_emulator.py"
PORTS = {"GigabitEthernet0/1": "p1", "GigabitEthernet0/2": "p2", "GigabitEthernet0/3": "p3"}
SERVERS = {"s1": "GigabitEthernet0/1", "s2": "GigabitEthernet0/2", "s3": "GigabitEthernet0/3"}
IFF_UP = 0x1


# ------------------------------------------------------------------------------ lab plumbing


def sh(*argv: str) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {proc.stderr.strip()}")
    return proc.stdout


def in_ns(*argv: str) -> str:
    return sh("ip", "netns", "exec", NS, *argv)


def admin_up(port: str) -> bool:
    """IFF_UP of the port's veth inside the switch namespace: the effect, not the CLI's word."""
    return bool(int(in_ns("cat", f"/sys/class/net/{PORTS[port]}/flags"), 16) & IFF_UP)


def remove_stale_lab() -> None:
    if NS in sh("ip", "netns", "list").split():
        for pid in sh("ip", "netns", "pids", NS).split():
            try:
                os.kill(int(pid), signal.SIGKILL)  # processes this module started last time
            except ProcessLookupError:
                pass
        sh("ip", "netns", "del", NS)
    if subprocess.run(["ip", "link", "show", ROOT_IF], capture_output=True).returncode == 0:
        sh("ip", "link", "del", ROOT_IF)


@pytest.fixture(scope="module")
def switch_ns() -> Iterator[str]:
    remove_stale_lab()
    sh("ip", "netns", "add", NS)
    try:
        sh("ip", "link", "add", ROOT_IF, "type", "veth", "peer", "name", NS_IF, "netns", NS)
        sh("ip", "addr", "add", f"{ROOT_ADDR}/30", "dev", ROOT_IF)
        sh("ip", "link", "set", ROOT_IF, "up")
        in_ns("ip", "addr", "add", f"{SWITCH_ADDR}/30", "dev", NS_IF)
        in_ns("ip", "link", "set", NS_IF, "up")
        in_ns("ip", "link", "set", "lo", "up")
        for dev in PORTS.values():
            in_ns("ip", "link", "add", dev, "type", "veth", "peer", "name", "h" + dev[1:])
            in_ns("ip", "link", "set", "h" + dev[1:], "up")
            in_ns("ip", "link", "set", dev, "up")
        yield NS
    finally:
        sh("ip", "netns", "del", NS)


@dataclass
class Switch:
    """The emulated IOS switch: its sshd, the emulator's map (faults) and its transcript."""

    sshd: SshdHandle
    map_path: Path
    base_map: dict[str, Any]
    workdir: Path

    def faults(self, **faults: float) -> None:
        """Read by the emulator at each login, so they apply from the next session on."""
        self.map_path.write_text(json.dumps({**self.base_map, "faults": faults}))

    @property
    def log(self) -> Path:
        return Path(self.base_map["log_file"])

    def lines(self, text: str) -> int:
        """How many times the emulator received exactly this line."""
        if not self.log.exists():
            return 0
        return sum(1 for ln in self.log.read_text().splitlines() if ln.endswith(f" {text!r}"))

    def events(self, marker: str) -> int:
        if not self.log.exists():
            return 0
        return sum(1 for ln in self.log.read_text().splitlines() if marker in ln)

    def live_sessions(self) -> int:
        n = 0
        for f in (self.workdir / "sessions").glob("*.pid"):
            try:
                os.kill(int(f.stem), 0)
                n += 1
            except (ProcessLookupError, ValueError):
                pass
        return n

    @property
    def startup(self) -> Path:
        return Path(self.base_map["startup_file"])


def start_switch(workdir: Path) -> Switch:
    workdir.mkdir(parents=True, exist_ok=True)
    base_map: dict[str, Any] = {
        "hostname": "sw1",
        "interfaces": PORTS,
        "login_privileged": True,
        "startup_file": str(workdir / "startup.json"),
        "log_file": str(workdir / "cli.log"),
    }
    map_path = workdir / "map.json"
    map_path.write_text(json.dumps(base_map))
    handle = start_sshd(NS, SWITCH_ADDR, SSH_PORT, workdir,
                        [sys.executable, "-I", "-S", str(EMULATOR), "--flavour", "ios", "--map", str(map_path)])
    return Switch(handle, map_path, base_map, workdir)


@pytest.fixture(scope="module")
def switch(switch_ns: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Switch]:
    sw = start_switch(tmp_path_factory.mktemp("sw1"))
    yield sw
    sw.sshd.stop()
    assert not Path(f"/proc/{sw.sshd.pid}").exists()


@pytest.fixture(scope="module")
def proxy(switch: Switch) -> Iterator[FaultProxy]:
    p = FaultProxy((SWITCH_ADDR, SSH_PORT)).start()
    yield p
    p.stop()


class Human:
    """A person on the switch's CLI in a session of their own (paramiko, an interactive shell)."""

    def __init__(self, sw: Switch) -> None:
        self.client = paramiko.SSHClient()
        self.client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # the test's own person
        self.client.connect(SWITCH_ADDR, SSH_PORT, username=_user(), key_filename=str(sw.sshd.client_key),
                            look_for_keys=False, allow_agent=False, timeout=10)
        self.chan = self.client.invoke_shell()
        self.expect("#")

    def expect(self, tail: str, timeout_s: float = 10) -> str:
        buf = ""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.chan.recv_ready():
                buf += bytes(self.chan.recv(65536)).decode(errors="replace")
                if buf.rstrip().endswith(tail):
                    return buf
            else:
                time.sleep(0.02)
        raise AssertionError(f"no {tail!r} from the switch CLI: {buf!r}")

    def type(self, line: str) -> str:
        self.chan.send(line + "\r")
        return self.expect("#")

    def no_shutdown(self, port: str) -> None:
        for line in ("configure terminal", f"interface {port}", "no shutdown", "end"):
            self.type(line)

    def close(self) -> None:
        self.chan.close()
        self.client.close()


def _user() -> str:
    import getpass

    return getpass.getuser()


# ------------------------------------------------------------------------------ the agent side

CONFIG = """\
version: 1
agent: {{state_dir: {state}, mode: enforce}}
enforcement:
  safety: {{max_shuts_per_switch: 50, max_shuts_total: 50}}
templates:
  rental: {{cap_mbps: 10, window_s: 300, credit: rental}}
switches:
  sw1:
    address: 127.0.0.1
    vendor: cisco_ios
    snmp: {{version: "2c", community: "x"}}
    ports: ["GigabitEthernet0/[1-3]"]
    ssh: {{username: {user}, port: {port}, key_file: {key}, timeout_s: 3, save_config: {save}{extra}}}
servers:
"""
SERVER_LINES = "".join(
    f"  - {{id: {sid}, customer: c-{sid}, switch: sw1, port: {port}, ips: [192.0.2.{i}], template: rental,"
    f" monthly_fee_fen: 80000}}\n"
    for i, (sid, port) in enumerate(SERVERS.items(), start=1)
)


class Pager:
    def __init__(self) -> None:
        self.alerts: list[tuple[str, str, str]] = []

    async def alert(self, name: str, severity: str, labels: dict[str, str], summary: str, description: str,
                    at: datetime) -> dict[str, bool]:
        self.alerts.append((name, severity, summary))
        return {"test": True}

    def names(self) -> list[str]:
        return [a[0] for a in self.alerts]


@dataclass
class Agent:
    """The real enforcer and the real switch driver (from config, via the agent's wiring)."""

    cfg: configmod.Config
    store: ActionStore
    enf: Enforcer
    pager: Pager
    snmp_dead: list[bool] = field(default_factory=lambda: [False])

    def suspend(self, server: str) -> None:
        asyncio.run(self.enf.suspend(server, "operator", "issue 11 lab", "lab"))

    def rows(self, server: str) -> list[ActionRow]:
        return self.store.actions(server)

    def poll(self, server: str) -> None:
        """One metering poll reporting the port as the switch has it (drift is seen here)."""
        s = self.cfg.server(server)
        assert s is not None
        at = datetime.now(UTC)
        admin = "up" if admin_up(s.port) else "down"
        sample = RateSample("sw1", s.port, at, "ok", interval_s=60, in_octets=1, out_octets=1,
                            in_bps=1e5, out_bps=1e5, admin=admin)
        verdict = CapVerdict(s.id, at, "ok", False, 10_000_000, "out", True, judged_bps=1e5,
                             covered_s=300)
        asyncio.run(self.enf.on_reports([PortReport(s, sample, verdict)]))
        asyncio.run(self.enf.tick())

    def close(self) -> None:
        self.store.close()


def make_agent(tmp: Path, sw: Switch, proxy: FaultProxy, *, save: bool = False, db: str = "actions") -> Agent:
    text = CONFIG.format(state=tmp / "state", user=_user(), port=proxy.port, key=sw.sshd.client_key,
                         save="true" if save else "false", extra="") + SERVER_LINES
    cfg = configmod.loads(text, str(tmp / "rw.yaml"))
    driver = switch_driver(cfg.switches["sw1"])
    assert driver is not None
    store = ActionStore(f"sqlite:///{tmp / f'{db}.sqlite'}")
    store.start()
    pager = Pager()
    dead = [False]

    async def readback(switch: str, port: str) -> str | None:
        if dead[0]:
            return None  # SNMP unanswered: the outcome cannot be known
        return "up" if admin_up(port) else "down"

    enf = Enforcer(cfg, store=store, switches={"sw1": driver}, readback=readback, clock=SystemClock(),
                   metrics=Metrics(), oncall=pager, action_timeout_s=60)
    asyncio.run(enf.start())
    return Agent(cfg, store, enf, pager, dead)


@pytest.fixture
def ready(switch: Switch, proxy: FaultProxy) -> Iterator[None]:
    """Every case starts from a working switch: no faults, every port up, no session left."""

    def settle() -> None:
        switch.faults()
        proxy.reset()
        for port in PORTS:
            if not admin_up(port):
                in_ns("ip", "link", "set", PORTS[port], "up")
        wait_for("the emulator's sessions to end", lambda: switch.live_sessions() == 0, 20)
        switch.log.write_text("")  # each case counts only its own lines

    settle()
    yield
    settle()


def wait_for(what: str, cond: Callable[[], Any], timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def cut_when(proxy: FaultProxy, cond: Callable[[], bool], timeout_s: float = 20) -> threading.Thread:
    """Cut every proxied connection as soon as `cond` holds (the emulator logged a line)."""

    def watch() -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if cond():
                proxy.cut()
                return
            time.sleep(0.01)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t


def the_one_record(agent: Agent, server: str) -> Any:
    rows = agent.rows(server)
    assert [(r.action, r.mode) for r in rows] == [("shut", "enforce")], rows
    print(f"{server}: {rows[0].state}, read back {rows[0].detail.get('snmp_admin')}; {rows[0].detail.get('error')}")
    return rows[0]


def human_no_shutdown_stands(agent: Agent, sw: Switch, server: str, drift_page: bool = True) -> None:
    """A person re-enables the port by hand; the agent sees it, pages (when it held the port
    shut for sure: APPLIED), and does not shut again."""
    port = SERVERS[server]
    shuts = sw.lines("shutdown")
    human = Human(sw)
    try:
        human.no_shutdown(port)
    finally:
        human.close()
    assert admin_up(port)
    agent.poll(server)
    assert ("RackWardenEnforcementDrift" in agent.pager.names()) is drift_page
    agent.poll(server)
    assert admin_up(port) and sw.lines("shutdown") == shuts  # no second shut
    assert len(agent.rows(server)) == 1


# ------------------------------------------------------------------------------ the cases


def test_slow_and_sliced_link_applies_once_and_a_humans_no_shutdown_stands(
    ready: None, switch: Switch, proxy: FaultProxy, tmp_path: Path
) -> None:
    proxy.latency_s = 0.05  # per chunk, both ways: a congested management path
    proxy.slice_bytes = 5  # every write arrives in 5-byte pieces
    agent = make_agent(tmp_path, switch, proxy)
    agent.suspend("s1")
    row = the_one_record(agent, "s1")
    assert row.state == "APPLIED" and row.detail["snmp_admin"] == "down", row.detail
    assert not admin_up("GigabitEthernet0/1") and switch.lines("shutdown") == 1
    assert "RackWardenShut" in agent.pager.names()
    proxy.reset()
    human_no_shutdown_stands(agent, switch, "s1")
    agent.close()


def test_connection_cut_after_the_shutdown_line_is_decided_by_the_read_back(
    ready: None, switch: Switch, proxy: FaultProxy, tmp_path: Path
) -> None:
    switch.faults(hang_after_shutdown_s=2)  # the port goes down, the prompt is late
    agent = make_agent(tmp_path, switch, proxy)
    # Cut once the emulator has really taken the port down, while its prompt is still pending.
    watcher = cut_when(proxy, lambda: switch.events("ip link set p2 down -> ok") > 0)
    agent.suspend("s2")
    watcher.join(timeout=1)
    row = the_one_record(agent, "s2")
    # The driver could not know (outcome unknown); the read-back says the shut took.
    assert "SessionDropped" in row.detail["error"] and "read the port state back" in row.detail["error"]
    assert row.state == "APPLIED" and row.detail["snmp_admin"] == "down"
    assert not admin_up("GigabitEthernet0/2")
    switch.faults()
    human_no_shutdown_stands(agent, switch, "s2")
    agent.close()


def test_connection_cut_before_the_shutdown_line_is_failed_and_paged(
    ready: None, switch: Switch, proxy: FaultProxy, tmp_path: Path
) -> None:
    switch.faults(slow_interface_s=2)
    agent = make_agent(tmp_path, switch, proxy)
    watcher = cut_when(proxy, lambda: switch.lines("interface GigabitEthernet0/3") > 0)
    agent.suspend("s3")
    watcher.join(timeout=1)
    row = the_one_record(agent, "s3")
    assert "SessionDropped" in row.detail["error"] and "nothing took effect" in row.detail["error"]
    assert row.state == "FAILED" and row.detail["snmp_admin"] == "up"
    assert "RackWardenShutFailed" in agent.pager.names()
    assert switch.lines("shutdown") == 0 and admin_up("GigabitEthernet0/3")
    switch.faults()
    agent.poll("s3")  # later polls and ticks retry nothing: a FAILED shut is a person's now
    agent.poll("s3")
    assert switch.lines("shutdown") == 0 and len(agent.rows("s3")) == 1
    agent.close()


def test_switch_that_hangs_after_shutdown_is_decided_by_the_read_back(
    ready: None, switch: Switch, proxy: FaultProxy, tmp_path: Path
) -> None:
    switch.faults(hang_after_shutdown_s=8)  # far beyond the 3 s read timeout
    agent = make_agent(tmp_path, switch, proxy)
    agent.suspend("s1")
    row = the_one_record(agent, "s1")
    assert "SessionDropped" in row.detail["error"]
    assert row.state == "APPLIED" and row.detail["snmp_admin"] == "down"
    switch.faults()
    human_no_shutdown_stands(agent, switch, "s1")
    agent.close()


def test_hang_with_no_read_back_is_unknown_and_paged(
    ready: None, switch: Switch, proxy: FaultProxy, tmp_path: Path
) -> None:
    switch.faults(hang_after_shutdown_s=8)
    agent = make_agent(tmp_path, switch, proxy)
    agent.snmp_dead[0] = True
    agent.suspend("s2")
    row = the_one_record(agent, "s2")
    assert row.state == "UNKNOWN" and row.detail["snmp_admin"] is None
    assert "RackWardenShutUnknown" in agent.pager.names()
    assert switch.lines("shutdown") == 1
    agent.snmp_dead[0] = False
    switch.faults()
    human_no_shutdown_stands(agent, switch, "s2", drift_page=False)  # already paged as UNKNOWN
    agent.close()


def test_save_that_asks_confirm_is_answered(
    ready: None, switch: Switch, proxy: FaultProxy, tmp_path: Path
) -> None:
    switch.faults(confirm_save=True)
    switch.startup.unlink(missing_ok=True)
    agent = make_agent(tmp_path, switch, proxy, save=True)
    agent.suspend("s3")
    row = the_one_record(agent, "s3")
    assert row.state == "APPLIED" and row.detail["cli_agrees"] is True
    assert switch.events("answer ") >= 1  # the [confirm] question was put and answered
    assert json.loads(switch.startup.read_text())["interfaces"]["GigabitEthernet0/3"] == "down"
    switch.faults()
    human_no_shutdown_stands(agent, switch, "s3")
    agent.close()


def test_session_limit_refuses_the_agent_nothing_is_sent_failed_and_paged(
    ready: None, switch: Switch, proxy: FaultProxy, tmp_path: Path
) -> None:
    switch.faults(max_sessions=1)
    human = Human(switch)  # a person holds the only vty line
    try:
        agent = make_agent(tmp_path, switch, proxy)
        agent.suspend("s1")
        row = the_one_record(agent, "s1")
        assert row.state == "FAILED" and row.detail["snmp_admin"] == "up", row.detail
        assert "nothing was sent" in row.detail["error"], row.detail["error"]
        assert "RackWardenShutFailed" in agent.pager.names()
        assert switch.events("refused: session limit") >= 1 and switch.lines("shutdown") == 0
        assert admin_up("GigabitEthernet0/1")
    finally:
        human.close()
    agent.poll("s1")
    agent.poll("s1")
    assert switch.lines("shutdown") == 0 and len(agent.rows("s1")) == 1  # not retried by itself
    agent.close()


def test_reply_no_vendor_pattern_knows_is_failed_with_the_devices_words(
    ready: None, switch: Switch, proxy: FaultProxy, tmp_path: Path
) -> None:
    switch.faults(unknown_command_on_shutdown=True)
    agent = make_agent(tmp_path, switch, proxy)
    agent.suspend("s2")
    row = the_one_record(agent, "s2")
    assert row.state == "FAILED" and row.detail["snmp_admin"] == "up"
    assert "UnexplainedReply" in row.detail["error"] and "Unknown command" in row.detail["error"]
    assert "RackWardenShutFailed" in agent.pager.names()
    assert row.detail.get("cli_agrees") is None  # never taken for a success
    agent.close()


@pytest.mark.parametrize("vendor", ["huawei", "juniper_junos"])
def test_wrong_vendor_is_reported_at_the_first_session_and_nothing_is_typed(
    ready: None, switch: Switch, proxy: FaultProxy, tmp_path: Path, vendor: str
) -> None:
    port = {"huawei": "GigabitEthernet0/0/1", "juniper_junos": "ge-0/0/1"}[vendor]
    sw = NetmikoSwitch(SwitchTarget(
        name="sw1", vendor=vendor, host="127.0.0.1", port=proxy.port, username=_user(),
        key_file=switch.sshd.client_key, pin_file=tmp_path / "pin", read_timeout_s=3.0,
    ))
    with pytest.raises(DriverError) as info:
        asyncio.run(sw.shut(port))
    print(f"{vendor}: {type(info.value).__name__}: {info.value}")
    assert f"probable wrong `vendor: {vendor}`" in str(info.value) and "nothing was sent" in str(info.value)
    assert switch.events(" 'login'") == 1  # it did log in: the CLI itself gave it away
    # and it logged out again: a half-open session would hold a vty line until exec-timeout
    wait_for("the emulator session to end", lambda: switch.live_sessions() == 0, 10)
    assert switch.lines("configure terminal") == switch.lines("system-view") == 0
    assert switch.lines("configure private") == 0 and switch.lines("shutdown") == 0


def test_a_vrp_cli_configured_as_cisco_ios_is_named_at_the_first_session(
    switch_ns: str, tmp_path: Path
) -> None:
    # netmiko's cisco_ios preparation gets through a VRP login (`<sw3>` ends in `>`): the
    # driver's own prompt check is what tells, before any line is typed.
    work = tmp_path / "vrp"
    work.mkdir()
    vrp_map = {"hostname": "sw3", "interfaces": {"GigabitEthernet0/0/1": "p3"}, "log_file": str(work / "cli.log"),
               "startup_file": str(work / "startup.json")}
    (work / "map.json").write_text(json.dumps(vrp_map))
    sshd = start_sshd(NS, SWITCH_ADDR, SSH_PORT + 1, work,
                      [sys.executable, "-I", "-S", str(EMULATOR), "--flavour", "vrp", "--map", str(work / "map.json")])
    try:
        sw = NetmikoSwitch(SwitchTarget(
            name="sw3", vendor="cisco_ios", host=SWITCH_ADDR, port=SSH_PORT + 1, username=_user(),
            key_file=sshd.client_key, pin_file=tmp_path / "pin", read_timeout_s=3.0,
        ))
        from rackwarden.drivers.switch import WrongVendor  # new in issue 11; keeps HEAD importable

        with pytest.raises(WrongVendor) as info:
            asyncio.run(sw.shut("GigabitEthernet0/1"))
        print(f"vrp as cisco_ios: {info.value}")
        assert "'<sw3>'" in str(info.value) and "huawei" in str(info.value)
        typed = [ln for ln in (work / "cli.log").read_text().splitlines() if "'login'" not in ln]
        assert not [ln for ln in typed if "interface" in ln or "shutdown" in ln or "system-view" in ln]
    finally:
        sshd.stop()


def test_changed_host_key_is_refused_before_login_failed_and_paged(
    ready: None, switch: Switch, proxy: FaultProxy, tmp_path: Path
) -> None:
    # No known_hosts in the config: trust on first use, pinned in the state directory.
    agent = make_agent(tmp_path, switch, proxy)
    agent.suspend("s1")
    assert the_one_record(agent, "s1").state == "APPLIED"
    pin = tmp_path / "state" / "ssh_host_keys" / "sw1"
    pinned = pin.read_text()
    assert f"[127.0.0.1]:{proxy.port}" in pinned
    assert switch.sshd.host_public_key.read_text().split()[1] in pinned
    agent.close()

    # Someone else answers at the switch's address now: a different host key.
    switch.sshd.stop()
    (switch.workdir / "ssh_host_ed25519_key").unlink()
    (switch.workdir / "ssh_host_ed25519_key.pub").unlink()
    other = start_switch(switch.workdir)
    switch.sshd = other.sshd
    logins = switch.events(" 'login'")
    accepted = sum("Accepted publickey" in ln for ln in switch.sshd.log_lines())

    agent = make_agent(tmp_path, switch, proxy, db="actions-after-change")  # same state dir, same pin
    agent.suspend("s2")
    row = the_one_record(agent, "s2")
    assert row.state == "FAILED" and row.detail["snmp_admin"] == "up"
    assert "HostKeyRejected" in row.detail["error"] and "CHANGED" in row.detail["error"], row.detail
    assert "RackWardenShutFailed" in agent.pager.names()
    # Refused before authentication: no login, no CLI session, no command.
    assert switch.events(" 'login'") == logins
    assert sum("Accepted publickey" in ln for ln in switch.sshd.log_lines()) == accepted
    assert admin_up("GigabitEthernet0/2")
    assert pin.read_text() == pinned  # the pin was not replaced by the stranger's key
    agent.close()
