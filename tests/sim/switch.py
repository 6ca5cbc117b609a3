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
- Restrictions (issue 12): the CLIs keep a vendor-shaped configuration (IOS/EOS policy-maps and
  ACLs, VRP/Comware `qos lr` and ACLs, a Junos candidate/committed tree, Linux tc filters), answer
  the read-backs in the shape of tests/fixtures/switch/<vendor>/restrict_rb_*.txt, and the
  switch derives each port's effect from it: an ingress policer caps what the port forwards
  upstream while ifHCInOctets still counts everything the server sent (input counters count
  frames before the ingress policer or ACL drops them, as on real switches and the lab's
  veths); a blocked TCP port drops that share of the traffic (`smtp_bps`). The policer is a
  steady-state cap: its burst is not modelled.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

from rackwarden.agent.clock import FakeClock
from rackwarden.agent.config import SwitchConfig
from rackwarden.drivers.snmp import ifmib
from rackwarden.drivers.switch import vendor_cli
from rackwarden.drivers.switch.base import (
    EXPECTED_ADMIN,
    AdminReading,
    ChangeResult,
    ChangeScript,
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
from rackwarden.drivers.switch.restrictions import (
    ACTION_KIND,
    PORT_NAMES,
    SERVICE_PORTS,
    Restriction,
    RestrictionAction,
    RestrictionChange,
    RestrictionKind,
    RestrictionRefused,
    RestrictionResult,
    restriction_cli,
    restriction_script,
    scaled_bps,
)
from rackwarden.policies.facts import PortPoll

COUNTER64 = 2**64
TICKS_WRAP = 2**32
# zeros: the agent answers, but every octet counter reads 0 (an agent rebuilding its counters
# after it restarted); the true counters go on underneath.
SNMP_FAULTS = ("timeout", "unreachable", "zeros")
# refuse_throttle / refuse_block: the platform lacks the feature (old Comware without `qos lr
# inbound`, a Catalyst without policing, an ACL table that is full) and answers the command the
# way that vendor does, so the action FAILS; nothing is configured.
CLI_FAULTS = ("reject", "drop_after_change", "drop_before_change", "unreachable", "refuse_throttle",
              "refuse_block")
SMTP_PORTS: tuple[int, ...] = tuple(SERVICE_PORTS["smtp"])


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
    # Shares of out_bps by TCP destination port (25: SMTP), for what a service block drops.
    tcp_bps: dict[int, float] = field(default_factory=dict)
    in_octets: float = 0.0  # ifHCInOctets: everything the server sent while the port forwards
    out_octets: float = 0.0
    discontinuity_ticks: int = 0
    # What the switch's configuration does to the port's ingress (derived, SimSwitch.refresh):
    policer_bps: int | None = None  # ingress policer / line rate; None: not throttled
    blocked_tcp: frozenset[int] = frozenset()  # TCP destination ports an ingress ACL drops
    # What went on upstream of what the server sent (after the ACL and the policer).
    forwarded_octets: float = 0.0
    forwarded_tcp_octets: dict[int, float] = field(default_factory=dict)

    @property
    def oper(self) -> str:
        return "up" if self.admin == "up" and self.link else "down"

    @property
    def forwarding(self) -> bool:
        return self.oper == "up"

    @property
    def throttled(self) -> bool:
        return self.policer_bps is not None

    @property
    def smtp_bps(self) -> float:
        """What the server sends to TCP 25, 465 and 587 (part of out_bps)."""
        return sum(self.tcp_bps.get(p, 0.0) for p in SMTP_PORTS)

    def forwards_tcp(self, dst_port: int) -> bool:
        """Whether a TCP segment to `dst_port` from the server gets through the port at all."""
        return self.forwarding and dst_port not in self.blocked_tcp

    def _passed_bps(self) -> float:
        """What the ingress ACL lets through, before the policer."""
        dropped = sum(bps for p, bps in self.tcp_bps.items() if p in self.blocked_tcp)
        return max(0.0, self.out_bps - dropped)

    @property
    def forwarded_out_bps(self) -> float:
        """What the switch forwards upstream of what the server sends: after the ACL, at most
        the policer's rate; nothing when the port does not forward."""
        if not self.forwarding:
            return 0.0
        passed = self._passed_bps()
        return passed if self.policer_bps is None else min(passed, float(self.policer_bps))

    def forwarded_tcp_bps(self, dst_port: int) -> float:
        """The forwarded part of the traffic to `dst_port` (a policer drops every class alike)."""
        if not self.forwards_tcp(dst_port):
            return 0.0
        passed = self._passed_bps()
        share = self.tcp_bps.get(dst_port, 0.0)
        return 0.0 if passed <= 0 else share * self.forwarded_out_bps / passed

    @property
    def forwarded_smtp_bps(self) -> float:
        return sum(self.forwarded_tcp_bps(p) for p in SMTP_PORTS)

    @property
    def forwarded_other_bps(self) -> float:
        """Forwarded traffic that is not SMTP (the HTTP of a spammer's server, say)."""
        return self.forwarded_out_bps - self.forwarded_smtp_bps

    @property
    def forwarded_smtp_octets(self) -> float:
        return sum(self.forwarded_tcp_octets.get(p, 0.0) for p in SMTP_PORTS)


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
        # The vendor-shaped restriction configuration its CLI keeps: running, and as saved.
        self.session_type: type[CliSession] = SESSIONS[vendor]
        self.running: Any = self.session_type.new_config(self)
        self.startup: Any = copy.deepcopy(self.running)

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
                p.forwarded_octets += p.forwarded_out_bps / 8 * dt
                for dst in p.tcp_bps:
                    p.forwarded_tcp_octets[dst] = p.forwarded_tcp_octets.get(dst, 0.0) + \
                        p.forwarded_tcp_bps(dst) / 8 * dt

    def refresh(self) -> None:
        """Each port's policer and blocked ports, from the running configuration (after a change)."""
        for p in self.ports.values():
            p.policer_bps, p.blocked_tcp = self.session_type.effect(self, p)

    def port(self, name: str) -> SimPort:
        p = self.ports.get(name)
        if p is None:
            raise SimError(f"switch {self.name} has no port {name!r} (ports: {', '.join(self.ports)})")
        return p

    def set_traffic(self, port: str, *, out_bps: float | None = None, in_bps: float | None = None,
                    smtp_bps: float | None = None, tcp_bps: Mapping[int, float] | None = None) -> None:
        """What the server sends (out_bps) and receives; `smtp_bps` (to TCP 25) and `tcp_bps`
        ({destination port: bps}) are parts of out_bps, what a service block drops."""
        self.advance()
        p = self.port(port)
        shares = dict(p.tcp_bps)
        if tcp_bps is not None:
            shares = {int(k): float(v) for k, v in tcp_bps.items()}
        if smtp_bps is not None:
            shares = {k: v for k, v in shares.items() if k not in SMTP_PORTS}
            shares[SMTP_PORTS[0]] = float(smtp_bps)
        total_out = p.out_bps if out_bps is None else out_bps
        if any(v < 0 for v in shares.values()) or sum(shares.values()) > total_out:
            raise SimError(f"{self.name} {port}: smtp_bps/tcp_bps {shares} are parts of out_bps"
                           f" ({total_out:g} bps): each >= 0 and together at most out_bps")
        p.tcp_bps = {k: v for k, v in shares.items() if v > 0}
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
        self.startup = copy.deepcopy(self.running)

    def reboot(self) -> None:
        """A restart: the uptime and the counters start from zero, the saved config comes back."""
        self.advance()
        self.boot_now = self.agent_now = self.clock.now()
        self.engine_boots += 1
        for p in self.ports.values():
            p.in_octets = p.out_octets = 0.0
            p.admin = p.startup_admin
        self.running = copy.deepcopy(self.startup)
        self.refresh()

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
# Vendor CLIs: just enough of each to shut, restore, throttle, block, show and save one interface.
#
# The modal CLIs (IOS, EOS, VRP, Comware) and Linux are one interpreter driven by per-vendor
# tables of `Cmd` rows (what a line looks like, in which modes, what it does); what they
# configure lands in one vendor-neutral model (`ModalConfig`, `TcConfig`), and only the read-back
# layouts are written per vendor, after the fixtures. Junos keeps a configuration tree, because
# its candidate/commit and `display set` are what its driver relies on.


@dataclass
class Policer:
    rate_bps: int
    burst_bytes: int | None = None  # None: the switch's default bucket


@dataclass(frozen=True)
class AclRule:
    action: str  # "deny" | "permit"
    proto: str  # "tcp" | "ip"
    dst_port: int | None = None

    def matches_tcp(self, port: int) -> bool:
        return self.proto == "ip" or (self.proto == "tcp" and self.dst_port in (None, port))


def acl_denies(rules: Iterable[AclRule]) -> frozenset[int]:
    """The TCP destination ports whose first matching rule denies (an ACL runs in order)."""
    ordered = list(rules)
    out: set[int] = set()
    for port in {r.dst_port for r in ordered if r.dst_port is not None}:
        for r in ordered:
            if r.matches_tcp(port):
                if r.action == "deny":
                    out.add(port)
                break
    return frozenset(out)


def port_number(word: str) -> int | None:
    """`25`, `smtp`, `submission` -> the TCP port; None for a word the services file lacks."""
    if word.isdigit():
        return int(word)
    return cast("int | None", PORT_NAMES.get(word.lower()))


def tcp_port_name(port: int | None, names: Mapping[int, str]) -> str:
    return "" if port is None else names.get(port, str(port))


@dataclass
class ModalConfig:
    """The restriction objects of an IOS/EOS/VRP/Comware configuration; ports by inventory name."""

    policies: dict[str, Policer | None] = field(default_factory=dict)  # policy-map: class-default police
    acls: dict[str, dict[int, AclRule]] = field(default_factory=dict)  # name: {sequence/rule id: rule}
    policy_in: dict[str, str] = field(default_factory=dict)  # port: policy-map attached as input
    acl_in: dict[str, str] = field(default_factory=dict)  # port: ACL attached inbound
    lr_in: dict[str, Policer] = field(default_factory=dict)  # port: `qos lr inbound`


@dataclass(frozen=True)
class Cmd:
    """One line a CLI accepts: a full-match pattern, the modes it is valid in (empty: every
    config mode, as IOS takes a global command in a sub-mode), and the op it runs."""

    pattern: re.Pattern[str]
    op: str  # method `op_<op>` of the session, called with the match and `arg`
    modes: frozenset[str] = frozenset()
    arg: str = ""
    feature: str = ""  # "throttle" | "block": refused under cli_fault refuse_<feature>
    changes: bool = False  # refused under cli_fault "reject" (another session holds the lock)


def cmd(pattern: str, op: str, modes: str = "", arg: str = "", feature: str = "", changes: bool = False) -> Cmd:
    return Cmd(re.compile(pattern), op, frozenset(modes.split()), arg, feature, changes)


class CliSession:
    """One SSH session on a switch; subclasses know one vendor's modes and commands."""

    REJECT = "% Error: command rejected"  # what the switch says when a scenario makes it refuse

    def __init__(self, switch: SimSwitch):
        self.sw = switch
        self.mode = "exec"
        self.iface: SimPort | None = None
        self.question: str | None = None  # a save dialogue waiting for its answer
        self.alive = True

    # The vendor-shaped configuration this CLI keeps on its switch, and what it does to a port.
    @classmethod
    def new_config(cls, sw: SimSwitch) -> Any:
        return None

    @classmethod
    def effect(cls, sw: SimSwitch, port: SimPort) -> tuple[int | None, frozenset[int]]:
        return None, frozenset()

    def send(self, line: str) -> str:
        if not self.alive:
            raise SessionDropped("session already closed", switch=self.sw.name)
        typed = line.strip()
        self.sw.advance()  # the counters run at the old rates up to this line
        if self.question is not None:
            answer = self._answer(self.question, typed)
            self.question = None
            out = answer
        else:
            out = self.run(typed)
        self.sw.refresh()
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


class TableSession(CliSession):
    """A CLI driven by its tables: exec lines, config lines, mode entry and exits."""

    INVALID = "% Invalid input"
    CONFIG_ENTER: tuple[str, ...] = ()
    CONFIG_BANNER = ""
    TO_EXEC = ""  # leaves every config mode
    UP = ""  # leaves one mode
    PARENT: ClassVar[Mapping[str, str]] = {"if": "config", "pmap": "config", "acl": "config",
                                           "pmap-c": "pmap", "config": "exec"}
    EXEC: ClassVar[tuple[Cmd, ...]] = ()
    CONFIG: ClassVar[tuple[Cmd, ...]] = ()
    REFUSED: ClassVar[Mapping[str, str]] = {}  # feature: the vendor's reply when it lacks it
    PORT_NAMES: ClassVar[Mapping[int, str]] = {25: "smtp"}  # how its `show` prints TCP ports

    def __init__(self, switch: SimSwitch):
        super().__init__(switch)
        self.obj: str | None = None  # the policy-map or ACL being edited

    def invalid(self, line: str) -> str:
        return self.INVALID

    def run(self, line: str) -> str:
        if self.mode == "exec":
            if line in self.CONFIG_ENTER:
                self.mode = "config"
                return self.CONFIG_BANNER
            table = self.EXEC
        else:
            if line == self.TO_EXEC:
                self.mode, self.iface, self.obj = "exec", None, None
                return ""
            if line == self.UP:
                self.mode = self.PARENT.get(self.mode, "exec")
                if self.mode in ("config", "exec"):
                    self.iface, self.obj = None, None
                return ""
            table = self.CONFIG
        for c in table:
            if c.modes and self.mode not in c.modes:
                continue
            m = c.pattern.fullmatch(line)
            if m is None:
                continue
            if c.feature and self.sw.cli_fault == f"refuse_{c.feature}":
                return self.REFUSED[c.feature]
            if c.changes and self.change_refused():
                return self.REJECT
            op: Callable[[re.Match[str], str], str] = getattr(self, f"op_{c.op}")
            return op(m, c.arg)
        return self.invalid(line)

    # -- ops shared by every table ----------------------------------------------------------------

    def _port(self, name: str) -> SimPort | None:
        return self.sw.port_by_cli(name)

    def op_show(self, m: re.Match[str], arg: str) -> str:
        """`arg` names the layout method (show, show_running, ...); group 1 the port or object."""
        if arg in ("show", "show_running"):
            p = self._port(m.group(1))
            return getattr(self, arg)(p) if p is not None else self.invalid(m.group(0))
        return str(getattr(self, arg)(m.group(1)))

    def op_interface(self, m: re.Match[str], arg: str) -> str:
        p = self._port(m.group(1))
        if p is None:
            return self.invalid(m.group(0))
        self.mode, self.iface, self.obj = "if", p, None
        return ""

    def op_admin(self, m: re.Match[str], arg: str) -> str:
        assert self.iface is not None
        self.sw.set_admin(self.iface, arg)
        return ""

    def op_save(self, m: re.Match[str], arg: str) -> str:
        raise NotImplementedError

    # Restriction objects (ModalConfig).

    @property
    def cfg(self) -> ModalConfig:
        cfg = self.sw.running
        assert isinstance(cfg, ModalConfig)
        return cfg

    @classmethod
    def new_config(cls, sw: SimSwitch) -> Any:
        return ModalConfig()

    @classmethod
    def effect(cls, sw: SimSwitch, port: SimPort) -> tuple[int | None, frozenset[int]]:
        cfg = sw.running
        assert isinstance(cfg, ModalConfig)
        rates = []
        lr = cfg.lr_in.get(port.name)
        if lr is not None:
            rates.append(lr.rate_bps)
        policy = cfg.policy_in.get(port.name)
        police = cfg.policies.get(policy) if policy is not None else None
        if police is not None:
            rates.append(police.rate_bps)
        acl = cfg.acl_in.get(port.name)
        # An ACL that is attached but does not exist filters nothing (IOS, VRP, Comware).
        rules = cfg.acls.get(acl, {}) if acl is not None else {}
        return (min(rates) if rates else None), acl_denies(r for _, r in sorted(rules.items()))

    def op_policy(self, m: re.Match[str], arg: str) -> str:
        self.cfg.policies.setdefault(m.group(1), None)
        self.mode, self.obj, self.iface = "pmap", m.group(1), None
        return ""

    def op_no_policy(self, m: re.Match[str], arg: str) -> str:
        self.cfg.policies.pop(m.group(1), None)
        return ""

    def op_mode(self, m: re.Match[str], arg: str) -> str:
        self.mode = arg
        return ""

    def op_police(self, m: re.Match[str], arg: str) -> str:
        """`rate` (+ `unit`, default `arg`) and `burst` (+ `bunit`) named groups."""
        assert self.obj is not None
        g = m.groupdict()
        rate = scaled_bps(g["rate"], g.get("unit") or arg)
        burst = scaled_bps(g["burst"], (g.get("bunit") or "").removesuffix("ytes")) if g.get("burst") else None
        if rate is None:
            return self.invalid(m.group(0))
        self.cfg.policies[self.obj] = Policer(rate, burst)
        return ""

    def op_attach_policy(self, m: re.Match[str], arg: str) -> str:
        assert self.iface is not None
        self.cfg.policy_in[self.iface.name] = m.group(1)
        return ""

    def op_detach_policy(self, m: re.Match[str], arg: str) -> str:
        assert self.iface is not None
        if self.cfg.policy_in.get(self.iface.name) == m.group(1):
            del self.cfg.policy_in[self.iface.name]
        return ""

    def op_acl(self, m: re.Match[str], arg: str) -> str:
        self.cfg.acls.setdefault(m.group(1), {})
        self.mode, self.obj, self.iface = "acl", m.group(1), None
        return ""

    def op_no_acl(self, m: re.Match[str], arg: str) -> str:
        self.cfg.acls.pop(m.group(1), None)
        return ""

    def op_rule(self, m: re.Match[str], arg: str) -> str:
        """`seq`, `action`, `proto` (default tcp) and `port` named groups; the same id replaces."""
        assert self.obj is not None
        g = m.groupdict()
        port = port_number(g["port"]) if g.get("port") else None
        if g.get("port") and port is None:
            return self.invalid(m.group(0))
        self.cfg.acls.setdefault(self.obj, {})[int(g["seq"])] = AclRule(g["action"], g.get("proto") or "tcp", port)
        return ""

    def op_attach_acl(self, m: re.Match[str], arg: str) -> str:
        assert self.iface is not None
        self.cfg.acl_in[self.iface.name] = m.group(1)
        return ""

    def op_detach_acl(self, m: re.Match[str], arg: str) -> str:
        assert self.iface is not None
        if self.cfg.acl_in.get(self.iface.name) == m.group(1):
            del self.cfg.acl_in[self.iface.name]
        return ""

    def op_lr(self, m: re.Match[str], arg: str) -> str:
        assert self.iface is not None
        self.cfg.lr_in[self.iface.name] = Policer(int(m.group(1)) * 1000, None)
        return ""

    def op_no_lr(self, m: re.Match[str], arg: str) -> str:
        assert self.iface is not None
        self.cfg.lr_in.pop(self.iface.name, None)
        return ""

    # Read-back helpers.

    def attached(self, p: SimPort) -> tuple[str | None, str | None, Policer | None]:
        """(policy-map, ACL, qos lr) on the port's ingress."""
        return self.cfg.policy_in.get(p.name), self.cfg.acl_in.get(p.name), self.cfg.lr_in.get(p.name)

    def rule_text(self, rule: AclRule) -> str:
        port = tcp_port_name(rule.dst_port, self.PORT_NAMES)
        return f"{rule.action} {rule.proto} any any" + (f" eq {port}" if port else "")


# IOS and EOS share their shape; the strings differ.
def _ios_grammar(policy: str, police: str, attach_policy: str, acl: str) -> tuple[Cmd, ...]:
    return (
        cmd(r"interface (\S+)", "interface"),
        cmd(r"shutdown", "admin", "if", "down", changes=True),
        cmd(r"no shutdown", "admin", "if", "up", changes=True),
        cmd(rf"{policy} (\S+)", "policy", changes=True),
        cmd(rf"no {policy} (\S+)", "no_policy", changes=True),
        cmd(r"class class-default", "mode", "pmap", "pmap-c"),
        cmd(police, "police", "pmap-c", "bps", feature="throttle", changes=True),
        cmd(rf"{attach_policy} (\S+)", "attach_policy", "if", changes=True),
        cmd(rf"no {attach_policy} (\S+)", "detach_policy", "if", changes=True),
        cmd(rf"{acl} (\S+)", "acl", changes=True),
        cmd(rf"no {acl} (\S+)", "no_acl", changes=True),
        cmd(r"(?P<seq>\d+) (?P<action>deny|permit) (?P<proto>tcp|ip) any any(?: eq (?P<port>\S+))?", "rule", "acl",
            changes=True),
        cmd(r"ip access-group (\S+) in", "attach_acl", "if", feature="block", changes=True),
        cmd(r"no ip access-group (\S+) in", "detach_acl", "if", changes=True),
    )


class IosSession(TableSession):
    """Cisco IOS: `configure terminal`, `interface X`, `shutdown` / `no shutdown`, `end`;
    MQC `policy-map` + `police` + `service-policy input`; `ip access-list extended` + `ip access-group`."""

    INVALID = "                    ^\n% Invalid input detected at '^' marker."
    REJECT = "% Error: interface is locked by another session"
    SAVED = "Building configuration...\n[OK]"
    CONFIG_ENTER = ("configure terminal", "conf t")
    CONFIG_BANNER = "Enter configuration commands, one per line.  End with CNTL/Z."
    TO_EXEC, UP = "end", "exit"
    EXEC = (
        cmd(r"show interfaces (\S+)", "show", arg="show"),
        cmd(r"show running-config interface (\S+)", "show", arg="show_running"),
        cmd(r"show policy-map (\S+)", "show", arg="show_policy"),
        cmd(r"show ip access-lists (\S+)", "show", arg="show_acl"),
        cmd(r"write memory|copy running-config startup-config", "save"),
    )
    CONFIG = _ios_grammar("policy-map", r"police (?P<rate>\d+) (?P<burst>\d+) exceed-action drop",
                          "service-policy input", "ip access-list extended")
    # Catalyst without policing in hardware (fixtures restrict_refused_police / _access_group).
    REFUSED = {"throttle": INVALID, "block": INVALID}

    def op_save(self, m: re.Match[str], arg: str) -> str:
        self.sw.save()
        return self.SAVED

    def show(self, p: SimPort) -> str:
        assert p.cli is not None
        if p.admin == "down":
            head = f"{p.cli} is administratively down, line protocol is down (disabled)"
        elif p.link:
            head = f"{p.cli} is up, line protocol is up (connected)"
        else:
            head = f"{p.cli} is down, line protocol is down (notconnect)"
        return f"{head}\n  Hardware is Gigabit Ethernet, address is 7c21.0e4f.{p.if_index:04x}\n  MTU 1500 bytes"

    def running_lines(self, p: SimPort) -> list[str]:
        policy, acl, _ = self.attached(p)
        return [f"description sim port {p.name}", "switchport mode access",
                *(["shutdown"] if p.admin == "down" else []),
                *([f"service-policy input {policy}"] if policy else []),
                *([f"ip access-group {acl} in"] if acl else [])]

    def show_running(self, p: SimPort) -> str:
        body = "\n".join([f"interface {p.cli}", *(" " + ln for ln in self.running_lines(p)), "end"])
        return f"Building configuration...\n\nCurrent configuration : {len(body) + 1} bytes\n!\n{body}\n"

    def show_policy(self, name: str) -> str:
        if name not in self.cfg.policies:
            return ""
        police = self.cfg.policies[name]
        out = f"  Policy Map {name}\n    Class class-default"
        if police is not None:
            out += f"\n      police {police.rate_bps} {police.burst_bytes or 8000} exceed-action drop"
        return out

    def show_acl(self, name: str) -> str:
        if name not in self.cfg.acls:
            return ""
        rules = sorted(self.cfg.acls[name].items())
        return "\n".join([f"Extended IP access list {name}", *(f"    {s} {self.rule_text(r)}" for s, r in rules)])


class EosSession(IosSession):
    """Arista EOS: the IOS dialect, with its own error and save lines and QoS/ACL spellings."""

    INVALID = "% Invalid input"
    REJECT = "% Error: interface is locked by another session"
    SAVED = "Copy completed successfully."
    EXEC = (
        cmd(r"show interfaces (\S+)", "show", arg="show"),
        cmd(r"show running-config interfaces (\S+)", "show", arg="show_running"),
        cmd(r"show policy-map type quality-of-service (\S+)", "show", arg="show_policy"),
        cmd(r"show ip access-lists (\S+)", "show", arg="show_acl"),
        cmd(r"write memory|copy running-config startup-config", "save"),
    )
    CONFIG = _ios_grammar(
        "policy-map type quality-of-service",
        r"police rate (?P<rate>\d+) (?P<unit>bps|kbps|mbps) burst-size (?P<burst>\d+) (?P<bunit>bytes|kbytes|mbytes)",
        "service-policy type qos input", "ip access-list")
    # Fixtures restrict_refused_police / restrict_refused_access_group.
    REFUSED = {"throttle": "% Unavailable command (not supported on this hardware platform)", "block": INVALID}
    PORT_NAMES = {25: "smtp", 587: "submission"}

    def show_running(self, p: SimPort) -> str:
        policy, acl, _ = self.attached(p)
        lines = [f"description sim port {p.name}", "switchport access vlan 120",
                 *(["shutdown"] if p.admin == "down" else []),
                 *([f"service-policy type qos input {policy}"] if policy else []),
                 *([f"ip access-group {acl} in"] if acl else [])]
        return "\n".join([f"interface {p.cli}", *("   " + ln for ln in lines)])

    def show_policy(self, name: str) -> str:
        if name not in self.cfg.policies:
            return ""
        police = self.cfg.policies[name]
        out = f"Service-policy {name}\n\n  Class-map: class-default (match-any)"
        if police is not None:
            out += f"\n       police rate {police.rate_bps // 1000} kbps burst-size {police.burst_bytes or 8000} bytes"
        return out

    def show_acl(self, name: str) -> str:
        if name not in self.cfg.acls:
            return ""
        rules = sorted(self.cfg.acls[name].items())
        return "\n".join([f"IP Access List {name}", *(f"        {s} {self.rule_text(r)}" for s, r in rules)])


# VRP and Comware share their shape: `display`, `system-view`, `undo`, `quit`/`return`.
def _vrp_grammar(acl_create: str, acl_delete: str, attach: str, detach: str) -> tuple[Cmd, ...]:
    return (
        cmd(r"interface (\S+)", "interface"),
        cmd(r"shutdown", "admin", "if", "down", changes=True),
        cmd(r"undo shutdown", "admin", "if", "up", changes=True),
        cmd(r"qos lr inbound cir (\d+)", "lr", "if", feature="throttle", changes=True),
        cmd(r"undo qos lr inbound", "no_lr", "if", changes=True),
        cmd(acl_create, "acl", "config", changes=True),
        cmd(acl_delete, "no_acl", "config", changes=True),
        cmd(r"rule (?P<seq>\d+) (?P<action>deny|permit) tcp destination-port eq (?P<port>\S+)", "rule", "acl",
            changes=True),
        cmd(attach, "attach_acl", "if", feature="block", changes=True),
        cmd(detach, "detach_acl", "if", changes=True),
    )


class VrpSession(TableSession):
    """Huawei VRP: `system-view`, `interface X`, `shutdown` / `undo shutdown`, `return`; `save` asks [Y/N];
    `qos lr inbound cir`, `acl name X advance` + `traffic-filter inbound acl name X`."""

    INVALID = "                                 ^\nError: Unrecognized command found at '^' position."
    REJECT = "Error: The interface is locked by another user."
    CONFIG_ENTER = ("system-view",)
    CONFIG_BANNER = "Enter system view, return user view with Ctrl+Z."
    TO_EXEC, UP = "return", "quit"
    SAVE_QUESTION = ("The current configuration will be written to the device.\n"
                     "Are you sure to continue?[Y/N]")
    SAVED = "Info: Please input the file name ( *.cfg, *.zip ) [vrpcfg.zip]:\nNow saving the current configuration" \
            " to the slot 0.\nSave the configuration successfully."
    EXEC = (
        cmd(r"display interface (\S+)", "show", arg="show"),
        cmd(r"display current-configuration interface (\S+)", "show", arg="show_running"),
        cmd(r"display acl name (\S+)", "show", arg="show_acl"),
        cmd(r"save", "save"),
    )
    CONFIG = _vrp_grammar(r"acl name (\S+) advance", r"undo acl name (\S+)",
                          r"traffic-filter inbound acl name (\S+)", r"undo traffic-filter inbound acl name (\S+)")
    # Fixtures restrict_refused_qos_lr / restrict_refused_traffic_filter.
    REFUSED = {"throttle": INVALID, "block": "Error: Failed to apply the ACL because of insufficient ACL resources."}
    CBS_PER_KBPS = 125.0  # `display` fills in the default CBS: 125 x CIR (fixture restrict_rb_throttle_present)
    ACL_ATTACH = "traffic-filter inbound acl name {}"
    LINK_MODE = "port link-type access"

    def op_save(self, m: re.Match[str], arg: str) -> str:
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

    def show_running(self, p: SimPort) -> str:
        _, acl, lr = self.attached(p)
        lines = [self.LINK_MODE, *(["shutdown"] if p.admin == "down" else [])]
        if lr is not None:
            kbps = lr.rate_bps // 1000
            lines.append(f"qos lr inbound cir {kbps} cbs {int(kbps * self.CBS_PER_KBPS)}")
        if acl is not None:
            lines.append(self.ACL_ATTACH.format(acl))
        return "\n".join(["#", f"interface {p.cli}", *(" " + ln for ln in lines), "#", "return"])

    def acl_head(self, name: str, count: int) -> list[str]:
        number = 3999 - list(self.cfg.acls).index(name)  # named advanced ACLs count down from 3999
        return [f"Advanced ACL {name} {number}, {count} rule{'s' if count != 1 else ''}", "Acl's step is 5"]

    def show_acl(self, name: str) -> str:
        if name not in self.cfg.acls:
            return "Error: The ACL does not exist."
        rules = sorted(self.cfg.acls[name].items())
        return "\n".join([*self.acl_head(name, len(rules)),
                          *(f" rule {s} {r.action} tcp destination-port eq {tcp_port_name(r.dst_port, self.PORT_NAMES)}"
                            for s, r in rules)])


class ComwareSession(VrpSession):
    """H3C Comware 7: the VRP dialect; `save force` asks nothing; the display layout differs;
    `acl advanced name X` + `packet-filter name X inbound`."""

    INVALID = "                                ^\n % Unrecognized command found at '^' position."
    REJECT = " % Wrong parameter found at '^' position."
    CONFIG_BANNER = "System View: return to User View with Ctrl+Z."
    EXEC = (
        cmd(r"display interface (\S+)", "show", arg="show"),
        cmd(r"display current-configuration interface (\S+)", "show", arg="show_running"),
        cmd(r"display acl name (\S+)", "show", arg="show_acl"),
        cmd(r"save force|save", "save"),
    )
    CONFIG = _vrp_grammar(r"acl advanced name (\S+)", r"undo acl advanced name (\S+)",
                          r"packet-filter name (\S+) inbound", r"undo packet-filter name (\S+) inbound")
    # Comware 5 boxes without inbound line rate / named ACLs (fixtures restrict_refused_qos_lr_cw5,
    # restrict_refused_acl_name_cw5): the parser does not know the command.
    REFUSED = {"throttle": INVALID, "block": INVALID}
    CBS_PER_KBPS = 62.5  # Comware's default CBS: 62.5 x CIR (S6812 qos lr)
    ACL_ATTACH = "packet-filter name {} inbound"
    LINK_MODE = "port link-mode bridge"

    def op_save(self, m: re.Match[str], arg: str) -> str:
        if m.group(0) == "save":
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

    def acl_head(self, name: str, count: int) -> list[str]:
        return [f"Advanced IPv4 ACL named {name}, {count} rule{'s' if count != 1 else ''},",
                "ACL's step is 5, start ID is 0"]

    def show_acl(self, name: str) -> str:
        if name not in self.cfg.acls:
            return "The ACL doesn't exist."
        return super().show_acl(name)


# ------------------------------------------------------------------------------------------------
# Junos: a configuration tree (nested dicts, in order), a private candidate per session, and the
# committed tree on the switch. `display set` prints every leaf as a `set` line, in tree order.

JunosTree = dict[str, Any]

_FW = "firewall family ethernet-switching filter"
# Every statement the sim knows ({port} = a port of the switch, {name} an object name, ...);
# `set` must match one whole, `delete` a prefix of one; anything else is a syntax error.
JUNOS_STATEMENTS = (
    "interfaces {port} disable",
    "interfaces {port} unit 0 family ethernet-switching interface-mode access",
    "interfaces {port} unit 0 family ethernet-switching filter input {name}",
    "firewall policer {name} if-exceeding bandwidth-limit {rate}",
    "firewall policer {name} if-exceeding burst-size-limit {rate}",
    "firewall policer {name} then discard",
    f"{_FW} {{name}} term {{name}} from ip-protocol {{proto}}",
    f"{_FW} {{name}} term {{name}} from destination-port {{tcp}}",
    f"{_FW} {{name}} term {{name}} then policer {{name}}",
    f"{_FW} {{name}} term {{name}} then accept",
    f"{_FW} {{name}} term {{name}} then discard",
)
_JUNOS_TOKEN = {"{port}": r"\S+", "{name}": r"[A-Za-z0-9][\w-]*", "{rate}": r"\d+(?:\.\d+)?[kmg]?",
                "{proto}": r"tcp|udp|icmp", "{tcp}": r"\d+|smtp|smtps|submission"}
# (container, keyword) pairs whose value replaces the old one instead of adding a sibling.
_JUNOS_SINGLE = {("if-exceeding", "bandwidth-limit"), ("if-exceeding", "burst-size-limit"), ("then", "policer"),
                 ("filter", "input"), ("ethernet-switching", "interface-mode")}


def _junos_match(tokens: list[str], *, prefix: bool) -> bool:
    for statement in JUNOS_STATEMENTS:
        words = statement.split()
        if len(tokens) > len(words) or (not prefix and len(tokens) != len(words)) or len(tokens) < 2:
            continue
        if all(re.fullmatch(_JUNOS_TOKEN.get(w, re.escape(w)), t) for w, t in zip(words, tokens, strict=False)):
            return True
    return False


def _junos_compact(value: str) -> str:
    """Junos prints a bandwidth or burst as `10m`, `125k`."""
    if not value.isdigit():
        return value
    n = int(value)
    for unit, size in (("g", 10**9), ("m", 10**6), ("k", 10**3)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return value


def junos_set(tree: JunosTree, tokens: list[str]) -> None:
    node = tree
    for i, tok in enumerate(tokens):
        if i == len(tokens) - 1 and i >= 2 and (tokens[i - 2], tokens[i - 1]) in _JUNOS_SINGLE:
            node.clear()
            if tokens[i - 1] in ("bandwidth-limit", "burst-size-limit"):
                tok = _junos_compact(tok)
        node = node.setdefault(tok, {})


def junos_get(tree: JunosTree, tokens: Iterable[str]) -> JunosTree | None:
    node: JunosTree | None = tree
    for tok in tokens:
        if node is None:
            return None
        node = node.get(tok)
    return node


def junos_delete(tree: JunosTree, tokens: list[str]) -> bool:
    parent = junos_get(tree, tokens[:-1])
    if parent is None or tokens[-1] not in parent:
        return False
    del parent[tokens[-1]]
    for k in range(len(tokens) - 1, 0, -1):  # containers left empty by the delete go too
        node, up = junos_get(tree, tokens[:k]), junos_get(tree, tokens[: k - 1])
        if node == {} and up is not None:
            del up[tokens[k - 1]]
    return True


def junos_lines(tree: JunosTree, prefix: str = "set") -> list[str]:
    out: list[str] = []
    for key, sub in tree.items():
        out += [f"{prefix} {key}"] if not sub else junos_lines(sub, f"{prefix} {key}")
    return out


def _one(node: JunosTree | None) -> str | None:
    return next(iter(node)) if node else None


class JunosSession(CliSession):
    """Junos: `configure private`, `set|delete|insert ...`, `commit and-quit` applies the candidate.

    Interfaces' `disable` lives on the ports (a console may change them); everything else in
    the committed tree on the switch (`SimSwitch.running`)."""

    SYNTAX = "                                           ^\nsyntax error."
    REJECT = "error: configuration database locked by:\n  admin terminal p0 (pid 4711) on since 2026-11-01"

    def __init__(self, switch: SimSwitch):
        super().__init__(switch)
        self.candidate: JunosTree | None = None  # the private candidate, disable statements included

    @classmethod
    def new_config(cls, sw: SimSwitch) -> Any:
        tree: JunosTree = {}
        for p in sw.ports.values():
            if p.cli is not None:
                junos_set(tree, f"interfaces {p.cli} unit 0 family ethernet-switching interface-mode access".split())
        return tree

    @classmethod
    def effect(cls, sw: SimSwitch, port: SimPort) -> tuple[int | None, frozenset[int]]:
        """The input filter's terms in order, first match wins, and no match is discarded."""
        tree: JunosTree = sw.running
        filt = _one(junos_get(tree, ["interfaces", str(port.cli), "unit", "0", "family", "ethernet-switching",
                                     "filter", "input"]))
        if filt is None:
            return None, frozenset()
        terms: JunosTree = junos_get(tree, [*_FW.split(), filt, "term"]) or {}

        def first(tcp_port: int | None) -> JunosTree | None:
            for term in terms.values():
                frm = term.get("from", {})
                protos = set(frm.get("ip-protocol", {}))
                dports = {port_number(d) for d in frm.get("destination-port", {})}
                catch_all = tcp_port is None and not protos and not dports
                tcp = tcp_port is not None and (not protos or "tcp" in protos) and (not dports or tcp_port in dports)
                if catch_all or tcp:
                    return cast(JunosTree, term)
            return None

        rest = first(None)
        rate: int | None = 0  # the implicit discard at the end of every filter
        if rest is not None and "discard" not in rest.get("then", {}):
            rate = None
            policer = _one(rest.get("then", {}).get("policer"))
            if policer is not None:
                limit = _one(junos_get(tree, ["firewall", "policer", policer, "if-exceeding", "bandwidth-limit"]))
                m = re.fullmatch(r"(\d+(?:\.\d+)?)([kmg]?)", limit or "")
                rate = scaled_bps(m.group(1), m.group(2)) if m else 0
        named: set[int] = set()
        for term in terms.values():
            named |= {p for d in term.get("from", {}).get("destination-port", {}) if (p := port_number(d)) is not None}
        blocked = set()
        for tcp_port in named:
            term = first(tcp_port)
            if term is None or "discard" in term.get("then", {}):
                blocked.add(tcp_port)
        return rate, frozenset(blocked)

    def _committed_with_admin(self) -> JunosTree:
        tree: JunosTree = copy.deepcopy(self.sw.running)
        for p in self.sw.ports.values():
            if p.cli is not None and p.admin == "down":
                junos_set(tree, ["interfaces", p.cli, "disable"])
        return tree

    def run(self, line: str) -> str:
        if self.mode == "exec":
            return self._exec(line)
        assert self.candidate is not None
        m = re.fullmatch(r"(set|delete) (.+)", line)
        if m:
            return self._edit(m.group(1), m.group(2).split())
        m = re.fullmatch(r"insert ((?:\S+ )+)term (\S+) before term (\S+)", line)
        if m:
            path = m.group(1).split()
            if not _junos_match([*path, "term", m.group(2)], prefix=True):
                return self.SYNTAX
            if self.change_refused():
                return self.REJECT
            terms = junos_get(self.candidate, [*path, "term"])
            if terms is None or m.group(2) not in terms or m.group(3) not in terms:
                return "error: statement not found"
            moving = terms.pop(m.group(2))
            rebuilt = {}
            for k, v in terms.items():
                if k == m.group(3):
                    rebuilt[m.group(2)] = moving
                rebuilt[k] = v
            terms.clear()
            terms.update(rebuilt)
            return ""
        if line in ("commit and-quit", "commit"):
            return self._commit(line)
        if line in ("exit", "quit", "exit configuration-mode"):
            self.mode, self.candidate = "exec", None
            return "Exiting configuration mode"
        return self.SYNTAX

    def _exec(self, line: str) -> str:
        m = re.fullmatch(r"show interfaces (\S+) terse", line)
        if m:
            p = self.sw.port_by_cli(m.group(1))
            return self.show(p) if p is not None else f"error: device {m.group(1)} not found"
        m = re.fullmatch(r"show configuration interfaces (\S+) \| display set", line)
        if m:
            sub = junos_get(self._committed_with_admin(), ["interfaces", m.group(1)])
            return "\n".join(junos_lines(sub or {}, f"set interfaces {m.group(1)}"))
        if line == "show configuration firewall | display set | match RW-":
            fw = junos_get(self.sw.running, ["firewall"]) or {}
            fw = dict(sorted(fw.items(), key=lambda kv: kv[0] != "family"))  # Junos prints filters first
            return "\n".join(ln for ln in junos_lines(fw, "set firewall") if "RW-" in ln)
        if line == "configure private":
            self.mode = "config"
            self.candidate = self._committed_with_admin()
            return "warning: uncommitted changes will be discarded on exit\nEntering configuration mode"
        return "                  ^\nunknown command."

    def _edit(self, verb: str, tokens: list[str]) -> str:
        assert self.candidate is not None
        if not _junos_match(tokens, prefix=verb == "delete"):
            return self.SYNTAX
        if tokens[0] == "interfaces" and self.sw.port_by_cli(tokens[1]) is None:
            # Junos would take any well-formed name; the sim refuses names it has no port
            # for, so a renderer that mangles a name fails here instead of silently.
            return f"error: interface {tokens[1]} is not a port of this switch (simulated)"
        if self.sw.cli_fault == "refuse_block" and tokens[-2:] == ["ip-protocol", "tcp"]:
            return self.SYNTAX  # non-ELS EX: `from protocol`, not `ip-protocol` (restrict_refused_syntax)
        if self.change_refused():
            return self.REJECT
        if verb == "set":
            junos_set(self.candidate, tokens)
            return ""
        return "" if junos_delete(self.candidate, tokens) else "warning: statement not found"

    def _commit_errors(self, tree: JunosTree) -> list[str]:
        """Commit check: every referenced policer and filter must exist (restrict_refused_commit_policer)."""
        errors: list[str] = []
        policers = junos_get(tree, ["firewall", "policer"]) or {}
        filters = junos_get(tree, _FW.split()) or {}
        for fname, f in filters.items():
            for tname, term in f.get("term", {}).items():
                for pol in term.get("then", {}).get("policer", {}):
                    if pol not in policers:
                        why = "Referenced policer does not exist"
                    elif self.sw.cli_fault == "refuse_throttle":
                        why = "Policer is not supported on this platform (simulated)"
                    else:
                        continue
                    errors += [f"[edit {_FW} {fname} term {tname} then]", f"  'policer {pol}'", f"    {why}"]
        for name, iface in (junos_get(tree, ["interfaces"]) or {}).items():
            filt = _one(junos_get(iface, ["unit", "0", "family", "ethernet-switching", "filter", "input"]))
            if filt is not None and filt not in filters:
                errors += [f"[edit interfaces {name} unit 0 family ethernet-switching filter]", f"  'input {filt}'",
                           "    Referenced filter is not defined"]
        return errors + ["error: configuration check-out failed"] if errors else []

    def _commit(self, line: str) -> str:
        assert self.candidate is not None
        errors = self._commit_errors(self.candidate)
        if errors:
            return "\n".join(errors)
        tree = copy.deepcopy(self.candidate)
        for p in self.sw.ports.values():
            if p.cli is None:
                continue
            want = "down" if junos_get(tree, ["interfaces", p.cli, "disable"]) is not None else "up"
            junos_delete(tree, ["interfaces", p.cli, "disable"])
            if p.admin != want:
                self.sw.set_admin(p, want)
        self.sw.running = tree
        self.sw.save()  # a commit is persistent
        if line == "commit":
            return "configuration check succeeds\ncommit complete"
        self.mode, self.candidate = "exec", None
        return "configuration check succeeds\ncommit complete\nExiting configuration mode"

    def discard(self) -> None:
        self.candidate = None  # a private candidate dies with its session

    def show(self, p: SimPort) -> str:
        assert p.cli is not None
        admin = "down" if p.admin == "down" else "up"
        link = "up" if p.forwarding else "down"
        return (f"Interface               Admin Link Proto    Local                 Remote\n"
                f"{p.cli:<24}{admin:<6}{link}\n{p.cli + '.0':<24}up    {link:<5}eth-switch\n")


# ------------------------------------------------------------------------------------------------
# Linux: `ip link`, and tc on the ingress hook (matchall police, flower drops).


@dataclass(frozen=True)
class TcFilter:
    kind: str  # "police" | "drop"
    rate_bps: int = 0
    burst_bytes: int = 0
    dst_port: int = 0


@dataclass
class TcConfig:
    ingress: set[str] = field(default_factory=set)  # ports with an ingress qdisc
    filters: dict[str, dict[tuple[int, int], TcFilter]] = field(default_factory=dict)  # port: {(pref, handle)}


def tc_rate(bps: int) -> str:
    """tc prints rates in the largest decimal unit that divides them: 10Mbit, 9984Kbit."""
    for unit, size in (("Gbit", 10**9), ("Mbit", 10**6), ("Kbit", 10**3)):
        if bps >= size and bps % size == 0:
            return f"{bps // size}{unit}"
    return f"{bps}bit"


_TC_DEV = r"dev (\S+)"


class LinuxSession(TableSession):
    """The lab's Linux "switch": `ip link set dev X down|up`, `ip -o link show dev X`, tc ingress."""

    NO_KERNEL = "\nWe have an error talking to the kernel"
    EXEC = (
        cmd(rf"ip link set {_TC_DEV} (down|up)", "link", changes=True),
        cmd(rf"ip -o link show {_TC_DEV}", "show_link"),
        cmd(rf"tc qdisc replace {_TC_DEV} handle ffff: ingress", "qdisc", changes=True),
        cmd(rf"tc filter replace {_TC_DEV} ingress pref (?P<pref>\d+) handle (?P<handle>\d+) protocol all matchall"
            r" action police rate (?P<rate>\d+)bit burst (?P<burst>\d+) conform-exceed drop/ok",
            "tc_filter", arg="police", feature="throttle", changes=True),
        cmd(rf"tc filter replace {_TC_DEV} ingress pref (?P<pref>\d+) handle (?P<handle>\d+) protocol ip flower"
            r" ip_proto tcp dst_port (?P<port>\d+) action drop",
            "tc_filter", arg="drop", feature="block", changes=True),
        cmd(rf"tc filter del {_TC_DEV} ingress pref (\d+)", "tc_del", changes=True),
        cmd(rf"tc filter show {_TC_DEV} ingress", "tc_show"),
    )
    # Fixture restrict_refused_no_classifier: a kernel without cls_matchall / cls_flower.
    REFUSED = {"throttle": "Error: TC classifier not found." + NO_KERNEL,
               "block": "Error: TC classifier not found." + NO_KERNEL}
    REJECT = "RTNETLINK answers: Operation not permitted"

    @classmethod
    def new_config(cls, sw: SimSwitch) -> Any:
        return TcConfig()

    @classmethod
    def effect(cls, sw: SimSwitch, port: SimPort) -> tuple[int | None, frozenset[int]]:
        tc = sw.running
        assert isinstance(tc, TcConfig)
        filters = tc.filters.get(port.name, {}) if port.name in tc.ingress else {}
        rates = [f.rate_bps for f in filters.values() if f.kind == "police"]
        return (min(rates) if rates else None), frozenset(f.dst_port for f in filters.values() if f.kind == "drop")

    @property
    def tc(self) -> TcConfig:
        tc = self.sw.running
        assert isinstance(tc, TcConfig)
        return tc

    def invalid(self, line: str) -> str:
        words = line.split()
        if words[:1] == ["tc"] and len(words) > 1:
            return f'Command "{" ".join(words[1:3])}" is unknown, try "tc help".'
        return f"-bash: {words[0] if words else ''}: command not found"

    def _dev(self, name: str) -> SimPort | str:
        p = self.sw.port_by_cli(name)
        return p if p is not None else f'Cannot find device "{name}"'

    def op_link(self, m: re.Match[str], arg: str) -> str:
        p = self._dev(m.group(1))
        if isinstance(p, str):
            return p
        self.sw.set_admin(p, m.group(2))
        return ""

    def op_show_link(self, m: re.Match[str], arg: str) -> str:
        p = self.sw.port_by_cli(m.group(1))
        return self.show(p) if p is not None else f'Device "{m.group(1)}" does not exist.'

    def op_qdisc(self, m: re.Match[str], arg: str) -> str:
        p = self._dev(m.group(1))
        if isinstance(p, str):
            return p
        self.tc.ingress.add(p.name)
        return ""

    def op_tc_filter(self, m: re.Match[str], arg: str) -> str:
        p = self._dev(m.group(1))
        if isinstance(p, str):
            return p
        if p.name not in self.tc.ingress:
            return "Error: Cannot find specified qdisc on specified device." + self.NO_KERNEL
        key = (int(m["pref"]), int(m["handle"]))
        if arg == "police":
            f = TcFilter("police", rate_bps=int(m["rate"]), burst_bytes=int(m["burst"]))
        else:
            f = TcFilter("drop", dst_port=int(m["port"]))
        self.tc.filters.setdefault(p.name, {})[key] = f
        return ""

    def op_tc_del(self, m: re.Match[str], arg: str) -> str:
        p = self._dev(m.group(1))
        if isinstance(p, str):
            return p
        mine = self.tc.filters.get(p.name, {})
        gone = [k for k in mine if k[0] == int(m.group(2))]
        if p.name not in self.tc.ingress or not gone:
            return "Error: Cannot find specified filter chain." + self.NO_KERNEL  # restrict_refused_no_filter
        for k in gone:
            del mine[k]
        return ""

    def op_tc_show(self, m: re.Match[str], arg: str) -> str:
        p = self._dev(m.group(1))
        if isinstance(p, str):
            return p
        if p.name not in self.tc.ingress:
            return ""
        out: list[str] = []
        prefs: set[int] = set()
        for (pref, handle), f in sorted(self.tc.filters.get(p.name, {}).items()):
            head = f"filter protocol {'all' if f.kind == 'police' else 'ip'} pref {pref}" \
                   f" {'matchall' if f.kind == 'police' else 'flower'} chain 0 "
            if pref not in prefs:  # tc prints the chain's line once, then one block per filter
                prefs.add(pref)
                out.append(head)
            if f.kind == "police":
                out += [f"{head}handle 0x{handle:x} ", "  not_in_hw",
                        f"\taction order 1:  police 0x{handle:x} rate {tc_rate(f.rate_bps)} burst {f.burst_bytes}b"
                        " mtu 2Kb action drop/pass overhead 0b ", "\tref 1 bind 1", ""]
            else:
                out += [f"{head}handle 0x{handle:x} ", "  eth_type ipv4", "  ip_proto tcp",
                        f"  dst_port {f.dst_port}", "  not_in_hw", "\taction order 1: gact action drop",
                        "\t random type none pass val 0", f"\t index {handle} ref 1 bind 1", ""]
        return "\n".join(out)

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
    inventory's unprotected ports (and a restriction the vendor cannot render); then it sends
    the vendor's change script line by line, stops at the first line the vendor's ERROR_PATTERN
    flags, and reads the port back in the same session with the vendor's parser.
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

    def _send_script(self, session: CliSession, script: ChangeScript, name: str, action: str) -> None:
        """Every line of `script`, stopping at the first the vendor flags; the drop faults act at
        the first line that may take effect, before or right after it is sent."""
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

    def _saved(self, session: CliSession) -> tuple[bool | None, str]:
        if not (self.save_config and self.cli.SAVE is not None):
            return None, ""
        try:
            self._save_dialogue(session)
            return True, ""
        except DriverError as e:
            return False, e.reason

    def _run_change(self, action: PortAction, port: str, call: DriverCall) -> ChangeResult:
        name = self.validate_port(port)
        script = change_script(self.cli, action, name)
        call.commands = script.commands
        session = self.sim.open_session(name, action)
        self._send_script(session, script, name, action)
        readback = session.send(self.cli.render_readback(name))
        admin = self.cli.parse_admin_state(readback, name)
        saved, save_error = self._saved(session)
        return ChangeResult(switch=self.name, port=name, action=action, expected=EXPECTED_ADMIN[action],
                            cli_admin=admin, duration_s=0.0, saved=saved, save_error=save_error, readback=readback)

    # -- graceful restrictions (issue 12) -----------------------------------------------------

    async def throttle(self, port: str, rate_bps: int) -> RestrictionResult:
        return self._restrict("throttle", port, rate_bps=rate_bps)

    async def unthrottle(self, port: str) -> RestrictionResult:
        return self._restrict("unthrottle", port)

    async def block_service(self, port: str, service: str) -> RestrictionResult:
        return self._restrict("block", port, service=service)

    async def unblock_service(self, port: str, service: str) -> RestrictionResult:
        return self._restrict("unblock", port, service=service)

    async def read_restriction(self, port: str, kind: RestrictionKind, service: str | None = None) -> Restriction:
        name = self.validate_port(port)
        rcli = restriction_cli(self.cli)
        try:
            commands = rcli.render_restriction_readback(name, kind, service)
        except RestrictionRefused as e:
            raise RestrictionRefused(e.reason, switch=self.name, port=name, action="read") from None
        session = self.sim.open_session(name, "read")
        return rcli.parse_restriction(self._read_back(session, commands), name, kind, service)

    @staticmethod
    def _read_back(session: CliSession, commands: Iterable[str]) -> str:
        return "\n".join(session.send(c) for c in commands)

    def _restrict(self, action: RestrictionAction, port: str, *, rate_bps: int | None = None,
                  service: str | None = None) -> RestrictionResult:
        call = DriverCall(action, port, "ok")
        self.calls.append(call)
        try:
            return self._run_restriction(action, port, call, rate_bps, service)
        except DriverError as e:
            call.outcome = type(e).__name__
            raise

    def _run_restriction(self, action: RestrictionAction, port: str, call: DriverCall, rate_bps: int | None,
                         service: str | None) -> RestrictionResult:
        name = self.validate_port(port)
        rcli = restriction_cli(self.cli)
        kind = ACTION_KIND[action]
        try:  # what the vendor cannot render (rate under its minimum, unknown service) sends nothing
            change: RestrictionChange
            if action == "throttle":
                change = rcli.render_throttle(name, cast(int, rate_bps))  # the renderer checks the value
            elif action == "unthrottle":
                change = rcli.render_unthrottle(name)
            elif action == "block":
                change = rcli.render_block_service(name, service or "")
            else:
                change = rcli.render_unblock_service(name, service or "")
            readback_commands = rcli.render_restriction_readback(name, kind, service)
        except RestrictionRefused as e:
            raise RestrictionRefused(e.reason, switch=self.name, port=name, action=action) from None
        script = restriction_script(self.cli, change)
        call.commands = script.commands
        session = self.sim.open_session(name, action)
        self._send_script(session, script, name, action)
        readback = self._read_back(session, readback_commands)
        reading = rcli.parse_restriction(readback, name, kind, service)
        saved, save_error = self._saved(session)
        return RestrictionResult(switch=self.name, port=name, action=action, reading=reading, duration_s=0.0,
                                 rate=change.rate, service=service, saved=saved, save_error=save_error,
                                 readback=readback)

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
