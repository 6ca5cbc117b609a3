"""Juniper Junos (EX/QFX): `set interfaces X disable` in a private candidate, `commit and-quit`."""

from __future__ import annotations

import re

from .base import AdminState, SaveSpec, checked_port, names_port
from .restrictions import (
    Rate,
    RateRule,
    Restriction,
    RestrictionChange,
    RestrictionKind,
    burst_bytes,
    judge,
    object_name,
    ports_in,
    scaled_bps,
    service_ports,
    vendor_rate,
)

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


# --------------------------------------------------------------------------------------------
# Graceful restrictions (issue 12). A unit takes one input filter per family, so both rungs
# share one filter per port, RW-FILTER-<port>, on `family ethernet-switching filter input`:
#   term rw-<service>: TCP to the service's ports -> discard   (kept first with `insert`)
#   term rw-accept:    everything else -> accept, through policer RW-THROTTLE-<port> if throttled
# Removing a rung deletes its term or policer; the catch-all accept term stays and is harmless.
# Nothing takes effect before `commit and-quit`, so the last line is the effect line.
# --------------------------------------------------------------------------------------------

# Policer `bandwidth-limit bps`: 32000 is the EX floor (routers go down to 8000).
THROTTLE_RATE = RateRule(
    unit="bps",
    unit_bps=1,
    step=1,
    minimum=32000,
    source="Juniper Junos, firewall policer if-exceeding bandwidth-limit / burst-size-limit"
    " (https://juniper.net/documentation/en_US/junos12.3/topics/reference/configuration-statement/"
    "if-exceeding-firewall-filter-ex-series.html)",
)

# burst-size-limit range 1500 to 100000000 bytes; 100 ms at the cap.
BURST_MIN_BYTES = 1500
BURST_MAX_BYTES = 100_000_000

_FILTER_FAMILY = "firewall family ethernet-switching filter"


def _names(port: str) -> tuple[str, str, str]:
    name = canonical_port(port)
    return name, object_name("filter", name), object_name("throttle", name)


def throttle_rate(rate_bps: int) -> Rate:
    """The cap in bps as `bandwidth-limit` takes it."""
    return vendor_rate(NAME, THROTTLE_RATE, rate_bps)


def _attach(name: str, filt: str) -> str:
    return f"set interfaces {name} unit 0 family ethernet-switching filter input {filt}"


def render_throttle(port: str, rate_bps: int) -> RestrictionChange:
    """Policer + `then policer` on the catch-all accept term, the filter attached as input."""
    name, filt, policer = _names(port)
    rate = throttle_rate(rate_bps)
    burst = burst_bytes(rate.applied_bps, BURST_MIN_BYTES, BURST_MAX_BYTES)
    lines = (
        f"set firewall policer {policer} if-exceeding bandwidth-limit {rate.value}",
        f"set firewall policer {policer} if-exceeding burst-size-limit {burst}",
        f"set firewall policer {policer} then discard",
        f"set {_FILTER_FAMILY} {filt} term rw-accept then policer {policer}",
        f"set {_FILTER_FAMILY} {filt} term rw-accept then accept",
        _attach(name, filt),
    )
    return RestrictionChange(lines=lines, effect_index=len(lines) - 1, rate=rate)


def render_unthrottle(port: str) -> RestrictionChange:
    """Take the policer off the accept term and delete it (`statement not found` is benign)."""
    _, filt, policer = _names(port)
    lines = (f"delete {_FILTER_FAMILY} {filt} term rw-accept then policer", f"delete firewall policer {policer}")
    return RestrictionChange(lines=lines, effect_index=len(lines) - 1)


def render_block_service(port: str, service: str) -> RestrictionChange:
    """A discard term for the service, moved before the catch-all accept term."""
    name, filt, _ = _names(port)
    ports = service_ports(NAME, service)
    term = f"rw-{service}"
    lines = (
        f"set {_FILTER_FAMILY} {filt} term {term} from ip-protocol tcp",
        *(f"set {_FILTER_FAMILY} {filt} term {term} from destination-port {p}" for p in ports),
        f"set {_FILTER_FAMILY} {filt} term {term} then discard",
        f"set {_FILTER_FAMILY} {filt} term rw-accept then accept",
        # Terms run in order and a new term is appended: ours must precede the accept.
        f"insert {_FILTER_FAMILY} {filt} term {term} before term rw-accept",
        _attach(name, filt),
    )
    return RestrictionChange(lines=lines, effect_index=len(lines) - 1)


def render_unblock_service(port: str, service: str) -> RestrictionChange:
    """Delete the service's term."""
    _, filt, _ = _names(port)
    service_ports(NAME, service)
    lines = (f"delete {_FILTER_FAMILY} {filt} term rw-{service}",)
    return RestrictionChange(lines=lines, effect_index=0)


def render_restriction_readback(port: str, kind: RestrictionKind, service: str | None = None) -> tuple[str, ...]:
    """The interface's committed config and our firewall objects, as `set` lines."""
    name = canonical_port(port)
    if kind == "block":
        service_ports(NAME, service or "")
    return (
        f"show configuration interfaces {name} | display set",
        "show configuration firewall | display set | match RW-",
    )


def parse_restriction(
    output: str, port: str, kind: RestrictionKind, service: str | None = None
) -> Restriction:
    """Verdict from the `display set` lines: filter attached, and the policer's bandwidth-limit
    on the accept term, or the service's discard term (before the accept term) with every port."""
    _, filt, policer = _names(port)
    refused = re.search(ERROR_PATTERN, output, flags=re.M) is not None
    named = names_port(output, port)
    lines = [ln.strip() for ln in output.splitlines()]
    attached = _attach(port, filt) in lines
    prefix = f"set {_FILTER_FAMILY} {filt} term "
    if kind == "throttle":
        on_term = f"{prefix}rw-accept then policer {policer}" in lines
        rate = None
        for ln in lines:
            m = re.fullmatch(rf"set firewall policer {re.escape(policer)} if-exceeding bandwidth-limit "
                             r"(\d+(?:\.\d+)?)([kmg]?)", ln)
            if m:
                rate = scaled_bps(m.group(1), m.group(2))
        return judge(kind, port, named=named, refused=refused, attached=attached and on_term,
                     complete=rate is not None, rate_bps=rate)
    ports = service_ports(NAME, service or "")
    term = f"{prefix}rw-{service} "
    mine = [i for i, ln in enumerate(lines) if ln.startswith(term)]
    accept = [i for i, ln in enumerate(lines) if ln.startswith(f"{prefix}rw-accept ")]
    found: set[int] = set()
    for i in mine:
        if lines[i].startswith(f"{term}from destination-port "):
            found |= ports_in(lines[i][len(f"{term}from destination-port "):])
    complete = (
        f"{term}from ip-protocol tcp" in lines
        and f"{term}then discard" in lines
        and set(ports) <= found
        and (not accept or max(mine) < min(accept))
    )
    return judge(kind, port, named=named, refused=refused, attached=attached and bool(mine),
                 complete=complete, service=service)
