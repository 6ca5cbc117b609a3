"""SNMP driver: polls switches' IF-MIB counters and hands them over as PortPoll facts."""

from .ifmib import Absent, IfWalk, parse_if_table, parse_if_walk
from .poller import AUTH_PROTOCOLS, PRIV_PROTOCOLS, SnmpPoller, SnmpTarget, reveal

__all__ = [
    "AUTH_PROTOCOLS",
    "PRIV_PROTOCOLS",
    "Absent",
    "IfWalk",
    "SnmpPoller",
    "SnmpTarget",
    "parse_if_table",
    "parse_if_walk",
    "reveal",
]
