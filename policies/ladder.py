"""The enforcement ladder (CONTRACT_RULES R2, R9–R11): observe → notify → grace → shut → restore, per server and reason.

Pure: every function takes `at` (aware time) and returns the new state and intents with
reasons. The enforcer carries the intents out; the safety rails (policies/safety.py) may
still refuse a shut. Reasons and their defaults:

- `overage` (R2): notify, wait a grace period, shut if the overage persists; restore after
  the term; repeat offenders get longer terms. Customer-caused: no SLA credit (R16).
- `abuse` (R5–R7, R10): notify; shut after a short grace, or at once when the customer
  cannot be reached and the detector says it is an attack (R9). The notice attempt is always
  recorded first. Restore needs an operator or a restore request.
- `nonpayment` (R11) and `operator`: asked for by billing or a person; notify and shut after
  the configured grace (default none); restore on request.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

Reason = Literal["overage", "abuse", "nonpayment", "operator"]
REASONS: tuple[Reason, ...] = ("overage", "abuse", "nonpayment", "operator")
Phase = Literal["idle", "noticed", "shut", "restored"]
NoticeOutcome = Literal["pending", "delivered", "unreachable"]


@dataclass(frozen=True, slots=True)
class LadderRule:
    """How one reason climbs the ladder."""

    grace_s: float  # from the notice to the shut
    term_s: float | None  # how long a shut lasts before automatic restore; None: on request
    shut_at_once_if_unreachable: bool = False  # R9: cut first only when the notice failed
    repeat_multiplier: float = 2.0  # each repeat within repeat_memory_s multiplies the term
    max_term_s: float = 7 * 86400.0
    repeat_memory_s: float = 30 * 86400.0


DEFAULT_RULES: dict[Reason, LadderRule] = {
    "overage": LadderRule(grace_s=600.0, term_s=3600.0),
    "abuse": LadderRule(grace_s=300.0, term_s=None, shut_at_once_if_unreachable=True),
    "nonpayment": LadderRule(grace_s=0.0, term_s=None),
    "operator": LadderRule(grace_s=0.0, term_s=None),
}


@dataclass(frozen=True, slots=True)
class Evidence:
    """What a decision rests on: the rule, the figures and where the samples are."""

    rule: str  # e.g. "R1 cap 10 Mbit/s over 300 s"
    summary: str
    figures: tuple[tuple[str, float], ...] = ()
    refs: tuple[str, ...] = ()  # pcap paths, poll records, detection ids


@dataclass(frozen=True, slots=True)
class Notify:
    server: str
    reason: Reason
    stage: Literal["warning", "suspension", "restored"]
    evidence: Evidence
    key: str  # idempotency: the same notice is not sent twice
    # What the notice promises: a warning's grace end, a suspension's term end; None promises
    # no time (a shut that follows at once, a suspension until a restore request).
    until: datetime | None = None


@dataclass(frozen=True, slots=True)
class ShutPort:
    server: str
    reason: Reason
    evidence: Evidence
    key: str
    until: datetime | None  # None: until an operator or a restore request


@dataclass(frozen=True, slots=True)
class RestorePort:
    server: str
    reason: Reason
    why: str
    key: str


Intent = Notify | ShutPort | RestorePort


@dataclass(frozen=True, slots=True)
class Rung:
    """Where one server stands on the ladder for one reason."""

    server: str
    reason: Reason
    phase: Phase = "idle"
    episode: int = 0  # increments per violation episode; part of every idempotency key
    noticed_at: datetime | None = None
    notice: NoticeOutcome = "pending"
    shut_at: datetime | None = None
    until: datetime | None = None
    repeats: tuple[datetime, ...] = ()  # past shut times, for repeat-offender terms
    restore_requested: bool = False
    evidence: Evidence | None = None
    restored_at: datetime | None = None  # evidence older than this cannot start a new episode
    attack: bool = False  # the latest evidence is an attack on others (R9)


@dataclass(frozen=True, slots=True)
class Step:
    rung: Rung
    intents: tuple[Intent, ...] = ()
    why: str = ""


def _key(r: Rung, what: str) -> str:
    return f"{r.server}:{r.reason}:{r.episode}:{what}"


def term_for(rule: LadderRule, repeats: tuple[datetime, ...], at: datetime) -> float | None:
    """Term of the next shut: longer for each recent repeat, capped."""
    if rule.term_s is None:
        return None
    recent = sum(1 for t in repeats if (at - t).total_seconds() <= rule.repeat_memory_s)
    return min(rule.term_s * rule.repeat_multiplier**recent, rule.max_term_s)


def _shut(r: Rung, rule: LadderRule, at: datetime, why: str) -> Step:
    term = term_for(rule, r.repeats, at)
    until = at + timedelta(seconds=term) if term is not None else None
    assert r.evidence is not None
    rung = replace(r, phase="shut", shut_at=at, until=until, repeats=r.repeats + (at,),
                   restore_requested=False)
    return Step(rung, (ShutPort(r.server, r.reason, r.evidence, _key(r, "shut"), until),
                       Notify(r.server, r.reason, "suspension", r.evidence, _key(r, "suspension"),
                              until)),
                why)


def step(
    r: Rung,
    rule: LadderRule,
    at: datetime,
    *,
    violating: bool,
    evidence: Evidence | None = None,
    attack: bool = False,
    may_shut: bool = True,
) -> Step:
    """Advance one rung by one observation.

    `violating` is whether the violation is present now (a sustained actionable overage, a
    fresh actionable detection, a standing billing or operator request). `attack` marks a
    finding that is an attack on others, to be cut first when the customer cannot be reached
    (R9). `may_shut` is False when a safety rail refuses: the rung then stays noticed (the
    warning still goes out) and the shut is tried again at the next observation.
    """
    if r.phase in ("idle", "restored"):
        if not violating:
            return Step(r)
        assert evidence is not None, "a violation needs its evidence"
        rung = replace(r, phase="noticed", episode=r.episode + 1, noticed_at=at, notice="pending",
                       evidence=evidence, shut_at=None, until=None, restore_requested=False,
                       attack=attack)
        # The warning promises the grace period only when one will really run.
        grace_end = at + timedelta(seconds=rule.grace_s) if rule.grace_s > 0 else None
        intents: tuple[Intent, ...] = (
            Notify(r.server, r.reason, "warning", evidence, _key(rung, "warning"), grace_end),)
        if rule.grace_s <= 0:
            if not may_shut:
                return Step(rung, intents, "no grace period, but the shut is refused")
            s = _shut(rung, rule, at, "no grace period for this reason")
            return Step(s.rung, intents + s.intents, s.why)
        return Step(rung, intents, f"notified; grace {rule.grace_s:g} s before a shut")

    if r.phase == "noticed":
        if not violating:
            # The customer fixed it within the grace period: back to observing.
            return Step(replace(r, phase="idle"), (), "violation ended within the grace period")
        if evidence is not None:
            r = replace(r, evidence=evidence, attack=attack)
        assert r.noticed_at is not None
        waited = (at - r.noticed_at).total_seconds()
        if r.attack and rule.shut_at_once_if_unreachable and r.notice == "unreachable":
            why = "attack and the customer cannot be reached (R9)"
        elif waited >= rule.grace_s:
            why = f"still violating after the {rule.grace_s:g} s grace period"
        else:
            return Step(r, (), f"in grace: {waited:.0f} of {rule.grace_s:g} s")
        if not may_shut:
            return Step(r, (), f"{why}, but the shut is refused")
        return _shut(r, rule, at, why)

    # phase == "shut"
    if r.restore_requested:
        return _restore(r, at, "restore requested")
    if r.until is not None and at >= r.until:
        return _restore(r, at, "term served")
    return Step(r, (), "suspended")


def _restore(r: Rung, at: datetime, why: str) -> Step:
    rung = replace(r, phase="restored", restore_requested=False, until=None, restored_at=at)
    return Step(rung, (RestorePort(r.server, r.reason, why, _key(r, "restore")),
                       Notify(r.server, r.reason, "restored",
                              r.evidence or Evidence("", why), _key(r, "restored"))), why)


def suspension_notice(r: Rung) -> Notify:
    """The notice of this episode's suspension, with the term it promises."""
    return Notify(r.server, r.reason, "suspension", r.evidence or Evidence("", r.reason), _key(r, "suspension"),
                  r.until)


def restored_notice(r: Rung, why: str = "restored") -> Notify:
    return Notify(r.server, r.reason, "restored", r.evidence or Evidence("", why), _key(r, "restored"))


def notice_result(r: Rung, outcome: NoticeOutcome) -> Rung:
    """Record how the warning went (R9: delivery failure means unreachable)."""
    return replace(r, notice=outcome)


def request_restore(r: Rung) -> Rung:
    return replace(r, restore_requested=True) if r.phase == "shut" else r


def extend(r: Rung, rule: LadderRule, at: datetime) -> Rung:
    """A repeat of the same reason while shut extends the term instead of a second action."""
    if r.phase != "shut" or r.until is None:
        return r
    term = term_for(rule, r.repeats[:-1], at) or 0.0
    return replace(r, until=max(r.until, at + timedelta(seconds=term)))
