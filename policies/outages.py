"""Outage tracking: turns per-poll port states and enforcement acts into outage start/end events.

Pure (no I/O, no clock, no logging); issue 5 "The ledger", CONTRACT_RULES R12 and R16. The
tracker keeps, per server port, the record that is open now, and each call returns the events
the ledger must append. It never computes credit: the records it opens carry a cause from the
SLA engine's vocabulary (policies/sla.CAUSES) and policies/sla.py does the rest.

A port is not forwarding when its ifOperStatus is anything but `up`. What the tracker sees of a
port at one poll is one of these states, and each state gives the record's cause:

    state         when                                         cause (class)
    up            oper up                                      no record
    enforced      RackWarden shut it (enforcement_started)     the enforcer's cause (customer)
    admin_down    admin down, but not by RackWarden            unknown (unknown)
    oper_down     admin up, oper not up                        port_oper_down (unknown), or
                                                               ports_down_together (provider)
                                                               when several went down together,
                                                               or switch_reboot (provider)
    missing       the switch answered but not for this port    unknown (unknown)
    unreachable   the switch could not be polled               switch_unreachable (unknown)

Time is at the poll's resolution: a record starts at the first poll that sees the new state and
ends at the first poll that sees another one. Starting "midway" between two polls was rejected:
it invents a time no poll saw, and with both edges taken at first sight the bias of the start
(late by up to one interval) and of the end (late by up to one interval) cancel in a duration.
Two exceptions use a better-known time: enforcement acts are recorded at the time the enforcer
gives (it read the port back), and a switch reboot starts at the boot time sysUpTime reveals.

sysUpTime falling is not a reboot by itself: the SNMP agent alone may have restarted, and then
no port stopped forwarding. snmpEngineBoots advancing is a reboot; otherwise the ports' counters
decide (policies/metering.decide_restart, the same rule metering uses): counters that kept
counting past what a port could carry since the previous poll prove the switch did not restart
(no record, no provider time), counters that went down prove it did, an unchanged
snmpEngineBoots says agent restart, and with no evidence at all the uptime is taken at its
word. Every switch_reboot record names the evidence that decided (`reboot_evidence`).
Whenever a port's state changes, the open record ends and a new one starts at the same second,
so consecutive records touch and the SLA engine merges them into one interruption while each
part keeps its own class. Times are truncated to whole seconds, the ledger's unit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from fractions import Fraction
from types import MappingProxyType
from typing import Literal

from .metering import CounterEvidence, RateSample, decide_restart
from .sla import CAUSES, OutageClass, outage_class_of
from .sla_deadlines import UNREACHABLE_AFTER_S, Finding, check_unreachable

PortState = Literal["up", "enforced", "admin_down", "oper_down", "missing", "unreachable"]
PORT_STATES: tuple[PortState, ...] = (
    "up",
    "enforced",
    "admin_down",
    "oper_down",
    "missing",
    "unreachable",
)
# Evidence is stored as canonical JSON in a hash-chained ledger: exact scalars only, no floats.
EvidenceValue = str | int | bool | None
Evidence = Mapping[str, EvidenceValue]

TICKS_WRAP = 2**32  # sysUpTime is TimeTicks (1/100 s), wrapping after about 497 days
_EMPTY: Evidence = MappingProxyType({})
_SECOND = timedelta(seconds=1)


@dataclass(frozen=True, slots=True)
class TrackerSettings:
    """Knobs of outage tracking; defaults suit 60 s polls of a 24–48 port access switch.

    Ports "go down together" when, at one poll, at least `together_min_ports` ports of a switch
    are newly oper-down, or at least 2 and at least `together_min_fraction` of the ports that
    answered. Ports that went oper-down within `together_window_s` before the poll count too
    (0 = the same poll only), and their records are re-caused to ports_down_together.
    """

    together_min_ports: int = 3
    together_min_fraction: Fraction = Fraction(1, 2)
    together_window_s: int = 0
    uptime_tolerance_s: int = 5  # reply jitter allowed when comparing sysUpTime with wall time
    uptime_tolerance_ratio: Fraction = Fraction(1, 50)
    unreachable_after_s: int = UNREACHABLE_AFTER_S  # R12
    # sysUpTime fell and the counters only read 0: wait up to this many answered polls for the
    # counters to say reboot or agent restart before the uptime alone decides.
    restart_confirm_polls: int = 3

    def __post_init__(self) -> None:
        if self.together_min_ports < 2:
            raise ValueError("together_min_ports must be at least 2: one port is not 'together'")
        if not 0 < self.together_min_fraction <= 1:
            raise ValueError("together_min_fraction must be in (0, 1]")
        if self.together_window_s < 0 or self.uptime_tolerance_s < 0:
            raise ValueError("windows and tolerances must not be negative")


@dataclass(frozen=True, slots=True)
class PortObservation:
    """What one poll said about one server's port.

    `answered` is False when the switch replied but not for this port. `traffic_octets` is the
    accepted in+out octet delta since the previous poll (None when no valid delta), used only
    for R12's "up but silent".
    """

    server: str
    port: str
    oper: str = "unknown"
    admin: str = "unknown"
    answered: bool = True
    traffic_octets: int | None = None
    # What the port's counters said when sysUpTime fell since its previous reading
    # (metering's RateSample.counters): the evidence that tells a reboot from an agent restart.
    counters: CounterEvidence | None = None


@dataclass(frozen=True, slots=True)
class SwitchObservation:
    """One poll of one switch, for every customer port on it (also when it did not answer)."""

    switch: str
    at: datetime
    answered: bool
    ports: tuple[PortObservation, ...]
    sys_uptime_ticks: int | None = None
    engine_boots: int | None = None
    detail: str = ""  # why it did not answer, for the evidence

    def __post_init__(self) -> None:
        _aware("at", self.at)
        object.__setattr__(self, "ports", tuple(self.ports))


@dataclass(frozen=True, slots=True)
class OpenOutage:
    """A record that has started and not ended; what the ledger hands back after a restart."""

    outage_id: str
    server: str
    switch: str
    port: str
    start: datetime
    cause: str
    state: PortState


@dataclass(frozen=True, slots=True)
class OutageStart:
    """A port stopped forwarding (or its state changed): a new record begins at `start`."""

    outage_id: str
    server: str
    switch: str
    port: str
    start: datetime
    cause: str
    state: PortState
    evidence: Evidence = field(default_factory=lambda: _EMPTY)

    @property
    def outage_class(self) -> OutageClass:
        """The initial class guess; operators may reclassify it later in the ledger."""
        return outage_class_of(self.cause)


@dataclass(frozen=True, slots=True)
class OutageEnd:
    """The record ends at `end` (the port forwards again, or it went into another state)."""

    outage_id: str
    server: str
    end: datetime
    evidence: Evidence = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True, slots=True)
class OutageCauseChange:
    """Later evidence changes a record's cause from its start (e.g. a reboot explains a gap)."""

    outage_id: str
    server: str
    at: datetime
    cause: str
    reason: str
    evidence: Evidence = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True, slots=True)
class PortFlagged:
    """R12: a port has been down or silent for a week; flagged once per such stretch."""

    server: str
    switch: str
    port: str
    at: datetime
    finding: Finding


OutageEvent = OutageStart | OutageEnd | OutageCauseChange | PortFlagged


def _aware(name: str, at: datetime) -> None:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got {at.isoformat()}")


def whole_second(at: datetime) -> datetime:
    """Floor to the second: the ledger and the SLA engine count whole seconds."""
    _aware("at", at)
    return at.replace(microsecond=0)


def _iso(at: datetime) -> str:
    return at.isoformat()


# Suspensions for the customer's own doing are customer-class (R16). An operator's suspension
# for a reason of their own is `unknown` until someone classifies it: no silent guess.
ENFORCEMENT_CAUSES: tuple[str, ...] = tuple(
    c.name for c in CAUSES.values() if c.outage_class == "customer" and c.name != "customer_fault"
) + ("unknown",)


@dataclass(slots=True)
class _Open:
    outage_id: str
    start: datetime
    cause: str
    state: PortState


@dataclass(slots=True)
class _Port:
    server: str
    switch: str
    port: str
    open: _Open | None = None
    enforced: str | None = None  # the enforcer's cause while RackWarden holds the port shut
    applying: bool = False  # the shut is recorded and on its way: the switch has not answered yet
    pending_from: datetime | None = None  # restore time not yet followed by a poll
    down_since: datetime | None = None  # R12: first poll of the current not-forwarding stretch
    silent_since: datetime | None = None  # R12: first poll of the current up-but-idle stretch
    flagged_since: datetime | None = None  # R12 stretch already flagged
    last_id: str = ""

    @property
    def state(self) -> PortState:
        return self.open.state if self.open is not None else "up"


@dataclass(slots=True)
class _Switch:
    last_at: datetime | None = None  # last answered poll
    uptime_ticks: int | None = None  # as last answered (TimeTicks, wrapping at 2**32)
    engine_boots: int | None = None
    # sysUpTime fell at `undecided_at` but the counters read 0: the decision waits (last_at,
    # uptime_ticks and engine_boots stay those of the poll before the fall meanwhile).
    undecided_at: datetime | None = None
    undecided_polls: int = 0


@dataclass(frozen=True, slots=True)
class _Reboot:
    boot_at: datetime
    reason: str
    evidence: str  # which evidence decided (policies/metering.RestartEvidence)
    seen_up_at: datetime | None = None  # a waited-for decision: the first poll after the fall


def _evidence(**items: EvidenceValue) -> Evidence:
    return MappingProxyType({k: v for k, v in items.items() if v is not None})


class OutageTracker:
    """Keeps the open record of each server port between polls; every method returns events.

    Deterministic and free of I/O: the daemon feeds it polls (`observe`), the enforcer tells it
    when RackWarden shut or restored a port (`enforcement_started` / `enforcement_ended`), and
    after a restart `resume` hands back the ledger's open records.
    """

    def __init__(self, settings: TrackerSettings | None = None) -> None:
        self._settings = settings or TrackerSettings()
        self._ports: dict[str, _Port] = {}
        self._switches: dict[str, _Switch] = {}

    @property
    def settings(self) -> TrackerSettings:
        return self._settings

    # -- state in and out ---------------------------------------------------------------------

    def resume(self, outages: Iterable[OpenOutage]) -> None:
        """Take over records left open by a previous run, so they end instead of duplicating."""
        for o in outages:
            if o.state not in PORT_STATES or o.state == "up":
                raise ValueError(f"outage {o.outage_id}: cannot resume state {o.state!r}")
            port = self._port(o.server, o.switch, o.port)
            port.open = _Open(o.outage_id, whole_second(o.start), o.cause, o.state)
            port.last_id = o.outage_id
            if o.state == "enforced":
                port.enforced = o.cause
            if o.state in ("oper_down", "admin_down"):
                port.down_since = port.open.start

    def open_outages(self) -> list[OpenOutage]:
        return [
            OpenOutage(p.open.outage_id, p.server, p.switch, p.port, p.open.start, p.open.cause,
                       p.open.state)
            for p in self._ports.values()
            if p.open is not None
        ]

    def enforced(self, server: str) -> str | None:
        """The enforcer's cause while RackWarden holds the server's port shut, else None."""
        port = self._ports.get(server)
        return port.enforced if port is not None else None

    def r12_findings(self, now: datetime) -> list[Finding]:
        """R12 state of every port that is down or silent now (pending or breached)."""
        out: list[Finding] = []
        for p in self._ports.values():
            f = check_unreachable(p.server, now, p.down_since, p.silent_since,
                                  self._settings.unreachable_after_s)
            if f is not None:
                out.append(f)
        return out

    def _port(self, server: str, switch: str, port: str) -> _Port:
        p = self._ports.get(server)
        if p is None:
            p = self._ports[server] = _Port(server, switch, port)
        else:
            # A server moved to another port keeps its record: its contract is per server.
            p.switch, p.port = switch, port
        return p

    def _new_id(self, port: _Port, start: datetime) -> str:
        base = f"{port.server}@{int(start.timestamp())}"
        # Two records of one port can start in the same second (a state change right at a
        # record's first second); a suffix keeps ids unique without a counter that a restart
        # would reset.
        oid = base
        n = 1
        while oid == port.last_id or (port.open is not None and oid == port.open.outage_id):
            n += 1
            oid = f"{base}#{n}"
        port.last_id = oid
        return oid

    # -- transitions --------------------------------------------------------------------------

    def _end(self, port: _Port, at: datetime, evidence: Evidence) -> list[OutageEvent]:
        if port.open is None:
            return []
        ended = OutageEnd(port.open.outage_id, port.server, at, evidence)
        port.open = None
        return [ended]

    def _start(
        self, port: _Port, start: datetime, cause: str, state: PortState, evidence: Evidence
    ) -> OutageStart:
        oid = self._new_id(port, start)
        port.open = _Open(oid, start, cause, state)
        return OutageStart(oid, port.server, port.switch, port.port, start, cause, state, evidence)

    def enforcement_started(
        self,
        server: str,
        switch: str,
        port: str,
        at: datetime,
        cause: str,
        evidence: Evidence = _EMPTY,
    ) -> list[OutageEvent]:
        """RackWarden shut the server's port for `cause` (overage, abuse, nonpayment, …).

        The enforcer, not this tracker, knows why a port went admin-down, so it attributes the
        outage (R16: customer class). Call it once the shutdown is read back; `at` is then.
        """
        if cause not in ENFORCEMENT_CAUSES:
            raise ValueError(
                f"enforcement cause must be one of {', '.join(ENFORCEMENT_CAUSES)}, got {cause!r}"
            )
        at = whole_second(at)
        p = self._port(server, switch, port)
        p.enforced = cause
        p.applying = True
        p.pending_from = None
        if p.open is not None and p.open.state == "enforced" and p.open.cause == cause:
            return []
        events = self._end(p, at, _evidence(reason=f"enforcement {cause} started"))
        events.append(self._start(p, at, cause, "enforced", MappingProxyType(dict(evidence))))
        p.down_since = None  # R12 is about the host; a port we shut says nothing about it
        return events

    def enforcement_applied(self, server: str) -> None:
        """The switch answered the shut (read back down, or unreadable): from now on a poll that
        sees the port forwarding ends the record. Until then a poll taken while the SSH session
        is still running reads the port up, and that is no end of the enforcement."""
        p = self._ports.get(server)
        if p is not None:
            p.applying = False

    def enforcement_ended(
        self, server: str, at: datetime, evidence: Evidence = _EMPTY
    ) -> list[OutageEvent]:
        """RackWarden restored the server's port at `at`; its enforcement record ends then.

        If the next poll still sees the port not forwarding, the record it opens starts at the
        restore time, so no second between the restore and that poll goes unrecorded.
        """
        at = whole_second(at)
        p = self._ports.get(server)
        if p is None or p.enforced is None:
            raise ValueError(f"server {server!r} has no enforcement to end")
        p.enforced = None
        p.applying = False
        events: list[OutageEvent] = []
        if p.open is not None and p.open.state == "enforced":
            events = self._end(p, at, MappingProxyType(dict(evidence)))
        p.pending_from = at
        return events

    def _reboot(self, sw: _Switch, obs: SwitchObservation, at: datetime) -> _Reboot | None:
        s = self._settings
        ticks = obs.sys_uptime_ticks
        reboot: _Reboot | None = None
        if (
            obs.engine_boots is not None
            and sw.engine_boots is not None
            and obs.engine_boots > sw.engine_boots
        ):
            up_s = (ticks or 0) // 100
            reboot = _Reboot(
                at - timedelta(seconds=up_s),
                f"snmpEngineBoots {sw.engine_boots} -> {obs.engine_boots}",
                "engine_boots",
            )
        if ticks is not None and sw.uptime_ticks is not None and sw.last_at is not None:
            elapsed_s = (at - sw.last_at) // timedelta(seconds=1)
            expected = elapsed_s * 100
            # The advance modulo the TimeTicks wrap: an uptime that wrapped past 2**32 is not a
            # reboot, and a reboot of a switch up for most of 497 days is not a wrap (adding
            # back the nearest whole number of wraps mistook one for the other).
            advanced = (ticks - sw.uptime_ticks) % TICKS_WRAP
            tol = max(Fraction(s.uptime_tolerance_s), s.uptime_tolerance_ratio * elapsed_s) * 100
            fell = (ticks < sw.uptime_ticks and advanced > expected + tol) or advanced < expected - tol
            if reboot is None and fell:
                counters = [po.counters for po in obs.ports if po.answered]
                verdict = decide_restart(sw.engine_boots, obs.engine_boots, counters)
                if (
                    verdict.evidence == "sys_uptime"
                    and "zeroed" in counters
                    and sw.undecided_polls < s.restart_confirm_polls
                ):
                    # Zeros prove nothing yet: the next reading, measured against the counters
                    # from before the fall, shows whether they went on counting.
                    sw.undecided_at = sw.undecided_at or at
                    sw.undecided_polls += 1
                    return None
                if verdict.kind == "switch":
                    reboot = _Reboot(
                        at - timedelta(seconds=ticks // 100),
                        f"sysUpTime {ticks} ticks, expected about "
                        f"{(sw.uptime_ticks + expected) % TICKS_WRAP} after {elapsed_s} s: "
                        f"{verdict.reason}",
                        verdict.evidence,
                        sw.undecided_at,
                    )
                # else only the SNMP agent restarted: its ports never stopped forwarding.
        sw.undecided_at, sw.undecided_polls = None, 0
        sw.uptime_ticks = ticks
        sw.engine_boots = obs.engine_boots if obs.engine_boots is not None else sw.engine_boots
        return reboot

    @staticmethod
    def _state(p: _Port, obs: SwitchObservation, po: PortObservation) -> PortState:
        if not obs.answered:
            return "enforced" if p.enforced is not None else "unreachable"
        if not po.answered:
            return "enforced" if p.enforced is not None else "missing"
        if p.enforced is not None and (p.applying or po.oper != "up"):
            return "enforced"
        if po.oper == "up":
            return "up"
        if po.admin != "up":
            return "admin_down"
        return "oper_down"

    def observe(self, obs: SwitchObservation) -> list[OutageEvent]:
        """One poll of one switch: the events for every port whose state changed."""
        s = self._settings
        at = whole_second(obs.at)
        sw = self._switches.setdefault(obs.switch, _Switch())
        prev_at = sw.last_at
        reboot = self._reboot(sw, obs, at) if obs.answered else None
        if obs.answered and sw.undecided_at is None:
            sw.last_at = at

        plan: list[tuple[_Port, PortObservation, PortState]] = []
        for po in obs.ports:
            p = self._port(po.server, obs.switch, po.port)
            plan.append((p, po, self._state(p, obs, po)))

        # Ports going oper-down together point at the switch or its uplink, not at the servers.
        window = timedelta(seconds=s.together_window_s)
        # A port the enforcer just restored that stays down is its own story, not a group's.
        newly = [
            p
            for p, _, st in plan
            if st == "oper_down" and p.state != "oper_down" and p.pending_from is None
        ]
        recent = [
            p
            for p, _, st in plan
            if st == "oper_down"
            and p.open is not None
            and p.open.state == "oper_down"
            and s.together_window_s > 0
            and p.open.start >= at - window
        ]
        together_n = len(newly) + len(recent)
        answered_n = sum(1 for _, po, _ in plan if obs.answered and po.answered)
        together = reboot is None and (
            together_n >= s.together_min_ports
            or (together_n >= 2 and together_n >= s.together_min_fraction * answered_n)
        )

        events: list[OutageEvent] = []
        for p, po, state in plan:
            base: dict[str, EvidenceValue] = dict(
                switch=obs.switch,
                port=po.port,
                poll_at=_iso(at),
                oper=po.oper if obs.answered and po.answered else None,
                admin=po.admin if obs.answered and po.answered else None,
                state=state,
            )
            if together and p in recent and p.open is not None and p.open.cause == "port_oper_down":
                events.append(OutageCauseChange(
                    p.open.outage_id, p.server, at, "ports_down_together",
                    f"{together_n} ports of {obs.switch} went oper-down within "
                    f"{s.together_window_s} s",
                    _evidence(**base, ports_down_together=together_n, ports_answered=answered_n),
                ))
                p.open.cause = "ports_down_together"
            if reboot is not None and p.open is not None and (
                # Down since the poll whose zeros left the reboot undecided: the reboot's doing.
                (reboot.seen_up_at is not None and p.open.state == "oper_down"
                 and p.open.cause in ("port_oper_down", "ports_down_together")
                 and p.open.start >= reboot.seen_up_at)
                # The switch was restarting while it did not answer: the gap was its outage.
                or p.open.state == "unreachable"
            ):
                events.append(OutageCauseChange(
                    p.open.outage_id, p.server, at, "switch_reboot", reboot.reason,
                    _evidence(**base, boot_at=_iso(reboot.boot_at),
                              sys_uptime_ticks=obs.sys_uptime_ticks,
                              reboot_evidence=reboot.evidence),
                ))
                p.open.cause = "switch_reboot"
            events.extend(self._transition(p, po, state, at, prev_at, reboot, together,
                                           together_n, answered_n, obs, base))
            if obs.answered and po.answered:
                events.extend(self._r12(p, po, state, at))
        return events

    def _transition(
        self,
        p: _Port,
        po: PortObservation,
        state: PortState,
        at: datetime,
        prev_at: datetime | None,
        reboot: _Reboot | None,
        together: bool,
        together_n: int,
        answered_n: int,
        obs: SwitchObservation,
        base: dict[str, EvidenceValue],
    ) -> list[OutageEvent]:
        pending, p.pending_from = p.pending_from, None
        old = p.state
        if state == old:
            if state == "up" and reboot is not None and prev_at is not None:
                # Up at both polls, yet the switch restarted in between: its ports could not
                # forward from the boot until at most this poll.
                start = max(prev_at + _SECOND, reboot.boot_at)  # prev_at saw it forwarding
                # A waited-for decision: the first poll after the fall already saw it up.
                end = min(at, reboot.seen_up_at or at)
                if start < end:
                    rb = _evidence(**base, boot_at=_iso(reboot.boot_at),
                                   sys_uptime_ticks=obs.sys_uptime_ticks, reason=reboot.reason,
                                   reboot_evidence=reboot.evidence)
                    started = self._start(p, start, "switch_reboot", "oper_down", rb)
                    return [started, *self._end(p, end, _evidence(**base))]
            return []
        events = self._end(p, at, _evidence(**base))
        if state == "up":
            return events
        start = at
        if pending is not None and pending < at:
            start = pending  # never forwarded since the restore
        cause: str
        ev: dict[str, EvidenceValue] = dict(base)
        if state == "unreachable":
            cause = "switch_unreachable"
            ev["detail"] = obs.detail or None
        elif state == "missing":
            cause = "unknown"
            ev["reason"] = "the switch answered but not for this port"
        elif state == "enforced":
            assert p.enforced is not None
            cause = p.enforced
        elif state == "admin_down":
            cause = "unknown"
            ev["reason"] = "admin-down, but not by RackWarden's enforcement"
        elif reboot is not None and not (reboot.seen_up_at is not None and old == "up"):
            # (A port seen up at the poll after the fall went down after the reboot was over.)
            cause = "switch_reboot"
            ev.update(boot_at=_iso(reboot.boot_at), sys_uptime_ticks=obs.sys_uptime_ticks,
                      reason=reboot.reason, reboot_evidence=reboot.evidence)
            if old == "up" and prev_at is not None and pending is None:
                start = max(prev_at + _SECOND, min(reboot.boot_at, at))
        elif together:
            cause = "ports_down_together"
            ev.update(ports_down_together=together_n, ports_answered=answered_n)
        else:
            cause = "port_oper_down"
        events.append(self._start(p, start, cause, state, _evidence(**ev)))
        return events

    def _r12(
        self, p: _Port, po: PortObservation, state: PortState, at: datetime
    ) -> list[OutageEvent]:
        if state in ("oper_down", "admin_down"):
            p.down_since = p.down_since or at
            p.silent_since = None
        elif state == "up":
            p.down_since = None
            if po.traffic_octets == 0:
                p.silent_since = p.silent_since or at
            elif po.traffic_octets is not None:
                p.silent_since = None
        else:
            p.down_since = p.silent_since = None
        f = check_unreachable(p.server, at, p.down_since, p.silent_since,
                              self._settings.unreachable_after_s)
        if f is None:
            p.flagged_since = None
            return []
        since = min(x for x in (p.down_since, p.silent_since) if x is not None)
        if f.status != "breached" or p.flagged_since == since:
            return []
        p.flagged_since = since
        return [PortFlagged(p.server, p.switch, p.port, at, f)]


def port_observation(server: str, sample: RateSample) -> PortObservation:
    """A metering sample as the tracker wants it (status "missing" = no answer for the port)."""
    traffic: int | None = None
    if sample.ok and sample.in_octets is not None and sample.out_octets is not None:
        traffic = sample.in_octets + sample.out_octets
    return PortObservation(
        server=server,
        port=sample.port,
        oper=sample.oper,
        admin=sample.admin,
        # A suspect reply still answered for the port: its oper/admin state is news, only its
        # counters are not trusted.
        answered=sample.status != "missing",
        traffic_octets=traffic,
        counters=sample.counters,
    )


def replay(
    tracker: OutageTracker, observations: Sequence[SwitchObservation]
) -> list[OutageEvent]:
    """Feed polls in order; convenient for tests and `replay`-style tools."""
    out: list[OutageEvent] = []
    for obs in observations:
        out.extend(tracker.observe(obs))
    return out


__all__ = [
    "ENFORCEMENT_CAUSES",
    "Evidence",
    "EvidenceValue",
    "OpenOutage",
    "OutageCauseChange",
    "OutageEnd",
    "OutageEvent",
    "OutageStart",
    "OutageTracker",
    "PORT_STATES",
    "PortFlagged",
    "PortObservation",
    "PortState",
    "SwitchObservation",
    "TrackerSettings",
    "port_observation",
    "replay",
    "whole_second",
]
