"""SPAN batch path on a real kernel ring: columns and raw frames equal the per-frame path's samples.

A private namespace with a veth pair; one AF_PACKET sender writes a frame mix (TCP/UDP/ICMP
over IPv4 with and without options, IPv6, ARP, short and VLAN-tagged frames) into one end;
two captures read the other end at once, today's per-frame SpanCapture and the batch mode
(on_columns), plus a bare ring walk for the VLAN arrays. Run under
`flock /tmp/rackwarden-lab.lock`. The namespace is named after this process and removed
at the end (and, if a crashed run left one, at the start: only namespaces whose PID is gone).
"""

from __future__ import annotations

import dataclasses
import os
import re
import select
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from rackwarden.agent.clock import SystemClock
from rackwarden.drivers.capture import MirrorSource, SpanCapture, ringwalk, run_in_netns
from rackwarden.drivers.capture.afpacket import RawSocket, enter_netns
from rackwarden.policies.flowcols import SampleColumns
from rackwarden.policies.flowfacts import FlowSample
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Dot1Q, Ether

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(os.geteuid() != 0, reason="AF_PACKET and netns need root"),
]

PREFIX = "rwspancol-"
MACS = [f"02:00:00:00:{i:02x}:01" for i in range(8)]
T0 = datetime(2025, 1, 1, tzinfo=UTC)
ROW_FIELDS = ("agent", "input_ifindex", "output_ifindex", "sampling_rate", "frame_length",
              "ip_version", "src_ip", "dst_ip", "protocol", "src_port", "dst_port",
              "tcp_flags", "icmp_type")


def _frames() -> list[bytes]:
    out: list[bytes] = []
    for i in range(600):
        eth = Ether(src=MACS[i % 8], dst=MACS[(i + 3) % 8])
        k = i % 12
        if k < 4:
            p = eth / IP(src=f"198.51.100.{i % 8 + 1}", dst="203.0.113.9") / TCP(
                sport=1000 + i, dport=(25, 80, 443)[i % 3], flags="S") / (b"x" * (i % 300))
        elif k < 6:
            p = eth / IP(src="198.51.100.1", dst="203.0.113.7", options=b"\x01" * 8) / UDP(
                sport=5000 + i, dport=53) / b"q"
        elif k == 6:
            p = eth / IP(src="198.51.100.2", dst="203.0.113.8") / ICMP(type=8)
        elif k == 7:
            p = eth / IPv6(src="2001:db8::1", dst=f"2001:db8::{i:x}") / TCP(dport=22)
        elif k == 8:
            p = eth / IPv6(src="2001:db8::2", dst="2001:db8::3") / UDP(dport=123)
        elif k == 9:
            p = eth / ARP(psrc="198.51.100.1", pdst="198.51.100.2")
        elif k == 10:
            p = eth / Dot1Q(vlan=100 + i % 50) / IP(src="198.51.100.3", dst="203.0.113.1") / UDP(
                dport=161)
        else:
            p = eth / IP(src="198.51.100.4", dst="203.0.113.2") / TCP(dport=80)
        f = bytes(p)
        out.append(f[:30] if i % 37 == 0 else f)  # some cut mid-IP-header
    return out


def _sh(*argv: str) -> None:
    subprocess.run(list(argv), check=True, capture_output=True)


def _remove_stale() -> None:
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for m in re.finditer(rf"^{PREFIX}(\d+)", names, re.M):
        pid = int(m.group(1))
        if pid != os.getpid() and not os.path.exists(f"/proc/{pid}"):
            subprocess.run(["ip", "netns", "del", f"{PREFIX}{pid}"], capture_output=True)


@pytest.fixture
def netns() -> Iterator[str]:
    _remove_stale()
    ns = f"{PREFIX}{os.getpid()}"
    _sh("ip", "netns", "add", ns)
    try:
        _sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1")
        _sh("ip", "-n", ns, "link", "add", "c0", "type", "veth", "peer", "name", "c1")
        _sh("ip", "-n", ns, "link", "set", "c0", "up")
        _sh("ip", "-n", ns, "link", "set", "c1", "up")
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _send(ns: str, frames: list[bytes]) -> None:
    def go() -> None:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        s.bind(("c0", 0))
        for i, f in enumerate(frames):
            s.send(f)
            if i % 100 == 99:
                time.sleep(0.002)  # several ring blocks and batches, not one
        s.close()

    run_in_netns(ns, go)


def _wait(caps: list[SpanCapture], n: int) -> None:
    deadline = time.monotonic() + 20
    while any(c.counters.packets < n for c in caps) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.05)  # the batch mode's last batch: its wait is 5 ms


def _timeless(s: FlowSample | None) -> FlowSample | None:
    # Two captures read their blocks at different moments: compare all but the receive time.
    return None if s is None else dataclasses.replace(s, now=0.0, at=T0)


@pytest.mark.parametrize("shared", [True, False])
def test_batch_mode_on_a_real_ring_equals_the_per_frame_path(netns: str, shared: bool) -> None:
    frames = _frames()
    macs = {m: 10 + i for i, m in enumerate(MACS[:5])}
    src = MirrorSource("c1") if shared else MirrorSource("c1", input_ifindex=4)
    old: list[FlowSample] = []
    cols: list[SampleColumns] = []
    clock = SystemClock()
    per_frame = SpanCapture([src], old.extend, clock, agent="span:sw", netns=netns,
                            mac_ports=macs, ring_timeout_ms=5)  # type: ignore[arg-type]
    batch = SpanCapture([src], None, clock, agent="span:sw", netns=netns, mac_ports=macs,
                        ring_timeout_ms=5, on_columns=cols.append,
                        batch_frames=128)  # type: ignore[arg-type]
    per_frame.start()
    batch.start()
    try:
        _send(netns, frames)
        _wait([per_frame, batch], len(frames))
    finally:
        per_frame.stop()
        batch.stop()
    print(f"walker {ringwalk.choose()}: {len(cols)} batches of "
          f"{[len(c) for c in cols][:10]}..., per-frame {per_frame.counters.batches} batches")
    assert per_frame.counters.packets == batch.counters.packets == len(frames)
    assert batch.counters.drops == 0 and batch.counters.exceptions == 0
    assert len(cols) > 1
    rows = [c.row(i) for c in cols for i in range(len(c))]
    assert [{f: r[f] for f in ROW_FIELDS} for r in rows] == [
        {f: getattr(s, f) for f in ROW_FIELDS} for s in old]
    assert batch.raw_ring is not None
    refs = [int(r) for c in cols for r in c.ref]
    assert [_timeless(s) for s in batch.raw_ring.resolve(refs)] == [_timeless(s) for s in old]
    # Each row's time is its block's, as the per-frame path gives each sample its block's.
    assert [r["now"] for r in rows] == [s.now for s in batch.raw_ring.resolve(refs)
                                        if s is not None]
    assert batch.counters.decode_errors == per_frame.counters.decode_errors != {}
    assert batch.counters.unattributed == per_frame.counters.unattributed


def test_the_walker_reports_the_vlan_the_kernel_took_off(netns: str) -> None:
    # The kernel untags 802.1Q before the packet taps: the tag is only in tp_vlan_tci.
    frames = [bytes(Ether(src=MACS[0], dst=MACS[1]) / Dot1Q(vlan=100 + i) / IP() / UDP())
              for i in range(20)] + [bytes(Ether(src=MACS[0], dst=MACS[1]) / IP() / UDP())]
    got: list[ringwalk.Walk] = []

    def capture() -> None:
        enter_netns(netns)
        raw = RawSocket("c1")
        raw.open(1 << 20)
        raw.open_ring(1 << 16, 8, 2048, 5)
        try:
            ready.append(1)
            p = select.poll()
            p.register(raw.fileno(), select.POLLIN)
            n = 0
            end = time.monotonic() + 10
            while n < len(frames) and time.monotonic() < end:
                p.poll(50)
                blocks = list(raw.ready_blocks())
                if blocks:
                    assert raw.ring is not None
                    w = ringwalk.walk(raw.ring, [b for b, _, _ in blocks], raw.block_size)
                    got.append(w)
                    n += len(w)
                    for b, _, _ in blocks:
                        raw.release(b)
                    del w
        finally:
            raw.close()

    import threading

    ready: list[int] = []
    t = threading.Thread(target=capture)
    t.start()
    while not ready and t.is_alive():
        time.sleep(0.01)
    _send(netns, frames)
    t.join(15)
    valid = [bool(v) for w in got for v in w.vlan_valid]
    tci = [int(v) & 0xFFF for w in got for v in w.vlan_tci]
    assert len(valid) == len(frames)
    assert valid == [True] * 20 + [False]
    assert tci[:20] == [100 + i for i in range(20)]
