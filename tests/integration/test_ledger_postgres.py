"""The ledger's shared suite (tests/unit/test_ledger_sqlite.LedgerSuite) on a real PostgreSQL.

The module starts its own throwaway cluster (tests/integration/pg.py: initdb in a temp dir, a
private unix socket, stopped by PID) and gives every test a fresh schema in it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from rackwarden.agent.ledger import LedgerStore
from sqlalchemy import text

from tests.integration.pg import PgCluster
from tests.unit.test_ledger_sqlite import T0, LedgerSuite


@pytest.fixture(scope="module")
def pg_cluster() -> Iterator[PgCluster]:
    cluster = PgCluster()
    cluster.start()
    assert cluster.proc is not None and cluster.dir is not None
    pid, where = cluster.proc.pid, cluster.dir
    try:
        yield cluster
    finally:
        cluster.stop()
    # Stopped by its own PID, and nothing left behind.
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not where.exists()


@pytest.mark.lab
class TestLedgerPostgres(LedgerSuite):
    @pytest.fixture
    def ledger_url(self, pg_cluster: PgCluster) -> str:
        return pg_cluster.create_schema()

    def test_head_row_is_locked_for_update(self, store: LedgerStore) -> None:
        # The serialisation the chain relies on: while one transaction holds the head row,
        # another append waits instead of computing the same next seq.
        assert store.dialect == "postgresql"
        with store.engine.connect() as conn, conn.begin():
            conn.execute(text("SELECT seq FROM ledger_head WHERE id = 1 FOR UPDATE"))
            with store.engine.connect() as other, other.begin():
                other.execute(text("SET LOCAL lock_timeout = '200ms'"))
                with pytest.raises(Exception, match="lock timeout"):
                    other.execute(text("SELECT seq FROM ledger_head WHERE id = 1 FOR UPDATE"))
        store.append("note", T0, {"after": "unlock"})
        assert store.verify().ok

    def test_each_test_has_its_own_schema(self, store: LedgerStore, pg_cluster: PgCluster) -> None:
        other = LedgerStore(pg_cluster.create_database())
        other.start(T0)
        other.append("note", T0, {"n": 1})
        assert store.head().seq == 0 and other.head().seq == 1
        other.close()
