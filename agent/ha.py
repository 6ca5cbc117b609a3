"""Enforcement leases: one agent at a time changes a switch, by PostgreSQL session advisory locks.

Issue 6 "Scale beyond one host". Several agents (one per switch group or site, each with a
standby) share one PostgreSQL ledger. Before an agent touches a switch it must hold that
switch's lease: a session-level advisory lock `pg_try_advisory_lock(lease_key(switch))` taken
on one dedicated connection.

Why a session lock and not a row with an expiry: the lock lives exactly as long as the holder's
database session. A holder killed with -9 (or whose host dies) loses its socket, the server ends
the session and the lock frees with no timeout to tune and no clock to trust; a standby's
periodic `refresh()` then takes it. A holder that loses its connection forgets every lease at
once (fail closed) and reconnects with backoff; by then a standby usually holds the switch.

Keys. A switch name maps to a signed 64-bit integer: the first 8 bytes of
sha256("rackwarden.lease:" + name). Two names collide with probability about n²/2⁶⁵ (for
10 000 switches ≈ 3·10⁻¹²): practically impossible, and detectable: a lease refuses colliding
names among its own keys, and the status table `enforcement_leases` has a unique `lock_id`, so
an agent whose switch collides with another agent's switch is refused the lease (fail closed)
and says so in the log and in `collisions`. Advisory locks are scoped to the database, so all
agents of one deployment must use the same database (the ledger's); schemas do not separate
them.

The table `enforcement_leases(key, lock_id, holder, pid, since, renewed_at)` is for people
(`rackwarden status`, `lease_table()`): it is written on acquire and every renewal, and rows of
a dead holder stay behind until someone else takes the key. The lock, never the table, is the
truth; `confirm()` asks the server about the lock right before a switch change.

The gap that remains: a change confirmed a moment before the holder's session was lost runs to
its end (a switch has no fencing token). The holder gives up (fails closed) within
renew_s + timeout_s of losing the server, while the server keeps a silent TCP peer's session
(and so its locks) for at least `tcp_keepalives_idle` + 3 × 2 s, set longer than that here, so a
holder cut off from the database stops first and a standby starts second.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy.engine import make_url

if TYPE_CHECKING:  # psycopg is the optional [postgres] extra; LocalLease must import without it
    from psycopg import AsyncConnection

log = logging.getLogger("rackwarden.ha")

_KEY_PREFIX = b"rackwarden.lease:"
_U32 = 0xFFFFFFFF
# Serialises `CREATE TABLE IF NOT EXISTS` between agents starting together: concurrent
# creators of one table race on the catalog and one fails with a unique violation. Hashed under
# another prefix, so it is as unlikely to meet a switch's id as two switches are to meet.
_SETUP_LOCK = int.from_bytes(hashlib.sha256(b"rackwarden.lease-setup").digest()[:8], "big",
                             signed=True)

_DDL = """CREATE TABLE IF NOT EXISTS enforcement_leases (
    key TEXT NOT NULL PRIMARY KEY,
    lock_id BIGINT NOT NULL UNIQUE,
    holder TEXT NOT NULL,
    pid INTEGER NOT NULL,
    since TIMESTAMPTZ NOT NULL,
    renewed_at TIMESTAMPTZ NOT NULL
)"""
# Bigint advisory locks appear in pg_locks as classid = high 32 bits, objid = low 32 bits,
# objsubid = 1 (objsubid 2 is the two-int4 form, which we never use).
_MINE = """SELECT (classid::bigint << 32) | objid::bigint FROM pg_locks
    WHERE locktype = 'advisory' AND objsubid = 1 AND pid = pg_backend_pid() AND granted"""
_CONFIRM = """SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND classid = %s AND objid = %s
    AND objsubid = 1 AND pid = pg_backend_pid() AND granted"""
_TRY = "SELECT k, pg_try_advisory_lock(k) FROM unnest(%s::bigint[]) AS k"
# One statement: the CTE reads the row as it was before the upsert, so the log can name the
# holder we took the switch over from.
_ACQUIRE = """WITH prev AS (SELECT holder, renewed_at FROM enforcement_leases WHERE key = %(key)s)
    INSERT INTO enforcement_leases (key, lock_id, holder, pid, since, renewed_at)
    VALUES (%(key)s, %(lock_id)s, %(holder)s, pg_backend_pid(), now(), now())
    ON CONFLICT (key) DO UPDATE SET lock_id = EXCLUDED.lock_id, holder = EXCLUDED.holder,
        pid = EXCLUDED.pid, since = EXCLUDED.since, renewed_at = EXCLUDED.renewed_at
    RETURNING (SELECT holder FROM prev),
        (SELECT extract(epoch FROM now() - renewed_at) FROM prev)"""
_RENEW = """UPDATE enforcement_leases SET renewed_at = now()
    WHERE key = ANY(%s) AND pid = pg_backend_pid()"""
_RELEASE_ROWS = "DELETE FROM enforcement_leases WHERE key = ANY(%s) AND pid = pg_backend_pid()"
_TABLE = """SELECT e.key, e.lock_id, e.holder, e.pid, e.since, e.renewed_at, l.pid IS NOT NULL
    FROM enforcement_leases e LEFT JOIN pg_locks l ON l.locktype = 'advisory' AND l.objsubid = 1
        AND l.granted AND l.classid = oid((e.lock_id >> 32) & 4294967295)
        AND l.objid = oid(e.lock_id & 4294967295) AND l.pid = e.pid
        AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
    ORDER BY e.key"""


class LeaseError(Exception):
    """The lease cannot be set up as configured; the message says what to fix."""


# -- keys (pure) -----------------------------------------------------------------------------


def lease_key(name: str) -> int:
    """The advisory-lock id of a switch: stable across hosts, processes and Python versions."""
    digest = hashlib.sha256(_KEY_PREFIX + name.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def lock_parts(lock_id: int) -> tuple[int, int]:
    """(classid, objid) under which pg_locks shows a bigint advisory lock."""
    u = lock_id & 0xFFFF_FFFF_FFFF_FFFF
    return u >> 32, u & _U32


def from_parts(classid: int, objid: int) -> int:
    u = (classid << 32) | objid
    return u - (1 << 64) if u >= 1 << 63 else u


def key_ids(keys: Iterable[str]) -> dict[str, int]:
    """Lock ids of `keys`; refuses names that collide (never seen, but never silently shared)."""
    out: dict[str, int] = {}
    seen: dict[int, str] = {}
    for k in keys:
        if not k:
            raise LeaseError("a lease key (switch name) must not be empty")
        i = lease_key(k)
        if i in seen and seen[i] != k:
            raise LeaseError(f"switches {seen[i]!r} and {k!r} map to one lock id {i}: rename one")
        seen[i] = k
        out[k] = i
    return out


def backoff_s(failures: int, renew_s: float, max_s: float = 30.0, jitter: float = 0.0) -> float:
    """Delay before reconnect attempt `failures` (1, 2, …).

    It starts at 2 × renew_s, never below, so a standby refreshing every renew_s gets a chance
    at the lease before the agent that just lost its session can grab it back; it doubles up to
    max_s. `jitter` in [0, 1) only lengthens the delay (keeps that ordering) and spreads many
    agents reconnecting after a database restart.
    """
    base = renew_s * 2.0 ** max(1, failures)
    return min(max(max_s, 2.0 * renew_s), base) * (1.0 + 0.25 * jitter)


def conninfo(url: str) -> str:
    """A libpq URI from the ledger's SQLAlchemy URL (postgresql+psycopg://… → postgresql://…)."""
    u = make_url(url)
    if u.get_backend_name() != "postgresql":
        raise LeaseError(f"EnforcementLease needs a PostgreSQL URL, not {u.get_backend_name()!r}: "
                         "use LocalLease (or lease_for) for a single-host SQLite ledger")
    return u.set(drivername="postgresql").render_as_string(hide_password=False)


# -- the API the enforcer and wiring use -------------------------------------------------------


class Lease(Protocol):
    holder: str
    takeovers_total: int
    lost_total: int
    # Runs after each acquisition of a key this agent did not hold (the enforcer's take_over);
    # a lease that holds every key from the start never calls it.
    on_acquired: Callable[[str], Awaitable[None]] | None

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def refresh(self) -> None: ...
    def held(self, key: str) -> bool: ...
    async def confirm(self, key: str) -> bool: ...
    def set_keys(self, keys: Iterable[str]) -> None: ...
    @property
    def held_keys(self) -> frozenset[str]: ...
    @property
    def connected(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class LeaseRow:
    """One row of `enforcement_leases` as status shows it; `live` = the lock is really held."""

    key: str
    lock_id: int
    holder: str
    pid: int
    since: datetime
    renewed_at: datetime
    live: bool


class LocalLease:
    """A single host with a SQLite ledger: nothing is shared, so every key is always held."""

    def __init__(self, *, holder: str = "local", keys: Iterable[str] = ()) -> None:
        self.holder = holder
        self.keys = frozenset(keys)
        self.on_acquired: Callable[[str], Awaitable[None]] | None = None
        self.takeovers_total = 0
        self.lost_total = 0
        self.reconnects_total = 0
        self.collisions: tuple[str, ...] = ()

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def refresh(self) -> None:
        return None

    def held(self, key: str) -> bool:
        return True

    async def confirm(self, key: str) -> bool:
        return True

    def set_keys(self, keys: Iterable[str]) -> None:
        self.keys = frozenset(keys)

    @property
    def held_keys(self) -> frozenset[str]:
        return self.keys

    @property
    def connected(self) -> bool:
        return True


class EnforcementLease:
    """Leases on `keys` (switch names) for `holder`, on one dedicated autocommit session.

    The constructor does no I/O. `start()` connects (a wrong URL or refused login raises
    LeaseError), takes what is free and runs a refresh every renew_s until `stop()`.
    Metrics read the plain attributes: `held_keys`, `connected`, `takeovers_total` (keys taken
    after another holder had them), `lost_total` (held keys lost without releasing them),
    `reconnects_total`, `collisions`. `on_acquired(key)` runs after each acquisition.
    """

    def __init__(self, url: str, *, holder: str, keys: Iterable[str], renew_s: float = 2.0,
                 timeout_s: float = 5.0, max_backoff_s: float = 30.0,
                 on_acquired: Callable[[str], Awaitable[None]] | None = None) -> None:
        if renew_s <= 0 or timeout_s <= 0:
            raise LeaseError("renew_s and timeout_s must be positive seconds")
        if not holder:
            raise LeaseError("agent.ha.holder must name this agent (e.g. its host name)")
        self._conninfo = conninfo(url)
        self.holder = holder
        self.renew_s = renew_s
        self.timeout_s = timeout_s
        self.max_backoff_s = max_backoff_s
        # Called (as its own task, so a slow switch read-back never delays a renewal) after
        # each acquisition: the new holder reloads ladder state and reconciles that switch.
        self.on_acquired = on_acquired
        self._hooks: set[asyncio.Task[None]] = set()
        self._ids = key_ids(keys)
        self._held: set[str] = set()
        self._contended: set[str] = set()  # keys another session held when we tried
        self._refused: set[str] = set()  # collided with another agent's switch in the table
        self._conn: AsyncConnection[Any] | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock: asyncio.Lock | None = None  # created in start(): it binds to the running loop
        self._failures = 0
        self._retry_at = 0.0
        self._ever_connected = False
        self._rng = random.Random()
        self.takeovers_total = 0
        self.lost_total = 0
        self.reconnects_total = 0
        self.collisions: tuple[str, ...] = ()
        self.backend_pid: int | None = None

    # -- state without I/O -------------------------------------------------------------------

    def held(self, key: str) -> bool:
        """The last known state: cheap, for deciding whether to act at all. Before a switch
        change, ask `confirm()`."""
        return key in self._held

    @property
    def held_keys(self) -> frozenset[str]:
        return frozenset(self._held)

    @property
    def keys(self) -> frozenset[str]:
        return frozenset(self._ids)

    @property
    def connected(self) -> bool:
        return self._conn is not None

    def set_keys(self, keys: Iterable[str]) -> None:
        """A config reload changed the switches: the next refresh takes new ones and releases
        the ones no longer configured. Keys dropped here stop being held at once."""
        self._ids = key_ids(keys)
        self._held &= set(self._ids)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is not None:
            return
        self._lock = asyncio.Lock()
        async with self._lock:
            err = await self._connect()
        if err is not None:
            raise LeaseError(f"cannot open the lease session for {self.holder!r}: {err}; check "
                             "agent.ledger_url and that the server accepts this user")
        await self.refresh()
        self._task = asyncio.get_running_loop().create_task(self._run(),
                                                            name=f"lease-{self.holder}")

    async def stop(self) -> None:
        """Release every lease before returning, so a standby's next refresh takes them."""
        if self._lock is None:
            return
        # Under the lock, so the loop is never cancelled halfway through a query: a connection
        # left mid-statement could not run the explicit unlocks below.
        async with self._lock:
            if self._task is not None:
                self._task.cancel()
                try:
                    await self._task
                except asyncio.CancelledError:
                    pass
                self._task = None
            for hook in list(self._hooks):
                hook.cancel()
            conn, held = self._conn, sorted(self._held)
            self._held.clear()
            self._conn = None
            if conn is None:
                return
            try:
                if held:
                    ids = [self._ids[k] for k in held if k in self._ids]
                    await self._q(conn, _RELEASE_ROWS, (held,))
                    # Unlock explicitly: close() only sends Terminate, and the server frees the
                    # locks whenever its backend gets to exit; this way they are free on return.
                    await self._q(conn, "SELECT pg_advisory_unlock(k) FROM unnest(%s::bigint[]) k",
                                  (ids,))
                log.info("lease holder %s released %s", self.holder, ", ".join(held) or "nothing")
            except Exception as e:  # the close below frees them anyway, a moment later
                log.warning("lease holder %s: explicit release failed (%s); closing",
                            self.holder, e)
            finally:
                await self._close(conn)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self._conn is not None:
                await asyncio.sleep(self.renew_s)
            else:
                await asyncio.sleep(max(0.0, self._retry_at - loop.time()))
            if self._conn is None and loop.time() < self._retry_at:
                # A confirm() lost the session while we slept: honour its backoff, or this
                # agent would reconnect within renew_s and could beat the standby to the keys.
                continue
            try:
                await self.refresh()
            except Exception:  # the loop is the lease's life; a bug here must not end it
                log.exception("lease refresh of %s failed", self.holder)

    # -- the work ----------------------------------------------------------------------------

    async def refresh(self) -> None:
        """Reconnect if needed, check what we hold, try to take what we do not, renew rows."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._conn is None:
                err = await self._connect()
                if err is not None:
                    self._failed(f"reconnect failed: {err}")
                    return
            conn = self._conn
            assert conn is not None
            try:
                await self._renew(conn)
            except Exception as e:
                await self._drop(conn, f"{type(e).__name__}: {e}")
                return
            finally:
                if self._conn is not conn:  # a confirm() dropped the session meanwhile
                    self._held.clear()
            self._failures = 0

    def _hold(self, conn: AsyncConnection[Any], key: str) -> None:
        # Only the live session's answers count: a confirm() may have dropped `conn` while this
        # refresh awaited it, and a key added after that would be held with no session behind it.
        if self._conn is conn:
            self._held.add(key)

    async def _renew(self, conn: AsyncConnection[Any]) -> None:
        mine = {int(r[0]) for r in await self._q(conn, _MINE, fetch=True)}
        by_id = {i: k for k, i in self._ids.items()}
        for k in sorted(self._held):
            if self._ids.get(k) not in mine:
                # Someone ran pg_advisory_unlock_all() on us, or a bug: the server is the truth.
                self._held.discard(k)
                self.lost_total += 1
                log.error("lease on %s vanished from the session of %s: not enforcing there",
                          k, self.holder)
        for i in sorted(mine):
            name = by_id.get(i)
            if name is None and i != _SETUP_LOCK:
                # A switch removed by set_keys(): let the standby (or nobody) have it.
                await self._q(conn, "DELETE FROM enforcement_leases WHERE lock_id = %s "
                              "AND pid = pg_backend_pid()", (i,))
                await self._q(conn, "SELECT pg_advisory_unlock(%s)", (i,))
            elif name is not None and name not in self._held and name not in self._refused:
                self._hold(conn, name)  # ours on the server already (an acquire we lost track of)
        want = [self._ids[k] for k in sorted(self._ids)
                if k not in self._held and k not in self._refused]
        if want:
            for lock_id, got in await self._q(conn, _TRY, (want,), fetch=True):
                k = by_id[int(lock_id)]
                if got:
                    await self._acquired(conn, k, int(lock_id))
                else:
                    self._contended.add(k)
        if self._held:
            await self._q(conn, _RENEW, (sorted(self._held),))

    async def _acquired(self, conn: AsyncConnection[Any], key: str, lock_id: int) -> None:
        import psycopg

        try:
            rows = await self._q(conn, _ACQUIRE, {"key": key, "lock_id": lock_id,
                                                  "holder": self.holder}, fetch=True)
        except psycopg.errors.UniqueViolation:
            # Same lock id, another name: another agent's switch hashes like ours. Holding it
            # would let two agents believe they own one lock; refuse it and leave it free.
            await self._q(conn, "SELECT pg_advisory_unlock(%s)", (lock_id,))
            self._refused.add(key)
            self.collisions = tuple(sorted(self._refused))
            log.error("lease key collision: %s shares lock id %d with another agent's switch; "
                      "not enforcing on %s until one is renamed", key, lock_id, key)
            return
        self._hold(conn, key)
        if self.on_acquired is not None and key in self._held:
            task = asyncio.get_running_loop().create_task(self._hook(key))
            self._hooks.add(task)
            task.add_done_callback(self._hooks.discard)
        prev, age = rows[0] if rows else (None, None)
        # A takeover: we saw someone else hold it, or the status row names another holder (it
        # may have come and gone between two of our refreshes, or while we were reconnecting).
        if key in self._contended or (prev is not None and prev != self.holder):
            self._contended.discard(key)
            self.takeovers_total += 1
            log.warning("%s took over %s (last holder %s, renewed %s s before)", self.holder, key,
                        prev or "unknown", "?" if age is None else f"{float(age):.1f}")
        else:
            log.info("%s holds the lease on %s", self.holder, key)

    async def _hook(self, key: str) -> None:
        assert self.on_acquired is not None
        try:
            await self.on_acquired(key)
        except Exception:  # the enforcer's business; the lease stays held
            log.exception("on_acquired(%s) of %s failed", key, self.holder)

    async def confirm(self, key: str) -> bool:
        """Ask the server, right before a switch change, whether this session holds `key`.

        False when we do not think we hold it, when the server says we do not, or when the
        server cannot be asked in time; the last two also forget every lease at once.
        """
        conn = self._conn
        lock_id = self._ids.get(key)
        if conn is None or lock_id is None or key not in self._held:
            return False
        try:
            rows = await self._q(conn, _CONFIRM, lock_parts(lock_id), fetch=True)
        except Exception as e:
            await self._drop(conn, f"confirm of {key}: {type(e).__name__}: {e}")
            return False
        if not rows:
            if key in self._held:
                self._held.discard(key)
                self.lost_total += 1
            log.error("lease on %s not held by %s's session after all: refusing", key, self.holder)
            return False
        return True

    # -- connection --------------------------------------------------------------------------

    async def _connect(self) -> str | None:
        """Open and prepare the session; returns None or what went wrong."""
        import psycopg

        try:
            conn = await asyncio.wait_for(psycopg.AsyncConnection.connect(
                self._conninfo, autocommit=True, connect_timeout=max(2, math.ceil(self.timeout_s)),
                application_name=f"rackwarden-lease:{self.holder}"[:63],
                # Client side: notice a dead server on a quiet TCP link (unix sockets ignore it).
                keepalives=1, keepalives_idle=max(1, math.ceil(self.renew_s)),
                keepalives_interval=1, keepalives_count=3,
            ), self.timeout_s + 1.0)
        except (TimeoutError, psycopg.Error, OSError) as e:
            return f"{type(e).__name__}: {e}".strip()
        try:
            idle = math.ceil(self.renew_s + self.timeout_s) + 5
            for sql in (
                # Server side: free a vanished client's locks, but only after that client has
                # already given up on them (see the module docstring).
                f"SET tcp_keepalives_idle = {idle}",
                "SET tcp_keepalives_interval = 2",
                "SET tcp_keepalives_count = 3",
                f"SET statement_timeout = {math.ceil(self.timeout_s * 1000)}",
                "SET idle_in_transaction_session_timeout = 0",
            ):
                await self._q(conn, sql)
            try:
                # A site-wide idle_session_timeout would end this quiet session and its leases.
                await self._q(conn, "SET idle_session_timeout = 0")
            except psycopg.errors.UndefinedObject:
                pass  # PostgreSQL < 14 has no such timeout to fear
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SETUP_LOCK,))
                await conn.execute(_DDL)
        except Exception as e:
            await self._close(conn)
            return f"{type(e).__name__}: {e}"
        if self._ever_connected:
            self.reconnects_total += 1
            log.warning("lease session of %s reconnected", self.holder)
        self._ever_connected = True
        self._conn = conn
        self.backend_pid = conn.info.backend_pid
        return None

    async def _drop(self, conn: AsyncConnection[Any], why: str) -> None:
        # Forget first, await later: from here on held() is False for every key.
        if self._conn is not conn:
            return
        lost = sorted(self._held)
        self._held.clear()
        self._conn = None
        self.backend_pid = None
        self.lost_total += len(lost)
        self._failed(why)
        log.error("lease session of %s lost (%s): not enforcing on %s", self.holder, why,
                  ", ".join(lost) or "any switch")
        await self._close(conn)

    def _failed(self, why: str) -> None:
        self._failures += 1
        delay = backoff_s(self._failures, self.renew_s, self.max_backoff_s, self._rng.random())
        self._retry_at = asyncio.get_running_loop().time() + delay
        log.warning("lease session of %s: %s; next attempt in %.1f s", self.holder, why, delay)

    async def _q(self, conn: AsyncConnection[Any], sql: str,
                 params: Mapping[str, Any] | tuple[Any, ...] | None = None,
                 *, fetch: bool = False) -> list[Any]:
        async def run() -> list[Any]:
            cur = await conn.execute(sql.encode(), params)  # bytes: sql is built here, not by input
            return list(await cur.fetchall()) if fetch else []

        # Bounded: a server that stopped answering must cost us the lease, not hang the agent.
        return await asyncio.wait_for(run(), self.timeout_s)

    @staticmethod
    async def _close(conn: AsyncConnection[Any]) -> None:
        try:
            await asyncio.wait_for(conn.close(), 2.0)
        except Exception:  # already broken: the server ends the session on its own
            pass


def lease_for(url: str, *, holder: str, keys: Iterable[str], renew_s: float = 2.0,
              on_acquired: Callable[[str], Awaitable[None]] | None = None) -> Lease:
    """EnforcementLease for a shared PostgreSQL ledger, LocalLease for a single-host SQLite one
    (which holds every key from the start, so `on_acquired` never runs there)."""
    if make_url(url).get_backend_name() == "postgresql":
        return EnforcementLease(url, holder=holder, keys=keys, renew_s=renew_s,
                                on_acquired=on_acquired)
    return LocalLease(holder=holder, keys=keys)


async def lease_table(url: str, *, timeout_s: float = 5.0) -> list[LeaseRow]:
    """The `enforcement_leases` rows, each with whether its lock is live (`rackwarden status`)."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(
        conninfo(url), autocommit=True, connect_timeout=max(2, math.ceil(timeout_s))
    ) as conn:
        try:
            cur = await asyncio.wait_for(conn.execute(_TABLE.encode()), timeout_s)
        except psycopg.errors.UndefinedTable:
            return []  # no agent has taken a lease yet
        return [LeaseRow(r[0], int(r[1]), r[2], int(r[3]), r[4], r[5], bool(r[6]))
                for r in await cur.fetchall()]
