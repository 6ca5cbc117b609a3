"""Keeps 5-minute usage buckets for invoices and answers the monthly 95th percentile."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

from rackwarden.agent.sqlstore import SqlStore
from rackwarden.policies.billing import (
    BUCKET_S,
    BillingDirection,
    BucketPart,
    bucket_rate_bps,
    carried_out_octets,
    percentile_95,
)
from rackwarden.policies.metering import Baseline, Reading
from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, Text, delete, select
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

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


# The baseline each port's next delta is measured from, committed with the poll it billed: a
# restart resumes from exactly the bytes already billed, never re-billing or dropping an interval.
meter_baselines = Table(
    "meter_baselines",
    metadata,
    Column("switch", String(64), primary_key=True),
    Column("port", String(64), primary_key=True),
    Column("baseline", Text, nullable=False),
)


def baseline_to_json(b: Baseline) -> str:
    d = asdict(b)
    d["at"] = b.at.isoformat()
    if b.pending is not None:
        d["pending"]["at"] = b.pending.at.isoformat()
    return json.dumps(d, sort_keys=True)


def baseline_from_json(text: str) -> Baseline:
    d: dict[str, Any] = json.loads(text)
    p = d.pop("pending", None)
    pending = None if p is None else Reading(int(p["in_octets"]), int(p["out_octets"]), float(p["now"]),
                                             datetime.fromisoformat(p["at"]))
    return Baseline(**{**d, "at": datetime.fromisoformat(d["at"]), "pending": pending})


class UsageStore(SqlStore):
    """Accumulates bucket parts; constructor does no I/O, start() connects."""

    metadata = metadata

    def add(self, server: str, parts: list[BucketPart]) -> None:
        with self.engine.begin() as conn:
            self._add(conn, server, parts)

    def commit_poll(self, switch: str, parts: Mapping[str, list[BucketPart]],
                    baselines: Mapping[str, Baseline | None]) -> None:
        """One poll's billing and the baselines it leaves, in one transaction (MeteringService's
        `poll_sink`): after a crash the stored baselines are exactly those of the billed bytes."""
        with self.engine.begin() as conn:
            for server, ps in parts.items():
                self._add(conn, server, ps)
            for port, b in baselines.items():
                conn.execute(delete(meter_baselines).where(meter_baselines.c.switch == switch,
                                                           meter_baselines.c.port == port))
                if b is not None:
                    conn.execute(meter_baselines.insert().values(switch=switch, port=port,
                                                                 baseline=baseline_to_json(b)))

    def baselines(self) -> dict[tuple[str, str], Baseline]:
        with self.engine.connect() as conn:
            return {(r.switch, r.port): baseline_from_json(r.baseline)
                    for r in conn.execute(select(meter_baselines))}

    def _add(self, conn: Connection, server: str, parts: list[BucketPart]) -> None:
        pg = self.engine.dialect.name == "postgresql"
        if pg:
            # Imported here: the PostgreSQL dialect is 2 MB of RSS an agent on SQLite never needs.
            from sqlalchemy.dialects.postgresql import insert as pg_insert
        ins = pg_insert if pg else sqlite_insert
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

    def p95_bps(self, server: str, start: datetime, end: datetime, rule: BillingDirection,
                throttles: Sequence[tuple[datetime, datetime | None, int]] = ()) -> tuple[float | None, int]:
        """The 95th percentile rate and the number of buckets it was taken over."""
        rates = self.billed_rates(server, start, end, rule, throttles)
        return percentile_95(rates), len(rates)

    def billed_rates(self, server: str, start: datetime, end: datetime, rule: BillingDirection,
                     throttles: Sequence[tuple[datetime, datetime | None, int]] = ()) -> list[float]:
        """Each measured bucket's billable rate, in time order.

        `throttles` are the server's throttled periods (start, end or None while in force,
        rate): there the outbound octets count what was carried, not the demand the port's
        counter saw (policies/billing.carried_out_octets).
        """
        rates: list[float] = []
        for b, c, o, i in self.buckets(server, start, end):
            if c <= 0:
                continue
            b_end = b + timedelta(seconds=BUCKET_S)
            for t_start, t_end, rate in throttles:
                overlap = (min(b_end, t_end or b_end) - max(b, t_start)).total_seconds()
                if overlap > 0:
                    o = carried_out_octets(o, c, int(overlap * 1000), rate)
            rates.append(bucket_rate_bps(o, i, c, rule))
        return rates
