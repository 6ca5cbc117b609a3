"""Linux hosts and the lab: `ip link set dev X down|up`, read back from `ip -o link show`."""

from __future__ import annotations

import re

from .base import AdminState, SaveSpec, checked_port

NAME = "linux"

# Kernel rule: < IFNAMSIZ (16) bytes, no '/', ':' or whitespace, not '.' or '..'.
INTERFACE_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}", re.ASCII)

ERROR_PATTERN = (
    r"^\s*(?:RTNETLINK answers:|Cannot find device|Error:|(?:Command|Object) \"[^\"]*\" is unknown)"
    r"|command not found|Operation not permitted|Permission denied"
)

# The login user needs CAP_NET_ADMIN (root, or an `ip` wrapper); there is no config mode.
# A shell prompt: `root@host:~#`, `lab-host#`, `user@host:~$`, `[root@host ~]#`, `bash-5.1$`.
PROMPT_PATTERN = re.compile(r"(?:\[[^\]\r\n]*\]|[\w.@:~/-])*\s?[$#]", re.ASCII)

# `ip link set` prints nothing when it works: any text is unexplained.
BENIGN_REPLY = re.compile(r"(?!)")

CONFIG_ENTER: tuple[str, ...] = ()
CONFIG_EXIT: tuple[str, ...] = ()
CONFIG_TERMINATOR = r"[#$]"
NEEDS_ENABLE = False
CMD_VERIFY: bool | None = None
SAVE: SaveSpec | None = None  # link state is not persisted by the kernel

_LINK = re.compile(r"^\d+:\s+(?P<name>[^:@\s]+)(?:@[^:\s]+)?:\s+<(?P<flags>[^>]*)>", re.M)


def canonical_port(port: str) -> str:
    """Validate `port` as a kernel interface name."""
    return checked_port(NAME, INTERFACE_PATTERN, port)


def render_shut(port: str) -> tuple[str, ...]:
    """`ip link set dev X down` (clears IFF_UP)."""
    return (f"ip link set dev {canonical_port(port)} down",)


def render_restore(port: str) -> tuple[str, ...]:
    """`ip link set dev X up`."""
    return (f"ip link set dev {canonical_port(port)} up",)


def render_readback(port: str) -> str:
    """One line per link; the flags list holds UP when the link is administratively up."""
    return f"ip -o link show dev {canonical_port(port)}"


def parse_admin_state(output: str, port: str) -> AdminState:
    """IFF_UP from the `<...>` flags of `port`'s line."""
    states: set[AdminState] = set()
    for m in _LINK.finditer(output):
        if m.group("name") == port:
            states.add("up" if "UP" in m.group("flags").split(",") else "down")
    return states.pop() if len(states) == 1 else "unknown"
