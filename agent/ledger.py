"""The outage ledger: an append-only, hash-chained SQL log of outages, classes, windows and actions.

Issue 5 "The ledger". SQLite file by default, PostgreSQL by URL (shared deployments), through
SQLAlchemy Core. Nothing is ever updated or deleted: a correction is a new entry whose `ref_seq`
names the entry it corrects, and every query folds the log in sequence order.

Hash chain. Entry n stores `prev_hash` (entry n−1's hash; 64 zeros for n = 1) and
`hash = sha256(prev_hash + canonical(doc))`, where doc = {"at", "kind", "payload", "ref", "seq",
"server"} and canonical is JSON with sorted keys, no spaces, UTF-8. Every column except the two
hashes is inside doc, so no field can change unseen. Payloads hold exact values only (str, int,
bool, None, lists, objects; no floats): money is integer fen, times are ISO-8601 strings in UTC.
Payloads are stored as TEXT, not PostgreSQL JSONB, which would renormalise them.

Head. A one-row table `ledger_head` holds the last seq and hash, updated in the same
transaction as every append, so it never legitimately disagrees with the log. A chain alone
cannot show a deleted tail (what is left is still a valid chain); the head can: verify reports
"truncated after seq N" when the head names a later seq than the last entry. The head lives in
the database rather than in a file because only the database's transaction makes "entry written"
and "head moved" one atomic step; a file beside it would go stale on any crash between the two.
Someone who can rewrite both the entries and the head can forge a consistent ledger; against
that, `ledger verify` and `report sla` print the head so it can be anchored elsewhere and checked
later with `--expect-head SEQ:HASH`. Triggers (schema v2) refuse UPDATE and DELETE on entries so
mistakes fail loudly; the chain is what catches a deliberate edit.

Concurrency. Appends are serialised on the head: PostgreSQL takes `SELECT … FOR UPDATE` on the
head row; SQLite starts write transactions with `BEGIN IMMEDIATE` (the database write lock) and
waits up to `busy_timeout_s` for it. Either way seq n+1 is computed from a head nobody else can
move until commit, so two writers can never fork the chain.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from rackwarden.policies.facts import PortPoll
from rackwarden.policies.outages import (
    PORT_STATES,
    OpenOutage,
    OutageEnd,
    OutageEvent,
    OutageStart,
    OutageTracker,
    PortFlagged,
    PortObservation,
    PortState,
    SwitchObservation,
    TrackerSettings,
    port_observation,
    whole_second,
)
from rackwarden.policies.sla import (
    BUILTIN_TEMPLATES,
    CAUSES,
    CLASSES,
    WINDOW_KINDS,
    CreditTemplate,
    MaintenanceWindow,
    OutageRecord,
    ServerContract,
    ServerMonth,
    WindowRule,
    contract_timezone,
    month_bounds,
    outage_class_of,
    periods_between,
    server_month,
    server_months,
)
from rackwarden.policies.sla_deadlines import (
    REPAIR_TERMS,
    Finding,
    RepairTerms,
    check_incident_report,
    check_repair,
)
from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Engine, make_url

from .clock import SystemClock
from .config import Config, ServerConfig
from .metering import PortReport

GENESIS_HASH = "0" * 64
SCHEMA_VERSION = 2

EntryKind = Literal[
    "outage_start",  # a port stopped forwarding (tracker or enforcer)
    "outage_end",  # ref: the outage_start
    "classify",  # ref: the outage_start; the agent's own later evidence changed the cause
    "reclassify",  # ref: the outage_start; an operator's decision (wins over classify)
    "maintenance",  # a declared maintenance window
    "action",  # an enforcement act (shut, restore, notice) with its evidence
    "incident",  # R13: a security incident with detected/reported times
    "ack",  # R19: ref: the outage_start; someone answered
    "on_site",  # R19: ref: the outage_start; someone is on site
    "resolve",  # R19: ref: the outage_start; the fault is repaired
    "flag",  # R12: a port down or silent for a week
    "note",  # free text for the record
]
ENTRY_KINDS: tuple[str, ...] = (
    "outage_start",
    "outage_end",
    "classify",
    "reclassify",
    "maintenance",
    "action",
    "incident",
    "ack",
    "on_site",
    "resolve",
    "flag",
    "note",
)
_REFERS_TO_OUTAGE = frozenset({"outage_end", "classify", "reclassify", "ack", "on_site", "resolve"})

# What an operator can reclassify an outage to, and the cause recorded for each. The SLA engine
# classifies by cause, so a class is always written as a cause:
# - maintenance is written as planned_work (or cutover): R17 lets only a declared window with
#   the template's notice excuse time, so the report shows it as maintenance exactly where such
#   a window covers it, and as provider elsewhere, with the reason.
# - none says "no outage after all" (e.g. the switch did not answer but the port forwarded):
#   the record stays in the log and counts nowhere.
ReclassTarget = Literal["provider", "customer", "maintenance", "excluded", "none"]
RECLASS_TARGETS: tuple[ReclassTarget, ...] = (
    "provider",
    "customer",
    "maintenance",
    "excluded",
    "none",
)
DEFAULT_CAUSE: Mapping[str, str] = MappingProxyType(
    {
        "provider": "provider_fault",
        "customer": "customer_fault",
        "maintenance": "planned_work",
        "excluded": "force_majeure",
    }
)
_MAINTENANCE_CAUSES = ("planned_work", "cutover")


class LedgerError(Exception):
    """A ledger operation that cannot be done; the message says what to do instead."""


# ---------------------------------------------------------------------------------------------
# Schema and migrations: a versioned list of DDL steps per dialect, applied in order, each
# recorded in schema_version inside the same transaction as its DDL.

metadata = MetaData()
ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("at", String(40), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("server", String(64)),
    Column("ref_seq", BigInteger),
    Column("payload", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)
ledger_head = Table(
    "ledger_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
)
schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("description", Text, nullable=False),
    Column("applied_at", String(40), nullable=False),
)


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    steps: Mapping[str, tuple[str, ...]]  # dialect name → DDL statements


_V1 = (
    """CREATE TABLE ledger_entries (
        seq BIGINT NOT NULL PRIMARY KEY CHECK (seq > 0),
        at VARCHAR(40) NOT NULL,
        kind VARCHAR(32) NOT NULL,
        server VARCHAR(64),
        ref_seq BIGINT REFERENCES ledger_entries (seq),
        payload TEXT NOT NULL,
        prev_hash CHAR(64) NOT NULL,
        hash CHAR(64) NOT NULL UNIQUE
    )""",
    "CREATE INDEX ix_ledger_entries_server_kind ON ledger_entries (server, kind, seq)",
    "CREATE INDEX ix_ledger_entries_ref ON ledger_entries (ref_seq)",
    """CREATE TABLE ledger_head (
        id INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
        seq BIGINT NOT NULL,
        hash CHAR(64) NOT NULL
    )""",
    f"INSERT INTO ledger_head (id, seq, hash) VALUES (1, 0, '{GENESIS_HASH}')",
)
_REFUSE = "ledger_entries is append-only: write a correcting entry instead"
MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "ledger entries and head", {"sqlite": _V1, "postgresql": _V1}),
    Migration(
        2,
        "refuse UPDATE and DELETE on ledger entries",
        {
            "sqlite": (
                "CREATE TRIGGER ledger_entries_no_update BEFORE UPDATE ON ledger_entries "
                f"BEGIN SELECT RAISE(ABORT, '{_REFUSE}'); END",
                "CREATE TRIGGER ledger_entries_no_delete BEFORE DELETE ON ledger_entries "
                f"BEGIN SELECT RAISE(ABORT, '{_REFUSE}'); END",
            ),
            "postgresql": (
                "CREATE FUNCTION ledger_entries_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ "
                f"BEGIN RAISE EXCEPTION USING MESSAGE = '{_REFUSE} (' || TG_OP || ')'; END $$",
                "CREATE TRIGGER ledger_entries_no_update BEFORE UPDATE OR DELETE ON ledger_entries "
                "FOR EACH ROW EXECUTE FUNCTION ledger_entries_refuse()",
                "CREATE TRIGGER ledger_entries_no_truncate BEFORE TRUNCATE ON ledger_entries "
                "FOR EACH STATEMENT EXECUTE FUNCTION ledger_entries_refuse()",
            ),
        },
    ),
)
assert MIGRATIONS[-1].version == SCHEMA_VERSION
_PG_MIGRATION_LOCK = 0x5257_4C47  # "RWLG": one advisory lock id for schema changes


def migrate(conn: Connection, now: datetime) -> int:
    """Bring the schema to SCHEMA_VERSION inside the caller's write transaction; returns it."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        # Two agents starting together must not both create the tables.
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
    conn.execute(
        text(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL PRIMARY KEY, "
            "description TEXT NOT NULL, applied_at VARCHAR(40) NOT NULL)"
        )
    )
    current = conn.execute(select(schema_version.c.version)).scalars().all()
    have = max(current, default=0)
    if have > SCHEMA_VERSION:
        raise LedgerError(
            f"the ledger's schema is v{have}, newer than this agent's v{SCHEMA_VERSION}: "
            f"upgrade RackWarden before using this database"
        )
    for m in MIGRATIONS:
        if m.version <= have:
            continue
        if dialect not in m.steps:
            raise LedgerError(f"no migration v{m.version} for {dialect}: use sqlite or postgresql")
        for ddl in m.steps[dialect]:
            conn.exec_driver_sql(ddl)
        conn.execute(
            insert(schema_version).values(
                version=m.version, description=m.description, applied_at=ts(now)
            )
        )
    return SCHEMA_VERSION


# ---------------------------------------------------------------------------------------------
# Canonical form and hashing


def _whole_aware(name: str, t: datetime) -> None:
    if t.tzinfo is None or t.utcoffset() is None:
        raise LedgerError(f"{name} needs a UTC offset, e.g. 2026-11-03T02:00:00+08:00")
    if t.microsecond:
        raise LedgerError(f"{name} must be a whole second")


def ts(at: datetime) -> str:
    """The ledger's time text: ISO-8601 in UTC. Naive times are refused."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise LedgerError(f"time {at.isoformat()} has no timezone; the ledger stores UTC")
    return at.astimezone(UTC).isoformat()


def parse_ts(value: str) -> datetime:
    at = datetime.fromisoformat(value)
    if at.tzinfo is None:
        raise LedgerError(f"stored time {value!r} has no timezone")
    return at


def _check_exact(value: object, path: str) -> None:
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        raise LedgerError(f"payload {path}: floats are not exact; store integers (fen, bps, s)")
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_exact(v, f"{path}[{i}]")
        return
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise LedgerError(f"payload {path}: keys must be strings, got {k!r}")
            _check_exact(v, f"{path}.{k}")
        return
    raise LedgerError(f"payload {path}: {type(value).__name__} cannot be stored; convert it")


def canonical(value: object) -> str:
    """JSON with sorted keys and no spaces: the byte-exact form that is hashed."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def entry_hash(
    prev_hash: str,
    seq: int,
    at: str,
    kind: str,
    server: str | None,
    ref_seq: int | None,
    payload: object,
) -> str:
    doc = {"at": at, "kind": kind, "payload": payload, "ref": ref_seq, "seq": seq, "server": server}
    return hashlib.sha256((prev_hash + canonical(doc)).encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Entry:
    """One ledger entry as stored."""

    seq: int
    at: datetime
    kind: str
    server: str | None
    ref_seq: int | None
    payload: Mapping[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class NewEntry:
    """An entry to append; `ref_index` refers to an earlier item of the same batch."""

    kind: str
    at: datetime
    payload: Mapping[str, Any]
    server: str | None = None
    ref_seq: int | None = None
    ref_index: int | None = None


@dataclass(frozen=True, slots=True)
class Head:
    seq: int
    hash: str


Problem = Literal["modified", "missing", "truncated", "beyond_head", "anchor_mismatch"]


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The outcome of recomputing the chain; `first_bad_seq` and `problem` are None when ok.

    problem: "modified" (an entry's content no longer matches its hash, or was re-hashed so its
    successor no longer links to it), "missing" (entries deleted from the middle),
    "truncated" (the tail after `last_seq` was deleted: the head names a later seq),
    "beyond_head" (entries written around the store, after the head), "anchor_mismatch" (an
    externally kept head does not match).
    """

    entries: int
    last_seq: int
    last_hash: str
    head: Head
    first_bad_seq: int | None = None
    problem: Problem | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.problem is None


# ---------------------------------------------------------------------------------------------
# Views over the log


@dataclass(frozen=True, slots=True)
class ClassChange:
    """One classify/reclassify entry as it applies to an outage."""

    seq: int
    at: datetime
    kind: str  # "classify" (agent) or "reclassify" (operator)
    by: str
    outage_class: str  # a class, or "none"
    cause: str | None
    false_positive: bool
    reason: str


@dataclass(frozen=True, slots=True)
class OutageView:
    """An outage as the log says now: its start entry, end, and current cause after corrections.

    `seq` (the outage_start entry's seq) is its identity in the ledger and in the CLI.
    """

    seq: int
    outage_id: str
    server: str
    switch: str | None
    port: str | None
    state: str
    start: datetime
    end: datetime | None
    recorded_cause: str
    cause: str | None  # None when an operator said it was no outage ("none")
    false_positive: bool
    outage_class: str  # a class, or "none"
    evidence: Mapping[str, Any]
    end_evidence: Mapping[str, Any]
    changes: tuple[ClassChange, ...] = ()
    acknowledged_at: datetime | None = None
    on_site_at: datetime | None = None
    resolved_at: datetime | None = None

    @property
    def open(self) -> bool:
        return self.end is None

    @property
    def operator_resolved(self) -> bool:
        return any(c.kind == "reclassify" for c in self.changes)

    def end_or(self, now: datetime) -> datetime:
        return self.end if self.end is not None else max(self.start, whole_second(now))

    def seconds(self, now: datetime) -> int:
        return int((self.end_or(now) - self.start) // timedelta(seconds=1))

    def record(self, now: datetime) -> OutageRecord | None:
        """The record the SLA engine takes; None if voided or of zero length."""
        if self.cause is None:
            return None
        end = self.end_or(now)
        if end <= self.start:
            return None
        return OutageRecord(f"#{self.seq}", self.server, self.start, end, self.cause,
                            self.false_positive)


@dataclass(frozen=True, slots=True)
class IncidentView:
    """An R13 security incident: when it was detected and when it was reported (if yet)."""

    seq: int
    server: str | None
    summary: str
    detected_at: datetime
    reported_at: datetime | None
    by: str

    @property
    def incident_id(self) -> str:
        return f"I{self.seq}"


@dataclass(frozen=True, slots=True)
class WindowView:
    """A declared maintenance window with when it was declared and by whom."""

    seq: int
    window: MaintenanceWindow
    declared_at: datetime
    by: str
    reason: str


def _json_obj(text_: str) -> dict[str, Any]:
    value = json.loads(text_)
    if not isinstance(value, dict):
        raise LedgerError("stored payload is not a JSON object")
    return value


def _opt_ts(value: Any) -> datetime | None:
    return parse_ts(value) if isinstance(value, str) else None


def _fold_outages(entries: Iterable[Entry]) -> list[OutageView]:
    """Fold the log, in seq order, into the current view of every outage."""
    starts: dict[int, dict[str, Any]] = {}
    order: list[int] = []
    for e in sorted(entries, key=lambda x: x.seq):
        p = e.payload
        if e.kind == "outage_start":
            starts[e.seq] = {
                "start": e, "end": None, "end_evidence": {}, "agent_cause": p["cause"],
                "operator": None, "changes": [], "ack": None, "on_site": None, "resolved": None,
            }
            order.append(e.seq)
            continue
        if e.ref_seq is None or e.ref_seq not in starts:
            continue
        s = starts[e.ref_seq]
        if e.kind == "outage_end":
            s["end"] = parse_ts(p["end"])
            s["end_evidence"] = p.get("evidence", {})
        elif e.kind in ("classify", "reclassify"):
            change = ClassChange(
                e.seq, e.at, e.kind, str(p.get("by", "agent")), str(p["class"]),
                p.get("cause"), bool(p.get("false_positive", False)), str(p.get("reason", "")),
            )
            s["changes"].append(change)
            # An operator's decision stands until another operator's; the agent's later
            # evidence only refines what the agent itself recorded.
            if e.kind == "reclassify":
                s["operator"] = change
            else:
                s["agent_cause"] = change.cause
        elif e.kind == "ack":
            s["ack"] = s["ack"] or parse_ts(p["at"])
        elif e.kind == "on_site":
            s["on_site"] = s["on_site"] or parse_ts(p["at"])
        elif e.kind == "resolve":
            s["resolved"] = parse_ts(p["at"])
    out: list[OutageView] = []
    for seq in order:
        s = starts[seq]
        e = s["start"]
        p = e.payload
        op: ClassChange | None = s["operator"]
        if op is not None:
            cause, fp = op.cause, op.false_positive
            cls = op.outage_class if cause is None else outage_class_of(cause, fp)
        else:
            cause, fp = s["agent_cause"], False
            cls = outage_class_of(cause)
        out.append(
            OutageView(
                seq=seq,
                outage_id=str(p["outage_id"]),
                server=str(e.server),
                switch=p.get("switch"),
                port=p.get("port"),
                state=str(p.get("state", "")),
                start=parse_ts(p["start"]),
                end=s["end"],
                recorded_cause=str(p["cause"]),
                cause=cause,
                false_positive=fp,
                outage_class=cls,
                evidence=MappingProxyType(dict(p.get("evidence", {}))),
                end_evidence=MappingProxyType(dict(s["end_evidence"])),
                changes=tuple(s["changes"]),
                acknowledged_at=s["ack"],
                on_site_at=s["on_site"],
                resolved_at=s["resolved"],
            )
        )
    return out


# ---------------------------------------------------------------------------------------------
# The store


class LedgerStore:
    """Append-only, hash-chained ledger over SQLAlchemy; the constructor does no I/O."""

    def __init__(self, url: str, *, busy_timeout_s: float = 30.0) -> None:
        self._url = url
        self._busy_timeout_s = busy_timeout_s
        self._engine: Engine | None = None

    @property
    def url(self) -> str:
        return self._url

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise LedgerError("LedgerStore.start() was not called")
        return self._engine

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def start(self, now: datetime | None = None) -> None:
        """Connect and bring the schema up to date. `now` stamps applied migrations."""
        url = make_url(self._url)
        if url.get_backend_name() == "sqlite":
            if not url.database or url.database == ":memory:":
                # Each pooled connection would see its own empty database.
                raise LedgerError("the SQLite ledger must be a file: sqlite:////path/ledger.sqlite")
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(
                url,
                connect_args={"timeout": self._busy_timeout_s, "check_same_thread": False},
            )
            event.listen(engine, "connect", _sqlite_connect)
            event.listen(engine, "begin", _sqlite_begin)
        elif url.get_backend_name() == "postgresql":
            engine = create_engine(url, pool_pre_ping=True)
        else:
            raise LedgerError(
                f"unsupported ledger database {url.get_backend_name()!r}: use sqlite:///PATH or "
                f"postgresql+psycopg://USER@HOST/DB"
            )
        self._engine = engine
        with self._write() as conn:
            migrate(conn, now or SystemClock().at())

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def __enter__(self) -> LedgerStore:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            conn.execution_options(ledger_write=True)
            with conn.begin():
                yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            with conn.begin():
                yield conn

    def schema_version(self) -> int:
        with self._read() as conn:
            return int(conn.execute(select(schema_version.c.version)).scalars().all()[-1])

    # -- writing ------------------------------------------------------------------------------

    def append(
        self,
        kind: str,
        at: datetime,
        payload: Mapping[str, Any],
        *,
        server: str | None = None,
        ref_seq: int | None = None,
    ) -> Entry:
        """Append one entry at the head of the chain; returns it with its seq and hash."""
        return self.append_many([NewEntry(kind, at, payload, server, ref_seq)])[0]

    def append_many(self, items: Sequence[NewEntry]) -> list[Entry]:
        """Append entries in one transaction: all of them or none."""
        for it in items:
            if it.kind not in ENTRY_KINDS:
                raise LedgerError(
                    f"unknown entry kind {it.kind!r}; known: {', '.join(ENTRY_KINDS)}"
                )
            _check_exact(dict(it.payload), "")
            if it.server is not None and not (0 < len(it.server) <= 64):
                raise LedgerError(f"server id {it.server!r} must be 1 to 64 characters")
        out: list[Entry] = []
        with self._write() as conn:
            head = conn.execute(
                select(ledger_head.c.seq, ledger_head.c.hash)
                .where(ledger_head.c.id == 1)
                .with_for_update()
            ).one()
            seq, prev = int(head.seq), str(head.hash)
            first = seq + 1
            for i, it in enumerate(items):
                seq += 1
                ref_seq = it.ref_seq
                if it.ref_index is not None:
                    if not 0 <= it.ref_index < i:
                        raise LedgerError(f"batch item {i} refers to item {it.ref_index}")
                    ref_seq = first + it.ref_index
                if ref_seq is not None and not 0 < ref_seq < seq:
                    raise LedgerError(f"entry refers to seq {ref_seq}, which does not exist")
                at_text = ts(it.at)
                payload = json.loads(canonical(dict(it.payload)))
                h = entry_hash(prev, seq, at_text, it.kind, it.server, ref_seq, payload)
                conn.execute(
                    insert(ledger_entries).values(
                        seq=seq, at=at_text, kind=it.kind, server=it.server, ref_seq=ref_seq,
                        payload=canonical(payload), prev_hash=prev, hash=h,
                    )
                )
                out.append(Entry(seq, parse_ts(at_text), it.kind, it.server, ref_seq,
                                 MappingProxyType(payload), prev, h))
                prev = h
            conn.execute(
                update(ledger_head).where(ledger_head.c.id == 1).values(seq=seq, hash=prev)
            )
        return out

    # -- reading ------------------------------------------------------------------------------

    @staticmethod
    def _entry(row: Any) -> Entry:
        return Entry(int(row.seq), parse_ts(row.at), row.kind, row.server,
                     None if row.ref_seq is None else int(row.ref_seq),
                     MappingProxyType(_json_obj(row.payload)), row.prev_hash, row.hash)

    def entries(
        self,
        *,
        server: str | None = None,
        kinds: Iterable[str] | None = None,
        since_seq: int = 0,
        limit: int | None = None,
    ) -> list[Entry]:
        """Entries in seq order, optionally of one server, some kinds, after `since_seq`."""
        q = select(ledger_entries).where(ledger_entries.c.seq > since_seq)
        if server is not None:
            q = q.where(ledger_entries.c.server == server)
        if kinds is not None:
            q = q.where(ledger_entries.c.kind.in_(list(kinds)))
        q = q.order_by(ledger_entries.c.seq)
        if limit is not None:
            q = q.limit(limit)
        with self._read() as conn:
            return [self._entry(r) for r in conn.execute(q)]

    def entry(self, seq: int) -> Entry | None:
        with self._read() as conn:
            row = conn.execute(select(ledger_entries).where(ledger_entries.c.seq == seq)).first()
        return None if row is None else self._entry(row)

    def head(self) -> Head:
        with self._read() as conn:
            row = conn.execute(select(ledger_head.c.seq, ledger_head.c.hash)).one()
        return Head(int(row.seq), str(row.hash))

    def verify(self, expect_head: Head | None = None) -> VerifyResult:
        """Recompute the chain from seq 1; the first problem found is reported."""
        with self._read() as conn:
            head_row = conn.execute(select(ledger_head.c.seq, ledger_head.c.hash)).one()
            rows = conn.execute(select(ledger_entries).order_by(ledger_entries.c.seq)).all()
        head = Head(int(head_row.seq), str(head_row.hash))
        prev_hash, expected, count = GENESIS_HASH, 1, 0
        last_seq, last_hash = 0, GENESIS_HASH

        def bad(seq: int, problem: Problem, detail: str) -> VerifyResult:
            return VerifyResult(count, last_seq, last_hash, head, seq, problem, detail)

        for row in rows:
            seq = int(row.seq)
            if seq != expected:
                return bad(expected, "missing",
                           f"entries {expected}..{seq - 1} are missing from the middle of the log")
            if row.prev_hash != prev_hash:
                # Entry seq−1 matched its own hash, yet this entry links to another one: seq−1
                # was changed and re-hashed (this one still holds its original hash).
                return bad(seq - 1, "modified",
                           f"entry {seq - 1} was changed and re-hashed: entry {seq} links to "
                           f"{row.prev_hash[:16]}…, not to {prev_hash[:16]}…")
            try:
                payload = _json_obj(row.payload)
                h = entry_hash(row.prev_hash, seq, row.at, row.kind, row.server,
                               None if row.ref_seq is None else int(row.ref_seq), payload)
            except (ValueError, LedgerError):
                h = ""
            if h != row.hash:
                return bad(seq, "modified", f"entry {seq} ({row.kind}) does not match its hash")
            prev_hash, expected, count = row.hash, seq + 1, count + 1
            last_seq, last_hash = seq, row.hash
        if head.seq > last_seq:
            return bad(last_seq + 1, "truncated",
                       f"truncated after seq {last_seq}: the head records seq {head.seq}, so "
                       f"entries {last_seq + 1}..{head.seq} were deleted")
        if head.seq < last_seq:
            return bad(head.seq + 1, "beyond_head",
                       f"entries {head.seq + 1}..{last_seq} were written around the ledger store "
                       f"(the head records seq {head.seq})")
        if head.hash != last_hash:
            return bad(last_seq, "modified",
                       f"entry {last_seq} does not match the head's hash: it was changed and "
                       f"re-hashed (or the head was edited)")
        if expect_head is not None:
            if expect_head.seq > last_seq:
                return bad(last_seq + 1, "truncated",
                           f"truncated after seq {last_seq}: the anchored head is seq "
                           f"{expect_head.seq}")
            anchored = next((r.hash for r in rows if int(r.seq) == expect_head.seq), GENESIS_HASH)
            if anchored != expect_head.hash:
                return bad(expect_head.seq, "anchor_mismatch",
                           f"entry {expect_head.seq} has hash {anchored[:16]}…, the anchor says "
                           f"{expect_head.hash[:16]}…: the log was rewritten up to there")
        return VerifyResult(count, last_seq, last_hash, head)

    # -- outages ------------------------------------------------------------------------------

    def outages(
        self,
        server: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        now: datetime | None = None,
    ) -> list[OutageView]:
        """Outages (current class after corrections) overlapping [start, end), by start seq.

        Open outages reach `now` (or are taken as still running when `now` is None).
        """
        kinds = ("outage_start", "outage_end", "classify", "reclassify", "ack", "on_site",
                 "resolve")
        views = _fold_outages(self.entries(server=server, kinds=kinds))
        out = []
        for v in views:
            v_end = v.end if v.end is not None else (whole_second(now) if now else None)
            if start is not None and v_end is not None and v_end <= start:
                continue
            if end is not None and v.start >= end:
                continue
            out.append(v)
        return out

    def outage(self, seq: int) -> OutageView:
        """The outage whose outage_start is `seq` (or that the entry `seq` refers to)."""
        e = self.entry(seq)
        if e is None:
            raise LedgerError(f"no ledger entry {seq}")
        if e.kind != "outage_start":
            if e.ref_seq is None or e.kind not in _REFERS_TO_OUTAGE:
                raise LedgerError(f"entry {seq} is a {e.kind}, not an outage")
            return self.outage(e.ref_seq)
        for v in self.outages(server=e.server):
            if v.seq == seq:
                return v
        raise LedgerError(f"outage {seq} not found")  # pragma: no cover - fold keeps every start

    def open_outages(self) -> list[OutageView]:
        return [v for v in self.outages() if v.end is None]

    def unresolved_unknown(
        self, now: datetime, server: str | None = None
    ) -> list[tuple[OutageView, int]]:
        """Outages still of class unknown, with their seconds so far, longest first."""
        rows = [
            (v, v.seconds(now))
            for v in self.outages(server=server)
            if v.outage_class == "unknown"
        ]
        return sorted(rows, key=lambda r: (-r[1], r[0].seq))

    def record_events(
        self, events: Sequence[OutageEvent], open_seqs: Mapping[str, int] | None = None
    ) -> list[Entry]:
        """Append a batch of tracker events (one poll's, say) in one transaction.

        An end or cause change refers to its record's outage_start: one earlier in the same
        batch, else `open_seqs[outage_id]`, else the latest outage_start with that id.
        """
        items: list[NewEntry] = []
        in_batch: dict[str, int] = {}
        for ev in events:
            if isinstance(ev, OutageStart):
                in_batch[ev.outage_id] = len(items)
                items.append(NewEntry(
                    "outage_start", ev.start,
                    {"outage_id": ev.outage_id, "switch": ev.switch, "port": ev.port,
                     "start": ts(ev.start), "cause": ev.cause, "state": ev.state,
                     "evidence": dict(ev.evidence)},
                    server=ev.server,
                ))
                continue
            if isinstance(ev, PortFlagged):
                f = ev.finding
                items.append(NewEntry(
                    "flag", ev.at,
                    {"rule": f.rule, "check": f.check, "switch": ev.switch, "port": ev.port,
                     "status": f.status, "due_at": ts(f.due_at), "reason": f.reason},
                    server=ev.server,
                ))
                continue
            ref_seq: int | None = None
            ref_index = in_batch.get(ev.outage_id)
            if ref_index is None:
                ref_seq = (open_seqs or {}).get(ev.outage_id) or self._start_seq(
                    ev.server, ev.outage_id)
            if isinstance(ev, OutageEnd):
                items.append(NewEntry(
                    "outage_end", ev.end,
                    {"outage_id": ev.outage_id, "end": ts(ev.end), "evidence": dict(ev.evidence)},
                    server=ev.server, ref_seq=ref_seq, ref_index=ref_index,
                ))
            else:
                items.append(NewEntry(
                    "classify", ev.at,
                    {"outage_id": ev.outage_id, "class": outage_class_of(ev.cause),
                     "cause": ev.cause, "false_positive": False, "reason": ev.reason,
                     "by": "agent", "evidence": dict(ev.evidence)},
                    server=ev.server, ref_seq=ref_seq, ref_index=ref_index,
                ))
        return self.append_many(items) if items else []

    def _start_seq(self, server: str, outage_id: str) -> int:
        found = [e.seq for e in self.entries(server=server, kinds=("outage_start",))
                 if e.payload.get("outage_id") == outage_id]
        if not found:
            raise LedgerError(f"no outage_start for {outage_id!r} of server {server!r}")
        return found[-1]

    def reclassify(
        self,
        seq: int,
        outage_class: str,
        reason: str,
        at: datetime,
        *,
        by: str = "operator",
        false_positive: bool = False,
        cause: str | None = None,
    ) -> Entry:
        """An operator's correction of an outage's class: a new entry; the old ones stay.

        `false_positive` marks an enforcement (customer-class cause) as RackWarden's mistake,
        which makes its time `provider` (issue 5). `cause` picks a specific cause of the class.
        """
        if not reason.strip():
            raise LedgerError("a reclassification needs a reason (--reason)")
        view = self.outage(seq)
        new_fp = False
        new_cause: str | None
        if false_positive:
            if outage_class != "provider":
                raise LedgerError(
                    "--false-positive makes the outage provider time: use --class provider"
                )
            enforcement = next(
                (c for c in (view.cause, view.recorded_cause)
                 if c is not None and CAUSES[c].outage_class == "customer"),
                None,
            )
            if enforcement is None:
                raise LedgerError(
                    f"outage {view.seq} ({view.recorded_cause}) was not an enforcement or customer "
                    f"outage; a false positive applies only to those. Use --class provider."
                )
            if cause is not None and cause != enforcement:
                raise LedgerError("--cause cannot be combined with --false-positive")
            new_cause, new_fp = enforcement, True
        elif outage_class == "none":
            if cause is not None:
                raise LedgerError("--class none takes no --cause")
            new_cause = None
        elif outage_class in DEFAULT_CAUSE:
            new_cause = cause or DEFAULT_CAUSE[outage_class]
            if new_cause not in CAUSES:
                raise LedgerError(f"unknown cause {new_cause!r}; known: {', '.join(CAUSES)}")
            fits = (new_cause in _MAINTENANCE_CAUSES if outage_class == "maintenance"
                    else CAUSES[new_cause].outage_class == outage_class)
            if not fits:
                raise LedgerError(f"cause {new_cause!r} is not of class {outage_class}")
        else:
            raise LedgerError(
                f"class must be one of {', '.join(RECLASS_TARGETS)}, got {outage_class!r}"
            )
        recorded = "none" if new_cause is None else outage_class_of(new_cause, new_fp)
        return self.append(
            "reclassify", at,
            {"outage_id": view.outage_id, "class": recorded, "requested_class": outage_class,
             "cause": new_cause, "false_positive": new_fp, "reason": reason, "by": by,
             "previous": {"class": view.outage_class, "cause": view.cause,
                          "false_positive": view.false_positive}},
            server=view.server, ref_seq=view.seq,
        )

    def note_outage(self, kind: Literal["ack", "on_site", "resolve"], seq: int, at: datetime,
                    *, by: str, note: str = "", when: datetime | None = None) -> Entry:
        """R19: someone answered, arrived on site, or repaired the fault of outage `seq`.

        `when` is when that happened (default `at`, when it is recorded); it may be earlier.
        """
        view = self.outage(seq)
        when = at if when is None else when
        _whole_aware("when", when)
        if when < view.start:
            raise LedgerError(f"{ts(when)} is before outage {view.seq} started ({ts(view.start)})")
        if when > at:
            raise LedgerError(f"{ts(when)} is in the future: record it once it has happened")
        return self.append(kind, at, {"outage_id": view.outage_id, "at": ts(when), "by": by,
                                      "note": note}, server=view.server, ref_seq=view.seq)

    # -- incidents (R13) ---------------------------------------------------------------------

    def add_incident(self, *, summary: str, detected_at: datetime, at: datetime, by: str,
                     server: str | None = None, reported_at: datetime | None = None) -> Entry:
        """Record a major security incident; `reported_at` when it was reported to the
        authorities and customers (R13: within 24 h of detection), if it already was."""
        _whole_aware("detected_at", detected_at)
        if not summary.strip():
            raise LedgerError("an incident needs a summary")
        if detected_at > at:
            raise LedgerError("detected_at is in the future")
        if reported_at is not None:
            self._check_reported(detected_at, reported_at, at)
        return self.append("incident", at, {
            "summary": summary, "detected_at": ts(detected_at),
            "reported_at": ts(reported_at) if reported_at else None, "by": by,
        }, server=server)

    def report_incident(self, seq: int, reported_at: datetime, at: datetime, *, by: str,
                        note: str = "") -> Entry:
        """Record that incident `seq` has been reported (a new entry referring to it)."""
        view = self.incident(seq)
        if view.reported_at is not None:
            raise LedgerError(f"incident {view.incident_id} was already reported at "
                              f"{ts(view.reported_at)}")
        self._check_reported(view.detected_at, reported_at, at)
        return self.append("incident", at, {"incident_id": view.incident_id,
                                            "reported_at": ts(reported_at), "by": by,
                                            "note": note},
                           server=view.server, ref_seq=view.seq)

    @staticmethod
    def _check_reported(detected_at: datetime, reported_at: datetime, at: datetime) -> None:
        _whole_aware("reported_at", reported_at)
        if reported_at < detected_at:
            raise LedgerError("reported_at is before detected_at")
        if reported_at > at:
            raise LedgerError("reported_at is in the future: record the report once made")

    def incidents(self) -> list[IncidentView]:
        """Every incident, by seq, with its report time folded in."""
        views: dict[int, IncidentView] = {}
        for e in self.entries(kinds=("incident",)):
            p = e.payload
            if e.ref_seq is None:
                reported = p.get("reported_at")
                views[e.seq] = IncidentView(e.seq, e.server, str(p["summary"]),
                                            parse_ts(p["detected_at"]),
                                            parse_ts(reported) if reported else None,
                                            str(p.get("by", "")))
            elif e.ref_seq in views and views[e.ref_seq].reported_at is None:
                views[e.ref_seq] = replace(views[e.ref_seq],
                                           reported_at=parse_ts(p["reported_at"]))
        return list(views.values())

    def incident(self, seq: int) -> IncidentView:
        for v in self.incidents():
            if v.seq == seq:
                return v
        raise LedgerError(f"no incident {seq} (give the seq of its first incident entry)")

    # -- maintenance --------------------------------------------------------------------------

    def add_maintenance(
        self,
        *,
        kind: str,
        start: datetime,
        end: datetime,
        notified_at: datetime,
        servers: Sequence[str] | Literal["all"],
        at: datetime,
        reason: str = "",
        by: str = "operator",
    ) -> Entry:
        """Declare a maintenance window; `notified_at` is when the customers were told."""
        if kind not in WINDOW_KINDS:
            raise LedgerError(f"kind must be one of {', '.join(WINDOW_KINDS)}, got {kind!r}")
        for name, t in (("start", start), ("end", end), ("notified_at", notified_at)):
            _whole_aware(name, t)
        if end <= start:
            raise LedgerError("the window's end must be after its start")
        if notified_at > at:
            raise LedgerError("notified_at is in the future: declare the window once notified")
        if servers != "all":
            servers = list(servers)
            if not servers:
                raise LedgerError('name at least one server, or "all"')
        return self.append(
            "maintenance", at,
            {"kind": kind, "start": ts(start), "end": ts(end), "notified_at": ts(notified_at),
             "servers": servers, "reason": reason, "by": by},
        )

    def maintenance_windows(self) -> list[WindowView]:
        """Declared windows, without those cancelled before they started."""
        out: dict[int, WindowView] = {}
        for e in self.entries(kinds=("maintenance",)):
            p = e.payload
            if e.ref_seq is not None:  # a cancellation
                if p.get("cancel"):
                    out.pop(e.ref_seq, None)
                continue
            servers = p["servers"]
            window = MaintenanceWindow(
                id=f"M{e.seq}",
                kind=p["kind"],
                start=parse_ts(p["start"]),
                end=parse_ts(p["end"]),
                notified_at=parse_ts(p["notified_at"]),
                servers="all" if servers == "all" else tuple(servers),
            )
            by, reason = str(p.get("by", "")), str(p.get("reason", ""))
            out[e.seq] = WindowView(e.seq, window, e.at, by, reason)
        return list(out.values())

    def cancel_maintenance(self, seq: int, at: datetime, *, by: str, reason: str) -> Entry:
        """Withdraw window `seq` before it starts (a new entry; the declaration stays).

        A window that has started has covered real time: correct its outages with reclassify.
        """
        view = next((w for w in self.maintenance_windows() if w.seq == seq), None)
        if view is None:
            raise LedgerError(f"no maintenance window M{seq} (or it is already cancelled)")
        if at >= view.window.start:
            raise LedgerError(
                f"window M{seq} started at {ts(view.window.start)}: it cannot be cancelled; "
                "reclassify the outages it covered instead")
        if not reason.strip():
            raise LedgerError("say why the window is cancelled")
        return self.append("maintenance", at, {"cancel": True, "window": f"M{seq}",
                                               "reason": reason, "by": by}, ref_seq=seq)


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    # pysqlite's own BEGIN is deferred and issued lazily; we issue our own (see _sqlite_begin).
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys = ON")
    cur.close()


def _sqlite_begin(conn: Connection) -> None:
    # A writer takes the database write lock before it reads the head, so the head it reads is
    # the one it will advance; readers stay deferred and never block writers for long.
    write = conn.get_execution_options().get("ledger_write", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


# ---------------------------------------------------------------------------------------------
# The daemon's glue: polls and enforcement acts → tracker → ledger


def switch_observation(
    config: Config, poll: PortPoll, reports: Sequence[PortReport] = ()
) -> SwitchObservation:
    """What the tracker needs from one poll: every configured customer port on the switch."""
    by_server = {r.server.id: r for r in reports}
    answered = poll.error is None or poll.error == "partial" or bool(poll.ports)
    ports: list[PortObservation] = []
    for s in config.servers_on(poll.switch):
        report = by_server.get(s.id)
        if report is not None:
            ports.append(port_observation(s.id, report.sample))
            continue
        pc = poll.ports.get(s.port)
        ports.append(
            PortObservation(s.id, s.port, pc.oper, pc.admin, True)
            if pc is not None
            else PortObservation(s.id, s.port, answered=False)
        )
    return SwitchObservation(
        switch=poll.switch,
        at=poll.at,
        answered=answered,
        ports=tuple(ports),
        sys_uptime_ticks=poll.sys_uptime_ticks,
        engine_boots=poll.engine_boots,
        detail=f"{poll.error}: {poll.error_detail}" if poll.error and not answered else "",
    )


class OutageRecorder:
    """Feeds polls and enforcement acts to the pure tracker and appends its events.

    The daemon calls `on_poll` after each poll (with MeteringService's reports for the same
    poll, which add the traffic R12 needs); the enforcer calls `enforcement_started` once a
    shutdown is read back and `enforcement_ended` once a restore is. Constructor does no I/O;
    `start()` resumes the records a previous run left open.
    """

    def __init__(
        self, store: LedgerStore, config: Config, settings: TrackerSettings | None = None
    ) -> None:
        self._store = store
        self._config = config
        self._settings = settings
        self._tracker = OutageTracker(settings)
        self._seq_by_id: dict[str, int] = {}

    @property
    def tracker(self) -> OutageTracker:
        return self._tracker

    def start(self) -> None:
        opened: list[OpenOutage] = []
        for v in self._store.open_outages():
            state = v.state if v.state else "oper_down"
            cause = v.cause or v.recorded_cause
            opened.append(OpenOutage(v.outage_id, v.server, v.switch or "", v.port or "",
                                     v.start, cause, _port_state(state)))
            self._seq_by_id[v.outage_id] = v.seq
        self._tracker.resume(opened)

    def reconfigure(self, config: Config) -> None:
        self._config = config

    def restart(self) -> None:
        """Forget what this process believed and re-read the open records: after taking a
        switch over from another agent, the shared ledger is the truth, not our stale view."""
        self._tracker = OutageTracker(self._settings)
        self._seq_by_id = {}
        self.start()

    def _record(self, events: Sequence[OutageEvent]) -> list[Entry]:
        # One transaction per poll or act: a crash never leaves half of a poll's events.
        entries = self._store.record_events(events, self._seq_by_id)
        for ev, entry in zip(events, entries, strict=True):
            if isinstance(ev, OutageStart):
                self._seq_by_id[ev.outage_id] = entry.seq
            elif isinstance(ev, OutageEnd):
                self._seq_by_id.pop(ev.outage_id, None)
        return entries

    def on_poll(self, poll: PortPoll, reports: Sequence[PortReport] = ()) -> list[Entry]:
        return self._record(self._tracker.observe(switch_observation(self._config, poll, reports)))

    def _server(self, server_id: str) -> ServerConfig:
        for s in self._config.servers:
            if s.id == server_id:
                return s
        raise LedgerError(f"no server {server_id!r} in the configuration")

    def enforcement_started(
        self, server_id: str, at: datetime, cause: str, evidence: Mapping[str, Any] | None = None
    ) -> list[Entry]:
        s = self._server(server_id)
        return self._record(self._tracker.enforcement_started(
            s.id, s.switch, s.port, at, cause, MappingProxyType(dict(evidence or {}))))

    def enforcement_ended(
        self, server_id: str, at: datetime, evidence: Mapping[str, Any] | None = None
    ) -> list[Entry]:
        return self._record(self._tracker.enforcement_ended(
            server_id, at, MappingProxyType(dict(evidence or {}))))


def _port_state(state: str) -> PortState:
    for s in PORT_STATES:
        if s == state:
            return s
    raise LedgerError(f"stored outage state {state!r} is unknown")


# ---------------------------------------------------------------------------------------------
# SLA per server and month, from the ledger through policies/sla.py (no credit math here)


def _neutral_template(name: str) -> CreditTemplate:
    # Seconds by class are still reported for a contract without a credit rule; it earns nothing.
    return CreditTemplate(
        name=f"{name} (no credit rule)",
        kind="extension_time",
        creditable_classes=frozenset(),
        multiplier=Fraction(1),
        window_rules=(WindowRule("planned", 0, "maintenance"),
                      WindowRule("cutover", 0, "maintenance")),
    )


@dataclass(frozen=True, slots=True)
class OutageInMonth:
    view: OutageView
    seconds_by_class: Mapping[str, int]  # this record's seconds in the month by class

    @property
    def seconds(self) -> int:
        return sum(self.seconds_by_class.values())

    @property
    def class_in_month(self) -> str:
        """The class the engine gave its seconds (windows applied): one class, "mixed", or the
        ledger's class when it has no seconds here. A cause of planned_work shows as
        maintenance only where a window with notice covers it."""
        present = [c for c, n in self.seconds_by_class.items() if n]
        if not present:
            return self.view.outage_class
        return present[0] if len(present) == 1 else "mixed"


@dataclass(frozen=True, slots=True)
class ServerSla:
    """One server's month: the engine's result plus the ledger outages behind it."""

    server: ServerConfig
    period: str
    timezone: str
    credit_template: str | None  # None: the contract template has no credit rule
    month: ServerMonth
    outages: tuple[OutageInMonth, ...]
    paid_total_fen: int | None
    notes: tuple[str, ...] = ()

    @property
    def unresolved(self) -> tuple[OutageInMonth, ...]:
        return tuple(o for o in self.outages if o.view.outage_class == "unknown")

    @property
    def credit_fen(self) -> int | None:
        if self.credit_template is None or self.month.template.kind != "fee_multiple":
            return None
        return int(self.month.credit_fen)

    @property
    def extension_s(self) -> int | None:
        if self.credit_template is None or self.month.template.kind != "extension_time":
            return None
        return int(self.month.extension_s)


def server_sla(
    config: Config,
    server: ServerConfig,
    outages: Sequence[OutageView],
    windows: Sequence[MaintenanceWindow],
    period: str,
    now: datetime,
    paid_total_fen: int | None = None,
    templates: Mapping[str, CreditTemplate] = BUILTIN_TEMPLATES,
) -> ServerSla:
    """Runs policies/sla.py for one server-month over the ledger's current view."""
    tz_name = config.templates[server.template].timezone
    tz = contract_timezone(tz_name)
    template = templates.get(server.template)
    has_rule = template is not None
    notes: list[str] = []
    if template is None:
        notes.append(f"contract template {server.template!r} has no credit rule "
                     f"(known: {', '.join(templates)}): seconds only")
        template = _neutral_template(server.template)
    elif template.cap_paid_total and paid_total_fen is None:
        notes.append("paid-total cap (R20) not applied: no paid total given (--paid-total)")
        template = replace(template, cap_paid_total=False)
    mine = [v for v in outages if v.server == server.id]
    records = [r for r in (v.record(now) for v in mine) if r is not None]
    contract = ServerContract(server.id, template, server.monthly_fee_fen, paid_total_fen or 0)
    m_start, m_end = month_bounds(period, tz)
    if paid_total_fen is not None and records:
        # R20 caps the running total: earlier months' credits come from the same engine.
        first = min(r.start for r in records)
        periods = periods_between(min(first, m_start), m_end, tz)
        month = server_months(contract, records, windows, periods, tz)[-1]
    else:
        month = server_month(contract, records, windows, period, tz)
    per_record: dict[str, dict[str, int]] = {}
    for part in month.parts:
        for seg in part.segments:
            for rid in seg.records:
                cls = per_record.setdefault(rid, {c: 0 for c in CLASSES})
                cls[seg.outage_class] += seg.seconds
    in_month = tuple(
        OutageInMonth(v, MappingProxyType(per_record.get(f"#{v.seq}", {c: 0 for c in CLASSES})))
        for v in mine
        if v.start < m_end and v.end_or(now) > m_start
    )
    return ServerSla(server, period, tz_name, template.name if has_rule else None, month,
                     in_month, paid_total_fen, tuple(notes))


def sla_report(
    store: LedgerStore,
    config: Config,
    period: str,
    now: datetime,
    *,
    customer: str | None = None,
    paid_totals: Mapping[str, int] | None = None,
) -> list[ServerSla]:
    """Every configured server (of one customer) for one month, in config order."""
    windows = [w.window for w in store.maintenance_windows()]
    outages = store.outages(now=now)
    paid = paid_totals or {}
    return [
        server_sla(config, s, outages, windows, period, now, paid.get(s.id))
        for s in config.servers
        if customer is None or s.customer == customer
    ]


@dataclass(frozen=True, slots=True)
class LedgerMetrics:
    """Values for rackwarden_outage_seconds_total{server,cause}, rackwarden_sla_credit_fen{server}
    and rackwarden_unknown_outage_seconds; agent/metrics.py owns the names."""

    outage_seconds: Mapping[tuple[str, str], int]
    credit_fen: Mapping[str, int]
    unknown_seconds: int
    # (rule, check, "pending" | "overdue"): R13/R19 obligations not yet done
    deadlines_open: Mapping[tuple[str, str, str], int] = field(
        default_factory=lambda: MappingProxyType({}))


def ledger_metrics(store: LedgerStore, config: Config, now: datetime) -> LedgerMetrics:
    """Outage seconds by the cause recorded at the start (so the counter only grows, whatever
    later reclassification says), this month's credit of fee-based contracts, the seconds
    of outages still of class unknown, and the R13/R19 obligations still open."""
    views = store.outages(now=now)
    seconds: dict[tuple[str, str], int] = {}
    for v in views:
        key = (v.server, v.recorded_cause)
        seconds[key] = seconds.get(key, 0) + max(0, v.seconds(now))
    windows = [w.window for w in store.maintenance_windows()]
    credit: dict[str, int] = {}
    for s in config.servers:
        tz = contract_timezone(config.templates[s.template].timezone)
        period = now.astimezone(tz).strftime("%Y-%m")
        sla = server_sla(config, s, views, windows, period, now)
        if sla.credit_fen is not None:
            credit[s.id] = sla.credit_fen
    unknown = sum(v.seconds(now) for v in views if v.outage_class == "unknown")
    open_: dict[tuple[str, str, str], int] = {}
    for f in deadline_findings(store, config, now, views=views):
        if f.done_at is None:
            key = (f.rule, f.check, "overdue" if f.status == "breached" else "pending")
            open_[key] = open_.get(key, 0) + 1
    return LedgerMetrics(MappingProxyType(seconds), MappingProxyType(credit), unknown,
                         MappingProxyType(open_))


def deadline_findings(
    store: LedgerStore,
    config: Config,
    now: datetime,
    terms: Mapping[str, RepairTerms] = REPAIR_TERMS,
    views: Sequence[OutageView] | None = None,
) -> list[Finding]:
    """R13 for every incident, R19 for every provider outage of a contract with repair terms.

    An R19 fault counts as repaired at its `resolve` entry, else when the port forwarded
    again (the outage's end). Customer, maintenance and excluded time carry no repair duty;
    unknown time is the RackWardenUnknownOutage alert's business until it is classified.
    `views` are the store's outages at `now` when the caller already has them.
    """
    out = [check_incident_report(v.incident_id, v.detected_at, v.reported_at, now)
           for v in store.incidents()]
    servers = {s.id: s for s in config.servers}
    for v in store.outages(now=now) if views is None else views:
        server = servers.get(v.server)
        if v.outage_class != "provider" or server is None or server.template not in terms:
            continue
        out.extend(check_repair(f"#{v.seq}", terms[server.template], v.start, now,
                                acknowledged_at=v.acknowledged_at, on_site_at=v.on_site_at,
                                resolved_at=v.resolved_at or v.end))
    return out


def default_url(config: Config) -> str:
    """The config's ledger: agent.ledger_url when shared, else sqlite:///{state_dir}/ledger.sqlite."""
    return config.agent.ledger_database()


__all__ = [
    "ENTRY_KINDS",
    "GENESIS_HASH",
    "IncidentView",
    "MIGRATIONS",
    "RECLASS_TARGETS",
    "SCHEMA_VERSION",
    "ClassChange",
    "Entry",
    "Head",
    "LedgerError",
    "LedgerMetrics",
    "LedgerStore",
    "NewEntry",
    "OutageInMonth",
    "OutageRecorder",
    "OutageView",
    "ServerSla",
    "VerifyResult",
    "WindowView",
    "canonical",
    "migrate",
    "deadline_findings",
    "default_url",
    "entry_hash",
    "ledger_metrics",
    "server_sla",
    "sla_report",
    "switch_observation",
]
