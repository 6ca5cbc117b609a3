"""Juniper Junos (EX/QFX): `set interfaces X disable` in a private candidate, `commit and-quit`."""

from __future__ import annotations

import re

from .base import AdminState, SaveSpec, checked_port

NAME = "juniper_junos"

# Physical ports only (units like ge-0/0/1.0 are logical); `:n` is a channelised breakout.
INTERFACE_PATTERN = re.compile(r"(?:fe|ge|xe|mge|et)-\d{1,2}/\d{1,2}/\d{1,3}(?::\d)?", re.ASCII)

ERROR_PATTERN = (
    r"^\s*(?:syntax error|error:|unknown command|invalid (?:interface|value)|missing argument"
    r"|configuration database modified)"
)

# `private` so a commit never carries someone else's half-finished shared-candidate edits; it
# fails (error pattern) if such edits exist, which is what a human must look at anyway.
# A bare prompt `user@host>`/`#`, and the `{master:0}` / `[edit]` banner lines printed above it.
PROMPT_PATTERN = re.compile(
    r"(?:\{[\w:]+\})?\[edit[^\]]*\]|\{[\w:]+\}|[\w.-]+@[\w.:-]+[>#%]", re.ASCII
)

# What configure private, set/delete and commit and-quit print when they work. `warning:
# statement not found` is a restore of a port that was not disabled (the goal state already).
BENIGN_REPLY = re.compile(
    r"warning: uncommitted changes will be discarded on exit|warning: statement not found"
    r"|Entering configuration mode|Exiting configuration mode|configuration check succeeds"
    r"|commit complete"
)

CONFIG_ENTER: tuple[str, ...] = ("configure private",)
CONFIG_EXIT: tuple[str, ...] = ("commit and-quit",)
CONFIG_TERMINATOR = r"#"
NEEDS_ENABLE = False
CMD_VERIFY: bool | None = None
SAVE: SaveSpec | None = None  # a commit is persistent

_TERSE = re.compile(r"^(?P<name>\S+)\s+(?P<admin>up|down)\s+(?P<link>up|down)\b", re.M)


def canonical_port(port: str) -> str:
    """Validate `port`; Junos has no abbreviations."""
    return checked_port(NAME, INTERFACE_PATTERN, port)


def render_shut(port: str) -> tuple[str, ...]:
    """`set interfaces X disable` (takes effect at the commit)."""
    return (f"set interfaces {canonical_port(port)} disable",)


def render_restore(port: str) -> tuple[str, ...]:
    """`delete interfaces X disable` (a warning, not an error, if it was not disabled)."""
    return (f"delete interfaces {canonical_port(port)} disable",)


def render_readback(port: str) -> str:
    """`show interfaces X terse`: the physical line's Admin column."""
    return f"show interfaces {canonical_port(port)} terse"


def parse_admin_state(output: str, port: str) -> AdminState:
    """Admin column of the physical interface's line (its units are other lines)."""
    states = {m.group("admin") for m in _TERSE.finditer(output) if m.group("name") == port}
    if len(states) != 1:
        return "unknown"
    return "up" if states.pop() == "up" else "down"
