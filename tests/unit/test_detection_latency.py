"""rackwarden_detection_latency_seconds: from the episode's first sample to the decision.

It used to observe now - first_seen in the evaluation that set first_seen = now, so every
observation was 0. Driven here through AbuseService (the daemon's own evaluation) with a fake
clock: a quiet server starts a UDP flood at a known sample time, evaluations run every 0.25 s
as the daemon's do, and the latency observed must be the gap between the flood's first sample
and the evaluation that first reports it.
"""

from __future__ import annotations

import asyncio
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from rackwarden.agent.abuse import AbuseService
from rackwarden.agent.clock import FakeClock
from rackwarden.agent.config import Config, loads
from rackwarden.agent.metrics import Metrics
from rackwarden.policies.detect import FLOOD, SCAN, DetectThresholds
from rackwarden.policies.flowfacts import FLOW_SAMPLE_FIELDS, FlowSample, new_flow_sample

AGENT = "192.0.2.2"
SERVER_IP = "192.0.2.101"
SECOND_IP = "192.0.2.102"
T0 = 1000.0
AT0 = datetime(2026, 12, 1, 4, 0, tzinfo=UTC)
_DEFAULTS = {f.name: f.default for f in fields(FlowSample)}
EVALUATE_S = 0.25


def config(tmp_path: Path) -> Config:
    return loads(f"""
version: 1
agent: {{state_dir: {tmp_path / 'state'}, timezone: UTC}}
templates:
  rental: {{cap_mbps: 10, window_s: 300, direction: out, billing_direction: max, credit: rental}}
switches:
  sw1:
    address: 192.0.2.2
    vendor: cisco_ios
    snmp: {{version: "2c", community: public}}
    ports: ["Gi0/[1-4]"]
    sflow_agent: {AGENT}
servers:
  - {{id: srv-1, customer: acme, switch: sw1, port: Gi0/1, ips: [{SERVER_IP}, {SECOND_IP}], template: rental,
     monthly_fee_fen: 80000}}
detection:
  sflow: {{listen: 127.0.0.1, port: 0}}
""")


class _Enforcer:
    """The ladder is not under test: it is told, and does nothing."""

    def __init__(self) -> None:
        self.rungs: dict[Any, Any] = {}

    async def on_abuse(self, *args: Any) -> None:
        return None


def udp(now: float, rate: int, dst: str = "203.0.113.9", dport: int = 53,
        src: str = SERVER_IP) -> FlowSample:
    kw = {"source": "sflow", "agent": AGENT, "input_ifindex": 1, "output_ifindex": None,
          "sampling_rate": rate, "now": now, "at": AT0, "frame_length": 64, "header": b"",
          "src_ip": src, "dst_ip": dst, "protocol": 17, "src_port": 40000, "dst_port": dport}
    return new_flow_sample(*(kw.get(n, _DEFAULTS[n]) for n in FLOW_SAMPLE_FIELDS))


def web_reply(now: float) -> FlowSample:
    kw = {"source": "sflow", "agent": AGENT, "input_ifindex": 1, "output_ifindex": None,
          "sampling_rate": 1, "now": now, "at": AT0, "frame_length": 1500, "header": b"",
          "src_ip": SERVER_IP, "dst_ip": "203.0.113.77", "protocol": 6, "src_port": 443,
          "dst_port": 51000, "tcp_flags": 0x10}
    return new_flow_sample(*(kw.get(n, _DEFAULTS[n]) for n in FLOW_SAMPLE_FIELDS))


def latency_sum_count(metrics: Metrics) -> tuple[float, float]:
    s = metrics.registry.get_sample_value("rackwarden_detection_latency_seconds_sum")
    c = metrics.registry.get_sample_value("rackwarden_detection_latency_seconds_count")
    return float(s or 0.0), float(c or 0.0)


def drive(tmp_path: Path, steps: list[list[FlowSample]]) -> tuple[AbuseService, Metrics, list[Any]]:
    """One batch of samples per evaluation interval, then the daemon's evaluate()."""
    clock = FakeClock(AT0, start_now=T0)
    metrics = Metrics()
    svc = AbuseService(config(tmp_path), clock=clock, metrics=metrics,
                       enforcer=_Enforcer(), if_index=lambda sw, port: 1)  # type: ignore[arg-type]
    reported: list[Any] = []

    async def run() -> None:
        for batch in steps:
            clock.advance(EVALUATE_S)
            svc.on_samples(batch)
            reported.extend(d for d in await svc.evaluate() if not d.update)

    asyncio.run(run())
    return svc, metrics, reported


def test_flood_latency_is_first_sample_to_decision(tmp_path: Path) -> None:
    t = DetectThresholds()
    # Ordinary web replies (well under every limit) throughout, and from `start` (not on a
    # bucket edge) 1-in-1000 samples of a UDP flood at ~3x udp_pps.
    start = T0 + 1.0 + 0.13
    rate = 1000
    every = rate / (3 * t.udp_pps)
    steps: list[list[FlowSample]] = []
    now = T0
    flood_t = start
    for _ in range(24):
        lo, now = now, now + EVALUATE_S
        batch = [web_reply(lo + 0.01)]  # the server's ordinary traffic: web replies
        while flood_t < now:
            if flood_t >= lo:
                batch.append(udp(flood_t, rate))
            flood_t += every
        steps.append(batch)
    _, metrics, reported = drive(tmp_path, steps)
    floods = [d for d in reported if d.detector == FLOOD]
    assert len(floods) == 1, reported
    d = floods[0]
    # The known gap: the flood's first sample to the evaluation that first reported it.
    gap = d.first_seen - start
    assert gap > EVALUATE_S  # the window needed several intervals to fill: not a zero
    total, count = latency_sum_count(metrics)
    assert count == 1
    assert total == pytest.approx(gap, abs=1e-9)
    assert d.onset == pytest.approx(start, abs=1e-9)


def test_scan_latency_counts_from_the_first_probe(tmp_path: Path) -> None:
    t = DetectThresholds()
    start = T0 + 0.6
    probes_per_interval = 40
    steps: list[list[FlowSample]] = []
    n = 0
    now = T0
    for _ in range(12):
        lo, now = now, now + EVALUATE_S
        batch = []
        if lo >= start - EVALUATE_S:
            for k in range(probes_per_interval):
                when = max(start, lo) + k * 0.001
                if when < now:
                    batch.append(udp(when, 1, dst=f"198.18.{n // 250}.{n % 250 + 1}", dport=161))
                    n += 1
        steps.append(batch)
    _, metrics, reported = drive(tmp_path, steps)
    scans = [d for d in reported if d.detector == SCAN]
    assert len(scans) == 1 and n >= t.scan_distinct_hosts, reported
    gap = scans[0].first_seen - start
    assert gap >= EVALUATE_S
    total, count = latency_sum_count(metrics)
    assert count == 1
    assert total == pytest.approx(gap, abs=1e-9)


def test_extra_ips_in_use_are_not_timed(tmp_path: Path) -> None:
    """Both assigned addresses in use on a one-IP contract: reported (for billing), but it is
    no attack with a first sample, so it adds no latency observation (not even a 0)."""
    steps = [[udp(T0 + 0.1, 1), udp(T0 + 0.2, 1, src=SECOND_IP)], []]
    _, metrics, reported = drive(tmp_path, steps)
    assert [d.detector for d in reported] == ["extra_ip"]
    assert latency_sum_count(metrics) == (0.0, 0.0)
    assert reported[0].onset is None
