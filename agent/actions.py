"""Enforcement records: intents before the switch is touched, their outcome, the audit trail, ladder state, holds."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from rackwarden.agent.sqlstore import SqlStore
from rackwarden.policies.ladder import Evidence, Rung
from sqlalchemy import (
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

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


def rung_to_json(r: Rung) -> str:
    d = asdict(r)
    for k in ("noticed_at", "shut_at", "until", "restored_at"):
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
        evidence=Evidence(ev["rule"], ev["summary"], tuple((str(f[0]), f[1]) for f in ev["figures"]),
                          tuple(ev["refs"])) if ev else None,
    )


class ActionStore(SqlStore):
    """SQLite by default; constructor does no I/O, start() connects and creates the tables."""

    metadata = metadata

    # -- actions: written PENDING before the switch is touched -------------------------------

    def begin(self, *, key: str, server: str, switch: str, port: str, reason: str, action: str,
              mode: str, at: datetime, detail: dict[str, Any]) -> tuple[ActionRow, bool]:
        """Record an intent; (row, True) when new, (the existing row, False) for a repeat key."""
        state = "PENDING" if mode == "enforce" else "DRYRUN"
        try:
            with self.engine.begin() as c:
                c.execute(insert(actions).values(
                    key=key, server=server, switch=switch, port=port, reason=reason, action=action,
                    mode=mode, state=state, created_at=at.isoformat(), updated_at=at.isoformat(),
                    detail=json.dumps(detail, sort_keys=True, ensure_ascii=False)))
            created = True
        except IntegrityError:
            created = False
        row = self.action(key)
        assert row is not None
        return row, created

    def finish(self, key: str, state: str, at: datetime, detail: dict[str, Any]) -> None:
        assert state in ACTION_STATES
        row = self.action(key)
        merged = {**(row.detail if row else {}), **detail}
        with self.engine.begin() as c:
            c.execute(update(actions).where(actions.c.key == key).values(
                state=state, updated_at=at.isoformat(),
                detail=json.dumps(merged, sort_keys=True, ensure_ascii=False)))

    def _rows(self, q: Any) -> list[ActionRow]:
        with self.engine.connect() as c:
            return [ActionRow(r.id, r.key, r.server, r.switch, r.port, r.reason, r.action, r.mode,
                              r.state, r.created_at, r.updated_at, json.loads(r.detail))
                    for r in c.execute(q)]

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
              rule: str, inputs: dict[str, Any], before: str, after: str, result: str) -> None:
        with self.engine.begin() as c:
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

    def save_rung(self, r: Rung) -> None:
        with self.engine.begin() as c:
            c.execute(delete(rungs).where(rungs.c.server == r.server, rungs.c.reason == r.reason))
            c.execute(insert(rungs).values(server=r.server, reason=r.reason, state=rung_to_json(r)))

    def load_rungs(self) -> list[Rung]:
        with self.engine.connect() as c:
            return [rung_from_json(r.state) for r in c.execute(select(rungs))]

    def set_hold(self, server: str, until: datetime, note: str, by: str) -> None:
        with self.engine.begin() as c:
            c.execute(delete(holds).where(holds.c.server == server))
            c.execute(insert(holds).values(server=server, until=until.isoformat(), note=note, by=by))

    def holds(self) -> dict[str, tuple[datetime, str, str]]:
        with self.engine.connect() as c:
            return {r.server: (datetime.fromisoformat(r.until), r.note, r.by) for r in c.execute(select(holds))}

    def open_breaker(self, switch: str, at: datetime, why: str) -> None:
        with self.engine.begin() as c:
            c.execute(delete(breakers).where(breakers.c.switch == switch))
            c.execute(insert(breakers).values(switch=switch, at=at.isoformat(), why=why))

    def close_breaker(self, switch: str) -> None:
        with self.engine.begin() as c:
            c.execute(delete(breakers).where(breakers.c.switch == switch))

    def breakers(self) -> list[tuple[str, datetime, str]]:
        with self.engine.connect() as c:
            return [(r.switch, datetime.fromisoformat(r.at), r.why) for r in c.execute(select(breakers))]

    def record_notice(self, key: str, server: str, at: datetime, delivered: bool, detail: str,
                      latency_s: float | None) -> bool:
        """False when this notice key was already sent (a restart must not send it twice)."""
        try:
            with self.engine.begin() as c:
                c.execute(insert(notices).values(key=key, server=server, at=at.isoformat(),
                                                 delivered=int(delivered), detail=detail, latency_s=latency_s))
            return True
        except IntegrityError:
            return False

    def notice(self, key: str) -> tuple[bool, str] | None:
        with self.engine.connect() as c:
            r = c.execute(select(notices).where(notices.c.key == key)).first()
            return (bool(r.delivered), r.detail) if r else None
