"""The enforcer with fake parts: every rail, every outcome, one record per decision."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from rackwarden.agent import config as configmod
from rackwarden.agent.actions import ActionStore
from rackwarden.agent.clock import FakeClock
from rackwarden.agent.enforcer import Enforcer
from rackwarden.agent.metering import PortReport
from rackwarden.agent.metrics import Metrics
from rackwarden.drivers.switch.base import ChangeResult, CommandRejected, SessionDropped
from rackwarden.policies.cap import CapVerdict
from rackwarden.policies.metering import RateSample

CONFIG = """\
agent: {{state_dir: {state}, mode: {mode}}}
enforcement:
  rules:
    overage: {{grace_s: 60, term_s: 600, restrict: {{overage: shut}}}}
  safety: {{max_shuts_per_switch: {k}, max_shuts_total: 10, breaker_fraction: 0.5, breaker_min_servers: 3}}
templates:
  rental: {{cap_mbps: 10, window_s: 300, credit: rental}}
switches:
  sw1:
    address: 127.0.0.1
    vendor: cisco_ios
    snmp: {{version: "2c", community: "x"}}
    ports: ["Gi0/[1-4]", "Te0/1"]
    protected_ports: [Te0/1]
servers:
"""
SERVERS = "".join(
    f"  - {{id: s{i}, customer: c{i}, switch: sw1, port: Gi0/{i}, ips: [192.0.2.{i}], template: rental,"
    f" monthly_fee_fen: 80000}}\n" for i in range(1, 5))


class FakeSwitch:
    """Ports with an admin state; can reject, drop the session after the change, or be unreadable."""

    name = "sw1"

    def __init__(self) -> None:
        self.admin = {f"Gi0/{i}": "up" for i in range(1, 5)}
        self.fault: str | None = None
        self.snmp_dead = False
        self.calls: list[tuple[str, str]] = []

    async def _change(self, action: str, port: str) -> ChangeResult:
        self.calls.append((action, port))
        want = "down" if action == "shut" else "up"
        if self.fault == "reject":
            raise CommandRejected("% Invalid input detected at '^' marker.", switch="sw1", port=port)
        self.admin[port] = want
        if self.fault == "drop":
            raise SessionDropped("session closed after shutdown", switch="sw1", port=port, outcome_unknown=True)
        return ChangeResult("sw1", port, action, want, want, 0.01)  # type: ignore[arg-type]

    async def shut(self, port: str) -> ChangeResult:
        return await self._change("shut", port)

    async def restore(self, port: str) -> ChangeResult:
        return await self._change("restore", port)

    async def read_admin_state(self, port: str) -> Any:
        raise NotImplementedError

    async def save(self) -> Any:
        raise NotImplementedError

    async def readback(self, switch: str, port: str) -> str | None:
        return None if self.snmp_dead else self.admin[port]


class Pager:
    def __init__(self) -> None:
        self.alerts: list[tuple[str, str, dict[str, str]]] = []

    async def alert(self, name: str, severity: str, labels: dict[str, str], summary: str, description: str,
                    at: datetime) -> dict[str, bool]:
        self.alerts.append((name, severity, labels))
        return {"fake": True}


class Rig:
    def __init__(self, tmp: Path, mode: str = "enforce", k: int = 2, store: ActionStore | None = None,
                 switch: FakeSwitch | None = None, clock: FakeClock | None = None):
        self.cfg = configmod.loads(CONFIG.format(state=tmp, mode=mode, k=k) + SERVERS, "t.yaml")
        self.clock = clock or FakeClock(datetime(2026, 11, 22, 2, 0, tzinfo=UTC))
        self.sw = switch or FakeSwitch()
        self.store = store or ActionStore(f"sqlite:///{tmp / 'actions.sqlite'}")
        if store is None:
            self.store.start()
        self.pager = Pager()
        self.metrics = Metrics()
        self.enf = Enforcer(self.cfg, store=self.store, switches={"sw1": self.sw}, readback=self.sw.readback,
                            clock=self.clock, metrics=self.metrics, oncall=self.pager)
        asyncio.run(self.enf.start())

    def report(self, i: int, state: str = "sustained", actionable: bool = True) -> PortReport:
        server = self.cfg.servers[i - 1]
        at = self.clock.at()
        sample = RateSample("sw1", server.port, at, "ok", interval_s=60, in_octets=1, out_octets=1,
                            in_bps=15e6, out_bps=0.0, admin=self.sw.admin[server.port])
        verdict = CapVerdict(server.id, at, state, actionable, 10_000_000, "out", True,  # type: ignore[arg-type]
                             judged_bps=15e6 if state != "ok" else 1e6, covered_s=300)
        return PortReport(server, sample, verdict)

    def poll(self, *reports: PortReport, advance: float = 60) -> None:
        asyncio.run(self.enf.on_reports(list(reports)))
        self.clock.advance(advance)

    def metric(self, name: str, **labels: str) -> float | None:
        return self.metrics.registry.get_sample_value(name, labels)

    def decisions(self, server: str = "s1") -> list[tuple[str, str]]:
        return [(a["decision"], a["result"].split(":")[0]) for a in self.store.audit_rows(server)]


def applied(rig: Rig, action: str = "shut", result: str = "applied", mode: str = "enforce") -> float:
    return rig.metric("rackwarden_enforcement_actions_total", action=action, reason="overage",
                      result=result, mode=mode) or 0.0


def test_enforce_notifies_waits_grace_then_shuts_and_records_once(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.poll(rig.report(1))  # notice; grace 60 s starts
    assert rig.sw.admin["Gi0/1"] == "up" and rig.sw.calls == []
    rig.poll(rig.report(1))  # 60 s later: shut
    assert rig.sw.admin["Gi0/1"] == "down"
    assert applied(rig) == 1
    rows = rig.store.actions("s1")
    assert [(r.action, r.state) for r in rows] == [("shut", "APPLIED")]
    assert rows[0].detail["snmp_admin"] == "down"
    assert rig.decisions() == [("notify_warning", "unreachable"), ("shut", "APPLIED"),
                              ("notify_suspension", "unreachable")]
    rig.poll(rig.report(1, "ok"))  # traffic is gone while shut: nothing more happens
    assert len(rig.store.actions("s1")) == 1
    assert rig.metric("rackwarden_server_enforcement_state", server="s1") == 2


def test_notify_mode_is_a_dry_run_counted_like_a_real_one(tmp_path: Path) -> None:
    rig = Rig(tmp_path, mode="notify")
    rig.poll(rig.report(1))
    rig.poll(rig.report(1))
    assert rig.sw.calls == [] and rig.sw.admin["Gi0/1"] == "up"
    assert applied(rig, result="dryrun", mode="notify") == 1
    assert [(r.state, r.mode) for r in rig.store.actions("s1")] == [("DRYRUN", "notify")]
    assert ("shut", "dry run") in rig.decisions()


def test_invalid_input_reply_is_failed_state_unchanged_and_paged(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.sw.fault = "reject"
    rig.poll(rig.report(1))
    rig.poll(rig.report(1))
    assert rig.sw.admin["Gi0/1"] == "up"
    (row,) = rig.store.actions("s1")
    assert row.state == "FAILED" and "CommandRejected" in row.detail["error"]
    assert applied(rig, result="failed") == 1
    assert ("RackWardenShutFailed", "page", {"server": "s1", "switch": "sw1", "port": "Gi0/1",
                                             "reason": "overage"}) in rig.pager.alerts


def test_dropped_session_after_shutdown_is_decided_by_snmp_read_back(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.sw.fault = "drop"
    rig.poll(rig.report(1))
    rig.poll(rig.report(1))
    (row,) = rig.store.actions("s1")
    assert row.state == "APPLIED" and "SessionDropped" in row.detail["error"]
    assert row.detail["snmp_admin"] == "down"


def test_dropped_session_with_no_read_back_is_unknown_and_paged(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.sw.fault = "drop"
    rig.sw.snmp_dead = True
    rig.poll(rig.report(1))
    rig.poll(rig.report(1))
    (row,) = rig.store.actions("s1")
    assert row.state == "UNKNOWN"
    assert any(a[0] == "RackWardenShutUnknown" and a[1] == "page" for a in rig.pager.alerts)


@pytest.mark.parametrize("port_after_crash,expected", [("down", "APPLIED"), ("up", "FAILED")])
def test_crash_between_pending_and_applied_leaves_one_record_and_a_known_state(
        tmp_path: Path, port_after_crash: str, expected: str) -> None:
    rig = Rig(tmp_path)
    rig.poll(rig.report(1))
    # The process died after writing its intent and (maybe) after the switch acted.
    key = "s1:overage:1:shut"
    rig.store.begin(key=key, server="s1", switch="sw1", port="Gi0/1", reason="overage", action="shut",
                    mode="enforce", at=rig.clock.at(), detail={})
    rig.sw.admin["Gi0/1"] = port_after_crash
    restarted = Rig(tmp_path, store=rig.store, switch=rig.sw, clock=rig.clock)
    rows = restarted.store.actions("s1")
    assert [(r.key, r.state) for r in rows] == [(key, expected)]
    assert ("reconcile", "pending shut found at start-up") in [
        (a["decision"], a["rule"]) for a in restarted.store.audit_rows("s1")]
    assert (expected == "FAILED") == any(a[0] == "RackWardenEnforcementUnresolved" for a in restarted.pager.alerts)


def test_a_protected_port_is_never_shut_even_if_config_checks_were_bypassed(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    sw = dataclasses.replace(rig.cfg.switches["sw1"], protected_ports=frozenset({"Gi0/1", "Te0/1"}))
    rig.enf.config = dataclasses.replace(rig.cfg, switches={"sw1": sw})
    rig.poll(rig.report(1))
    rig.poll(rig.report(1))
    assert rig.sw.calls == [] and rig.sw.admin["Gi0/1"] == "up"
    assert rig.store.actions("s1") == []
    assert ("refuse_shut", "protected_port") in rig.decisions()
    assert applied(rig, result="refused") == 1
    rig.poll(rig.report(1))  # a repeat refusal is not re-audited or re-paged
    assert [d for d in rig.decisions() if d[0] == "refuse_shut"] == [("refuse_shut", "protected_port")]


def test_breaker_stops_all_shuts_on_the_switch_when_most_servers_breach(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    reps = lambda: [rig.report(1), rig.report(2), rig.report(3), rig.report(4, "ok")]  # noqa: E731
    rig.poll(*reps())
    assert rig.metric("rackwarden_breaker_open", switch="sw1") == 1
    rig.poll(*reps())
    assert rig.sw.calls == []
    assert ("refuse_shut", "breaker") in rig.decisions("s1")
    assert any(a[0] == "RackWardenBreakerOpen" for a in rig.pager.alerts)
    rig.enf.reset_breaker("sw1", "operator:test")
    rig.poll(rig.report(1), rig.report(2, "ok"), rig.report(3, "ok"), rig.report(4, "ok"))
    assert rig.sw.admin["Gi0/1"] == "down"


def test_shut_budget_per_switch(tmp_path: Path) -> None:
    rig = Rig(tmp_path, k=1)
    rig.poll(rig.report(1), rig.report(2))
    rig.poll(rig.report(1), rig.report(2))
    assert sorted(p for a, p in rig.sw.calls if a == "shut") == ["Gi0/1"]
    assert ("refuse_shut", "switch_budget") in rig.decisions("s2")


def test_a_port_re_enabled_by_a_person_is_drift_and_is_not_shut_again(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.poll(rig.report(1))
    rig.poll(rig.report(1))
    assert rig.sw.admin["Gi0/1"] == "down"
    rig.sw.admin["Gi0/1"] = "up"  # someone typed `no shutdown`
    rig.poll(rig.report(1, "ok"))
    assert rig.metric("rackwarden_enforcement_drift_total", server="s1") == 1
    assert any(a[0] == "RackWardenEnforcementDrift" for a in rig.pager.alerts)
    assert rig.enf.rungs[("s1", "overage")].phase == "restored"
    assert [c for c in rig.sw.calls if c[0] == "shut"] == [("shut", "Gi0/1")]
    # Only a fresh violation starts the ladder again, with a new notice first.
    rig.poll(rig.report(1))
    assert rig.enf.rungs[("s1", "overage")].phase == "noticed"
    assert rig.sw.admin["Gi0/1"] == "up"


def test_operator_suspend_and_restore(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    st = asyncio.run(rig.enf.suspend("s3", "nonpayment", "invoice 2026-11 unpaid", "billing"))
    assert rig.sw.admin["Gi0/3"] == "down" and st["last_action"]["state"] == "APPLIED"
    st = asyncio.run(rig.enf.restore("s3", "billing"))
    assert rig.sw.admin["Gi0/3"] == "up" and st["last_action"]["action"] == "restore"
    assert [a["actor"] for a in rig.store.audit_rows("s3") if a["decision"] in ("shut", "restore")] == ["billing"] * 2


def test_overage_term_ends_on_the_tick_and_the_port_is_restored(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.poll(rig.report(1))
    rig.poll(rig.report(1))
    assert rig.sw.admin["Gi0/1"] == "down"
    rig.clock.advance(539)  # shut at t=60 for 600 s; now t=659
    asyncio.run(rig.enf.tick())
    assert rig.sw.admin["Gi0/1"] == "down"
    rig.clock.advance(1)
    asyncio.run(rig.enf.tick())
    assert rig.sw.admin["Gi0/1"] == "up"
    assert [(r.action, r.state) for r in rig.store.actions("s1")] == [("shut", "APPLIED"), ("restore", "APPLIED")]
    assert ("restore", "APPLIED") in rig.decisions()


def test_a_held_server_is_not_shut_until_the_hold_ends(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.enf.hold("s1", 3600, "customer migrating, agreed by phone", "operator:li")
    rig.poll(rig.report(1))
    rig.poll(rig.report(1))
    assert rig.sw.calls == []
    assert ("refuse_shut", "held") in rig.decisions()
    rig.clock.advance(3600)
    rig.poll(rig.report(1))
    assert rig.sw.admin["Gi0/1"] == "down"


def test_api_refuses_requests_without_the_token(tmp_path: Path) -> None:
    import json
    import urllib.error
    import urllib.request

    from rackwarden.agent.api import ApiServer

    rig = Rig(tmp_path)
    loop = asyncio.new_event_loop()
    import threading

    t = threading.Thread(target=loop.run_forever, daemon=True)
    t.start()
    api = ApiServer(rig.enf, listen="127.0.0.1", port=0, token="right-token")
    api.start(loop)
    try:
        url = f"http://127.0.0.1:{api.port}"
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            req = urllib.request.Request(url + "/v1/suspend", data=b'{"server": "s1", "reason": "operator"}',
                                         headers=headers, method="POST")
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(req, timeout=5)
            assert e.value.code == 401
        assert rig.sw.calls == []
        req = urllib.request.Request(url + "/v1/suspend", data=b'{"server": "s1", "reason": "operator"}',
                                     headers={"Authorization": "Bearer right-token"}, method="POST")
        with urllib.request.urlopen(req, timeout=30) as r:
            assert json.loads(r.read())["last_action"]["state"] == "APPLIED"
        req = urllib.request.Request(url + "/v1/suspend", data=b'{"server": "nobody", "reason": "operator"}',
                                     headers={"Authorization": "Bearer right-token"}, method="POST")
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=5)
        assert e.value.code == 400 and "nobody" in json.loads(e.value.read())["error"]
    finally:
        api.stop()
        loop.call_soon_threadsafe(loop.stop)
        t.join(timeout=5)


def test_a_detection_from_before_a_restore_does_not_shut_again(tmp_path: Path) -> None:
    # Bug: the detector keeps a finding active for clear_s after its last sample, so right
    # after an operator's restore the stale flood detection re-shut the port at once.
    from types import SimpleNamespace

    rig = Rig(tmp_path)

    def det(last_at: datetime) -> SimpleNamespace:
        return SimpleNamespace(detector="flood", kind="udp", severity="critical", rule="R6", reason="udp flood",
                               attacks_others=True,
                               rates={"pps": 20000.0}, counts={}, subjects=(), last_at=last_at)

    flood_at = rig.clock.at()
    asyncio.run(rig.enf.on_abuse("s2", det(flood_at), None))  # notice (unreachable)
    asyncio.run(rig.enf.on_abuse("s2", det(flood_at), None))  # attack + unreachable: cut
    assert rig.sw.admin["Gi0/2"] == "down"
    rig.clock.advance(5)
    asyncio.run(rig.enf.restore("s2", "operator:wang"))
    assert rig.sw.admin["Gi0/2"] == "up"
    rig.clock.advance(1)
    asyncio.run(rig.enf.on_abuse("s2", det(flood_at), None))  # the same stale finding
    assert rig.sw.admin["Gi0/2"] == "up" and rig.enf.rungs[("s2", "abuse")].phase == "restored"
    asyncio.run(rig.enf.on_abuse("s2", det(rig.clock.at()), None))  # fresh traffic after the restore
    assert rig.enf.rungs[("s2", "abuse")].phase in ("noticed", "shut")


def test_a_driver_that_raises_a_non_driver_error_leaves_no_pending_action(tmp_path: Path) -> None:
    # Bug (found by tests/sim): only DriverError and TimeoutError were caught, so a driver bug
    # left the action PENDING, the ladder at shut and the port up, unpaged.
    rig = Rig(tmp_path)

    async def broken(port: str) -> ChangeResult:
        raise KeyError(port)

    rig.sw.shut = broken  # type: ignore[method-assign]
    rig.poll(rig.report(1))
    rig.poll(rig.report(1))
    (row,) = rig.store.actions(server="s1")
    assert (row.action, row.state) == ("shut", "FAILED") and "KeyError" in row.detail["error"]
    assert rig.sw.admin["Gi0/1"] == "up"
    assert ("RackWardenShutFailed", "page") in [(n, s) for n, s, _ in rig.pager.alerts]
