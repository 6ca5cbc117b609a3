"""H3C / HPE Comware 5 and 7: `system-view`, `undo shutdown`, `save force` needs no answers."""

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

NAME = "hp_comware"

# member/slot/port, or chassis/member/slot/port on IRF chassis; M-GigabitEthernet (management)
# and Bridge-Aggregation are deliberately not matched.
INTERFACE_PATTERN = re.compile(
    r"(?:GigabitEthernet|Ten-GigabitEthernet|Twenty-FiveGigE|FortyGigE|HundredGigE)"
    r"\d{1,2}(?:/\d{1,3}){2,3}",
    re.ASCII,
)

# Comware 7 `display interface brief` prints GE1/0/1, XGE1/0/49, WGE, FGE, HGE.
ALIASES = {
    "ge": "GigabitEthernet",
    "xge": "Ten-GigabitEthernet",
    "wge": "Twenty-FiveGigE",
    "fge": "FortyGigE",
    "hge": "HundredGigE",
    "gigabitethernet": "GigabitEthernet",
    "ten-gigabitethernet": "Ten-GigabitEthernet",
    "twenty-fivegige": "Twenty-FiveGigE",
    "fortygige": "FortyGigE",
    "hundredgige": "HundredGigE",
}

ERROR_PATTERN = (
    r"^\s*(?:%\s*(?:Unrecognized command|Wrong parameter|Incomplete command|Too many parameters"
    r"|Ambiguous command|Unknown command)|Error\s*:)"
)

# A bare prompt: `<sw1>`, `[sw1]`, `[sw1-GigabitEthernet1/0/1]`.
PROMPT_PATTERN = re.compile(r"[<\[][A-Za-z0-9][\w.:/-]*[>\]]", re.ASCII)

# The system-view banner and log lines (`%Mar 11 09:14:04:201 2024 sw1 IFNET/3/PHY_UPDOWN: ...`).
BENIGN_REPLY = re.compile(
    r"System View: return to User View with Ctrl\+Z\."
    r"|%[A-Z][a-z]{2}\s+\d+\s+[\d:]+\s+\d{4}\s+\S+\s+[A-Z0-9_]+/\d/[A-Z0-9_]+:.*"
)

CONFIG_ENTER: tuple[str, ...] = ("system-view",)
CONFIG_EXIT: tuple[str, ...] = ("return",)
CONFIG_TERMINATOR = r"\]"
NEEDS_ENABLE = False
# netmiko turns echo verification off for Comware because long lines wrap at 80 columns there.
# Our lines are short (longest: prompt + `interface Ten-GigabitEthernet1/0/0/48`), and without
# verification every line costs a 2 s quiet-time read, so an action would take ~10 s.
CMD_VERIFY: bool | None = True
SAVE: SaveSpec | None = SaveSpec(
    command="save force",
    prompts=(
        # Only seen when `force` is refused by old releases and the interactive dialogue runs.
        (r"\[Y/N\]\s*:?", "y"),
        (r"press the enter key\)\s*:?", ""),
    ),
    success_pattern=r"successfully",
    timeout_s=120.0,
)

# Comware 5: `GigabitEthernet1/0/1 current state: DOWN`; Comware 7: the name alone on a line
# and `Current state: Administratively DOWN` on the next.
_STATE = re.compile(
    r"^\s*(?P<name>[A-Za-z][\w./:-]*)(?: current state\s*:\s*(?P<s5>.+?)"
    r"|\s*\r?\n\s*Current state\s*:\s*(?P<s7>.+?))\s*$",
    re.M,
)


def canonical_port(port: str) -> str:
    """Validate and expand `port` (`XGE1/0/49` -> `Ten-GigabitEthernet1/0/49`)."""
    return checked_port(NAME, INTERFACE_PATTERN, port, ALIASES)


def render_shut(port: str) -> tuple[str, ...]:
    """`interface X` + `shutdown` (system view)."""
    return (f"interface {canonical_port(port)}", "shutdown")


def render_restore(port: str) -> tuple[str, ...]:
    """`interface X` + `undo shutdown`."""
    return (f"interface {canonical_port(port)}", "undo shutdown")


def render_readback(port: str) -> str:
    """`display interface X`: `Current state: Administratively DOWN` when shut."""
    return f"display interface {canonical_port(port)}"


def parse_admin_state(output: str, port: str) -> AdminState:
    """Admin state of `port` in `display interface` output (Comware 5 or 7 layout)."""
    want = expand_alias(port, ALIASES)
    states: set[AdminState] = set()
    for m in _STATE.finditer(output):
        if not same_port(expand_alias(m.group("name"), ALIASES), want):
            continue
        state = (m.group("s5") or m.group("s7") or "").upper()
        states.add("down" if state.startswith("ADMINISTRATIVELY") else "up")
    return states.pop() if len(states) == 1 else "unknown"


# --------------------------------------------------------------------------------------------
# Graceful restrictions (issue 12): `qos lr inbound cir <kbps>` and a named advanced ACL as
# `packet-filter name ... inbound` (Comware 7 syntax). Older platforms (many Comware 5 boxes)
# lack one or the other: their `% Unrecognized command` / `% Wrong parameter` is the vendor's
# error marker, so the session fails the action; it is never a silent success.
# --------------------------------------------------------------------------------------------

# H3C S6812 Command Reference, qos lr: CIR 64 to 10485760 kbps, "an integral multiple of 64".
THROTTLE_RATE = RateRule(
    unit="kbps",
    unit_bps=1000,
    step=64,
    minimum=64,
    source="H3C S6812 Series Command Reference, qos lr"
    " (https://www.manualslib.com/manual/3098446/H3c-S6812-Series.html?page=1596)",
)

# Comware 7 syntax: `acl advanced name`, `packet-filter name ... inbound`.
_STYLE = VrpStyle(
    vendor=NAME,
    aliases=ALIASES,
    error_pattern=ERROR_PATTERN,
    rate_rule=THROTTLE_RATE,
    acl_create="acl advanced name {acl}",
    acl_delete="undo acl advanced name {acl}",
    attach="packet-filter name {acl} inbound",
)


def throttle_rate(rate_bps: int) -> Rate:
    """The cap in kbps, a multiple of 64, rounded down."""
    return vendor_rate(NAME, THROTTLE_RATE, rate_bps)


def render_throttle(port: str, rate_bps: int) -> RestrictionChange:
    """`qos lr inbound cir <kbps>` (CBS left to the switch's default, 62.5 x CIR)."""
    return _STYLE.render_throttle(canonical_port(port), rate_bps)


def render_unthrottle(port: str) -> RestrictionChange:
    """`undo qos lr inbound`."""
    return _STYLE.render_unthrottle(canonical_port(port))


def render_block_service(port: str, service: str) -> RestrictionChange:
    """`acl advanced name RW-<SERVICE>-<port>` + `packet-filter name ... inbound`."""
    return _STYLE.render_block_service(canonical_port(port), service)


def render_unblock_service(port: str, service: str) -> RestrictionChange:
    """Detach our packet-filter, then delete our ACL."""
    return _STYLE.render_unblock_service(canonical_port(port), service)


def render_restriction_readback(port: str, kind: RestrictionKind, service: str | None = None) -> tuple[str, ...]:
    """The interface's current configuration, and our ACL for a block."""
    return _STYLE.render_readback(canonical_port(port), kind, service)


def parse_restriction(
    output: str, port: str, kind: RestrictionKind, service: str | None = None
) -> Restriction:
    """Verdict from `display current-configuration interface X` (+ `display acl name RW-...`)."""
    return _STYLE.parse(output, port, kind, service)
