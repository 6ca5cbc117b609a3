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

from rackwarden.drivers.notify import Notice
from rackwarden.drivers.switch.base import DriverError, PermanentDriverError, SwitchDriver
from rackwarden.drivers.switch.restrictions import RestrictionResult
from rackwarden.policies import enforce as E
from rackwarden.policies import ladder as L
from rackwarden.policies import safety as S
from rackwarden.policies.cap import CapAnnouncement, cap_announcements
from rackwarden.policies.detect import Detection
from sqlalchemy.engine import Connection

from .actions import ActionRow, ActionStore
from .clock import Clock
from .config import Config, ServerConfig
from .ha import Lease, LocalLease
from .ledger import NewEntry, OutageRecorder
from .metering import PortReport
from .metrics import Metrics

log = logging.getLogger("rackwarden.enforcer")

ReadBack = Callable[[str, str], Awaitable[str | None]]  # (switch, port) -> "up" | "down" | None
Begun = dict[str, tuple[ActionRow, bool]]  # action key -> (its record, written by this decision)
# rackwarden_server_enforcement_state: 0 observing, 1 notified, 2 suspended, 3 restricted. When
# several reasons hold a server, the strongest shows: a shut over a restriction over a notice.
PHASE_VALUE = {"idle": 0, "restored": 0, "noticed": 1, "shut": 2, "restricted": 3}
PHASE_RANK = {"idle": 0, "restored": 0, "noticed": 1, "restricted": 2, "shut": 3}
REASONS = ("nonpayment", "abuse", "operator")  # what a person or the billing system may suspend for


class CustomerNotifier(Protocol):
    async def send(self, server: ServerConfig, intent: L.Notify, rung: L.Rung, at: datetime) -> tuple[bool, str]: ...
    def cap_notice(self, server: ServerConfig, ann: CapAnnouncement, at: datetime) -> Notice: ...
    async def send_notice(self, notice: Notice, at: datetime) -> tuple[bool, str]: ...


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
        self._announce_due = True  # R3: look for cap changes to announce at the next tick
        # The latest observation per (server, reason): whether it violated. A re-check of a
        # restricted port is answered from it (the ladder lifts only on traffic within the rule).
        self._violating: dict[tuple[str, str], bool] = {}
        self._blocked_published: set[tuple[str, str]] = set()
        # Holds as last read, and when (monotonic): one read serves every decision of a poll,
        # not one query per server (10,000 per poll at scale). A hold set here drops it.
        self._holds_read: tuple[float, dict[str, Any]] | None = None

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
        self._announce_due = True  # a reload may bring new cap changes (R3)

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
        self._announce_due = True  # the previous holder may not have announced them all
        self._audit(self.clock.at(), "*", "*", "take_over", "-", self.lease.holder, "enforcement lease acquired",
                    {"switch": switch}, "standby", "holder", "ladder state adopted")

    async def _reconcile(self, at: datetime, only_switch: str | None) -> None:
        for row in self.store.actions(state="PENDING"):
            if (only_switch and row.switch != only_switch) or not self.lease.held(row.switch):
                continue  # another agent's switch: its holder reconciles it
            # A crash between PENDING and the switch's answer: the switch says what happened.
            restriction = _restriction_of(row.detail)
            if restriction is not None:
                # A throttle or block (or its lift): the switch's restriction read-back decides.
                admin = await self._read_restriction(row.switch, row.port, restriction)
                want = "present" if row.action in E.APPLY_ACTIONS else "absent"
                detail: dict[str, Any] = {"reconciled": True, "cli_reading": admin,
                                          "restriction": _restriction_dict(restriction)}
            else:
                admin = await self._read(row.switch, row.port)
                want = "down" if row.action == "shut" else "up"
                detail = {"reconciled": True, "snmp_admin": admin}
            state: E.ActionState = ("UNKNOWN" if admin in (None, "unknown") else "APPLIED" if admin == want
                                    else "FAILED")
            server = self.config.server(row.server)
            if server is not None and row.reason in self.config.enforcement.rules:
                # Like any read-back: the record, the rung and the outage entry move together.
                row_reason: L.Reason = row.reason  # type: ignore[assignment]
                rule = self.config.enforcement.rules[row_reason].rule
                async with self._locks.setdefault(server.id, asyncio.Lock()):
                    await self._finish(server, row_reason, rule, row, state, admin, detail, "PENDING",
                                       "rackwarden")
            else:  # a server no longer configured: the record is closed, nothing else moves
                self.store.finish(row.key, state, at, detail)
                self._audit(at, row.server, row.reason, row.action, row.mode, "rackwarden",
                            f"pending {row.action} found at start-up", {"key": row.key}, "PENDING", state,
                            f"read back admin {admin}")
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

    # -- R3: a new standard is announced --------------------------------------------------------

    async def announce_cap_changes(self) -> int:
        """Tell each customer of every dated cap change still in its objection period, once.

        The policy picks the changes (`policies/cap.cap_announcements`); each is sent once per
        key, and its notice record and a `cap_change` ledger entry (the new standard, when it
        applies, the objection deadline, whether it was delivered) are written together.
        Returns how many were announced now.
        """
        at = self.clock.at()
        sent = 0
        for server in self.config.servers:
            if not self.lease.held(server.switch):
                continue  # the switch's holder announces its servers' changes
            for ann in cap_announcements(server.id, self.config.cap_schedule(server), at):
                if self.store.notice(ann.key) is not None:
                    continue
                if self.notifier is None:
                    delivered, detail = False, "no notifier configured"
                else:
                    try:
                        delivered, detail = await self.notifier.send_notice(
                            self.notifier.cap_notice(server, ann, at), at)
                    except Exception as e:  # a notice that cannot be built or sent is recorded as such
                        log.exception("cap change notice %s", ann.key)
                        delivered, detail = False, f"{type(e).__name__}: {e}"
                self._record_announcement(server, ann, at, delivered, detail)
                self.metrics.notices.labels("cap_change", "delivered" if delivered else "unreachable").inc()
                sent += 1
        return sent

    def _record_announcement(self, server: ServerConfig, ann: CapAnnouncement, at: datetime,
                             delivered: bool, detail: str) -> None:
        payload = {"key": ann.key, "effective_at": ann.effective_at.isoformat(), "from_bps": ann.from_bps,
                   "to_bps": ann.to_bps, "objection_until": ann.objection_until.isoformat(),
                   "short_notice": ann.short_notice, "delivered": delivered, "detail": detail[:500]}
        with self.store.transaction() as conn:
            self.store.record_notice(ann.key, server.id, at, delivered, detail, None, conn=conn)
            if self.outages is not None:
                self.outages.store.append_many([NewEntry("cap_change", at, payload, server.id)],
                                               self._ledger_conn(conn))
        self._audit(at, server.id, "standard", "notify_cap_change", "-", "rackwarden",
                    "R3 (rental §2.1.1)", payload, "-", "-",
                    f"{'delivered' if delivered else 'unreachable'}: {detail}")

    # -- inputs ----------------------------------------------------------------------------------

    async def on_reports(self, reports: list[PortReport]) -> None:
        """After each poll: the breaker per switch, drift, then the overage ladder per server."""
        at = self.clock.at()
        by_switch: dict[str, list[PortReport]] = {}
        for rep in reports:
            by_switch.setdefault(rep.server.switch, []).append(rep)
        throttled = {sid for (sid, reason), r in self.rungs.items()
                     if reason == "overage" and r.phase == "restricted"}
        for sw, reps in by_switch.items():
            self.safety, why = E.breaker(self.safety, self.config.enforcement.safety, at, sw,
                                         [r.verdict for r in reps], throttled)
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
        """Time passes: terms end even without a new poll; cap changes are announced."""
        if self._announce_due:
            self._announce_due = False
            try:
                await self.announce_cap_changes()
            except Exception:  # the ledger or the store refused: the next tick tries again
                log.exception("announcing cap changes failed")
                self.metrics.ledger_errors.inc()
                self._announce_due = True
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
        """Lift a suspension or a restriction. A restriction is lifted only when the latest
        measurement is within the rule (the step decides; a refusal leaves it in force)."""
        server = self._server(server_id)
        held = [rs for (sid, rs), r in list(self.rungs.items())
                if sid == server_id and (reason is None or rs == reason) and r.phase in ("shut", "restricted")]
        if not held:
            raise EnforcementError(f"{server_id} is not suspended or restricted")
        for rs in held:
            await self._request(server, rs, E.Request("restore", actor, violating=self._violating.get((server_id, rs))))
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
        self._holds_read = None
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

    HOLDS_FRESH_S = 1.0  # a hold set by another agent on the shared database shows within this

    def _holds(self) -> dict[str, Any]:
        now = self.clock.now()
        if self._holds_read is None or now - self._holds_read[0] >= self.HOLDS_FRESH_S:
            self._holds_read = (now, dict(self.store.holds()))
        return self._holds_read[1]

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
        holds = self._holds()
        # A throttle polices the port's ingress, i.e. what the server sends: it answers a cap
        # judged on `out` only. Other directions are not offered one (their finding is shut).
        rule = self.config.cap_rule(server, at)
        cap_bps = rule.cap_bps if rule.direction == "out" else None
        return E.Rails(
            cap_bps=cap_bps,
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
        if isinstance(event, E.Observation):
            self._violating[key] = event.violating
        d = E.step(before, rule, event, rails, at)
        if any(not c.dry_run for c in d.changes) and not await self.lease.confirm(server.switch):
            # The cached lease view said ours; the lease store, asked before the switch is
            # touched, says otherwise: the same event under the lease rail.
            lost = replace(rails, lease_held=False)
            d = E.step(before, rule, event, lost, at)
            if d.refusal is None:
                d = E.Decision(before, (), d.why, E.shut_refusal(lost, at))
        await self._record_refusal(server, reason, before, d, at, actor, rails.mode)
        begun = await self._commit(server, before, d, at)
        if begun is not None:
            for intent in d.intents:
                await self._carry_out(server, reason, rule, intent, before.phase, at, actor, rails.mode, begun)
        self._publish_states()
        return d

    # -- the one write of a port's enforcement state -------------------------------------------

    def _ledger_conn(self, conn: Connection) -> Connection | None:
        """The enforcer's transaction, when the ledger lives in the same database (it does in
        the agent; unit tests may give the two stores separate files)."""
        if self.outages is not None and self.outages.store.engine is self.store.engine:
            return conn
        return None

    async def _commit(self, server: ServerConfig, before: L.Rung, d: E.Decision, at: datetime,
                      also: Callable[[Connection], None] | None = None) -> Begun | None:
        """Write a decision before anything is carried out, in ONE transaction: the finished
        change it follows (`also`), the new rung, the record of each change it asks for (PENDING,
        or DRYRUN), and the ledger's enforced outage a shut starts. None: nothing was written,
        so nothing may be done; the next event decides again.
        """
        begun: Begun = {}
        if also is None and d.rung == before and not d.changes:
            return begun  # most polls: nothing moved, no transaction
        try:
            with self.store.transaction() as conn:
                if also is not None:
                    also(conn)
                if d.rung != before:
                    self.store.save_rung(d.rung, conn)
                for c in d.changes:
                    row, created = self.store.begin(
                        key=c.intent.key, server=server.id, switch=server.switch, port=server.port,
                        reason=c.intent.reason, action=c.action, mode="notify" if c.dry_run else "enforce",
                        at=at, detail=self._inputs(server, c), conn=conn)
                    begun[c.intent.key] = (row, created)
                    if created and c.action == "shut" and not c.dry_run and self.outages is not None:
                        # Before the switch is touched: a poll landing mid-change must see an
                        # enforced port, not an unexplained admin-down.
                        self.outages.enforcement_started(server.id, at, c.ledger_cause,
                                                         {"action": c.intent.key}, conn=self._ledger_conn(conn))
                if self._lets_go(server, before, d):
                    # The ladder let go of the port without a change of ours (someone brought it
                    # up by hand): the outage view follows the ladder, in the same transaction.
                    assert self.outages is not None
                    self.outages.enforcement_ended(server.id, at, {"why": d.why}, conn=self._ledger_conn(conn))
        except Exception as e:  # the database refused: act on nothing that is not recorded
            log.exception("enforcement state of %s could not be written", server.id)
            self.metrics.ledger_errors.inc()
            self._resync_outages()
            await self._page("RackWardenStateWriteFailed", "page", server.id,
                             f"enforcement state of {server.id} not written, nothing done: {type(e).__name__}")
            return None
        if d.rung != before:
            self.rungs[(server.id, d.rung.reason)] = d.rung
            # Now, not after the follow-ups: a notice can take seconds to deliver, and the
            # gauges must not lag the rung (or the action counter) that long.
            self._publish_states(server.id)
        return begun

    def _lets_go(self, server: ServerConfig, before: L.Rung, d: E.Decision) -> bool:
        """The last rung holding the port shut leaves `shut` with no restore to read back."""
        if self.outages is None or before.phase != "shut" or d.rung.phase == "shut" or d.changes:
            return False
        if any(r.phase == "shut" for (sid, rs), r in self.rungs.items() if sid == server.id and rs != before.reason):
            return False
        return self.outages.tracker.enforced(server.id) is not None

    def _resync_outages(self) -> None:
        """After a failed write, the outage tracker's memory is re-read from the ledger."""
        if self.outages is None:
            return
        try:
            self.outages.restart()
        except Exception:
            log.exception("outage tracker could not re-read the ledger")

    @staticmethod
    def _inputs(server: ServerConfig, change: E.Change) -> dict[str, Any]:
        """What the action record and its audit keep about why the change was asked for."""
        intent = change.intent
        inputs: dict[str, Any] = {"switch": server.switch, "port": server.port, "key": intent.key,
                                  "rule": Enforcer._why(change)}
        if isinstance(intent, L.ShutPort | L.RestrictPort):
            inputs["evidence"] = {"summary": intent.evidence.summary, "figures": dict(intent.evidence.figures),
                                  "refs": list(intent.evidence.refs)}
            inputs["until"] = intent.until.isoformat() if intent.until else None
        if isinstance(intent, L.ShutPort):
            inputs["ledger_cause"] = change.ledger_cause
        if change.restriction is not None:
            inputs["restriction"] = _restriction_dict(change.restriction)
        return inputs

    async def _carry_out(self, server: ServerConfig, reason: L.Reason, rule: L.LadderRule, intent: E.Intent,
                         before: str, at: datetime, actor: str, mode: str, begun: Begun) -> None:
        """One intent; its outcome goes back through the step as an event."""
        if isinstance(intent, E.Page):
            await self._page(intent.name, intent.severity, server.id, f"{server.switch} {server.port}: "
                             f"{intent.summary}", {"switch": server.switch, "port": server.port, "reason": reason})
            return
        if isinstance(intent, L.Notify):
            rung = self.rungs.get((server.id, reason), L.Rung(server.id, reason))
            delivered = await self._notify(server, intent, rung, at, mode)
            await self._follow(server, reason, rule, E.NoticeOutcome(intent.key, delivered), at, actor, mode)
            return
        row, created = begun[intent.key]
        if not created:  # a repeat of a recorded change: its recorded outcome, nothing touched
            outcome = E.ActionOutcome(intent.key, intent.action, row.state,  # type: ignore[arg-type]
                                      row.detail.get("snmp_admin"), _restriction_of(row.detail))
            await self._follow(server, reason, rule, outcome, at, actor, mode)
            return
        if intent.dry_run:
            self._dry_run(server, intent, at, actor, before)
            await self._follow(server, reason, rule, E.ActionOutcome(intent.key, intent.action, "DRYRUN", None,
                                                                     intent.restriction),
                               at, actor, mode)
            return
        if intent.restriction is not None:
            state, admin, detail = await self._apply_restriction(server, intent, intent.restriction)
        else:
            state, admin, detail = await self._apply(server, intent)
        await self._finish(server, reason, rule, row, state, admin, detail, before, actor)

    async def _follow(self, server: ServerConfig, reason: L.Reason, rule: L.LadderRule, outcome: E.Event,
                      at: datetime, actor: str, mode: str,
                      also: Callable[[Connection], None] | None = None,
                      committed: Callable[[], None] | None = None) -> None:
        """An outcome through the step; what it decides is written (with `also`) and carried out.
        `committed` runs once the write is tried, before the follow-ups (notices) are awaited."""
        current = self.rungs.get((server.id, reason), L.Rung(server.id, reason))
        follow = E.step(current, rule, outcome, self._rails(server, reason, at), at)
        await self._record_refusal(server, reason, current, follow, at, actor, mode)
        begun = await self._commit(server, current, follow, at, also)
        if committed is not None:
            committed()
        if begun is None:
            return
        for nxt in follow.intents:
            await self._carry_out(server, reason, rule, nxt, current.phase, at, actor, mode, begun)

    async def _finish(self, server: ServerConfig, reason: L.Reason, rule: L.LadderRule, row: ActionRow,
                      state: E.ActionState, admin: str | None, detail: dict[str, Any], before: str,
                      actor: str) -> None:
        """A switch change read back: its record, its audit, the rung it moves and the outage
        entry it ends are one transaction; then the step's follow-up (notices, pages)."""
        shut = row.action == "shut"
        end_at = self.clock.at()
        restriction = _restriction_of(detail) or _restriction_of(row.detail)
        after = {"shut": "shut", "restore": "restored", "throttle": "restricted", "block": "restricted",
                 "unthrottle": "restored", "unblock": "restored"}[row.action]
        applied = after if state == "APPLIED" else before
        result = f"{state}: admin {admin}" + (f"; {detail['error']}" if "error" in detail else "")
        if detail.get("reconciled"):  # found PENDING at start-up or take-over: the switch decided
            decision, rule_text = "reconcile", f"pending {row.action} found at start-up"
        else:
            decision, rule_text = row.action, str(row.detail.get("rule", reason))

        def also(conn: Connection) -> None:
            self.store.finish(row.key, state, end_at, detail, conn)
            self.store.audit(at=end_at, server=server.id, reason=reason, decision=decision, mode=row.mode,
                             actor=actor, rule=rule_text, inputs=row.detail, before=before, after=applied,
                             result=result, conn=conn)
            if restriction is not None:
                if state == "APPLIED":
                    self._restriction_entry(server, reason, row, restriction, end_at, conn)
            elif admin == "up" and self.outages is not None:
                # A restore that brought the port up, or a shut that did not happen: the outage ends.
                self.outages.enforcement_ended(server.id, end_at, {"action": row.key},
                                               conn=self._ledger_conn(conn))
            elif shut and self.outages is not None:
                self.outages.enforcement_applied(server.id)

        log.info("%s %s %s [%s] %s -> %s: %s", row.action, server.id, reason, row.mode, before, applied, result)

        def count() -> None:
            # After the commit, which publishes the server's gauges: a scrape (a thread of its
            # own) that sees this action counted sees the state it left, not the one before.
            self.metrics.enforcement_actions.labels(row.action, reason, state.lower(), row.mode).inc()

        if (shut or row.action in E.APPLY_ACTIONS) and state == "APPLIED":
            # A restriction is a change to a customer's port too: it spends the same budget.
            self.safety = S.record_shut(self.safety, self.config.enforcement.safety,
                                        datetime.fromisoformat(row.created_at), row.switch)
        outcome = E.ActionOutcome(row.key, row.action, state, admin, restriction)  # type: ignore[arg-type]
        await self._follow(server, reason, rule, outcome, end_at, actor, row.mode, also, count)

    def _dry_run(self, server: ServerConfig, change: E.Change, at: datetime, actor: str, before: str) -> None:
        """Notify mode: the change is recorded and audited; the switch is not touched."""
        shut = change.action in ("shut", *E.APPLY_ACTIONS)
        self.metrics.enforcement_actions.labels(change.action, change.intent.reason, "dryrun", "notify").inc()
        self._audit(at, server.id, change.intent.reason, change.action, "notify", actor, self._why(change),
                    self._inputs(server, change), before,
                    "restricted" if change.action in E.APPLY_ACTIONS else "shut" if shut else "restored",
                    "dry run: switch not touched")
        if shut:
            self.safety = S.record_shut(self.safety, self.config.enforcement.safety, at, server.switch)

    @staticmethod
    def _why(change: E.Change) -> str:
        intent = change.intent
        return intent.evidence.rule if isinstance(intent, L.ShutPort | L.RestrictPort) else intent.why

    def _restriction_entry(self, server: ServerConfig, reason: str, row: ActionRow, restriction: L.Restriction,
                           at: datetime, conn: Connection) -> None:
        """The ledger's record of restricted time (not an outage: the port forwards). A lift
        ends the open record of the same kind on that server."""
        if self.outages is None:
            return
        store = self.outages.store
        if row.action in E.APPLY_ACTIONS:
            earlier = store.open_restriction(server.id, restriction.kind, conn=self._ledger_conn(conn))
            if earlier is not None:
                # A throttle moved to a new cap (R3) replaces the record of the old rate.
                store.append_many([NewEntry("restriction_end", at.replace(microsecond=0),
                                            {"server": server.id, "restriction": restriction.kind, "key": row.key,
                                             "superseded": True}, server.id, ref_seq=earlier)],
                                  conn=self._ledger_conn(conn))
            payload: dict[str, Any] = {"server": server.id, "restriction": restriction.kind, "reason": reason,
                                       "key": row.key, "switch": server.switch, "port": server.port}
            if restriction.rate_bps is not None:
                payload["rate_bps"] = restriction.rate_bps
            if restriction.service is not None:
                payload["service"] = restriction.service
            store.append_many([NewEntry("restriction_start", at.replace(microsecond=0), payload, server.id)],
                              conn=self._ledger_conn(conn))
            return
        start = store.open_restriction(server.id, restriction.kind, conn=self._ledger_conn(conn))
        if start is None:
            return
        store.append_many([NewEntry("restriction_end", at.replace(microsecond=0),
                                    {"server": server.id, "restriction": restriction.kind, "key": row.key},
                                    server.id, ref_seq=start)], conn=self._ledger_conn(conn))

    async def _apply_restriction(self, server: ServerConfig, change: E.Change, restriction: L.Restriction,
                                 ) -> tuple[E.ActionState, str | None, dict[str, Any]]:
        """Carry out a throttle, block or their lift; the CLI read-back in the same session
        decides, and a second read in a fresh session settles a change whose session broke."""
        sw = self.config.switches[server.switch]
        driver = self.switches.get(sw.name)
        action = change.action
        detail: dict[str, Any] = {"restriction": _restriction_dict(restriction)}
        t0 = self.clock.now()
        state: E.ActionState = "UNKNOWN"
        reading: str | None = None
        if driver is None:
            detail["error"] = f"PermanentDriverError: no SSH driver configured for {sw.name}"
            state = "FAILED"
        else:
            cli_port = sw.cli_name(server.port)
            try:
                result: RestrictionResult = await asyncio.wait_for(
                    self._restriction_call(driver, action, cli_port, restriction), self.action_timeout_s)
                reading = result.reading.state
                detail["cli_reading"] = reading
                detail["cli_agrees"] = result.agrees
                if result.rate is not None:
                    detail["rate_note"] = result.rate.note
                if result.agrees:
                    state = "APPLIED"
                    if result.reading.rate_bps is not None and action == "throttle":
                        # The notice and the ledger state the rate the switch enforces.
                        detail["restriction"] = _restriction_dict(
                            L.Restriction("throttle", rate_bps=result.reading.rate_bps))
                else:
                    state = "UNKNOWN" if reading == "unknown" else "FAILED"
            except TimeoutError:
                detail["error"] = f"DriverError: no answer within {self.action_timeout_s:g} s"
            except DriverError as e:
                detail["error"] = f"{type(e).__name__}: {e}"
                state = "UNKNOWN" if e.outcome_unknown else "FAILED"
            except Exception as e:  # a driver bug: known only as unknown
                log.exception("driver of %s raised on %s %s", sw.name, action, server.port)
                detail["error"] = f"DriverError: driver raised {type(e).__name__}: {e}"
            if state == "UNKNOWN":
                # A broken session may have left it either way: ask the switch once more.
                want = "present" if action in E.APPLY_ACTIONS else "absent"
                try:
                    again = await asyncio.wait_for(
                        driver.read_restriction(cli_port, restriction.kind, restriction.service), self.action_timeout_s)
                    reading = again.state
                    detail["reread"] = reading
                    if reading == want:
                        state = "APPLIED"
                    elif reading != "unknown":
                        state = "FAILED"
                except Exception as e:  # noqa: BLE001 - the state stays UNKNOWN, and is paged
                    detail["reread_error"] = f"{type(e).__name__}: {e}"
        # The port must keep forwarding under a restriction: SNMP says what it is now.
        admin = await self._read(sw.name, server.port)
        detail["snmp_admin"] = admin
        detail["latency_s"] = round(self.clock.now() - t0, 3)
        return state, reading, detail

    @staticmethod
    async def _restriction_call(driver: SwitchDriver, action: str, port: str,
                                restriction: L.Restriction) -> RestrictionResult:
        if action == "throttle":
            assert restriction.rate_bps is not None
            return await driver.throttle(port, restriction.rate_bps)
        if action == "unthrottle":
            return await driver.unthrottle(port)
        assert restriction.service is not None
        if action == "block":
            return await driver.block_service(port, restriction.service)
        return await driver.unblock_service(port, restriction.service)

    async def _apply(self, server: ServerConfig, change: E.Change) -> tuple[E.ActionState, str | None, dict[str, Any]]:
        """Carry out one shut or restore on the switch; the read-back decides its state."""
        shut = change.action == "shut"
        sw = self.config.switches[server.switch]
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
                log.exception("driver of %s raised on %s %s", sw.name, change.action, server.port)
                error = DriverError(f"driver raised {type(e).__name__}: {e}", switch=sw.name, outcome_unknown=True)
        if error is not None:
            detail["error"] = f"{type(error).__name__}: {error}"
        # The switch's own counters are the judge: SNMP ifAdminStatus after every change.
        admin = await self._read(sw.name, server.port)
        detail["snmp_admin"] = admin
        detail["latency_s"] = round(self.clock.now() - t0, 3)
        want = "down" if shut else "up"
        state: E.ActionState = "APPLIED" if admin == want else "UNKNOWN" if admin is None else "FAILED"
        return state, admin, detail

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

    async def _read_restriction(self, switch: str, port: str, restriction: L.Restriction) -> str | None:
        """present / absent / unknown as the switch's CLI shows it; None when it cannot be asked."""
        driver = self.switches.get(switch)
        sw = self.config.switches.get(switch)
        if driver is None or sw is None:
            return None
        try:
            asked = driver.read_restriction(sw.cli_name(port), restriction.kind, restriction.service)
            reading = await asyncio.wait_for(asked, self.action_timeout_s)
        except Exception:  # the read-back must not decide an outcome by crashing
            log.exception("restriction read-back of %s %s failed", switch, port)
            return None
        return reading.state

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

    def _publish_states(self, only: str | None = None) -> None:
        """The per-server state gauges from the rungs: every server's, or `only` that one's."""
        strongest: dict[str, str] = {}
        throttled: set[str] = set()
        blocked: set[tuple[str, str]] = set()
        for (sid, _), r in self.rungs.items():
            if only is not None and sid != only:
                continue
            if PHASE_RANK[r.phase] > PHASE_RANK[strongest.get(sid, "idle")]:
                strongest[sid] = r.phase
            if r.restriction is not None and r.phase in ("restricted", "shut"):
                if r.restriction.kind == "throttle":
                    throttled.add(sid)
                else:
                    blocked.add((sid, r.restriction.service or ""))
        ids = [s.id for s in self.config.servers] if only is None else [only]
        for sid in ids:
            self.metrics.enforcement_state.labels(sid).set(PHASE_VALUE[strongest.get(sid, "idle")])
            self.metrics.server_throttled.labels(sid).set(1 if sid in throttled else 0)
        published = self._blocked_published
        if only is not None:  # the other servers' blocks stand as published
            blocked |= {b for b in published if b[0] != only}
        for sid, service in blocked:
            self.metrics.server_service_blocked.labels(sid, service).set(1)
        for sid, service in published - blocked:
            self.metrics.server_service_blocked.labels(sid, service).set(0)
        self._blocked_published = blocked

    def server_status(self, server_id: str) -> dict[str, Any]:
        s = self._server(server_id)
        holds = self.store.holds()
        last = self.store.last_action(server_id)
        return {
            "server": s.id, "customer": s.customer, "switch": s.switch, "port": s.port,
            "ladder": {reason: {"phase": r.phase, "until": r.until.isoformat() if r.until else None,
                                "notice": r.notice, "episode": r.episode,
                                "restriction": _restriction_dict(r.restriction) if r.restriction else None}
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



def _restriction_dict(r: L.Restriction) -> dict[str, Any]:
    d: dict[str, Any] = {"kind": r.kind}
    if r.rate_bps is not None:
        d["rate_bps"] = r.rate_bps
    if r.service is not None:
        d["service"] = r.service
    return d


def _restriction_of(detail: Mapping[str, Any]) -> L.Restriction | None:
    d = detail.get("restriction")
    if not isinstance(d, Mapping):
        return None
    return L.Restriction(d["kind"], rate_bps=d.get("rate_bps"), service=d.get("service"))
