"""SPAN capture decode: garbage never raises, port attribution, evidence ring and pcap files."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import scapy.layers.inet  # noqa: F401 - registers IP for rdpcap
import scapy.layers.l2  # noqa: F401
from hypothesis import given, settings
from hypothesis import strategies as st
from rackwarden.drivers.capture import (
    EvidenceRing,
    MirrorSource,
    SpanCapture,
    run_in_netns,
    write_evidence,
    write_pcap,
)
from rackwarden.drivers.capture.span import _Source
from rackwarden.drivers.packets import flow_sample_from_frame
from rackwarden.policies.flowfacts import FlowSample
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.utils import rdpcap

AT = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
MAC_A, MAC_B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"


class FixedClock:
    def now(self) -> float:
        return 100.0

    def at(self) -> datetime:
        return AT


def _capture(sources: list[MirrorSource], **kw: object) -> SpanCapture:
    return SpanCapture(sources, lambda b: None, FixedClock(), **kw)  # type: ignore[arg-type]


def frame(src_ip: str = "10.0.0.1", dst_ip: str = "10.0.0.2", smac: str = MAC_A,
          dmac: str = MAC_B, flags: str = "S", dport: int = 25) -> bytes:
    return bytes(Ether(src=smac, dst=dmac) / IP(src=src_ip, dst=dst_ip)
                 / TCP(sport=4000, dport=dport, flags=flags) / (b"p" * 300))


def test_frame_from_a_per_port_mirror_gets_that_port() -> None:
    cap = _capture([MirrorSource("ci1", input_ifindex=7), MirrorSource("co1", output_ifindex=7)])
    ingress, egress = cap.sources
    f = frame()
    s = cap._sample(ingress, f[:256], len(f), 100.0, AT)
    assert s is not None
    assert (s.input_ifindex, s.output_ifindex) == (7, None)
    assert (s.src_ip, s.dst_ip, s.dst_port, s.tcp_flags) == ("10.0.0.1", "10.0.0.2", 25, 0x02)
    assert s.frame_length == len(f) and s.header == f[:256]
    assert s.source == "span" and s.agent == "span" and s.sampling_rate == 1
    s = cap._sample(egress, f, len(f), 100.0, AT)
    assert s is not None and (s.input_ifindex, s.output_ifindex) == (None, 7)


def test_shared_mirror_attributes_by_mac() -> None:
    cap = _capture([MirrorSource("span1")], mac_ports={MAC_A.upper(): 3, MAC_B: 4})
    (src,) = cap.sources
    s = cap._sample(src, frame(), 400, 100.0, AT)
    assert s is not None and (s.input_ifindex, s.output_ifindex) == (3, 4)
    s = cap._sample(src, frame(smac="02:00:00:00:00:99", dmac="02:00:00:00:00:98"), 400, 100.0,
                    AT)
    assert s is not None and (s.input_ifindex, s.output_ifindex) == (None, None)
    assert cap.counters.unattributed == 1


def test_truncated_frames_are_counted_by_reason() -> None:
    cap = _capture([MirrorSource("ci1", input_ifindex=1)])
    (src,) = cap.sources
    f = frame()
    s = cap._sample(src, f[:40], len(f), 100.0, AT)
    assert s is not None and s.parse_error == "truncated" and s.src_ip == "10.0.0.1"
    assert cap.counters.decode_errors == {"truncated": 1}


@settings(max_examples=400, deadline=None)
@given(st.binary(min_size=0, max_size=300))
def test_garbage_never_raises(data: bytes) -> None:
    cap = _capture([MirrorSource("span1")], mac_ports={MAC_A: 1})
    src: _Source = cap.sources[0]
    s = cap._sample(src, data, len(data), 100.0, AT)
    assert s is None or isinstance(s, FlowSample)


def test_callback_failure_is_counted_not_raised() -> None:
    def boom(batch: object) -> None:
        raise RuntimeError("consumer bug")

    cap = SpanCapture([MirrorSource("x", input_ifindex=1)], boom, FixedClock())
    s = flow_sample_from_frame(frame(), source="span", agent="span", now=1.0, at=AT)
    cap._deliver([s])
    assert cap.counters.callback_errors == 1 and cap.counters.samples == 1


def _sample(now: float, in_if: int | None, out_if: int | None, i: int = 0) -> FlowSample:
    f = frame(dport=1000 + i)
    s = flow_sample_from_frame(f, source="span", agent="span", now=now,
                               at=AT + timedelta(seconds=now), input_ifindex=in_if,
                               output_ifindex=out_if)
    return s


def test_evidence_ring_is_bounded_per_port_and_in_ports() -> None:
    ring = EvidenceRing(per_port=10, max_ports=2)
    ring.add([_sample(float(i), 1, 2, i) for i in range(50)])
    ring.add([_sample(60.0, 3, None)])  # a third port: over max_ports, not kept
    got = ring.snapshot([("span", 1), ("span", 2)])
    assert len(got) == 10  # the same samples sit in both rings: listed once
    assert [s.now for s in got] == [float(i) for i in range(40, 50)]
    assert ring.snapshot([("span", 3)]) == []
    assert len(ring.snapshot([("span", 1)], since=45.0)) == 5


def test_pcap_round_trip_through_scapy(tmp_path: Path) -> None:
    samples = [_sample(0.5 * i, 1, None, i) for i in range(5)]
    cut = flow_sample_from_frame(frame(), source="span", agent="span", now=9.0,
                                 at=AT + timedelta(seconds=9), snaplen=64)
    path = tmp_path / "e.pcap"
    assert write_pcap(path, [*samples, cut]) == 6
    pkts = rdpcap(str(path))
    assert [p[TCP].dport for p in pkts[:5]] == [1000, 1001, 1002, 1003, 1004]
    assert float(pkts[1].time) == pytest.approx((AT + timedelta(seconds=0.5)).timestamp())
    assert pkts[5].wirelen == len(frame()) and len(bytes(pkts[5])) == 64


@dataclass
class _Det:
    detector: str = "spoof"
    kind: str = "stolen"
    server: str = "s/1"
    first_seen: float = 10.0
    last_seen: float = 12.0
    last_at: datetime = AT
    evidence: tuple[FlowSample, ...] = ()
    ports: tuple[tuple[str, int], ...] = (("span", 1),)


def test_write_evidence_merges_ring_and_detection_samples(tmp_path: Path) -> None:
    ring = EvidenceRing()
    in_ring = [_sample(float(t), 1, None, t) for t in range(0, 13)]
    ring.add(in_ring)
    extra = _sample(11.5, None, None, 99)
    d = _Det(evidence=(in_ring[-1], extra))
    path, n = write_evidence(tmp_path, d, ring, before_s=5.0)  # type: ignore[arg-type]
    assert path.parent == tmp_path / "evidence" / "s_1"
    assert path.name.endswith("-spoof-stolen.pcap")
    # Ring samples from first_seen - 5 s (t=5..12) plus the one only the detection had.
    assert n == 9
    assert sorted(p[TCP].dport for p in rdpcap(str(path))) == sorted(
        [1000 + t for t in range(5, 13)] + [1099])


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="AF_PACKET and netns need root")


@needs_root
@pytest.mark.parametrize("mode", ["ring", "recv"])
def test_real_afpacket_capture_with_software_sampling(mode: str) -> None:
    ns = f"rwcapt-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        # No IPv6: DAD and MLD frames would join the count.
        subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw",
                        "net.ipv6.conf.all.disable_ipv6=1",
                        "net.ipv6.conf.default.disable_ipv6=1"], check=True)
        for cmd in (["link", "add", "t0", "type", "veth", "peer", "name", "t1"],
                    ["link", "set", "t0", "up"], ["link", "set", "t1", "up"]):
            subprocess.run(["ip", "-n", ns, *cmd], check=True)
        batches: list[list[FlowSample]] = []
        cap = SpanCapture([MirrorSource("t1", input_ifindex=9)], lambda b: batches.append(
            list(b)), FixedClock(), netns=ns, mode=mode, sample_every=4)  # type: ignore[arg-type]
        cap.start()
        good = frame(dport=80)
        frames = [good] * 200 + [b"\xff" * 14, b"\x00" * 60]

        def send() -> None:
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
            s.bind(("t0", 0))
            for f in frames:
                s.send(f)
            s.close()

        run_in_netns(ns, send)
        deadline = time.monotonic() + 15
        while cap.counters.packets < len(frames) and time.monotonic() < deadline:
            time.sleep(0.02)
        cap.stop()
        got = [s for b in batches for s in b]
        assert cap.counters.packets == len(frames)
        assert len(got) == len(frames) // 4
        assert all(s.sampling_rate == 4 and s.input_ifindex == 9 for s in got)
        assert sum(1 for s in got if s.dst_port == 80) >= 49
        assert cap.counters.drops == 0 and cap.counters.exceptions == 0
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


@needs_root
def test_missing_interface_fails_at_start() -> None:
    cap = _capture([MirrorSource("no-such-if0", input_ifindex=1)])
    with pytest.raises(OSError, match="no-such-if0"):
        cap.start()
    assert not cap.running
