"""Hypothesis properties of the counter policy: never above port speed, never more bytes, no rate on reset."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import example, given, settings
from hypothesis import strategies as st
from rackwarden.policies.facts import PortCounters, PortPoll
from rackwarden.policies.metering import Baseline, step

T0 = datetime(2026, 11, 1, tzinfo=UTC)
SPEED_MBPS = 100
SPEED_BPS = SPEED_MBPS * 1_000_000

# One interval of a simulated port: seconds elapsed, bytes truly sent as a fraction of line
# rate, and what happened to the agent (nothing, reboot, a missed poll, a bogus counter jump).
interval = st.tuples(
    st.floats(min_value=0.5, max_value=400.0, allow_nan=False),
    st.floats(min_value=0.0, max_value=1.0, allow_nan=False),
    st.sampled_from(["none"] * 6 + ["reboot", "missed", "reindex", "discontinuity"]),
)


def simulate(bits: int, start: int, steps: list[tuple[float, float, str]]):
    """Yield (poll, true bytes since the previous answered poll, rebooted-since-baseline)."""
    mod = 2**bits
    counter, uptime, now, if_index, disc = start % mod, 12_345, 1000.0, 3, 0
    pending_true = 0
    for dt, load, event in steps:
        if event == "reboot":
            # A switch takes tens of seconds to restart; sysUpTime can only reveal a restart
            # that lost more time than the reply-jitter tolerance (5 s), which every real one does.
            dt = max(dt, 30.0)
        sent = int(SPEED_BPS / 8 * dt * load)
        now += dt
        uptime = (uptime + int(dt * 100)) % 2**32
        rebooted = event == "reboot"
        if rebooted:
            counter, uptime = 0, int((dt - 20) * 100 * load)  # came back up partway through
        if event == "reindex":
            if_index += 1
        if event == "discontinuity":
            # The agent stamps ifCounterDiscontinuityTime with its sysUpTime; after a reboot
            # that can repeat the old stamp, which no poller could tell from "nothing happened".
            disc = uptime if uptime != disc else uptime + 1
        counter = (counter + sent) % mod
        pending_true += sent
        answered = event != "missed"
        pc = PortCounters("Gi0/1", if_index, counter, 0, bits, "up", "up", SPEED_MBPS, disc)
        poll = PortPoll("sw1", T0 + timedelta(seconds=now), now, uptime,
                        {"Gi0/1": pc} if answered else {})
        yield poll, pending_true, event
        if answered:
            pending_true = 0


@settings(max_examples=400, deadline=None)
@given(bits=st.sampled_from([32, 64]), start=st.integers(min_value=0, max_value=2**64 - 1),
       steps=st.lists(interval, min_size=1, max_size=40))
# Found on a clean-clone run: an idle port rebooted twice, each time followed by a discontinuity
# stamped with the same sysUpTime; the model must make every discontinuity observable.
@example(bits=32, start=0, steps=[(1.0, 0.0, "reboot"), (1.0, 0.0, "discontinuity"),
                                  (1.0, 0.0, "reboot"), (1.0, 0.0, "discontinuity")])
def test_counter_policy_properties(bits: int, start: int, steps: list[tuple[float, float, str]]) -> None:
    base: Baseline | None = None
    accepted = true_total = 0
    disrupted = False  # a reboot/reindex/discontinuity since the last baseline
    for poll, true_bytes, event in simulate(bits, start, steps):
        true_total += true_bytes
        disrupted = disrupted or event in ("reboot", "reindex", "discontinuity")
        sample, base = step(base, poll, "Gi0/1", configured_speed_bps=SPEED_BPS)
        if sample.ok:
            assert sample.in_bps is not None and sample.in_octets is not None
            # 1. No rate above the port speed, ever.
            assert sample.in_bps <= SPEED_BPS
            # 2. A reset never yields a rate.
            assert not disrupted, f"rate {sample.in_bps} across a {event}"
            accepted += sample.in_octets
            # 3. Accepted deltas never exceed the bytes really sent.
            assert accepted <= true_total
        if event != "missed":
            disrupted = False


@given(st.integers(min_value=0, max_value=2**64 - 1), st.integers(min_value=1, max_value=2**40))
def test_counter64_decrease_is_never_a_rate_nor_a_baseline_on_its_own(old: int, drop: int) -> None:
    # Issue 11: without sysUpTime, snmpEngineBoots or ifCounterDiscontinuityTime confirming a
    # discontinuity, the lower reading is suspect and the trusted baseline stays.
    new = max(0, old - drop)
    if new == old:
        return
    def mk(v: int, now: float) -> PortPoll:
        return PortPoll("sw1", T0 + timedelta(seconds=now), now, None,
                        {"p": PortCounters("p", 1, v, 0, 64, high_speed_mbps=100)})
    _, base = step(None, mk(old, 0.0), "p", configured_speed_bps=SPEED_BPS)
    sample, after = step(base, mk(new, 60.0), "p", configured_speed_bps=SPEED_BPS)
    assert sample.status == "suspect" and sample.in_bps is None
    assert after is not None and base is not None and after.in_octets == base.in_octets


# Issue 11: faults that are not discontinuities. `agent`: only the SNMP agent restarted
# (sysUpTime starts again, the counters go on); `zeros`: the agent answers 0 while it rebuilds.
benign = st.tuples(
    st.floats(min_value=0.5, max_value=900.0, allow_nan=False),
    # Below line rate by more than sysUpTime's 10 ms quantisation of a short interval.
    st.floats(min_value=0.0, max_value=0.95, allow_nan=False),
    st.sampled_from(["none"] * 6 + ["missed", "zeros", "agent"]),
)


@settings(max_examples=300, deadline=None)
@given(start=st.integers(min_value=2**40, max_value=2**63),
       steps=st.lists(benign, min_size=1, max_size=40))
def test_without_a_discontinuity_every_byte_is_billed_exactly_once(
        start: int, steps: list[tuple[float, float, str]]) -> None:
    counter, uptime, now = start, 12_345, 1000.0
    base: Baseline | None = None
    billed = sent = 0
    first = True
    # Start and end on a trusted answer.
    for dt, load, event in [(60.0, 0.5, "none"), *steps, (60.0, 0.5, "none")]:
        n = int(SPEED_BPS / 8 * dt * load)
        now += dt
        counter += n
        uptime = 2_000 if event == "agent" else uptime + int(dt * 100)
        if not first:
            sent += n
        shown = 0 if event == "zeros" else counter
        pc = PortCounters("Gi0/1", 3, shown, shown, 64, "up", "up", SPEED_MBPS)
        poll = PortPoll("sw1", T0 + timedelta(seconds=now), now, uptime,
                        {"Gi0/1": pc} if event != "missed" else {})
        sample, base = step(base, poll, "Gi0/1", configured_speed_bps=SPEED_BPS)
        if first:
            assert sample.status == "first"
            first = False
            continue
        assert sample.status not in ("reset", "glitch"), sample.reason
        if sample.ok:
            assert sample.in_bps is not None and sample.in_bps <= SPEED_BPS
        if sample.billable:
            assert sample.in_octets is not None
            billed += sample.in_octets
        assert billed <= sent
    assert billed == sent
