"""Cisco IOS / IOS-XE access switches: `shutdown` under the interface, `show interfaces` back."""

from __future__ import annotations

import re

from .base import AdminState, SaveSpec, checked_port, expand_alias, same_port
from .restrictions import (
    IosStyle,
    Rate,
    RateRule,
    Restriction,
    RestrictionChange,
    RestrictionKind,
    vendor_rate,
)

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


# --------------------------------------------------------------------------------------------
# Graceful restrictions (issue 12): police the port's ingress (what the server sends) with an
# MQC policy-map, or drop outbound SMTP with a port ACL. Pure renderers and parsers; each
# object is named RW-<KIND>-<port> so a read-back or a removal finds exactly ours.
# --------------------------------------------------------------------------------------------

# Catalyst 3750/3560 `police rate-bps burst-byte`: 8000 to 10000000000 bps; IOS MQC takes the
# rate in increments of 8000 bps (Cisco IOS in a Nutshell, `police` - policy-map).
THROTTLE_RATE = RateRule(
    unit="bps",
    unit_bps=1,
    step=8000,
    minimum=8000,
    source="Catalyst 3750 Software Configuration Guide OL-8550-09, Configuring QoS (police rate-bps"
    " burst-byte); O'Reilly Cisco IOS in a Nutshell 2nd ed., police - policy-map",
)

# Catalyst `burst-byte` range 8000 to 1000000; 100 ms of traffic at the cap, within it.
BURST_MIN_BYTES = 8000
BURST_MAX_BYTES = 1_000_000

# `mls qos` must already be on for a Catalyst 2960/3750 to police; it is switch-wide, so it is
# the operator's to enable, never ours.
_STYLE = IosStyle(
    vendor=NAME,
    aliases=ALIASES,
    error_pattern=ERROR_PATTERN,
    rate_rule=THROTTLE_RATE,
    policy_map="policy-map",
    police="police {value} {burst} exceed-action drop",
    burst_min=BURST_MIN_BYTES,
    burst_max=BURST_MAX_BYTES,
    service_policy="service-policy input",
    acl="ip access-list extended",
    show_config="show running-config interface",
    show_policy="show policy-map",
    attach_read="(?:service-policy input {name}|ip access-group {name} in)",
    default_rate_unit="bps",
)


def throttle_rate(rate_bps: int) -> Rate:
    """The cap as IOS `police` takes it: bps, a multiple of 8000, rounded down."""
    return vendor_rate(NAME, THROTTLE_RATE, rate_bps)


def render_throttle(port: str, rate_bps: int) -> RestrictionChange:
    """A class-default policer dropping what exceeds the cap, attached as `service-policy input`."""
    return _STYLE.render_throttle(canonical_port(port), rate_bps)


def render_unthrottle(port: str) -> RestrictionChange:
    """Detach first (IOS refuses to delete an attached policy-map), then delete ours."""
    return _STYLE.render_unthrottle(canonical_port(port))


def render_block_service(port: str, service: str) -> RestrictionChange:
    """Extended ACL RW-<SERVICE>-<port> + `ip access-group ... in` (a port ACL on a switchport)."""
    return _STYLE.render_block_service(canonical_port(port), service)


def render_unblock_service(port: str, service: str) -> RestrictionChange:
    """Detach, then delete our ACL."""
    return _STYLE.render_unblock_service(canonical_port(port), service)


def render_restriction_readback(port: str, kind: RestrictionKind, service: str | None = None) -> tuple[str, ...]:
    """The interface's running config (is ours attached?) and our object (what does it do?)."""
    return _STYLE.render_readback(canonical_port(port), kind, service)


def parse_restriction(
    output: str, port: str, kind: RestrictionKind, service: str | None = None
) -> Restriction:
    """Verdict from `show running-config interface X` + `show policy-map|ip access-lists RW-...`."""
    return _STYLE.parse(output, port, kind, service)
