"""The JSON-lines poll record: what the daemon records and what `replay snmp` reads."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from rackwarden.policies.facts import PortCounters, PortPoll

_PORT_KEYS = {"if_index", "in_octets", "out_octets", "counter_bits", "oper", "admin",
              "high_speed_mbps", "discontinuity_ticks"}
_POLL_KEYS = {"switch", "at", "sys_uptime", "ports", "mono", "engine_boots", "error",
              "error_detail", "duration_s"}
_ERRORS = ("timeout", "auth", "transport", "protocol", "partial")


class PollFormatError(ValueError):
    """A recorded poll line that cannot be read; the message says which field and why."""


def poll_to_json(poll: PortPoll) -> str:
    doc: dict[str, Any] = {
        "switch": poll.switch,
        "at": poll.at.isoformat(),
        "mono": poll.now,
        "sys_uptime": poll.sys_uptime_ticks,
        "ports": {
            name: {
                "if_index": pc.if_index,
                "in_octets": pc.in_octets,
                "out_octets": pc.out_octets,
                "counter_bits": pc.counter_bits,
                "oper": pc.oper,
                "admin": pc.admin,
                "high_speed_mbps": pc.high_speed_mbps,
                "discontinuity_ticks": pc.discontinuity_ticks,
            }
            for name, pc in poll.ports.items()
        },
    }
    if poll.engine_boots is not None:
        doc["engine_boots"] = poll.engine_boots
    if poll.error:
        doc["error"] = poll.error
        doc["error_detail"] = poll.error_detail
    return json.dumps(doc, separators=(",", ":"))


def _int(v: Any, what: str, optional: bool = False) -> int | None:
    if v is None and optional:
        return None
    # bool is an int subclass in Python; a counter of `true` is a broken record.
    if not isinstance(v, int) or isinstance(v, bool):
        raise PollFormatError(f"{what}: expected an integer, got {v!r}")
    if v < 0:
        raise PollFormatError(f"{what}: negative value {v}")
    return v


def poll_from_json(line: str) -> PortPoll:
    try:
        doc = json.loads(line)
    except json.JSONDecodeError as e:
        raise PollFormatError(f"not JSON: {e.msg} at column {e.colno}") from e
    if not isinstance(doc, dict):
        raise PollFormatError("a poll must be a JSON object")
    unknown = set(doc) - _POLL_KEYS
    if unknown:
        raise PollFormatError(f"unknown keys: {', '.join(sorted(unknown))}")
    switch = doc.get("switch")
    if not isinstance(switch, str) or not switch:
        raise PollFormatError("switch: expected a name")
    try:
        at = datetime.fromisoformat(str(doc.get("at")))
    except ValueError as e:
        raise PollFormatError(f"at: not an ISO-8601 time: {doc.get('at')!r}") from e
    if at.tzinfo is None:
        raise PollFormatError("at: time has no UTC offset")
    mono = doc.get("mono")
    if mono is not None and (not isinstance(mono, (int, float)) or isinstance(mono, bool)):
        raise PollFormatError("mono: expected seconds")
    error = doc.get("error")
    if error is not None and error not in _ERRORS:
        raise PollFormatError(f"error: one of {', '.join(_ERRORS)}")
    ports_doc = doc.get("ports", {})
    if not isinstance(ports_doc, dict):
        raise PollFormatError("ports: expected an object keyed by ifName")
    ports: dict[str, PortCounters] = {}
    for name, p in ports_doc.items():
        if not isinstance(p, dict):
            raise PollFormatError(f"ports.{name}: expected an object")
        bad = set(p) - _PORT_KEYS
        if bad:
            raise PollFormatError(f"ports.{name}: unknown keys: {', '.join(sorted(bad))}")
        bits = p.get("counter_bits", 64)
        if bits not in (32, 64):
            raise PollFormatError(f"ports.{name}.counter_bits: 32 or 64, got {bits!r}")
        if_index = _int(p.get("if_index"), f"ports.{name}.if_index")
        assert if_index is not None
        in_o = _int(p.get("in_octets"), f"ports.{name}.in_octets", optional=True)
        out_o = _int(p.get("out_octets"), f"ports.{name}.out_octets", optional=True)
        for v, col in ((in_o, "in_octets"), (out_o, "out_octets")):
            if v is not None and v >= 2**bits:
                raise PollFormatError(f"ports.{name}.{col}: {v} does not fit Counter{bits}")
        ports[name] = PortCounters(
            if_name=name,
            if_index=if_index,
            in_octets=in_o,
            out_octets=out_o,
            counter_bits=bits,
            oper=str(p.get("oper", "unknown")),
            admin=str(p.get("admin", "unknown")),
            high_speed_mbps=_int(p.get("high_speed_mbps"), f"ports.{name}.high_speed_mbps", optional=True),
            discontinuity_ticks=_int(p.get("discontinuity_ticks"), f"ports.{name}.discontinuity_ticks", optional=True),
        )
    return PortPoll(
        switch=switch,
        at=at,
        # Recordings made by the daemon carry the replies' monotonic time; hand-written ones
        # fall back to wall time.
        now=float(mono) if mono is not None else at.timestamp(),
        sys_uptime_ticks=_int(doc.get("sys_uptime"), "sys_uptime", optional=True),
        engine_boots=_int(doc.get("engine_boots"), "engine_boots", optional=True),
        ports=ports,
        error=error,
        error_detail=str(doc.get("error_detail", "")),
    )
