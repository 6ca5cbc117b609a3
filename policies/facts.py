"""Typed facts that drivers hand to policies: what a switch said, when, and nothing more."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Literal

# IF-MIB ifOperStatus / ifAdminStatus values by their MIB names.
IF_STATUS = {
    1: "up",
    2: "down",
    3: "testing",
    4: "unknown",
    5: "dormant",
    6: "notPresent",
    7: "lowerLayerDown",
}

PollErrorKind = Literal["timeout", "auth", "transport", "protocol", "partial"]


@dataclass(frozen=True, slots=True)
class PortCounters:
    """One port's answer in one poll. None means the agent did not return that column."""

    if_name: str
    if_index: int
    in_octets: int | None  # switch ingress = the server's upload
    out_octets: int | None  # switch egress = the server's download
    counter_bits: int  # 64 (ifHC*) or 32 (ifIn/OutOctets)
    oper: str = "unknown"
    admin: str = "unknown"
    high_speed_mbps: int | None = None  # ifHighSpeed
    discontinuity_ticks: int | None = None  # ifCounterDiscontinuityTime (TimeTicks)


def _frozen_ports(ports: Mapping[str, PortCounters]) -> Mapping[str, PortCounters]:
    return MappingProxyType(dict(ports))


@dataclass(frozen=True, slots=True)
class PortPoll:
    """One poll of one switch.

    `at` is the aware wall-clock time of the reply (for records and billing buckets);
    `now` is the monotonic time of the reply in seconds (for rates). A port missing from
    `ports` was not answered in this poll. `error` is set when the poll failed as a whole
    (then `ports` is empty) or partially (`partial`: some ports or columns were missing).
    """

    switch: str
    at: datetime
    now: float
    sys_uptime_ticks: int | None
    ports: Mapping[str, PortCounters] = field(default_factory=dict)
    engine_boots: int | None = None  # snmpEngineBoots (v3 only)
    error: PollErrorKind | None = None
    error_detail: str = ""
    duration_s: float = 0.0

    def __post_init__(self) -> None:
        if self.at.tzinfo is None or self.at.utcoffset() is None:
            raise ValueError("PortPoll.at must be timezone-aware")
        object.__setattr__(self, "ports", _frozen_ports(self.ports))
