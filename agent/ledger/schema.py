"""The ledger's SQL schema and its migrations, each applied in the caller's write transaction.

Schema v2 adds triggers that refuse UPDATE and DELETE on entries, so mistakes fail loudly; the
hash chain (chain.py) is what catches a deliberate edit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, Text, insert, select, text
from sqlalchemy.engine import Connection

from .chain import GENESIS_HASH, LedgerError, ts

SCHEMA_VERSION = 2


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


