"""LedgerStore: the append-only, hash-chained SQL ledger's connection, appends, reads and views.

SQLite file by default, PostgreSQL by URL (shared deployments), through SQLAlchemy Core. Nothing
is ever updated or deleted: a correction is a new entry whose `ref_seq` names the entry it
corrects, and every query folds the log in sequence order (views.py). What each act appends is
built and checked in entries.py; the chain's form and check are in chain.py.

Concurrency. Appends are serialised on the head: PostgreSQL takes `SELECT … FOR UPDATE` on the
head row; SQLite starts write transactions with `BEGIN IMMEDIATE` (the database write lock) and
waits up to `busy_timeout_s` for it. Either way seq n+1 is computed from a head nobody else can
move until commit, so two writers can never fork the chain.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from rackwarden.policies.outages import OutageEvent, whole_second
from sqlalchemy import create_engine, event, insert, select, update
from sqlalchemy.engine import Connection, Engine, make_url

from ..clock import SystemClock
from . import entries as acts
from .chain import (
    ENTRY_KINDS,
    REFERS_TO_OUTAGE,
    Entry,
    Head,
    LedgerError,
    NewEntry,
    StoredRow,
    VerifyResult,
    canonical,
    check_exact,
    entry_hash,
    parse_ts,
    ts,
    verify_chain,
)
from .schema import ledger_entries, ledger_head, migrate, schema_version
from .views import (
    IncidentView,
    OutageView,
    RestrictionView,
    WindowView,
    fold_incidents,
    fold_outages,
    fold_restrictions,
    fold_windows,
)


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
        return self._append(NewEntry(kind, at, payload, server, ref_seq))

    def _append(self, item: NewEntry) -> Entry:
        return self.append_many([item])[0]

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A write transaction a caller can share: the enforcer commits an action record, its
        ladder rung and the outage entries it causes in one (agent/actions.py shares this
        database)."""
        with self._write() as conn:
            yield conn

    def append_many(self, items: Sequence[NewEntry], conn: Connection | None = None) -> list[Entry]:
        """Append entries in one transaction (the caller's `conn` when given): all or none."""
        for it in items:
            if it.kind not in ENTRY_KINDS:
                raise LedgerError(
                    f"unknown entry kind {it.kind!r}; known: {', '.join(ENTRY_KINDS)}"
                )
            check_exact(dict(it.payload), "")
            if it.server is not None and not (0 < len(it.server) <= 64):
                raise LedgerError(f"server id {it.server!r} must be 1 to 64 characters")
        if conn is not None:
            return self._append_on(conn, items)
        with self._write() as own:
            return self._append_on(own, items)

    def _append_on(self, conn: Connection, items: Sequence[NewEntry]) -> list[Entry]:
        out: list[Entry] = []
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
    def _row(row: Any) -> StoredRow:
        return StoredRow(int(row.seq), row.at, row.kind, row.server,
                         None if row.ref_seq is None else int(row.ref_seq), row.payload,
                         row.prev_hash, row.hash)

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
            return [self._row(r).entry() for r in conn.execute(q)]

    def entry(self, seq: int) -> Entry | None:
        with self._read() as conn:
            row = conn.execute(select(ledger_entries).where(ledger_entries.c.seq == seq)).first()
        return None if row is None else self._row(row).entry()

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
        return verify_chain([self._row(r) for r in rows], head, expect_head)

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
        views = fold_outages(self.entries(server=server, kinds=kinds))
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
            if e.ref_seq is None or e.kind not in REFERS_TO_OUTAGE:
                raise LedgerError(f"entry {seq} is a {e.kind}, not an outage")
            return self.outage(e.ref_seq)
        for v in self.outages(server=e.server):
            if v.seq == seq:
                return v
        raise LedgerError(f"outage {seq} not found")  # pragma: no cover - fold keeps every start

    def restrictions(self, server: str | None = None, conn: Connection | None = None) -> list[RestrictionView]:
        """Throttles and service blocks, each with its end (None while in force). `conn`: read
        inside the caller's transaction (the enforcer's, before it appends an end)."""
        q = select(ledger_entries).where(ledger_entries.c.kind.in_(["restriction_start", "restriction_end"]))
        if server is not None:
            q = q.where(ledger_entries.c.server == server)
        q = q.order_by(ledger_entries.c.seq)
        if conn is None:
            with self._read() as c:
                rows = c.execute(q).all()
        else:
            rows = conn.execute(q).all()
        return fold_restrictions(self._row(r).entry() for r in rows)

    def open_restriction(self, server: str, kind: str, conn: Connection | None = None) -> int | None:
        """The seq of the server's latest `restriction_start` of `kind` with no `restriction_end`."""
        open_ = [r.seq for r in self.restrictions(server, conn) if r.kind == kind and r.end is None]
        return max(open_) if open_ else None

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
        self, events: Sequence[OutageEvent], open_seqs: Mapping[str, int] | None = None,
        conn: Connection | None = None,
    ) -> list[Entry]:
        """Append a batch of tracker events (one poll's, say) in one transaction.

        An end or cause change refers to its record's outage_start: one earlier in the same
        batch, else `open_seqs[outage_id]`, else the latest outage_start with that id.
        """
        known = open_seqs or {}
        items = acts.outage_event_entries(
            events, lambda ev: known.get(ev.outage_id) or self._start_seq(ev.server, ev.outage_id))
        return self.append_many(items, conn) if items else []

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
        What may be asked and what is recorded: policies/sla.py `reclassification`.
        """
        if not reason.strip():
            raise LedgerError("a reclassification needs a reason (--reason)")
        view = self.outage(seq)
        return self._append(acts.reclassify_entry(
            view, outage_class, reason, at, by=by, false_positive=false_positive, cause=cause))

    def note_outage(self, kind: Literal["ack", "on_site", "resolve"], seq: int, at: datetime,
                    *, by: str, note: str = "", when: datetime | None = None) -> Entry:
        """R19: someone answered, arrived on site, or repaired the fault of outage `seq`.

        `when` is when that happened (default `at`, when it is recorded); it may be earlier.
        """
        view = self.outage(seq)
        return self._append(acts.note_entry(kind, view, at, by=by, note=note, when=when))

    # -- incidents (R13) ---------------------------------------------------------------------

    def add_incident(self, *, summary: str, detected_at: datetime, at: datetime, by: str,
                     server: str | None = None, reported_at: datetime | None = None) -> Entry:
        """Record a major security incident; `reported_at` when it was reported to the
        authorities and customers (R13: within 24 h of detection), if it already was."""
        return self._append(acts.incident_entry(
            summary=summary, detected_at=detected_at, at=at, by=by, server=server,
            reported_at=reported_at))

    def report_incident(self, seq: int, reported_at: datetime, at: datetime, *, by: str,
                        note: str = "") -> Entry:
        """Record that incident `seq` has been reported (a new entry referring to it)."""
        view = self.incident(seq)
        return self._append(acts.incident_report_entry(view, reported_at, at, by=by,
                                                            note=note))

    def incidents(self) -> list[IncidentView]:
        """Every incident, by seq, with its report time folded in."""
        return fold_incidents(self.entries(kinds=("incident",)))

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
        return self._append(acts.maintenance_entry(
            kind=kind, start=start, end=end, notified_at=notified_at, servers=servers, at=at,
            reason=reason, by=by))

    def maintenance_windows(self) -> list[WindowView]:
        """Declared windows, without those cancelled before they started; each window's
        `declared_at` is its ledger time (views.py `LedgerClock`, hence every entry is read)."""
        return fold_windows(self.entries())

    def cancel_maintenance(self, seq: int, at: datetime, *, by: str, reason: str) -> Entry:
        """Withdraw window `seq` before it starts (a new entry; the declaration stays).

        A window that has started has covered real time: correct its outages with reclassify.
        """
        view = next((w for w in self.maintenance_windows() if w.seq == seq), None)
        return self._append(acts.cancel_maintenance_entry(seq, view, at, by=by,
                                                               reason=reason))


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
