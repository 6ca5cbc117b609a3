"""IF-MIB walk parsing: plain (OID, value) varbinds in, PortCounters facts out; pure."""

from __future__ import annotations

import enum
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from rackwarden.policies.facts import IF_STATUS, PortCounters

Oid = tuple[int, ...]


class Absent(enum.Enum):
    """The SNMPv2 exception values: the agent answered, but with no value."""

    NO_SUCH_OBJECT = "noSuchObject"
    NO_SUCH_INSTANCE = "noSuchInstance"
    END_OF_MIB_VIEW = "endOfMibView"


# What a varbind value is once the SNMP library's types are stripped off: integers for
# INTEGER/Counter32/Gauge32/TimeTicks/Counter64, bytes for OCTET STRING, a tuple for an OID.
SnmpValue = int | bytes | str | Oid | Absent
VarBind = tuple[Oid, SnmpValue]

SYS_UPTIME: Oid = (1, 3, 6, 1, 2, 1, 1, 3, 0)
SNMP_ENGINE_BOOTS: Oid = (1, 3, 6, 1, 6, 3, 10, 2, 1, 2, 0)

_IFX = (1, 3, 6, 1, 2, 1, 31, 1, 1, 1)
_IF = (1, 3, 6, 1, 2, 1, 2, 2, 1)
IF_NAME: Oid = (*_IFX, 1)
IF_HC_IN_OCTETS: Oid = (*_IFX, 6)
IF_HC_OUT_OCTETS: Oid = (*_IFX, 10)
IF_HIGH_SPEED: Oid = (*_IFX, 15)
IF_COUNTER_DISCONTINUITY_TIME: Oid = (*_IFX, 19)
IF_ADMIN_STATUS: Oid = (*_IF, 7)
IF_OPER_STATUS: Oid = (*_IF, 8)
IF_IN_OCTETS: Oid = (*_IF, 10)
IF_OUT_OCTETS: Oid = (*_IF, 16)

COLUMN_NAMES: Mapping[Oid, str] = {
    IF_NAME: "ifName",
    IF_HC_IN_OCTETS: "ifHCInOctets",
    IF_HC_OUT_OCTETS: "ifHCOutOctets",
    IF_HIGH_SPEED: "ifHighSpeed",
    IF_COUNTER_DISCONTINUITY_TIME: "ifCounterDiscontinuityTime",
    IF_ADMIN_STATUS: "ifAdminStatus",
    IF_OPER_STATUS: "ifOperStatus",
    IF_IN_OCTETS: "ifInOctets",
    IF_OUT_OCTETS: "ifOutOctets",
}

# Walked on every poll. The 32-bit octet columns are walked only when some port lacks
# Counter64, which keeps the common poll at 7 columns (fewer PDUs on agents that cap a reply).
PRIMARY_COLUMNS: tuple[Oid, ...] = (
    IF_NAME,
    IF_HC_IN_OCTETS,
    IF_HC_OUT_OCTETS,
    IF_HIGH_SPEED,
    IF_COUNTER_DISCONTINUITY_TIME,
    IF_ADMIN_STATUS,
    IF_OPER_STATUS,
)
FALLBACK_COLUMNS: tuple[Oid, ...] = (IF_IN_OCTETS, IF_OUT_OCTETS)
ALL_COLUMNS: tuple[Oid, ...] = PRIMARY_COLUMNS + FALLBACK_COLUMNS

_NUMERIC_COLUMNS = frozenset(ALL_COLUMNS) - {IF_NAME}
_MAX_PROBLEMS_IN_DETAIL = 8


@dataclass(frozen=True, slots=True)
class IfWalk:
    """Everything one poll's varbinds say. `problems` non-empty means the poll is partial."""

    ports: Mapping[str, PortCounters]
    sys_uptime_ticks: int | None
    engine_boots: int | None
    problems: tuple[str, ...]

    def detail(self) -> str:
        """The problems as one line for PortPoll.error_detail, capped to stay readable."""
        shown = list(self.problems[:_MAX_PROBLEMS_IN_DETAIL])
        if len(self.problems) > _MAX_PROBLEMS_IN_DETAIL:
            shown.append(f"and {len(self.problems) - _MAX_PROBLEMS_IN_DETAIL} more")
        return "; ".join(shown)


def _uint(value: SnmpValue) -> int | None:
    # bool is an int subclass; a bool here would be a caller bug, not an SNMP value.
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _name(value: SnmpValue) -> str | None:
    if isinstance(value, bytes):
        # DisplayString is ASCII; some agents NUL-terminate it, which would never match config.
        return value.decode("utf-8", "replace").rstrip("\x00")
    if isinstance(value, str):
        return value.rstrip("\x00")
    return None


def split_columns(
    varbinds: Iterable[VarBind],
) -> tuple[dict[Oid, dict[int, SnmpValue]], dict[Oid, SnmpValue], list[str]]:
    """Sort varbinds into {column: {ifIndex: value}} and {scalar OID: value}; note repeats.

    Only the columns that answered are keys. One tuple hash per varbind (the column lookup):
    this runs on every varbind of every poll.
    """
    known: dict[Oid, dict[int, SnmpValue]] = {col: {} for col in ALL_COLUMNS}
    find = known.get
    scalars: dict[Oid, SnmpValue] = {}
    problems: list[str] = []
    for oid, value in varbinds:
        oid = tuple(oid)
        # Every column we read has a 10- or 11-arc prefix followed by exactly one ifIndex arc.
        rows = find(oid[:-1])
        if rows is None:
            if oid == SYS_UPTIME or oid == SNMP_ENGINE_BOOTS:
                scalars[oid] = value
            continue  # a walk's overshoot into the next column or table: not ours
        index = oid[-1]
        if index in rows:
            problems.append(f"{COLUMN_NAMES[oid[:-1]]}.{index} answered twice; kept the first")
            continue
        rows[index] = value
    return {col: rows for col, rows in known.items() if rows}, scalars, problems


def columns_without_hc(columns: Mapping[Oid, Mapping[int, SnmpValue]]) -> set[int]:
    """ifIndexes of split columns that have an ifName but no ifHCInOctets or ifHCOutOctets row."""
    empty: Mapping[int, SnmpValue] = {}
    names = columns.get(IF_NAME, empty).keys()
    return set(names - columns.get(IF_HC_IN_OCTETS, empty).keys()
               - columns.get(IF_HC_OUT_OCTETS, empty).keys())


def indexes_without_hc(varbinds: Iterable[VarBind]) -> set[int]:
    """ifIndexes that have an ifName but no ifHCInOctets or ifHCOutOctets row at all."""
    return columns_without_hc(split_columns(varbinds)[0])


class _Table:
    """Column lookups that record, once per value, why a value the port needs is unusable."""

    def __init__(self, columns: dict[Oid, dict[int, SnmpValue]], problems: list[str]):
        self.columns = columns
        self.problems = problems

    def has(self, col: Oid, index: int) -> bool:
        return index in self.columns.get(col, {})

    def get(self, col: Oid, index: int, *, optional: bool = False) -> SnmpValue | None:
        """The value, or None with a problem noted (optional columns the agent lacks: no note)."""
        value = self.columns.get(col, {}).get(index)
        if value is None:
            if not (optional and not self.columns.get(col)):
                self.problems.append(f"{COLUMN_NAMES[col]}.{index} missing")
            return None
        if isinstance(value, Absent):
            self.problems.append(f"{COLUMN_NAMES[col]}.{index} is {value.value}")
            return None
        if col in _NUMERIC_COLUMNS and _uint(value) is None:
            self.problems.append(f"{COLUMN_NAMES[col]}.{index} is not an unsigned int: {value!r}")
            return None
        return value

    def get_uint(self, col: Oid, index: int, *, optional: bool = False) -> int | None:
        value = self.get(col, index, optional=optional)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def status(self, col: Oid, index: int) -> str:
        value = self.get_uint(col, index)
        if value is None:
            return "unknown"
        status: str | None = IF_STATUS.get(value)
        if status is None:
            self.problems.append(f"{COLUMN_NAMES[col]}.{index} = {value} is not an IF-MIB status")
            return "unknown"
        return status

    def port(self, name: str, index: int) -> PortCounters:
        in_octets: int | None
        out_octets: int | None
        # The 32-bit columns stand in only where the agent has no ifHC* row for the port (IF-MIB
        # lets slow interfaces omit them). An ifHC* row holding noSuchInstance is a glitch: the
        # value is None, so the policy keeps its Counter64 baseline instead of switching widths.
        if self.has(IF_HC_IN_OCTETS, index) or self.has(IF_HC_OUT_OCTETS, index):
            in_octets = self.get_uint(IF_HC_IN_OCTETS, index)
            out_octets = self.get_uint(IF_HC_OUT_OCTETS, index)
            bits = 64
        elif self.has(IF_IN_OCTETS, index) or self.has(IF_OUT_OCTETS, index):
            in_octets = self.get_uint(IF_IN_OCTETS, index)
            out_octets = self.get_uint(IF_OUT_OCTETS, index)
            bits = 32
        else:
            in_octets = out_octets = None
            bits = 64 if self.columns.get(IF_HC_IN_OCTETS) else 32
            self.problems.append(f"{name} (ifIndex {index}) has no octet counters")
        return PortCounters(
            if_name=name,
            if_index=index,
            in_octets=in_octets,
            out_octets=out_octets,
            counter_bits=bits,
            oper=self.status(IF_OPER_STATUS, index),
            admin=self.status(IF_ADMIN_STATUS, index),
            high_speed_mbps=self.get_uint(IF_HIGH_SPEED, index, optional=True),
            discontinuity_ticks=self.get_uint(IF_COUNTER_DISCONTINUITY_TIME, index, optional=True),
        )


def parse_if_walk(varbinds: Iterable[VarBind], *, exact: bool = False) -> IfWalk:
    """Turn one poll's varbinds (sysUpTime.0, snmpEngineBoots.0 and IF-MIB columns) into facts.

    Ports are keyed by ifName. Counters are Counter64 (ifHC*, counter_bits=64) when the port has
    ifHC* rows, else the 32-bit ifIn/OutOctets (counter_bits=32). A value the port needs that the
    agent did not give (no row, noSuchInstance, noSuchObject, endOfMibView, wrong type) is None
    and a problem; ifHighSpeed and ifCounterDiscontinuityTime are a problem only when the agent
    has the column for other ports. A port with an empty ifName is left out silently: nothing in
    an inventory can name it. Ports sharing an ifName are all left out, as a problem: attributing
    either one's bytes would be a guess.

    `exact` reads every port through the checking path (_Table.port); the default reads a port
    whose values are all well-formed in one step and gives the same answer (the property tests
    compare the two).
    """
    columns, scalars, problems = split_columns(varbinds)
    return parse_columns(columns, scalars, problems, exact=exact)


def parse_columns(
    columns: dict[Oid, dict[int, SnmpValue]],
    scalars: Mapping[Oid, SnmpValue],
    problems: list[str],
    *,
    exact: bool = False,
) -> IfWalk:
    """parse_if_walk on what split_columns returned (`problems` is extended in place)."""
    table = _Table(columns, problems)

    by_name: dict[str, list[int]] = defaultdict(list)
    for index in sorted(columns.get(IF_NAME, {})):
        raw = table.get(IF_NAME, index)
        if raw is None:
            continue
        name = _name(raw)
        if name is None:
            problems.append(f"ifName.{index} is not a string: {raw!r}")
        elif name:
            by_name[name].append(index)

    unnamed = set().union(*(columns.get(col, {}) for col in ALL_COLUMNS if col != IF_NAME))
    unnamed -= columns.get(IF_NAME, {}).keys()
    if unnamed:
        shown = ", ".join(map(str, sorted(unnamed)[:5]))
        more = f" and {len(unnamed) - 5} more" if len(unnamed) > 5 else ""
        problems.append(f"ifIndex {shown}{more} has counters but no ifName")

    ports: dict[str, PortCounters] = {}
    quick = None if exact else _quick_port(columns)
    for name, indexes in by_name.items():
        if len(indexes) > 1:
            problems.append(
                f"ifName {name!r} is on ifIndex {', '.join(map(str, indexes))}: left out"
                " (give the ports distinct names on the switch)"
            )
            continue
        port = None if quick is None else quick(name, indexes[0])
        ports[name] = table.port(name, indexes[0]) if port is None else port

    uptime = scalars.get(SYS_UPTIME)
    if uptime is None:
        problems.append("sysUpTime.0 not returned")
    elif _uint(uptime) is None:
        problems.append(f"sysUpTime.0 is {_show(uptime)}")
    boots = scalars.get(SNMP_ENGINE_BOOTS)
    return IfWalk(
        ports=ports,
        sys_uptime_ticks=None if uptime is None else _uint(uptime),
        engine_boots=None if boots is None else _uint(boots),
        problems=tuple(problems),
    )


def _quick_port(
    columns: Mapping[Oid, Mapping[int, SnmpValue]],
) -> Callable[[str, int], PortCounters | None]:
    """A reader for the common port: Counter64 octets, both statuses known, ifHighSpeed and
    ifCounterDiscontinuityTime present (or absent for every port), every value a plain
    non-negative int. It returns None for anything else, which _Table.port then reads and
    explains; for the ports it does read, its answer is _Table.port's, with no problem noted."""
    empty: Mapping[int, SnmpValue] = {}
    hc_in = columns.get(IF_HC_IN_OCTETS, empty).get
    hc_out = columns.get(IF_HC_OUT_OCTETS, empty).get
    oper_of = columns.get(IF_OPER_STATUS, empty).get
    admin_of = columns.get(IF_ADMIN_STATUS, empty).get
    speeds = columns.get(IF_HIGH_SPEED, empty)
    discs = columns.get(IF_COUNTER_DISCONTINUITY_TIME, empty)
    speed_of, disc_of = speeds.get, discs.get
    # An optional column the agent does not have at all is None for every port, silently.
    speed_absent, disc_absent = not speeds, not discs
    status = IF_STATUS.get

    def quick(name: str, index: int) -> PortCounters | None:
        i, o, op, ad = hc_in(index), hc_out(index), oper_of(index), admin_of(index)
        speed, disc = speed_of(index), disc_of(index)
        # type() is int, not isinstance: bool (and any other int subclass) takes the long way.
        if not (type(i) is int and i >= 0 and type(o) is int and o >= 0
                and type(op) is int and type(ad) is int
                and ((type(speed) is int and speed >= 0) or (speed is None and speed_absent))
                and ((type(disc) is int and disc >= 0) or (disc is None and disc_absent))):
            return None
        oper, admin = status(op), status(ad)
        if oper is None or admin is None:
            return None
        return PortCounters(name, index, i, o, 64, oper, admin, speed, disc)

    return quick


def parse_if_table(varbinds: Iterable[VarBind]) -> dict[str, PortCounters]:
    """The ports of one poll's varbinds, keyed by ifName (see parse_if_walk for the rules)."""
    return dict(parse_if_walk(varbinds).ports)


def _show(value: SnmpValue) -> str:
    return str(value.value) if isinstance(value, Absent) else repr(value)


@dataclass(frozen=True, slots=True)
class BulkStep:
    """What one GETBULK reply adds to a multi-column walk."""

    varbinds: list[VarBind]  # rows inside their column, in reply order
    last: dict[Oid, Oid]  # where each column resumes
    ended: frozenset[Oid]  # columns that reached their end in this reply


def absorb_bulk_rows(
    active: Sequence[Oid], last: Mapping[Oid, Oid], rows: Sequence[VarBind]
) -> BulkStep:
    """Assign a GETBULK reply's repeater varbinds to the columns requested, in request order.

    The reply is flat, row after row, each row holding the next OID of every requested column;
    an agent may cut it short anywhere. A column ends at its first OID outside its own prefix
    (the walk overshot into the next column) or at endOfMibView, whose OID is just the request
    echoed back. Raises ValueError if a column's OIDs do not increase (an agent loop).
    """
    # Per column position, not per column OID: a tuple key would be hashed for every varbind.
    width = len(active)
    if not width:
        return BulkStep([], dict(last), frozenset())
    prefix_len = [len(col) for col in active]
    lasts = [last[col] for col in active]
    done = [False] * width
    end_of_view = Absent.END_OF_MIB_VIEW
    kept: list[VarBind] = []
    keep = kept.append
    j = 0
    for oid, value in rows:
        if not done[j]:
            col = active[j]
            if value is end_of_view or oid[: prefix_len[j]] != col:
                done[j] = True
            elif oid <= lasts[j]:
                raise ValueError(f"agent returned non-increasing OID {'.'.join(map(str, oid))}")
            else:
                keep((oid, value))
                lasts[j] = oid
        j += 1
        if j == width:
            j = 0
    new_last = dict(last)
    new_last.update(zip(active, lasts, strict=True))
    ended = frozenset(col for col, flag in zip(active, done, strict=True) if flag)
    return BulkStep(kept, new_last, ended)
