"""Keeps 5-minute usage buckets for invoices and answers the monthly 95th percentile."""

from __future__ import annotations

from datetime import UTC, datetime

from rackwarden.agent.sqlstore import SqlStore
from rackwarden.policies.billing import BillingDirection, BucketPart, bucket_rate_bps, percentile_95
from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

metadata = MetaData()
usage_5m = Table(
    "usage_5m",
    metadata,
    Column("server", String(64), primary_key=True),
    Column("bucket_start", BigInteger, primary_key=True),  # unix seconds, UTC, multiple of 300
    Column("covered_ms", Integer, nullable=False),
    Column("out_octets", BigInteger, nullable=False),  # what the server sent
    Column("in_octets", BigInteger, nullable=False),  # what it received
)


class UsageStore(SqlStore):
    """Accumulates bucket parts; constructor does no I/O, start() connects."""

    metadata = metadata

    def add(self, server: str, parts: list[BucketPart]) -> None:
        ins = pg_insert if self.engine.dialect.name == "postgresql" else sqlite_insert
        with self.engine.begin() as conn:
            for p in parts:
                stmt = ins(usage_5m).values(
                    server=server, bucket_start=int(p.bucket_start.timestamp()),
                    covered_ms=p.covered_ms, out_octets=p.out_octets, in_octets=p.in_octets,
                )
                stmt = stmt.on_conflict_do_update(
                    index_elements=["server", "bucket_start"],
                    set_={
                        "covered_ms": usage_5m.c.covered_ms + stmt.excluded.covered_ms,
                        "out_octets": usage_5m.c.out_octets + stmt.excluded.out_octets,
                        "in_octets": usage_5m.c.in_octets + stmt.excluded.in_octets,
                    },
                )
                conn.execute(stmt)

    def buckets(self, server: str, start: datetime, end: datetime) -> list[tuple[datetime, int, int, int]]:
        q = (
            select(usage_5m.c.bucket_start, usage_5m.c.covered_ms, usage_5m.c.out_octets, usage_5m.c.in_octets)
            .where(usage_5m.c.server == server)
            .where(usage_5m.c.bucket_start >= int(start.timestamp()))
            .where(usage_5m.c.bucket_start < int(end.timestamp()))
            .order_by(usage_5m.c.bucket_start)
        )
        with self.engine.connect() as conn:
            return [
                (datetime.fromtimestamp(b, tz=UTC), c, o, i)
                for b, c, o, i in conn.execute(q)
            ]

    def p95_bps(self, server: str, start: datetime, end: datetime, rule: BillingDirection) -> tuple[float | None, int]:
        """The 95th percentile rate and the number of buckets it was taken over."""
        rates = [bucket_rate_bps(o, i, c, rule) for _, c, o, i in self.buckets(server, start, end) if c > 0]
        return percentile_95(rates), len(rates)
