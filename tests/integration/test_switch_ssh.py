"""Real netmiko over real OpenSSH into the lab CLI emulator: ports really move, the rails hold."""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from rackwarden.drivers.switch import (
    AuthenticationFailed,
    CommandRejected,
    HostKeyRejected,
    InvalidPortName,
    PermanentDriverError,
    SessionDropped,
    TransientDriverError,
)
from rackwarden.drivers.switch.session import NetmikoSwitch, SwitchTarget

from tests.lab.sshd import SshdHandle, start_sshd

pytestmark = pytest.mark.lab

NS = "rwt5-sw"
ROOT_IF, NS_IF = "rwt5-m0", "rwt5-m1"
ROOT_ADDR, SWITCH_ADDR = "198.19.55.1", "198.19.55.2"
EMULATOR = Path(__file__).resolve().parents[1] / "lab" / "cli_emulator.py"
IFF_UP = 0x1
ENABLE_SECRET = "lab-enable-7f3a"


@dataclass(frozen=True)
class Flavour:
    vendor: str  # netmiko device_type = driver name
    flavour: str  # emulator dialect
    cli_name: str  # what the inventory says
    dev: str  # the veth it really drives
    ssh_port: int
    hostname: str


FLAVOURS = [
    Flavour("cisco_ios", "ios", "GigabitEthernet0/1", "p1", 2201, "sw1"),
    Flavour("arista_eos", "eos", "Ethernet1", "p2", 2202, "sw2"),
    Flavour("huawei", "vrp", "GigabitEthernet0/0/1", "p3", 2203, "sw3"),
    Flavour("hp_comware", "comware", "GigabitEthernet1/0/1", "p4", 2204, "sw4"),
]
IDS = [f.vendor for f in FLAVOURS]
# The `linux` driver talks to a real shell: bash as the ForceCommand, `ip link` on this veth.
LINUX_DEV, LINUX_SSH_PORT = "p5", 2205


class Mask:
    """The config layer's secret type stands here: only reveal() yields the value."""

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret(***)"


@dataclass
class Rig:
    """One emulated switch: its sshd, its map file and the switch driver pointed at it."""

    flavour: Flavour
    sshd: SshdHandle
    map_path: Path
    base_map: dict[str, Any]
    known_hosts: Path

    def switch(self, **overrides: Any) -> NetmikoSwitch:
        fields: dict[str, Any] = {
            "name": f"lab-{self.flavour.hostname}",
            "vendor": self.flavour.vendor,
            "host": SWITCH_ADDR,
            "port": self.flavour.ssh_port,
            "username": getpass.getuser(),
            "key_file": self.sshd.client_key,
            "known_hosts": self.known_hosts,  # strict host-key checking, as in production
            "enable_secret": Mask(ENABLE_SECRET),
            "conn_timeout_s": 5.0,
            "read_timeout_s": 2.5,  # bounds how long a dropped session takes to surface
        }
        fields.update(overrides)
        return NetmikoSwitch(SwitchTarget(**fields))

    def faults(self, **faults: bool) -> None:
        """Read by the emulator at each login, so it applies from the next session on."""
        self.map_path.write_text(json.dumps({**self.base_map, "faults": faults}))

    @property
    def startup(self) -> Path:
        return Path(self.base_map["startup_file"])


# ------------------------------------------------------------------------------ lab plumbing


def sh(*argv: str) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {proc.stderr.strip()}")
    return proc.stdout


def in_ns(*argv: str) -> str:
    return sh("ip", "netns", "exec", NS, *argv)


def admin_up(dev: str) -> bool:
    """IFF_UP as the kernel has it inside the switch namespace: the effect, not the CLI."""
    return bool(int(in_ns("cat", f"/sys/class/net/{dev}/flags"), 16) & IFF_UP)


def remove_stale_lab() -> None:
    """A crashed earlier run of this module may have left its namespace and processes."""
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
        # Management link: the agent (root namespace) reaches the switch's sshd over it.
        sh("ip", "link", "add", ROOT_IF, "type", "veth", "peer", "name", NS_IF, "netns", NS)
        sh("ip", "addr", "add", f"{ROOT_ADDR}/30", "dev", ROOT_IF)
        sh("ip", "link", "set", ROOT_IF, "up")
        in_ns("ip", "addr", "add", f"{SWITCH_ADDR}/30", "dev", NS_IF)
        in_ns("ip", "link", "set", NS_IF, "up")
        in_ns("ip", "link", "set", "lo", "up")
        # Customer ports: p<n> is the switch port, h<n> its server-side peer.
        for dev in [f.dev for f in FLAVOURS] + [LINUX_DEV]:
            peer = "h" + dev[1:]
            in_ns("ip", "link", "add", dev, "type", "veth", "peer", "name", peer)
            in_ns("ip", "link", "set", peer, "up")
            in_ns("ip", "link", "set", dev, "up")
        yield NS
    finally:
        sh("ip", "netns", "del", NS)
        assert NS not in sh("ip", "netns", "list").split()


@pytest.fixture(scope="module")
def rigs(switch_ns: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Rig]]:
    out: dict[str, Rig] = {}
    try:
        for f in FLAVOURS:
            work = tmp_path_factory.mktemp(f"sshd-{f.flavour}")
            base_map: dict[str, Any] = {
                "hostname": f.hostname,
                "interfaces": {f.cli_name: f.dev},
                "enable_secret": ENABLE_SECRET if f.flavour == "ios" else None,
                "startup_file": str(work / "startup.json"),
                "log_file": str(work / "cli.log"),
            }
            map_path = work / "map.json"
            map_path.write_text(json.dumps(base_map))
            handle = start_sshd(
                switch_ns,
                SWITCH_ADDR,
                f.ssh_port,
                work,
                [
                    *(sys.executable, "-I", "-S", str(EMULATOR)),
                    *("--flavour", f.flavour, "--map", str(map_path)),
                ],
            )
            known_hosts = work / "known_hosts"
            known_hosts.write_text(handle.known_hosts_line())
            out[f.vendor] = Rig(f, handle, map_path, base_map, known_hosts)
        yield out
    finally:
        pids = [r.sshd.pid for r in out.values()]
        for rig in out.values():
            rig.sshd.stop()
        assert not [pid for pid in pids if Path(f"/proc/{pid}").exists()]


@pytest.fixture(scope="module")
def linux_sshd(switch_ns: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshdHandle]:
    work = tmp_path_factory.mktemp("sshd-linux")
    shell = [
        *("/usr/bin/env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "TERM=dumb"),
        *("PS1=lab-host# ", "/bin/bash", "--norc", "--noprofile", "-i"),
    ]
    handle = start_sshd(switch_ns, SWITCH_ADDR, LINUX_SSH_PORT, work, shell)
    yield handle
    handle.stop()
    assert not Path(f"/proc/{handle.pid}").exists()


def ready(rig: Rig) -> None:
    """No faults armed and the port up: every scenario starts from a working switch."""
    rig.faults()
    if not admin_up(rig.flavour.dev):
        in_ns("ip", "link", "set", rig.flavour.dev, "up")


def on_every_vendor(rigs: dict[str, Rig], scenario: Callable[[Rig], Awaitable[None]]) -> None:
    """Run `scenario` against all emulated switches at once and report failures per vendor.

    Concurrent on purpose: the driver serialises sessions per switch only, so four switches
    must not wait on each other (and the module stays well under a minute).
    """
    for r in rigs.values():
        ready(r)

    async def everyone() -> list[BaseException | None]:
        return await asyncio.gather(*(scenario(r) for r in rigs.values()), return_exceptions=True)

    try:
        results = asyncio.run(everyone())
    finally:
        for r in rigs.values():
            ready(r)
    failed = [(v, e) for v, e in zip(rigs, results, strict=True) if e is not None]
    if failed:
        report = "\n".join(
            f"--- {vendor}\n{''.join(traceback.format_exception(exc))}" for vendor, exc in failed
        )
        pytest.fail(f"failed on {', '.join(v for v, _ in failed)}:\n{report}", pytrace=False)


# ------------------------------------------------------------------------------ the proofs


def test_every_vendor_is_served() -> None:
    assert IDS == ["cisco_ios", "arista_eos", "huawei", "hp_comware"]


def test_shut_takes_the_port_down_and_restore_brings_it_back(rigs: dict[str, Rig]) -> None:
    async def scenario(rig: Rig) -> None:
        sw, port, dev = rig.switch(), rig.flavour.cli_name, rig.flavour.dev
        assert admin_up(dev)

        shut = await sw.shut(port)
        assert not admin_up(dev)  # the kernel port really went down
        assert shut.cli_admin == "down" and shut.agrees and shut.saved is None
        assert (await sw.read_admin_state(port)).admin == "down"

        restore = await sw.restore(port)
        assert admin_up(dev)
        assert restore.cli_admin == "up" and restore.agrees  # read back in the same session
        # Durations are figures (bench/enforce.py), not pass marks: ~0.6-1.2 s per session on an
        # idle machine, 10-15 s seen with four logins at once on a loaded CI host.
        print(f"{rig.flavour.dev}: shut {shut.duration_s:.2f} s, restore {restore.duration_s:.2f} s")

    on_every_vendor(rigs, scenario)


def test_invalid_input_reply_is_permanent_and_leaves_the_port_alone(rigs: dict[str, Rig]) -> None:
    async def scenario(rig: Rig) -> None:
        rig.faults(reject_shutdown=True)
        sw, port, dev = rig.switch(), rig.flavour.cli_name, rig.flavour.dev
        with pytest.raises(CommandRejected) as info:
            await sw.shut(port)
        assert isinstance(info.value, PermanentDriverError)
        assert not info.value.outcome_unknown
        assert "shutdown" in str(info.value)
        assert admin_up(dev)
        assert (await sw.read_admin_state(port)).admin == "up"

    on_every_vendor(rigs, scenario)


def test_dropped_session_after_shutdown_is_transient_with_unknown_outcome(
    rigs: dict[str, Rig],
) -> None:
    async def scenario(rig: Rig) -> None:
        rig.faults(drop_after_shutdown=True)
        sw, port, dev = rig.switch(), rig.flavour.cli_name, rig.flavour.dev
        with pytest.raises(SessionDropped) as info:
            await sw.shut(port)
        assert isinstance(info.value, TransientDriverError)
        assert info.value.outcome_unknown
        assert "dropped" in str(info.value) and "read the port state back" in str(info.value)
        # "Unknown" was the honest answer: the switch did take the port down before dropping.
        assert not admin_up(dev)
        rig.faults()
        assert (await sw.read_admin_state(port)).admin == "down"
        assert (await sw.restore(port)).agrees and admin_up(dev)

    on_every_vendor(rigs, scenario)


def test_injected_name_is_refused_without_any_ssh_connection(rigs: dict[str, Rig]) -> None:
    async def scenario(rig: Rig) -> None:
        sw, port = rig.switch(), rig.flavour.cli_name
        before = rig.sshd.connection_count()
        for name in ("p1\nreload", f"{port}\nreload", f"{port};reload", f"{port}\r", port + " | x"):
            for call in (sw.shut, sw.restore, sw.read_admin_state):
                with pytest.raises(InvalidPortName):
                    await call(name)
        await asyncio.sleep(0.2)  # sshd logs a connection as soon as it accepts one
        assert rig.sshd.connection_count() == before
        assert admin_up(rig.flavour.dev)
        # Positive control: the counter does see a real session.
        await sw.read_admin_state(port)
        deadline = time.monotonic() + 2
        while rig.sshd.connection_count() == before and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert rig.sshd.connection_count() == before + 1

    on_every_vendor(rigs, scenario)


def test_save_answers_the_confirm_prompts_and_persists_the_state(rigs: dict[str, Rig]) -> None:
    async def scenario(rig: Rig) -> None:
        rig.startup.unlink(missing_ok=True)
        sw, port = rig.switch(save_config=True), rig.flavour.cli_name

        shut = await sw.shut(port)
        assert shut.saved is True and shut.save_error == ""
        # The emulator writes its startup file only once the dialogue completes (VRP: `y`).
        assert json.loads(rig.startup.read_text())["interfaces"][port] == "down"

        rig.startup.unlink()
        saved = await sw.save()
        assert saved.switch == f"lab-{rig.flavour.hostname}"
        assert json.loads(rig.startup.read_text())["interfaces"][port] == "down"

    on_every_vendor(rigs, scenario)


def test_unknown_host_key_is_refused_before_login(rigs: dict[str, Rig], tmp_path: Path) -> None:
    rig = rigs["cisco_ios"]
    ready(rig)
    other = tmp_path / "other_key"
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other))
    kind, blob = other.with_suffix(".pub").read_text().split()[:2]
    known = tmp_path / "known_hosts"
    known.write_text(f"[{SWITCH_ADDR}]:{rig.flavour.ssh_port} {kind} {blob}\n")
    with pytest.raises(HostKeyRejected, match="CHANGED") as info:
        asyncio.run(rig.switch(known_hosts=known).shut(rig.flavour.cli_name))
    assert isinstance(info.value, PermanentDriverError)
    assert admin_up(rig.flavour.dev)


def test_wrong_enable_secret_is_an_authentication_failure(rigs: dict[str, Rig]) -> None:
    rig = rigs["cisco_ios"]
    ready(rig)
    sw = rig.switch(enable_secret=Mask("not-the-secret"))
    with pytest.raises(AuthenticationFailed) as info:
        asyncio.run(sw.shut(rig.flavour.cli_name))
    assert "not-the-secret" not in str(info.value) and ENABLE_SECRET not in str(info.value)
    assert admin_up(rig.flavour.dev)


def test_linux_driver_drives_ip_link_in_a_real_shell(linux_sshd: SshdHandle, tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(linux_sshd.known_hosts_line())
    sw = NetmikoSwitch(
        SwitchTarget(
            name="lab-host",
            vendor="linux",
            host=SWITCH_ADDR,
            port=LINUX_SSH_PORT,
            username=getpass.getuser(),
            key_file=linux_sshd.client_key,
            known_hosts=known_hosts,
            read_timeout_s=2.5,
        )
    )
    shut = asyncio.run(sw.shut(LINUX_DEV))
    assert not admin_up(LINUX_DEV) and shut.cli_admin == "down" and shut.agrees
    restore = asyncio.run(sw.restore(LINUX_DEV))
    assert admin_up(LINUX_DEV) and restore.cli_admin == "up" and restore.agrees
    # `Cannot find device "p9"` is the Linux flavour of `% Invalid input`.
    with pytest.raises(CommandRejected) as info:
        asyncio.run(sw.shut("p9"))
    assert not info.value.outcome_unknown
