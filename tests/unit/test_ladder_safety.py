"""The enforcement ladder and the safety rails, table-driven on a hand-advanced clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from rackwarden.policies import ladder as L
from rackwarden.policies import safety as S

T0 = datetime(2026, 11, 22, 2, 0, tzinfo=UTC)
EV = L.Evidence("R1 cap 10 Mbit/s", "15 Mbit/s for 300 s", (("rate_bps", 15e6),))


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def kinds(step: L.Step) -> list[str]:
    return [f"{type(i).__name__}:{getattr(i, 'stage', '')}" for i in step.intents]


def run(rule: L.LadderRule, script: list[tuple[float, bool]], reason: L.Reason = "overage",
        attack: bool = False, unreachable: bool = False) -> list[tuple[float, str, list[str]]]:
    r = L.Rung("srv-1", reason)
    out = []
    for t, violating in script:
        s = L.step(r, rule, at(t), violating=violating, evidence=EV if violating else None, attack=attack)
        r = s.rung
        if unreachable and r.phase == "noticed" and r.notice == "pending":
            r = L.notice_result(r, "unreachable")
        out.append((t, r.phase, kinds(s)))
    return out


OVERAGE = L.LadderRule(grace_s=60, term_s=600)


def test_overage_notifies_waits_the_grace_then_shuts_then_restores_after_the_term() -> None:
    steps = run(OVERAGE, [(0, True), (30, True), (60, True), (300, False), (659, False), (660, False)])
    assert steps == [
        (0, "noticed", ["Notify:warning"]),
        (30, "noticed", []),
        (60, "shut", ["ShutPort:", "Notify:suspension"]),
        (300, "shut", []),
        (659, "shut", []),
        (660, "restored", ["RestorePort:", "Notify:restored"]),
    ]


def test_overage_that_stops_within_grace_is_not_shut() -> None:
    steps = run(OVERAGE, [(0, True), (30, False), (90, False)])
    assert [p for _, p, _ in steps] == ["noticed", "idle", "idle"]
    assert all("ShutPort:" not in k for _, _, k in steps)


def test_repeat_offender_gets_a_longer_term() -> None:
    r = L.Rung("srv-1", "overage")
    terms = []
    t = 0.0
    for _ in range(3):
        r = L.step(r, OVERAGE, at(t), violating=True, evidence=EV).rung
        s = L.step(r, OVERAGE, at(t + 60), violating=True, evidence=EV)
        r = s.rung
        shut = next(i for i in s.intents if isinstance(i, L.ShutPort))
        assert shut.until is not None
        terms.append((shut.until - at(t + 60)).total_seconds())
        t = (shut.until - T0).total_seconds()
        r = L.step(r, OVERAGE, at(t), violating=False).rung
        assert r.phase == "restored"
    assert terms == [600, 1200, 2400]


ABUSE = L.DEFAULT_RULES["abuse"]


@pytest.mark.parametrize("unreachable,attack,expected_shut_at", [
    (True, True, 10),     # R9: attack and no way to reach the customer: cut first
    (False, True, 300),   # reachable: the notice gets its grace period
    (True, False, 300),   # not an attack (e.g. spam): grace even when unreachable
])
def test_abuse_cuts_first_only_for_an_unreachable_attacker(unreachable: bool, attack: bool,
                                                           expected_shut_at: float) -> None:
    steps = run(ABUSE, [(0, True), (10, True), (299, True), (300, True)], "abuse",
                attack=attack, unreachable=unreachable)
    first_shut = next(t for t, _, k in steps if "ShutPort:" in k)
    assert first_shut == expected_shut_at
    # The notice attempt always comes first (R9: the attempt is recorded).
    assert steps[0][2] == ["Notify:warning"]


def test_abuse_stays_shut_until_restore_is_requested() -> None:
    r = L.Rung("srv-1", "abuse")
    r = L.step(r, ABUSE, at(0), violating=True, evidence=EV).rung
    r = L.step(r, ABUSE, at(300), violating=True, evidence=EV).rung
    assert r.phase == "shut" and r.until is None
    assert L.step(r, ABUSE, at(10**6), violating=False).rung.phase == "shut"
    s = L.step(L.request_restore(r), ABUSE, at(10**6 + 1), violating=False)
    assert s.rung.phase == "restored" and isinstance(s.intents[0], L.RestorePort)


def test_nonpayment_shuts_at_once_with_its_notice() -> None:
    s = L.step(L.Rung("srv-1", "nonpayment"), L.DEFAULT_RULES["nonpayment"], at(0), violating=True, evidence=EV)
    assert kinds(s) == ["Notify:warning", "ShutPort:", "Notify:suspension"]
    assert s.rung.phase == "shut"


def test_idempotency_keys_differ_per_episode_and_stage() -> None:
    r = L.Rung("srv-1", "operator")
    keys = []
    for t in (0, 100):
        s = L.step(r, L.DEFAULT_RULES["operator"], at(t), violating=True, evidence=EV)
        keys += [i.key for i in s.intents]
        r = L.step(L.request_restore(s.rung), L.DEFAULT_RULES["operator"], at(t + 50), violating=False).rung
    assert len(keys) == len(set(keys)) == 6


CFG = S.SafetyConfig(max_shuts_per_switch=2, max_shuts_total=3, budget_window_s=3600,
                     breaker_fraction=0.5, breaker_min_servers=3)
PORTS = ("p1", "p2", "p3", "uplink")


def check(state: S.SafetyState, t: float, switch: str = "sw1", port: str = "p1", **kw: object) -> S.Verdict:
    args = dict(switch=switch, port=port, inventory_ports=PORTS, protected_ports=frozenset({"uplink"}),
                managed=True)
    args.update(kw)
    return S.check_shut(state, CFG, at(t), **args)  # type: ignore[arg-type]


@pytest.mark.parametrize("kw,rail", [
    ({"port": "uplink"}, "protected_port"),
    ({"port": "Po1"}, "unknown_port"),
    ({"managed": False}, "unknown_port"),
    ({"held": True}, "held"),
])
def test_rails_refuse(kw: dict[str, object], rail: str) -> None:
    v = check(S.SafetyState(), 0, **kw)
    assert (v.allowed, v.rail) == (False, rail)


def test_budgets_per_switch_and_total_in_a_sliding_window() -> None:
    st = S.SafetyState()
    for t in (0, 10):
        assert check(st, t).allowed
        st = S.record_shut(st, CFG, at(t), "sw1")
    assert check(st, 20).rail == "switch_budget"
    assert check(st, 20, switch="sw2").allowed
    st = S.record_shut(st, CFG, at(20), "sw2")
    assert check(st, 30, switch="sw3").rail == "global_budget"
    # An hour after the first two, the budget is free again.
    assert check(st, 3601 + 10).allowed


def test_breaker_opens_above_the_fraction_and_stays_open_until_reset() -> None:
    st, why = S.evaluate_breaker(S.SafetyState(), CFG, at(0), switch="sw1", breaching=2, servers=4)
    assert why is None and check(st, 0).allowed  # 2 of 4 is not more than half
    st, why = S.evaluate_breaker(st, CFG, at(1), switch="sw1", breaching=3, servers=4)
    assert why is not None and "3 of 4" in why
    assert check(st, 2).rail == "breaker"
    st2, _ = S.evaluate_breaker(st, CFG, at(3), switch="sw1", breaching=0, servers=4)
    assert check(st2, 4).rail == "breaker"
    assert check(S.reset_breaker(st2, "sw1"), 5).allowed
    small, why = S.evaluate_breaker(S.SafetyState(), CFG, at(0), switch="sw9", breaching=2, servers=2)
    assert why is None
