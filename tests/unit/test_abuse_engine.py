"""detection.engine: which detector the daemon builds, and that sFlow reaches it end to end.

`vector` (the default) decodes sFlow batches into columns on the collector's receive thread and
feeds VectorDetector, whose evidence is re-decoded from the raw datagram ring; `object` keeps
one FlowSample per sample and AbuseDetector. Both are driven here through AbuseService with a
real collector on loopback: the same UDP flood from srv-1's port must give the same detection,
and the vector engine's evidence must be the very frames the switch sent.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from rackwarden.agent.abuse import AbuseService
from rackwarden.agent.clock import SystemClock
from rackwarden.agent.config import ConfigError, loads
from rackwarden.agent.metrics import Metrics
from rackwarden.drivers.sflow.encoder import pack_datagrams
from rackwarden.policies.detect import FLOOD, AbuseDetector, Detection
from rackwarden.policies.detect_vec import VectorDetector
from rackwarden.policies.flowfacts import FLOW_SAMPLE_FIELDS, FlowSample, new_flow_sample

AGENT = "127.0.0.1"  # the datagrams come from loopback: the allow-list checks the source
SERVER_IP = "192.0.2.101"
AT0 = datetime(2026, 12, 1, 4, 0, tzinfo=UTC)
_DEFAULTS = {f.name: f.default for f in fields(FlowSample)}


def config_text(tmp_path: Path, engine: str | None) -> str:
    line = f", engine: {engine}" if engine is not None else ""
    return f"""
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
  - {{id: srv-1, customer: acme, switch: sw1, port: Gi0/1, ips: [{SERVER_IP}], template: rental,
     monthly_fee_fen: 80000}}
detection: {{sflow: {{listen: 127.0.0.1, port: 0}}{line}}}
"""


class _Enforcer:
    def __init__(self) -> None:
        self.rungs: dict[Any, Any] = {}

    async def on_abuse(self, *args: Any) -> None:
        return None


def _udp_frame(i: int) -> bytes:
    eth = bytes.fromhex("020000000002" "020000000001") + b"\x08\x00"
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28 + 32, i & 0xFFFF, 0, 64, 17, 0,
                     socket.inet_aton(SERVER_IP), socket.inet_aton("203.0.113.9"))
    return eth + ip + struct.pack("!HHHH", 40000 + i % 1000, 53, 8 + 32, 0) + bytes(32)


def flood_datagrams(n: int, rate: int = 64) -> tuple[list[bytes], list[bytes]]:
    """n flow samples of a UDP flood sent from ifIndex 1, and their frames."""
    frames = [_udp_frame(i) for i in range(n)]
    samples = []
    for i, f in enumerate(frames):
        kw = {"source": "sflow", "agent": AGENT, "input_ifindex": 1, "output_ifindex": None,
              "sampling_rate": rate, "now": 0.0, "at": AT0, "frame_length": len(f) + 4,
              "header": f, "sample_sequence": i + 1, "source_id_type": 0, "source_id_index": 1,
              "sample_pool": (i + 1) * rate, "drops": 0}
        samples.append(new_flow_sample(*(kw.get(k, _DEFAULTS[k]) for k in FLOW_SAMPLE_FIELDS)))
    return pack_datagrams(samples, agent=AGENT), frames


def run_flood(tmp_path: Path, engine: str | None) -> tuple[AbuseService, list[Detection]]:
    svc = AbuseService(loads(config_text(tmp_path, engine)), clock=SystemClock(),
                       metrics=Metrics(), enforcer=_Enforcer(),  # type: ignore[arg-type]
                       if_index=lambda sw, port: 1 if port == "Gi0/1" else None)
    datagrams, _frames = flood_datagrams(400)
    found: list[Detection] = []

    async def run() -> None:
        await svc.start()
        try:
            assert svc.collector is not None and svc.collector.bound_port is not None
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
                for d in datagrams:
                    tx.sendto(d, ("127.0.0.1", svc.collector.bound_port))
            deadline = time.monotonic() + 10
            while (svc.detector.stats.samples < 400 and time.monotonic() < deadline):
                await asyncio.sleep(0.02)
            found.extend(await svc.evaluate())
        finally:
            await svc.stop()

    asyncio.run(run())
    return svc, found


@pytest.mark.parametrize("engine, kind", [(None, VectorDetector), ("vector", VectorDetector),
                                          ("object", AbuseDetector)])
def test_the_engine_setting_picks_the_detector(tmp_path: Path, engine: str | None,
                                               kind: type) -> None:
    svc = AbuseService(loads(config_text(tmp_path, engine)), clock=SystemClock(),
                       metrics=Metrics(), enforcer=_Enforcer(),  # type: ignore[arg-type]
                       if_index=lambda sw, port: 1)
    assert type(svc.detector) is kind


def test_an_unknown_engine_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="engine"):
        loads(config_text(tmp_path, "columnar"))


def test_a_flood_over_real_sflow_gives_the_same_detection_on_both_engines(tmp_path: Path) -> None:
    results = {}
    for engine in ("vector", "object"):
        svc, found = run_flood(tmp_path / engine, engine)
        assert svc.collector is not None
        # The vector engine's collector decoded columns; the object engine's, FlowSamples.
        assert (svc.collector.raw_ring is not None) == (engine == "vector")
        assert svc.detector.stats.samples == 400 and svc.detector.stats.by_port == 400
        floods = [d for d in found if d.detector == FLOOD and d.server == "srv-1"]
        assert len(floods) == 1, found
        results[engine] = floods[0]
    v, o = results["vector"], results["object"]
    assert (v.kind, v.actionable, v.counts, v.thresholds, v.samples, v.sampling_rate) == (
        o.kind, o.actionable, o.counts, o.thresholds, o.samples, o.sampling_rate)
    # Evidence: the frames the switch sent, re-decoded from the raw ring on the vector engine.
    _datagrams, frames = flood_datagrams(400)
    assert v.evidence and [s.header for s in v.evidence] == [s.header for s in o.evidence]
    assert {s.header for s in v.evidence} <= set(frames)


@pytest.mark.parametrize("value", ["python", "c"])
def test_rackwarden_scanwin_picks_the_scan_loop(tmp_path: Path, value: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """RACKWARDEN_SCANWIN reaches the detector the daemon builds (and survives a rebuild)."""
    from rackwarden.policies.detect_vec import SCANWIN_C_ERROR
    monkeypatch.setenv("RACKWARDEN_SCANWIN", value)
    if value == "c" and SCANWIN_C_ERROR is not None:
        # Not built here: asking for it must stop the service naming why, not run Python.
        with pytest.raises(RuntimeError, match="not built"):
            AbuseService(loads(config_text(tmp_path, None)), clock=SystemClock(),
                         metrics=Metrics(), enforcer=_Enforcer(),  # type: ignore[arg-type]
                         if_index=lambda sw, port: 1)
        return
    svc = AbuseService(loads(config_text(tmp_path, None)), clock=SystemClock(),
                       metrics=Metrics(), enforcer=_Enforcer(),  # type: ignore[arg-type]
                       if_index=lambda sw, port: 1)
    assert isinstance(svc.detector, VectorDetector) and svc.detector.scanwin == value
    svc._rebuild_detector()
    assert isinstance(svc.detector, VectorDetector) and svc.detector.scanwin == value


def test_a_bad_rackwarden_scanwin_fails_at_start_naming_it(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RACKWARDEN_SCANWIN", "fast")
    with pytest.raises(ValueError, match="RACKWARDEN_SCANWIN"):
        AbuseService(loads(config_text(tmp_path, None)), clock=SystemClock(),
                     metrics=Metrics(), enforcer=_Enforcer(),  # type: ignore[arg-type]
                     if_index=lambda sw, port: 1)
