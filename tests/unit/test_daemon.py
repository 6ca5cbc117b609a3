"""The daemon shell with fake parts: metrics carry the values, records replay identically, bad reloads are refused."""

from __future__ import annotations

import asyncio
import io
import json
import math
from datetime import UTC, datetime
from pathlib import Path

from rackwarden.agent import config as configmod
from rackwarden.agent.clock import FakeClock
from rackwarden.agent.daemon import Daemon
from rackwarden.agent.metrics import Metrics
from rackwarden.agent.replay import replay, report_json
from rackwarden.agent.usage import UsageStore
from rackwarden.policies.facts import PortCounters, PortPoll

FIX = Path(__file__).parent.parent / "fixtures" / "replay" / "lab.yaml"
MBIT = 125_000


class FakeSwitch:
    """Counters that grow at set rates as the fake clock advances; can be told to time out."""

    def __init__(self, clock: FakeClock):
        self.clock = clock
        self.rates = {"Gi0/1": 15 * MBIT, "Gi0/2": 5 * MBIT}  # octets/s the server sends
        self.octets = {p: 0 for p in self.rates}
        self.last = clock.now()
        self.timeout = False

    async def poll(self, sw: configmod.SwitchConfig) -> PortPoll:
        dt = self.clock.now() - self.last
        self.last = self.clock.now()
        for p, r in self.rates.items():
            self.octets[p] += int(r * dt)
        if self.timeout:
            return PortPoll(sw.name, self.clock.at(), self.clock.now(), None, {}, error="timeout",
                            error_detail="no reply", duration_s=2.0)
        ports = {p: PortCounters(p, i + 1, o, 1000, 64, "up", "up", 100)
                 for i, (p, o) in enumerate(self.octets.items())}
        return PortPoll(sw.name, self.clock.at(), self.clock.now(), int(self.clock.now() * 100),
                        ports, duration_s=0.008)


def make(tmp_path: Path) -> tuple[Daemon, FakeClock, FakeSwitch]:
    text = FIX.read_text().replace("/tmp/rackwarden-replay-test", str(tmp_path))
    text = text.replace("state_dir:", "record_polls: true\n  state_dir:")
    cfg_path = tmp_path / "rw.yaml"
    cfg_path.write_text(text)
    cfg = configmod.load(cfg_path)
    clock = FakeClock(datetime(2026, 11, 22, 2, 0, tzinfo=UTC))
    sw = FakeSwitch(clock)
    usage = UsageStore(f"sqlite:///{tmp_path / 'usage.sqlite'}")
    usage.start()
    d = Daemon(cfg, clock=clock, poll=sw.poll, metrics=Metrics(), usage=usage, config_path=cfg_path)
    return d, clock, sw


def run_polls(d: Daemon, clock: FakeClock, n: int, every_s: float = 60.0) -> list:
    out = []
    for _ in range(n):
        out.extend(asyncio.run(d.poll_switch("sw1")))
        clock.advance(every_s)
    return out


def test_metrics_show_rates_and_cap_states(tmp_path: Path) -> None:
    d, clock, _ = make(tmp_path)
    run_polls(d, clock, 7)
    g = d.metrics.registry.get_sample_value
    assert g("rackwarden_port_rate_bps", {"server": "srv-a", "switch": "sw1", "port": "Gi0/1",
                                          "direction": "outbound"}) == 15_000_000
    assert g("rackwarden_port_rate_bps", {"server": "srv-b", "switch": "sw1", "port": "Gi0/2",
                                          "direction": "outbound"}) == 5_000_000
    assert g("rackwarden_server_cap_state", {"server": "srv-a"}) == 2
    assert g("rackwarden_server_cap_state", {"server": "srv-b"}) == 0
    assert g("rackwarden_server_cap_bps", {"server": "srv-a"}) == 10_000_000
    assert g("rackwarden_snmp_poll_duration_seconds_count", {"switch": "sw1"}) == 7


def test_timeouts_are_counted_and_rates_become_nan_not_zero(tmp_path: Path) -> None:
    d, clock, sw = make(tmp_path)
    run_polls(d, clock, 3)
    sw.timeout = True
    run_polls(d, clock, 2)
    g = d.metrics.registry.get_sample_value
    assert g("rackwarden_snmp_poll_errors_total", {"switch": "sw1", "kind": "timeout"}) == 2
    rate = g("rackwarden_port_rate_bps", {"server": "srv-a", "switch": "sw1", "port": "Gi0/1",
                                          "direction": "outbound"})
    assert rate is not None and math.isnan(rate)
    assert g("rackwarden_port_samples_total", {"switch": "sw1", "status": "missing"}) == 4


def test_recorded_polls_replay_to_identical_results(tmp_path: Path) -> None:
    d, clock, sw = make(tmp_path)
    live = run_polls(d, clock, 4)
    sw.timeout = True
    live += run_polls(d, clock, 1)
    sw.timeout = False
    live += run_polls(d, clock, 4)
    recorded = (tmp_path / "polls" / "sw1.jsonl").read_text()
    assert len(recorded.splitlines()) == 9
    out, err = io.StringIO(), io.StringIO()
    assert replay(d.config, io.StringIO(recorded), out, err) == 0
    replayed = [json.loads(x) for x in out.getvalue().splitlines()]
    assert replayed == [report_json(r) for r in live]
    assert {r["cap_state"] for r in replayed if r["server"] == "srv-a"} >= {"over", "ok"}


def test_usage_buckets_hold_every_accepted_octet(tmp_path: Path) -> None:
    d, clock, _ = make(tmp_path)
    reports = run_polls(d, clock, 11)
    accepted = sum(r.sample.in_octets for r in reports if r.server.id == "srv-a" and r.sample.ok)
    assert d.usage is not None
    rows = d.usage.buckets("srv-a", datetime(2026, 11, 1, tzinfo=UTC),
                           datetime(2026, 12, 1, tzinfo=UTC))
    assert sum(o for _, _, o, _ in rows) == accepted == 10 * 60 * 15 * MBIT
    p95, n = d.usage.p95_bps("srv-a", datetime(2026, 11, 1, tzinfo=UTC),
                             datetime(2026, 12, 1, tzinfo=UTC), "max")
    assert n == 2 and p95 == 15_000_000


def test_bad_reload_keeps_the_running_config_and_says_so(tmp_path: Path) -> None:
    d, clock, _ = make(tmp_path)
    assert d.config_path is not None
    good = d.config_path.read_text()
    d.config_path.write_text(good.replace("cap_mbps: 10, window_s: 300, direction: out",
                                          "cap_mbps: 10, window_s: 300, direction: sideways"))
    assert d.reload() is False
    assert d.metrics.registry.get_sample_value("rackwarden_config_reload_failed") == 1
    assert d.config.templates["rental"].direction == "out"
    d.config_path.write_text(good.replace("rental: {cap_mbps: 10", "rental: {cap_mbps: 20"))
    assert d.reload() is True
    assert d.metrics.registry.get_sample_value("rackwarden_config_reload_failed") == 0
    run_polls(d, clock, 7)
    assert d.metrics.registry.get_sample_value("rackwarden_server_cap_state", {"server": "srv-a"}) == 0


def test_a_reload_that_re_polls_in_the_same_tick_keeps_a_sustained_overage(tmp_path: Path) -> None:
    # Issue 11 (the open bug): a SIGHUP re-polls every switch at once. A poll in the same
    # instant as the scheduled one measured nothing, yet was a "glitch" that broke the run.
    d, clock, _ = make(tmp_path)
    run_polls(d, clock, 7)
    clock.advance(-60)  # back to the instant of the last poll
    g = d.metrics.registry.get_sample_value
    assert g("rackwarden_server_cap_state", {"server": "srv-a"}) == 2
    assert d.reload() is True
    reports = asyncio.run(d.poll_switch("sw1"))  # the reload's immediate re-poll
    a = next(r for r in reports if r.server.id == "srv-a")
    assert a.sample.status == "repeat"
    assert (a.verdict.state, a.verdict.actionable) == ("sustained", True)
    assert g("rackwarden_server_cap_state", {"server": "srv-a"}) == 2
    assert g("rackwarden_port_rate_bps", {"server": "srv-a", "switch": "sw1", "port": "Gi0/1",
                                          "direction": "outbound"}) == 15_000_000
    clock.advance(60)
    reports = asyncio.run(d.poll_switch("sw1"))
    assert next(r for r in reports if r.server.id == "srv-a").verdict.state == "sustained"


def test_usage_buckets_bill_the_bytes_of_a_gap_and_keep_the_95th_percentile(tmp_path: Path) -> None:
    # Issue 11: 20 minutes of timeouts, then a valid reading. The gap's bytes are spread over
    # the buckets it covers: the month's volume and the 95th percentile lose nothing.
    d, clock, sw = make(tmp_path)
    run_polls(d, clock, 11)
    sw.timeout = True
    run_polls(d, clock, 19)
    sw.timeout = False
    reports = run_polls(d, clock, 11)
    gap = next(r for r in reports if r.server.id == "srv-a")
    assert gap.sample.status == "gap" and gap.verdict.valid is False
    assert d.usage is not None
    month = (datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))
    rows = d.usage.buckets("srv-a", *month)
    assert sum(o for _, _, o, _ in rows) == sw.octets["Gi0/1"] == 40 * 60 * 15 * MBIT
    p95, n = d.usage.p95_bps("srv-a", *month, "max")
    assert n == 8 and p95 == 15_000_000


def test_a_restart_of_rackwarden_bills_the_interval_across_it(tmp_path: Path) -> None:
    """systemctl restart between two polls: the new process resumes from the baselines committed
    with the last billed poll, so no interval is dropped and none is billed twice."""
    d, clock, sw = make(tmp_path)
    run_polls(d, clock, 4)  # 3 billed intervals
    assert d.usage is not None
    d.usage.close()
    clock.advance(30)  # the restart takes a while; the switch keeps counting
    usage = UsageStore(f"sqlite:///{tmp_path / 'usage.sqlite'}")
    usage.start()
    again = Daemon(d.config, clock=clock, poll=sw.poll, metrics=Metrics(), usage=usage)
    again.metering.restore(usage.baselines(), clock.now(), clock.at())
    reports = run_polls(again, clock, 3)
    assert [r.sample.status for r in reports if r.server.id == "srv-a"] == ["ok", "ok", "ok"]
    rows = usage.buckets("srv-a", datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))
    # 3 intervals before, the 90 s across the restart, and 2 after: every second at 15 Mbit/s.
    assert sum(o for _, _, o, _ in rows) == (3 * 60 + 90 + 2 * 60) * 15 * MBIT
    assert sum(c for _, c, _, _ in rows) == (3 * 60 + 90 + 2 * 60) * 1000
