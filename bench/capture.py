"""Benchmark: SPAN capture frames/s per core, full decode+detect path beside a bare struct walk.

Builds a private namespace with a veth pair, replays a mixed frame set into one end
(tcpreplay --topspeed when installed, else Python AF_PACKET senders) and captures on the other
with each of: ring + struct walk, recv_into + struct walk, ring + SpanCapture decode + detect,
recv + SpanCapture decode + detect. Per-core figures are frames handled per CPU-second of the
capture thread alone, so the sender sharing the machine does not skew them; kernel drops are
reported beside them. Needs root. Ends with one JSON line of figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from struct import Struct
from typing import Any

from rackwarden.agent.clock import SystemClock
from rackwarden.drivers.capture import MirrorSource, SpanCapture
from rackwarden.drivers.capture.afpacket import PKT_HDR, RawSocket, enter_netns
from rackwarden.policies.detect import AbuseDetector, ServerSpec
from rackwarden.policies.flowfacts import FlowSample

N_SERVERS = 40
SNAPLEN = 256


def _mac(i: int) -> str:
    return f"02:00:00:00:{i:02x}:01"


def make_frames(count: int, seed: int = 1) -> list[bytes]:
    """A realistic mix from 40 servers: TCP (incl. SYNs to mail ports), UDP, ICMP."""
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.layers.l2 import Ether

    rnd = random.Random(seed)
    out = []
    for i in range(count):
        srv = i % N_SERVERS
        eth = Ether(src=_mac(srv), dst="02:00:00:00:ff:fe")
        ip = IP(src=f"198.51.100.{srv + 1}", dst=f"203.0.113.{rnd.randrange(1, 255)}")
        pad = b"\0" * rnd.choice((0, 64, 400, 1000))
        kind = i % 10
        if kind < 5:
            pkt = eth / ip / TCP(sport=rnd.randrange(1024, 65535),
                                 dport=rnd.choice((25, 80, 443)),
                                 flags=rnd.choice(("S", "A", "PA"))) / pad
        elif kind < 9:
            pkt = eth / ip / UDP(sport=rnd.randrange(1024, 65535), dport=53) / pad
        else:
            pkt = eth / ip / ICMP() / pad
        out.append(bytes(pkt))
    return out


# ---- the bare baseline: read frames, walk headers with struct, count per source ----------

_ETH_IP = Struct("!12xH")
_U32 = Struct("!I").unpack_from
_U16X2 = Struct("!HH").unpack_from


def _walk(frame: bytes | memoryview, per_source: Counter[int]) -> None:
    if _ETH_IP.unpack_from(frame, 0)[0] == 0x0800:
        src = _U32(frame, 26)[0]
        proto = frame[23]
        if proto == 6 or proto == 17:
            _U16X2(frame, 14 + (frame[14] & 0x0F) * 4)
        per_source[src] += 1


class BareCapture:
    """The floor: no FlowSample, no attribution, no detector; same kernel path."""

    def __init__(self, ifname: str, netns: str, mode: str) -> None:
        self.ifname = ifname
        self.netns = netns
        self.mode = mode
        self.packets = 0
        self.drops = 0
        self.cpu_s = 0.0
        self.per_source: Counter[int] = Counter()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.thread.start()
        self._ready.wait(5)

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(5)

    def _run(self) -> None:
        enter_netns(self.netns)
        raw = RawSocket(self.ifname)
        raw.open(32 << 20)
        if self.mode == "ring":
            raw.open_ring(1 << 20, 32, 2048, 10)
        raw.stats()
        self._ready.set()
        cpu0 = time.thread_time()
        poller = select.poll()
        poller.register(raw.fileno(), select.POLLIN)
        per_source = self.per_source
        n = 0
        if self.mode == "ring":
            ring = raw.ring
            assert ring is not None
            unpack = PKT_HDR.unpack_from
            while not self._stop.is_set():
                got = False
                for base, num, first in raw.ready_blocks():
                    off = base + first
                    for _ in range(num):
                        nxt, _snap, _wire, mac = unpack(ring, off)
                        _walk(ring[off + mac:off + mac + 64], per_source)
                        off += nxt
                    n += num
                    raw.release(base)
                    got = True
                if not got:
                    poller.poll(100)
        else:
            sock = raw.sock
            assert sock is not None
            buf = bytearray(SNAPLEN)
            view = memoryview(buf)
            while not self._stop.is_set():
                poller.poll(100)
                while True:
                    try:
                        sock.recv_into(buf, SNAPLEN)
                    except BlockingIOError:
                        break
                    _walk(view, per_source)
                    n += 1
        self.cpu_s = time.thread_time() - cpu0
        self.packets = n
        self.drops = raw.stats()[1]
        raw.close()


class FullPath:
    """SpanCapture (struct decode into FlowSamples) feeding the abuse detectors."""

    def __init__(self, ifname: str, netns: str, mode: str) -> None:
        specs = [ServerSpec(f"s{i}", frozenset({("span", 100 + i)}),
                            frozenset({f"198.51.100.{i + 1}"})) for i in range(N_SERVERS)]
        self.detector = AbuseDetector(specs)
        self.clock = SystemClock()
        self.detections = 0
        self._last_eval = 0.0
        self.cap = SpanCapture(
            [MirrorSource(ifname)], self._on_batch, self.clock, netns=netns, mode=mode,  # type: ignore[arg-type]
            mac_ports={_mac(i): 100 + i for i in range(N_SERVERS)}, snaplen=SNAPLEN)
        self.cpu_s = 0.0
        self._cpu0 = 0.0
        self._clockid: int | None = None

    def _on_batch(self, batch: Sequence[FlowSample]) -> None:
        if self._clockid is None:
            self._clockid = time.pthread_getcpuclockid(threading.get_ident())
            self._cpu0 = time.clock_gettime(self._clockid)
        self.detector.ingest(batch)
        now = self.clock.now()
        if now - self._last_eval >= 0.05:
            self._last_eval = now
            self.detections += len(self.detector.evaluate(now, self.clock.at()))
        self.cpu_s = time.clock_gettime(self._clockid) - self._cpu0

    def start(self) -> None:
        self.cap.start()

    def stop(self) -> None:
        self.cap.stop()

    @property
    def packets(self) -> int:
        return self.cap.counters.packets

    @property
    def drops(self) -> int:
        return self.cap.counters.drops


def _sh(*argv: str) -> None:
    subprocess.run(list(argv), check=True, capture_output=True, text=True)


def _sender(ns: str, pcap: Path, frames_file: Path, seconds: float) -> list[subprocess.Popen[str]]:
    if shutil.which("tcpreplay"):
        return [subprocess.Popen(
            ["ip", "netns", "exec", ns, "tcpreplay", "-q", "-i", "b0", "-t", "-K",
             "--loop=0", f"--duration={int(seconds)}", str(pcap)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)]
    code = (
        "import socket,time,pickle,sys\n"
        "fr=pickle.load(open(sys.argv[1],'rb'));s=socket.socket(socket.AF_PACKET,socket.SOCK_RAW)\n"
        "s.bind(('b0',0));end=time.monotonic()+float(sys.argv[2]);n=len(fr);i=0\n"
        "while time.monotonic()<end:\n"
        "    for _ in range(1000):\n"
        "        try: s.send(fr[i%n])\n"
        "        except OSError: pass\n"
        "        i+=1\n"
    )
    return [subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", code,
                              str(frames_file), str(seconds)]) for _ in range(2)]


def run_phase(ns: str, pcap: Path, frames_file: Path, seconds: float,
              make: Callable[[], Any]) -> dict[str, Any]:
    cap = make()
    cap.start()
    senders = _sender(ns, pcap, frames_file, seconds)
    for p in senders:
        p.wait(timeout=seconds + 30)
    time.sleep(0.3)
    cap.stop()
    cpu = cap.cpu_s
    return {
        "packets": cap.packets,
        "kernel_drops": cap.drops,
        "cpu_s": round(cpu, 3),
        "pkts_per_cpu_s": round(cap.packets / cpu) if cpu > 0 else None,
        "offered_pps": round((cap.packets + cap.drops) / seconds),
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--frames", type=int, default=2000)
    a = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/capture.py needs root (network namespace, AF_PACKET)", file=sys.stderr)
        return 2
    ns = f"rwbench-cap-{os.getpid()}"
    tmp = Path(tempfile.mkdtemp(prefix="rwbench-cap-"))
    _sh("ip", "netns", "add", ns)
    try:
        _sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1")
        _sh("ip", "-n", ns, "link", "add", "b0", "type", "veth", "peer", "name", "b1")
        _sh("ip", "-n", ns, "link", "set", "b0", "up")
        _sh("ip", "-n", ns, "link", "set", "b1", "up")
        frames = make_frames(a.frames)
        import pickle

        from scapy.utils import wrpcap

        pcap = tmp / "mix.pcap"
        wrpcap(str(pcap), [__import__("scapy.layers.l2", fromlist=["Ether"]).Ether(f)
                           for f in frames])
        frames_file = tmp / "frames.pkl"
        frames_file.write_bytes(pickle.dumps(frames))
        results: dict[str, Any] = {}
        for name, make in (
            ("bare_ring", lambda: BareCapture("b1", ns, "ring")),
            ("bare_recv", lambda: BareCapture("b1", ns, "recv")),
            ("full_ring", lambda: FullPath("b1", ns, "ring")),
            ("full_recv", lambda: FullPath("b1", ns, "recv")),
        ):
            r = run_phase(ns, pcap, frames_file, a.seconds, make)
            results[name] = r
            print(f"{name:10s} {r['pkts_per_cpu_s'] or 0:>10,} frames/CPU-s  "
                  f"{r['packets']:>10,} frames  {r['kernel_drops']:>9,} kernel drops  "
                  f"offered ~{r['offered_pps']:,}/s", flush=True)
        figures = {
            "bench": "capture",
            "sender": "tcpreplay" if shutil.which("tcpreplay") else "python-afpacket",
            "seconds": a.seconds,
            **{f"{k}_pkts_per_core": v["pkts_per_cpu_s"] for k, v in results.items()},
            **{f"{k}_drops": v["kernel_drops"] for k, v in results.items()},
            **{f"{k}_offered_pps": v["offered_pps"] for k, v in results.items()},
        }
        print(json.dumps(figures))
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
