"""SPAN path end to end: real abuse traffic in the lab, mirrored with tc, captured and detected."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from rackwarden.agent.clock import SystemClock
from rackwarden.drivers.capture import EvidenceRing, SpanCapture, write_evidence
from rackwarden.policies.detect import (
    FLOOD,
    PROXY,
    SCAN,
    SPAM,
    SPOOF,
    UNDECLARED_PORT,
    AbuseDetector,
    Detection,
    ServerSpec,
)

from tests.lab.netlab import Lab, cleanup_stale
from tests.lab.span import LabSpan

pytestmark = pytest.mark.lab

LAB_ID = 41
N_SERVERS = 8
UDP_FLOODER, VICTIM, SYN_FLOODER, SPAMMER, SCANNER, SPOOFER, PROXY_SERVER, HEAVY = range(1, 9)
EXTRA = range(100, 141)  # upstream addresses with SMTP and HTTP listeners
# Attack start -> detection, printed at the end: a figure (bench/latency.py measures it), not a
# pass mark; a test only checks the detection came after its attack began.
LATENCIES: dict[str, float] = {}


@dataclass
class Pipeline:
    """What the agent wires: capture thread -> detector -> detections (collected here)."""

    detector: AbuseDetector
    clock: SystemClock = field(default_factory=SystemClock)
    found: list[Detection] = field(default_factory=list)
    lock: threading.Condition = field(default_factory=threading.Condition)
    errors: list[BaseException] = field(default_factory=list)

    last_eval: float = 0.0

    def on_batch(self, batch: Any) -> None:
        with self.lock:
            try:
                self.detector.ingest(batch)
                now = self.clock.now()
                # Every batch is ingested, evaluation runs at most every 50 ms: it costs more
                # than a small batch and 50 ms is nothing against a 2 s detection budget.
                if now - self.last_eval < 0.05:
                    return
                self.last_eval = now
                new = self.detector.evaluate(now, self.clock.at())
            except BaseException as e:  # noqa: BLE001 - surfaced by the test, not swallowed
                self.errors.append(e)
                raise
            if new:
                self.found.extend(new)
                self.lock.notify_all()

    def wait_for(self, server: str, detector: str, timeout_s: float = 20.0,
                 actionable: bool | None = None) -> Detection:
        deadline = time.monotonic() + timeout_s
        with self.lock:
            while True:
                hits = [d for d in self.found if d.server == server and d.detector == detector
                        and (actionable is None or d.actionable is actionable)]
                if hits:
                    return hits[0]
                left = deadline - time.monotonic()
                if left <= 0:
                    got = [(d.server, d.detector, d.kind) for d in self.found]
                    raise AssertionError(f"no {detector} detection for {server}; got {got}")
                self.lock.wait(left)

    def of(self, server: str) -> list[Detection]:
        with self.lock:
            return [d for d in self.found if d.server == server]


@dataclass
class Rig:
    lab: Lab
    span: LabSpan
    pipe: Pipeline
    capture: SpanCapture
    ring: EvidenceRing

    def sid(self, i: int) -> str:
        return f"s{i}"

    def extra_ip(self, host: int) -> str:
        return f"198.19.{LAB_ID}.{host}"

    def run(self, ns: str, *args: str, timeout: float = 30.0) -> tuple[float, dict[str, Any]]:
        """Run one bounded attack; (monotonic time of its first packet, its summary)."""
        proc = self.lab.spawn(ns, [sys.executable, "-m", "tests.lab.attacks", *args],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = proc.communicate(timeout=timeout)
        events = [json.loads(ln) for ln in out.splitlines() if ln.startswith("{")]
        assert proc.returncode == 0 and events, f"attack {args[0]} failed: {err}"
        c = self.capture.counters
        print(f"\n{args[0]}: {events[-1]}; capture packets={c.packets} drops={c.drops}")
        start = next(e["now"] for e in events if e.get("event") == "start")
        return float(start), events[-1]

    def evidence(self, d: Detection, tmp: Path) -> list[Any]:
        import scapy.layers.inet  # noqa: F401 - registers Ethernet/IP for the reader
        import scapy.layers.l2  # noqa: F401
        from scapy.utils import rdpcap

        path, n = write_evidence(tmp, d, self.ring)
        assert path.exists() and n > 0
        return list(rdpcap(str(path)))


def _wait_ready(proc: subprocess.Popen[str], what: str) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("{") and json.loads(line).get("event") == "ready", (
        f"{what} did not start: {line!r}")


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    cleanup_stale(LAB_ID)
    lab = Lab(LAB_ID, N_SERVERS).start()
    span: LabSpan | None = None
    capture: SpanCapture | None = None
    try:
        addrs = [f"198.19.{LAB_ID}.{h}" for h in EXTRA]
        subprocess.run(["ip", "-n", lab.upstream_ns, "-batch", "-"], check=True, text=True,
                       input="".join(f"addr add {a}/32 dev eth0\n" for a in addrs))
        listeners = lab.spawn(lab.upstream_ns, [
            sys.executable, "-m", "tests.lab.attacks", "listeners", "--addrs", *addrs,
            "--bulk-addr", lab.upstream_ip, "--bulk-rate-bps", "8000000",
            "--bulk-duration", "4", "--lifetime", "240"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _wait_ready(listeners, "upstream listeners")
        proxy = lab.spawn(lab.server_ns(PROXY_SERVER), [
            sys.executable, "-m", "tests.lab.attacks", "proxy-server", "--lifetime", "240"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _wait_ready(proxy, "proxy server")
        span = LabSpan(lab, range(1, N_SERVERS + 1)).start()
        specs = [
            ServerSpec(f"s{i}", frozenset({span.port_key(i)}), frozenset({lab.server_ip(i)}),
                       declared_ports=frozenset({22}) if i == PROXY_SERVER else None)
            for i in range(1, N_SERVERS + 1)
        ]
        pipe = Pipeline(AbuseDetector(specs))
        ring = EvidenceRing(per_port=2048)
        # 16 mirror interfaces: 8 MiB rings each (64 x 128 KiB, 2.5 s at 40 ms retire).
        capture = SpanCapture(span.sources(), pipe.on_batch, pipe.clock, netns=lab.switch_ns,
                              evidence=ring, ring_block_size=1 << 17, ring_blocks=64,
                              ring_timeout_ms=40)
        capture.start()
        yield Rig(lab, span, pipe, capture, ring)
        assert not pipe.errors
        c = capture.counters
        print(f"\nSPAN capture: {c.packets} packets, {c.drops} kernel drops, "
              f"{c.exceptions} exceptions, decode errors {c.decode_errors}; "
              f"latency attack->detection (s): {json.dumps(LATENCIES)}")
    finally:
        if capture is not None:
            capture.stop()
        if span is not None:
            span.stop()
        lab.stop()


def _latency(name: str, start: float, d: Detection) -> float:
    lat = d.first_seen - start
    LATENCIES[name] = round(lat, 3)
    return lat


def test_udp_flood_is_detected_on_the_flooder(rig: Rig, tmp_path: Path) -> None:
    start, summary = rig.run(rig.lab.server_ns(UDP_FLOODER), "udp-flood", "--dst",
                             rig.lab.server_ip(VICTIM), "--pps", "20000", "--duration", "2",
                             "--size", "200")
    d = rig.pipe.wait_for(rig.sid(UDP_FLOODER), FLOOD, actionable=True)
    assert d.kind in ("udp", "pps") and d.severity == "critical"
    assert _latency("udp_flood", start, d) >= 0
    pkts = rig.evidence(d, tmp_path)
    assert any(p.haslayer("UDP") and p["IP"].src == rig.lab.server_ip(UDP_FLOODER)
               and p["IP"].dst == rig.lab.server_ip(VICTIM) for p in pkts)


def test_syn_flood_is_detected_on_the_flooder(rig: Rig, tmp_path: Path) -> None:
    start, _ = rig.run(rig.lab.server_ns(SYN_FLOODER), "syn-flood", "--dst",
                       rig.lab.server_ip(VICTIM), "--pps", "5000", "--duration", "2")
    d = rig.pipe.wait_for(rig.sid(SYN_FLOODER), FLOOD, actionable=True)
    assert d.kind == "syn"
    assert _latency("syn_flood", start, d) >= 0
    pkts = rig.evidence(d, tmp_path)
    assert any(p.haslayer("TCP") and p["TCP"].flags == "S"
               and p["IP"].src == rig.lab.server_ip(SYN_FLOODER) for p in pkts)


def test_spam_fanout_is_detected(rig: Rig, tmp_path: Path) -> None:
    dsts = [rig.extra_ip(h) for h in EXTRA]
    start, summary = rig.run(rig.lab.server_ns(SPAMMER), "spam", "--dsts", *dsts)
    assert summary["mails"] >= 30, summary  # real SMTP dialogues completed
    d = rig.pipe.wait_for(rig.sid(SPAMMER), SPAM, actionable=True)
    assert d.counts["distinct_destinations"] >= 20
    assert _latency("spam", start, d) >= 0
    pkts = rig.evidence(d, tmp_path)
    assert len({p["IP"].dst for p in pkts if p.haslayer("TCP") and p["TCP"].dport == 25}) >= 20


def test_port_scan_is_detected(rig: Rig, tmp_path: Path) -> None:
    start, _ = rig.run(rig.lab.server_ns(SCANNER), "scan", "--dst", rig.lab.upstream_ip,
                       "--ports", "600", "--pps", "600")
    d = rig.pipe.wait_for(rig.sid(SCANNER), SCAN, actionable=True)
    assert d.kind == "ports" and d.subjects == (rig.lab.upstream_ip,)
    assert _latency("scan", start, d) >= 0
    pkts = rig.evidence(d, tmp_path)
    assert len({p["TCP"].dport for p in pkts if p.haslayer("TCP")
                and p["IP"].src == rig.lab.server_ip(SCANNER)}) >= 50


def test_stolen_source_address_is_detected(rig: Rig, tmp_path: Path) -> None:
    stolen = rig.lab.server_ip(VICTIM)
    start, _ = rig.run(rig.lab.server_ns(SPOOFER), "spoof", "--src", stolen, "--dst",
                       rig.lab.upstream_ip, "--pps", "200", "--duration", "1")
    d = rig.pipe.wait_for(rig.sid(SPOOFER), SPOOF, actionable=True)
    assert d.kind == "stolen" and d.subjects == (f"{stolen}={rig.sid(VICTIM)}",)
    assert _latency("spoof", start, d) >= 0
    pkts = rig.evidence(d, tmp_path)
    assert any(p.haslayer("IP") and p["IP"].src == stolen for p in pkts)


def test_proxy_pattern_is_reported_notify_only(rig: Rig, tmp_path: Path) -> None:
    targets = [rig.extra_ip(h) for h in EXTRA]
    start, summary = rig.run(rig.lab.upstream_ns, "proxy-clients", "--proxy",
                             rig.lab.server_ip(PROXY_SERVER), "--targets", *targets,
                             "--connections", "40")
    assert summary["relayed"] >= 30, summary  # the proxy really relayed
    d = rig.pipe.wait_for(rig.sid(PROXY_SERVER), PROXY)
    assert not d.actionable and d.confidence >= 0.5
    assert _latency("proxy", start, d) >= 0
    ports = rig.pipe.wait_for(rig.sid(PROXY_SERVER), UNDECLARED_PORT)
    assert "in/tcp/3128" in ports.subjects and not ports.actionable
    pkts = rig.evidence(d, tmp_path)
    assert any(p.haslayer("TCP") and p["TCP"].dport == 3128 for p in pkts)
    assert any(p.haslayer("TCP") and p["TCP"].dport == 80
               and p["IP"].src == rig.lab.server_ip(PROXY_SERVER) for p in pkts)


def test_heavy_download_inside_the_cap_is_not_abuse(rig: Rig) -> None:
    _, summary = rig.run(rig.lab.server_ns(HEAVY), "download", "--dst", rig.lab.upstream_ip)
    assert summary["rate_bps"] >= 6_000_000, summary
    time.sleep(0.5)
    assert rig.pipe.of(rig.sid(HEAVY)) == []


def test_flooded_victim_is_never_blamed(rig: Rig) -> None:
    # Runs last: by now the victim has taken the UDP flood, the SYN flood (answering each SYN
    # with a RST) and the spoofer's use of its address.
    assert rig.pipe.of(rig.sid(VICTIM)) == []
    # Stopped here (the fixture's stop is then a no-op) so the kernel's final statistics are in.
    rig.capture.stop()
    c = rig.capture.counters
    assert c.packets > 50_000 and c.exceptions == 0
    # Every frame the kernel took was read or counted as dropped. The only slack is at the edges:
    # a frame that entered the ring before the statistics were zeroed at start (read, not in
    # the kernel's count) or after the last read at stop (counted, never read). How many a
    # loaded machine drops is a throughput figure (bench/capture.py, the RackWardenCaptureDrops
    # alert), not a pass mark: the detections above held regardless.
    assert abs(c.kernel_packets - (c.packets + c.drops)) <= 16, c
