"""Arista EOS: IOS-like CLI on `Ethernet` ports; `write memory` ends in `Copy completed`."""

from __future__ import annotations

import re

from .base import AdminState, SaveSpec, checked_port
from .cisco_ios import BURST_MAX_BYTES, BURST_MIN_BYTES, parse_ios_header
from .restrictions import (
    IosStyle,
    Rate,
    RateRule,
    Restriction,
    RestrictionChange,
    RestrictionKind,
    vendor_rate,
)

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


# --------------------------------------------------------------------------------------------
# Graceful restrictions (issue 12): an ingress QoS policy-map policing class-default, or an IP
# ACL as `ip access-group ... in`; objects named RW-<KIND>-<port> (see cisco_ios).
# --------------------------------------------------------------------------------------------

# EOS `police rate <n> {bps|kbps|mbps} burst-size <n> {bytes|kbytes|mbytes}`; typed in kbps so
# one unit covers every platform, and rounded down to whole kbps.
THROTTLE_RATE = RateRule(
    unit="kbps",
    unit_bps=1000,
    step=1,
    minimum=8,
    source="Arista EOS User Manual, Quality of Service: policing (police rate ... burst-size);"
    " Arista TOI 'Ingress policing' https://www.arista.com/en/support/toi/tag/qos",
)

_STYLE = IosStyle(
    vendor=NAME,
    aliases=ALIASES,
    error_pattern=ERROR_PATTERN,
    rate_rule=THROTTLE_RATE,
    policy_map="policy-map type quality-of-service",
    police="police rate {value} kbps burst-size {burst} bytes",
    burst_min=BURST_MIN_BYTES,  # the Catalyst range, within what EOS accepts
    burst_max=BURST_MAX_BYTES,
    service_policy="service-policy type qos input",
    acl="ip access-list",  # EOS `ip access-list` is extended
    show_config="show running-config interfaces",
    show_policy="show policy-map type quality-of-service",
    attach_read="(?:service-policy type qos input {name}|service-policy input {name}|ip access-group {name} in)",
    default_rate_unit="kbps",
)


def throttle_rate(rate_bps: int) -> Rate:
    """The cap as EOS `police rate ... kbps` takes it, rounded down to whole kbps."""
    return vendor_rate(NAME, THROTTLE_RATE, rate_bps)


def render_throttle(port: str, rate_bps: int) -> RestrictionChange:
    """`policy-map type quality-of-service` policing class-default, attached as qos input."""
    return _STYLE.render_throttle(canonical_port(port), rate_bps)


def render_unthrottle(port: str) -> RestrictionChange:
    """Detach, then delete our policy-map."""
    return _STYLE.render_unthrottle(canonical_port(port))


def render_block_service(port: str, service: str) -> RestrictionChange:
    """IP ACL RW-<SERVICE>-<port> + `ip access-group ... in`."""
    return _STYLE.render_block_service(canonical_port(port), service)


def render_unblock_service(port: str, service: str) -> RestrictionChange:
    """Detach, then delete our ACL."""
    return _STYLE.render_unblock_service(canonical_port(port), service)


def render_restriction_readback(port: str, kind: RestrictionKind, service: str | None = None) -> tuple[str, ...]:
    """The interface's running config and our policy-map or ACL."""
    return _STYLE.render_readback(canonical_port(port), kind, service)


def parse_restriction(
    output: str, port: str, kind: RestrictionKind, service: str | None = None
) -> Restriction:
    """Verdict from the interface config + our policy-map / ACL listing."""
    return _STYLE.parse(output, port, kind, service)
