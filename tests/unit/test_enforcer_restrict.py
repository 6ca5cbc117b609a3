"""The enforcer carrying out the gentler rungs (issue 12) with a fake switch and the real stores.

What is asserted is what an operator and a customer would see: the switch's restriction, the
port still up, the ledger's restriction records and no outage, the gauges, the audit trail,
and the fall to a shut when the switch refuses the throttle.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from rackwarden.agent.metering import PortReport
from rackwarden.drivers.switch.base import CommandRejected, SessionDropped
from rackwarden.drivers.switch.restrictions import Rate, Restriction, RestrictionKind, RestrictionResult
from rackwarden.policies.cap import CapVerdict
from rackwarden.policies.metering import RateSample

from tests.unit.test_enforcer import CONFIG, SERVERS, FakeSwitch
from tests.unit.test_port_state import Agent as StoresAgent

THROTTLE_CONFIG = CONFIG.replace("restrict: {{overage: shut}}", "restrict: {{overage: throttle}}")


class RestrictingSwitch(FakeSwitch):
    """FakeSwitch with a policer and service ACLs per port; faults per action."""

    def __init__(self, enforced_bps: int | None = None) -> None:
        super().__init__()
        self.policer: dict[str, int] = {}
        self.blocked: dict[str, set[str]] = {}
        self.restrict_fault: dict[str, str] = {}  # action -> "reject" | "drop_after"
        self.enforced_bps = enforced_bps  # a vendor that polices a little under what was asked

    def _reading(self, port: str, kind: RestrictionKind, service: str | None = None) -> Restriction:
        if kind == "throttle":
            rate = self.policer.get(port)
            return Restriction("throttle", port, "present" if rate else "absent", rate_bps=rate)
        state = "present" if service in self.blocked.get(port, set()) else "absent"
        return Restriction("block", port, state, service=service)  # type: ignore[arg-type]

    def _do(self, action: str, port: str, effect: Any, kind: RestrictionKind, service: str | None = None,
            rate: Rate | None = None) -> RestrictionResult:
        self.calls.append((action, port))
        fault = self.restrict_fault.get(action)
        if fault == "reject":
            raise CommandRejected("% Unrecognized command found at '^' position.", switch="sw1", port=port)
        effect()
        if fault == "drop_after":
            raise SessionDropped("session closed after the change", switch="sw1", port=port, outcome_unknown=True)
        return RestrictionResult("sw1", port, action, self._reading(port, kind, service), 0.01,  # type: ignore[arg-type]
                                 rate=rate, service=service)

    async def throttle(self, port: str, rate_bps: int) -> RestrictionResult:
        applied = self.enforced_bps or rate_bps
        rate = Rate(rate_bps, applied, applied // 1000, "kbps")
        return self._do("throttle", port, lambda: self.policer.__setitem__(port, applied), "throttle", rate=rate)

    async def unthrottle(self, port: str) -> RestrictionResult:
        return self._do("unthrottle", port, lambda: self.policer.pop(port, None), "throttle")

    async def block_service(self, port: str, service: str) -> RestrictionResult:
        return self._do("block", port, lambda: self.blocked.setdefault(port, set()).add(service), "block", service)

    async def unblock_service(self, port: str, service: str) -> RestrictionResult:
        return self._do("unblock", port, lambda: self.blocked.get(port, set()).discard(service), "block", service)

    async def read_restriction(self, port: str, kind: RestrictionKind, service: str | None = None) -> Restriction:
        return self._reading(port, kind, service)


class Agent(StoresAgent):
    """The enforcer with its stores as the agent wires them (tests/unit/test_port_state.py),
    throttling by default."""

    def __init__(self, tmp: Path, sw: RestrictingSwitch | None = None, config: str = THROTTLE_CONFIG) -> None:
        self.sw: RestrictingSwitch = sw or RestrictingSwitch()
        super().__init__(tmp, self.sw, config=config)

    def report(self, over: bool) -> PortReport:
        server = self.cfg.servers[0]
        at = self.clock.at()
        # The port's ifIn counts the demand even while policed (as real switches and the lab do).
        sample = RateSample("sw1", server.port, at, "ok", interval_s=60, in_octets=1, out_octets=1,
                            in_bps=15e6 if over else 2e6, out_bps=0.0, admin=self.sw.admin[server.port])
        verdict = CapVerdict(server.id, at, "sustained" if over else "ok", True, 10_000_000, "out", True,  # type: ignore[arg-type]
                             judged_bps=15e6 if over else 2e6, covered_s=300)
        return PortReport(server, sample, verdict)

    def poll(self, over: bool = True, advance: float = 60) -> None:
        asyncio.run(self.enf.on_reports([self.report(over)]))
        self.clock.advance(advance)

    def kinds(self) -> list[str]:
        return [e.kind for e in self.ledger.entries(server="s1")]

    def metric(self, name: str, **labels: str) -> float | None:
        return self.metrics.registry.get_sample_value(name, labels)

    def decisions(self) -> list[str]:
        return [a["decision"] for a in self.store.audit_rows("s1")]


def test_an_overage_is_throttled_instead_of_shut_and_released_once_under_the_cap(tmp_path: Path) -> None:
    a = Agent(tmp_path)
    a.poll()  # warning; 60 s grace
    a.poll()  # grace over: throttle
    assert a.sw.policer == {"Gi0/1": 10_000_000} and a.sw.admin["Gi0/1"] == "up"
    assert [c[0] for c in a.sw.calls] == ["throttle"]
    assert [(r.action, r.state) for r in a.store.actions("s1")] == [("throttle", "APPLIED")]
    assert a.kinds() == ["restriction_start"]  # no outage: the server keeps forwarding
    start = a.ledger.entries(server="s1")[0]
    assert start.payload["restriction"] == "throttle" and start.payload["rate_bps"] == 10_000_000
    assert a.metric("rackwarden_server_throttled", server="s1") == 1
    assert a.metric("rackwarden_server_enforcement_state", server="s1") == 3
    assert a.decisions() == ["notify_warning", "throttle", "notify_restriction"]
    # Demand stays over the cap (ifIn counts what the policer drops): the throttle stays, past its term.
    for _ in range(12):
        a.poll()
    assert a.sw.policer and [c[0] for c in a.sw.calls] == ["throttle"]
    a.poll(over=False)  # back under the cap after the 600 s term: full rate again
    assert a.sw.policer == {} and [c[0] for c in a.sw.calls] == ["throttle", "unthrottle"]
    assert a.kinds() == ["restriction_start", "restriction_end"]
    end = a.ledger.entries(server="s1")[1]
    assert end.ref_seq == start.seq
    assert a.ledger.outages() == []
    assert a.metric("rackwarden_server_throttled", server="s1") == 0
    assert a.decisions()[-2:] == ["unthrottle", "notify_lifted"]


def test_a_throttle_the_switch_refuses_is_failed_paged_and_followed_by_a_shut(tmp_path: Path) -> None:
    sw = RestrictingSwitch()
    sw.restrict_fault["throttle"] = "reject"  # old Comware: no `qos lr inbound`
    a = Agent(tmp_path, sw)
    a.poll()
    a.poll()
    assert [c[0] for c in sw.calls] == ["throttle", "shut"]
    assert sw.policer == {} and sw.admin["Gi0/1"] == "down"
    assert [(r.action, r.state) for r in a.store.actions("s1")] == [("throttle", "FAILED"), ("shut", "APPLIED")]
    assert "RackWardenThrottleFailed" in [p[0] for p in a.pager.alerts]
    assert a.kinds() == ["outage_start"]  # the shut is the outage; the refused throttle is not recorded
    assert a.metric("rackwarden_server_throttled", server="s1") == 0


def test_a_throttle_whose_session_broke_is_settled_by_reading_the_switch_again(tmp_path: Path) -> None:
    sw = RestrictingSwitch()
    sw.restrict_fault["throttle"] = "drop_after"
    a = Agent(tmp_path, sw)
    a.poll()
    a.poll()
    (row,) = a.store.actions("s1")
    assert (row.action, row.state, row.detail["reread"]) == ("throttle", "APPLIED", "present")
    assert sw.admin["Gi0/1"] == "up" and a.kinds() == ["restriction_start"]


def test_the_rate_the_switch_enforces_is_recorded_and_announced(tmp_path: Path) -> None:
    a = Agent(tmp_path, RestrictingSwitch(enforced_bps=9_984_000))  # VRP: 64 kbit/s steps
    a.poll()
    a.poll()
    assert a.ledger.entries(server="s1")[0].payload["rate_bps"] == 9_984_000
    # The rung keeps the cap it asked for: the vendor's rounding is not a cap change.
    assert a.enf.rungs[("s1", "overage")].restriction.rate_bps == 10_000_000  # type: ignore[union-attr]
    a.poll()
    assert [c[0] for c in a.sw.calls] == ["throttle"]


def test_a_recheck_lifts_the_throttle_only_when_the_traffic_is_back_under_the_cap(tmp_path: Path) -> None:
    a = Agent(tmp_path)
    a.poll()
    a.poll()
    asyncio.run(a.enf.restore("s1", "customer:c1", "overage"))  # still over: refused
    assert a.sw.policer and [c[0] for c in a.sw.calls] == ["throttle"]
    assert a.enf.rungs[("s1", "overage")].phase == "restricted"
    a.poll(over=False)  # within the term, under the cap: stays until asked or the term ends
    assert a.sw.policer
    asyncio.run(a.enf.restore("s1", "customer:c1", "overage"))
    assert a.sw.policer == {} and a.enf.rungs[("s1", "overage")].phase == "restored"


def test_the_shut_path_stays_available_by_config(tmp_path: Path) -> None:
    a = Agent(tmp_path, config=CONFIG)  # restrict: {overage: shut}
    a.poll()
    a.poll()
    assert [c[0] for c in a.sw.calls] == ["shut"] and a.sw.policer == {}


class Crash(BaseException):
    """The process dies between the switch's change and its read-back (kill -9, power)."""


def test_a_throttle_interrupted_by_a_crash_is_settled_from_the_switch_at_restart(tmp_path: Path) -> None:
    sw = RestrictingSwitch()
    a = Agent(tmp_path, sw)
    a.poll()

    async def dies(port: str, rate_bps: int) -> RestrictionResult:
        sw.policer[port] = rate_bps  # the switch took it...
        raise Crash  # ...and the agent died before the read-back

    sw.throttle = dies  # type: ignore[method-assign]
    try:
        a.poll()
    except Crash:
        pass
    assert [(r.action, r.state) for r in a.store.actions("s1")] == [("throttle", "PENDING")]
    a.ledger.close()
    again = Agent(tmp_path, sw)  # restart: the PENDING throttle is asked of the switch, not of SNMP
    (row,) = again.store.actions("s1")
    assert (row.action, row.state, row.detail["cli_reading"]) == ("throttle", "APPLIED", "present")
    assert again.kinds() == ["restriction_start"] and again.ledger.outages() == []
    assert again.enf.rungs[("s1", "overage")].phase == "restricted"
    assert again.metric("rackwarden_server_throttled", server="s1") == 1


def test_a_throttle_the_switch_never_took_before_a_crash_is_failed_at_restart_and_shut(tmp_path: Path) -> None:
    sw = RestrictingSwitch()
    a = Agent(tmp_path, sw)
    a.poll()

    async def dies(port: str, rate_bps: int) -> RestrictionResult:
        raise Crash  # the agent died before the switch was asked

    original = sw.throttle
    sw.throttle = dies  # type: ignore[method-assign]
    try:
        a.poll()
    except Crash:
        pass
    sw.throttle = original  # type: ignore[method-assign]
    a.ledger.close()
    again = Agent(tmp_path, sw)
    # The port reads admin up, which says nothing of a throttle: the switch's policer decides.
    assert [(r.action, r.state) for r in again.store.actions("s1")][0] == ("throttle", "FAILED")
    assert "restriction_start" not in again.kinds()
    # ...and the overage, still standing, takes the shut rung the failed throttle leaves it.
    assert sw.admin["Gi0/1"] == "down" and again.enf.rungs[("s1", "overage")].phase == "shut"


def test_one_read_of_the_holds_serves_every_decision_of_a_poll(tmp_path: Path) -> None:
    a = Agent(tmp_path)
    reads = 0
    original = a.store.holds

    def counted() -> Any:
        nonlocal reads
        reads += 1
        return original()

    a.store.holds = counted  # type: ignore[method-assign]
    reports = [a.report(True)] + [StoresAgent.report(a, i) for i in (2, 3, 4)]
    asyncio.run(a.enf.on_reports(reports))
    assert reads == 1  # not one query per server and decision
    assert {sid for (sid, _), r in a.enf.rungs.items() if r.phase == "noticed"} == {"s1", "s2", "s3", "s4"}
    a.enf.hold("s1", 600, "maintenance", "noc")
    a.clock.advance(0.5)
    asyncio.run(a.enf.on_reports([a.report(True)]))
    assert reads == 3  # hold()'s status answer reads it, and the next decision does again: seen at once
    assert a.enf.rungs[("s1", "overage")].phase == "noticed"  # the hold stops the throttle...
    a.clock.advance(120)
    asyncio.run(a.enf.on_reports([a.report(True)]))
    assert a.sw.calls == []  # ...on every later poll too


def test_report_usage_bills_a_throttled_month_at_the_cap_not_the_demand(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from rackwarden.agent import cli
    from rackwarden.agent.usage import UsageStore
    from rackwarden.policies.billing import BucketPart

    a = Agent(tmp_path)
    a.poll()
    a.poll()  # throttled from here on (the ledger has the restriction_start)
    assert a.kinds() == ["restriction_start"]
    a.ledger.close()
    cfg = tmp_path / "rw.yaml"
    cfg.write_text(THROTTLE_CONFIG.format(state=tmp_path, mode="enforce", k=2) + SERVERS)
    usage = UsageStore(f"sqlite:///{tmp_path / 'usage.sqlite'}")
    usage.start()
    t0 = datetime(2026, 11, 22, 2, 5, tzinfo=UTC)  # every bucket after the throttle began
    usage.add("s1", [BucketPart(t0 + timedelta(seconds=300 * k), 300_000, 15_000_000 * 300 // 8, 0)
                     for k in range(20)])
    usage.close()
    assert cli.main(["report", "usage", "--month", "2026-11", "-c", str(cfg), "--format", "json"]) == 0
    rows = {r["server"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert rows["s1"]["buckets"] == 20 and rows["s1"]["p95_bps"] == 10_000_000  # carried, not 15 Mbit/s


def test_a_scrape_that_sees_an_action_counted_sees_the_state_it_left(tmp_path: Path) -> None:
    """Scrapes run in threads of their own: the gauges are published with the rung, before the
    action is counted and before the customer's notice is awaited. They used to move only at
    the end of the whole step, after the notices, and the lab caught a scrape in between."""
    a = Agent(tmp_path)
    seen: list[tuple[str, float | None, float | None]] = []
    counter = a.metrics.enforcement_actions
    labels = counter.labels

    class Counted:
        def __init__(self, action: str, child: Any) -> None:
            self.action, self.child = action, child

        def inc(self, amount: float = 1) -> None:
            seen.append((self.action, a.metric("rackwarden_server_throttled", server="s1"),
                         a.metric("rackwarden_server_enforcement_state", server="s1")))
            self.child.inc(amount)

    def spying(*values: str, **kw: str) -> Counted:
        return Counted(values[0] if values else kw["action"], labels(*values, **kw))

    counter.labels = spying  # type: ignore[method-assign]
    a.poll()
    a.poll()  # throttled
    for _ in range(11):
        a.poll()
    a.poll(over=False)  # unthrottled
    assert [s for s in seen if s[0] in ("throttle", "unthrottle")] == [("throttle", 1, 3), ("unthrottle", 0, 0)]
