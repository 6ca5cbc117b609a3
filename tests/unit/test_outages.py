"""Table-driven and property tests of outage tracking (policies/outages.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rackwarden.policies.metering import CounterEvidence, RateSample
from rackwarden.policies.outages import (
    OpenOutage,
    OutageCauseChange,
    OutageEnd,
    OutageEvent,
    OutageStart,
    OutageTracker,
    PortFlagged,
    PortObservation,
    SwitchObservation,
    TrackerSettings,
    port_observation,
)

T0 = datetime(2026, 11, 3, 0, 0, tzinfo=UTC)
SERVERS = ("s1", "s2", "s3", "s4", "s5")  # on ports p1..p5 of switch sw1
DAY_S = 86400


def at(s: int) -> datetime:
    return T0 + timedelta(seconds=s)


@dataclass(frozen=True)
class Poll:
    """One poll of sw1 at T0+t seconds. `ports` gives the non-default ones: "down" (oper down,
    admin up), "admin" (admin down), "missing" (no answer for that port); others are up."""

    t: int
    ports: dict[str, str] = field(default_factory=dict)
    answered: bool = True
    uptime_s: int | None = None  # sysUpTime in seconds; None = not reported
    uptime_ticks: int | None = None  # raw ticks, when a test needs them exact
    boots: int | None = None
    traffic: int | None = 1000  # octets each up port moved since the last poll
    # What every answering port's counters said about a sysUpTime fall (metering's evidence):
    # "continued", "restarted", "zeroed" or None.
    counters: CounterEvidence | None = None


@dataclass(frozen=True)
class Enforce:
    t: int
    server: str
    cause: str


@dataclass(frozen=True)
class Restore:
    t: int
    server: str


@dataclass(frozen=True)
class Applied:
    """The switch answered the shut (the enforcer's read-back)."""

    t: int
    server: str


Step = Poll | Enforce | Restore | Applied


def observation(p: Poll) -> SwitchObservation:
    ports = []
    for i, sid in enumerate(SERVERS, 1):
        state = p.ports.get(sid, "up")
        ports.append(PortObservation(
            server=sid,
            port=f"p{i}",
            oper="up" if state == "up" else "down",
            admin="down" if state == "admin" else "up",
            answered=state != "missing",
            traffic_octets=p.traffic if state == "up" else None,
            counters=p.counters if state != "missing" else None,
        ))
    ticks = p.uptime_ticks if p.uptime_ticks is not None else (
        None if p.uptime_s is None else p.uptime_s * 100)
    return SwitchObservation("sw1", at(p.t), p.answered, tuple(ports), ticks, p.boots,
                             "timeout: no reply" if not p.answered else "")


def run(steps: Sequence[Step], tracker: OutageTracker | None = None) -> list[OutageEvent]:
    tr = tracker or OutageTracker()
    out: list[OutageEvent] = []
    for s in steps:
        if isinstance(s, Poll):
            out.extend(tr.observe(observation(s)))
        elif isinstance(s, Enforce):
            i = SERVERS.index(s.server) + 1
            out.extend(tr.enforcement_started(s.server, "sw1", f"p{i}", at(s.t), s.cause,
                                              {"action": "shut"}))
        elif isinstance(s, Applied):
            tr.enforcement_applied(s.server)
        else:
            out.extend(tr.enforcement_ended(s.server, at(s.t), {"action": "restore"}))
    return out


def fmt(ev: OutageEvent) -> tuple[object, ...]:
    """Events as short tuples with times in seconds after T0."""
    def t(d: datetime) -> int:
        return int((d - T0).total_seconds())

    if isinstance(ev, OutageStart):
        return ("start", ev.server, t(ev.start), ev.cause)
    if isinstance(ev, OutageEnd):
        return ("end", ev.server, t(ev.end))
    if isinstance(ev, OutageCauseChange):
        return ("cause", ev.server, t(ev.at), ev.cause)
    assert isinstance(ev, PortFlagged)
    return ("flag", ev.server, t(ev.at), ev.finding.status)


@dataclass(frozen=True)
class Case:
    name: str
    steps: list[Step]
    expected: list[tuple[object, ...]]
    settings: TrackerSettings = TrackerSettings()


UP = Poll  # readability: Poll(t) with no ports named is "all up"

CASES = [
    Case("all_up_no_events", [UP(0), UP(60), UP(120)], []),
    # One port oper-down while admin-up: unknown (port_oper_down) from the first poll that
    # sees it down (60) to the first that sees it up again (180): 120 s at poll resolution.
    Case("single_port_down_is_unknown",
         [UP(0), Poll(60, {"s1": "down"}), Poll(120, {"s1": "down"}), UP(180)],
         [("start", "s1", 60, "port_oper_down"), ("end", "s1", 180)]),
    # Two of five ports (40 %) is below both rules (3 ports, 50 %): each is its own unknown.
    Case("two_of_five_not_together",
         [UP(0), Poll(60, {"s1": "down", "s2": "down"}), UP(120)],
         [("start", "s1", 60, "port_oper_down"), ("start", "s2", 60, "port_oper_down"),
          ("end", "s1", 120), ("end", "s2", 120)]),
    # Three ports newly down at one poll: ports_down_together (provider).
    Case("three_ports_down_together_is_provider",
         [UP(0), Poll(60, {"s1": "down", "s2": "down", "s3": "down"}), UP(120)],
         [("start", "s1", 60, "ports_down_together"), ("start", "s2", 60, "ports_down_together"),
          ("start", "s3", 60, "ports_down_together"),
          ("end", "s1", 120), ("end", "s2", 120), ("end", "s3", 120)]),
    # The fraction rule: 2 of 4 answering ports (s5 missing, so 4 answered) is 50 %.
    Case("half_of_answered_ports_is_together",
         [UP(0), Poll(60, {"s1": "down", "s2": "down", "s5": "missing"})],
         [("start", "s1", 60, "ports_down_together"), ("start", "s2", 60, "ports_down_together"),
          ("start", "s5", 60, "unknown")]),
    # A port down for days plus two new ones is not three "together": only new ones count.
    Case("old_down_port_does_not_count",
         [UP(0), Poll(60, {"s1": "down"}), Poll(120, {"s1": "down", "s2": "down", "s3": "down"})],
         [("start", "s1", 60, "port_oper_down"), ("start", "s2", 120, "port_oper_down"),
          ("start", "s3", 120, "port_oper_down")]),
    # With a 120 s window, s1 (down at 60) joins s2 and s3 (down at 120): all provider, and
    # s1's record is re-caused from its start.
    Case("together_window_recauses_earlier_port",
         [UP(0), Poll(60, {"s1": "down"}), Poll(120, {"s1": "down", "s2": "down", "s3": "down"})],
         [("start", "s1", 60, "port_oper_down"), ("cause", "s1", 120, "ports_down_together"),
          ("start", "s2", 120, "ports_down_together"),
          ("start", "s3", 120, "ports_down_together")],
         TrackerSettings(together_window_s=120)),
    Case("threshold_is_configurable",
         [UP(0), Poll(60, {"s1": "down", "s2": "down", "s3": "down"})],
         [("start", "s1", 60, "port_oper_down"), ("start", "s2", 60, "port_oper_down"),
          ("start", "s3", 60, "port_oper_down")],
         TrackerSettings(together_min_ports=4, together_min_fraction=Fraction(4, 5))),
    # The switch does not answer: every port's time is unknown (switch_unreachable), not an
    # outage of the customer; it ends at the first answer (ports up, same uptime line).
    Case("switch_unreachable_is_unknown",
         [Poll(0, uptime_s=1000), Poll(60, answered=False), Poll(120, answered=False),
          Poll(180, uptime_s=1180)],
         [*[("start", s, 60, "switch_unreachable") for s in SERVERS],
          *[("end", s, 180) for s in SERVERS]]),
    # Unreachable, then back with sysUpTime 30 s: the switch rebooted during the gap, so the
    # gap becomes switch_reboot (provider) before it ends.
    Case("reboot_explains_unreachable_gap",
         [Poll(0, uptime_s=1000), Poll(60, answered=False), Poll(120, uptime_s=30)],
         [*[("start", s, 60, "switch_unreachable") for s in SERVERS],
          *[x for s in SERVERS for x in (("cause", s, 120, "switch_reboot"), ("end", s, 120))]]),
    # Up at both polls but sysUpTime fell from 1000 s to 20 s: the switch booted at 100 and the
    # ports could not forward from then until the poll at 120 that sees them up.
    Case("quick_reboot_between_polls",
         [Poll(0, uptime_s=1000), Poll(120, uptime_s=20)],
         [x for s in SERVERS for x in (("start", s, 100, "switch_reboot"), ("end", s, 120))]),
    # A port still down after a reboot: switch_reboot from the boot time.
    Case("reboot_port_still_down",
         [Poll(0, uptime_s=1000), Poll(120, {"s2": "down"}, uptime_s=20), UP(180, uptime_s=80)],
         [("start", "s1", 100, "switch_reboot"), ("end", "s1", 120),
          ("start", "s2", 100, "switch_reboot"),
          ("start", "s3", 100, "switch_reboot"), ("end", "s3", 120),
          ("start", "s4", 100, "switch_reboot"), ("end", "s4", 120),
          ("start", "s5", 100, "switch_reboot"), ("end", "s5", 120),
          ("end", "s2", 180)]),
    # A port that was down before the reboot and stays down keeps its own record.
    Case("down_before_reboot_keeps_cause",
         [Poll(0, {"s1": "down"}, uptime_s=1000), Poll(60, {"s1": "down"}, uptime_s=30)],
         [("start", "s1", 0, "port_oper_down"),
          *[x for s in SERVERS[1:] for x in (("start", s, 30, "switch_reboot"),
                                               ("end", s, 60))]]),
    # sysUpTime (TimeTicks) wrapping past 2**32 after ~497 days is not a reboot.
    Case("uptime_wrap_is_not_reboot",
         [Poll(0, uptime_ticks=2**32 - 3000), Poll(60, uptime_ticks=3000)], []),
    # Issue 11: sysUpTime falling is not a reboot when the counters kept counting (only the SNMP
    # agent restarted), nor when snmpEngineBoots did not advance: no record, no provider time.
    Case("agent_restart_counters_continued_is_no_reboot",
         [Poll(0, uptime_s=1000), Poll(60, uptime_s=30, counters="continued"), Poll(120, uptime_s=90)],
         []),
    Case("agent_restart_engine_boots_unchanged_is_no_reboot",
         [Poll(0, uptime_s=1000, boots=4), Poll(60, uptime_s=30, boots=4)], []),
    Case("counters_restarted_is_a_reboot",
         [Poll(0, uptime_s=1000, boots=4), Poll(60, uptime_s=30, boots=4, counters="restarted")],
         [x for s in SERVERS for x in (("start", s, 30, "switch_reboot"), ("end", s, 60))]),
    # A switch up for 400 days that reboots is not a sysUpTime wrap (the old unwrapping took
    # the nearest whole number of wraps and recorded nothing).
    Case("reboot_after_400_days_is_not_a_wrap",
         [Poll(0, uptime_s=400 * DAY_S), Poll(60, uptime_s=30)],
         [x for s in SERVERS for x in (("start", s, 30, "switch_reboot"), ("end", s, 60))]),
    # Counters reading 0 after the fall prove nothing: the next poll decides. Kept counting:
    # nothing. Restarted: the reboot, ending at the first poll after the fall (it saw them up).
    Case("zeroed_counters_wait_then_continued_is_no_reboot",
         [Poll(0, uptime_s=1000), Poll(60, uptime_s=30, counters="zeroed"),
          Poll(120, uptime_s=90, counters="continued"), Poll(180, uptime_s=150)],
         []),
    Case("zeroed_counters_wait_then_restarted_is_a_reboot",
         [Poll(0, uptime_s=1000), Poll(60, uptime_s=30, counters="zeroed"),
          Poll(120, uptime_s=90, counters="restarted"), Poll(180, uptime_s=150)],
         [x for s in SERVERS for x in (("start", s, 30, "switch_reboot"), ("end", s, 60))]),
    # snmpEngineBoots going up is a reboot even where sysUpTime looks plausible.
    Case("engine_boots_is_reboot",
         [Poll(0, uptime_s=1000, boots=4), Poll(60, uptime_s=40, boots=5)],
         [x for s in SERVERS for x in (("start", s, 20, "switch_reboot"), ("end", s, 60))]),
    Case("admin_down_not_by_rackwarden_is_unknown",
         [UP(0), Poll(60, {"s1": "admin"}), UP(120)],
         [("start", "s1", 60, "unknown"), ("end", "s1", 120)]),
    Case("port_missing_from_reply_is_unknown",
         [UP(0), Poll(60, {"s4": "missing"}), UP(120)],
         [("start", "s4", 60, "unknown"), ("end", "s4", 120)]),
    # Down, switch silent, down again: three touching records, one per state; the SLA engine
    # merges them into one interruption with parts of different classes.
    Case("down_unreachable_down",
         [UP(0), Poll(60, {"s1": "down"}), Poll(120, answered=False), Poll(180, {"s1": "down"}),
          UP(240)],
         [("start", "s1", 60, "port_oper_down"), ("end", "s1", 120),
          *[("start", s, 120, "switch_unreachable") for s in SERVERS],
          ("end", "s1", 180), ("start", "s1", 180, "port_oper_down"),
          *[("end", s, 180) for s in SERVERS[1:]],
          ("end", "s1", 240)]),
    # RackWarden's own shutdown: the enforcer's cause from its read-back time (75), polls that
    # see the port admin-down add nothing, and the restore (200) ends it.
    Case("enforcement_is_attributed_by_enforcer",
         [UP(0), Enforce(75, "s1", "overage"), Poll(120, {"s1": "admin"}),
          Poll(180, {"s1": "admin"}), Restore(200, "s1"), UP(240)],
         [("start", "s1", 75, "overage"), ("end", "s1", 200)]),
    # Restored at 200 but the server never comes back: its own unknown record starts at the
    # restore, not at the poll, so no second goes unrecorded.
    Case("restored_port_stays_down",
         [UP(0), Enforce(75, "s1", "nonpayment"), Restore(200, "s1"), Poll(240, {"s1": "down"}),
          UP(300)],
         [("start", "s1", 75, "nonpayment"), ("end", "s1", 200),
          ("start", "s1", 200, "port_oper_down"), ("end", "s1", 300)]),
    # Three restored ports that stay down are three servers' problems, not a switch fault.
    Case("restored_ports_not_together",
         [UP(0), *[Enforce(75, s, "nonpayment") for s in ("s1", "s2", "s3")],
          *[Restore(200, s) for s in ("s1", "s2", "s3")],
          Poll(240, {"s1": "down", "s2": "down", "s3": "down"})],
         [*[("start", s, 75, "nonpayment") for s in ("s1", "s2", "s3")],
          *[("end", s, 200) for s in ("s1", "s2", "s3")],
          *[("start", s, 200, "port_oper_down") for s in ("s1", "s2", "s3")]]),
    Case("enforcement_over_unknown_outage",
         [UP(0), Poll(60, {"s1": "down"}), Enforce(90, "s1", "abuse"), Poll(120, {"s1": "admin"})],
         [("start", "s1", 60, "port_oper_down"), ("end", "s1", 90), ("start", "s1", 90, "abuse")]),
    Case("enforced_port_while_switch_unreachable",
         [UP(0), Enforce(30, "s1", "abuse"), Poll(60, answered=False)],
         [("start", "s1", 30, "abuse"),
          *[("start", s, 60, "switch_unreachable") for s in SERVERS[1:]]]),
    # A shutdown that did not take (the poll sees the port forwarding) ends the record there.
    Case("enforced_but_seen_forwarding",
         [UP(0), Enforce(30, "s1", "overage"), Applied(32, "s1"), UP(60), Poll(120, {"s1": "admin"})],
         [("start", "s1", 30, "overage"), ("end", "s1", 60), ("start", "s1", 120, "overage")]),
    # A poll taken while the SSH session is still shutting the port reads it up: the record the
    # enforcer wrote before touching the switch stands (one record, not a 0 s one and another).
    Case("a_poll_during_the_shut_session_does_not_end_it",
         [UP(0), Enforce(30, "s2", "unknown"), UP(31), Applied(33, "s2"), Poll(60, {"s2": "admin"})],
         [("start", "s2", 30, "unknown")]),
    Case("enforcement_same_cause_twice_is_one_record",
         [UP(0), Enforce(30, "s1", "overage"), Enforce(40, "s1", "overage")],
         [("start", "s1", 30, "overage")]),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_tracker_cases(case: Case) -> None:
    got = [fmt(e) for e in run(case.steps, OutageTracker(case.settings))]
    assert got == case.expected


def test_start_events_carry_class_and_evidence() -> None:
    events = run([UP(0), Poll(60, {"s1": "down", "s2": "down", "s3": "down"})])
    first = events[0]
    assert isinstance(first, OutageStart)
    assert first.outage_class == "provider"
    assert dict(first.evidence) == {
        "switch": "sw1", "port": "p1", "poll_at": "2026-11-03T00:01:00+00:00", "oper": "down",
        "admin": "up", "state": "oper_down", "ports_down_together": 3, "ports_answered": 5,
    }
    single = run([UP(0), Poll(60, {"s4": "down"})])[0]
    assert isinstance(single, OutageStart)
    assert (single.cause, single.outage_class, single.state) == ("port_oper_down", "unknown",
                                                                 "oper_down")


def test_times_are_whole_seconds() -> None:
    tr = OutageTracker()
    tr.observe(observation(UP(0)))
    obs = observation(Poll(60, {"s1": "down"}))
    late = SwitchObservation(obs.switch, obs.at + timedelta(microseconds=999_999), True, obs.ports)
    (ev,) = tr.observe(late)
    assert isinstance(ev, OutageStart) and ev.start == at(60)


def test_enforcement_cause_must_be_an_enforcement() -> None:
    tr = OutageTracker()
    with pytest.raises(ValueError, match="enforcement cause"):
        tr.enforcement_started("s1", "sw1", "p1", at(0), "provider_fault")
    with pytest.raises(ValueError, match="no enforcement to end"):
        tr.enforcement_ended("s1", at(10))


def test_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        SwitchObservation("sw1", datetime(2026, 11, 3), True, ())


def test_resume_ends_open_record_with_same_id() -> None:
    tr = OutageTracker()
    tr.resume([OpenOutage("s1@1793664000", "s1", "sw1", "p1", at(-600), "port_oper_down",
                          "oper_down")])
    assert [(o.outage_id, o.state) for o in tr.open_outages()] == [("s1@1793664000", "oper_down")]
    events = tr.observe(observation(UP(60)))
    assert [(type(e).__name__, e.outage_id) for e in events if isinstance(e, OutageEnd)] == [
        ("OutageEnd", "s1@1793664000")]
    assert tr.open_outages() == []


def test_resume_enforced_keeps_enforcement() -> None:
    tr = OutageTracker()
    tr.resume([OpenOutage("s2@1", "s2", "sw1", "p2", at(0), "abuse", "enforced")])
    assert tr.enforced("s2") == "abuse"
    assert tr.observe(observation(Poll(60, {"s2": "admin"}))) == []
    assert [fmt(e) for e in tr.enforcement_ended("s2", at(90))] == [("end", "s2", 90)]


def test_r12_port_down_for_a_week_is_flagged_once() -> None:
    week = 7 * DAY_S
    steps = [UP(0), *(Poll(t, {"s3": "down"}) for t in (60, week - 60, week + 60, week + 120))]
    flags = [fmt(e) for e in run(steps) if isinstance(e, PortFlagged)]
    # Down since 60: due at 60 + 7 d; first poll at or after that is week + 60.
    assert flags == [("flag", "s3", week + 60, "breached")]


def test_r12_silent_port_is_flagged() -> None:
    week = 7 * DAY_S
    steps = [Poll(0, traffic=5000), *(Poll(t, traffic=0) for t in (60, week + 60))]
    flags = [fmt(e) for e in run(steps) if isinstance(e, PortFlagged)]
    assert flags == [("flag", s, week + 60, "breached") for s in SERVERS]


def test_r12_findings_pending_before_a_week() -> None:
    tr = OutageTracker()
    run([UP(0), Poll(60, {"s1": "down"})], tr)
    (f,) = tr.r12_findings(at(3600))
    assert (f.subject, f.status, f.due_at) == ("s1", "pending", at(60 + 7 * DAY_S))


def test_port_observation_from_metering_sample() -> None:
    ok = RateSample("sw1", "p1", at(0), "ok", in_octets=10, out_octets=5, oper="up", admin="up")
    missing = RateSample("sw1", "p1", at(0), "missing")
    assert port_observation("s1", ok) == PortObservation("s1", "p1", "up", "up", True, 15)
    assert port_observation("s1", missing).answered is False


def test_settings_reject_single_port_groups() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        TrackerSettings(together_min_ports=1)


# -- property: records tile what the polls saw ------------------------------------------------

_STATE = st.sampled_from(["up", "up", "up", "down", "admin", "missing"])


@st.composite
def poll_runs(draw: st.DrawFn) -> list[Poll]:
    n = draw(st.integers(1, 25))
    out = []
    uptime = 1000
    t = 0
    for _ in range(n):
        t += draw(st.integers(1, 300))
        uptime += 300
        answered = draw(st.booleans()) or draw(st.booleans())
        if draw(st.integers(0, 9)) == 0:
            uptime = draw(st.integers(0, 50))  # a reboot now and then
        ports = {s: draw(_STATE) for s in SERVERS}
        out.append(Poll(t, {k: v for k, v in ports.items() if v != "up"}, answered,
                        uptime_s=uptime))
    return out


@settings(max_examples=200, deadline=None)
@given(poll_runs())
def test_records_never_overlap_and_cover_every_down_poll(polls: list[Poll]) -> None:
    tr = OutageTracker()
    events = run(list(polls), tr)
    intervals: dict[str, list[tuple[datetime, datetime | None]]] = {s: [] for s in SERVERS}
    open_: dict[str, tuple[str, datetime]] = {}
    for e in events:
        if isinstance(e, OutageStart):
            assert e.server not in open_, "a port has at most one open record"
            open_[e.server] = (e.outage_id, e.start)
        elif isinstance(e, OutageEnd):
            oid, start = open_.pop(e.server)
            assert oid == e.outage_id and e.end >= start
            intervals[e.server].append((start, e.end))
    for s, (_, start) in open_.items():
        intervals[s].append((start, None))
    for s, ivs in intervals.items():
        ivs.sort(key=lambda iv: iv[0])
        for (_, a1), (b0, _) in zip(ivs, ivs[1:], strict=False):
            assert a1 is not None and a1 <= b0, f"{s}: records overlap"
    # Every poll that saw a port not forwarding (or did not see it) lies in one of its records;
    # every poll that saw it forwarding lies in none.
    for p in polls:
        for s in SERVERS:
            state = p.ports.get(s, "up")
            inside = any(a <= at(p.t) and (b is None or at(p.t) < b) for a, b in intervals[s])
            assert inside == (not p.answered or state != "up"), (s, p)
