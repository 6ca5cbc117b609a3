"""sFlow path end to end: real abuse traffic in the lab, sampled by a lab agent, detected."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from rackwarden.agent.clock import SystemClock
from rackwarden.drivers.sflow.collector import SflowCollector
from rackwarden.drivers.sflow.decoder import Sample, decode_datagram
from rackwarden.drivers.sflow.rawring import RawRing
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
from rackwarden.policies.detect_vec import VectorDetector
from rackwarden.policies.flowcols import NONE, SampleColumns
from rackwarden.policies.flowfacts import CounterSample, FlowSample

from tests.lab.netlab import Lab, cleanup_stale
from tests.lab.sflow_exporter import SFLOW_PORT, SflowExporterHandle, start_sflow_exporter

pytestmark = pytest.mark.lab

# 61..65 are this file's; another id lets a second run go beside one already going.
LAB_ID = int(os.environ.get("RW_SFLOW_LAB_ID", "61"))
assert 61 <= LAB_ID <= 65, LAB_ID
N_SERVERS = 8
UDP_FLOODER, VICTIM, SYN_FLOODER, SPAMMER, SCANNER, SPOOFER, PROXY_SERVER, HEAVY = range(1, 9)
# 1-in-16 on every port. Rate detectors scale each sample by 16; the distinct-count detectors
# (spam, scan, proxy) do not, so each of those attacks is sized to put about twice its
# threshold of distinct keys into the samples (the arithmetic is beside each test).
SAMPLING_RATE = 16
# The proxy's evidence is one SYN per client connection and its threshold 20 distinct
# clients: at 1-in-16 that takes ~640 connections in the window, more than the lab's asyncio
# proxy serves in a few seconds. Its port samples 1-in-4, as a switch can per interface.
PROXY_SAMPLING_RATE = 4
# Random skips of N +- N/2: every Nth packet would alias with the scan's SYN/RST alternation,
# and with the sFlow reference agent's 1..2N-1 the detector's drift check held 6 of 10 lab
# floods non-actionable for 8 s (see tests/lab/sflow_exporter.SAMPLING_MODES).
SAMPLING_MODE = "jitter"
EXTRA = range(100, 220)  # upstream addresses with SMTP and HTTP listeners
COUNTER_INTERVAL_S = 1.0
# Attack start -> detection, printed at the end: a figure (bench/latency.py measures it), not a
# pass mark; a test only checks the detection came after its attack began.
LATENCIES: dict[str, float] = {}
EMITTED: dict[str, float] = {}


@dataclass
class SflowPipeline:
    """What the agent wires for sFlow: UDP collector -> detector, on an asyncio loop thread."""

    detector: AbuseDetector
    allowed_agent: str
    bind: str
    clock: SystemClock = field(default_factory=SystemClock)
    found: list[Detection] = field(default_factory=list)
    lock: threading.Condition = field(default_factory=threading.Condition)
    errors: list[BaseException] = field(default_factory=list)
    counters: dict[int, deque[CounterSample]] = field(default_factory=dict)
    flow_samples: Counter[tuple[str, int | None, int | None]] = field(default_factory=Counter)
    last_eval: float = 0.0
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    collector: SflowCollector | None = None
    thread: threading.Thread | None = None
    # With a ring, the daemon's default path: batches decoded into columns on the receive
    # thread, fed to a VectorDetector whose evidence the ring re-decodes.
    ring: RawRing | None = None

    def start(self) -> None:
        columns = self.ring is not None
        self.collector = SflowCollector(allowed_agents=[self.allowed_agent],
                                        on_samples=self.on_samples, clock=self.clock,
                                        bind=self.bind, port=SFLOW_PORT,
                                        on_columns=self.on_columns if columns else None,
                                        raw_ring=self.ring)
        self.thread = threading.Thread(target=self.loop.run_forever, name="sflow-loop",
                                       daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.collector.start(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self._tick)

    def stop(self) -> None:
        if self.thread is None:
            return
        if self.collector is not None:
            self.loop.call_soon_threadsafe(self.collector.stop)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.thread = None
        self.loop.close()

    def on_samples(self, samples: Sequence[Sample]) -> None:
        flows = [s for s in samples if type(s) is FlowSample]
        with self.lock:
            for s in samples:
                if type(s) is CounterSample:
                    self.counters.setdefault(s.if_index, deque(maxlen=256)).append(s)
            for f in flows:
                self.flow_samples[(f.agent, f.input_ifindex, f.output_ifindex)] += 1
        self.detector.ingest(flows)
        self._after_ingest()

    def on_columns(self, cols: SampleColumns) -> None:
        names = cols.agent_names
        with self.lock:
            for a, i, o in zip(cols.agent.tolist(), cols.input_ifindex.tolist(),
                               cols.output_ifindex.tolist(), strict=True):
                self.flow_samples[(names[a], None if i == NONE else i,
                                   None if o == NONE else o)] += 1
        assert isinstance(self.detector, VectorDetector)
        self.detector.ingest_columns(cols)
        self._after_ingest()

    def _after_ingest(self) -> None:
        # Evaluation runs at most every 50 ms (a datagram carries ~7 samples and comes every
        # few ms under a flood); the tick below covers quiet periods.
        if self.clock.now() - self.last_eval >= 0.05:
            self._evaluate()

    def _evaluate(self) -> None:
        try:
            now = self.clock.now()
            self.last_eval = now
            new = self.detector.evaluate(now, self.clock.at())
        except BaseException as e:  # noqa: BLE001 - surfaced by the test, not swallowed
            self.errors.append(e)
            raise
        if new:
            with self.lock:
                self.found.extend(new)
                self.lock.notify_all()

    def _tick(self) -> None:
        self._evaluate()
        self.loop.call_later(0.1, self._tick)

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
                    got = [(d.server, d.detector, d.kind, d.actionable) for d in self.found]
                    raise AssertionError(f"no {detector} detection for {server}; got {got}")
                self.lock.wait(left)

    def of(self, server: str) -> list[Detection]:
        with self.lock:
            return [d for d in self.found if d.server == server]

    def counter_samples(self, if_index: int) -> list[CounterSample]:
        with self.lock:
            return list(self.counters.get(if_index, ()))


@dataclass
class Rig:
    lab: Lab
    pipe: SflowPipeline
    exporter: SflowExporterHandle
    tshark: subprocess.Popen[str]
    pcap: Path
    ifindex: dict[int, int]
    done: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # (ns, kind) -> summary

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
        c = self.exporter.counters
        print(f"\n{args[0]}: {events[-1]}; exporter packets={c.packets} samples={c.samples} "
              f"datagrams={c.datagrams} drops={c.drops}")
        start = next(e["now"] for e in events if e.get("event") == "start")
        self.done[(ns, args[0])] = events[-1]
        return float(start), events[-1]


def _wait_ready(proc: subprocess.Popen[str], what: str) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("{") and json.loads(line).get("event") == "ready", (
        f"{what} did not start: {line!r}")


def _start_tshark(lab: Lab, pcap: Path) -> subprocess.Popen[str]:
    exe = shutil.which("tshark")
    assert exe is not None, "tshark is a Debian dependency (Makefile DEB_PACKAGES)"
    # Classic pcap so the test can read the datagrams back with a few lines of struct.
    proc = subprocess.Popen([exe, "-i", lab.mgmt_if_root, "-f", f"udp port {SFLOW_PORT}",
                             "-F", "pcap", "-w", str(pcap)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stderr is not None
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if "Capturing on" in line:
            return proc
        if not line and proc.poll() is not None:
            break
    _stop_pid(proc, signal.SIGKILL)
    raise AssertionError("tshark did not start capturing on the mgmt veth")


def _stop_pid(proc: subprocess.Popen[str], sig: int = signal.SIGINT) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, sig)  # SIGINT: dumpcap finishes the file
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    if proc.stderr is not None:
        proc.stderr.close()


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    cleanup_stale(LAB_ID)
    lab = Lab(LAB_ID, N_SERVERS).start()
    pipe: SflowPipeline | None = None
    exporter: SflowExporterHandle | None = None
    tshark: subprocess.Popen[str] | None = None
    try:
        addrs = [f"198.19.{LAB_ID}.{h}" for h in EXTRA]
        subprocess.run(["ip", "-n", lab.upstream_ns, "-batch", "-"], check=True, text=True,
                       input="".join(f"addr add {a}/32 dev eth0\n" for a in addrs))
        # veth passes TCP as 64 KiB GSO trains, which a switch port never sees; one segment
        # per skb makes the senders put MTU frames on the lab's wire, so 1-in-N is per packet.
        for ns in [lab.upstream_ns, *(lab.server_ns(i) for i in range(1, N_SERVERS + 1))]:
            subprocess.run(["ip", "-n", ns, "link", "set", "dev", "eth0", "gso_max_segs", "1"],
                           check=True)
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

        # The switch's real ifIndexes, read from its namespace: what ServerSpec.ports names.
        ifindex = {i: lab.if_index(lab.port_name(i)) for i in range(1, N_SERVERS + 1)}
        specs = [
            ServerSpec(f"s{i}", frozenset({(lab.mgmt_addr, ifindex[i])}),
                       frozenset({lab.server_ip(i)}),
                       declared_ports=frozenset({22}) if i == PROXY_SERVER else None)
            for i in range(1, N_SERVERS + 1)
        ]
        ring = RawRing()
        pipe = SflowPipeline(VectorDetector(specs, resolve=ring.resolve),
                             allowed_agent=lab.mgmt_addr, bind=lab.noc_addr, ring=ring)
        pipe.start()
        pcap = tmp_path_factory.mktemp("sflow") / "mgmt.pcap"
        tshark = _start_tshark(lab, pcap)
        exporter = start_sflow_exporter(
            lab, (lab.noc_addr, SFLOW_PORT),
            sampling_rate={0: SAMPLING_RATE, PROXY_SERVER: PROXY_SAMPLING_RATE},
            ports=range(1, N_SERVERS + 1), counter_interval_s=COUNTER_INTERVAL_S,
            mode=SAMPLING_MODE)
        assert exporter.ifindex == {lab.port_name(i): x for i, x in ifindex.items()}
        # The path is up when every port's counters came through the collector.
        deadline = time.monotonic() + 5
        while not all(pipe.counter_samples(x) for x in ifindex.values()):
            assert time.monotonic() < deadline, "no counter samples reached the collector"
            time.sleep(0.05)
        yield Rig(lab, pipe, exporter, tshark, pcap, ifindex)
        assert not pipe.errors
        print(f"\nsFlow path latency attack->detection (s) at 1-in-{SAMPLING_RATE} "
              f"(proxy port 1-in-{PROXY_SAMPLING_RATE}): first_seen {json.dumps(LATENCIES)}; "
              f"report asserted on emitted {json.dumps(EMITTED)}")
    finally:
        if exporter is not None and exporter.running:
            exporter.stop()
        if tshark is not None:
            _stop_pid(tshark)
        if pipe is not None:
            pipe.stop()
        lab.stop()


def _latency(name: str, start: float, d: Detection) -> float:
    """Attack start -> first_seen; also notes when this (actionable) report was emitted."""
    lat = float(d.first_seen) - start
    LATENCIES[name] = round(lat, 3)
    EMITTED[name] = round(float(d.last_seen) - start, 3)
    return lat


def _sflow_evidence(d: Detection) -> list[FlowSample]:
    ev = list(d.evidence)
    assert ev and all(s.source == "sflow" for s in ev)
    return ev


def test_udp_flood_is_detected_on_the_flooder(rig: Rig) -> None:
    start, summary = rig.run(rig.lab.server_ns(UDP_FLOODER), "udp-flood", "--dst",
                             rig.lab.server_ip(VICTIM), "--pps", "20000", "--duration", "2",
                             "--size", "200")
    d = rig.pipe.wait_for(rig.sid(UDP_FLOODER), FLOOD, actionable=True)
    assert d.kind in ("udp", "pps") and d.severity == "critical"
    assert d.sampling_rate == SAMPLING_RATE
    assert _latency("udp_flood", start, d) >= 0
    # The estimate is the sampled count scaled by 16: within a factor of two of what was sent.
    assert 5_000 <= d.rates["udp_pps"] <= 2 * float(summary["pps"]), d.rates
    ev = _sflow_evidence(d)
    flood = [s for s in ev if s.protocol == 17 and s.src_ip == rig.lab.server_ip(UDP_FLOODER)]
    assert flood and all(s.input_ifindex == rig.ifindex[UDP_FLOODER]
                         and s.dst_ip == rig.lab.server_ip(VICTIM)
                         # the 200-byte frame plus the FCS a switch counts
                         and s.frame_length == 200 + 4 for s in flood)


def test_syn_flood_is_detected_on_the_flooder(rig: Rig) -> None:
    start, _ = rig.run(rig.lab.server_ns(SYN_FLOODER), "syn-flood", "--dst",
                       rig.lab.server_ip(VICTIM), "--pps", "5000", "--duration", "2")
    d = rig.pipe.wait_for(rig.sid(SYN_FLOODER), FLOOD, actionable=True)
    assert d.kind == "syn"
    assert _latency("syn_flood", start, d) >= 0
    assert any(s.protocol == 6 and s.tcp_flags == 0x02
               and s.src_ip == rig.lab.server_ip(SYN_FLOODER)
               and s.input_ifindex == rig.ifindex[SYN_FLOODER] for s in _sflow_evidence(d))


def test_spam_fanout_is_detected(rig: Rig) -> None:
    # 120 destinations, ~10 client packets to port 25 each: at 1-in-16 a destination shows up
    # with p = 1 - (15/16)^10 = 0.48, so ~57 distinct are expected against a threshold of 20.
    dsts = [rig.extra_ip(h) for h in EXTRA]
    start, summary = rig.run(rig.lab.server_ns(SPAMMER), "spam", "--dsts", *dsts)
    assert summary["mails"] >= 100, summary  # real SMTP dialogues completed
    d = rig.pipe.wait_for(rig.sid(SPAMMER), SPAM, actionable=True)
    assert d.counts["distinct_destinations"] >= 20
    assert _latency("spam", start, d) >= 0
    ev = _sflow_evidence(d)
    assert len({s.dst_ip for s in ev if s.dst_port == 25}) >= 20


def test_port_scan_is_detected(rig: Rig) -> None:
    # 3000 SYNs to distinct ports: ~187 sampled at 1-in-16 against a threshold of 100 ports.
    start, _ = rig.run(rig.lab.server_ns(SCANNER), "scan", "--dst", rig.lab.upstream_ip,
                       "--ports", "3000", "--pps", "2000")
    d = rig.pipe.wait_for(rig.sid(SCANNER), SCAN, actionable=True)
    assert d.kind == "ports" and d.subjects == (rig.lab.upstream_ip,)
    assert _latency("scan", start, d) >= 0
    ev = _sflow_evidence(d)
    assert len({s.dst_port for s in ev if s.src_ip == rig.lab.server_ip(SCANNER)}) >= 20


def test_stolen_source_address_is_detected(rig: Rig) -> None:
    # 400 spoofed packets: ~25 sampled at 1-in-16; the detector wants 5.
    stolen = rig.lab.server_ip(VICTIM)
    start, _ = rig.run(rig.lab.server_ns(SPOOFER), "spoof", "--src", stolen, "--dst",
                       rig.lab.upstream_ip, "--pps", "400", "--duration", "1")
    d = rig.pipe.wait_for(rig.sid(SPOOFER), SPOOF, actionable=True)
    assert d.kind == "stolen" and d.subjects == (f"{stolen}={rig.sid(VICTIM)}",)
    assert _latency("spoof", start, d) >= 0
    # Pinned by the port it entered, whatever address it carries.
    assert any(s.src_ip == stolen and s.input_ifindex == rig.ifindex[SPOOFER]
               for s in _sflow_evidence(d))


def test_proxy_pattern_is_reported_notify_only(rig: Rig) -> None:
    # 160 client connections: ~40 client SYNs sampled at 1-in-4 (threshold 20 distinct), and
    # ~40 relayed SYNs over 120 targets (threshold 10 distinct).
    targets = [rig.extra_ip(h) for h in EXTRA]
    start, summary = rig.run(rig.lab.upstream_ns, "proxy-clients", "--proxy",
                             rig.lab.server_ip(PROXY_SERVER), "--targets", *targets,
                             "--connections", "160")
    assert summary["relayed"] >= 120, summary  # the proxy really relayed
    d = rig.pipe.wait_for(rig.sid(PROXY_SERVER), PROXY)
    assert not d.actionable and d.confidence >= 0.5
    assert d.sampling_rate == PROXY_SAMPLING_RATE
    assert _latency("proxy", start, d) >= 0
    ports = rig.pipe.wait_for(rig.sid(PROXY_SERVER), UNDECLARED_PORT)
    assert "in/tcp/3128" in ports.subjects and not ports.actionable
    ev = _sflow_evidence(d)
    me = rig.ifindex[PROXY_SERVER]
    assert any(s.dst_port == 3128 and s.output_ifindex == me for s in ev)
    assert any(s.dst_port == 80 and s.src_ip == rig.lab.server_ip(PROXY_SERVER)
               and s.input_ifindex == me for s in ev)


def test_heavy_download_inside_the_cap_is_not_abuse(rig: Rig) -> None:
    _, summary = rig.run(rig.lab.server_ns(HEAVY), "download", "--dst", rig.lab.upstream_ip)
    assert summary["rate_bps"] >= 6_000_000, summary
    time.sleep(0.5)
    assert rig.pipe.of(rig.sid(HEAVY)) == []
    # It was seen, and seen big: the port's samples estimate the download's bytes.
    with rig.pipe.lock:
        inbound = rig.pipe.flow_samples[(rig.lab.mgmt_addr, None, rig.ifindex[HEAVY])]
    assert inbound * SAMPLING_RATE >= summary["bytes"] / 1514 / 2, inbound


def test_flooded_victim_is_never_blamed(rig: Rig) -> None:
    # Runs after the floods and the spoofing: the victim took the UDP flood, the SYN flood
    # (answering each SYN with a RST) and the spoofer's use of its address.
    assert rig.pipe.of(rig.sid(VICTIM)) == []
    with rig.pipe.lock:
        seen_in = rig.pipe.flow_samples[(rig.lab.mgmt_addr, None, rig.ifindex[VICTIM])]
        seen_out = rig.pipe.flow_samples[(rig.lab.mgmt_addr, rig.ifindex[VICTIM], None)]
    assert seen_in * SAMPLING_RATE > 40_000 and seen_out > 0  # it was flooded, and answered


# ---- the same datagrams through tshark's decoder ---------------------------------------------

def _pcap_udp_payloads(path: Path) -> list[tuple[str, bytes]]:
    """(IPv4 source, UDP payload) of every frame of a classic Ethernet pcap."""
    data = path.read_bytes()
    magic = struct.unpack_from("<I", data, 0)[0]
    assert magic in (0xA1B2C3D4, 0xA1B23C4D), hex(magic)  # little-endian, us or ns
    assert struct.unpack_from("<I", data, 20)[0] == 1  # LINKTYPE_ETHERNET
    out = []
    off = 24
    while off + 16 <= len(data):
        incl = struct.unpack_from("<I", data, off + 8)[0]
        frame = data[off + 16:off + 16 + incl]
        off += 16 + incl
        assert struct.unpack_from("!H", frame, 12)[0] == 0x0800
        ihl = (frame[14] & 0x0F) * 4
        src = ".".join(str(b) for b in frame[26:30])
        out.append((src, frame[14 + ihl + 8:]))
    return out


def _pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # tshark repeats keys inside one object (two samples may share a sequence number across
    # data sources); keep every value so nothing is silently lost.
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            out[k] = (out[k] if isinstance(out[k], list) else [out[k]]) + [v]
        else:
            out[k] = v
    return out


def _one(v: Any) -> Any:
    assert not isinstance(v, list), v
    return v


def _int(v: Any) -> int:
    s = _one(v)
    return int(s, 16) if s.startswith("0x") else int(s)


def _tshark_samples(layer: dict[str, Any]) -> dict[tuple[str, int, int], dict[str, Any]]:
    """tshark's samples of one datagram by (kind, sample sequence, source index).

    Matched by key, not order: _pairs_hook gathers samples that share a name ("Flow sample,
    seq 7" from two ports) at the first one's place.
    """
    out: dict[tuple[str, int, int], dict[str, Any]] = {}
    for k, v in layer.items():
        if "sample, seq" not in k:
            continue
        for item in v if isinstance(v, list) else [v]:
            if k.startswith("Flow sample"):
                key = ("flow", _int(item["sflow.flow_sample.sequence_number"]),
                       _int(item["sflow.flow_sample.index"]))
            else:
                assert k.startswith("Counters sample"), k
                key = ("counters", _int(item["sflow.counters_sample.sequence_number"]),
                       _int(item["sflow.counters_sample.source_id_index"]))
            assert key not in out, key
            out[key] = item
    return out


def _check_flow(ts: dict[str, Any], s: FlowSample) -> None:
    assert (_int(ts["sflow.flow_sample.sequence_number"]),
            _int(ts["sflow.flow_sample.source_id_class"]), _int(ts["sflow.flow_sample.index"]),
            _int(ts["sflow.flow_sample.sampling_rate"]),
            _int(ts["sflow.flow_sample.sample_pool"]),
            _int(ts["sflow.flow_sample.dropped_packets"]),
            _int(ts["sflow.flow_sample.input_interface"])) == (
        s.sample_sequence, s.source_id_type, s.source_id_index, s.sampling_rate,
        s.sample_pool, s.drops, s.input_ifindex or 0)
    out = ts["sflow.flow_sample.output_interface_tree"]
    assert (_int(out["sflow.flow_sample.output_interface_format"]),
            _int(out["sflow.flow_sample.output_interface_value"])) == (
        s.output_format, s.output_ifindex or 0)
    raw = ts["Raw packet header"]
    assert (_int(raw["sflow_245.header_protocol"]), _int(raw["sflow_245.header.frame_length"]),
            _int(raw["sflow_245.header.payload_stripped"]),
            _int(raw["sflow_245.header.sampled_header_length"])) == (
        s.header_protocol, s.frame_length, s.stripped, len(s.header))
    shown = bytes.fromhex(_one(raw["sflow_245.header"]).replace(":", ""))
    assert shown == s.header + b"\0" * (-len(s.header) % 4)
    tree = raw["sflow_245.header_tree"]
    eth = tree["eth"]
    assert (_one(eth["eth.src"]), _one(eth["eth.dst"]), _int(eth["eth.type"])) == (
        s.src_mac, s.dst_mac, s.ethertype)
    if s.ip_version != 4:
        assert s.ethertype != 0x0800
        return
    ip = tree["ip"]
    assert (_one(ip["ip.src"]), _one(ip["ip.dst"]), _int(ip["ip.proto"]),
            _int(ip["ip.len"])) == (s.src_ip, s.dst_ip, s.protocol, s.ip_total_length)
    if s.protocol == 6:
        tcp = tree["tcp"]
        assert (_int(tcp["tcp.srcport"]), _int(tcp["tcp.dstport"]),
                _int(tcp["tcp.flags"]) & 0xFF) == (s.src_port, s.dst_port, s.tcp_flags)
    elif s.protocol == 17:
        udp = tree["udp"]
        assert (_int(udp["udp.srcport"]), _int(udp["udp.dstport"])) == (s.src_port, s.dst_port)
    elif s.protocol == 1:
        icmp = tree["icmp"]
        assert (_int(icmp["icmp.type"]), _int(icmp["icmp.code"])) == (s.icmp_type, s.icmp_code)


COUNTER_FIELDS = {
    "sflow_245.ifindex": "if_index", "sflow_245.iftype": "if_type",
    "sflow_245.ifspeed": "if_speed_bps", "sflow_245.ifdirection": "if_direction",
    "sflow_245.ifinoct": "in_octets", "sflow_245.ifinpkt": "in_ucast_pkts",
    "sflow_245.ifinmcast": "in_multicast_pkts", "sflow_245.ifinbcast": "in_broadcast_pkts",
    "sflow_245.ifindisc": "in_discards", "sflow_245.ifinerr": "in_errors",
    "sflow_245.ifinunk": "in_unknown_protos", "sflow_245.ifoutoct": "out_octets",
    "sflow_245.ifoutpkt": "out_ucast_pkts", "sflow_245.ifoutmcast": "out_multicast_pkts",
    "sflow_245.ifoutbcast": "out_broadcast_pkts", "sflow_245.ifoutdisc": "out_discards",
    "sflow_245.ifouterr": "out_errors", "sflow_245.ifpromisc": "promiscuous_mode",
}


def _check_counters(ts: dict[str, Any], c: CounterSample) -> None:
    assert (_int(ts["sflow.counters_sample.sequence_number"]),
            _int(ts["sflow.counters_sample.source_id_type"]),
            _int(ts["sflow.counters_sample.source_id_index"])) == (
        c.sample_sequence, c.source_id_type, c.source_id_index)
    g = ts["Generic interface counters"]
    for ts_name, ours in COUNTER_FIELDS.items():
        assert _int(g[ts_name]) == getattr(c, ours), ts_name
    assert (_int(g["sflow_245.ifadmin_status"]), _int(g["sflow_245.ifoper_status"])) == (
        int(c.admin_up), int(c.oper_up))


def test_wire_datagrams_agree_with_tshark_and_the_bookkeeping_adds_up(rig: Rig) -> None:
    # One counter tick after the last traffic, so the last counter samples can be held to
    # the kernel's counters below.
    time.sleep(COUNTER_INTERVAL_S + 0.3)
    final = rig.exporter.stop()
    time.sleep(0.3)  # the last datagrams cross the veth and the collector's loop
    _stop_pid(rig.tshark)
    collector = rig.pipe.collector
    assert collector is not None
    wire = _pcap_udp_payloads(rig.pcap)
    lab = rig.lab
    # Every datagram the agent sent crossed the mgmt veth and was accepted and decoded.
    assert final.send_errors == 0 and final.datagrams == len(wire) == collector.datagrams_total
    assert final.oversize == 0 and final.drops <= final.packets * 0.01, final
    assert {src for src, _ in wire} == {lab.mgmt_addr}
    assert collector.rejected_total == 0 and collector.decode_errors == {}
    assert collector.sequence.lost.get((lab.mgmt_addr, 0), 0) == 0
    assert sum(collector.sample_sequence.lost.values()) == 0
    assert collector.flow_samples_total == final.samples
    assert collector.counter_samples_total == final.counter_samples

    at = rig.pipe.clock.at()
    ours = [decode_datagram(d, 0.0, at) for _, d in wire]
    assert all(r.error is None and r.header is not None for r in ours)
    assert {r.header.agent for r in ours if r.header} == {lab.mgmt_addr}
    assert [r.header.sequence for r in ours if r.header] == list(range(1, len(ours) + 1))

    # Per data source: sequence numbers without holes and pool / samples near the 1-in-N.
    flows = [s for r in ours for s in r.samples if type(s) is FlowSample]
    by_src: dict[int, list[FlowSample]] = {}
    for s in flows:
        assert s.source_id_index is not None
        by_src.setdefault(s.source_id_index, []).append(s)
    rates = {lab.port_name(i): rig.exporter.rates[lab.port_name(i)] for i in rig.ifindex}
    for i, x in rig.ifindex.items():
        got = by_src.get(x, [])
        assert [s.sample_sequence for s in got] == list(range(1, len(got) + 1))
        assert all(s.input_ifindex == x or s.output_ifindex == x for s in got)
        if len(got) >= 200:
            eff = (got[-1].sample_pool or 0) / len(got)
            n = rates[lab.port_name(i)]
            assert 0.8 * n <= eff <= 1.25 * n, (i, eff)
    # Every packet the flood put on the wire passed the exporter (the sender is time-bounded:
    # under load it sends a little under pps x duration, so compare with what it reports).
    flood = rig.done[(lab.server_ns(UDP_FLOODER), "udp-flood")]
    assert final.ports[lab.port_name(UDP_FLOODER)]["pool"] >= flood["sent"] - flood["errors"] > 30_000

    # Counters: the last sample of each port against the kernel's counters now (quiet since).
    for i, x in rig.ifindex.items():
        c = [s for r in ours for s in r.samples if type(s) is CounterSample
             and s.if_index == x][-1]
        now = lab.port_counters(lab.port_name(i))
        assert c.if_speed_bps == 10_000_000_000 and c.oper_up and c.admin_up
        assert 0 <= now.rx_bytes - c.in_octets <= 4096, (i, now, c)
        assert 0 <= now.tx_bytes - c.out_octets <= 4096, (i, now, c)

    # tshark's decode of the same wire bytes, field by field, every datagram (~1200, ~5 s).
    exe = shutil.which("tshark")
    assert exe is not None
    proc = subprocess.run([exe, "-r", str(rig.pcap), "-T", "json", "-J", "sflow"],
                          capture_output=True, text=True, timeout=60, check=True)
    layers = [p["_source"]["layers"]["sflow"]
              for p in json.loads(proc.stdout, object_pairs_hook=_pairs_hook)]
    kinds: Counter[str] = Counter()
    for r, ts in zip(ours, layers, strict=True):
        h = r.header
        assert h is not None
        assert (_one(ts["sflow_245.agent"]), _int(ts["sflow_245.sub_agent_id"]),
                _int(ts["sflow_245.sequence_number"]), _int(ts["sflow_245.sysuptime"]),
                _int(ts["sflow_245.numsamples"])) == (h.agent, h.sub_agent_id, h.sequence,
                                                      h.uptime_ms, len(r.samples))
        their = _tshark_samples(ts)
        assert len(their) == len(r.samples)
        for s in r.samples:
            if type(s) is FlowSample:
                assert s.sample_sequence is not None and s.source_id_index is not None
                _check_flow(their[("flow", s.sample_sequence, s.source_id_index)], s)
                kinds[f"{'in' if s.input_ifindex else 'out'}/{s.protocol}"] += 1
            else:
                assert isinstance(s, CounterSample) and s.sample_sequence is not None
                _check_counters(their[("counters", s.sample_sequence, s.if_index)], s)
                kinds["counters"] += 1
    print(f"\ntshark agreed on all {len(ours)} datagrams: {dict(kinds)}; exporter {final}")
    # That covered both directions, TCP and UDP, and every port's counters.
    assert kinds["in/6"] and kinds["in/17"] and kinds["out/6"] and kinds["out/17"]
    assert kinds["counters"] >= N_SERVERS

