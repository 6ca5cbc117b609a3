"""Counter hygiene: turns two successive polls of one port into a rate, or says why there is none.

Billing-grade rules (issue 2):
- Counter64 (ifHC*) is preferred; a Counter64 that goes down is a reset, never a wrap.
- Counter32 wraps modulo 2**32; if the interval is long enough for a second wrap at the
  port's speed the delta is ambiguous and the sample is a `gap`.
- sysUpTime going backwards (other than its own 497-day TimeTicks wrap), advancing less than
  wall time, snmpEngineBoots changing, ifCounterDiscontinuityTime changing, the counter width
  changing or the ifName moving to another ifIndex are discontinuities: `reset`, new baseline.
- A rate strictly above the port speed is a `glitch`: no rate, never clamped.
- A port not answered is `missing`, never zero; the old baseline is kept so the next answer
  still covers the bytes in between (or is a `gap` if too long has passed).
- Δt is the agent's own clock: the sysUpTime advance between the two readings, which the
  agent stamps in the same reply it reads the counters for. A loaded NOC host that handles a
  reply late (or a retry) moves the poller's timestamp but not the agent's, so a steady 5 Mbps
  port can never look like 10 Mbps because of the poller. Without sysUpTime in both replies, or
  if the agent's advance disagrees with the replies' monotonic times by more than the jitter
  tolerance, Δt falls back to the monotonic times (never the nominal interval).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from .facts import PortCounters, PortPoll

COUNTER32_MOD = 2**32
TIMETICKS_MOD = 2**32  # sysUpTime wraps after 497.1 days
TICKS_PER_S = 100

Status = Literal["ok", "first", "reset", "gap", "glitch", "missing"]


@dataclass(frozen=True, slots=True)
class Baseline:
    """The last accepted reading of one port: what the next delta is measured from."""

    if_index: int
    in_octets: int
    out_octets: int
    counter_bits: int
    now: float
    at: datetime
    sys_uptime_ticks: int | None
    engine_boots: int | None
    discontinuity_ticks: int | None


@dataclass(frozen=True, slots=True)
class RateSample:
    """One port's verdict for one poll. Rates and deltas are None unless status is ok.

    in/out are the switch port's view (ifIn = the server's upload, ifOut = its download).
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
    speed_bps: int | None = None
    oper: str = "unknown"
    admin: str = "unknown"
    start_at: datetime | None = None  # wall time of the baseline this delta starts from
    clock: Literal["agent", "poller"] | None = None  # whose clock measured interval_s

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True, slots=True)
class MeterSettings:
    """Knobs of the counter policy; defaults suit 60 s polls."""

    max_gap_s: float = 300.0  # a longer interval is a gap: its average hides any overage
    uptime_tolerance_s: float = 5.0  # reply jitter allowed when comparing sysUpTime to wall time
    uptime_tolerance_ratio: float = 0.02


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
        return f"sysUpTime went backwards ({old} -> {new} ticks): agent restarted"
    if advanced + tolerance < expected:
        return (
            f"sysUpTime advanced {advanced / TICKS_PER_S:.1f} s in {dt:.1f} s of wall time:"
            " agent restarted"
        )
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
    """Octets between two readings; None when a Counter64 went down (a reset, not a wrap)."""
    if new >= old:
        return new - old
    if bits == 32:
        return new + COUNTER32_MOD - old
    return None


def step(
    prev: Baseline | None,
    poll: PortPoll,
    port: str,
    *,
    configured_speed_bps: int,
    settings: MeterSettings = MeterSettings(),
) -> tuple[RateSample, Baseline | None]:
    """Judge one port in one poll against its baseline; return the sample and the new baseline."""
    pc = poll.ports.get(port)
    if pc is None or pc.in_octets is None or pc.out_octets is None:
        missing = "octet counters not in reply" if pc is not None else (
            poll.error_detail or poll.error or "port not in reply"
        )
        return RateSample(poll.switch, port, poll.at, "missing", missing), prev

    # The agent's own speed is the physical limit; the configured one is the fallback.
    speed_bps = pc.high_speed_mbps * 1_000_000 if pc.high_speed_mbps else configured_speed_bps

    def sample(status: Status, reason: str = "") -> RateSample:
        return RateSample(
            poll.switch, port, poll.at, status, reason,
            speed_bps=speed_bps, oper=pc.oper, admin=pc.admin,
        )

    new = _baseline(pc, poll)
    if prev is None:
        return sample("first", "no baseline yet"), new

    dt = poll.now - prev.now
    if dt <= 0:
        return sample("glitch", f"non-positive interval {dt:.3f} s between replies"), prev

    why = _discontinuity(prev, pc, poll) or _uptime_break(prev, poll, dt, settings)
    d_in = _delta(prev.in_octets, pc.in_octets, pc.counter_bits)
    d_out = _delta(prev.out_octets, pc.out_octets, pc.counter_bits)
    if why is None and (d_in is None or d_out is None):
        why = "Counter64 decreased"
    if why is not None or d_in is None or d_out is None:
        return sample("reset", why or ""), new

    if dt > settings.max_gap_s:
        return sample(
            "gap", f"{dt:.1f} s since the last reading exceeds max_gap_s {settings.max_gap_s:g}"
        ), new
    if pc.counter_bits == 32 and dt * speed_bps >= COUNTER32_MOD * 8:
        return sample("gap", f"Counter32 could have wrapped more than once in {dt:.1f} s"), new

    dt, clock = _interval(prev, poll, dt, settings)
    in_bps = d_in * 8 / dt
    out_bps = d_out * 8 / dt
    if in_bps > speed_bps or out_bps > speed_bps:
        return sample(
            "glitch",
            f"rate in {in_bps:.0f} / out {out_bps:.0f} bit/s above port speed {speed_bps} bit/s",
        ), new
    return (
        RateSample(
            poll.switch, port, poll.at, "ok",
            interval_s=dt, in_octets=d_in, out_octets=d_out, in_bps=in_bps, out_bps=out_bps,
            speed_bps=speed_bps, oper=pc.oper, admin=pc.admin, start_at=prev.at, clock=clock,
        ),
        new,
    )
