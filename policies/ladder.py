"""The enforcement ladder (CONTRACT_RULES R1, R2, R9–R11): observe → notify → grace → restrict or shut → restore.

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

The gentler rung (issue 12): where the shell offers a `Restriction` for the finding (police
the port to the cap in force for an overage, drop outbound SMTP for a spammer), the end of the
grace period restricts instead of shutting. The server keeps forwarding, so restricted time is
not an outage. A restriction is lifted after its term once the traffic is measured back within
the rule (`within_rule`: for an overage, a valid sample under the cap, not merely an over-cap
run too short to be a violation yet), or on a restore request when the traffic no longer
violates. A restriction escalates to a shut when the violation goes on beyond what it stops
(`covered=False`) or when it could not be applied (`restriction_failed`). A notice ends (back
to idle) on the same measurement, not on an over-cap run restarted by a missed poll.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

Reason = Literal["overage", "abuse", "nonpayment", "operator"]
REASONS: tuple[Reason, ...] = ("overage", "abuse", "nonpayment", "operator")
Phase = Literal["idle", "noticed", "restricted", "shut", "restored"]
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
    # What a finding ("overage", or a detector: "spam", "flood", ...) is answered with at the
    # end of the grace period instead of a shut: "throttle" (police to the cap in force) or
    # "block_smtp". A finding not named here is shut, as is everything when this is empty.
    restrict: tuple[tuple[str, str], ...] = ()


DEFAULT_RULES: dict[Reason, LadderRule] = {
    "overage": LadderRule(grace_s=600.0, term_s=3600.0, restrict=(("overage", "throttle"),)),
    "abuse": LadderRule(grace_s=300.0, term_s=None, shut_at_once_if_unreachable=True,
                        restrict=(("spam", "block_smtp"),)),
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
class Restriction:
    """A gentler rung than a shut: police the port's ingress to `rate_bps` (throttle), or drop
    one outbound service (block, e.g. "smtp"). The port stays up and keeps forwarding."""

    kind: Literal["throttle", "block"]
    rate_bps: int | None = None  # throttle: the cap in force when it was decided
    service: str | None = None  # block: the service dropped

    def __post_init__(self) -> None:
        if self.kind == "throttle" and (self.rate_bps is None or self.rate_bps <= 0):
            raise ValueError("a throttle needs a positive rate_bps")
        if self.kind == "block" and not self.service:
            raise ValueError("a block needs a service")

    @property
    def apply_action(self) -> Literal["throttle", "block"]:
        return self.kind

    @property
    def lift_action(self) -> Literal["unthrottle", "unblock"]:
        return "unthrottle" if self.kind == "throttle" else "unblock"

    @property
    def label(self) -> str:
        if self.kind == "throttle":
            return f"throttled to {self.rate_bps} bit/s"
        return f"outbound {self.service} blocked"


Stage = Literal["warning", "suspension", "restored", "restriction", "lifted"]


@dataclass(frozen=True, slots=True)
class Notify:
    server: str
    reason: Reason
    stage: Stage
    evidence: Evidence
    key: str  # idempotency: the same notice is not sent twice
    # What the notice promises: a warning's grace end, a suspension's or restriction's term
    # end; None promises no time (a shut that follows at once, until a restore request).
    until: datetime | None = None
    restriction: Restriction | None = None  # restriction / lifted: what was applied or lifted


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


@dataclass(frozen=True, slots=True)
class RestrictPort:
    server: str
    reason: Reason
    restriction: Restriction
    evidence: Evidence
    key: str
    until: datetime | None  # None: until the violation clears and a restore is asked for


@dataclass(frozen=True, slots=True)
class LiftRestriction:
    server: str
    reason: Reason
    restriction: Restriction
    why: str
    key: str


Intent = Notify | ShutPort | RestorePort | RestrictPort | LiftRestriction


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
    # The restriction in force (phase `restricted`), or still configured under a shut that
    # followed it (lifted together with the restore).
    restriction: Restriction | None = None
    restricted_at: datetime | None = None
    # This episode's restriction could not be applied or read back: the next step shuts.
    restriction_failed: bool = False


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


def _restrict(r: Rung, rule: LadderRule, gentle: Restriction, at: datetime, why: str) -> Step:
    """The gentler rung: the port keeps forwarding under the restriction for the term."""
    term = term_for(rule, r.repeats, at)
    until = at + timedelta(seconds=term) if term is not None else None
    assert r.evidence is not None
    rung = replace(r, phase="restricted", restriction=gentle, restricted_at=at, until=until,
                   repeats=r.repeats + (at,), restore_requested=False)
    return Step(rung, (RestrictPort(r.server, r.reason, gentle, r.evidence, _key(r, gentle.apply_action), until),
                       Notify(r.server, r.reason, "restriction", r.evidence, _key(r, "restriction"), until,
                              gentle)),
                f"{why}: {gentle.label} instead of a shut")


def _act(r: Rung, rule: LadderRule, at: datetime, why: str, gentle: Restriction | None) -> Step:
    """The end of the grace period: the gentler rung when one is offered and has not failed."""
    if gentle is not None and not r.restriction_failed:
        return _restrict(r, rule, gentle, at, why)
    return _shut(r, rule, at, why)


def step(
    r: Rung,
    rule: LadderRule,
    at: datetime,
    *,
    violating: bool,
    evidence: Evidence | None = None,
    attack: bool = False,
    may_shut: bool = True,
    gentle: Restriction | None = None,
    covered: bool = True,
    within_rule: bool | None = None,
) -> Step:
    """Advance one rung by one observation.

    `violating` is whether the violation is present now (a sustained actionable overage, a
    fresh actionable detection, a standing billing or operator request). `attack` marks a
    finding that is an attack on others, to be cut first when the customer cannot be reached
    (R9). `may_shut` is False when a safety rail refuses: the rung then stays noticed (the
    warning still goes out) and the shut (or restriction) is tried again at the next
    observation. `gentle` is the restriction the shell offers for this finding instead of a
    shut; `covered` says whether the restriction in force stops the violation seen now.
    `within_rule` is whether the traffic is measured back within the rule, which is what
    lifts a restriction (None: whenever it is not violating). It is not `not violating`: a
    throttled server whose demand is over its cap again, but not yet for a whole window, is
    not violating (nothing new to notice) and not within the rule either.
    """
    if within_rule is None:
        within_rule = not violating
    if r.phase in ("idle", "restored"):
        if not violating:
            return Step(r)
        assert evidence is not None, "a violation needs its evidence"
        rung = replace(r, phase="noticed", episode=r.episode + 1, noticed_at=at, notice="pending",
                       evidence=evidence, shut_at=None, until=None, restore_requested=False,
                       attack=attack, restriction=None, restricted_at=None, restriction_failed=False)
        # The warning promises the grace period only when one will really run.
        grace_end = at + timedelta(seconds=rule.grace_s) if rule.grace_s > 0 else None
        # The warning says what follows the grace period: the restriction, when one is offered.
        intents: tuple[Intent, ...] = (
            Notify(r.server, r.reason, "warning", evidence, _key(rung, "warning"), grace_end, gentle),)
        if rule.grace_s <= 0:
            if not may_shut:
                return Step(rung, intents, "no grace period, but the shut is refused")
            s = _act(rung, rule, at, "no grace period for this reason", gentle)
            return Step(s.rung, intents + s.intents, s.why)
        return Step(rung, intents, f"notified; grace {rule.grace_s:g} s before a shut")

    if r.phase == "noticed":
        if not violating and within_rule:
            # The customer fixed it within the grace period: back to observing.
            return Step(replace(r, phase="idle"), (), "violation ended within the grace period")
        if not violating:
            # Over again but not yet for a whole window (a missed poll restarted the run), or
            # not measured: not fixed, and not a violation to act on now. The episode goes on.
            return Step(r, (), "not measured back within the rule; the notice stands")
        if evidence is not None:
            r = replace(r, evidence=evidence, attack=attack)
        assert r.noticed_at is not None
        waited = (at - r.noticed_at).total_seconds()
        if r.attack and rule.shut_at_once_if_unreachable and r.notice == "unreachable":
            # R9 names the cut itself: an attack on others with nobody to tell is not throttled.
            why = "attack and the customer cannot be reached (R9)"
            gentle = None
        elif r.restriction_failed:
            why = "the restriction could not be applied or read back"
        elif waited >= rule.grace_s:
            why = f"still violating after the {rule.grace_s:g} s grace period"
        else:
            return Step(r, (), f"in grace: {waited:.0f} of {rule.grace_s:g} s")
        if not may_shut:
            return Step(r, (), f"{why}, but the shut is refused")
        return _act(r, rule, at, why, gentle)

    if r.phase == "restricted":
        if evidence is not None and violating:
            r = replace(r, evidence=evidence, attack=attack)
        held = r.restriction
        if (gentle is not None and held is not None and gentle.kind == held.kind == "throttle"
                and gentle.rate_bps != held.rate_bps):
            # The cap in force changed (R3): the throttle follows it, up or down, same term.
            if not may_shut:
                return Step(r, (), "the cap changed, but the new throttle is refused")
            moved = replace(r, restriction=gentle)
            tag = f"throttle-{gentle.rate_bps}"
            return Step(moved, (RestrictPort(r.server, r.reason, gentle, r.evidence or Evidence("", "cap change"),
                                             _key(r, tag), r.until),
                                Notify(r.server, r.reason, "restriction", r.evidence or Evidence("", "cap change"),
                                       _key(r, f"restriction-{gentle.rate_bps}"), r.until, gentle)),
                        f"the cap in force is now {gentle.rate_bps} bit/s: the throttle follows it (R3)")
        if violating and not covered:
            # The abuse goes on where the restriction does not reach: the shut rung.
            why = "the violation continues beyond the restriction"
            if not may_shut:
                return Step(r, (), f"{why}, but the shut is refused")
            return _shut(r, rule, at, why)
        if r.restore_requested:
            if violating or not within_rule:
                return Step(replace(r, restore_requested=False), (),
                            "re-check: the traffic still violates the rule; the restriction stays")
            return _lift(r, at, "re-check passed: the traffic is back within the rule")
        if r.until is not None and at >= r.until:
            if violating:
                return Step(r, (), "term served, but the traffic still violates the rule; the restriction stays")
            if not within_rule:
                return Step(r, (), "term served, but the traffic is not measured back within the rule; the"
                                   " restriction stays")
            return _lift(r, at, "term served and the traffic is back within the rule")
        return Step(r, (), "restricted")

    # phase == "shut"
    if r.restore_requested:
        return _restore(r, at, "restore requested")
    if r.until is not None and at >= r.until:
        return _restore(r, at, "term served")
    return Step(r, (), "suspended")


def _restore(r: Rung, at: datetime, why: str) -> Step:
    rung = replace(r, phase="restored", restore_requested=False, until=None, restored_at=at, restriction=None,
                   restricted_at=None)
    # A restriction that a shut followed is still configured: it goes with the restore.
    lift: tuple[Intent, ...] = ()
    if r.restriction is not None:
        lift = (LiftRestriction(r.server, r.reason, r.restriction, why, _key(r, r.restriction.lift_action)),)
    return Step(rung, (*lift, RestorePort(r.server, r.reason, why, _key(r, "restore")),
                       Notify(r.server, r.reason, "restored",
                              r.evidence or Evidence("", why), _key(r, "restored"))), why)


def _lift(r: Rung, at: datetime, why: str) -> Step:
    assert r.restriction is not None
    rung = replace(r, phase="restored", restore_requested=False, until=None, restored_at=at, restriction=None,
                   restricted_at=None)
    return Step(rung, (LiftRestriction(r.server, r.reason, r.restriction, why, _key(r, r.restriction.lift_action)),
                       Notify(r.server, r.reason, "lifted", r.evidence or Evidence("", why), _key(r, "lifted"),
                              None, r.restriction)), why)


def restriction_notice(r: Rung) -> Notify:
    """The notice of this episode's restriction, with the term it promises."""
    assert r.restriction is not None
    return Notify(r.server, r.reason, "restriction", r.evidence or Evidence("", r.reason), _key(r, "restriction"),
                  r.until, r.restriction)


def lifted_notice(r: Rung, restriction: Restriction) -> Notify:
    return Notify(r.server, r.reason, "lifted", r.evidence or Evidence("", "lifted"), _key(r, "lifted"), None,
                  restriction)


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
    return replace(r, restore_requested=True) if r.phase in ("shut", "restricted") else r


def extend(r: Rung, rule: LadderRule, at: datetime) -> Rung:
    """A repeat of the same reason while shut extends the term instead of a second action."""
    if r.phase != "shut" or r.until is None:
        return r
    term = term_for(rule, r.repeats[:-1], at) or 0.0
    return replace(r, until=max(r.until, at + timedelta(seconds=term)))
