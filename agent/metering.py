"""Runs each poll through the metering and cap policies; the daemon and `replay` share it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from rackwarden.policies.billing import BucketPart, split_interval
from rackwarden.policies.cap import CapRun, CapVerdict, judge
from rackwarden.policies.facts import PortPoll
from rackwarden.policies.metering import (
    Baseline,
    MeterSettings,
    RateSample,
    ceiling_bps,
    restart_verdict,
    step,
)

from .config import Config, ServerConfig
from .metrics import Metrics

log = logging.getLogger("rackwarden.metering")

UsageSink = Callable[[str, list[BucketPart]], None]
# (switch, bucket parts by server, the switch's port baselines after the poll): one poll's
# billing and the baselines it was measured against, to be committed together.
PollSink = Callable[[str, Mapping[str, list[BucketPart]], Mapping[str, Baseline | None]], None]


@dataclass(frozen=True, slots=True)
class PortReport:
    """What one poll said about one server: its port sample and its cap verdict."""

    server: ServerConfig
    sample: RateSample
    verdict: CapVerdict
    cap_changed_from: int | None = None  # R3: the previous cap when it changed at this poll


class MeteringService:
    """Holds baselines (by switch and ifName) and over-cap runs (by server) between polls."""

    def __init__(
        self,
        config: Config,
        *,
        metrics: Metrics | None = None,
        usage_sink: UsageSink | None = None,
        poll_sink: PollSink | None = None,
    ):
        self._config = config
        self._metrics = metrics
        self._usage_sink = usage_sink
        self._poll_sink = poll_sink
        self._baselines: dict[tuple[str, str], Baseline] = {}
        self._runs: dict[str, CapRun] = {}
        self._caps: dict[str, int] = {}

    @property
    def config(self) -> Config:
        return self._config

    def reconfigure(self, config: Config) -> None:
        """Swap in a new config; baselines survive because ports are keyed by ifName."""
        self._config = config
        live = {s.id for s in config.servers}
        for sid in [s for s in self._runs if s not in live]:
            del self._runs[sid]

    def restore(self, baselines: Mapping[tuple[str, str], Baseline], now: float, at: datetime) -> None:
        """Baselines a previous run committed with its last billed poll (`PollSink`), so the
        first poll after a restart bills the interval since then instead of starting over.

        Their monotonic times belong to the old process (or host boot): they are moved onto
        this one's clock by their wall time, so a Δt that falls back to monotonic time is the
        real time elapsed.
        """
        for key, b in baselines.items():
            shift = now - (at - b.at).total_seconds() - b.now
            pending = b.pending
            if pending is not None:
                pending = replace(pending, now=pending.now + shift)
            self._baselines.setdefault(key, replace(b, now=b.now + shift, pending=pending))

    def if_index(self, switch: str, port: str) -> int | None:
        """The port's ifIndex as of the latest good reading (for sFlow attribution)."""
        b = self._baselines.get((switch, port))
        return b.if_index if b is not None else None

    def ingest(self, poll: PortPoll) -> list[PortReport]:
        cfg = self._config
        sw = cfg.switches.get(poll.switch)
        if sw is None:
            raise KeyError(f"poll from unknown switch '{poll.switch}'")
        settings = MeterSettings(max_gap_s=cfg.agent.max_gap_s)
        configured = sw.port_speed_mbps * 1_000_000
        servers = cfg.servers_on(poll.switch)
        # sysUpTime falling is judged once for the switch, on every metered port's counters:
        # an agent restart and a reboot must not be told apart differently port by port.
        ceilings = {
            s.port: ceiling_bps(configured, pc)
            for s in servers
            if (pc := poll.ports.get(s.port)) is not None
        }
        restart = restart_verdict(
            {s.port: self._baselines.get((poll.switch, s.port)) for s in servers},
            poll, ceilings, settings,
        )
        if restart is not None:
            log.warning("%s: sysUpTime fell (%s, decided by %s): %s", poll.switch,
                        "switch reboot" if restart.kind == "switch" else "SNMP agent restart",
                        restart.evidence, restart.reason)
        reports: list[PortReport] = []
        billed: dict[str, list[BucketPart]] = {}
        for server in servers:
            key = (poll.switch, server.port)
            sample, baseline = step(
                self._baselines.get(key), poll, server.port,
                configured_speed_bps=configured, settings=settings, restart=restart,
            )
            if baseline is None:
                self._baselines.pop(key, None)
            else:
                self._baselines[key] = baseline
            if sample.status not in ("ok", "first", "missing", "repeat"):
                log.warning("%s %s (%s): %s: %s", poll.switch, server.port, server.id,
                            sample.status, sample.reason)
            rule = cfg.cap_rule(server, poll.at)
            previous_cap = self._caps.get(server.id)
            changed = previous_cap if previous_cap is not None and previous_cap != rule.cap_bps else None
            if changed is not None:
                log.warning("cap of %s changed from %d to %d bit/s at %s (R3)",
                            server.id, changed, rule.cap_bps, poll.at.isoformat())
            self._caps[server.id] = rule.cap_bps
            verdict, run = judge(server.id, sample, self._runs.get(server.id), rule)
            if run is None:
                self._runs.pop(server.id, None)
            else:
                self._runs[server.id] = run
            if self._metrics is not None:
                self._metrics.observe_port(server.id, sample, verdict)
            if sample.billable:
                assert sample.start_at is not None
                assert sample.in_octets is not None and sample.out_octets is not None
                # Server's outbound is the port's ingress. A gap's octets are spread over
                # every bucket it covers, in proportion to time, never into the last alone.
                billed[server.id] = split_interval(sample.start_at, sample.at, sample.in_octets,
                                                   sample.out_octets)
            reports.append(PortReport(server, sample, verdict, changed))
        if self._poll_sink is not None:
            self._poll_sink(poll.switch, billed,
                            {s.port: self._baselines.get((poll.switch, s.port)) for s in servers})
        elif self._usage_sink is not None:
            for sid, parts in billed.items():
                self._usage_sink(sid, parts)
        return reports
