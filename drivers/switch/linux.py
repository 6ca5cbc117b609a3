"""Linux hosts and the lab: `ip link set dev X down|up`, read back from `ip -o link show`."""

from __future__ import annotations

import re

from .base import AdminState, SaveSpec, checked_port, names_port
from .restrictions import (
    Rate,
    RateRule,
    Restriction,
    RestrictionChange,
    RestrictionKind,
    judge,
    scaled_bps,
    service_ports,
    vendor_rate,
)

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


# --------------------------------------------------------------------------------------------
# Graceful restrictions (issue 12), all in tc on the port's ingress hook, so they act on what
# the server sends whether the port is bridged or routed (netfilter would need br_netfilter
# for a bridge). Fixed preferences are the names: 48 = service drops, 49 = the policer, so
# the drops run first and a removal deletes exactly ours.
# --------------------------------------------------------------------------------------------

PREF_BLOCK = 48
PREF_THROTTLE = 49

# tc-police `rate` is kept in bytes per second: a multiple of 8 bit/s is exact. Below 8 kbit/s
# one full-size frame needs more than a second of budget, which is a cut, not a throttle.
THROTTLE_RATE = RateRule(
    unit="bit",
    unit_bps=1,
    step=8,
    minimum=8000,
    source="tc-police(8), iproute2 (https://man7.org/linux/man-pages/man8/tc-police.8.html);"
    " tc-flower(8), tc-matchall(8)",
)


def throttle_rate(rate_bps: int) -> Rate:
    """The cap in bit/s, a multiple of 8 (whole bytes per second), rounded down."""
    return vendor_rate(NAME, THROTTLE_RATE, rate_bps)


def _ingress(name: str) -> str:
    # `replace` creates the ingress qdisc or keeps the one there; `add` fails when it exists.
    return f"tc qdisc replace dev {name} handle ffff: ingress"


def render_throttle(port: str, rate_bps: int) -> RestrictionChange:
    """A matchall policer on ingress; what exceeds the rate is dropped."""
    name = canonical_port(port)
    rate = throttle_rate(rate_bps)
    burst = max(1600, rate.applied_bps // 80)  # 100 ms at the cap, at least one frame
    return RestrictionChange(
        lines=(
            _ingress(name),
            f"tc filter replace dev {name} ingress pref {PREF_THROTTLE} handle 1 protocol all matchall"
            f" action police rate {rate.value}bit burst {burst} conform-exceed drop/ok",
        ),
        effect_index=1,
        rate=rate,
    )


def render_unthrottle(port: str) -> RestrictionChange:
    """Delete the policer's filter (tc refuses when there is none: read back before judging)."""
    name = canonical_port(port)
    return RestrictionChange(lines=(f"tc filter del dev {name} ingress pref {PREF_THROTTLE}",), effect_index=0)


def render_block_service(port: str, service: str) -> RestrictionChange:
    """One flower filter per TCP destination port, each dropping; IPv4 as the switch ACLs."""
    name = canonical_port(port)
    ports = service_ports(NAME, service)
    return RestrictionChange(
        lines=(
            _ingress(name),
            *(
                f"tc filter replace dev {name} ingress pref {PREF_BLOCK} handle {i + 1} protocol ip flower"
                f" ip_proto tcp dst_port {p} action drop"
                for i, p in enumerate(ports)
            ),
        ),
        effect_index=1,
    )


def render_unblock_service(port: str, service: str) -> RestrictionChange:
    """Delete every filter at the block preference."""
    name = canonical_port(port)
    service_ports(NAME, service)
    return RestrictionChange(lines=(f"tc filter del dev {name} ingress pref {PREF_BLOCK}",), effect_index=0)


def render_restriction_readback(port: str, kind: RestrictionKind, service: str | None = None) -> tuple[str, ...]:
    """The link line (names the port, or `Cannot find device`) and the ingress filters."""
    name = canonical_port(port)
    if kind == "block":
        service_ports(NAME, service or "")
    return (f"ip -o link show dev {name}", f"tc filter show dev {name} ingress")


_FILTER_HEAD = re.compile(r"^filter\b.*\bpref (\d+)\b", re.M)


def _filters(output: str) -> list[tuple[int, str]]:
    """(pref, text) of each `filter ...` block in `tc filter show` output."""
    heads = list(_FILTER_HEAD.finditer(output))
    return [
        (int(m.group(1)), output[m.start() : heads[i + 1].start() if i + 1 < len(heads) else len(output)])
        for i, m in enumerate(heads)
    ]


def parse_restriction(
    output: str, port: str, kind: RestrictionKind, service: str | None = None
) -> Restriction:
    """Verdict from `ip -o link show` + `tc filter show ... ingress`."""
    refused = re.search(ERROR_PATTERN, output, flags=re.M) is not None
    named = names_port(output, port)
    blocks = _filters(output)
    if kind == "throttle":
        mine = [text for pref, text in blocks if pref == PREF_THROTTLE]
        rate = None
        for text in mine:
            m = re.search(r"\bpolice\b.*?\brate (\d+(?:\.\d+)?)([KMG]?bit)\b", text, flags=re.S)
            if m:
                rate = scaled_bps(m.group(1), m.group(2))
        return judge(kind, port, named=named, refused=refused, attached=bool(mine),
                     complete=rate is not None, rate_bps=rate)
    ports = service_ports(NAME, service or "")
    dropped: set[int] = set()
    for pref, text in blocks:
        m = re.search(r"^\s*dst_port (\d+)\s*$", text, flags=re.M)
        if pref == PREF_BLOCK and m and re.search(r"^\s*ip_proto tcp\s*$", text, flags=re.M) \
                and re.search(r"\baction drop\b", text):
            dropped.add(int(m.group(1)))
    attached = any(pref == PREF_BLOCK for pref, _ in blocks)
    return judge(kind, port, named=named, refused=refused, attached=attached,
                 complete=set(ports) <= dropped, service=service)
