"""Enforcement records: intents before the switch is touched, their outcome, the audit trail, ladder state, holds.

These tables live in the ledger's database (one SQLite file, or the shared PostgreSQL): a
port's enforcement state is written once, in one transaction with the ladder rung and the
ledger's outage entry (see `transaction()` and agent/enforcer.py), so the three never disagree.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from rackwarden.agent.sqlstore import SqlStore
from rackwarden.policies.ladder import Evidence, Restriction, Rung
from sqlalchemy import (
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    delete,
    func,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine

metadata = MetaData()
actions = Table(
    "actions", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key", String(200), nullable=False, unique=True),  # idempotency key
    Column("server", String(64), nullable=False),
    Column("switch", String(64), nullable=False),
    Column("port", String(64), nullable=False),
    Column("reason", String(32), nullable=False),
    Column("action", String(16), nullable=False),  # shut | restore
    Column("mode", String(16), nullable=False),  # enforce | notify
    Column("state", String(16), nullable=False),  # PENDING APPLIED FAILED UNKNOWN DRYRUN
    Column("created_at", String(40), nullable=False),
    Column("updated_at", String(40), nullable=False),
    Column("detail", Text, nullable=False, default="{}"),
)
audit = Table(
    "audit", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", String(40), nullable=False),
    Column("server", String(64), nullable=False),
    Column("reason", String(32), nullable=False),
    Column("decision", String(32), nullable=False),
    Column("mode", String(16), nullable=False),
    Column("actor", String(64), nullable=False),
    Column("rule", Text, nullable=False),
    Column("inputs", Text, nullable=False),
    Column("before", String(32), nullable=False),
    Column("after", String(32), nullable=False),
    Column("result", Text, nullable=False),
)
rungs = Table(
    "rungs", metadata,
    Column("server", String(64), primary_key=True),
    Column("reason", String(32), primary_key=True),
    Column("state", Text, nullable=False),
)
holds = Table(
    "holds", metadata,
    Column("server", String(64), primary_key=True),
    Column("until", String(40), nullable=False),
    Column("note", Text, nullable=False),
    Column("by", String(64), nullable=False),
)
breakers = Table(
    "breakers", metadata,
    Column("switch", String(64), primary_key=True),
    Column("at", String(40), nullable=False),
    Column("why", Text, nullable=False),
)
notices = Table(
    "notices", metadata,
    Column("key", String(200), primary_key=True),
    Column("server", String(64), nullable=False),
    Column("at", String(40), nullable=False),
    Column("delivered", Integer, nullable=False),
    Column("detail", Text, nullable=False),
    Column("latency_s", Float, nullable=True),
)

ACTION_STATES = ("PENDING", "APPLIED", "FAILED", "UNKNOWN", "DRYRUN")


@dataclass(frozen=True)
class ActionRow:
    id: int
    key: str
    server: str
    switch: str
    port: str
    reason: str
    action: str
    mode: str
    state: str
    created_at: str
    updated_at: str
    detail: dict[str, Any]


def _dt(v: str | None) -> datetime | None:
    return datetime.fromisoformat(v) if v else None


def _restriction(d: dict[str, Any] | None) -> Restriction | None:
    if not d:
        return None
    return Restriction(d["kind"], rate_bps=d.get("rate_bps"), service=d.get("service"))


def rung_to_json(r: Rung) -> str:
    d = asdict(r)
    for k in ("noticed_at", "shut_at", "until", "restored_at", "restricted_at"):
        d[k] = d[k].isoformat() if d[k] else None
    d["repeats"] = [t.isoformat() for t in r.repeats]
    return json.dumps(d, sort_keys=True, ensure_ascii=False)


def rung_from_json(text: str) -> Rung:
    d = json.loads(text)
    ev = d.get("evidence")
    return Rung(
        server=d["server"], reason=d["reason"], phase=d["phase"], episode=d["episode"],
        noticed_at=_dt(d["noticed_at"]), notice=d["notice"], shut_at=_dt(d["shut_at"]),
        until=_dt(d["until"]), repeats=tuple(datetime.fromisoformat(t) for t in d["repeats"]),
        restore_requested=d["restore_requested"], restored_at=_dt(d.get("restored_at")),
        attack=bool(d.get("attack", False)),
        restriction=_restriction(d.get("restriction")), restricted_at=_dt(d.get("restricted_at")),
        restriction_failed=bool(d.get("restriction_failed", False)),
        evidence=Evidence(ev["rule"], ev["summary"], tuple((str(f[0]), f[1]) for f in ev["figures"]),
                          tuple(ev["refs"])) if ev else None,
    )


class ActionStore(SqlStore):
    """Constructor does no I/O; start() connects (or joins the ledger's engine) and creates the tables.

    Every write takes an optional `conn`: given, it joins the caller's transaction (the
    enforcer commits a rung, its action and the ledger's outage entry together); absent, it
    is a transaction of its own.
    """

    metadata = metadata

    def start(self, engine: Engine | None = None) -> None:
        """Connect; with `engine` (the ledger's), share its database and its transactions."""
        if engine is None:
            super().start()
            return
        self._engine = engine
        self._shared = True
        self.metadata.create_all(engine)

    def close(self) -> None:
        if not getattr(self, "_shared", False):
            super().close()

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One write transaction (on SQLite the ledger's engine makes it BEGIN IMMEDIATE)."""
        with self.engine.connect() as c:
            c.execution_options(ledger_write=True)
            with c.begin():
                yield c

    @contextmanager
    def _tx(self, conn: Connection | None) -> Iterator[Connection]:
        if conn is not None:
            yield conn
        else:
            with self.transaction() as c:
                yield c

    def absorb(self, legacy: Path) -> int:
        """Move the records of a separate `actions.sqlite` (written before the tables joined
        the ledger's database) into this one, once; returns the rows moved.

        Only into an empty store: the legacy file is renamed `*.merged` afterwards, so a
        second start finds nothing to do and nothing is copied twice.
        """
        if not legacy.exists():
            return 0
        with self.engine.connect() as c:
            if c.execute(select(func.count()).select_from(actions)).scalar_one():
                return 0
        old = create_engine(f"sqlite:///{legacy}")
        moved = 0
        try:
            names = set(inspect(old).get_table_names())
            with old.connect() as src, self.transaction() as dst:
                for table in metadata.sorted_tables:
                    if table.name not in names:
                        continue
                    rows = [dict(r._mapping) for r in src.execute(select(table))]
                    if rows:
                        dst.execute(insert(table), rows)
                        moved += len(rows)
        finally:
            old.dispose()
        legacy.rename(legacy.with_name(legacy.name + ".merged"))
        return moved

    # -- actions: written PENDING before the switch is touched -------------------------------

    def begin(self, *, key: str, server: str, switch: str, port: str, reason: str, action: str,
              mode: str, at: datetime, detail: dict[str, Any],
              conn: Connection | None = None) -> tuple[ActionRow, bool]:
        """Record an intent; (row, True) when new, (the existing row, False) for a repeat key."""
        state = "PENDING" if mode == "enforce" else "DRYRUN"
        with self._tx(conn) as c:
            # Looked up first, not left to the unique index: on PostgreSQL a failed insert
            # would abort the caller's whole transaction. (Two writers racing on one key can
            # only be two lease holders; the loser's transaction fails and is paged.)
            old = self._rows(select(actions).where(actions.c.key == key), c)
            if old:
                return old[0], False
            c.execute(insert(actions).values(
                key=key, server=server, switch=switch, port=port, reason=reason, action=action,
                mode=mode, state=state, created_at=at.isoformat(), updated_at=at.isoformat(),
                detail=json.dumps(detail, sort_keys=True, ensure_ascii=False)))
            return self._rows(select(actions).where(actions.c.key == key), c)[0], True

    def finish(self, key: str, state: str, at: datetime, detail: dict[str, Any],
               conn: Connection | None = None) -> None:
        assert state in ACTION_STATES
        with self._tx(conn) as c:
            rows = self._rows(select(actions).where(actions.c.key == key), c)
            merged = {**(rows[0].detail if rows else {}), **detail}
            c.execute(update(actions).where(actions.c.key == key).values(
                state=state, updated_at=at.isoformat(),
                detail=json.dumps(merged, sort_keys=True, ensure_ascii=False)))

    def _rows(self, q: Any, conn: Connection | None = None) -> list[ActionRow]:
        def read(c: Connection) -> list[ActionRow]:
            return [ActionRow(r.id, r.key, r.server, r.switch, r.port, r.reason, r.action, r.mode,
                              r.state, r.created_at, r.updated_at, json.loads(r.detail))
                    for r in c.execute(q)]

        if conn is not None:
            return read(conn)
        with self.engine.connect() as c:
            return read(c)

    def action(self, key: str) -> ActionRow | None:
        rows = self._rows(select(actions).where(actions.c.key == key))
        return rows[0] if rows else None

    def actions(self, server: str | None = None, state: str | None = None) -> list[ActionRow]:
        q = select(actions).order_by(actions.c.id)
        if server:
            q = q.where(actions.c.server == server)
        if state:
            q = q.where(actions.c.state == state)
        return self._rows(q)

    def last_action(self, server: str) -> ActionRow | None:
        rows = self._rows(select(actions).where(actions.c.server == server).order_by(actions.c.id.desc()).limit(1))
        return rows[0] if rows else None

    # -- audit: one record per decision, dry-run included -------------------------------------

    def audit(self, *, at: datetime, server: str, reason: str, decision: str, mode: str, actor: str,
              rule: str, inputs: dict[str, Any], before: str, after: str, result: str,
              conn: Connection | None = None) -> None:
        with self._tx(conn) as c:
            c.execute(insert(audit).values(
                at=at.isoformat(), server=server, reason=reason, decision=decision, mode=mode,
                actor=actor, rule=rule, inputs=json.dumps(inputs, sort_keys=True, ensure_ascii=False, default=str),
                before=before, after=after, result=result))

    def audit_rows(self, server: str | None = None) -> list[dict[str, Any]]:
        q = select(audit).order_by(audit.c.id)
        if server:
            q = q.where(audit.c.server == server)
        with self.engine.connect() as c:
            return [dict(r._mapping) | {"inputs": json.loads(r.inputs)} for r in c.execute(q)]

    # -- ladder state, holds, breakers, notices -----------------------------------------------

    def save_rung(self, r: Rung, conn: Connection | None = None) -> None:
        with self._tx(conn) as c:
            c.execute(delete(rungs).where(rungs.c.server == r.server, rungs.c.reason == r.reason))
            c.execute(insert(rungs).values(server=r.server, reason=r.reason, state=rung_to_json(r)))

    def load_rungs(self) -> list[Rung]:
        with self.engine.connect() as c:
            return [rung_from_json(r.state) for r in c.execute(select(rungs))]

    def set_hold(self, server: str, until: datetime, note: str, by: str) -> None:
        with self.transaction() as c:
            c.execute(delete(holds).where(holds.c.server == server))
            c.execute(insert(holds).values(server=server, until=until.isoformat(), note=note, by=by))

    def holds(self) -> dict[str, tuple[datetime, str, str]]:
        with self.engine.connect() as c:
            return {r.server: (datetime.fromisoformat(r.until), r.note, r.by) for r in c.execute(select(holds))}

    def open_breaker(self, switch: str, at: datetime, why: str) -> None:
        with self.transaction() as c:
            c.execute(delete(breakers).where(breakers.c.switch == switch))
            c.execute(insert(breakers).values(switch=switch, at=at.isoformat(), why=why))

    def close_breaker(self, switch: str) -> None:
        with self.transaction() as c:
            c.execute(delete(breakers).where(breakers.c.switch == switch))

    def breakers(self) -> list[tuple[str, datetime, str]]:
        with self.engine.connect() as c:
            return [(r.switch, datetime.fromisoformat(r.at), r.why) for r in c.execute(select(breakers))]

    def record_notice(self, key: str, server: str, at: datetime, delivered: bool, detail: str,
                      latency_s: float | None, conn: Connection | None = None) -> bool:
        """False when this notice key was already sent (a restart must not send it twice)."""
        with self._tx(conn) as c:
            if c.execute(select(notices.c.key).where(notices.c.key == key)).first() is not None:
                return False
            c.execute(insert(notices).values(key=key, server=server, at=at.isoformat(),
                                             delivered=int(delivered), detail=detail, latency_s=latency_s))
            return True

    def notice(self, key: str) -> tuple[bool, str] | None:
        with self.engine.connect() as c:
            r = c.execute(select(notices).where(notices.c.key == key)).first()
            return (bool(r.delivered), r.detail) if r else None
