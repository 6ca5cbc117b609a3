"""Graceful restrictions (throttle a port, block a service): shared facts, names, rates, checks.

The vendor modules render and parse; this module holds what they share, so every vendor names
its objects, rounds its rates and reports what it read back in one way. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, Protocol

from .base import ChangeScript, PermanentDriverError, VendorCli, expand_alias, names_port

RestrictionKind = Literal["throttle", "block"]
RestrictionState = Literal["present", "absent", "unknown"]

# What `block_service` drops: TCP from the server (the port's ingress) to these destination
# ports. SMTP = 25 (relay), 465 (submissions, implicit TLS) and 587 (submission).
SERVICE_PORTS: Mapping[str, tuple[int, ...]] = MappingProxyType({"smtp": (25, 465, 587)})

# Names in services files and vendor `show` output that stand for the ports above; a read-back
# may print either form (IOS prints `eq smtp` for 25 whatever was typed).
PORT_NAMES: Mapping[str, int] = MappingProxyType({"smtp": 25, "smtps": 465, "submission": 587})

# Every object RackWarden creates on a switch starts with this, so it never takes or deletes an
# operator's own policy-map, ACL or filter, and an operator can see at a glance whose it is.
NAME_PREFIX = "RW-"


class RestrictionRefused(PermanentDriverError):
    """The restriction cannot be rendered for this vendor (rate below its minimum, unknown
    service): nothing was sent, and the caller must choose another rung (shut, or none)."""


@dataclass(frozen=True, slots=True)
class RateRule:
    """The rates a vendor's policer accepts: `unit_bps` per unit typed, a multiple of `step`
    units, at least `minimum` units. `unit` is what the command calls the unit."""

    unit: str
    unit_bps: int
    step: int
    minimum: int
    source: str  # the vendor document that gives the range


@dataclass(frozen=True, slots=True)
class Rate:
    """A cap as the vendor will enforce it: never above what was asked (R1)."""

    requested_bps: int
    applied_bps: int
    value: int  # the number typed, in `unit`
    unit: str

    @property
    def rounded(self) -> bool:
        return self.applied_bps != self.requested_bps

    @property
    def note(self) -> str:
        """One line for the action record; empty when the cap is typed exactly."""
        if not self.rounded:
            return ""
        return (
            f"cap {self.requested_bps} bps rounded down to {self.applied_bps} bps "
            f"({self.value} {self.unit}): the policer accepts no finer value"
        )


def vendor_rate(vendor: str, rule: RateRule, rate_bps: int) -> Rate:
    """`rate_bps` in the vendor's unit, rounded DOWN to a value the vendor accepts.

    Down, because rounding up would let the server exceed its contract rate. A rate below the
    vendor's minimum cannot be rounded down to anything the switch takes, so it is refused.
    """
    if isinstance(rate_bps, bool) or not isinstance(rate_bps, int) or rate_bps <= 0:
        raise RestrictionRefused(
            f"{vendor}: throttle rate must be a positive integer bps, got {rate_bps!r}; nothing was sent"
        )
    units = rate_bps // rule.unit_bps
    value = units - units % rule.step
    if value < rule.minimum:
        raise RestrictionRefused(
            f"{vendor}: throttle rate {rate_bps} bps is below the policer minimum "
            f"{rule.minimum * rule.unit_bps} bps ({rule.minimum} {rule.unit}); nothing was sent"
        )
    return Rate(requested_bps=rate_bps, applied_bps=value * rule.unit_bps, value=value, unit=rule.unit)


def service_ports(vendor: str, service: str) -> tuple[int, ...]:
    """The TCP destination ports `service` stands for; RestrictionRefused for an unknown one."""
    try:
        return SERVICE_PORTS[service]
    except (KeyError, TypeError):
        raise RestrictionRefused(
            f"{vendor}: unknown service {service!r}; use one of {', '.join(sorted(SERVICE_PORTS))}"
        ) from None


_SPLIT = re.compile(r"([A-Za-z][A-Za-z0-9-]*?)(\d.*)", re.ASCII)


def port_token(port: str, aliases: Mapping[str, str] | None = None) -> str:
    """A short, upper-case, name-safe form of a canonical port name for object names.

    The interface type becomes its shortest alias (`GigabitEthernet1/0/12` -> `GI1-0-12`), so
    names stay within the shortest limit of the vendors (Huawei ACL names: 32 characters);
    `/`, `:` and `.` become `-`. Distinct access ports of one vendor give distinct tokens.
    """
    short = port
    m = _SPLIT.fullmatch(port)
    if m is not None and aliases:
        full, rest = m.group(1), m.group(2)
        keys = [k for k, v in aliases.items() if v.casefold() == full.casefold()]
        if keys:
            short = min(keys, key=lambda k: (len(k), k)) + rest
    return re.sub(r"[^A-Za-z0-9-]", "-", short).upper()


def object_name(kind: str, port: str, aliases: Mapping[str, str] | None = None) -> str:
    """`RW-<KIND>-<port token>`: one deterministic name per port and kind (THROTTLE, SMTP...)."""
    return f"{NAME_PREFIX}{kind.upper()}-{port_token(port, aliases)}"


@dataclass(frozen=True, slots=True)
class Restriction:
    """What a read-back shows of one restriction on one port.

    `unknown` when the output does not name the port, carries an error line, or shows the
    restriction attached without its definition: never taken for present or absent.
    """

    kind: RestrictionKind
    port: str
    state: RestrictionState
    rate_bps: int | None = None  # throttle: the rate the switch enforces, when it says
    service: str | None = None  # block: the service asked about

    @property
    def present(self) -> bool:
        return self.state == "present"


@dataclass(frozen=True, slots=True)
class RestrictionChange:
    """Config-mode lines for one restriction change (mode entry and exit not included).

    `effect_index` is the first line that may change forwarding, as in ChangeScript: a failure
    before it leaves the port as it was. `rate` is the cap as typed (throttle only).
    """

    lines: tuple[str, ...]
    effect_index: int
    rate: Rate | None = None


def restriction_script(cli: VendorCli, change: RestrictionChange) -> ChangeScript:
    """Every line a session types for `change` (mode entry and exit included), as change_script
    builds it for a shut, with the index of the first line that may take effect."""
    if not change.lines:
        raise PermanentDriverError(f"{cli.NAME} rendered no commands for a restriction")
    commands = (*cli.CONFIG_ENTER, *change.lines, *cli.CONFIG_EXIT)
    return ChangeScript(commands=commands, effect_index=len(cli.CONFIG_ENTER) + change.effect_index)


RestrictionAction = Literal["throttle", "unthrottle", "block", "unblock"]

# What each restriction action changes and what its read-back must then show.
ACTION_KIND: Mapping[RestrictionAction, RestrictionKind] = MappingProxyType(
    {"throttle": "throttle", "unthrottle": "throttle", "block": "block", "unblock": "block"})
EXPECTED_STATE: Mapping[RestrictionAction, RestrictionState] = MappingProxyType(
    {"throttle": "present", "unthrottle": "absent", "block": "present", "unblock": "absent"})


@dataclass(frozen=True, slots=True)
class RestrictionResult:
    """What the CLI shows right after a restriction change, read back in the same session.

    A command the switch refuses raises (CommandRejected, with `outcome_unknown` when it came
    after the first line that may take effect), exactly as for a shut; a result is returned
    only when every line was accepted, and `agrees` says whether the read-back shows what was
    asked. A throttle agrees only when the switch reports a rate at or under the one asked.
    """

    switch: str
    port: str
    action: RestrictionAction
    reading: Restriction
    duration_s: float
    rate: Rate | None = None  # throttle: the cap as typed (rounded down to what the vendor takes)
    service: str | None = None  # block / unblock: the service ("smtp")
    saved: bool | None = None
    save_error: str = ""
    readback: str = field(default="", repr=False)

    @property
    def kind(self) -> RestrictionKind:
        return ACTION_KIND[self.action]

    @property
    def expected(self) -> RestrictionState:
        return EXPECTED_STATE[self.action]

    @property
    def agrees(self) -> bool:
        if self.reading.state != self.expected:
            return False
        if self.action == "throttle":
            asked = self.rate.applied_bps if self.rate is not None else None
            got = self.reading.rate_bps
            return asked is not None and got is not None and got <= asked
        return True


class RestrictionCli(Protocol):
    """The restriction half of a vendor module (pure, like VendorCli)."""

    NAME: str
    THROTTLE_RATE: RateRule

    def throttle_rate(self, rate_bps: int) -> Rate: ...

    def render_throttle(self, port: str, rate_bps: int) -> RestrictionChange: ...

    def render_unthrottle(self, port: str) -> RestrictionChange: ...

    def render_block_service(self, port: str, service: str) -> RestrictionChange: ...

    def render_unblock_service(self, port: str, service: str) -> RestrictionChange: ...

    def render_restriction_readback(
        self, port: str, kind: RestrictionKind, service: str | None = None
    ) -> tuple[str, ...]:
        """Exec-mode commands whose joined output `parse_restriction` reads."""
        ...

    def parse_restriction(
        self, output: str, port: str, kind: RestrictionKind, service: str | None = None
    ) -> Restriction: ...


RESTRICTION_API = (
    "THROTTLE_RATE",
    "throttle_rate",
    "render_throttle",
    "render_unthrottle",
    "render_block_service",
    "render_unblock_service",
    "render_restriction_readback",
    "parse_restriction",
)


def restriction_cli(cli: VendorCli) -> RestrictionCli:
    """The vendor module as a RestrictionCli; PermanentDriverError names what it lacks."""
    missing = [a for a in RESTRICTION_API if not hasattr(cli, a)]
    if missing:
        raise PermanentDriverError(f"{cli.NAME} cannot throttle or block: no {', '.join(missing)}")
    return cli  # type: ignore[return-value]  # checked attribute by attribute just above


def ports_in(text: str) -> set[int]:
    """TCP ports a read-back line names (`eq smtp`, `eq 465`, `destination-port 587`)."""
    found: set[int] = set()
    for word in re.findall(r"[A-Za-z][\w-]*|\d+", text):
        if word.isdigit():
            found.add(int(word))
        elif word.lower() in PORT_NAMES:
            found.add(PORT_NAMES[word.lower()])
    return found


def scaled_bps(number: str, unit: str) -> int | None:
    """`10`, `mbps` -> 10_000_000; k/m/g are decimal as every vendor here prints them."""
    factors = {"": 1, "b": 1, "k": 1000, "m": 1000_000, "g": 1000_000_000}
    u = unit.lower().removesuffix("ps").removesuffix("bit").removesuffix("b") if unit else ""
    if u not in factors:
        return None
    try:
        return int(float(number) * factors[u])
    except ValueError:
        return None


_DST_PORT = re.compile(r"(?:\beq|\bdestination-port|\bdst_port)\s+(?:eq\s+)?([A-Za-z0-9-]+)", re.I)


def denied_tcp_ports(lines: list[str] | str) -> set[int]:
    """Destination ports of the `deny`/`discard`/`drop` TCP entries among `lines`."""
    rows = lines.splitlines() if isinstance(lines, str) else lines
    found: set[int] = set()
    for line in rows:
        low = line.lower()
        if "tcp" in low and ("deny" in low or "discard" in low or "drop" in low):
            for word in _DST_PORT.findall(line):
                found |= ports_in(word)
    return found


def judge(
    kind: RestrictionKind,
    port: str,
    *,
    named: bool,
    refused: bool,
    attached: bool,
    complete: bool,
    rate_bps: int | None = None,
    service: str | None = None,
) -> Restriction:
    """The read-back verdict, the same for every vendor.

    A read-back that does not name the port or carries the vendor's error line says nothing;
    attached but incomplete (policer without a readable rate, ACL without every port) is not
    the restriction the caller asked for: both are `unknown`, never present or absent.
    """
    if refused or not named:
        state: RestrictionState = "unknown"
    elif not attached:
        state = "absent"
    else:
        state = "present" if complete else "unknown"
    return Restriction(
        kind=kind,
        port=port,
        state=state,
        rate_bps=rate_bps if state == "present" else None,
        service=service,
    )


# --------------------------------------------------------------------------------------------
# Two CLI families render and read restrictions alike; each vendor module gives its keywords
# to one of these and keeps only its facts (names, rates, sources) and thin wrappers.
# --------------------------------------------------------------------------------------------


def burst_bytes(rate_bps: int, minimum: int, maximum: int) -> int:
    """Policer bucket depth: 100 ms of traffic at the cap, clamped to what the vendor accepts."""
    return max(minimum, min(maximum, rate_bps // 80))


def _attached(attach: str, output: str) -> bool:
    """Is the attach line (a regex of alternatives, `{name}` already filled in) on a line alone?"""
    return re.search(rf"^\s*{attach}\s*$", output, flags=re.M | re.I) is not None


_POLICE_RATE = re.compile(r"^\s*police\s+(?:cir\s+)?(?:rate\s+)?(\d+)\s*(bps|kbps|mbps|gbps)?\b", re.M | re.I)


@dataclass(frozen=True, slots=True)
class IosStyle:
    """IOS-like restrictions (cisco_ios, arista_eos): an MQC policy-map policing class-default,
    attached as an input service-policy; an extended ACL attached as `ip access-group ... in`.

    Every method takes the canonical port name (the vendor module validates it first).
    """

    vendor: str
    aliases: Mapping[str, str]
    error_pattern: str
    rate_rule: RateRule
    policy_map: str  # the command that creates a policy-map: `policy-map [type ...]`
    police: str  # the police line, with {value} (rate in the rule's unit) and {burst} (bytes)
    burst_min: int
    burst_max: int
    service_policy: str  # `service-policy [type qos] input`
    acl: str  # the command that creates the ACL: `ip access-list [extended]`
    show_config: str  # `show running-config interface[s]`
    show_policy: str  # `show policy-map [type ...]`
    attach_read: str  # regex: what the interface config shows when ours is attached ({name})
    default_rate_unit: str  # the unit `show policy-map` prints a bare police rate in

    def render_throttle(self, name: str, rate_bps: int) -> RestrictionChange:
        policy = object_name("throttle", name, self.aliases)
        rate = vendor_rate(self.vendor, self.rate_rule, rate_bps)
        burst = burst_bytes(rate.applied_bps, self.burst_min, self.burst_max)
        return RestrictionChange(
            lines=(
                f"{self.policy_map} {policy}",
                "class class-default",
                self.police.format(value=rate.value, burst=burst),
                f"interface {name}",
                f"{self.service_policy} {policy}",
            ),
            effect_index=2,  # re-rendering for an attached policy changes the rate in place
            rate=rate,
        )

    def render_unthrottle(self, name: str) -> RestrictionChange:
        # Detach first: IOS refuses to delete an attached policy-map.
        policy = object_name("throttle", name, self.aliases)
        return RestrictionChange(
            lines=(f"interface {name}", f"no {self.service_policy} {policy}", f"no {self.policy_map} {policy}"),
            effect_index=1,
        )

    def render_block_service(self, name: str, service: str) -> RestrictionChange:
        ports = service_ports(self.vendor, service)
        acl = object_name(service, name, self.aliases)
        # Deleted and re-created, so a re-apply never appends duplicate entries; sequence
        # numbers are explicit so the read-back is the same on every release.
        entries = [f"{10 * (i + 1)} deny tcp any any eq {p}" for i, p in enumerate(ports)]
        return RestrictionChange(
            lines=(
                f"no {self.acl} {acl}",
                f"{self.acl} {acl}",
                *entries,
                f"{10 * (len(ports) + 1)} permit ip any any",
                f"interface {name}",
                f"ip access-group {acl} in",
            ),
            effect_index=0,  # deleting an ACL that is already attached changes forwarding at once
        )

    def render_unblock_service(self, name: str, service: str) -> RestrictionChange:
        service_ports(self.vendor, service)
        acl = object_name(service, name, self.aliases)
        return RestrictionChange(
            lines=(f"interface {name}", f"no ip access-group {acl} in", f"no {self.acl} {acl}"),
            effect_index=1,
        )

    def render_readback(self, name: str, kind: RestrictionKind, service: str | None) -> tuple[str, ...]:
        if kind == "throttle":
            return (f"{self.show_config} {name}", f"{self.show_policy} {object_name('throttle', name, self.aliases)}")
        service_ports(self.vendor, service or "")
        return (f"{self.show_config} {name}", f"show ip access-lists {object_name(service or '', name, self.aliases)}")

    def parse(self, output: str, port: str, kind: RestrictionKind, service: str | None) -> Restriction:
        """The attach line in the interface config, and the policer rate or the ACL's denied
        ports in our object's listing."""
        name = expand_alias(port, self.aliases)
        refused = re.search(self.error_pattern, output, flags=re.M) is not None
        named = names_port(output, name)
        obj = re.escape(object_name("throttle" if kind == "throttle" else service or "", name, self.aliases))
        attached = _attached(self.attach_read.format(name=obj), output)
        if kind == "throttle":
            m = _POLICE_RATE.search(output)
            rate = scaled_bps(m.group(1), m.group(2) or self.default_rate_unit) if m else None
            return judge(kind, port, named=named, refused=refused, attached=attached,
                         complete=rate is not None, rate_bps=rate)
        ports = service_ports(self.vendor, service or "")
        complete = set(ports) <= denied_tcp_ports(output)
        return judge(kind, port, named=named, refused=refused, attached=attached, complete=complete,
                     service=service)


_LR_INBOUND = re.compile(r"^\s*qos lr inbound cir (\d+)\b", re.M)

# Listing an ACL that does not exist is an error on VRP and Comware; after an unblock that is
# the expected answer, so it does not make the read-back unreadable.
NO_SUCH_ACL = re.compile(r"^\s*(?:%\s*|Error:\s*)?(?:The )?ACL\b.*\b(?:does not|doesn't) exist\.?\s*$", re.M | re.I)


@dataclass(frozen=True, slots=True)
class VrpStyle:
    """VRP-like restrictions (huawei, hp_comware): `qos lr inbound cir <kbps>` under the
    interface; a named advanced ACL attached inbound. Methods take the canonical port name."""

    vendor: str
    aliases: Mapping[str, str]
    error_pattern: str
    rate_rule: RateRule
    acl_create: str  # with {acl}: `acl name {acl} advance` / `acl advanced name {acl}`
    acl_delete: str  # with {acl}
    attach: str  # with {acl}: the interface line that applies it inbound

    def render_throttle(self, name: str, rate_bps: int) -> RestrictionChange:
        rate = vendor_rate(self.vendor, self.rate_rule, rate_bps)
        return RestrictionChange(
            lines=(f"interface {name}", f"qos lr inbound cir {rate.value}"), effect_index=1, rate=rate
        )

    def render_unthrottle(self, name: str) -> RestrictionChange:
        return RestrictionChange(lines=(f"interface {name}", "undo qos lr inbound"), effect_index=1)

    def render_block_service(self, name: str, service: str) -> RestrictionChange:
        ports = service_ports(self.vendor, service)
        acl = object_name(service, name, self.aliases)
        # Fixed rule ids: re-typing one with the same id replaces it, never adds one. An inbound
        # filter permits what no rule matches, so no permit rule is needed.
        rules = (f"rule {5 * (i + 1)} deny tcp destination-port eq {p}" for i, p in enumerate(ports))
        return RestrictionChange(
            lines=(
                self.acl_create.format(acl=acl),
                *rules,
                "quit",
                f"interface {name}",
                self.attach.format(acl=acl),
            ),
            effect_index=1,  # a rule added to an ACL already applied takes effect at once
        )

    def render_unblock_service(self, name: str, service: str) -> RestrictionChange:
        # Only ours is detached: an operator's own filter on the port stays.
        service_ports(self.vendor, service)
        acl = object_name(service, name, self.aliases)
        return RestrictionChange(
            lines=(f"interface {name}", f"undo {self.attach.format(acl=acl)}", "quit", self.acl_delete.format(acl=acl)),
            effect_index=1,
        )

    def render_readback(self, name: str, kind: RestrictionKind, service: str | None) -> tuple[str, ...]:
        config = f"display current-configuration interface {name}"
        if kind == "throttle":
            return (config,)
        service_ports(self.vendor, service or "")
        return (config, f"display acl name {object_name(service or '', name, self.aliases)}")

    def parse(self, output: str, port: str, kind: RestrictionKind, service: str | None) -> Restriction:
        """`qos lr inbound cir` in the interface config, or our ACL attached and denying every
        port of the service."""
        name = expand_alias(port, self.aliases)
        refused = re.search(self.error_pattern, NO_SUCH_ACL.sub("", output), flags=re.M) is not None
        named = names_port(output, name)
        if kind == "throttle":
            m = _LR_INBOUND.search(output)
            rate = int(m.group(1)) * 1000 if m else None
            return judge(kind, port, named=named, refused=refused, attached=m is not None, complete=True,
                         rate_bps=rate)
        ports = service_ports(self.vendor, service or "")
        acl = object_name(service or "", name, self.aliases)
        attached = _attached(re.escape(self.attach.format(acl=acl)), output)
        complete = set(ports) <= denied_tcp_ports(output)
        return judge(kind, port, named=named, refused=refused, attached=attached, complete=complete,
                     service=service)
