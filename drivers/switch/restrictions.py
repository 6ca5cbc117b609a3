"""Graceful restrictions (throttle a port, block a service): shared facts, names, rates, checks.

The vendor modules render and parse; this module holds what they share, so every vendor names
its objects, rounds its rates and reports what it read back in one way. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal, Protocol

from .base import ChangeScript, PermanentDriverError, VendorCli

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
