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

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal

from . import ladder as L
from . import safety as S
from .cap import CapVerdict
from .detect import Detection

Mode = Literal["off", "notify", "enforce"]
ActionState = Literal["APPLIED", "DRYRUN", "FAILED", "UNKNOWN"]

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


@dataclass(frozen=True, slots=True)
class Request:
    """A suspension or restore asked for by a person or the billing system (R11)."""

    kind: Literal["suspend", "restore"]
    actor: str
    note: str = ""


@dataclass(frozen=True, slots=True)
class NoticeOutcome:
    key: str
    delivered: bool


@dataclass(frozen=True, slots=True)
class ActionOutcome:
    key: str
    action: Literal["shut", "restore"]
    state: ActionState
    admin: str | None  # what the read-back said


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
    """A shut or restore to carry out: the ladder's intent, the mode's verdict, the ledger cause."""

    intent: L.ShutPort | L.RestorePort
    dry_run: bool  # notify mode: recorded, the switch is not touched
    ledger_cause: str  # the class-deciding cause of the outage a shut causes

    @property
    def action(self) -> Literal["shut", "restore"]:
        return "shut" if isinstance(self.intent, L.ShutPort) else "restore"

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
    """The ladder's intents as the shell carries them out. A suspension or restore notice
    waits for its change to be read back (`_outcome`): a customer is never told of a
    suspension that failed, or that was only a dry run."""
    dry = rails.mode != "enforce"
    out: list[Intent] = []
    for i in intents:
        if isinstance(i, L.Notify) and i.stage in ("suspension", "restored"):
            continue
        if isinstance(i, L.ShutPort):
            out.append(Change(i, dry, LEDGER_CAUSE[i.reason]))
        elif isinstance(i, L.RestorePort):
            out.append(Change(i, dry, LEDGER_CAUSE[i.reason]))
        else:
            out.append(i)
    return tuple(out)


def _ladder(r: L.Rung, rule: L.LadderRule, rails: Rails, at: datetime, *, violating: bool,
            evidence: L.Evidence | None = None, attack: bool = False) -> Decision:
    """One ladder move under the rails: a refused shut leaves the rung short of `shut`."""
    s = L.step(r, rule, at, violating=violating, evidence=evidence, attack=attack)
    shuts = [i for i in s.intents if isinstance(i, L.ShutPort)]
    if shuts:
        refusal = shut_refusal(rails, at)
        if refusal is not None or rails.mode != "enforce":
            held = L.step(r, rule, at, violating=violating, evidence=evidence, attack=attack, may_shut=False)
            if refusal is not None:
                return Decision(held.rung, _wrap(held.intents, rails), held.why, refusal)
            # notify mode: the shut is recorded as a dry run and nothing is suspended, so the
            # ladder stays noticed and the customer is told of no suspension (nor, later, of a
            # restore). The dry run's key is the episode's: it is recorded once.
            return Decision(held.rung, _wrap((*held.intents, *shuts), rails),
                            f"{s.why}: dry run, {rails.mode} mode")
    if any(isinstance(i, L.RestorePort) for i in s.intents):
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
                       attack=event.attack)
    if isinstance(event, NoticeOutcome):
        if not event.key.endswith(":warning"):
            return Decision(r, (), "notice recorded")
        rung = L.notice_result(r, "delivered" if event.delivered else "unreachable")
        if event.delivered or r.phase != "noticed":
            return Decision(rung, (), "warning delivered" if event.delivered else "customer unreachable")
        # R9: an attack on others is cut at once when the customer cannot be told.
        d = _ladder(rung, rule, rails, at, violating=True)
        return d if d.changes or d.refusal else Decision(rung, d.intents, d.why)
    if isinstance(event, Tick):
        if r.phase == "shut" and r.until is not None and at >= r.until:
            return _ladder(r, rule, rails, at, violating=False)
        return Decision(r, (), "")
    if isinstance(event, ActionOutcome):
        return _outcome(r, event)
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
        if r.phase != "shut":
            return Decision(r, (), f"{r.server} is not suspended for {r.reason}")
        return _ladder(L.request_restore(r), rule, rails, at, violating=False)
    # A requested suspension starts now: no grace period runs, and the notice promises none.
    now_rule = replace(rule, grace_s=0.0)
    if r.phase == "shut":
        return Decision(L.extend(r, now_rule, at), (), "already suspended: the term is extended")
    ev = L.Evidence(rule=REQUEST_RULE[r.reason], summary=req.note or r.reason, refs=(f"requested by {req.actor}",))
    return _ladder(r, now_rule, rails, at, violating=True, evidence=ev)


def _outcome(r: L.Rung, o: ActionOutcome) -> Decision:
    """An applied change is announced to the customer and ticketed; one that was not read back
    as asked stays as recorded: known, paged, not retried."""
    if o.state == "DRYRUN":
        return Decision(r, (), f"{o.action} dry run")
    if o.state == "APPLIED":
        notice = L.suspension_notice(r) if o.action == "shut" else L.restored_notice(r)
        return Decision(r, (notice, Page(f"RackWarden{o.action.capitalize()}", "ticket",
                                         f"{o.action} for {r.reason}: {o.state}")),
                        f"{o.action} applied")
    return Decision(r, (Page(f"RackWarden{o.action.capitalize()}{o.state.capitalize()}", "page",
                             f"{o.action} for {r.reason}: {o.state}, read back admin {o.admin}"),),
                    f"{o.action} {o.state.lower()}: escalated")


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
    """The cap policy's verdict as the ladder sees it: only a sustained, actionable overage counts."""
    violating = v.state == "sustained" and v.actionable
    return Observation(violating, overage_evidence(v, server, template) if violating else None)


def abuse_observation(det: Detection | None, evidence_ref: str | None) -> Observation:
    """A standing actionable detection (or None once cleared), with its R9 declaration."""
    if det is None:
        return Observation(False)
    figures = tuple((k, round(float(v), 1)) for k, v in list(det.rates.items())[:6])
    figures += tuple((k, int(v)) for k, v in list(det.counts.items())[:6])
    refs = ((evidence_ref,) if evidence_ref else ()) + tuple(det.subjects[:5])
    ev = L.Evidence(rule=f"{det.rule} {det.detector}/{det.kind}", summary=det.reason, figures=figures, refs=refs)
    return Observation(True, ev, attack=det.attacks_others, seen_at=det.last_at)


def breaker(state: S.SafetyState, limits: S.SafetyConfig, at: datetime, switch: str,
            verdicts: Iterable[CapVerdict]) -> tuple[S.SafetyState, str | None]:
    """After a poll: open the switch's breaker when too many of its servers breach at once."""
    vs = list(verdicts)
    breaching = sum(1 for v in vs if v.valid and v.state != "ok")
    return S.evaluate_breaker(state, limits, at, switch=switch, breaching=breaching, servers=len(vs))
