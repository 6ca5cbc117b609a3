"""Counter hygiene: turns two successive polls of one port into a rate, or says why there is none.

Billing-grade rules (issues 2 and 11):
- Counter64 (ifHC*) is preferred. Counter32 wraps modulo 2**32; if the interval is long enough
  for a second wrap at the port's speed the delta is ambiguous and the sample is a `gap`.
- The rate ceiling is the contract's port speed (the config), or the agent's ifHighSpeed when
  that is higher (the port can physically carry it). An ifHighSpeed that disagrees with the
  config is reported on the sample for a metric and an alert; it never drops samples.
- A confirmed discontinuity is a `reset` (no rate, new baseline): the ifName moving to another
  ifIndex, the counter width changing, ifCounterDiscontinuityTime changing, snmpEngineBoots
  changing, or sysUpTime falling (other than its 497-day wrap) when the switch rebooted.
- sysUpTime falling is not a reboot by itself: the SNMP agent alone may have restarted. The
  counters decide (`decide_restart`): a counter that kept rising past what the port could
  have carried since the previous reading proves the switch kept counting (an agent restart:
  no reset, the bytes are billed); counters that went down prove a restart; with neither, an
  unchanged snmpEngineBoots says agent restart and otherwise the uptime alone says reboot.
  The sample records which evidence decided (`restart_evidence`).
- A reading below the last trusted one without a confirmed discontinuity (a Counter64 that went
  down, a Counter32 "wrap" faster than the port, or zeros where the baseline was not zero) is
  never a baseline: it is `suspect` (no rate, treated as missing), the trusted baseline stays,
  and the reading is kept as pending. Only a later reading that counts on from the pending one
  (nonzero, above it, below the trusted one, at no more than the port speed) confirms the
  restart: `reset`. Zeros never confirm anything: some agents answer 0 while they rebuild.
- A port not answered is `missing`, never zero; the old baseline is kept so the next answer
  still covers the bytes in between.
- An interval longer than max_gap_s is a `gap`: no rate for the cap, but when both readings
  are trusted and the delta is unambiguous its octets are kept (`billable`) so billing spreads
  them over the 5-minute buckets the gap covers.
- A sample whose interval spans polls that were missing or suspect carries `spans_missed`: it
  is billed, but the cap policy does not count it as measured time.
- A rate strictly above the ceiling is a `glitch`: no rate, never clamped.
- A second reading less than a second after the previous one (a SIGHUP re-poll in the same
  sysUpTime tick) is a `repeat`: nothing measured, the baseline and any over-cap run stand.
- Δt is the agent's own clock: the sysUpTime advance between the two readings, which the
  agent stamps in the same reply it reads the counters for. A loaded NOC host that handles a
  reply late (or a retry) moves the poller's timestamp but not the agent's, so a steady 5 Mbps
  port can never look like 10 Mbps because of the poller. Without sysUpTime in both replies, if
  the agent's advance disagrees with the replies' monotonic times by more than the jitter
  tolerance, or across an agent restart, Δt falls back to the monotonic times (never the
  nominal interval).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

from .facts import PortCounters, PortPoll

COUNTER32_MOD = 2**32
TIMETICKS_MOD = 2**32  # sysUpTime wraps after 497.1 days
TICKS_PER_S = 100

Status = Literal["ok", "first", "reset", "gap", "glitch", "missing", "suspect", "repeat"]
RestartKind = Literal["agent", "switch"]
# What one port's counters say about a sysUpTime fall. `zeroed`: they read 0, which proves
# nothing yet (an agent rebuilding its counters answers 0); the next reading will tell.
CounterEvidence = Literal["continued", "restarted", "zeroed"]
# Which evidence decided a restart (recorded on samples and outage records).
RestartEvidence = Literal[
    "engine_boots", "counters_continued", "counters_restarted", "engine_boots_unchanged",
    "sys_uptime",
]


@dataclass(frozen=True, slots=True)
class Reading:
    """A reading not trusted as a baseline yet: below the trusted one, awaiting confirmation."""

    in_octets: int
    out_octets: int
    now: float
    at: datetime


@dataclass(frozen=True, slots=True)
class Baseline:
    """The last trusted reading of one port: what the next delta is measured from."""

    if_index: int
    in_octets: int
    out_octets: int
    counter_bits: int
    now: float
    at: datetime
    sys_uptime_ticks: int | None
    engine_boots: int | None
    discontinuity_ticks: int | None
    missed: int = 0  # polls since this reading that were missing or suspect
    pending: Reading | None = None  # the latest reading below this one, not yet confirmed


@dataclass(frozen=True, slots=True)
class Restart:
    """What sysUpTime falling meant: the switch rebooted or only its SNMP agent restarted."""

    kind: RestartKind
    evidence: RestartEvidence
    reason: str


@dataclass(frozen=True, slots=True)
class RateSample:
    """One port's verdict for one poll. Rates are None unless status is ok.

    in/out are the switch port's view (ifIn = the server's upload, ifOut = its download).
    A `gap` may carry octets (and start_at, interval_s) without rates: they are billed.
    """

    switch: str
    port: str
    at: datetime
    status: Status
    reason: str = ""
    interval_s: float | None = None
    in_octets: int | None = None  # accepted delta over interval_s
    out_octets: int | None = None
    in_bps: float | None = None
    out_bps: float | None = None
    speed_bps: int | None = None  # the rate ceiling applied
    oper: str = "unknown"
    admin: str = "unknown"
    start_at: datetime | None = None  # wall time of the baseline this delta starts from
    clock: Literal["agent", "poller"] | None = None  # whose clock measured interval_s
    configured_speed_bps: int | None = None  # the contract's port speed
    reported_speed_bps: int | None = None  # the agent's ifHighSpeed, when it answered one
    spans_missed: int = 0  # polls inside this interval that were missing or suspect
    restart: RestartKind | None = None  # set when sysUpTime fell since the baseline
    restart_evidence: RestartEvidence | None = None
    counters: CounterEvidence | None = None  # this port's own evidence about that fall

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def billable(self) -> bool:
        """Octets measured between two trusted readings: they go to the usage buckets."""
        return (
            self.status in ("ok", "gap")
            and self.in_octets is not None
            and self.out_octets is not None
            and self.start_at is not None
        )

    @property
    def speed_mismatch(self) -> bool:
        """The agent reports a port speed other than the contract's."""
        return (
            self.reported_speed_bps is not None
            and self.configured_speed_bps is not None
            and self.reported_speed_bps != self.configured_speed_bps
        )


@dataclass(frozen=True, slots=True)
class MeterSettings:
    """Knobs of the counter policy; defaults suit 60 s polls."""

    max_gap_s: float = 300.0  # a longer interval is a gap: its average hides any overage
    uptime_tolerance_s: float = 5.0  # reply jitter allowed when comparing sysUpTime to wall time
    uptime_tolerance_ratio: float = 0.02
    # Two readings closer than this measure nothing: agents refresh counters at most about
    # once a second, and a re-poll in the same sysUpTime tick would divide by almost zero.
    min_interval_s: float = 1.0


def ceiling_bps(configured_speed_bps: int, pc: PortCounters) -> int:
    """The rate no real sample can exceed: the contract's speed, or ifHighSpeed when higher."""
    reported = pc.high_speed_mbps * 1_000_000 if pc.high_speed_mbps else 0
    return max(configured_speed_bps, reported)


def _baseline(pc: PortCounters, poll: PortPoll) -> Baseline:
    assert pc.in_octets is not None and pc.out_octets is not None
    return Baseline(
        if_index=pc.if_index,
        in_octets=pc.in_octets,
        out_octets=pc.out_octets,
        counter_bits=pc.counter_bits,
        now=poll.now,
        at=poll.at,
        sys_uptime_ticks=poll.sys_uptime_ticks,
        engine_boots=poll.engine_boots,
        discontinuity_ticks=pc.discontinuity_ticks,
    )


def _uptime_break(
    prev: Baseline, poll: PortPoll, dt: float, settings: MeterSettings
) -> str | None:
    """Why sysUpTime says the agent restarted between the two readings, or None."""
    old, new = prev.sys_uptime_ticks, poll.sys_uptime_ticks
    if old is None or new is None:
        return None
    advanced = (new - old) % TIMETICKS_MOD  # handles the 497-day wrap
    expected = dt * TICKS_PER_S
    tolerance = (settings.uptime_tolerance_s + settings.uptime_tolerance_ratio * dt) * TICKS_PER_S
    if new < old and advanced > expected + tolerance:
        return f"sysUpTime went backwards ({old} -> {new} ticks)"
    if advanced + tolerance < expected:
        return f"sysUpTime advanced {advanced / TICKS_PER_S:.1f} s in {dt:.1f} s of wall time"
    return None


def _interval(
    prev: Baseline, poll: PortPoll, dt: float, settings: MeterSettings
) -> tuple[float, Literal["agent", "poller"]]:
    """The interval the counters really span: the agent's sysUpTime advance when it is usable.

    Called only after _uptime_break found no restart. sysUpTime has 10 ms resolution, so it is
    used only for intervals of at least one second.
    """
    old, new = prev.sys_uptime_ticks, poll.sys_uptime_ticks
    if old is None or new is None:
        return dt, "poller"
    agent_dt = ((new - old) % TIMETICKS_MOD) / TICKS_PER_S
    tolerance = settings.uptime_tolerance_s + settings.uptime_tolerance_ratio * dt
    if agent_dt < 1.0 or abs(agent_dt - dt) > tolerance:
        return dt, "poller"
    return agent_dt, "agent"


def _discontinuity(prev: Baseline, pc: PortCounters, poll: PortPoll) -> str | None:
    if pc.if_index != prev.if_index:
        return f"ifName moved from ifIndex {prev.if_index} to {pc.if_index}"
    if pc.counter_bits != prev.counter_bits:
        return f"counter width changed from {prev.counter_bits} to {pc.counter_bits} bits"
    if (
        prev.discontinuity_ticks is not None
        and pc.discontinuity_ticks is not None
        and pc.discontinuity_ticks != prev.discontinuity_ticks
    ):
        return (
            "ifCounterDiscontinuityTime changed "
            f"({prev.discontinuity_ticks} -> {pc.discontinuity_ticks})"
        )
    if (
        prev.engine_boots is not None
        and poll.engine_boots is not None
        and poll.engine_boots != prev.engine_boots
    ):
        return f"snmpEngineBoots changed ({prev.engine_boots} -> {poll.engine_boots})"
    return None


def _delta(old: int, new: int, bits: int) -> int | None:
    """Octets between two readings; None when a Counter64 went down (never a wrap)."""
    if new >= old:
        return new - old
    if bits == 32:
        return new + COUNTER32_MOD - old
    return None


def _most_octets(ceiling: int, dt: float, settings: MeterSettings) -> float:
    """The most octets a port can carry in dt seconds, with the jitter tolerance added."""
    return ceiling * (dt * (1 + settings.uptime_tolerance_ratio) + settings.uptime_tolerance_s) / 8


def counter_evidence(
    prev: Baseline, pc: PortCounters, poll: PortPoll, ceiling: int, settings: MeterSettings
) -> CounterEvidence | None:
    """What one port's counters say about a restart between its baseline and this reading.

    `continued`: both counters rose and one of them now holds more octets than the port could
    have carried since the baseline, so it cannot have restarted from zero in between: the
    switch kept counting. `restarted`: a Counter64 went down (and is not zero). `zeroed`: both
    read 0, which proves nothing yet. A Counter32 (which may have wrapped) or small counters
    prove nothing: None.
    """
    if pc.in_octets is None or pc.out_octets is None:
        return None
    if pc.if_index != prev.if_index or pc.counter_bits != prev.counter_bits:
        return None
    if pc.in_octets == 0 and pc.out_octets == 0:
        # What an agent answers while it rebuilds its counters, and what a rebooted switch's
        # idle port reads: only a later reading tells them apart.
        return "zeroed" if prev.in_octets or prev.out_octets else None
    if pc.in_octets < prev.in_octets or pc.out_octets < prev.out_octets:
        return "restarted" if pc.counter_bits == 64 else None
    if max(pc.in_octets, pc.out_octets) > _most_octets(ceiling, poll.now - prev.now, settings):
        return "continued"
    return None


def decide_restart(
    boots_before: int | None, boots_now: int | None, evidence: Iterable[CounterEvidence | None]
) -> Restart:
    """sysUpTime fell: did the switch reboot, or only its SNMP agent restart?

    snmpEngineBoots advancing is a reboot. Otherwise counters that provably kept counting
    outrank counters that went down (a low reading may be a rebuilding agent's, a restarted
    switch cannot hold more octets than it could have carried since), which outrank an
    unchanged snmpEngineBoots; with no evidence at all the uptime is taken at its word.
    """
    ev = list(evidence)
    if boots_before is not None and boots_now is not None and boots_now > boots_before:
        return Restart("switch", "engine_boots",
                       f"snmpEngineBoots advanced ({boots_before} -> {boots_now}): the switch rebooted")
    continued, restarted = ev.count("continued"), ev.count("restarted")
    if continued:
        return Restart("agent", "counters_continued",
                       f"the counters of {continued} port(s) kept counting past what the port could"
                       " carry since the last reading: only the SNMP agent restarted")
    if restarted:
        return Restart("switch", "counters_restarted",
                       f"the counters of {restarted} port(s) restarted: the switch rebooted")
    if boots_before is not None and boots_now is not None and boots_now == boots_before:
        return Restart("agent", "engine_boots_unchanged",
                       f"snmpEngineBoots did not advance ({boots_now}): only the SNMP agent restarted")
    return Restart("switch", "sys_uptime",
                   "no counter or snmpEngineBoots evidence: taken as a switch reboot")


def restart_verdict(
    baselines: Mapping[str, Baseline | None],
    poll: PortPoll,
    ceilings: Mapping[str, int],
    settings: MeterSettings = MeterSettings(),
) -> Restart | None:
    """One verdict for the whole switch when sysUpTime fell since the ports' baselines.

    Every port of the poll whose baseline sees the fall adds its counters' evidence, so a quiet
    port is judged with its busy neighbours; None when no baseline sees a fall.
    """
    evidence: list[CounterEvidence | None] = []
    boots_before: int | None = None
    fell = False
    for port, prev in baselines.items():
        pc = poll.ports.get(port)
        if prev is None or pc is None or pc.in_octets is None or pc.out_octets is None:
            continue
        dt = poll.now - prev.now
        if dt < settings.min_interval_s or _uptime_break(prev, poll, dt, settings) is None:
            continue
        fell = True
        if prev.engine_boots is not None:
            boots_before = prev.engine_boots if boots_before is None else min(boots_before, prev.engine_boots)
        evidence.append(counter_evidence(prev, pc, poll, ceilings.get(port, 0), settings))
    if not fell:
        return None
    return decide_restart(boots_before, poll.engine_boots, evidence)


def _below(prev: Baseline, pc: PortCounters, dt: float, ceiling: int, settings: MeterSettings) -> bool:
    """The reading is lower than the trusted one in a way no counting port explains."""
    assert pc.in_octets is not None and pc.out_octets is not None
    if pc.in_octets == 0 and pc.out_octets == 0 and (prev.in_octets or prev.out_octets):
        return True
    if pc.counter_bits == 64:
        return pc.in_octets < prev.in_octets or pc.out_octets < prev.out_octets
    most = _most_octets(ceiling, dt, settings)
    for old, new in ((prev.in_octets, pc.in_octets), (prev.out_octets, pc.out_octets)):
        if new < old and new + COUNTER32_MOD - old > most:
            return True  # a "wrap" faster than the port: a low reading, not a wrap
    return False


def _confirms(pending: Reading, pc: PortCounters, poll: PortPoll, ceiling: int,
              settings: MeterSettings) -> bool:
    """The reading counts on from the pending low one: the counters really restarted."""
    assert pc.in_octets is not None and pc.out_octets is not None
    dt = poll.now - pending.now
    if dt <= 0 or (pc.in_octets == 0 and pc.out_octets == 0):
        return False
    if pc.in_octets < pending.in_octets or pc.out_octets < pending.out_octets:
        return False
    if pc.in_octets == pending.in_octets and pc.out_octets == pending.out_octets:
        return False  # a stuck value confirms nothing
    most = _most_octets(ceiling, dt, settings)
    return pc.in_octets - pending.in_octets <= most and pc.out_octets - pending.out_octets <= most


def step(
    prev: Baseline | None,
    poll: PortPoll,
    port: str,
    *,
    configured_speed_bps: int,
    settings: MeterSettings = MeterSettings(),
    restart: Restart | None = None,
) -> tuple[RateSample, Baseline | None]:
    """Judge one port in one poll against its baseline; return the sample and the new baseline.

    `restart` is the switch-wide verdict (`restart_verdict`) when sysUpTime fell; without it a
    fall is judged on this port's evidence alone.
    """
    pc = poll.ports.get(port)
    if pc is None or pc.in_octets is None or pc.out_octets is None:
        missing = "octet counters not in reply" if pc is not None else (
            poll.error_detail or poll.error or "port not in reply"
        )
        oper, admin = (pc.oper, pc.admin) if pc is not None else ("unknown", "unknown")
        kept = replace(prev, missed=prev.missed + 1) if prev is not None else None
        return RateSample(poll.switch, port, poll.at, "missing", missing, oper=oper, admin=admin), kept

    ceiling = ceiling_bps(configured_speed_bps, pc)
    reported = pc.high_speed_mbps * 1_000_000 if pc.high_speed_mbps else None

    def sample(status: Status, reason: str = "", **kw: Any) -> RateSample:
        return replace(
            RateSample(
                poll.switch, port, poll.at, status, reason,
                speed_bps=ceiling, oper=pc.oper, admin=pc.admin,
                configured_speed_bps=configured_speed_bps, reported_speed_bps=reported,
            ),
            **kw,
        )

    new = _baseline(pc, poll)
    if prev is None:
        return sample("first", "no baseline yet"), new

    dt = poll.now - prev.now
    if dt < settings.min_interval_s:
        return sample("repeat", f"only {dt:.3f} s after the previous reading: nothing measured"), prev

    why = _discontinuity(prev, pc, poll)
    if why is not None:
        return sample("reset", why), new

    fell = _uptime_break(prev, poll, dt, settings)
    extra: dict[str, Any] = {}
    if fell is not None:
        ev = counter_evidence(prev, pc, poll, ceiling, settings)
        verdict = restart or decide_restart(prev.engine_boots, poll.engine_boots, [ev])
        extra = dict(restart=verdict.kind, restart_evidence=verdict.evidence, counters=ev)
        fell = f"{fell}: {verdict.reason}"
        zero = pc.in_octets == 0 and pc.out_octets == 0 and (prev.in_octets or prev.out_octets)
        if verdict.kind == "switch" and not zero:
            return sample("reset", fell, **extra), new
        # An agent restart: the counters go on from the trusted baseline. Zeros after a fall
        # are judged below like any low reading: never a baseline on their own.

    if _below(prev, pc, dt, ceiling, settings):
        low = f"counters read in {pc.in_octets} / out {pc.out_octets}, below the last trusted" \
              f" {prev.in_octets} / {prev.out_octets}"
        if prev.pending is not None and _confirms(prev.pending, pc, poll, ceiling, settings):
            return sample("reset", f"{low}, counting on from the pending reading:"
                                   " the counters restarted", **extra), new
        pending = Reading(pc.in_octets, pc.out_octets, poll.now, poll.at)
        kept = replace(prev, missed=prev.missed + 1, pending=pending)
        return sample("suspect", f"{low}: not a baseline until a later reading confirms it",
                      **extra), kept

    d_in = _delta(prev.in_octets, pc.in_octets, pc.counter_bits)
    d_out = _delta(prev.out_octets, pc.out_octets, pc.counter_bits)
    assert d_in is not None and d_out is not None  # _below caught every Counter64 decrease
    ambiguous32 = pc.counter_bits == 32 and dt * ceiling >= COUNTER32_MOD * 8
    if fell is not None:
        interval, clock = dt, "poller"  # sysUpTime is no clock across an agent restart
    else:
        interval, clock = _interval(prev, poll, dt, settings)
    measured: dict[str, Any] = dict(
        interval_s=interval, in_octets=d_in, out_octets=d_out, start_at=prev.at, clock=clock,
        spans_missed=prev.missed,
    )
    if dt > settings.max_gap_s:
        gap = f"{dt:.1f} s since the last reading exceeds max_gap_s {settings.max_gap_s:g}"
        if ambiguous32:
            return sample("gap", f"{gap}; Counter32 could have wrapped more than once", **extra), new
        if max(d_in, d_out) * 8 > ceiling * interval:
            return sample("glitch", f"{gap}; its average rate is above the port speed"
                                    f" {ceiling} bit/s", **extra), new
        return sample("gap", f"{gap}: octets billed, no rate", **measured, **extra), new
    if ambiguous32:
        return sample("gap", f"Counter32 could have wrapped more than once in {dt:.1f} s", **extra), new

    in_bps = d_in * 8 / interval
    out_bps = d_out * 8 / interval
    if in_bps > ceiling or out_bps > ceiling:
        return sample(
            "glitch",
            f"rate in {in_bps:.0f} / out {out_bps:.0f} bit/s above port speed {ceiling} bit/s",
            **extra,
        ), new
    reason = fell or ""
    if prev.missed:
        reason = (reason + "; " if reason else "") + (
            f"interval spans {prev.missed} unanswered or untrusted poll(s)")
    return sample("ok", reason, in_bps=in_bps, out_bps=out_bps, **measured, **extra), new
