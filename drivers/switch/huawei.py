"""Huawei VRP (S-series): `system-view`, `shutdown` / `undo shutdown`, `save` asks [Y/N]."""

from __future__ import annotations

import re

from .base import AdminState, SaveSpec, checked_port, expand_alias, same_port

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
