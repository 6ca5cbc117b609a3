"""The enforcer: the executor of policies/enforce.py, and the only code that changes a switch.

It gathers the facts a decision needs (rails: mode, lease, holds, budgets, breakers, protected
ports), asks the pure enforcement step, writes the new rung before acting, carries the intents
out (notices, switch changes with read-back, pages, ledger), and feeds each outcome back to the
step as an event. It holds no cap, detector or rail logic of its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from rackwarden.drivers.switch.base import DriverError, PermanentDriverError, SwitchDriver
from rackwarden.policies import enforce as E
from rackwarden.policies import ladder as L
from rackwarden.policies import safety as S
from rackwarden.policies.detect import Detection

from .actions import ActionStore
from .clock import Clock
from .config import Config, ServerConfig
from .ha import Lease, LocalLease
from .ledger import OutageRecorder
from .metering import PortReport
from .metrics import Metrics

log = logging.getLogger("rackwarden.enforcer")

ReadBack = Callable[[str, str], Awaitable[str | None]]  # (switch, port) -> "up" | "down" | None
PHASE_VALUE = {"idle": 0, "restored": 0, "noticed": 1, "shut": 2}
REASONS = ("nonpayment", "abuse", "operator")  # what a person or the billing system may suspend for


class CustomerNotifier(Protocol):
    async def send(self, server: ServerConfig, intent: L.Notify, rung: L.Rung, at: datetime) -> tuple[bool, str]: ...


class OnCall(Protocol):
    async def alert(self, name: str, severity: str, labels: dict[str, str], summary: str,
                    description: str, at: datetime) -> Mapping[str, bool]: ...


class EnforcementError(Exception):
    """An operator request that cannot be carried out (unknown server, bad reason, not ours)."""


class Enforcer:
    def __init__(
        self,
        config: Config,
        *,
        store: ActionStore,
        switches: Mapping[str, SwitchDriver],
        readback: ReadBack,
        clock: Clock,
        metrics: Metrics,
        notifier: CustomerNotifier | None = None,
        oncall: OnCall | None = None,
        action_timeout_s: float = 60.0,
        outages: OutageRecorder | None = None,
        lease: Lease | None = None,
    ):
        self.config = config
        self.store = store
        self.switches = switches
        self.readback = readback
        self.clock = clock
        self.metrics = metrics
        self.notifier = notifier
        self.oncall = oncall
        self.action_timeout_s = action_timeout_s
        self.outages = outages
        self.lease: Lease = lease or LocalLease()
        self.rungs: dict[tuple[str, str], L.Rung] = {}
        self.safety = S.SafetyState()
        self._locks: dict[str, asyncio.Lock] = {}
        self._refusals: dict[tuple[str, str], str] = {}

    def reconfigure(
        self,
        config: Config,
        switches: Mapping[str, SwitchDriver],
        notifier: CustomerNotifier | None,
        oncall: OnCall | None,
    ) -> None:
        """After a reload: modes, rules, rails, protected ports, contacts and switch access.

        Ladder state, budgets and breakers carry over. An in-flight change finishes on the
        driver it started with; the caller keeps the driver (and its one-session-at-a-time
        lock) of every switch whose settings did not change, so only a switch whose address
        or credentials were just edited can see its old session overlap the first new one.
        """
        self.config = config
        self.switches = switches
        self.notifier = notifier
        self.oncall = oncall

    # -- start-up ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load ladder state and reconcile every managed port with what the switch says."""
        for r in self.store.load_rungs():
            self.rungs[(r.server, r.reason)] = r
        self.safety = S.SafetyState(open_breakers=tuple(self.store.breakers()))
        at = self.clock.at()
        for sw, _, _ in self.safety.open_breakers:
            self.metrics.breaker_open.labels(sw).set(1)
        await self._reconcile(at, None)

    async def take_over(self, switch: str) -> None:
        """This agent just got the lease on `switch`: adopt the previous holder's ladder state."""
        if self.outages is not None:
            self.outages.restart()
        for r in self.store.load_rungs():
            s = self.config.server(r.server)
            if s is not None and s.switch == switch:
                self.rungs[(r.server, r.reason)] = r
        await self._reconcile(self.clock.at(), switch)
        self._audit(self.clock.at(), "*", "*", "take_over", "-", self.lease.holder, "enforcement lease acquired",
                    {"switch": switch}, "standby", "holder", "ladder state adopted")

    async def _reconcile(self, at: datetime, only_switch: str | None) -> None:
        for row in self.store.actions(state="PENDING"):
            if (only_switch and row.switch != only_switch) or not self.lease.held(row.switch):
                continue  # another agent's switch: its holder reconciles it
            # A crash between PENDING and the switch's answer: the switch says what happened.
            admin = await self._read(row.switch, row.port)
            want = "down" if row.action == "shut" else "up"
            state = "UNKNOWN" if admin is None else "APPLIED" if admin == want else "FAILED"
            self.store.finish(row.key, state, at, {"reconciled": True, "readback": admin})
            self._audit(at, row.server, row.reason, "reconcile", row.mode, "rackwarden",
                        f"pending {row.action} found at start-up", {"key": row.key}, "PENDING", state,
                        f"read back admin {admin}")
            self.metrics.enforcement_actions.labels(row.action, row.reason, state.lower(), row.mode).inc()
            if state != "APPLIED":
                await self._page("RackWardenEnforcementUnresolved", "page", row.server,
                                 f"{row.action} of {row.switch} {row.port} interrupted: {state}")
        for (sid, reason), r in list(self.rungs.items()):
            s = self.config.server(sid)
            if s is not None and (only_switch is None or s.switch == only_switch) and self.lease.held(s.switch):
                await self._check_drift(s, reason, r, at)
        self._publish_states()

    async def _check_drift(self, server: ServerConfig, reason: str, r: L.Rung, at: datetime,
                           admin: str | None = None) -> None:
        """A port we hold shut that reads admin up: the step decides what that means."""
        if r.phase != "shut":
            return
        last = self.store.last_action(server.id)
        if last is None or last.action != "shut" or last.state != "APPLIED":
            return
        if admin is None:
            admin = await self._read(server.switch, server.port)
        if admin != "up":
            return
        d = await self._decide(server, reason, E.PortSeenUp(), at)  # type: ignore[arg-type]
        if d.rung.phase != r.phase:
            self.metrics.drift.labels(server.id).inc()
            self._audit(at, server.id, reason, "drift", "enforce", "rackwarden", d.why,
                        {"switch": server.switch, "port": server.port}, r.phase, d.rung.phase, "admin up on read-back")

    # -- inputs ----------------------------------------------------------------------------------

    async def on_reports(self, reports: list[PortReport]) -> None:
        """After each poll: the breaker per switch, drift, then the overage ladder per server."""
        at = self.clock.at()
        by_switch: dict[str, list[PortReport]] = {}
        for rep in reports:
            by_switch.setdefault(rep.server.switch, []).append(rep)
        for sw, reps in by_switch.items():
            self.safety, why = E.breaker(self.safety, self.config.enforcement.safety, at, sw,
                                         [r.verdict for r in reps])
            if why:
                self.store.open_breaker(sw, at, why)
                self.metrics.breaker_open.labels(sw).set(1)
                self._audit(at, "*", "overage", "breaker", self._mode("overage"), "rackwarden", why,
                            {"switch": sw, "servers": len(reps)}, "closed", "open", why)
                await self._page("RackWardenBreakerOpen", "page", "*", why, {"switch": sw})
        for rep in reports:
            if rep.sample.admin == "up" and rep.sample.status != "missing":
                for (sid, reason), r in list(self.rungs.items()):
                    if sid == rep.server.id:
                        await self._check_drift(rep.server, reason, r, at, admin="up")
            obs = E.overage_observation(rep.verdict, rep.server.id, rep.server.template)
            await self._decide(rep.server, "overage", obs, at)

    async def on_abuse(self, server_id: str, det: Detection | None, evidence_path: Path | None) -> None:
        """A standing actionable detection (or None once it has cleared) for the abuse ladder."""
        server = self.config.server(server_id)
        if server is None:
            return
        obs = E.abuse_observation(det, str(evidence_path) if evidence_path else None)
        await self._decide(server, "abuse", obs, self.clock.at())

    async def tick(self) -> None:
        """Time passes: terms end even without a new poll."""
        at = self.clock.at()
        for (sid, reason), r in list(self.rungs.items()):
            server = self.config.server(sid)
            if server is not None and r.phase == "shut":
                await self._decide(server, reason, E.Tick(), at)  # type: ignore[arg-type]

    async def suspend(self, server_id: str, reason: str, note: str, actor: str) -> dict[str, Any]:
        """An operator's or the billing system's suspension (R11)."""
        if reason not in REASONS:
            raise EnforcementError(f"reason must be nonpayment, abuse or operator, not {reason!r}")
        server = self._server(server_id)
        await self._request(server, reason, E.Request("suspend", actor, note))
        return self.server_status(server_id)

    async def restore(self, server_id: str, actor: str, reason: str | None = None) -> dict[str, Any]:
        server = self._server(server_id)
        shut = [rs for (sid, rs), r in list(self.rungs.items())
                if sid == server_id and (reason is None or rs == reason) and r.phase == "shut"]
        if not shut:
            raise EnforcementError(f"{server_id} is not suspended")
        for rs in shut:
            await self._request(server, rs, E.Request("restore", actor))
        return self.server_status(server_id)

    async def _request(self, server: ServerConfig, reason: str, req: E.Request) -> None:
        if self._mode(reason) == "off":
            raise EnforcementError(f"enforcement of {reason} is off (enforcement.rules.{reason}.mode"
                                   f" or agent.mode)")
        d = await self._decide(server, reason, req, self.clock.at(), actor=req.actor)  # type: ignore[arg-type]
        if d.refusal is not None and d.refusal.rail == "lease":
            raise EnforcementError(d.refusal.reason)

    def hold(self, server_id: str, seconds: float, note: str, actor: str) -> dict[str, Any]:
        self._server(server_id)
        at = self.clock.at()
        until = at + timedelta(seconds=seconds)
        self.store.set_hold(server_id, until, note, actor)
        self._audit(at, server_id, "*", "hold", "-", actor, "exempt from automation",
                    {"until": until.isoformat(), "note": note}, "-", "held", f"until {until.isoformat()}")
        return self.server_status(server_id)

    def reset_breaker(self, switch: str, actor: str) -> None:
        self.safety = S.reset_breaker(self.safety, switch)
        self.store.close_breaker(switch)
        self.metrics.breaker_open.labels(switch).set(0)
        self._audit(self.clock.at(), "*", "*", "breaker_reset", "-", actor, "operator reset",
                    {"switch": switch}, "open", "closed", "reset")

    # -- the ladder ------------------------------------------------------------------------------

    def _mode(self, reason: str) -> str:
        return self.config.enforcement.mode_for(reason, self.config.agent.mode)

    def _server(self, server_id: str) -> ServerConfig:
        s = self.config.server(server_id)
        if s is None:
            raise EnforcementError(f"no server {server_id!r} in the inventory")
        return s

    def _rails(self, server: ServerConfig, reason: str, at: datetime) -> E.Rails:
        """The facts every rail reads, as they stand now."""
        sw = self.config.switches[server.switch]
        holds = self.store.holds()
        return E.Rails(
            mode=self._mode(reason),  # type: ignore[arg-type]
            switch=sw.name, port=server.port,
            lease_held=self.lease.held(sw.name),
            held=server.id in holds and at < holds[server.id][0],
            protected=server.port in sw.protected_ports,
            managed=self.config.server_on(sw.name, server.port) is server,
            inventory_ports=sw.ports,
            safety=self.safety, limits=self.config.enforcement.safety,
            shut_for=tuple(rs for (sid, rs), r in self.rungs.items()
                           if sid == server.id and rs != reason and r.phase == "shut"),
        )

    async def _decide(self, server: ServerConfig, reason: L.Reason, event: E.Event, at: datetime, *,
                      actor: str = "rackwarden") -> E.Decision:
        """One event through the enforcement step, then its intents carried out."""
        if self._mode(reason) == "off":
            return E.Decision(self.rungs.get((server.id, reason), L.Rung(server.id, reason)))
        async with self._locks.setdefault(server.id, asyncio.Lock()):
            return await self._step(server, reason, event, at, actor)

    async def _step(self, server: ServerConfig, reason: L.Reason, event: E.Event, at: datetime,
                    actor: str) -> E.Decision:
        key = (server.id, reason)
        rule = self.config.enforcement.rules[reason].rule
        before = self.rungs.get(key, L.Rung(server.id, reason))
        rails = self._rails(server, reason, at)
        d = E.step(before, rule, event, rails, at)
        if any(not c.dry_run for c in d.changes) and not await self.lease.confirm(server.switch):
            # The cached lease view said ours; the lease store, asked before the switch is
            # touched, says otherwise: the same event under the lease rail.
            lost = replace(rails, lease_held=False)
            d = E.step(before, rule, event, lost, at)
            if d.refusal is None:
                d = E.Decision(before, (), d.why, E.shut_refusal(lost, at))
        await self._record_refusal(server, reason, before, d, at, actor, rails.mode)
        if d.rung != before:
            # Write-ahead like the action itself: a kill -9 during the switch session must not
            # leave an applied shut with no ladder state behind it.
            self.rungs[key] = d.rung
            self.store.save_rung(d.rung)
        for intent in d.intents:
            await self._carry_out(server, reason, rule, intent, before.phase, at, actor, rails.mode)
        self._publish_states()
        return d

    async def _carry_out(self, server: ServerConfig, reason: L.Reason, rule: L.LadderRule, intent: E.Intent,
                         before: str, at: datetime, actor: str, mode: str) -> None:
        """One intent; its outcome goes back through the step as an event."""
        if isinstance(intent, E.Page):
            await self._page(intent.name, intent.severity, server.id, f"{server.switch} {server.port}: "
                             f"{intent.summary}", {"switch": server.switch, "port": server.port, "reason": reason})
            return
        if isinstance(intent, L.Notify):
            rung = self.rungs.get((server.id, reason), L.Rung(server.id, reason))
            delivered = await self._notify(server, intent, rung, at, mode)
            outcome: E.Event = E.NoticeOutcome(intent.key, delivered)
        else:
            state, admin = await self._change(server, intent, at, actor, before)
            outcome = E.ActionOutcome(intent.key, intent.action, state, admin)
        current = self.rungs.get((server.id, reason), L.Rung(server.id, reason))
        follow = E.step(current, rule, outcome, self._rails(server, reason, at), at)
        await self._record_refusal(server, reason, current, follow, at, actor, mode)
        if follow.rung != current:
            self.rungs[(server.id, reason)] = follow.rung
            self.store.save_rung(follow.rung)
        for nxt in follow.intents:
            await self._carry_out(server, reason, rule, nxt, current.phase, at, actor, mode)

    async def _record_refusal(self, server: ServerConfig, reason: str, before: L.Rung, d: E.Decision, at: datetime,
                        actor: str, mode: str) -> None:
        """One audit record (and one ticket) per refusal episode, not per poll."""
        if d.refusal is None:
            if d.changes:
                self._refusals.pop((server.id, reason), None)
            return
        if self._refusals.get((server.id, reason)) == d.refusal.reason:
            return
        self._refusals[(server.id, reason)] = d.refusal.reason
        action = "restore" if before.phase == "shut" else "shut"
        self.metrics.enforcement_actions.labels(action, reason, "refused", mode).inc()
        self._audit(at, server.id, reason, f"refuse_{action}", mode, actor,
                    (before.evidence.rule if before.evidence else d.why) or reason,
                    {"switch": server.switch, "port": server.port, "why": d.why}, before.phase, d.rung.phase,
                    f"{d.refusal.rail}: {d.refusal.reason}")
        if d.refusal.rail != "lease":
            await self._page("RackWardenEnforcementRefused", "ticket", server.id,
                             f"{action} of {server.switch} {server.port} refused: {d.refusal.reason}",
                             {"rail": str(d.refusal.rail)})

    async def _notify(self, server: ServerConfig, intent: L.Notify, rung: L.Rung, at: datetime,
                      mode: str) -> bool:
        prior = self.store.notice(intent.key)
        if prior is not None:
            return prior[0]
        if self.notifier is None:
            delivered, detail = False, "no notifier configured"
        else:
            t0 = self.clock.now()
            delivered, detail = await self.notifier.send(server, intent, rung, at)
            self.store.record_notice(intent.key, server.id, at, delivered, detail, self.clock.now() - t0)
        self.metrics.notices.labels(intent.stage, "delivered" if delivered else "unreachable").inc()
        self._audit(at, server.id, intent.reason, f"notify_{intent.stage}", mode, "rackwarden",
                    intent.evidence.rule, {"key": intent.key, "to": list(server.contacts),
                                           "until": intent.until.isoformat() if intent.until else None},
                    rung.phase, rung.phase, f"{'delivered' if delivered else 'unreachable'}: {detail}")
        return delivered

    async def _change(self, server: ServerConfig, change: E.Change, at: datetime, actor: str,
                      before: str) -> tuple[E.ActionState, str | None]:
        """Carry out one shut or restore; the read-back decides its state."""
        intent, action, reason = change.intent, change.action, change.intent.reason
        shut = action == "shut"
        sw = self.config.switches[server.switch]
        mode = "notify" if change.dry_run else "enforce"
        rule = intent.evidence.rule if isinstance(intent, L.ShutPort) else intent.why
        inputs: dict[str, Any] = {"switch": sw.name, "port": server.port, "key": intent.key}
        if isinstance(intent, L.ShutPort):
            inputs["evidence"] = {"summary": intent.evidence.summary, "figures": dict(intent.evidence.figures),
                                  "refs": list(intent.evidence.refs)}
            inputs["until"] = intent.until.isoformat() if intent.until else None
            inputs["ledger_cause"] = change.ledger_cause
        row, created = self.store.begin(key=intent.key, server=server.id, switch=sw.name, port=server.port,
                                        reason=reason, action=action, mode=mode, at=at, detail=inputs)
        if not created:
            return row.state, row.detail.get("snmp_admin")  # type: ignore[return-value]
        if change.dry_run:
            self.metrics.enforcement_actions.labels(action, reason, "dryrun", mode).inc()
            self._audit(at, server.id, reason, action, mode, actor, rule, inputs, before,
                        "shut" if shut else "restored", "dry run: switch not touched")
            if shut:
                self.safety = S.record_shut(self.safety, self.config.enforcement.safety, at, sw.name)
            return "DRYRUN", None

        if shut and self.outages is not None:
            # Before the switch is touched: a poll landing mid-change must see an enforced port,
            # not an unexplained admin-down.
            self._ledger_outage(server, change.ledger_cause, True, at, intent.key)
        driver = self.switches.get(sw.name)
        detail: dict[str, Any] = {}
        error: DriverError | None = None
        t0 = self.clock.now()
        if driver is None:
            error = PermanentDriverError(f"no SSH driver configured for {sw.name}", switch=sw.name)
        else:
            try:
                cli_port = sw.cli_name(server.port)
                result = await asyncio.wait_for(driver.shut(cli_port) if shut else driver.restore(cli_port),
                                                self.action_timeout_s)
                detail["cli_admin"] = result.cli_admin
                detail["cli_agrees"] = result.agrees
            except TimeoutError:
                error = DriverError(f"no answer within {self.action_timeout_s:g} s", switch=sw.name)
            except DriverError as e:
                error = e
            except Exception as e:  # a driver bug: the read-back below still decides the outcome
                log.exception("driver of %s raised on %s %s", sw.name, action, server.port)
                error = DriverError(f"driver raised {type(e).__name__}: {e}", switch=sw.name, outcome_unknown=True)
        if error is not None:
            detail["error"] = f"{type(error).__name__}: {error}"
        # The switch's own counters are the judge: SNMP ifAdminStatus after every change.
        admin = await self._read(sw.name, server.port)
        detail["snmp_admin"] = admin
        detail["latency_s"] = round(self.clock.now() - t0, 3)
        want = "down" if shut else "up"
        state: E.ActionState = "APPLIED" if admin == want else "UNKNOWN" if admin is None else "FAILED"
        end_at = self.clock.at()
        self.store.finish(intent.key, state, end_at, detail)
        self.metrics.enforcement_actions.labels(action, reason, state.lower(), mode).inc()
        self._audit(end_at, server.id, reason, action, mode, actor, rule, inputs, before,
                    ("shut" if shut else "restored") if state == "APPLIED" else before,
                    f"{state}: admin {admin}" + (f"; {detail['error']}" if error else ""))
        if shut and state == "APPLIED":
            self.safety = S.record_shut(self.safety, self.config.enforcement.safety, at, sw.name)
        if self.outages is not None and (admin == "up"):
            # A restore that brought the port up, or a shut that did not happen: the outage ends.
            self._ledger_outage(server, change.ledger_cause, False, end_at, intent.key)
        return state, admin

    def _ledger_outage(self, server: ServerConfig, cause: str, shut: bool, at: datetime, key: str) -> None:
        """The cause (decided by the enforcement step) goes to the ledger with the outage."""
        assert self.outages is not None
        try:
            if shut:
                self.outages.enforcement_started(server.id, at, cause, {"action": key})
            else:
                self.outages.enforcement_ended(server.id, at, {"action": key})
        except Exception:  # the action stands; the ledger gap is logged and counted
            log.exception("ledger record of %s %s failed", "shut" if shut else "restore", server.id)
            self.metrics.ledger_errors.inc()

    async def _read(self, switch: str, port: str) -> str | None:
        try:
            return await self.readback(switch, port)
        except Exception:  # the read-back path must not decide an outcome by crashing
            log.exception("read-back of %s %s failed", switch, port)
            return None

    # -- records -----------------------------------------------------------------------------

    def _audit(self, at: datetime, server: str, reason: str, decision: str, mode: str, actor: str,
               rule: str, inputs: dict[str, Any], before: str, after: str, result: str) -> None:
        self.store.audit(at=at, server=server, reason=reason, decision=decision, mode=mode, actor=actor,
                         rule=rule, inputs=inputs, before=before, after=after, result=result)
        log.info("%s %s %s [%s] %s -> %s: %s", decision, server, reason, mode, before, after, result)

    async def _page(self, name: str, severity: str, server: str, summary: str,
                    labels: dict[str, str] | None = None) -> None:
        if self.oncall is None:
            return
        all_labels = {"server": server, **(labels or {})}
        description = f"{summary} ({', '.join(f'{k}={v}' for k, v in sorted(all_labels.items()))})"
        try:
            sent = await self.oncall.alert(name, severity, all_labels, summary, description, self.clock.at())
        except Exception:  # an alerting outage must not stop enforcement
            log.exception("alert %s could not be sent", name)
            return
        for sink, ok in sent.items():
            if not ok:
                log.error("alert %s was not accepted by %s", name, sink)

    def _publish_states(self) -> None:
        per_server: dict[str, int] = {}
        for (sid, _), r in self.rungs.items():
            per_server[sid] = max(per_server.get(sid, 0), PHASE_VALUE[r.phase])
        for s in self.config.servers:
            self.metrics.enforcement_state.labels(s.id).set(per_server.get(s.id, 0))

    def server_status(self, server_id: str) -> dict[str, Any]:
        s = self._server(server_id)
        holds = self.store.holds()
        last = self.store.last_action(server_id)
        return {
            "server": s.id, "customer": s.customer, "switch": s.switch, "port": s.port,
            "ladder": {reason: {"phase": r.phase, "until": r.until.isoformat() if r.until else None,
                                "notice": r.notice, "episode": r.episode}
                       for (sid, reason), r in self.rungs.items() if sid == server_id},
            "hold_until": holds[server_id][0].isoformat() if server_id in holds else None,
            "refused": {reason: why for (sid, reason), why in self._refusals.items() if sid == server_id},
            "last_action": None if last is None else {"action": last.action, "reason": last.reason,
                                                      "state": last.state, "mode": last.mode,
                                                      "at": last.updated_at},
        }

    def status(self) -> dict[str, Any]:
        return {
            "mode": self.config.agent.mode,
            "servers": [self.server_status(s.id) for s in self.config.servers],
            "breakers": [{"switch": sw, "at": at.isoformat(), "why": why} for sw, at, why in self.safety.open_breakers],
        }

