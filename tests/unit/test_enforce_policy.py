"""The enforcement step as a table: every reason × mode × rail × reachability, with the intents it must give."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from itertools import product
from pathlib import Path

import pytest
from rackwarden.policies import enforce as E
from rackwarden.policies import ladder as L
from rackwarden.policies import safety as S
from rackwarden.policies.detect import ATTACKS_OTHERS, DETECTORS, Detection

AT = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
RULES = L.DEFAULT_RULES
EV = L.Evidence("R", "evidence")

# What happens one second after a warning, on a fresh observation, when no rail refuses:
# (reason, attack, customer reached) -> the port is shut now. R9: only an attack on others
# is cut before the grace period ends, and only when the customer could not be told.
# Requests (non-payment, operator) shut at once whatever the reachability.
SHUT_NOW = {
    ("overage", False, True): False, ("overage", False, False): False,
    ("abuse", False, True): False, ("abuse", False, False): False,
    ("abuse", True, True): False, ("abuse", True, False): True,
    ("nonpayment", False, True): True, ("nonpayment", False, False): True,
    ("operator", False, True): True, ("operator", False, False): True,
}
CASES = [(reason, attack, reached) for (reason, attack, reached) in SHUT_NOW]
MODES = ("off", "notify", "enforce")
RAILS = ("none", "protected_port", "unknown_port", "held", "switch_budget", "global_budget", "breaker", "lease")


def rails_with(rail: str, mode: str) -> E.Rails:
    r = E.Rails(mode=mode, switch="sw1", port="Gi0/1", inventory_ports=("Gi0/1", "Gi0/2"))  # type: ignore[arg-type]
    recent = lambda n, sw: tuple((AT - timedelta(seconds=60), sw) for _ in range(n))  # noqa: E731
    return {
        "none": r,
        "protected_port": replace(r, protected=True),
        "unknown_port": replace(r, managed=False),
        "held": replace(r, held=True),
        "switch_budget": replace(r, safety=S.SafetyState(recent_shuts=recent(2, "sw1"))),
        "global_budget": replace(r, safety=S.SafetyState(recent_shuts=recent(5, "sw9"))),
        "breaker": replace(r, safety=S.SafetyState(open_breakers=(("sw1", AT, "meter"),))),
        "lease": replace(r, lease_held=False),
    }[rail]


def noticed(reason: L.Reason, attack: bool, reached: bool) -> L.Rung:
    return L.Rung("s1", reason, phase="noticed", episode=1, noticed_at=AT - timedelta(seconds=1),
                  notice="delivered" if reached else "unreachable", evidence=EV, attack=attack)


def event_for(reason: str, attack: bool) -> E.Event:
    if reason in ("nonpayment", "operator"):
        return E.Request("suspend", "billing")
    return E.Observation(True, EV, attack=attack)


@pytest.mark.parametrize("reason,attack,reached,mode,rail", [
    (*c, m, r) for c, m, r in product(CASES, MODES, RAILS)])
def test_the_step_table(reason: L.Reason, attack: bool, reached: bool, mode: str, rail: str) -> None:
    start = noticed(reason, attack, reached) if reason in ("overage", "abuse") else L.Rung("s1", reason)
    d = E.step(start, RULES[reason], event_for(reason, attack), rails_with(rail, mode), AT)
    shuts = [c for c in d.changes if c.action == "shut"]
    wanted = SHUT_NOW[(reason, attack, reached)]
    if mode == "off":
        assert d.intents == () and d.rung == start and d.refusal is None
        return
    if rail == "lease":
        # A standby decides nothing; a person's request is told which agent to ask.
        assert d.intents == () and d.rung == start
        assert (d.refusal is not None and d.refusal.rail == "lease") == isinstance(event_for(reason, attack), E.Request)
        return
    if not wanted:
        assert shuts == [] and d.refusal is None and d.rung.phase == "noticed"
        return
    if rail != "none":
        # A refused shut never moves the ladder to `shut`; the rail is named.
        assert shuts == [] and d.rung.phase == "noticed"
        assert d.refusal is not None and d.refusal.rail == rail
        return
    assert len(shuts) == 1 and d.refusal is None
    assert shuts[0].ledger_cause == E.LEDGER_CAUSE[reason]
    suspension = any(isinstance(i, L.Notify) and i.stage == "suspension" for i in d.intents)
    if mode == "notify":
        # A dry run suspends nothing: the ladder stays noticed and no suspension is announced.
        assert shuts[0].dry_run and d.rung.phase == "noticed" and not suspension
    else:
        assert not shuts[0].dry_run and d.rung.phase == "shut" and not suspension
        # The suspension is announced once the switch has been read back as shut, not before.
        done = E.step(d.rung, RULES[reason], E.ActionOutcome(shuts[0].key, "shut", "APPLIED", "down"),
                      rails_with(rail, mode), AT)
        (notice,) = [i for i in done.intents if isinstance(i, L.Notify)]
        assert notice.stage == "suspension" and notice.until == d.rung.until


def test_every_detector_declares_whether_it_attacks_others() -> None:
    assert set(ATTACKS_OTHERS) == set(DETECTORS)
    assert {d for d, a in ATTACKS_OTHERS.items() if a} == {"flood", "scan"}


def test_an_unreachable_attacker_is_cut_as_soon_as_the_notice_fails() -> None:
    rails = rails_with("none", "enforce")
    d = E.step(L.Rung("s1", "abuse"), RULES["abuse"], E.Observation(True, EV, attack=True), rails, AT)
    (warning,) = d.intents
    assert isinstance(warning, L.Notify) and warning.stage == "warning" and d.rung.phase == "noticed"
    after = E.step(d.rung, RULES["abuse"], E.NoticeOutcome(warning.key, delivered=False), rails, AT)
    assert [c.action for c in after.changes] == ["shut"] and after.rung.phase == "shut"
    # The same notice failing for a spammer only records that the customer is unreachable.
    d = E.step(L.Rung("s1", "abuse"), RULES["abuse"], E.Observation(True, EV, attack=False), rails, AT)
    after = E.step(d.rung, RULES["abuse"], E.NoticeOutcome(d.intents[0].key, delivered=False), rails, AT)  # type: ignore[union-attr]
    assert after.changes == () and after.rung.phase == "noticed" and after.rung.notice == "unreachable"


def test_a_requested_suspension_promises_no_grace_period() -> None:
    # Bug: the warning of `suspend --reason abuse` promised the abuse grace period (300 s)
    # although the port was shut in the same step.
    rails = rails_with("none", "enforce")
    d = E.step(L.Rung("s1", "abuse"), RULES["abuse"], E.Request("suspend", "noc:li"), rails, AT)
    notices = {i.stage: i for i in d.intents if isinstance(i, L.Notify)}
    assert notices["warning"].until is None and d.rung.phase == "shut"
    # A detection's warning does promise the grace period, which really runs.
    d = E.step(L.Rung("s1", "abuse"), RULES["abuse"], E.Observation(True, EV), rails, AT)
    (warning,) = d.intents
    assert isinstance(warning, L.Notify) and warning.until == AT + timedelta(seconds=RULES["abuse"].grace_s)


def test_a_restore_does_not_bring_up_a_port_another_reason_holds_shut() -> None:
    shut = L.Rung("s1", "overage", phase="shut", episode=1, shut_at=AT, until=AT + timedelta(hours=1), evidence=EV)
    rails = replace(rails_with("none", "enforce"), shut_for=("abuse",))
    d = E.step(shut, RULES["overage"], E.Tick(), rails, AT + timedelta(hours=1))
    assert d.rung.phase == "restored" and d.changes == ()
    d = E.step(shut, RULES["overage"], E.Tick(), rails_with("none", "enforce"), AT + timedelta(hours=1))
    assert [c.action for c in d.changes] == ["restore"]


def test_a_failed_change_is_paged_and_not_retried() -> None:
    shut = L.Rung("s1", "overage", phase="shut", episode=1, shut_at=AT, evidence=EV)
    d = E.step(shut, RULES["overage"], E.ActionOutcome("k", "shut", "FAILED", "up"), rails_with("none", "enforce"), AT)
    assert d.rung == shut and d.changes == ()
    assert [(p.name, p.severity) for p in d.intents if isinstance(p, E.Page)] == [("RackWardenShutFailed", "page")]
    assert not [i for i in d.intents if isinstance(i, L.Notify)]  # no suspension notice for a failed shut


def test_stale_evidence_from_before_a_restore_starts_nothing() -> None:
    restored = L.Rung("s1", "abuse", phase="restored", episode=1, restored_at=AT)
    d = E.step(restored, RULES["abuse"], E.Observation(True, EV, attack=True, seen_at=AT - timedelta(seconds=1)),
               rails_with("none", "enforce"), AT + timedelta(seconds=2))
    assert d.intents == () and d.rung == restored


# -- the bug through the real executor: a spam detection as policies/detect.py builds it ----------


def spam_detection(last_at: datetime) -> Detection:
    # Every actionable finding is `critical` (policies/detect.py); the old enforcer read that
    # as "attack" and cut an unreachable spammer at once, against R9.
    return Detection(
        detector="spam", kind="smtp_fanout", server="s2", rule="R5", severity="critical", actionable=True,
        confidence=0.9, reason="SMTP to 400 hosts in 60 s", first_seen=0.0, last_seen=1.0, first_at=last_at,
        last_at=last_at, samples=500, sampling_rate=1, rates={"smtp_dst_per_min": 400.0}, counts={"dsts": 400},
        thresholds={}, subjects=("203.0.113.9",), saturated=False, top_flows=(), evidence=(), ports=(),
    )


def test_an_unreachable_spammer_is_not_cut_before_the_grace_period(tmp_path: Path) -> None:
    from tests.unit.test_enforcer import Rig  # the enforcer's own rig: real store, fake switch

    rig = Rig(tmp_path)
    grace = rig.enf.config.enforcement.rules["abuse"].rule.grace_s
    asyncio.run(rig.enf.on_abuse("s2", spam_detection(rig.clock.at()), None))  # notice: unreachable
    rig.clock.advance(1)
    asyncio.run(rig.enf.on_abuse("s2", spam_detection(rig.clock.at()), None))
    assert rig.sw.admin["Gi0/2"] == "up" and rig.enf.rungs[("s2", "abuse")].phase == "noticed"
    rig.clock.advance(grace)
    asyncio.run(rig.enf.on_abuse("s2", spam_detection(rig.clock.at()), None))
    assert rig.sw.admin["Gi0/2"] == "down" and rig.enf.rungs[("s2", "abuse")].phase == "shut"


def test_the_customer_notice_of_a_requested_suspension_promises_no_grace(tmp_path: Path) -> None:
    # Bug: agent/notices.py recomputed the warning's deadline from the configured grace, so
    # `suspend --reason abuse` told the customer to fix it "before" a time after the cut.
    from types import SimpleNamespace

    from rackwarden.agent.notices import CustomerNotices

    from tests.unit.test_enforcer import Rig

    sent: list[object] = []

    class Smtp:
        async def send(self, notice: object, at: datetime) -> SimpleNamespace:
            sent.append(notice)
            return SimpleNamespace(delivered=True, detail="250 ok")

    rig = Rig(tmp_path)
    rig.enf.notifier = CustomerNotices(rig.cfg, Smtp())  # type: ignore[arg-type]
    asyncio.run(rig.enf.suspend("s3", "abuse", "phishing kit reported by CNCERT", "noc:li"))
    by_stage = {n.stage: n for n in sent}  # type: ignore[attr-defined]
    assert rig.sw.admin["Gi0/3"] == "down"
    assert by_stage["warning"].until is None
    assert by_stage["suspension"].until is None  # abuse: until a restore request
