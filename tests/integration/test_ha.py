"""Enforcement leases on a real PostgreSQL: one holder per switch, takeover on kill -9, stop, drop.

The module starts its own throwaway cluster (tests/integration/pg.py: private unix socket,
stopped by PID); every test gets a fresh database, because advisory locks are scoped to a
database, not a schema. "Agents" are either two leases in this process or, where a process
must die, two child Python processes that hold a lease and print JSON status lines.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from rackwarden.agent.ha import EnforcementLease, conninfo, lease_key, lease_table, lock_parts
from rackwarden.agent.ledger import LedgerStore

from tests.integration.pg import PgCluster

KEYS = ("sw1", "sw2")
RENEW_S = 0.5
MARGIN_S = 4.5  # scheduling, a query round trip, the 10 ms watch loop, a loaded CI host (not keepalive)

# A child "agent": holds a lease on the keys, shares the ledger, prints a JSON line whenever
# the set of held keys changes and answers commands on stdin (confirm, append N, stop).
AGENT = r"""
import asyncio, json, sys, time
from datetime import UTC, datetime
from rackwarden.agent.ha import EnforcementLease
from rackwarden.agent.ledger import LedgerStore

async def main(url, holder, keys, renew_s):
    lease = EnforcementLease(url, holder=holder, keys=keys, renew_s=renew_s)
    store = LedgerStore(url)
    await asyncio.to_thread(store.start)
    await lease.start()
    def say(event, **kw):
        print(json.dumps({"event": event, "holder": holder, "t": time.monotonic(),
                          "held": sorted(lease.held_keys), "pid": lease.backend_pid, **kw}),
              flush=True)
    async def watch():
        last = None
        while True:
            now = sorted(lease.held_keys)
            if now != last:
                say("held")
                last = now
            await asyncio.sleep(0.01)
    watcher = asyncio.create_task(watch())
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    say("started")
    while line := await stdin.readline():
        cmd, *args = line.decode().split()
        if cmd == "confirm":
            say("confirm", confirmed={k: await lease.confirm(k) for k in keys})
        elif cmd == "append":
            for i in range(int(args[0])):
                await asyncio.to_thread(store.append, "note", datetime.now(UTC),
                                        {"holder": holder, "i": i})
            say("appended")
        elif cmd == "stop":
            break
    watcher.cancel()
    await lease.stop()
    store.close()
    say("stopped")

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3].split(","), float(sys.argv[4])))
"""


class Agent:
    """One child agent process; its JSON lines arrive on a queue, read by a thread."""

    def __init__(self, url: str, holder: str, renew_s: float = RENEW_S) -> None:
        self.holder = holder
        self.proc = subprocess.Popen(
            [sys.executable, "-c", AGENT, url, holder, ",".join(KEYS), str(renew_s)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            cwd=Path(__file__).resolve().parents[2],
        )
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.put(json.loads(raw))

    def send(self, cmd: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(cmd.encode() + b"\n")
        self.proc.stdin.flush()

    def wait(self, pred: Callable[[dict[str, Any]], bool],
             timeout_s: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            try:
                msg = self.lines.get(timeout=max(0.01, left))
            except queue.Empty:
                msg = None
            if msg is not None:
                self.seen.append(msg)
                if pred(msg):
                    return msg
            elif left <= 0 or self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.poll() is not None and \
                    self.proc.stderr else ""
                raise AssertionError(f"{self.holder}: no matching line in {timeout_s} s; "
                                     f"seen {self.seen[-5:]}; stderr {err[-2000:]}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)


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
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not where.exists()


@pytest.fixture
def url(pg_cluster: PgCluster) -> str:
    return pg_cluster.create_database()


@pytest.fixture
def agents() -> Iterator[list[Agent]]:
    started: list[Agent] = []
    try:
        yield started
    finally:
        for a in started:  # by PID, whatever state the test left them in
            a.kill()


def lock_owners(url: str) -> dict[str, list[int]]:
    """From a third session: which backend PIDs hold each key's advisory lock."""
    out: dict[str, list[int]] = {}
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        for k in KEYS:
            rows = conn.execute(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = %s "
                "AND objid = %s AND objsubid = 1 AND granted", lock_parts(lease_key(k))).fetchall()
            out[k] = sorted(int(r[0]) for r in rows)
    return out


def terminate(url: str, pid: int) -> None:
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        assert conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)


async def wait_until(pred: Callable[[], bool], timeout_s: float) -> float:
    """Seconds until pred() held; fails the test after timeout_s."""
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout_s:
            raise AssertionError(f"not within {timeout_s} s")
        await asyncio.sleep(0.005)
    return time.monotonic() - t0


@pytest.mark.lab
def test_exactly_one_holder_per_key(url: str) -> None:
    async def go() -> None:
        a = EnforcementLease(url, holder="agent-a", keys=KEYS, renew_s=RENEW_S)
        b = EnforcementLease(url, holder="agent-b", keys=KEYS, renew_s=RENEW_S)
        await asyncio.gather(a.start(), b.start())  # both race for both keys at once
        try:
            for _ in range(3):  # and keep racing: ownership must not flap between refreshes
                for k in KEYS:
                    assert a.held(k) != b.held(k), f"{k}: a={a.held(k)} b={b.held(k)}"
                    holder, standby = (a, b) if a.held(k) else (b, a)
                    assert await holder.confirm(k) is True
                    assert await standby.confirm(k) is False
                    assert lock_owners(url)[k] == [holder.backend_pid]
                await asyncio.gather(a.refresh(), b.refresh())
            rows = {r.key: r for r in await lease_table(url)}
            assert set(rows) == set(KEYS)
            for k in KEYS:
                assert rows[k].live and rows[k].holder == ("agent-a" if a.held(k) else "agent-b")
                assert rows[k].lock_id == lease_key(k)
            assert a.takeovers_total == b.takeovers_total == a.lost_total == b.lost_total == 0
        finally:
            await asyncio.gather(a.stop(), b.stop())

    asyncio.run(go())


@pytest.mark.lab
def test_kill_9_of_the_holder_hands_over_to_the_standby(url: str, agents: list[Agent]) -> None:
    a = Agent(url, "agent-a")
    agents.append(a)
    a_started = a.wait(lambda m: m["event"] == "started")
    b = Agent(url, "agent-b")
    agents.append(b)
    b_started = b.wait(lambda m: m["event"] == "started")
    assert a_started["held"] == list(KEYS) and b_started["held"] == []
    assert lock_owners(url) == {k: [a_started["pid"]] for k in KEYS}
    a.send("confirm")
    b.send("confirm")
    assert a.wait(lambda m: m["event"] == "confirm")["confirmed"] == {"sw1": True, "sw2": True}
    assert b.wait(lambda m: m["event"] == "confirm")["confirmed"] == {"sw1": False, "sw2": False}

    t0 = time.monotonic()
    os.kill(a.proc.pid, signal.SIGKILL)
    got = b.wait(lambda m: m["event"] == "held" and m["held"] == list(KEYS),
                 timeout_s=RENEW_S + MARGIN_S + 5)
    takeover_s = got["t"] - t0  # CLOCK_MONOTONIC is one clock for every process on the host
    print(f"\nkill -9 -> standby holds both keys: {takeover_s * 1000:.0f} ms "
          f"(renew_s {RENEW_S})")
    assert takeover_s < RENEW_S + MARGIN_S, takeover_s
    assert a.proc.wait(timeout=5) == -signal.SIGKILL
    assert lock_owners(url) == {k: [got["pid"]] for k in KEYS}
    b.send("confirm")
    assert b.wait(lambda m: m["event"] == "confirm")["confirmed"] == {"sw1": True, "sw2": True}
    b.send("stop")
    b.wait(lambda m: m["event"] == "stopped")
    assert b.proc.wait(timeout=5) == 0
    assert lock_owners(url) == {k: [] for k in KEYS}


@pytest.mark.lab
def test_graceful_stop_releases_at_once(url: str) -> None:
    async def go() -> None:
        acquired: list[tuple[str, bool]] = []

        async def reconcile(key: str) -> None:  # what the enforcer would do on a takeover
            acquired.append((key, await b.confirm(key)))

        a = EnforcementLease(url, holder="agent-a", keys=KEYS, renew_s=RENEW_S)
        b = EnforcementLease(url, holder="agent-b", keys=KEYS, renew_s=RENEW_S,
                             on_acquired=reconcile)
        await a.start()
        await b.start()
        try:
            assert a.held_keys == set(KEYS) and b.held_keys == frozenset() and acquired == []
            await a.stop()
            # Released before stop() returned: no lock and no row left, nobody holds it yet.
            assert lock_owners(url) == {k: [] for k in KEYS}
            assert await lease_table(url) == []
            assert not a.held("sw1") and not await a.confirm("sw1")
            took = await wait_until(lambda: b.held_keys == set(KEYS), RENEW_S + MARGIN_S)
            print(f"\ngraceful stop -> standby holds both keys: {took * 1000:.0f} ms")
            assert all([await b.confirm(k) for k in KEYS])
            await wait_until(lambda: len(acquired) == 2, 1.0)
            assert sorted(acquired) == [("sw1", True), ("sw2", True)]
            assert b.takeovers_total == 2 and a.lost_total == 0
            assert {r.holder for r in await lease_table(url)} == {"agent-b"}
        finally:
            await asyncio.gather(a.stop(), b.stop())

    asyncio.run(go())


@pytest.mark.lab
def test_connection_drop_fails_closed_and_the_standby_takes_over(url: str) -> None:
    async def go() -> None:
        a = EnforcementLease(url, holder="agent-a", keys=KEYS, renew_s=RENEW_S)
        b = EnforcementLease(url, holder="agent-b", keys=KEYS, renew_s=RENEW_S)
        await a.start()
        await b.start()
        try:
            # 1. Noticed by the refresh loop alone: held() turns False within one refresh.
            assert a.held_keys == set(KEYS) and a.backend_pid is not None
            await asyncio.to_thread(terminate, url, a.backend_pid)
            gone = await wait_until(lambda: a.held_keys == frozenset(), RENEW_S + MARGIN_S)
            assert a.lost_total == 2 and not a.connected
            await wait_until(lambda: b.held_keys == set(KEYS), RENEW_S + MARGIN_S)
            assert all([await b.confirm(k) for k in KEYS])
            assert lock_owners(url) == {k: [b.backend_pid] for k in KEYS}
            # The agent that lost its session comes back, as the standby (its backoff starts
            # at 2 × renew_s, so it never snatches the keys back before the standby's turn).
            await wait_until(lambda: a.connected, 4 * RENEW_S + MARGIN_S)
            await a.refresh()  # waits for the reconnecting refresh, then tries again itself
            assert a.reconnects_total == 1 and a.held_keys == frozenset()
            assert not await a.confirm("sw1")

            # 2. A stale in-memory view cannot enforce: confirm() asks the server, finds the
            # session gone and forgets every lease in the same call.
            assert b.backend_pid is not None
            await asyncio.to_thread(terminate, url, b.backend_pid)
            assert b.held("sw1")  # nothing has told b yet
            assert await b.confirm("sw1") is False
            assert b.held_keys == frozenset() and not b.connected and b.lost_total == 2
            back = await wait_until(lambda: a.held_keys == set(KEYS), RENEW_S + MARGIN_S)
            assert a.takeovers_total == 2 and all([await a.confirm(k) for k in KEYS])
            print(f"\nterminated session -> held() False after {gone * 1000:.0f} ms; "
                  f"confirm() refusal -> other agent holds both after {back * 1000:.0f} ms")
        finally:
            await asyncio.gather(a.stop(), b.stop())

    asyncio.run(go())


@pytest.mark.lab
def test_two_agents_share_one_ledger_chain(url: str, agents: list[Agent]) -> None:
    a, b = Agent(url, "agent-a"), Agent(url, "agent-b")
    agents += [a, b]
    for x in (a, b):
        x.wait(lambda m: m["event"] == "started")
    n = 40
    a.send(f"append {n}")
    b.send(f"append {n}")  # concurrently: both children append at once
    for x in (a, b):
        x.wait(lambda m: m["event"] == "appended", timeout_s=20)
    store = LedgerStore(url)
    store.start()
    try:
        v = store.verify()
        assert v.ok, v
        entries = store.entries(kinds=["note"])
        assert len(entries) == 2 * n and [e.seq for e in entries] == list(range(1, 2 * n + 1))
        by = [e.payload["holder"] for e in entries]
        assert by.count("agent-a") == by.count("agent-b") == n
        switches = sum(1 for x, y in zip(by, by[1:], strict=False) if x != y)
        print(f"\n{2 * n} appends from two agents, {switches} hand-offs between writers, chain ok")
    finally:
        store.close()
    for x in (a, b):
        x.send("stop")
        x.wait(lambda m: m["event"] == "stopped")
        assert x.proc.wait(timeout=5) == 0


HA_CONFIG = """\
agent: {{state_dir: "{state}", mode: enforce, ledger_url: "{url}", ha: {{holder: noc-a, renew_s: 0.5}}}}
templates:
  rental: {{cap_mbps: 10, credit: rental}}
switches:
{switches}
servers:
  - {{id: srv-a, customer: c1, switch: {home}, port: Gi0/1, ips: [192.0.2.11], template: rental,
     monthly_fee_fen: 80000}}
"""
HA_SWITCH = """\
  {name}:
    address: 192.0.2.2
    vendor: cisco_ios
    snmp: {{version: "2c", community: public}}
    ports: ["Gi0/[1-2]"]
"""


@pytest.mark.lab
def test_a_switch_added_by_sighup_is_leased(url: str, tmp_path: Path) -> None:
    # Bug: a reload never handed the new switch list to the lease, so a switch added by SIGHUP
    # in a shared deployment was never held: never enforced, its outages never recorded.
    from rackwarden.agent import config as configmod
    from rackwarden.agent.clock import SystemClock
    from rackwarden.agent.wiring import Runtime

    path = tmp_path / "rw.yaml"

    def write(*switches: str) -> None:
        path.write_text(HA_CONFIG.format(state=tmp_path / "state", url=url, home=switches[0],
                                         switches="".join(HA_SWITCH.format(name=s) for s in switches)))

    write("sw1")
    rt = Runtime(configmod.load(path), path, clock=SystemClock())

    async def go() -> None:
        rt.ledger.start()
        rt.actions.start()
        await rt.lease.start()
        try:
            assert rt.lease.held("sw1") and not rt.lease.held("sw2")
            write("sw1", "sw2")
            assert rt.daemon.reload() is True
            await rt.lease.refresh()
            assert rt.lease.held("sw2"), "the switch added by the reload is not leased"
            assert rt.enforcer.lease.held("sw2") and rt.daemon.records("sw2")
            write("sw2")
            assert rt.daemon.reload() is True
            await rt.lease.refresh()
            assert not rt.lease.held("sw1"), "a switch removed by the reload is still leased"
        finally:
            await rt.lease.stop()
            rt.actions.close()
            rt.ledger.close()

    asyncio.run(go())
