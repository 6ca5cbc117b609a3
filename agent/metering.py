"""Runs each poll through the metering and cap policies; the daemon and `replay` share it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from rackwarden.policies.billing import BucketPart, split_interval
from rackwarden.policies.cap import CapRun, CapVerdict, judge
from rackwarden.policies.facts import PortPoll
from rackwarden.policies.metering import Baseline, MeterSettings, RateSample, step

from .config import Config, ServerConfig
from .metrics import Metrics

log = logging.getLogger("rackwarden.metering")

UsageSink = Callable[[str, list[BucketPart]], None]


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
    ):
        self._config = config
        self._metrics = metrics
        self._usage_sink = usage_sink
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
        reports: list[PortReport] = []
        for server in cfg.servers_on(poll.switch):
            key = (poll.switch, server.port)
            sample, baseline = step(
                self._baselines.get(key), poll, server.port,
                configured_speed_bps=sw.port_speed_mbps * 1_000_000, settings=settings,
            )
            if baseline is None:
                self._baselines.pop(key, None)
            else:
                self._baselines[key] = baseline
            if sample.status not in ("ok", "first", "missing"):
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
            if self._usage_sink is not None and sample.ok and sample.start_at is not None:
                assert sample.in_octets is not None and sample.out_octets is not None
                # Server's outbound is the port's ingress.
                parts = split_interval(sample.start_at, sample.at, sample.in_octets, sample.out_octets)
                self._usage_sink(server.id, parts)
            reports.append(PortReport(server, sample, verdict, changed))
        return reports
