"""A simulated access switch: IF-MIB counters driven by a traffic model, and vendor CLIs that really change its ports.

What is real here and what is not:
- SNMP: the switch serves its IF-MIB table as plain varbinds and `SimPoller` turns them into a
  `PortPoll` with the agent's own parser (drivers/snmp/ifmib.parse_if_walk), so a parser bug
  shows here too. No packets: the poller protocol is the seam (agent/wiring.PortPoller).
- CLI: `SimSwitchDriver` renders every change with the vendor's real renderer
  (drivers/switch/<vendor>.py, through base.change_script), types it line by line into a tiny
  interpreter of that vendor's CLI, judges the answers with the vendor's real ERROR_PATTERN and
  reads the port back with the vendor's real parser. A renderer that emits a command the vendor
  does not know (`no shutdown` on VRP, `shutdown` on Junos) is rejected here exactly as on the
  switch. netmiko itself (prompts, sessions) is the lab's to test, not this tier's.
- Traffic: each port carries what the scenario says the server sends and receives, but only
  while it forwards (admin up and link up): a shut port's counters stop.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rackwarden.agent.clock import FakeClock
from rackwarden.agent.config import SwitchConfig
from rackwarden.drivers.snmp import ifmib
from rackwarden.drivers.switch import vendor_cli
from rackwarden.drivers.switch.base import (
    EXPECTED_ADMIN,
    AdminReading,
    ChangeResult,
    CommandRejected,
    DriverError,
    InvalidPortName,
    PortAction,
    SaveFailed,
    SaveResult,
    SessionDropped,
    SwitchUnreachable,
    VendorCli,
    change_script,
    error_match,
    pending_question,
    save_succeeded,
)
from rackwarden.policies.facts import PortPoll

COUNTER64 = 2**64
TICKS_WRAP = 2**32
# zeros: the agent answers, but every octet counter reads 0 (an agent rebuilding its counters
# after it restarted); the true counters go on underneath.
SNMP_FAULTS = ("timeout", "unreachable", "zeros")
CLI_FAULTS = ("reject", "drop_after_change", "drop_before_change", "unreachable")


class SimError(Exception):
    """A scenario asked the simulated world for something it does not have."""


@dataclass
class SimPort:
    """One port: its running and saved admin state, its link, its traffic and its counters."""

    name: str  # ifName, as the inventory names it
    if_index: int
    speed_mbps: int
    cli: str | None  # the CLI's full spelling of the interface; None: the CLI has no name for it
    admin: str = "up"  # running configuration
    startup_admin: str = "up"  # saved configuration: what a reboot comes back with
    link: bool = True  # cable, far-end NIC and line: False is a fault outside the switch's config
    out_bps: float = 0.0  # what the server sends: switch ingress, ifHCInOctets
    in_bps: float = 0.0  # what the server receives: switch egress, ifHCOutOctets
    in_octets: float = 0.0
    out_octets: float = 0.0
    discontinuity_ticks: int = 0

    @property
    def oper(self) -> str:
        return "up" if self.admin == "up" and self.link else "down"

    @property
    def forwarding(self) -> bool:
        return self.oper == "up"


class SimSwitch:
    """One switch's state. Every change first brings the counters up to the clock."""

    def __init__(self, name: str, vendor: str, clock: FakeClock, ports: Iterable[tuple[str, str | None]], *,
                 speed_mbps: int = 100, uptime_s: float = 40 * 86400.0, first_if_index: int = 1,
                 community: str | None = None, save_config: bool = False):
        self.name = name
        self.vendor = vendor
        self.cli: VendorCli = vendor_cli(vendor)
        self.clock = clock
        self.community = community
        self.ports: dict[str, SimPort] = {}
        for i, (port, cli_name) in enumerate(ports):
            self.ports[port] = SimPort(port, first_if_index + i, speed_mbps, self._canonical(cli_name or port))
        self.boot_now = clock.now() - uptime_s
        self.agent_now = self.boot_now  # when the SNMP agent (re)started: sysUpTime counts from it
        self.engine_boots = 1
        self.snmp_fault: str | None = None
        self.snmp_missing: set[str] = set()  # ports the agent leaves out of its replies
        self.cli_fault: str | None = None
        self.save_config = save_config
        self.transcript: list[tuple[float, str, str]] = []  # (now, typed, answered)
        self.polls = 0
        self._last = clock.now()

    def _canonical(self, name: str) -> str | None:
        try:
            return str(self.cli.canonical_port(name))
        except DriverError:
            return None

    # -- the physical world ---------------------------------------------------------------------

    def advance(self) -> None:
        """Counters grow by what each forwarding port carried since the last look."""
        now = self.clock.now()
        dt = now - self._last
        if dt <= 0:
            return
        self._last = now
        for p in self.ports.values():
            if p.forwarding:
                p.in_octets += p.out_bps / 8 * dt
                p.out_octets += p.in_bps / 8 * dt

    def port(self, name: str) -> SimPort:
        p = self.ports.get(name)
        if p is None:
            raise SimError(f"switch {self.name} has no port {name!r} (ports: {', '.join(self.ports)})")
        return p

    def set_traffic(self, port: str, *, out_bps: float | None = None, in_bps: float | None = None) -> None:
        self.advance()
        p = self.port(port)
        if out_bps is not None:
            p.out_bps = out_bps
        if in_bps is not None:
            p.in_bps = in_bps

    def set_link(self, port: str, up: bool) -> None:
        self.advance()
        self.port(port).link = up

    def set_admin(self, port: SimPort, state: str) -> None:
        """The only way a port's admin state changes: a CLI command (or a person at the console)."""
        self.advance()
        port.admin = state

    def save(self) -> None:
        for p in self.ports.values():
            p.startup_admin = p.admin

    def reboot(self) -> None:
        """A restart: the uptime and the counters start from zero, the saved config comes back."""
        self.advance()
        self.boot_now = self.agent_now = self.clock.now()
        self.engine_boots += 1
        for p in self.ports.values():
            p.in_octets = p.out_octets = 0.0
            p.admin = p.startup_admin

    def agent_restart(self) -> None:
        """Only the SNMP agent restarts: sysUpTime starts again, the ports and counters go on."""
        self.advance()
        self.agent_now = self.clock.now()

    def sys_uptime_ticks(self) -> int:
        return int(round((self.clock.now() - self.agent_now) * 100)) % TICKS_WRAP

    # -- SNMP ---------------------------------------------------------------------------------

    def varbinds(self) -> list[ifmib.VarBind]:
        """sysUpTime.0 and the IF-MIB columns the agent's poller walks, as plain (OID, value)."""
        self.advance()
        out: list[ifmib.VarBind] = [(ifmib.SYS_UPTIME, self.sys_uptime_ticks())]
        status = {"up": 1, "down": 2}
        zeros = self.snmp_fault == "zeros"
        for p in self.ports.values():
            if p.name in self.snmp_missing:
                continue
            i = p.if_index
            out += [
                ((*ifmib.IF_NAME, i), p.name.encode()),
                ((*ifmib.IF_HC_IN_OCTETS, i), 0 if zeros else int(p.in_octets) % COUNTER64),
                ((*ifmib.IF_HC_OUT_OCTETS, i), 0 if zeros else int(p.out_octets) % COUNTER64),
                ((*ifmib.IF_HIGH_SPEED, i), p.speed_mbps),
                ((*ifmib.IF_COUNTER_DISCONTINUITY_TIME, i), p.discontinuity_ticks),
                ((*ifmib.IF_ADMIN_STATUS, i), status[p.admin]),
                ((*ifmib.IF_OPER_STATUS, i), status[p.oper]),
            ]
        return out

    # -- CLI ----------------------------------------------------------------------------------

    def open_session(self, port: str = "", action: str = "") -> CliSession:
        if self.cli_fault == "unreachable":
            raise SwitchUnreachable("could not open an SSH session (simulated: switch unreachable); nothing was"
                                    " sent, retry later", switch=self.name, port=port, action=action)
        return SESSIONS[self.vendor](self)

    def port_by_cli(self, name: str) -> SimPort | None:
        canon = self._canonical(name)
        if canon is None:
            return None
        for p in self.ports.values():
            if p.cli is not None and p.cli.casefold() == canon.casefold():
                return p
        return None


class SimWorld:
    """Every switch of a scenario, built from the config the first time the agent names one."""

    def __init__(self, clock: FakeClock, physical: Mapping[str, Mapping[str, Any]] | None = None):
        self.clock = clock
        # per-switch overrides: first_if_index, uptime_s, octets_at_start (every port's counters
        # at the start, as a switch up for weeks has them; default 0)
        self.physical = dict(physical or {})
        self.switches: dict[str, SimSwitch] = {}

    def ensure(self, cfg: SwitchConfig) -> SimSwitch:
        sw = self.switches.get(cfg.name)
        if sw is None:
            extra = self.physical.get(cfg.name, {})
            sw = SimSwitch(
                cfg.name, cfg.vendor, self.clock, [(p, cfg.cli_names.get(p)) for p in cfg.ports],
                speed_mbps=cfg.port_speed_mbps, uptime_s=float(extra.get("uptime_s", 40 * 86400.0)),
                first_if_index=int(extra.get("first_if_index", 1)),
                community=cfg.snmp.community.reveal() if cfg.snmp.community is not None else None,
            )
            start = float(extra.get("octets_at_start", 0))
            for p in sw.ports.values():
                p.in_octets = p.out_octets = start
            self.switches[cfg.name] = sw
        return sw

    def switch(self, name: str) -> SimSwitch:
        sw = self.switches.get(name)
        if sw is None:
            raise SimError(f"no simulated switch {name!r} yet (it exists once a config names it)")
        return sw


class SimPoller:
    """The poller protocol (agent/wiring.PortPoller) answered from the simulated switches."""

    def __init__(self, world: SimWorld):
        self.world = world
        self.open = False

    async def start(self) -> None:
        self.open = True

    async def close(self) -> None:
        self.open = False

    async def poll(self, target: Any) -> PortPoll:
        clock = self.world.clock
        sw = self.world.switches.get(target.name)
        if sw is not None:
            sw.polls += 1
        wait = float(target.timeout_s) * (int(target.retries) + 1)
        if sw is None or sw.snmp_fault == "unreachable":
            return PortPoll(target.name, clock.at(), clock.now(), None, {}, error="transport",
                            error_detail=f"no route to {target.host}:{target.port}")
        community = target.community.reveal() if getattr(target, "community", None) is not None else None
        if sw.snmp_fault == "timeout" or (sw.community is not None and community != sw.community):
            # A v2c agent drops a wrong community silently: that too is a timeout.
            return PortPoll(target.name, clock.at(), clock.now(), None, {}, error="timeout",
                            error_detail=f"no reply within {wait:g} s", duration_s=wait)
        walk = ifmib.parse_if_walk(sw.varbinds())
        return PortPoll(target.name, clock.at(), clock.now(), walk.sys_uptime_ticks, walk.ports,
                        engine_boots=walk.engine_boots, error="partial" if walk.problems else None,
                        error_detail=walk.detail(), duration_s=0.004)


# ------------------------------------------------------------------------------------------------
# Vendor CLIs: just enough of each to shut, restore, show and save one interface.


class CliSession:
    """One SSH session on a switch; subclasses know one vendor's modes and commands."""

    REJECT = "% Error: command rejected"  # what the switch says when a scenario makes it refuse

    def __init__(self, switch: SimSwitch):
        self.sw = switch
        self.mode = "exec"
        self.iface: SimPort | None = None
        self.question: str | None = None  # a save dialogue waiting for its answer
        self.alive = True

    def send(self, line: str) -> str:
        if not self.alive:
            raise SessionDropped("session already closed", switch=self.sw.name)
        typed = line.strip()
        if self.question is not None:
            answer = self._answer(self.question, typed)
            self.question = None
            out = answer
        else:
            out = self.run(typed)
        self.sw.transcript.append((self.sw.clock.now(), typed, out))
        return out

    def drop(self) -> None:
        """The session dies: whatever was not committed is gone."""
        self.alive = False
        self.discard()

    def discard(self) -> None:
        pass

    def change_refused(self) -> bool:
        return self.sw.cli_fault == "reject"

    def run(self, line: str) -> str:
        raise NotImplementedError

    def _answer(self, question: str, typed: str) -> str:
        raise NotImplementedError

    def show(self, port: SimPort) -> str:
        raise NotImplementedError


class IosSession(CliSession):
    """Cisco IOS: `configure terminal`, `interface X`, `shutdown` / `no shutdown`, `end`."""

    INVALID = "                    ^\n% Invalid input detected at '^' marker."
    REJECT = "% Error: interface is locked by another session"
    SAVED = "Building configuration...\n[OK]"

    def run(self, line: str) -> str:
        m = re.fullmatch(r"show interfaces (\S+)", line)
        if m and self.mode == "exec":
            p = self.sw.port_by_cli(m.group(1))
            return self.show(p) if p is not None else self.INVALID
        if self.mode == "exec":
            if line in ("configure terminal", "conf t"):
                self.mode = "config"
                return "Enter configuration commands, one per line.  End with CNTL/Z."
            if line in ("write memory", "copy running-config startup-config"):
                self.sw.save()
                return self.SAVED
            return self.INVALID
        if line == "end":
            self.mode, self.iface = "exec", None
            return ""
        if line == "exit":
            self.mode, self.iface = ("config", None) if self.mode == "if" else ("exec", None)
            return ""
        m = re.fullmatch(r"interface (\S+)", line)
        if m:
            p = self.sw.port_by_cli(m.group(1))
            if p is None:
                return self.INVALID
            self.mode, self.iface = "if", p
            return ""
        if self.mode == "if" and self.iface is not None and line in ("shutdown", "no shutdown"):
            if self.change_refused():
                return self.REJECT
            self.sw.set_admin(self.iface, "down" if line == "shutdown" else "up")
            return ""
        return self.INVALID

    def show(self, p: SimPort) -> str:
        assert p.cli is not None
        if p.admin == "down":
            head = f"{p.cli} is administratively down, line protocol is down (disabled)"
        elif p.link:
            head = f"{p.cli} is up, line protocol is up (connected)"
        else:
            head = f"{p.cli} is down, line protocol is down (notconnect)"
        return f"{head}\n  Hardware is Gigabit Ethernet, address is 7c21.0e4f.{p.if_index:04x}\n  MTU 1500 bytes"


class EosSession(IosSession):
    """Arista EOS: the IOS dialect, with its own error and save lines."""

    INVALID = "% Invalid input"
    REJECT = "% Error: interface is locked by another session"
    SAVED = "Copy completed successfully."


class VrpSession(CliSession):
    """Huawei VRP: `system-view`, `interface X`, `shutdown` / `undo shutdown`, `return`; `save` asks [Y/N]."""

    INVALID = "                                 ^\nError: Unrecognized command found at '^' position."
    REJECT = "Error: The interface is locked by another user."
    SAVE_COMMANDS: tuple[str, ...] = ("save",)
    SAVE_QUESTION = ("The current configuration will be written to the device.\n"
                     "Are you sure to continue?[Y/N]")
    SAVED = "Info: Please input the file name ( *.cfg, *.zip ) [vrpcfg.zip]:\nNow saving the current configuration" \
            " to the slot 0.\nSave the configuration successfully."

    def run(self, line: str) -> str:
        m = re.fullmatch(r"display interface (\S+)", line)
        if m and self.mode == "exec":
            p = self.sw.port_by_cli(m.group(1))
            return self.show(p) if p is not None else self.INVALID
        if self.mode == "exec":
            if line == "system-view":
                self.mode = "system"
                return "Enter system view, return user view with Ctrl+Z."
            if line in self.SAVE_COMMANDS:
                return self._save(line)
            return self.INVALID
        if line == "return":
            self.mode, self.iface = "exec", None
            return ""
        if line == "quit":
            self.mode, self.iface = ("system", None) if self.mode == "if" else ("exec", None)
            return ""
        m = re.fullmatch(r"interface (\S+)", line)
        if m:
            p = self.sw.port_by_cli(m.group(1))
            if p is None:
                return self.INVALID
            self.mode, self.iface = "if", p
            return ""
        if self.mode == "if" and self.iface is not None and line in ("shutdown", "undo shutdown"):
            if self.change_refused():
                return self.REJECT
            self.sw.set_admin(self.iface, "down" if line == "shutdown" else "up")
            return ""
        return self.INVALID

    def _save(self, line: str) -> str:
        self.question = "save"
        return self.SAVE_QUESTION

    def _answer(self, question: str, typed: str) -> str:
        if typed.lower() in ("y", "yes"):
            self.sw.save()
            return self.SAVED
        return "Info: Save cancelled."

    def show(self, p: SimPort) -> str:
        assert p.cli is not None
        state = "Administratively DOWN" if p.admin == "down" else "UP" if p.link else "DOWN"
        return (f"{p.cli} current state : {state}\nLine protocol current state : {'UP' if p.forwarding else 'DOWN'}\n"
                f"Description:sim port {p.name}")


class ComwareSession(VrpSession):
    """H3C Comware 7: the VRP dialect; `save force` asks nothing; the display layout differs."""

    INVALID = "                                ^\n % Unrecognized command found at '^' position."
    REJECT = " % Wrong parameter found at '^' position."
    SAVE_COMMANDS: tuple[str, ...] = ("save force", "save")

    def _save(self, line: str) -> str:
        if line == "save":
            self.question = "save"
            return "The current configuration will be written to the device. Are you sure? [Y/N]:"
        self.sw.save()
        return "Validating file. Please wait...\nSaved the current configuration to mainboard device successfully."

    def _answer(self, question: str, typed: str) -> str:
        if typed.lower() in ("y", "yes"):
            self.sw.save()
            return "Saved the current configuration to mainboard device successfully."
        return "Save cancelled."

    def show(self, p: SimPort) -> str:
        assert p.cli is not None
        state = "Administratively DOWN" if p.admin == "down" else "UP" if p.link else "DOWN"
        return f"{p.cli}\nCurrent state: {state}\nLine protocol state: {'UP' if p.forwarding else 'DOWN'}"


class JunosSession(CliSession):
    """Junos: `configure private`, `set|delete interfaces X disable`, `commit and-quit` applies it."""

    SYNTAX = "                                           ^\nsyntax error."
    REJECT = "error: configuration database locked by:\n  admin terminal p0 (pid 4711) on since 2026-11-01"

    def __init__(self, switch: SimSwitch):
        super().__init__(switch)
        self.candidate: set[str] | None = None  # disabled ports in the private candidate

    def run(self, line: str) -> str:
        m = re.fullmatch(r"show interfaces (\S+) terse", line)
        if m and self.mode == "exec":
            p = self.sw.port_by_cli(m.group(1))
            return self.show(p) if p is not None else f"error: device {m.group(1)} not found"
        if self.mode == "exec":
            if line == "configure private":
                self.mode = "config"
                self.candidate = {p.name for p in self.sw.ports.values() if p.admin == "down"}
                return "warning: uncommitted changes will be discarded on exit\nEntering configuration mode"
            return "                  ^\nunknown command."
        assert self.candidate is not None
        m = re.fullmatch(r"(set|delete) interfaces (\S+) disable", line)
        if m:
            p = self.sw.port_by_cli(m.group(2))
            if p is None:
                # Junos would take any well-formed name; the sim refuses names it has no port
                # for, so a renderer that mangles a name fails here instead of silently.
                return f"error: interface {m.group(2)} is not a port of this switch (simulated)"
            if self.change_refused():
                return self.REJECT
            if m.group(1) == "set":
                self.candidate.add(p.name)
                return ""
            if p.name not in self.candidate:
                return "warning: statement not found"
            self.candidate.discard(p.name)
            return ""
        if line in ("commit and-quit", "commit"):
            for p in self.sw.ports.values():
                want = "down" if p.name in self.candidate else "up"
                if p.admin != want:
                    self.sw.set_admin(p, want)
            self.sw.save()  # a commit is persistent
            if line == "commit":
                return "configuration check succeeds\ncommit complete"
            self.mode, self.candidate = "exec", None
            return "configuration check succeeds\ncommit complete\nExiting configuration mode"
        if line in ("exit", "quit", "exit configuration-mode"):
            self.mode, self.candidate = "exec", None
            return "Exiting configuration mode"
        return self.SYNTAX

    def discard(self) -> None:
        self.candidate = None  # a private candidate dies with its session

    def show(self, p: SimPort) -> str:
        assert p.cli is not None
        admin = "down" if p.admin == "down" else "up"
        link = "up" if p.forwarding else "down"
        return (f"Interface               Admin Link Proto    Local                 Remote\n"
                f"{p.cli:<24}{admin:<6}{link}\n{p.cli + '.0':<24}up    {link:<5}eth-switch\n")


class LinuxSession(CliSession):
    """The lab's Linux "switch": `ip link set dev X down|up`, `ip -o link show dev X`."""

    def run(self, line: str) -> str:
        m = re.fullmatch(r"ip link set dev (\S+) (down|up)", line)
        if m:
            p = self.sw.port_by_cli(m.group(1))
            if p is None:
                return f'Cannot find device "{m.group(1)}"'
            if self.change_refused():
                return "RTNETLINK answers: Operation not permitted"
            self.sw.set_admin(p, m.group(2))
            return ""
        m = re.fullmatch(r"ip -o link show dev (\S+)", line)
        if m:
            p = self.sw.port_by_cli(m.group(1))
            return self.show(p) if p is not None else f'Device "{m.group(1)}" does not exist.'
        return f"-bash: {line.split()[0] if line else ''}: command not found"

    def show(self, p: SimPort) -> str:
        flags = "BROADCAST,MULTICAST" + (",UP" if p.admin == "up" else "") + (",LOWER_UP" if p.forwarding else "")
        return f"{p.if_index}: {p.cli}: <{flags}> mtu 1500 qdisc noqueue state {'UP' if p.forwarding else 'DOWN'}"


SESSIONS: Mapping[str, type[CliSession]] = {
    "cisco_ios": IosSession,
    "arista_eos": EosSession,
    "huawei": VrpSession,
    "hp_comware": ComwareSession,
    "juniper_junos": JunosSession,
    "linux": LinuxSession,
}


@dataclass
class DriverCall:
    action: str
    port: str
    outcome: str  # "ok" or the error's class name
    commands: tuple[str, ...] = field(default=())


class SimSwitchDriver:
    """The SwitchDriver contract (drivers/switch/base.py) over a simulated switch's CLI.

    Like NetmikoSwitch it refuses, before any session, a name that is not one of the
    inventory's unprotected ports; then it sends the vendor's change script line by line,
    stops at the first line the vendor's ERROR_PATTERN flags, and reads the port back in the
    same session with the vendor's parser.
    """

    def __init__(self, switch: SimSwitch, cfg: SwitchConfig):
        self.name = cfg.name
        self.sim = switch
        self.cli: VendorCli = vendor_cli(cfg.vendor)
        self.save_config = bool(cfg.ssh is not None and cfg.ssh.save_config)
        # A bad inventory name fails here, at wiring time, as it does in NetmikoSwitch.
        self._managed = frozenset(self.cli.canonical_port(cfg.cli_name(p)).casefold()
                                  for p in cfg.ports if p not in cfg.protected_ports)
        self.calls: list[DriverCall] = []

    def validate_port(self, port: str) -> str:
        try:
            name: str = self.cli.canonical_port(port)
        except InvalidPortName as exc:
            raise InvalidPortName(exc.reason, switch=self.name) from None
        if name.casefold() not in self._managed:
            raise InvalidPortName(f"{name} is not an inventory port of this switch; add it to the inventory first"
                                  " (nothing was sent to the switch)", switch=self.name, port=name)
        return name

    async def shut(self, port: str) -> ChangeResult:
        return self._change("shut", port)

    async def restore(self, port: str) -> ChangeResult:
        return self._change("restore", port)

    def _change(self, action: PortAction, port: str) -> ChangeResult:
        call = DriverCall(action, port, "ok")
        self.calls.append(call)
        try:
            return self._run_change(action, port, call)
        except DriverError as e:
            call.outcome = type(e).__name__
            raise

    def _run_change(self, action: PortAction, port: str, call: DriverCall) -> ChangeResult:
        name = self.validate_port(port)
        script = change_script(self.cli, action, name)
        call.commands = script.commands
        session = self.sim.open_session(name, action)
        for index, command in enumerate(script.commands):
            if index == script.effect_index and self.sim.cli_fault == "drop_before_change":
                session.drop()
                raise SessionDropped("session closed before the change was sent (simulated); nothing changed",
                                     switch=self.name, port=name, action=action)
            out = session.send(command)
            err = error_match(self.cli, out)
            if err is not None:
                after = index >= script.effect_index
                session.drop()
                raise CommandRejected(f"the switch rejected {command!r}: {err}", switch=self.name, port=name,
                                      action=action, outcome_unknown=after, detail=out)
            if index == script.effect_index and self.sim.cli_fault == "drop_after_change":
                session.drop()
                raise SessionDropped("session closed right after the change was sent (simulated)",
                                     switch=self.name, port=name, action=action, outcome_unknown=True)
        readback = session.send(self.cli.render_readback(name))
        admin = self.cli.parse_admin_state(readback, name)
        saved: bool | None = None
        save_error = ""
        if self.save_config and self.cli.SAVE is not None:
            try:
                self._save_dialogue(session)
                saved = True
            except DriverError as e:
                saved, save_error = False, e.reason
        return ChangeResult(switch=self.name, port=name, action=action, expected=EXPECTED_ADMIN[action],
                            cli_admin=admin, duration_s=0.0, saved=saved, save_error=save_error, readback=readback)

    def _save_dialogue(self, session: CliSession) -> str:
        spec = self.cli.SAVE
        assert spec is not None
        transcript = session.send(spec.command)
        for _ in range(4):
            answer = pending_question(spec, transcript)
            if answer is None:
                break
            transcript += "\n" + session.send(answer)
        if not save_succeeded(self.cli, transcript):
            raise SaveFailed("the switch did not report a successful save", switch=self.name, detail=transcript)
        return transcript

    async def read_admin_state(self, port: str) -> AdminReading:
        name = self.validate_port(port)
        out = self.sim.open_session(name, "read").send(self.cli.render_readback(name))
        return AdminReading(self.name, name, self.cli.parse_admin_state(out, name), 0.0, out)

    async def save(self) -> SaveResult:
        if self.cli.SAVE is None:
            return SaveResult(self.name, 0.0, "")
        return SaveResult(self.name, 0.0, self._save_dialogue(self.sim.open_session("", "save")))

    def __repr__(self) -> str:
        return f"SimSwitchDriver({self.name!r}, {self.cli.NAME})"
