"""Cisco IOS / IOS-XE access switches: `shutdown` under the interface, `show interfaces` back."""

from __future__ import annotations

import re

from .base import AdminState, SaveSpec, checked_port, expand_alias, same_port

NAME = "cisco_ios"

# Physical access ports only: port-channels, VLAN interfaces, loopbacks and sub-interfaces are
# never a customer's server port, so a name like that is an inventory mistake.
INTERFACE_PATTERN = re.compile(
    r"(?:FastEthernet|GigabitEthernet|TwoGigabitEthernet|FiveGigabitEthernet|TenGigabitEthernet"
    r"|TwentyFiveGigE|FortyGigabitEthernet|HundredGigE|Ethernet)\d{1,3}(?:/\d{1,3}){0,3}",
    re.ASCII,
)

# IOS prints short names in SNMP ifName and operators paste them; expand to what `show` prints.
ALIASES = {
    "fa": "FastEthernet",
    "gi": "GigabitEthernet",
    "tw": "TwoGigabitEthernet",
    "fi": "FiveGigabitEthernet",
    "te": "TenGigabitEthernet",
    "twe": "TwentyFiveGigE",
    "fo": "FortyGigabitEthernet",
    "hu": "HundredGigE",
    "et": "Ethernet",
    "fastethernet": "FastEthernet",
    "gigabitethernet": "GigabitEthernet",
    "twogigabitethernet": "TwoGigabitEthernet",
    "fivegigabitethernet": "FiveGigabitEthernet",
    "tengigabitethernet": "TenGigabitEthernet",
    "twentyfivegige": "TwentyFiveGigE",
    "fortygigabitethernet": "FortyGigabitEthernet",
    "hundredgige": "HundredGigE",
    "ethernet": "Ethernet",
}

# Anchored on a line start with `%` + a known word, so syslog lines such as
# `%LINK-5-CHANGED: Interface ..., changed state to administratively down` never count.
ERROR_PATTERN = (
    r"^\s*%\s?(?:Invalid input|Incomplete command|Ambiguous command|Unknown command"
    r"|Unrecognized command|Error|Bad |Access denied|Interface \S+ not )"
)

# A bare prompt: `sw1>`, `sw1#`, `sw1(config-if)#`.
PROMPT_PATTERN = re.compile(r"[A-Za-z0-9][\w.:/-]*(?:\([\w./-]+\))?[>#]", re.ASCII)

# What a config line may print when all is well: the mode banner, and syslog messages
# (`*Mar 11 09:14:02.117: %SYS-5-CONFIG_I: ...`, `%LINK-5-CHANGED: ...`) that share the vty.
BENIGN_REPLY = re.compile(
    r"Enter configuration commands, one per line\.\s+End with CNTL/Z\."
    r"|(?:\*?[A-Z][a-z]{2}\s+\d+\s+[\d:.]+(?:\s+\w+)?:\s+)?%[A-Z0-9_]+-\d-[A-Z0-9_]+:.*"
)

CONFIG_ENTER: tuple[str, ...] = ("configure terminal",)
CONFIG_EXIT: tuple[str, ...] = ("end",)
CONFIG_TERMINATOR = r"#"
NEEDS_ENABLE = True
CMD_VERIFY: bool | None = None
SAVE: SaveSpec | None = SaveSpec(
    command="write memory",
    prompts=(
        (r"Destination filename \[startup-config\]\?", ""),
        (r"\[confirm\]", ""),
    ),
    success_pattern=r"^\s*\[OK\]|Copy completed successfully|bytes copied",
    timeout_s=60.0,
)

_HEADER = re.compile(
    r"^\s*(?P<name>[A-Za-z][\w./:-]*) is (?P<state>administratively down|up|down|deleted)\b",
    re.M,
)


def canonical_port(port: str) -> str:
    """Validate and expand `port` (`Gi1/0/1` -> `GigabitEthernet1/0/1`)."""
    return checked_port(NAME, INTERFACE_PATTERN, port, ALIASES)


def render_shut(port: str) -> tuple[str, ...]:
    """`interface X` + `shutdown`."""
    return (f"interface {canonical_port(port)}", "shutdown")


def render_restore(port: str) -> tuple[str, ...]:
    """`interface X` + `no shutdown`."""
    return (f"interface {canonical_port(port)}", "no shutdown")


def render_readback(port: str) -> str:
    """`show interfaces X`: its first line says `administratively down` when shut."""
    return f"show interfaces {canonical_port(port)}"


def parse_ios_header(output: str, port: str, aliases: dict[str, str]) -> AdminState:
    """Admin state from `NAME is <state>, line protocol is ...` headers (IOS and EOS)."""
    want = expand_alias(port, aliases)
    states: set[AdminState] = set()
    for m in _HEADER.finditer(output):
        if not same_port(expand_alias(m.group("name"), aliases), want):
            continue
        state = m.group("state")
        # `is down` without `administratively` is a link or err-disable problem: admin is up.
        states.add(
            "down"
            if state == "administratively down"
            else "unknown"
            if state == "deleted"
            else "up"
        )
    return states.pop() if len(states) == 1 else "unknown"


def parse_admin_state(output: str, port: str) -> AdminState:
    """Admin state of `port` in `show interfaces` output."""
    return parse_ios_header(output, port, ALIASES)
