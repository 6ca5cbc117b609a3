"""The enforcement step (R2, R9–R11, R16): one event, the rails and `at` in; the new rung and its intents out.

This is the one place that decides whether a port is cut. The shell (agent/enforcer.py)
gathers the rails as it finds them (mode, lease, hold, protected port, budgets, breaker),
calls `step`, writes the new rung, carries the intents out and feeds their outcomes back as
events. It never re-judges: a refused shut never moves the ladder, because the rails are an
input here, not a check afterwards.

Events:
- `Observation`: a violation is present now or not (a cap verdict, a standing detection);
- `Request`: an operator's or the billing system's suspend or restore (R11);
- `NoticeOutcome`: how the warning went (R9: a failed delivery means unreachable);
- `ActionOutcome`: what the switch's read-back said of a change;
- `Tick`: time passes (grace periods and terms end without a new poll);
- `PortSeenUp`: the switch shows a port up that we hold shut (someone re-enabled it).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal

from . import ladder as L
from . import safety as S
from .cap import CapVerdict
from .detect import Detection

Mode = Literal["off", "notify", "enforce"]
ActionState = Literal["APPLIED", "DRYRUN", "FAILED", "UNKNOWN"]
Action = Literal["shut", "restore", "throttle", "unthrottle", "block", "unblock"]
APPLY_ACTIONS: tuple[Action, ...] = ("throttle", "block")
LIFT_ACTIONS: tuple[Action, ...] = ("unthrottle", "unblock")
# What a reason's finding may be answered with instead of a shut (config `restrict`).
Gentle = Literal["throttle", "block_smtp", "shut"]

# The ledger cause of the outage an enforcement shut causes (policies/sla.py's vocabulary):
# overage, abuse and non-payment are the customer's (R2, R10, R11, R16); an operator's own
# decision is `unknown` until a person classes it.
LEDGER_CAUSE: dict[L.Reason, str] = {
    "overage": "overage", "abuse": "abuse", "nonpayment": "nonpayment", "operator": "unknown",
}
REQUEST_RULE: dict[L.Reason, str] = {
    "nonpayment": "R11 non-payment", "abuse": "R10 abuse (operator)", "operator": "operator decision",
    "overage": "R2 overage (operator)",
}


# -- the rails, as the shell found them ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rails:
    """Everything that may refuse a change, gathered just before the decision."""

    mode: Mode
    switch: str
    port: str
    lease_held: bool = True  # this agent holds the switch's enforcement lease
    held: bool = False  # the server is on hold: exempt from automation
    protected: bool = False  # uplink / trunk
    managed: bool = True  # the port is in the inventory and belongs to this server
    inventory_ports: tuple[str, ...] = ()
    safety: S.SafetyState = field(default_factory=S.SafetyState)
    limits: S.SafetyConfig = field(default_factory=S.SafetyConfig)
    # Other reasons that hold this port shut now: their suspension outlives this reason's
    # restore, so that restore must not bring the port up.
    shut_for: tuple[str, ...] = ()
    cap_bps: int | None = None  # the server's cap in force now: the rate a throttle polices to


@dataclass(frozen=True, slots=True)
class Refusal:
    rail: S.Rail | Literal["lease"]
    reason: str


def shut_refusal(rails: Rails, at: datetime) -> Refusal | None:
    """May this port be shut now? None, or the rail that says no (unknown means no)."""
    if not rails.lease_held:
        return Refusal("lease", f"this agent does not hold the enforcement lease on {rails.switch}")
    ports = rails.inventory_ports or (rails.port,)
    protected = frozenset((rails.port,)) if rails.protected else frozenset()
    v = S.check_shut(rails.safety, rails.limits, at, switch=rails.switch, port=rails.port,
                     inventory_ports=ports, protected_ports=protected, managed=rails.managed,
                     held=rails.held)
    return None if v.allowed else Refusal(v.rail or "unknown_port", v.reason)


def restore_refusal(rails: Rails) -> Refusal | None:
    if not rails.lease_held:
        return Refusal("lease", f"this agent does not hold the enforcement lease on {rails.switch}")
    return None


# -- events ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Observation:
    """A violation is present now (with its evidence) or has cleared."""

    violating: bool
    evidence: L.Evidence | None = None
    attack: bool = False  # R9: the finding is an attack on others
    seen_at: datetime | None = None  # when the evidence was last seen (detections)
    finding: str = ""  # what was found: "overage", or the detector ("spam", "flood", ...)
    # Whether the traffic is measured back within the rule, which lifts a restriction (None:
    # whenever not violating). An overage is within it only on a valid sample under the cap.
    within_rule: bool | None = None


@dataclass(frozen=True, slots=True)
class Request:
    """A suspension or restore asked for by a person or the billing system (R11)."""

    kind: Literal["suspend", "restore"]
    actor: str
    note: str = ""
    # For a restore of a restricted port: whether the latest measurement still violates (None:
    # nothing measured since start). A restriction is lifted only on traffic within the rule.
    violating: bool | None = None


@dataclass(frozen=True, slots=True)
class NoticeOutcome:
    key: str
    delivered: bool


@dataclass(frozen=True, slots=True)
class ActionOutcome:
    key: str
    action: Action
    state: ActionState
    admin: str | None  # what the read-back said
    restriction: L.Restriction | None = None  # throttle / block and their lifts: what was asked


@dataclass(frozen=True, slots=True)
class Tick:
    pass


@dataclass(frozen=True, slots=True)
class PortSeenUp:
    """A poll or a read-back found the port administratively up."""


Event = Observation | Request | NoticeOutcome | ActionOutcome | Tick | PortSeenUp


# -- intents the shell carries out besides the ladder's ---------------------------------------


@dataclass(frozen=True, slots=True)
class Change:
    """A change to carry out: the ladder's intent, the mode's verdict, the ledger cause."""

    intent: L.ShutPort | L.RestorePort | L.RestrictPort | L.LiftRestriction
    dry_run: bool  # notify mode: recorded, the switch is not touched
    ledger_cause: str  # the class-deciding cause of the outage a shut causes

    @property
    def action(self) -> Action:
        i = self.intent
        if isinstance(i, L.ShutPort):
            return "shut"
        if isinstance(i, L.RestorePort):
            return "restore"
        if isinstance(i, L.RestrictPort):
            return i.restriction.apply_action
        return i.restriction.lift_action

    @property
    def restriction(self) -> L.Restriction | None:
        i = self.intent
        return i.restriction if isinstance(i, L.RestrictPort | L.LiftRestriction) else None

    @property
    def key(self) -> str:
        return self.intent.key


@dataclass(frozen=True, slots=True)
class Page:
    """Tell on-call: the name is the alert name, severity `ticket` or `page`."""

    name: str
    severity: Literal["ticket", "page"]
    summary: str


Intent = L.Notify | Change | Page


@dataclass(frozen=True, slots=True)
class Decision:
    rung: L.Rung
    intents: tuple[Intent, ...] = ()
    why: str = ""
    refusal: Refusal | None = None

    @property
    def changes(self) -> tuple[Change, ...]:
        return tuple(i for i in self.intents if isinstance(i, Change))


# -- the step --------------------------------------------------------------------------------


def _wrap(intents: Iterable[L.Intent], rails: Rails) -> tuple[Intent, ...]:
    """The ladder's intents as the shell carries them out. A suspension, restriction, restore
    or lift notice waits for its change to be read back (`_outcome`): a customer is never told
    of a change that failed, or that was only a dry run."""
    dry = rails.mode != "enforce"
    out: list[Intent] = []
    for i in intents:
        if isinstance(i, L.Notify) and i.stage in ("suspension", "restored", "restriction", "lifted"):
            continue
        if isinstance(i, L.ShutPort | L.RestorePort | L.RestrictPort | L.LiftRestriction):
            out.append(Change(i, dry, LEDGER_CAUSE[i.reason]))
        else:
            out.append(i)
    return tuple(out)


def gentle_for(rule: L.LadderRule, finding: str, rails: Rails) -> L.Restriction | None:
    """The restriction the config offers for this finding instead of a shut (None: shut).

    A throttle needs the cap in force: without one there is no contract rate to police to.
    """
    choice = dict(rule.restrict).get(finding, "shut")
    if choice == "throttle" and rails.cap_bps is not None and rails.cap_bps > 0:
        return L.Restriction("throttle", rate_bps=rails.cap_bps)
    if choice == "block_smtp":
        return L.Restriction("block", service="smtp")
    return None


def covers(restriction: L.Restriction | None, offered: L.Restriction | None) -> bool:
    """Whether the restriction in force answers the finding seen now (same kind of rung)."""
    if restriction is None:
        return True
    return offered is not None and offered.kind == restriction.kind and offered.service == restriction.service


def _ladder(r: L.Rung, rule: L.LadderRule, rails: Rails, at: datetime, *, violating: bool,
            evidence: L.Evidence | None = None, attack: bool = False, finding: str = "",
            covered: bool | None = None, within_rule: bool | None = None) -> Decision:
    """One ladder move under the rails: a refused shut or restriction leaves the rung short of it."""
    gentle = gentle_for(rule, finding or r.reason, rails)
    if covered is None:
        covered = not violating or not finding or covers(r.restriction, gentle)
    s = L.step(r, rule, at, violating=violating, evidence=evidence, attack=attack, gentle=gentle, covered=covered,
               within_rule=within_rule)
    shuts = [i for i in s.intents if isinstance(i, L.ShutPort | L.RestrictPort)]
    if shuts:
        refusal = shut_refusal(rails, at)
        if refusal is not None or rails.mode != "enforce":
            held = L.step(r, rule, at, violating=violating, evidence=evidence, attack=attack, may_shut=False,
                          gentle=gentle, covered=covered, within_rule=within_rule)
            if refusal is not None:
                return Decision(held.rung, _wrap(held.intents, rails), held.why, refusal)
            # notify mode: the shut is recorded as a dry run and nothing is suspended, so the
            # ladder stays noticed and the customer is told of no suspension (nor, later, of a
            # restore). The dry run's key is the episode's: it is recorded once.
            return Decision(held.rung, _wrap((*held.intents, *shuts), rails),
                            f"{s.why}: dry run, {rails.mode} mode")
    if any(isinstance(i, L.RestorePort | L.LiftRestriction) for i in s.intents):
        refusal = restore_refusal(rails)
        if refusal is not None:
            return Decision(r, (), f"{s.why}, but the restore is refused", refusal)
        others = [o for o in rails.shut_for if o != r.reason]
        if others:
            # This reason is done, but the port stays down for the others: no restore command,
            # no "restored" notice; the ladder of this reason still ends.
            kept = tuple(i for i in s.intents if not isinstance(i, L.RestorePort | L.Notify))
            return Decision(s.rung, _wrap(kept, rails),
                            f"{s.why}; the port stays shut for {', '.join(others)}")
    return Decision(s.rung, _wrap(s.intents, rails), s.why)


def step(r: L.Rung, rule: L.LadderRule, event: Event, rails: Rails, at: datetime) -> Decision:
    """Advance one (server, reason) rung by one event under the rails."""
    if rails.mode == "off":
        return Decision(r, (), "enforcement is off for this reason")
    if isinstance(event, Request):
        return _request(r, rule, event, rails, at)
    if not rails.lease_held:
        # A standby for this switch meters and records but decides nothing (which also keeps
        # customers from getting two notices).
        return Decision(r, (), "standby: another agent holds this switch")
    if isinstance(event, Observation):
        if (event.violating and event.seen_at is not None and r.restored_at is not None
                and event.seen_at <= r.restored_at):
            # Seen before the last restore: that episode is closed, not a new one.
            event = Observation(False)
        return _ladder(r, rule, rails, at, violating=event.violating, evidence=event.evidence,
                       attack=event.attack, finding=event.finding, within_rule=event.within_rule)
    if isinstance(event, NoticeOutcome):
        if not event.key.endswith(":warning"):
            return Decision(r, (), "notice recorded")
        rung = L.notice_result(r, "delivered" if event.delivered else "unreachable")
        if event.delivered or r.phase != "noticed":
            return Decision(rung, (), "warning delivered" if event.delivered else "customer unreachable")
        # R9: an attack on others is cut at once when the customer cannot be told.
        d = _ladder(rung, rule, rails, at, violating=True, covered=True)
        return d if d.changes or d.refusal else Decision(rung, d.intents, d.why)
    if isinstance(event, Tick):
        if r.phase == "shut" and r.until is not None and at >= r.until:
            return _ladder(r, rule, rails, at, violating=False)
        return Decision(r, (), "")
    if isinstance(event, ActionOutcome):
        return _outcome(r, rule, event, rails, at)
    # PortSeenUp: someone re-enabled a port we hold shut. Never re-apply blindly: stand
    # down until a fresh violation, and page.
    if r.phase != "shut" or rails.mode != "enforce":
        return Decision(r, (), "")
    return Decision(replace(r, phase="restored", until=None), (
        Page("RackWardenEnforcementDrift", "page",
             f"{rails.switch} {rails.port} is up although {r.server} is suspended for {r.reason}"),),
        "port re-enabled outside RackWarden")


def _request(r: L.Rung, rule: L.LadderRule, req: Request, rails: Rails, at: datetime) -> Decision:
    if not rails.lease_held:
        return Decision(r, (), "standby", Refusal("lease", f"this agent does not hold the enforcement"
                                                           f" lease on {rails.switch}; ask the agent that does"))
    if req.kind == "restore":
        if r.phase == "restricted":
            # A re-check: the restriction is lifted only on traffic measured within the rule.
            if req.violating is None:
                return Decision(r, (), "re-check: nothing measured since the agent started; the restriction stays")
            return _ladder(L.request_restore(r), rule, rails, at, violating=req.violating, covered=True)
        if r.phase != "shut":
            return Decision(r, (), f"{r.server} is not suspended for {r.reason}")
        return _ladder(L.request_restore(r), rule, rails, at, violating=False)
    # A requested suspension starts now: no grace period runs, and the notice promises none;
    # it is a suspension, so no restriction stands in for it.
    now_rule = replace(rule, grace_s=0.0, restrict=())
    if r.phase == "shut":
        return Decision(L.extend(r, now_rule, at), (), "already suspended: the term is extended")
    ev = L.Evidence(rule=REQUEST_RULE[r.reason], summary=req.note or r.reason, refs=(f"requested by {req.actor}",))
    return _ladder(r, now_rule, rails, at, violating=True, evidence=ev, covered=False)


def _notice_key_for(action_key: str, r: L.Rung) -> str:
    """The restriction notice's key: one per episode, and one more per throttle a cap change moved."""
    what = action_key.rsplit(":", 1)[-1]
    suffix = what.removeprefix("throttle").removeprefix("block")
    return f"{r.server}:{r.reason}:{r.episode}:restriction{suffix}"


_ALERT_NAME: dict[str, str] = {"shut": "Shut", "restore": "Restore", "throttle": "Throttle",
                               "unthrottle": "Unthrottle", "block": "Block", "unblock": "Unblock"}


def _outcome(r: L.Rung, rule: L.LadderRule, o: ActionOutcome, rails: Rails, at: datetime) -> Decision:
    """An applied change is announced to the customer and ticketed; one that was not read back
    as asked stays as recorded: known and paged. A shut or restore is not retried; a
    restriction that did not hold falls to the shut rung (under the rails), and a lift that did
    not hold leaves the port restricted until a person asks again."""
    name = _ALERT_NAME[o.action]
    if o.state == "DRYRUN":
        return Decision(r, (), f"{o.action} dry run")
    if o.state == "APPLIED":
        if o.action == "shut":
            notice = L.suspension_notice(r)
        elif o.action == "restore":
            notice = L.restored_notice(r)
        elif o.action in APPLY_ACTIONS:
            if r.restriction is None:
                return Decision(r, (), f"{o.action} applied after the rung moved on")
            # The notice states the rate the switch enforces (a vendor may police a little under
            # the cap); the rung keeps the rate asked for, which a cap change is compared with.
            enforced = r if o.restriction is None else replace(r, restriction=o.restriction)
            notice = replace(L.restriction_notice(enforced), key=_notice_key_for(o.key, r))
        else:
            if o.restriction is None:
                return Decision(r, (), f"{o.action} applied")
            notice = L.lifted_notice(r, o.restriction)
        return Decision(r, (notice, Page(f"RackWarden{name}", "ticket", f"{o.action} for {r.reason}: {o.state}")),
                        f"{o.action} applied")
    page = Page(f"RackWarden{name}{o.state.capitalize()}", "page",
                f"{o.action} for {r.reason}: {o.state}, read back {o.admin}")
    if o.action in APPLY_ACTIONS and r.phase == "restricted":
        # It may be half there (UNKNOWN): kept, so a later restore lifts it as well.
        kept = r.restriction if o.state == "UNKNOWN" else None
        fallen = replace(r, phase="noticed", restriction=kept, restricted_at=None, until=None,
                         restriction_failed=True)
        d = _ladder(fallen, rule, rails, at, violating=True, covered=True)
        return Decision(d.rung, (page, *d.intents), f"{o.action} {o.state.lower()}: {d.why}", d.refusal)
    if o.action in LIFT_ACTIONS and r.phase == "restored" and o.restriction is not None:
        # The restriction may still be on the switch: the port stays restricted, with no term,
        # until a person asks again.
        back = replace(r, phase="restricted", restriction=o.restriction, until=None, restore_requested=False)
        return Decision(back, (page,), f"{o.action} {o.state.lower()}: the port stays restricted; escalated")
    return Decision(r, (page,), f"{o.action} {o.state.lower()}: escalated")


# -- turning facts into events ---------------------------------------------------------------


def overage_evidence(v: CapVerdict, server: str, template: str) -> L.Evidence:
    judged = v.judged_bps or 0.0
    return L.Evidence(
        rule=f"R1/R2 ({template}): cap {v.cap_bps / 1e6:g} Mbit/s, direction {v.direction}",
        summary=f"{server} at {judged / 1e6:.2f} Mbit/s, over its cap for {v.covered_s:.0f} s",
        figures=(("rate_bps", round(judged)), ("cap_bps", v.cap_bps), ("over_s", round(v.covered_s, 1))),
        refs=tuple(f"{e.start_at.isoformat()}..{e.end_at.isoformat()} {e.judged_bps:.0f} bit/s"
                   for e in v.evidence[-10:]),
    )


def overage_observation(v: CapVerdict, server: str, template: str) -> Observation:
    """The cap policy's verdict as the ladder sees it: only a sustained, actionable overage counts
    as a violation; only a valid measurement under the cap as traffic back within the rule (a
    restriction is not lifted on a run of over-cap samples restarted by one missed poll)."""
    violating = v.state == "sustained" and v.actionable
    return Observation(violating, overage_evidence(v, server, template) if violating else None,
                       finding="overage", within_rule=v.valid and v.state == "ok")


def abuse_observation(det: Detection | None, evidence_ref: str | None) -> Observation:
    """A standing actionable detection (or None once cleared), with its R9 declaration."""
    if det is None:
        return Observation(False)
    figures = tuple((k, round(float(v), 1)) for k, v in list(det.rates.items())[:6])
    figures += tuple((k, int(v)) for k, v in list(det.counts.items())[:6])
    refs = ((evidence_ref,) if evidence_ref else ()) + tuple(det.subjects[:5])
    ev = L.Evidence(rule=f"{det.rule} {det.detector}/{det.kind}", summary=det.reason, figures=figures, refs=refs)
    return Observation(True, ev, attack=det.attacks_others, seen_at=det.last_at, finding=det.detector)


def breaker(state: S.SafetyState, limits: S.SafetyConfig, at: datetime, switch: str,
            verdicts: Iterable[CapVerdict], throttled: Collection[str] = ()) -> tuple[S.SafetyState, str | None]:
    """After a poll: open the switch's breaker when too many of its servers breach at once.

    A server already throttled for its overage still meters over its cap (its port counts the
    demand the policer drops): a known breach, being answered, so it does not count as one of
    many appearing at once (a meter fault). Without this, throttling would trip the breaker.
    """
    vs = list(verdicts)
    breaching = sum(1 for v in vs if v.valid and v.state != "ok" and v.server not in throttled)
    return S.evaluate_breaker(state, limits, at, switch=switch, breaching=breaching, servers=len(vs))
