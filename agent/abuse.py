"""Abuse detection in the daemon: sFlow and SPAN samples into the detectors, detections to the enforcer (R4–R8, R10)."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from rackwarden.drivers.capture.evidence import EvidenceRing, EvidenceSource, write_evidence
from rackwarden.drivers.capture.rawring import RawFrameRing
from rackwarden.drivers.capture.span import MirrorSource, SpanCapture
from rackwarden.drivers.sflow.collector import SflowCollector
from rackwarden.drivers.sflow.rawring import RawRing
from rackwarden.policies.detect import AbuseDetector, Detection, DetectThresholds, Exemption, ServerSpec
from rackwarden.policies.detect_vec import VectorDetector
from rackwarden.policies.flowcols import SampleColumns
from rackwarden.policies.flowfacts import FlowSample

from .clock import Clock
from .config import Config
from .enforcer import Enforcer
from .metrics import Metrics

log = logging.getLogger("rackwarden.abuse")
IfIndexOf = Callable[[str, str], int | None]  # (switch, port) -> ifIndex from the latest poll
# SPAN rows' refs carry this bit, so one resolver serves both raw rings (sFlow datagram numbers
# stay far below it).
SPAN_REF = 1 << 62


def span_agent(switch: str) -> str:
    return f"span:{switch}"


def span_index(config: Config, switch: str, port: str) -> int:
    """SPAN ports are keyed by inventory position: stable, known before the first poll."""
    return config.switches[switch].ports.index(port) + 1


def server_specs(config: Config, if_index: IfIndexOf) -> list[ServerSpec]:
    mirrored = {(m.switch, m.port) for m in config.detection.span_mirrors}
    specs = []
    # Equal sets are shared: a frozenset is 216 bytes however small, and most servers have no
    # port known before the first poll, and one of a few lists of declared ports.
    shared: dict[frozenset[Any], frozenset[Any]] = {}
    for s in config.servers:
        sw = config.switches[s.switch]
        ports: set[tuple[str, int]] = set()
        idx = if_index(s.switch, s.port)
        if sw.sflow_agent and idx is not None:
            ports.add((sw.sflow_agent, idx))
        if (s.switch, s.port) in mirrored:
            ports.add((span_agent(s.switch), span_index(config, s.switch, s.port)))
        declared = frozenset(s.declared_ports) if s.declared_ports else None
        specs.append(ServerSpec(
            s.id, frozenset(ports) if ports else shared.setdefault(frozenset(), frozenset()),
            frozenset(s.ips), template=s.template, mail_server=s.mail_server,
            declared_ports=shared.setdefault(declared, declared) if declared is not None else None,
            whitelist=s.whitelist,
        ))
    return specs


SCANWIN_ENV = "RACKWARDEN_SCANWIN"  # "python" forces VectorDetector's Python scan loop, "c" the C one


def scanwin_choice() -> str | None:
    """$RACKWARDEN_SCANWIN for VectorDetector (None: C when built); a bad value fails at start."""
    want = os.environ.get(SCANWIN_ENV) or None
    if want not in (None, "c", "python"):
        raise ValueError(f"{SCANWIN_ENV} must be 'c' or 'python', not {want!r}")
    return want


def exemptions(config: Config) -> list[Exemption]:
    return [Exemption(s.id, detector, until, reason)
            for s in config.servers for detector, until, reason in s.exemptions]


class AbuseService:
    """Owns the collectors, the detector and the evaluation loop; constructor does no I/O."""

    def __init__(self, config: Config, *, clock: Clock, metrics: Metrics, enforcer: Enforcer,
                 if_index: IfIndexOf):
        self.config = config
        self.clock = clock
        self.metrics = metrics
        self.enforcer = enforcer
        self._if_index = if_index
        self._specs: list[ServerSpec] = []
        self._indexes: list[int | None] = []  # each server's ifIndex when _specs were made
        # `vector`: sFlow is decoded in batches into columns on the collector's receive thread
        # and fed to VectorDetector; its evidence is re-decoded from the last datagrams as the
        # switch sent them (sflow_ring). Fixed at start, like the sources themselves.
        self.engine = config.detection.detector_engine
        self.sflow_ring = RawRing()
        # SPAN on the vector engine reads the packet ring in batches into columns (the capture
        # thread) and keeps the raw frames for evidence; the recv mode stays per frame.
        d = config.detection
        self.span_ring: RawFrameRing | None = (
            RawFrameRing() if self.engine == "vector" and d.span_mirrors and d.span_mode == "ring"
            else None)
        self.detector = self._build_detector()
        self.collector: SflowCollector | None = None
        self.captures: list[SpanCapture] = []
        self.ring = EvidenceRing()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._evidence: dict[tuple[str, str, str], Path] = {}
        metrics.set_sources(self)

    def _build_detector(self) -> AbuseDetector:
        self._indexes = self._current_indexes()
        self._specs = server_specs(self.config, self._if_index)
        templates = {name: DetectThresholds(**values) for name, values in self.config.detection.thresholds.items()}
        if self.engine == "vector":
            return VectorDetector(self._specs, templates=templates, exemptions=exemptions(self.config),
                                  resolve=self._resolve, scanwin=scanwin_choice())
        return AbuseDetector(self._specs, templates=templates, exemptions=exemptions(self.config))

    def _rebuild_detector(self) -> None:
        """A new detector in place of the old one, whose windows are dropped anyway.

        The old one is let go first (nothing else holds it; this runs on the event loop, as
        every use of self.detector does): built beside it, the new one takes fresh memory and
        the old one's is left as holes the process keeps mapped: 12 MB at 10,000 servers
        when the first poll re-keys the detector (bench/scale.py's "at rest")."""
        del self.detector
        self.detector = self._build_detector()

    def _resolve(self, refs: npt.NDArray[np.int64]) -> list[FlowSample | None]:
        """Evidence rows back to FlowSamples, each from the raw ring its ref names."""
        span = (refs & SPAN_REF) != 0
        if self.span_ring is None or not span.any():
            return self.sflow_ring.resolve(refs)
        out: list[FlowSample | None] = [None] * len(refs)
        for mask, ring, part in ((~span, self.sflow_ring, refs[~span]),
                                 (span, self.span_ring, refs[span] & ~SPAN_REF)):
            for i, got in zip(np.flatnonzero(mask).tolist(), ring.resolve(part), strict=True):
                out[i] = got
        return out

    def reconfigure(self, config: Config) -> None:
        """After a reload: new servers, thresholds or exemptions. Sources need a restart."""
        old, self.config = self.config, config
        if (old.detection.sflow_listen, old.detection.sflow_port, old.detection.span_mirrors) != (
                config.detection.sflow_listen, config.detection.sflow_port, config.detection.span_mirrors):
            log.warning("detection sources changed: they take effect at the next restart")
        if old.detection.detector_engine != config.detection.detector_engine:
            log.warning("detection.engine changed to %s: it takes effect at the next restart",
                        config.detection.detector_engine)
        if (server_specs(config, self._if_index) != self._specs
                or old.detection.thresholds != config.detection.thresholds):
            log.warning("servers or thresholds changed: detectors rebuilt, their windows start afresh")
            self._rebuild_detector()
        else:
            self.detector.set_exemptions(exemptions(config))

    def _current_indexes(self) -> list[int | None]:
        return [self._if_index(s.switch, s.port) for s in self.config.servers]

    def refresh_ports(self) -> None:
        """After a poll: if an ifIndex moved (a switch reboot re-indexed), re-key the detector.

        It runs after every switch's poll: the specs (~0.1 s of CPU at 10,000 servers, and as
        many objects) are made again only when an ifIndex, their one input besides the
        config, differs from when they were made."""
        indexes = self._current_indexes()
        if indexes == self._indexes:
            return
        if server_specs(self.config, self._if_index) != self._specs:
            log.warning("switch ports re-indexed: detectors rebuilt")
            self._rebuild_detector()
        else:
            self._indexes = indexes

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        d = self.config.detection
        if d.sflow_listen is not None:
            agents = [sw.sflow_agent for sw in self.config.switches.values() if sw.sflow_agent]
            vector = self.engine == "vector"
            self.collector = SflowCollector(allowed_agents=agents, on_samples=self.on_samples, clock=self.clock,
                                            bind=d.sflow_listen, port=d.sflow_port,
                                            on_columns=self.on_columns if vector else None,
                                            raw_ring=self.sflow_ring if vector else None)
            await self.collector.start()
        by_switch: dict[str, list[MirrorSource]] = {}
        for m in d.span_mirrors:
            idx = span_index(self.config, m.switch, m.port)
            src = by_switch.setdefault(m.switch, [])
            if m.ingress:
                src.append(MirrorSource(m.ingress, input_ifindex=idx))
            if m.egress:
                src.append(MirrorSource(m.egress, output_ifindex=idx))
        for switch, sources in by_switch.items():
            if self.span_ring is not None:
                cap = SpanCapture(sources, None, self.clock, agent=span_agent(switch), mode="ring",
                                  netns=d.span_netns, on_columns=self._on_span_columns_thread,
                                  raw_ring=self.span_ring)
            else:
                cap = SpanCapture(sources, self._on_batch_thread, self.clock, agent=span_agent(switch),
                                  mode=d.span_mode, netns=d.span_netns, evidence=self.ring)  # type: ignore[arg-type]
            await asyncio.to_thread(cap.start)
            self.captures.append(cap)
        self._task = asyncio.create_task(self._evaluate_forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self.collector is not None:
            self.collector.stop()
        for cap in self.captures:
            await asyncio.to_thread(cap.stop)

    # -- samples in -----------------------------------------------------------------------------

    def on_samples(self, samples: Sequence[Any]) -> None:
        # The sFlow collector hands counter samples in the same list; detectors read flows.
        self.detector.ingest([s for s in samples if type(s) is FlowSample])

    def on_columns(self, cols: SampleColumns) -> None:
        # On the event loop: the collector posts each decoded batch. self.detector is looked up
        # per call, because reconfigure and refresh_ports replace it.
        det = self.detector
        if isinstance(det, VectorDetector):
            det.ingest_columns(cols)

    def _on_span_columns_thread(self, cols: SampleColumns) -> None:
        # Called on the capture thread: the detector lives on the event loop.
        assert self._loop is not None
        cols.ref = np.where(cols.ref >= 0, cols.ref | SPAN_REF, cols.ref)
        self._loop.call_soon_threadsafe(self.on_columns, cols)

    def _on_batch_thread(self, samples: Sequence[FlowSample]) -> None:
        # Called on the capture thread: the detector lives on the event loop.
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self.on_samples, list(samples))

    # -- detections out -------------------------------------------------------------------------

    async def _evaluate_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.detection.evaluate_interval_s)
            try:
                await self.evaluate()
            except Exception:  # one bad cycle must not end detection
                log.exception("abuse evaluation failed")

    async def evaluate(self) -> list[Detection]:
        now, at = self.clock.now(), self.clock.at()
        found = self.detector.evaluate(now, at)
        for det in found:
            if not det.update:
                self.metrics.detections.labels(det.detector, det.server).inc()
                # From the episode's first sample to this decision (first_seen is this
                # evaluation's own `now`: measured from it, every latency was 0). Extra IPs
                # in use have no first sample: they are billing, not an attack to time.
                if det.onset is not None:
                    self.metrics.detection_latency.observe(max(0.0, det.first_seen - det.onset))
                log.warning("detection %s/%s on %s: %s", det.detector, det.kind, det.server, det.reason)
            if det.key not in self._evidence:
                source: EvidenceSource = self.span_ring if self.span_ring is not None else self.ring
                path, n = await asyncio.to_thread(write_evidence, self.config.agent.state_dir, det, source)
                self._evidence[det.key] = path
                log.info("evidence for %s: %s (%d packets)", det.key, path, n)
        # The ladder sees every server each cycle: an actionable detection is a standing
        # violation; its absence lets a noticed server fall back to observing.
        active: dict[str, Detection] = {}
        for det in self.detector.active():
            best = active.get(det.server)
            if det.actionable and (best is None or det.confidence > best.confidence):
                active[det.server] = det
        for s in self.config.servers:
            standing = active.get(s.id)
            rung = self.enforcer.rungs.get((s.id, "abuse"))
            if standing is None and (rung is None or rung.phase not in ("noticed", "restricted")):
                continue
            await self.enforcer.on_abuse(s.id, standing, self._evidence.get(standing.key) if standing else None)
        return found

    def source_counters(self) -> dict[str, Any]:
        """Plain numbers for the metrics collector (read at scrape time)."""
        out: dict[str, Any] = {"sflow": self.collector is not None, "span": bool(self.captures),
                               "sflow_datagrams": 0, "sflow_errors": {}, "sflow_backlog_drops": 0,
                               "capture_packets": 0, "capture_drops": 0}
        if self.collector is not None:
            out["sflow_datagrams"] = self.collector.datagrams_total
            out["sflow_errors"] = dict(self.collector.decode_errors)
            out["sflow_backlog_drops"] = self.collector.backlog_dropped_total
        for cap in self.captures:
            out["capture_packets"] += cap.counters.packets
            out["capture_drops"] += cap.counters.drops
        return out
