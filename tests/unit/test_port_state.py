"""One home for a port's enforcement state: the rung, the action record and the ledger's outage
entry are written in one transaction, before the switch is touched and after it answers."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rackwarden.agent import config as configmod
from rackwarden.agent.actions import ActionStore, rung_to_json
from rackwarden.agent.clock import FakeClock
from rackwarden.agent.enforcer import Enforcer
from rackwarden.agent.ledger import LedgerStore, OutageRecorder
from rackwarden.agent.metering import PortReport
from rackwarden.agent.metrics import Metrics
from rackwarden.policies.cap import CapVerdict
from rackwarden.policies.ladder import Rung
from rackwarden.policies.metering import RateSample

from tests.unit.test_enforcer import CONFIG, SERVERS, FakeSwitch, Pager


class Agent:
    """The enforcer with its stores as the agent wires them: one database for ledger and actions."""

    def __init__(self, tmp: Path, sw: FakeSwitch | None = None, clock: FakeClock | None = None,
                 config: str = CONFIG) -> None:
        self.cfg = configmod.loads(config.format(state=tmp, mode="enforce", k=2) + SERVERS, "t.yaml")
        self.clock = clock or FakeClock(datetime(2026, 11, 22, 2, 0, tzinfo=UTC))
        self.sw = sw or FakeSwitch()
        self.db = tmp / "ledger.sqlite"
        self.ledger = LedgerStore(f"sqlite:///{self.db}")
        self.ledger.start(self.clock.at())
        self.store = ActionStore(f"sqlite:///{self.db}")
        self.store.start(engine=self.ledger.engine)
        self.outages = OutageRecorder(self.ledger, self.cfg)
        self.outages.start()
        self.pager = Pager()
        self.metrics = Metrics()
        self.enf = Enforcer(self.cfg, store=self.store, switches={"sw1": self.sw}, readback=self.sw.readback,
                            clock=self.clock, metrics=self.metrics, oncall=self.pager, outages=self.outages)
        asyncio.run(self.enf.start())

    def report(self, i: int = 1) -> PortReport:
        server = self.cfg.servers[i - 1]
        at = self.clock.at()
        sample = RateSample("sw1", server.port, at, "ok", interval_s=60, in_octets=1, out_octets=1,
                            in_bps=15e6, out_bps=0.0, admin=self.sw.admin[server.port])
        verdict = CapVerdict(server.id, at, "sustained", True, 10_000_000, "out", True,  # type: ignore[arg-type]
                             judged_bps=15e6, covered_s=300)
        return PortReport(server, sample, verdict)

    def poll(self, i: int = 1) -> None:
        asyncio.run(self.enf.on_reports([self.report(i)]))
        self.clock.advance(60)

    def close(self) -> None:
        self.ledger.close()


def _snapshot(db: Path) -> dict[str, Any]:
    """What a second reader of the database sees at this instant (committed rows only)."""
    c = sqlite3.connect(db)
    try:
        return {
            "rungs": {r[0]: r[1] for r in c.execute("SELECT server, state FROM rungs")},
            "actions": c.execute("SELECT key, state FROM actions ORDER BY id").fetchall(),
            "ledger": [r[0] for r in c.execute("SELECT kind FROM ledger_entries ORDER BY seq")],
        }
    finally:
        c.close()


def test_the_switch_is_touched_only_after_rung_action_and_outage_are_committed_together(tmp_path: Path) -> None:
    agent = Agent(tmp_path)
    seen: list[dict[str, Any]] = []
    change = agent.sw._change

    async def watching(action: str, port: str) -> Any:
        seen.append(_snapshot(agent.db))
        return await change(action, port)

    agent.sw._change = watching  # type: ignore[method-assign]
    agent.poll()  # notice
    agent.poll()  # grace over: shut
    assert agent.sw.admin["Gi0/1"] == "down"
    (at_shut,) = seen
    assert '"phase": "shut"' in at_shut["rungs"]["s1"]
    assert at_shut["actions"] == [("s1:overage:1:shut", "PENDING")]
    assert at_shut["ledger"][-1] == "outage_start"
    after = _snapshot(agent.db)
    assert after["actions"] == [("s1:overage:1:shut", "APPLIED")]
    assert [v.state for v in agent.ledger.open_outages()] == ["enforced"]
    agent.close()


def test_a_state_write_that_fails_touches_no_switch_and_writes_nothing(tmp_path: Path) -> None:
    agent = Agent(tmp_path)
    agent.poll()  # notice
    before = _snapshot(agent.db)

    def broken(*_: Any, **__: Any) -> Any:
        raise OSError("disk full")

    agent.ledger.append_many = broken  # type: ignore[method-assign]
    agent.poll()  # the shut is decided, but its outage entry cannot be written
    assert agent.sw.calls == [] and agent.sw.admin["Gi0/1"] == "up"
    assert _snapshot(agent.db) == before  # no rung moved to shut, no PENDING action
    assert agent.enf.rungs[("s1", "overage")].phase == "noticed"
    assert agent.outages.tracker.enforced("s1") is None
    assert any(a[0] == "RackWardenStateWriteFailed" and a[1] == "page" for a in agent.pager.alerts)
    assert agent.metrics.registry.get_sample_value("rackwarden_ledger_errors_total") == 1
    del agent.ledger.append_many  # the database is back: the next poll shuts, once
    agent.poll()
    assert agent.sw.calls == [("shut", "Gi0/1")]
    assert [(k, s) for k, s in _snapshot(agent.db)["actions"]] == [("s1:overage:1:shut", "APPLIED")]
    agent.close()


def test_a_shut_interrupted_before_the_switch_acted_ends_its_outage_at_restart(tmp_path: Path) -> None:
    """The crash came after the write-ahead and before the switch: at restart the read-back says
    the port is up; the action is FAILED, paged, and the ledger and the outage tracker let go of
    the port, so a later fault on it is not booked as the customer's."""
    agent = Agent(tmp_path)
    agent.poll()
    at = agent.clock.at()
    with agent.store.transaction() as conn:  # exactly what the enforcer commits before the switch
        rung = Rung("s1", "overage", phase="shut", episode=1, shut_at=at)
        agent.store.save_rung(rung, conn)
        agent.store.begin(key="s1:overage:1:shut", server="s1", switch="sw1", port="Gi0/1", reason="overage",
                          action="shut", mode="enforce", at=at, detail={}, conn=conn)
        agent.outages.enforcement_started("s1", at, "overage", {"action": "s1:overage:1:shut"}, conn=conn)
    agent.close()
    assert agent.sw.admin["Gi0/1"] == "up"  # the process died before the switch heard anything
    restarted = Agent(tmp_path, sw=agent.sw, clock=agent.clock)
    assert [(r.key, r.state) for r in restarted.store.actions("s1")] == [("s1:overage:1:shut", "FAILED")]
    assert restarted.ledger.open_outages() == []
    assert restarted.outages.tracker.enforced("s1") is None
    assert any(a[0] == "RackWardenEnforcementUnresolved" for a in restarted.pager.alerts)
    assert restarted.sw.calls == []  # nothing retried on its own
    restarted.close()


def test_records_of_a_separate_actions_file_move_into_the_ledger_database_once(tmp_path: Path) -> None:
    legacy = ActionStore(f"sqlite:///{tmp_path / 'actions.sqlite'}")
    legacy.start()
    at = datetime(2026, 11, 1, tzinfo=UTC)
    legacy.save_rung(Rung("s1", "overage", phase="shut", episode=3, shut_at=at))
    legacy.begin(key="s1:overage:3:shut", server="s1", switch="sw1", port="Gi0/1", reason="overage",
                 action="shut", mode="enforce", at=at, detail={"x": 1})
    legacy.finish("s1:overage:3:shut", "APPLIED", at, {})
    legacy.close()
    ledger = LedgerStore(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    ledger.start(at)
    store = ActionStore("unused")
    store.start(engine=ledger.engine)
    assert store.absorb(tmp_path / "actions.sqlite") == 2
    assert [(r.key, r.state) for r in store.actions()] == [("s1:overage:3:shut", "APPLIED")]
    assert [rung_to_json(r) for r in store.load_rungs()] == [
        rung_to_json(Rung("s1", "overage", phase="shut", episode=3, shut_at=at))]
    assert not (tmp_path / "actions.sqlite").exists() and (tmp_path / "actions.sqlite.merged").exists()
    assert store.absorb(tmp_path / "actions.sqlite") == 0
    ledger.close()
