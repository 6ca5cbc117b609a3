"""Huawei VRP (S-series): `system-view`, `shutdown` / `undo shutdown`, `save` asks [Y/N]."""

from __future__ import annotations

import re

from .base import AdminState, SaveSpec, checked_port, expand_alias, same_port
from .restrictions import (
    Rate,
    RateRule,
    Restriction,
    RestrictionChange,
    RestrictionKind,
    VrpStyle,
    vendor_rate,
)

NAME = "huawei"

# slot/subcard/port; 10GE/25GE/40GE/100GE are CloudEngine-style names some S-series also use.
INTERFACE_PATTERN = re.compile(
    r"(?:GigabitEthernet|XGigabitEthernet|MultiGE|Ethernet|10GE|25GE|40GE|100GE)"
    r"\d{1,2}(?:/\d{1,3}){2,3}",
    re.ASCII,
)

# `display interface brief` prints GE0/0/1 and XGE0/0/1.
ALIASES = {
    "ge": "GigabitEthernet",
    "xge": "XGigabitEthernet",
    "mge": "MultiGE",
    "eth": "Ethernet",
    "gigabitethernet": "GigabitEthernet",
    "xgigabitethernet": "XGigabitEthernet",
    "multige": "MultiGE",
    "ethernet": "Ethernet",
}

# VRP5 says `Error: ...`; very old VRP3 boxes still print `% Unrecognized command ...`.
ERROR_PATTERN = (
    r"^\s*(?:Error\s*:|%\s*(?:Unrecognized command|Wrong parameter|Incomplete command"
    r"|Too many parameters|Ambiguous command))"
)

# A bare prompt: `<sw1>`, `[sw1]`, `[~sw1-GigabitEthernet0/0/1]` (`~`/`*`: two-stage commit).
PROMPT_PATTERN = re.compile(r"[<\[][~*]?[A-Za-z0-9][\w.:/-]*[>\]]", re.ASCII)

# The system-view banner, `Info:` notes and traps (`Mar 11 2024 09:14:04 sw1 %%01IFPDT/4/...`).
BENIGN_REPLY = re.compile(
    r"Enter system view, return user view with Ctrl\+Z\."
    r"|Info: .*"
    r"|[A-Z][a-z]{2}\s+\d+\s+\d{4}\s+[\d:]+(?:[+-][\d:]+)?\s+\S+\s+%%\d+.*"
)

CONFIG_ENTER: tuple[str, ...] = ("system-view",)
CONFIG_EXIT: tuple[str, ...] = ("return",)
CONFIG_TERMINATOR = r"\]"
NEEDS_ENABLE = False
CMD_VERIFY: bool | None = None
SAVE: SaveSpec | None = SaveSpec(
    command="save",
    prompts=(
        # `Are you sure to continue?[Y/N]` (S-series) or `... Continue? [Y/N]:` (AR/NE).
        (r"\[Y/N\]\s*:?", "y"),
        # First save on a box without a startup file: keep the offered default name.
        (r"file name.*\]\s*:?", ""),
    ),
    success_pattern=r"successfully",
    timeout_s=120.0,
)

_STATE = re.compile(
    r"^\s*(?P<name>[A-Za-z0-9][\w./:-]*) current state\s*:\s*(?P<state>.+?)\s*$", re.M
)


def canonical_port(port: str) -> str:
    """Validate and expand `port` (`GE0/0/1` -> `GigabitEthernet0/0/1`)."""
    return checked_port(NAME, INTERFACE_PATTERN, port, ALIASES)


def render_shut(port: str) -> tuple[str, ...]:
    """`interface X` + `shutdown` (system view)."""
    return (f"interface {canonical_port(port)}", "shutdown")


def render_restore(port: str) -> tuple[str, ...]:
    """`interface X` + `undo shutdown`."""
    return (f"interface {canonical_port(port)}", "undo shutdown")


def render_readback(port: str) -> str:
    """`display interface X`: `current state : Administratively DOWN` when shut."""
    return f"display interface {canonical_port(port)}"


def parse_admin_state(output: str, port: str) -> AdminState:
    """Admin state of `port` in `display interface` output."""
    want = expand_alias(port, ALIASES)
    states: set[AdminState] = set()
    for m in _STATE.finditer(output):
        if not same_port(expand_alias(m.group("name"), ALIASES), want):
            continue
        state = m.group("state").upper()
        # UP, DOWN, `ERROR DOWN(...)` are all admin-enabled; only a shutdown is "Administratively".
        states.add("down" if state.startswith("ADMINISTRATIVELY") else "up")
    return states.pop() if len(states) == 1 else "unknown"


# --------------------------------------------------------------------------------------------
# Graceful restrictions (issue 12): `qos lr inbound cir <kbps>` polices what the server sends;
# an advanced ACL as `traffic-filter inbound` drops its outbound SMTP. Objects RW-<KIND>-<port>.
# --------------------------------------------------------------------------------------------

# `qos lr inbound cir cir-value` takes kbit/s. Boards differ in their minimum (64 kbit/s on
# E3L/SA boards) and line-rate granularity; a multiple of 64 kbit/s is accepted by all of them
# and rounding down is always on the customer-safe side of R1.
THROTTLE_RATE = RateRule(
    unit="kbps",
    unit_bps=1000,
    step=64,
    minimum=64,
    source="Huawei S-series Command Reference, qos lr (interface view); CAR cir 8~4294967295"
    " kbit/s, 64 minimum on E3L/SA boards (https://blog.csdn.net/NeverGUM/article/details/102720178)",
)

_STYLE = VrpStyle(
    vendor=NAME,
    aliases=ALIASES,
    error_pattern=ERROR_PATTERN,
    rate_rule=THROTTLE_RATE,
    acl_create="acl name {acl} advance",
    acl_delete="undo acl name {acl}",
    attach="traffic-filter inbound acl name {acl}",
)


def throttle_rate(rate_bps: int) -> Rate:
    """The cap in kbit/s, a multiple of 64, rounded down."""
    return vendor_rate(NAME, THROTTLE_RATE, rate_bps)


def render_throttle(port: str, rate_bps: int) -> RestrictionChange:
    """`qos lr inbound cir <kbps>` under the interface (the switch picks the default CBS)."""
    return _STYLE.render_throttle(canonical_port(port), rate_bps)


def render_unthrottle(port: str) -> RestrictionChange:
    """`undo qos lr inbound`."""
    return _STYLE.render_unthrottle(canonical_port(port))


def render_block_service(port: str, service: str) -> RestrictionChange:
    """Named advanced ACL RW-<SERVICE>-<port> + `traffic-filter inbound acl name ...`."""
    return _STYLE.render_block_service(canonical_port(port), service)


def render_unblock_service(port: str, service: str) -> RestrictionChange:
    """Detach our ACL (only ours: an operator's traffic-filter stays), then delete it."""
    return _STYLE.render_unblock_service(canonical_port(port), service)


def render_restriction_readback(port: str, kind: RestrictionKind, service: str | None = None) -> tuple[str, ...]:
    """The interface's current configuration (always names the port), and our ACL for a block."""
    return _STYLE.render_readback(canonical_port(port), kind, service)


def parse_restriction(
    output: str, port: str, kind: RestrictionKind, service: str | None = None
) -> Restriction:
    """Verdict from `display current-configuration interface X` (+ `display acl name RW-...`)."""
    return _STYLE.parse(output, port, kind, service)
