"""The gentler rungs (issue 12) as a table: finding × `restrict` × mode × rail, then the life of a restriction.

Pure: policies/ladder.py and policies/enforce.py only. Throttled or blocked time is not an
outage, so none of these changes carries a shut's ledger cause into an outage; the shell's
ledger records are tested in tests/unit/test_enforcer_restrict.py and the sim scenarios.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from itertools import product

import pytest
from rackwarden.policies import enforce as E
from rackwarden.policies import ladder as L
from rackwarden.policies import safety as S
from rackwarden.policies.cap import CapStateName, CapVerdict

AT = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
EV = L.Evidence("R1/R2 cap 10 Mbit/s", "15 Mbit/s for 300 s")
CAP = 10_000_000
THROTTLE = L.Restriction("throttle", rate_bps=CAP)
BLOCK = L.Restriction("block", service="smtp")

MODES = ("notify", "enforce")
RAILS = ("none", "protected_port", "held", "switch_budget", "breaker")

# (reason, finding, restrict config, cap in force on `out`) -> the rung the end of the grace
# period takes: a restriction, or a shut.
GRACE_END = {
    ("overage", "overage", (("overage", "throttle"),), True): THROTTLE,
    ("overage", "overage", (("overage", "throttle"),), False): None,  # cap judged on in/max/sum: shut
    ("overage", "overage", (("overage", "shut"),), True): None,
    ("overage", "overage", (), True): None,
    ("abuse", "spam", (("spam", "block_smtp"),), True): BLOCK,
    ("abuse", "spam", (("spam", "shut"),), True): None,
    ("abuse", "flood", (("spam", "block_smtp"),), True): None,  # floods keep today's rung
    ("abuse", "flood", (("flood", "throttle"),), True): THROTTLE,  # ... with throttle as an option
    ("abuse", "scan", (("spam", "block_smtp"), ("scan", "throttle")), True): THROTTLE,
}


def rails(rail: str = "none", mode: str = "enforce", cap: bool = True) -> E.Rails:
    r = E.Rails(mode=mode, switch="sw1", port="Gi0/1", inventory_ports=("Gi0/1", "Gi0/2"),  # type: ignore[arg-type]
                cap_bps=CAP if cap else None)
    recent = tuple((AT - timedelta(seconds=60), "sw1") for _ in range(2))
    return {
        "none": r,
        "protected_port": replace(r, protected=True),
        "held": replace(r, held=True),
        "switch_budget": replace(r, safety=S.SafetyState(recent_shuts=recent)),
        "breaker": replace(r, safety=S.SafetyState(open_breakers=(("sw1", AT, "meter"),))),
    }[rail]


def rule(reason: L.Reason, restrict: tuple[tuple[str, str], ...] = ()) -> L.LadderRule:
    return replace(L.DEFAULT_RULES[reason], grace_s=300.0, restrict=restrict)


def noticed(reason: L.Reason) -> L.Rung:
    return L.Rung("s1", reason, phase="noticed", episode=1, noticed_at=AT - timedelta(seconds=301),
                  notice="delivered", evidence=EV)


def changes(d: E.Decision) -> list[tuple[str, bool]]:
    return [(c.action, c.dry_run) for c in d.changes]


@pytest.mark.parametrize("case,mode,rail", list(product(GRACE_END, MODES, RAILS)))
def test_the_end_of_the_grace_period(case: tuple[L.Reason, str, tuple[tuple[str, str], ...], bool], mode: str,
                                     rail: str) -> None:
    reason, finding, restrict, cap_out = case
    wanted = GRACE_END[case]
    d = E.step(noticed(reason), rule(reason, restrict), E.Observation(True, EV, finding=finding),
               rails(rail, mode, cap_out), AT)
    action = "shut" if wanted is None else wanted.apply_action
    if rail != "none":
        # Every rail of a shut refuses a restriction too: the rung stays noticed, the rail is named.
        assert d.changes == () and d.rung.phase == "noticed"
        assert d.refusal is not None and d.refusal.rail == rail
        return
    assert d.refusal is None
    if mode == "notify":
        # A dry run restricts nothing and announces nothing.
        assert changes(d) == [(action, True)] and d.rung.phase == "noticed"
        assert not any(isinstance(i, L.Notify) for i in d.intents)
        return
    assert changes(d) == [(action, False)]
    if wanted is None:
        assert d.rung.phase == "shut" and d.rung.restriction is None
        return
    (c,) = d.changes
    assert c.restriction == wanted and d.rung.phase == "restricted" and d.rung.restriction == wanted
    # The restriction is announced only once it is read back on the switch.
    assert not any(isinstance(i, L.Notify) for i in d.intents)
    done = E.step(d.rung, rule(reason, restrict), E.ActionOutcome(c.key, c.action, "APPLIED", None, wanted),
                  rails(), AT)
    (notice,) = [i for i in done.intents if isinstance(i, L.Notify)]
    assert notice.stage == "restriction" and notice.restriction == wanted and notice.until == d.rung.until


def test_the_warning_names_the_restriction_that_follows_it() -> None:
    d = E.step(L.Rung("s1", "overage"), rule("overage", (("overage", "throttle"),)),
               E.Observation(True, EV, finding="overage"), rails(), AT)
    (warning,) = [i for i in d.intents if isinstance(i, L.Notify)]
    assert warning.stage == "warning" and warning.restriction == THROTTLE


def throttled(until: datetime | None = AT + timedelta(hours=1)) -> L.Rung:
    return L.Rung("s1", "overage", phase="restricted", episode=1, noticed_at=AT - timedelta(hours=1),
                  notice="delivered", evidence=EV, restriction=THROTTLE, restricted_at=AT, until=until,
                  repeats=(AT,))


OVERAGE = rule("overage", (("overage", "throttle"),))


def test_a_throttle_stays_while_the_demand_is_over_the_cap_even_after_its_term() -> None:
    r = throttled()
    during = E.step(r, OVERAGE, E.Observation(True, EV, finding="overage"), rails(), AT + timedelta(minutes=30))
    assert during.rung.phase == "restricted" and during.changes == ()
    after = E.step(r, OVERAGE, E.Observation(True, EV, finding="overage"), rails(), AT + timedelta(hours=2))
    assert after.rung.phase == "restricted" and after.changes == ()
    assert "still violates" in after.why


def test_a_throttle_is_lifted_after_its_term_once_the_demand_is_back_under_the_cap() -> None:
    r = throttled()
    early = E.step(r, OVERAGE, E.Observation(False), rails(), AT + timedelta(minutes=30))
    assert early.rung.phase == "restricted" and early.changes == ()
    d = E.step(r, OVERAGE, E.Observation(False), rails(), AT + timedelta(hours=1))
    assert changes(d) == [("unthrottle", False)] and d.rung.phase == "restored" and d.rung.restriction is None
    assert not any(isinstance(i, L.Notify) for i in d.intents)  # told once read back
    (c,) = d.changes
    done = E.step(d.rung, OVERAGE, E.ActionOutcome(c.key, "unthrottle", "APPLIED", None, THROTTLE), rails(),
                  AT + timedelta(hours=1))
    (notice,) = [i for i in done.intents if isinstance(i, L.Notify)]
    assert notice.stage == "lifted" and notice.restriction == THROTTLE


@pytest.mark.parametrize(("state", "valid", "lifted"), [
    ("over", True, False),  # over the cap again, the run restarted (a missed poll): not yet sustained
    ("ok", False, False),  # no rate measured: nothing shows the traffic is back under the cap
    ("ok", True, True),
])
def test_a_throttle_is_lifted_after_its_term_only_on_a_measurement_under_the_cap(
        state: CapStateName, valid: bool, lifted: bool) -> None:
    """Found in the lab: a poll that broke the over-cap run left the next verdict "over", not
    "sustained", so not violating, and the term's end lifted the throttle of a server still
    sending twice its cap (the restore re-check already counted "over" as still violating)."""
    v = CapVerdict("s1", AT + timedelta(hours=1), state, False, CAP, "out", valid=valid,
                   judged_bps=2 * CAP if state == "over" else CAP / 2)
    obs = E.overage_observation(v, "s1", "rental")
    assert not obs.violating
    d = E.step(throttled(), OVERAGE, obs, rails(), AT + timedelta(hours=1))
    assert (changes(d) == [("unthrottle", False)]) is lifted
    assert d.rung.phase == ("restored" if lifted else "restricted")
    if not lifted:
        assert "not measured back within the rule" in d.why


@pytest.mark.parametrize(("state", "valid", "ended"), [
    ("over", True, False), ("ok", False, False), ("ok", True, True)])
def test_a_notice_ends_only_on_a_measurement_under_the_cap(state: CapStateName, valid: bool, ended: bool) -> None:
    """Found in the lab too (test_notify_mode_shuts_nothing_...): a restarted over-cap run ended
    the episode, and the next window sent the customer a second warning for the same overage."""
    v = CapVerdict("s1", AT, state, False, CAP, "out", valid=valid,
                   judged_bps=2 * CAP if state == "over" else CAP / 2)
    d = E.step(noticed("overage"), OVERAGE, E.overage_observation(v, "s1", "rental"), rails(), AT)
    assert d.rung.phase == ("idle" if ended else "noticed") and d.changes == () and d.intents == ()
    assert d.rung.episode == noticed("overage").episode


def test_a_repeat_offender_is_throttled_for_longer() -> None:
    r = replace(throttled(), phase="restored", restriction=None, until=None, restored_at=AT)
    later = AT + timedelta(hours=3)
    again = E.step(r, replace(OVERAGE, grace_s=0.0), E.Observation(True, EV, finding="overage"), rails(), later)
    assert again.rung.phase == "restricted"
    assert again.rung.until == later + timedelta(seconds=2 * OVERAGE.term_s)  # type: ignore[operator]


@pytest.mark.parametrize("state", ["FAILED", "UNKNOWN"])
def test_a_throttle_that_does_not_hold_falls_to_the_shut_rung_and_is_paged(state: E.ActionState) -> None:
    r = throttled()
    d = E.step(r, OVERAGE, E.ActionOutcome("k", "throttle", state, None, THROTTLE), rails(), AT)
    assert [i.name for i in d.intents if isinstance(i, E.Page)] == [f"RackWardenThrottle{state.capitalize()}"]
    assert changes(d) == [("shut", False)] and d.rung.phase == "shut" and d.rung.restriction_failed
    # UNKNOWN may have left it on the switch: the restore that ends the shut lifts it too.
    assert d.rung.restriction == (THROTTLE if state == "UNKNOWN" else None)
    back = E.step(d.rung, OVERAGE, E.Request("restore", "noc"), rails(), AT + timedelta(minutes=1))
    wanted = [("unthrottle", False), ("restore", False)] if state == "UNKNOWN" else [("restore", False)]
    assert changes(back) == wanted


def test_a_throttle_that_does_not_hold_is_not_followed_by_a_refused_shut() -> None:
    d = E.step(throttled(), OVERAGE, E.ActionOutcome("k", "throttle", "FAILED", None, THROTTLE),
               rails("switch_budget"), AT)
    assert d.changes == () and d.rung.phase == "noticed" and d.rung.restriction_failed
    assert d.refusal is not None and d.refusal.rail == "switch_budget"
    # The next observation tries the shut again, never the throttle that failed.
    nxt = E.step(d.rung, OVERAGE, E.Observation(True, EV, finding="overage"), rails(), AT + timedelta(minutes=1))
    assert changes(nxt) == [("shut", False)]


def test_the_switch_enforced_rate_is_what_the_notice_states() -> None:
    vrp = L.Restriction("throttle", rate_bps=9_984_000)
    d = E.step(throttled(), OVERAGE, E.ActionOutcome("s1:overage:1:throttle", "throttle", "APPLIED", None, vrp),
               rails(), AT)
    assert d.rung.restriction == THROTTLE  # the rung keeps what was asked: the cap
    (notice,) = [i for i in d.intents if isinstance(i, L.Notify)]
    assert notice.restriction == vrp and notice.key == "s1:overage:1:restriction"
    # A vendor's rounding is no cap change: the next poll moves nothing.
    nxt = E.step(d.rung, OVERAGE, E.Observation(True, EV, finding="overage"), rails(), AT + timedelta(minutes=1))
    assert nxt.changes == ()


@pytest.mark.parametrize("new_cap", [20_000_000, 5_000_000])
def test_a_cap_change_moves_the_throttle_to_the_new_cap(new_cap: int) -> None:
    r = throttled()
    d = E.step(r, OVERAGE, E.Observation(True, EV, finding="overage"), replace(rails(), cap_bps=new_cap),
               AT + timedelta(minutes=5))
    (c,) = d.changes
    assert (c.action, c.restriction) == ("throttle", L.Restriction("throttle", rate_bps=new_cap))
    assert c.key == f"s1:overage:1:throttle-{new_cap}" and d.rung.until == r.until
    assert d.rung.phase == "restricted" and d.rung.restriction == c.restriction
    done = E.step(d.rung, OVERAGE, E.ActionOutcome(c.key, "throttle", "APPLIED", None, c.restriction), rails(),
                  AT + timedelta(minutes=5))
    (notice,) = [i for i in done.intents if isinstance(i, L.Notify)]
    assert notice.stage == "restriction" and notice.key == f"s1:overage:1:restriction-{new_cap}"
    # Under a hold, the cap change waits: nothing is touched.
    held = E.step(r, OVERAGE, E.Observation(True, EV, finding="overage"),
                  replace(rails("held"), cap_bps=new_cap), AT + timedelta(minutes=5))
    assert held.changes == () and held.rung.restriction == THROTTLE


ABUSE = rule("abuse", (("spam", "block_smtp"),))


def blocked() -> L.Rung:
    return L.Rung("s1", "abuse", phase="restricted", episode=1, noticed_at=AT - timedelta(hours=1),
                  notice="delivered", evidence=EV, restriction=BLOCK, restricted_at=AT, until=None, repeats=(AT,))


def test_spam_seen_while_outbound_smtp_is_blocked_keeps_the_block() -> None:
    d = E.step(blocked(), ABUSE, E.Observation(True, EV, finding="spam"), rails(), AT + timedelta(hours=5))
    assert d.rung.phase == "restricted" and d.changes == ()


def test_abuse_that_goes_on_beyond_the_block_is_shut() -> None:
    d = E.step(blocked(), ABUSE, E.Observation(True, EV, attack=True, finding="flood"), rails(),
               AT + timedelta(minutes=5))
    assert changes(d) == [("shut", False)] and d.rung.phase == "shut"
    assert d.changes[0].ledger_cause == "abuse"
    # The block stays under the shut and goes with its restore.
    back = E.step(d.rung, ABUSE, E.Request("restore", "noc"), rails(), AT + timedelta(hours=1))
    assert changes(back) == [("unblock", False), ("restore", False)]


def test_abuse_beyond_the_block_under_a_refusing_rail_keeps_the_block() -> None:
    d = E.step(blocked(), ABUSE, E.Observation(True, EV, finding="scan"), rails("held"), AT)
    assert d.changes == () and d.rung.phase == "restricted"


@pytest.mark.parametrize("violating,lifted", [(True, False), (None, False), (False, True)])
def test_a_recheck_lifts_a_restriction_only_on_traffic_within_the_rule(violating: bool | None, lifted: bool) -> None:
    d = E.step(blocked(), ABUSE, E.Request("restore", "customer:ops@cust-1", violating=violating), rails(), AT)
    if lifted:
        assert changes(d) == [("unblock", False)] and d.rung.phase == "restored"
    else:
        assert d.changes == () and d.rung.phase == "restricted" and not d.rung.restore_requested
        assert "re-check" in d.why


def test_a_requested_suspension_of_a_restricted_server_is_a_shut() -> None:
    d = E.step(throttled(), OVERAGE, E.Request("suspend", "noc", "customer asked"), rails(), AT)
    assert changes(d) == [("shut", False)] and d.rung.phase == "shut"


@pytest.mark.parametrize("state", ["FAILED", "UNKNOWN"])
def test_a_lift_that_does_not_hold_leaves_the_port_restricted_without_a_term(state: E.ActionState) -> None:
    d = E.step(throttled(), OVERAGE, E.Observation(False), rails(), AT + timedelta(hours=1))
    (c,) = d.changes
    out = E.step(d.rung, OVERAGE, E.ActionOutcome(c.key, "unthrottle", state, None, THROTTLE), rails(),
                 AT + timedelta(hours=1))
    assert out.rung.phase == "restricted" and out.rung.restriction == THROTTLE and out.rung.until is None
    assert [i.name for i in out.intents if isinstance(i, E.Page)] == [f"RackWardenUnthrottle{state.capitalize()}"]
    assert not any(isinstance(i, L.Notify) for i in out.intents)


def test_a_standby_restricts_nothing() -> None:
    d = E.step(noticed("overage"), OVERAGE, E.Observation(True, EV, finding="overage"),
               replace(rails(), lease_held=False), AT)
    assert d.changes == () and d.rung.phase == "noticed"


def test_a_restriction_needs_what_it_restricts() -> None:
    with pytest.raises(ValueError):
        L.Restriction("throttle")
    with pytest.raises(ValueError):
        L.Restriction("block")


def test_servers_already_throttled_do_not_trip_the_breaker() -> None:
    from rackwarden.policies.cap import CapVerdict

    limits = S.SafetyConfig(breaker_fraction=0.5, breaker_min_servers=3)
    over = [CapVerdict(f"s{i}", AT, "sustained", True, CAP, "out", True, judged_bps=15e6, covered_s=300)  # type: ignore[arg-type]
            for i in range(1, 4)]
    ok = [CapVerdict("s4", AT, "ok", True, CAP, "out", True, judged_bps=1e6, covered_s=300)]  # type: ignore[arg-type]
    # Three of four breaching at once looks like a meter fault: the breaker opens...
    _, why = E.breaker(S.SafetyState(), limits, AT, "sw1", over + ok)
    assert why is not None
    # ...but two of them are throttled already (their ports count the demand the policer drops):
    # one new breach is no meter fault.
    state, why = E.breaker(S.SafetyState(), limits, AT, "sw1", over + ok, throttled={"s1", "s2"})
    assert why is None and state.open_breakers == ()
