"""Issue 11, counters and metering: faults real switches make never move money or start a cut.

Each class is played as recorded polls through the daemon's MeteringService (what `replay
snmp` and the daemon share), and, for outages, through the same tracker the ledger recorder
feeds. Every test here failed on the code before issue 11.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from rackwarden.agent import config as configmod
from rackwarden.agent.ledger.recorder import switch_observation
from rackwarden.agent.metering import MeteringService, PortReport
from rackwarden.agent.metrics import Metrics
from rackwarden.agent.pollio import poll_from_json, poll_to_json
from rackwarden.policies.billing import BUCKET_S, BucketPart, bucket_rate_bps, percentile_95
from rackwarden.policies.facts import PortCounters, PortPoll
from rackwarden.policies.outages import (
    OutageCauseChange,
    OutageEnd,
    OutageEvent,
    OutageStart,
    OutageTracker,
)

FIX = Path(__file__).parent.parent / "fixtures" / "replay" / "lab.yaml"
T0 = datetime(2026, 11, 22, 10, 0, tzinfo=timezone(timedelta(hours=8)))
MBIT = 1_000_000 // 8  # octets per second at 1 Mbit/s
UP0 = 400 * 86400 * 100  # sysUpTime of a switch up for 400 days, in ticks
LIFETIME = 40 * 10**12  # octets a busy port has counted over those days


class Port:
    """One simulated switch port: what the server truly sent and received, and its counters."""

    def __init__(self, name: str, if_index: int, out_mbps: float, start: int = LIFETIME):
        self.name, self.if_index, self.out_mbps = name, if_index, out_mbps
        self.in_octets = start  # switch ingress = what the server sends
        self.out_octets = start // 10
        self.sent = 0  # true octets since the start of the test


class Switch:
    """A switch on a 60 s poll schedule; tests make it reboot, restart its agent or lie."""

    def __init__(self, ports: Sequence[Port], *, speed_mbps: int = 100, boots: int | None = None,
                 uptime: int = UP0):
        self.ports = {p.name: p for p in ports}
        self.t = 0.0
        self.uptime = uptime
        self.speed_mbps = speed_mbps
        self.boots = boots

    def run(self, seconds: float) -> None:
        self.t += seconds
        self.uptime += int(seconds * 100)
        for p in self.ports.values():
            n = int(p.out_mbps * MBIT * seconds)
            p.in_octets += n
            p.out_octets += n // 10
            p.sent += n

    def agent_restart(self, up_s: float = 20.0) -> None:
        """Only the SNMP agent restarted: sysUpTime starts again, the counters go on."""
        self.uptime = int(up_s * 100)

    def reboot(self, up_s: float = 20.0, boots: bool = True) -> None:
        """The switch restarted: uptime and counters start again (the bytes sent since count)."""
        self.uptime = int(up_s * 100)
        for p in self.ports.values():
            p.in_octets = int(p.out_mbps * MBIT * up_s)
            p.out_octets = p.in_octets // 10
        if boots and self.boots is not None:
            self.boots += 1

    def poll(self, *, zeros: Iterable[str] = (), timeout: bool = False,
             speed_mbps: int | None = None) -> PortPoll:
        at = T0 + timedelta(seconds=self.t)
        if timeout:
            return PortPoll("sw1", at, self.t, None, {}, error="timeout", error_detail="no reply")
        zero = set(zeros)
        ports = {
            p.name: PortCounters(
                p.name, p.if_index,
                0 if p.name in zero else p.in_octets, 0 if p.name in zero else p.out_octets,
                64, "up", "up", speed_mbps or self.speed_mbps,
            )
            for p in self.ports.values()
        }
        poll = PortPoll("sw1", at, self.t, self.uptime % 2**32, ports, engine_boots=self.boots)
        # Every poll goes through the recording format, as `replay snmp` would read it.
        return poll_from_json(poll_to_json(poll))


def lab(text_change: tuple[str, str] | None = None, tmp: Path | None = None) -> configmod.Config:
    if text_change is None:
        return configmod.load(FIX)
    assert tmp is not None
    f = tmp / "lab.yaml"
    f.write_text(FIX.read_text().replace(*text_change))
    return configmod.load(f)


def two_ports(mbps_a: float = 5, mbps_b: float = 3, **kw: Any) -> Switch:
    return Switch([Port("Gi0/1", 1, mbps_a), Port("Gi0/2", 2, mbps_b)], **kw)


class Agent:
    """The daemon's metering service and outage tracker on one switch, with a usage sink."""

    def __init__(self, config: configmod.Config | None = None):
        self.parts: dict[str, list[BucketPart]] = {}
        self.metrics = Metrics()
        self.service = MeteringService(config or lab(), metrics=self.metrics, usage_sink=self._usage)
        self.tracker = OutageTracker()
        self.events: list[OutageEvent] = []

    def _usage(self, server: str, parts: list[BucketPart]) -> None:
        self.parts.setdefault(server, []).extend(parts)

    def ingest(self, poll: PortPoll) -> dict[str, PortReport]:
        reports = self.service.ingest(poll)
        self.events += self.tracker.observe(switch_observation(self.service.config, poll, reports))
        return {r.server.id: r for r in reports}

    def billed(self, server: str) -> int:
        return sum(p.out_octets for p in self.parts.get(server, []))

    def reboots(self) -> list[OutageEvent]:
        return [e for e in self.events
                if isinstance(e, (OutageStart, OutageCauseChange)) and e.cause == "switch_reboot"]


def warm(agent: Agent, sw: Switch, polls: int = 3) -> None:
    agent.ingest(sw.poll())
    for _ in range(polls - 1):
        sw.run(60)
        agent.ingest(sw.poll())


# -- 1. An SNMP agent restart is not a switch reboot ----------------------------------------------


def test_agent_restart_with_counters_still_rising_is_no_reset_no_outage_and_bills_every_byte() -> None:
    agent, sw = Agent(), two_ports()
    warm(agent, sw)
    sw.run(40)
    sw.agent_restart(up_s=20)
    sw.run(20)
    reps = agent.ingest(sw.poll())
    a = reps["srv-a"].sample
    assert a.status == "ok"
    assert a.restart == "agent" and a.restart_evidence == "counters_continued"
    assert a.in_bps == 5_000_000  # over the poller's 60 s: sysUpTime is no clock across it
    sw.run(60)
    assert agent.ingest(sw.poll())["srv-a"].sample.status == "ok"
    assert agent.reboots() == []  # no switch_reboot record: no provider time, no credit
    assert not [e for e in agent.events if isinstance(e, OutageStart)]
    assert agent.billed("srv-a") == sw.ports["Gi0/1"].sent


def test_agent_restart_on_quiet_ports_is_told_by_an_unchanged_engine_boots() -> None:
    # Small counters prove nothing either way; snmpEngineBoots that did not advance does.
    agent, sw = Agent(), Switch([Port("Gi0/1", 1, 2, start=1000), Port("Gi0/2", 2, 1, start=1000)],
                                boots=7)
    warm(agent, sw)
    sw.run(60)
    sw.agent_restart()
    s = agent.ingest(sw.poll())["srv-a"].sample
    assert s.status == "ok" and agent.reboots() == []
    assert (s.restart, s.restart_evidence) == ("agent", "engine_boots_unchanged")


def test_a_real_reboot_is_told_by_its_counters_and_the_outage_says_so() -> None:
    agent, sw = Agent(), two_ports()
    warm(agent, sw)
    sw.run(60)
    sw.reboot(up_s=20)
    s = agent.ingest(sw.poll())["srv-a"].sample
    starts = [e for e in agent.reboots() if isinstance(e, OutageStart)]
    # (Before issue 11 the tracker took the reboot of a switch up for 400 days for a
    # sysUpTime wrap and recorded nothing.)
    assert {e.server for e in starts} == {"srv-a", "srv-b"}
    assert (s.status, s.restart, s.restart_evidence, s.counters) == (
        "reset", "switch", "counters_restarted", "restarted")
    assert all(e.evidence["reboot_evidence"] == "counters_restarted" for e in starts)
    # The outage runs from the boot the uptime reveals (or the last poll that saw it up).
    assert starts[0].start == (T0 + timedelta(seconds=sw.t - 20)).replace(microsecond=0)


def test_a_reboot_whose_first_reply_reads_zeros_is_decided_by_the_next_reading() -> None:
    # Quiet ports (small counters) on a switch that rebooted; its first reply reads 0. The
    # next reading counts on from low values: the counters restarted, so it was a reboot. The
    # record ends at the first poll after the fall, which saw the ports up.
    agent = Agent()
    sw = Switch([Port("Gi0/1", 1, 2, start=9 * 10**9), Port("Gi0/2", 2, 1, start=9 * 10**9)],
                uptime=30 * 86400 * 100)
    warm(agent, sw)
    last_up = T0 + timedelta(seconds=sw.t)
    sw.run(60)
    sw.reboot(up_s=20)
    first_after = T0 + timedelta(seconds=sw.t)
    assert agent.ingest(sw.poll(zeros=["Gi0/1", "Gi0/2"]))["srv-a"].sample.status == "suspect"
    assert agent.reboots() == []  # undecided: zeros prove nothing yet
    sw.run(60)
    assert agent.ingest(sw.poll())["srv-a"].sample.status == "reset"
    starts = [e for e in agent.reboots() if isinstance(e, OutageStart)]
    assert {e.server for e in starts} == {"srv-a", "srv-b"}
    assert all(e.evidence["reboot_evidence"] == "counters_restarted" for e in starts)
    ends = {e.outage_id: e.end for e in agent.events if isinstance(e, OutageEnd)}
    for e in starts:
        assert e.start == max(last_up + timedelta(seconds=1), first_after - timedelta(seconds=20))
        assert ends[e.outage_id] == first_after


def test_a_reboot_with_engine_boots_advancing_is_decided_by_engine_boots() -> None:
    agent, sw = Agent(), two_ports(boots=3)
    warm(agent, sw)
    sw.run(60)
    sw.reboot()
    assert agent.ingest(sw.poll())["srv-a"].sample.status == "reset"
    starts = [e for e in agent.reboots() if isinstance(e, OutageStart)]
    assert starts and all(e.evidence["reboot_evidence"] == "engine_boots" for e in starts)


# -- 2. A reply after a timeout that reads zero, or far below, is never a baseline ----------------


def test_zero_reply_after_a_timeout_keeps_the_trusted_baseline_and_bills_nothing_extra() -> None:
    # 2 Mbit/s on a 10 Mbit/s cap. Before issue 11 the zero became the baseline and the next
    # reading, differenced against it, put the server at 40 Mbit/s and billed 300 MB.
    agent = Agent()
    sw = Switch([Port("Gi0/1", 1, 2, start=300_000_000), Port("Gi0/2", 2, 1)])
    warm(agent, sw)
    sw.run(60)
    assert agent.ingest(sw.poll(timeout=True))["srv-a"].sample.status == "missing"
    sw.run(60)
    zero = agent.ingest(sw.poll(zeros=["Gi0/1"]))["srv-a"].sample
    assert zero.status == "suspect" and zero.in_bps is None
    states = []
    for _ in range(6):
        sw.run(60)
        r = agent.ingest(sw.poll())["srv-a"]
        states.append(r.verdict.state)
        assert r.sample.status == "ok" and r.sample.in_bps == 2_000_000
    assert set(states) == {"ok"}
    assert agent.billed("srv-a") == sw.ports["Gi0/1"].sent  # every byte, none twice


def test_an_agent_answering_zeros_for_several_polls_never_confirms_a_reset() -> None:
    agent, sw = Agent(), Switch([Port("Gi0/1", 1, 2, start=300_000_000), Port("Gi0/2", 2, 1)])
    warm(agent, sw)
    for _ in range(3):
        sw.run(60)
        assert agent.ingest(sw.poll(zeros=["Gi0/1"]))["srv-a"].sample.status == "suspect"
    sw.run(60)
    s = agent.ingest(sw.poll())["srv-a"].sample
    assert s.status == "ok" and s.spans_missed == 3 and s.in_bps == 2_000_000
    assert agent.billed("srv-a") == sw.ports["Gi0/1"].sent  # every byte, none twice


def test_agent_restart_answering_zeros_while_it_rebuilds_is_not_a_baseline_nor_a_reboot() -> None:
    # sysUpTime fell and the counters read 0: the next reading shows they went on counting, so
    # it was the agent, and no switch_reboot record (provider time, credit) is written.
    agent = Agent()
    sw = Switch([Port("Gi0/1", 1, 2, start=LIFETIME), Port("Gi0/2", 2, 1)], uptime=30 * 86400 * 100)
    warm(agent, sw)
    sw.run(60)
    sw.agent_restart()
    assert agent.ingest(sw.poll(zeros=["Gi0/1", "Gi0/2"]))["srv-a"].sample.status == "suspect"
    sw.run(60)
    s = agent.ingest(sw.poll())["srv-a"].sample
    assert agent.reboots() == []
    assert (s.status, s.restart, s.in_bps) == ("ok", "agent", 2_000_000)
    assert agent.billed("srv-a") == sw.ports["Gi0/1"].sent  # every byte, none twice


def test_a_counter64_that_really_restarted_is_confirmed_by_the_next_reading() -> None:
    agent, sw = Agent(), two_ports()
    warm(agent, sw)
    sw.run(60)
    sw.ports["Gi0/1"].in_octets = 5_000  # cleared without any discontinuity object saying so
    assert agent.ingest(sw.poll())["srv-a"].sample.status == "suspect"
    sw.run(60)
    assert agent.ingest(sw.poll())["srv-a"].sample.status == "reset"
    sw.run(60)
    s = agent.ingest(sw.poll())["srv-a"].sample
    assert s.status == "ok" and s.in_bps == 5_000_000


# -- 3. Bytes across a gap are billed, spread over the buckets the gap covers ---------------------


def test_a_gap_is_billed_over_every_bucket_it_covers_and_stays_unknown_for_the_cap() -> None:
    agent, sw = Agent(), two_ports(mbps_a=15)
    warm(agent, sw, polls=6)
    for _ in range(19):  # 20 minutes without an answer
        sw.run(60)
        agent.ingest(sw.poll(timeout=True))
    sw.run(60)
    rep = agent.ingest(sw.poll())["srv-a"]
    assert rep.sample.status == "gap" and rep.sample.in_bps is None
    assert rep.verdict.state == "ok" and not rep.verdict.valid  # unknown, never an overage
    assert rep.sample.in_octets == 20 * 60 * 15 * MBIT
    assert agent.billed("srv-a") == sw.ports["Gi0/1"].sent  # the month loses nothing
    gap_parts = [p for p in agent.parts["srv-a"] if p.bucket_start >= rep.sample.start_at - timedelta(seconds=BUCKET_S)]
    assert len({p.bucket_start for p in gap_parts}) >= 4  # spread, never all in the last bucket
    assert max(p.out_octets for p in gap_parts) < rep.sample.in_octets / 3
    # The 95th percentile of a steady 15 Mbit/s server stays 15 Mbit/s across the gap.
    buckets: dict[datetime, list[int]] = {}
    for p in agent.parts["srv-a"]:
        b = buckets.setdefault(p.bucket_start, [0, 0, 0])
        b[0] += p.out_octets
        b[1] += p.in_octets
        b[2] += p.covered_ms
    rates = [bucket_rate_bps(o, i, c, "out") for o, i, c in buckets.values()]
    assert percentile_95(rates) == 15_000_000


# -- 4. The contract's port speed is the rate ceiling ---------------------------------------------


def test_a_port_reporting_a_lower_speed_than_contracted_is_still_metered_and_capped(tmp_path: Path) -> None:
    # A contracted 1G port whose ifHighSpeed says 10M: before issue 11 every sample above
    # 10 Mbit/s was a "glitch", so the port escaped the cap and billing.
    cfg = lab(("ports: [\"Gi0/[1-4]\"]", "ports: [\"Gi0/[1-4]\"]\n    port_speed_mbps: 1000"), tmp_path)
    agent, sw = Agent(cfg), two_ports(mbps_a=15, speed_mbps=1000)
    agent.ingest(sw.poll(speed_mbps=10))
    states = []
    for _ in range(6):
        sw.run(60)
        r = agent.ingest(sw.poll(speed_mbps=10))["srv-a"]
        assert r.sample.status == "ok" and r.sample.in_bps == 15_000_000
        assert r.sample.speed_bps == 1_000_000_000 and r.sample.speed_mismatch
        states.append(r.verdict.state)
    assert states[-1] == "sustained"
    assert agent.billed("srv-a") == sw.ports["Gi0/1"].sent
    g = agent.metrics.registry.get_sample_value
    assert g("rackwarden_port_speed_mismatch", {"server": "srv-a", "switch": "sw1", "port": "Gi0/1"}) == 1
    sw.run(60)
    agent.ingest(sw.poll(speed_mbps=1000))
    assert g("rackwarden_port_speed_mismatch", {"server": "srv-a", "switch": "sw1", "port": "Gi0/1"}) == 0


# -- 5. A sustained window needs measured time ----------------------------------------------------


def test_a_sample_spanning_an_unanswered_poll_is_billed_but_restarts_the_run() -> None:
    agent, sw = Agent(), two_ports(mbps_a=15)
    agent.ingest(sw.poll())
    states, spanning = [], []
    for i in range(9):
        sw.run(60)
        r = agent.ingest(sw.poll(timeout=(i == 3)))["srv-a"]
        states.append(r.verdict.state)
        if i == 4:
            spanning.append(r)
    # 3 measured minutes, the timeout, the spanning sample (billed, not counted), then 4 more
    # measured minutes: 240 s, still short of the 300 s window. Before: sustained at 300 s
    # counting the 120 s average.
    assert states == ["over", "over", "over", "ok", "ok", "over", "over", "over", "over"]
    assert agent.billed("srv-a") == sw.ports["Gi0/1"].sent
    r = spanning[0]
    assert r.sample.status == "ok" and r.sample.spans_missed == 1
    assert r.verdict.covered_s == 0 and "not measured time" in r.verdict.reason


# -- The open bug: a re-poll in the same sysUpTime tick ---------------------------------------------


def test_a_second_poll_in_the_same_tick_is_a_repeat_that_keeps_the_overage_run() -> None:
    agent, sw = Agent(), two_ports(mbps_a=15)
    agent.ingest(sw.poll())
    for _ in range(6):
        sw.run(60)
        r = agent.ingest(sw.poll())["srv-a"]
    assert r.verdict.state == "sustained"
    r = agent.ingest(sw.poll())["srv-a"]  # a SIGHUP re-poll: same instant, same sysUpTime tick
    assert r.sample.status == "repeat" and r.verdict.state == "sustained" and r.verdict.actionable
    sw.run(60)
    r = agent.ingest(sw.poll())["srv-a"]
    assert r.sample.status == "ok" and r.sample.in_bps == 15_000_000
    assert r.verdict.state == "sustained" and r.verdict.covered_s >= 360


# -- The same faults as a recorded file through `rackwarden replay snmp` --------------------------


def test_replay_cli_on_a_recording_with_every_fault() -> None:
    # tests/fixtures/replay/counter_faults.jsonl: a switch up 30 days polled every 60 s; its
    # SNMP agent restarts (poll 4), a timeout (5), a reply reading 0 (6), ten minutes without
    # answers (8-16), then answers again. srv-a sends 6 Mbit/s on a 10 Mbit/s cap throughout.
    res = subprocess.run(
        [sys.executable, "-m", "rackwarden.agent.cli", "replay", "snmp", "--explain",
         "--input", str(FIX.parent / "counter_faults.jsonl"), "--config", str(FIX)],
        capture_output=True, text=True, check=True)
    rows = [json.loads(x) for x in res.stdout.splitlines() if '"srv-a"' in x]
    assert [r["status"] for r in rows] == (
        ["first"] + ["ok"] * 4 + ["missing", "suspect", "ok"] + ["missing"] * 9 + ["gap", "ok"])
    assert {r["cap_state"] for r in rows} == {"ok"}  # never an overage invented from a fault
    assert {r["in_bps"] for r in rows if r["status"] == "ok"} == {6_000_000}
    assert "only the SNMP agent restarted" in rows[4]["reason"]
    assert "octets billed" in rows[-2]["reason"]
