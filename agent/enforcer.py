"""The enforcer: the only code that changes a switch. Ladder intents in; rails, read-back, records and alerts out."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from rackwarden.drivers.switch.base import DriverError, PermanentDriverError, SwitchDriver
from rackwarden.policies import ladder as L
from rackwarden.policies import safety as S
from rackwarden.policies.cap import CapVerdict

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
# Ledger cause of each suspension reason (policies/sla.py's vocabulary): overage, abuse and
# non-payment are the customer's (R16); an operator's decision is `unknown` until classified.
LEDGER_CAUSE = {"overage": "overage", "abuse": "abuse", "nonpayment": "nonpayment", "operator": "unknown"}


class CustomerNotifier(Protocol):
    async def send(self, server: ServerConfig, intent: L.Notify, rung: L.Rung, at: datetime) -> tuple[bool, str]: ...


class OnCall(Protocol):
    async def alert(self, name: str, severity: str, labels: dict[str, str], summary: str,
                    description: str, at: datetime) -> Mapping[str, bool]: ...


class EnforcementError(Exception):
    """An operator request that cannot be carried out (unknown server, bad reason)."""


def overage_evidence(v: CapVerdict, server: ServerConfig) -> L.Evidence:
    judged = v.judged_bps or 0.0
    return L.Evidence(
        rule=f"R1/R2 ({server.template}): cap {v.cap_bps / 1e6:g} Mbit/s, direction {v.direction}",
        summary=(f"{server.id} at {judged / 1e6:.2f} Mbit/s, over its cap for {v.covered_s:.0f} s"),
        figures=(("rate_bps", round(judged)), ("cap_bps", v.cap_bps), ("over_s", round(v.covered_s, 1))),
        refs=tuple(f"{e.start_at.isoformat()}..{e.end_at.isoformat()} {e.judged_bps:.0f} bit/s"
                   for e in v.evidence[-10:]),
    )


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
                await self._check_drift(sid, reason, r, at)
        self._publish_states()

    async def _check_drift(self, sid: str, reason: str, r: L.Rung, at: datetime,
                           admin: str | None = None) -> None:
        server = self.config.server(sid)
        if server is None or r.phase != "shut" or self._mode(reason) != "enforce":
            return
        last = self.store.last_action(sid)
        if last is None or last.action != "shut" or last.state != "APPLIED":
            return
        if admin is None:
            admin = await self._read(server.switch, server.port)
        if admin == "up":
            # A person re-enabled the port. Never re-apply blindly: alert, and stand down until
            # a fresh violation.
            self.rungs[(sid, reason)] = replace(r, phase="restored", until=None)
            self.store.save_rung(self.rungs[(sid, reason)])
            self.metrics.drift.labels(sid).inc()
            self._audit(at, sid, reason, "drift", "enforce", "rackwarden", "port re-enabled outside RackWarden",
                        {"switch": server.switch, "port": server.port}, "shut", "restored", "admin up on read-back")
            await self._page("RackWardenEnforcementDrift", "page", sid,
                             f"{server.switch} {server.port} is up although {sid} is suspended for {reason}")

    # -- inputs ----------------------------------------------------------------------------------

    async def on_reports(self, reports: list[PortReport]) -> None:
        """After each poll: breaker check per switch, then the overage ladder per server."""
        at = self.clock.at()
        by_switch: dict[str, list[PortReport]] = {}
        for rep in reports:
            by_switch.setdefault(rep.server.switch, []).append(rep)
        for sw, reps in by_switch.items():
            breaching = sum(1 for r in reps if r.verdict.valid and r.verdict.state != "ok")
            self.safety, why = S.evaluate_breaker(self.safety, self.config.enforcement.safety, at,
                                                  switch=sw, breaching=breaching, servers=len(reps))
            if why:
                self.store.open_breaker(sw, at, why)
                self.metrics.breaker_open.labels(sw).set(1)
                self._audit(at, "*", "overage", "breaker", self._mode("overage"), "rackwarden", why,
                            {"switch": sw, "breaching": breaching, "servers": len(reps)}, "closed", "open", why)
                await self._page("RackWardenBreakerOpen", "page", "*", why, {"switch": sw})
        for rep in reports:
            r = self.rungs.get((rep.server.id, "overage"))
            if r is not None and rep.sample.admin == "up" and rep.sample.status != "missing":
                await self._check_drift(rep.server.id, "overage", r, at, admin="up")
            v = rep.verdict
            violating = v.state == "sustained" and v.actionable
            await self._climb(rep.server, "overage", violating,
                              overage_evidence(v, rep.server) if violating else None, at)

    async def on_abuse(self, server_id: str, det: Any | None, evidence_path: Path | None) -> None:
        """A standing actionable detection (or None once it has cleared) for the abuse ladder."""
        server = self.config.server(server_id)
        if server is None:
            return
        at = self.clock.at()
        evidence = None
        attack = False
        r = self.rungs.get((server_id, "abuse"))
        if det is not None and r is not None and r.restored_at is not None and det.last_at <= r.restored_at:
            det = None  # seen before the last restore: that episode is closed, not a new one
        if det is not None:
            # Floods and scans are attacks on others: cut first if the customer can't be reached (R9).
            attack = det.detector in ("flood", "scan") or det.severity == "critical"
            figures = tuple((k, round(float(v), 1)) for k, v in list(det.rates.items())[:6])
            figures += tuple((k, int(v)) for k, v in list(det.counts.items())[:6])
            refs = ((str(evidence_path),) if evidence_path else ()) + tuple(det.subjects[:5])
            evidence = L.Evidence(rule=f"{det.rule} {det.detector}/{det.kind}", summary=det.reason,
                                  figures=figures, refs=refs)
        await self._climb(server, "abuse", det is not None, evidence, at, attack=attack)

    async def tick(self) -> None:
        """Time passes: terms end, grace periods run out even without a new poll."""
        at = self.clock.at()
        for (sid, reason), r in list(self.rungs.items()):
            server = self.config.server(sid)
            if server is None:
                continue
            if r.phase == "shut" and r.until is not None and at >= r.until:
                await self._climb(server, reason, False, None, at)  # type: ignore[arg-type]

    async def suspend(self, server_id: str, reason: str, note: str, actor: str) -> dict[str, Any]:
        """An operator's or the billing system's suspension (R11)."""
        if reason not in ("nonpayment", "abuse", "operator"):
            raise EnforcementError(f"reason must be nonpayment, abuse or operator, not {reason!r}")
        server = self._server(server_id)
        at = self.clock.at()
        ev = L.Evidence(rule={"nonpayment": "R11 non-payment", "abuse": "R10 abuse (operator)",
                              "operator": "operator decision"}[reason], summary=note or reason,
                        refs=(f"requested by {actor}",))
        await self._climb(server, reason, True, ev, at, actor=actor, force_now=True)  # type: ignore[arg-type]
        return self.server_status(server_id)

    async def restore(self, server_id: str, actor: str, reason: str | None = None) -> dict[str, Any]:
        server = self._server(server_id)
        at = self.clock.at()
        found = False
        for (sid, rs), r in list(self.rungs.items()):
            if sid != server_id or (reason and rs != reason) or r.phase != "shut":
                continue
            found = True
            self.rungs[(sid, rs)] = L.request_restore(r)
            await self._climb(server, rs, False, None, at, actor=actor)  # type: ignore[arg-type]
        if not found:
            raise EnforcementError(f"{server_id} is not suspended")
        return self.server_status(server_id)

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

    async def _climb(self, server: ServerConfig, reason: L.Reason, violating: bool,
                     evidence: L.Evidence | None, at: datetime, *, actor: str = "rackwarden",
                     attack: bool = False, force_now: bool = False) -> None:
        mode = self._mode(reason)
        if mode == "off":
            return
        lock = self._locks.setdefault(server.id, asyncio.Lock())
        async with lock:
            if not self.lease.held(server.switch):
                # A standby for this switch: it meters and records, and decides nothing
                # (which also keeps customers from getting two notices).
                if actor != "rackwarden":
                    raise EnforcementError(f"this agent ({self.lease.holder}) does not hold the enforcement"
                                           f" lease on {server.switch}; ask the agent that does")
                return
            key = (server.id, reason)
            r = self.rungs.get(key, L.Rung(server.id, reason))
            rule = self.config.enforcement.rules[reason].rule
            if force_now:
                rule = replace(rule, grace_s=0.0)
            if r.phase == "shut" and violating and force_now:
                self.rungs[key] = L.extend(r, rule, at)  # one active action per (port, reason)
                self.store.save_rung(self.rungs[key])
                return
            step = L.step(r, rule, at, violating=violating, evidence=evidence, attack=attack)
            new = step.rung
            if new != r:
                # Write-ahead like the action itself: a kill -9 during the switch session must
                # not leave an applied shut with no ladder state behind it.
                self.rungs[key] = new
                self.store.save_rung(new)
            for intent in step.intents:
                if isinstance(intent, L.Notify):
                    new = await self._notify(server, intent, new, at, mode)
                elif isinstance(intent, L.ShutPort):
                    outcome = await self._change(server, intent, at, mode, actor, r.phase, intent.reason)
                    if outcome == "refused":
                        # Refused by a rail: stay noticed and try again at the next observation.
                        # A FAILED or UNKNOWN change stays as recorded: known, paged, not retried.
                        new = replace(new, phase="noticed", shut_at=None, until=None,
                                      repeats=new.repeats[:-1])
                        break
                elif isinstance(intent, L.RestorePort):
                    if await self._change(server, intent, at, mode, actor, r.phase, intent.reason) == "refused":
                        new = r  # the ladder stays where it was and tries again
                        break
            if new != self.rungs.get(key):
                self.rungs[key] = new
                self.store.save_rung(new)
            self._publish_states()

    async def _notify(self, server: ServerConfig, intent: L.Notify, rung: L.Rung, at: datetime,
                      mode: str) -> L.Rung:
        prior = self.store.notice(intent.key)
        if prior is not None:
            delivered, detail = prior
        elif self.notifier is None:
            delivered, detail = False, "no notifier configured"
        else:
            t0 = self.clock.now()
            delivered, detail = await self.notifier.send(server, intent, rung, at)
            self.store.record_notice(intent.key, server.id, at, delivered, detail, self.clock.now() - t0)
        if prior is None:
            self.metrics.notices.labels(intent.stage, "delivered" if delivered else "unreachable").inc()
            self._audit(at, server.id, intent.reason, f"notify_{intent.stage}", mode, "rackwarden",
                        intent.evidence.rule, {"key": intent.key, "to": list(server.contacts)},
                        rung.phase, rung.phase, f"{'delivered' if delivered else 'unreachable'}: {detail}")
        if intent.stage == "warning":
            return L.notice_result(rung, "delivered" if delivered else "unreachable")
        return rung

    async def _change(self, server: ServerConfig, intent: L.ShutPort | L.RestorePort, at: datetime,
                      mode: str, actor: str, before: str, reason: str) -> str:
        """Carry out one change; returns refused, applied, dryrun, failed or unknown."""
        shut = isinstance(intent, L.ShutPort)
        action = "shut" if shut else "restore"
        sw = self.config.switches[server.switch]
        rule = intent.evidence.rule if isinstance(intent, L.ShutPort) else intent.why
        inputs: dict[str, Any] = {"switch": sw.name, "port": server.port, "key": intent.key}
        if isinstance(intent, L.ShutPort):
            inputs["evidence"] = {"summary": intent.evidence.summary, "figures": dict(intent.evidence.figures),
                                  "refs": list(intent.evidence.refs)}
            inputs["until"] = intent.until.isoformat() if intent.until else None
            holds = self.store.holds()
            held = server.id in holds and at < holds[server.id][0]
            verdict = S.check_shut(self.safety, self.config.enforcement.safety, at, switch=sw.name,
                                   port=server.port, inventory_ports=sw.ports,
                                   protected_ports=sw.protected_ports,
                                   managed=self.config.server_on(sw.name, server.port) is server, held=held)
            if not verdict.allowed:
                last = self._refusals.get((server.id, reason))
                self._refusals[(server.id, reason)] = verdict.reason
                if last != verdict.reason:
                    self.metrics.enforcement_actions.labels(action, reason, "refused", mode).inc()
                    self._audit(at, server.id, reason, "refuse_shut", mode, actor, rule, inputs, before,
                                before, f"{verdict.rail}: {verdict.reason}")
                    await self._page("RackWardenEnforcementRefused", "ticket", server.id,
                                     f"shut of {sw.name} {server.port} refused: {verdict.reason}",
                                     {"rail": str(verdict.rail)})
                return "refused"
            self._refusals.pop((server.id, reason), None)
        if mode == "enforce" and not await self.lease.confirm(sw.name):
            why = f"this agent ({self.lease.holder}) does not hold the enforcement lease on {sw.name}"
            if self._refusals.get((server.id, reason)) != why:
                self._refusals[(server.id, reason)] = why
                self.metrics.enforcement_actions.labels(action, reason, "refused", mode).inc()
                self._audit(at, server.id, reason, f"refuse_{action}", mode, actor, rule, inputs,
                            before, before, f"lease: {why}")
            return "refused"

        row, created = self.store.begin(key=intent.key, server=server.id, switch=sw.name, port=server.port,
                                        reason=reason, action=action, mode=mode, at=at, detail=inputs)
        if not created:
            return row.state.lower()  # a repeat of a decision already carried out
        if mode != "enforce":
            self.metrics.enforcement_actions.labels(action, reason, "dryrun", mode).inc()
            self._audit(at, server.id, reason, action, mode, actor, rule, inputs, before,
                        "shut" if shut else "restored", "dry run: switch not touched")
            if shut:
                self.safety = S.record_shut(self.safety, self.config.enforcement.safety, at, sw.name)
            return "dryrun"

        if shut and self.outages is not None:
            # Before the switch is touched: a poll landing mid-change must see an enforced port,
            # not an unexplained admin-down.
            self._ledger_outage(server, reason, True, at, intent.key)
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
        if error is not None:
            detail["error"] = f"{type(error).__name__}: {error}"
        # The switch's own counters are the judge: SNMP ifAdminStatus after every change.
        admin = await self._read(sw.name, server.port)
        detail["snmp_admin"] = admin
        detail["latency_s"] = round(self.clock.now() - t0, 3)
        want = "down" if shut else "up"
        state = "APPLIED" if admin == want else "UNKNOWN" if admin is None else "FAILED"
        end_at = self.clock.at()
        self.store.finish(intent.key, state, end_at, detail)
        self.metrics.enforcement_actions.labels(action, reason, state.lower(), mode).inc()
        self._audit(end_at, server.id, reason, action, mode, actor, rule, inputs, before,
                    ("shut" if shut else "restored") if state == "APPLIED" else before,
                    f"{state}: admin {admin}" + (f"; {detail['error']}" if error else ""))
        if shut and state == "APPLIED":
            self.safety = S.record_shut(self.safety, self.config.enforcement.safety, at, sw.name)
        if self.outages is not None:
            if not shut and state == "APPLIED":
                self._ledger_outage(server, reason, False, end_at, intent.key)
            elif shut and admin == "up":
                self._ledger_outage(server, reason, False, end_at, intent.key)  # the shut did not happen
        severity = "ticket" if state == "APPLIED" else "page"
        await self._page(f"RackWarden{action.capitalize()}{'' if state == 'APPLIED' else state.capitalize()}",
                         severity, server.id, f"{action} {sw.name} {server.port} for {reason}: {state}",
                         {"switch": sw.name, "port": server.port, "reason": reason})
        return state.lower()

    def _ledger_outage(self, server: ServerConfig, reason: str, shut: bool, at: datetime, key: str) -> None:
        """Our own suspensions are customer-caused outages (R16); an operator's is for a person to class."""
        assert self.outages is not None
        try:
            if shut:
                self.outages.enforcement_started(server.id, at, LEDGER_CAUSE[reason], {"action": key})
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
