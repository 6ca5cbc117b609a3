"""Arista EOS: IOS-like CLI on `Ethernet` ports; `write memory` ends in `Copy completed`."""

from __future__ import annotations

import re

from .base import AdminState, SaveSpec, checked_port
from .cisco_ios import parse_ios_header

NAME = "arista_eos"

INTERFACE_PATTERN = re.compile(r"Ethernet\d{1,3}(?:/\d{1,3}){0,2}", re.ASCII)

ALIASES = {"et": "Ethernet", "eth": "Ethernet", "ethernet": "Ethernet"}

ERROR_PATTERN = (
    r"^\s*%\s?(?:Invalid input|Incomplete command|Ambiguous command|Unavailable command"
    r"|Error|Interface does not exist|Not supported|Cannot)"
)

# A bare prompt: `sw1>`, `sw1#`, `sw1(config-if-Et12)#`.
PROMPT_PATTERN = re.compile(r"[A-Za-z0-9][\w.:/-]*(?:\([\w./-]+\))?[>#]", re.ASCII)

# EOS prints little for these lines: syslog (`Mar 11 09:14:04 leaf1 Ebra: %LINEPROTO-5-...`) may
# share the session, and the IOS-style config banner is harmless wherever it appears. `! ...`
# warnings are not benign: they say the line did not take.
BENIGN_REPLY = re.compile(
    r"Enter configuration commands, one per line\.\s+End with CNTL/Z\."
    r"|(?:[A-Z][a-z]{2}\s+\d+\s+[\d:]+\s+\S+\s+\S+:\s+)?%[A-Z0-9_]+-\d-[A-Z0-9_]+:.*"
)

CONFIG_ENTER: tuple[str, ...] = ("configure terminal",)
CONFIG_EXIT: tuple[str, ...] = ("end",)
CONFIG_TERMINATOR = r"#"
NEEDS_ENABLE = True
CMD_VERIFY: bool | None = None
SAVE: SaveSpec | None = SaveSpec(
    command="write memory",
    prompts=(),
    success_pattern=r"Copy completed successfully",
    timeout_s=60.0,
)


def canonical_port(port: str) -> str:
    """Validate and expand `port` (`Et1/1` -> `Ethernet1/1`)."""
    return checked_port(NAME, INTERFACE_PATTERN, port, ALIASES)


def render_shut(port: str) -> tuple[str, ...]:
    """`interface X` + `shutdown`."""
    return (f"interface {canonical_port(port)}", "shutdown")


def render_restore(port: str) -> tuple[str, ...]:
    """`interface X` + `no shutdown`."""
    return (f"interface {canonical_port(port)}", "no shutdown")


def render_readback(port: str) -> str:
    """`show interfaces X`: `administratively down ... (disabled)` when shut."""
    return f"show interfaces {canonical_port(port)}"


def parse_admin_state(output: str, port: str) -> AdminState:
    """Admin state of `port` in `show interfaces` output."""
    return parse_ios_header(output, port, ALIASES)
