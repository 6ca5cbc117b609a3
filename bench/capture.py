"""Benchmark: SPAN capture frames/s per core, the batch path beside the per-frame path and a bare walk.

Builds a private namespace with a veth pair, replays a mixed frame set into one end and
captures on the other. The sender (--sender): by default bench/_span_sender.py, which offers a
steady 300,000 frames/s (--pps) in 1 ms steps through sendmmsg, a thread per CPU in the idle
scheduling class, so it uses only CPU time the capture does not want; or trafgen (netsniff-ng,
its TX_RING; its -b rate limit sends each second's quota in a burst, so a rate asked of it is
not a steady rate: with no --pps it runs at top speed, a process per CPU in SCHED_IDLE);
tcpreplay (paces evenly, a frame per call); Python AF_PACKET senders. Phases:
- bare_ring / bare_recv: ring or recv_into + a struct walk, no FlowSample (the floor);
- full_ring: the batch path, SpanCapture(on_columns=...): blocks held to ~16k frames or 40 ms
  (span.DEFAULT_BATCH_FRAMES, DEFAULT_BATCH_WAIT_S), one ring walk (the compiled walker when
  built), columns, raw frame ring, then
  VectorDetector.ingest_columns + evaluate (every EVALUATE_S, the daemon's default interval)
  when rackwarden.policies.detect_vec exists (printed either way);
- full_ring_flood: the same with the sender at top speed (a flood past the steady rate: what
  the thread keeps up with, and what the kernel drops when the offer outruns it);
- full_ring_4k: the same with the earlier batching, ~4k frames or 10 ms (the same-run
  baseline of the default's);
- full_ring_every_row: the same with the C scan loop taking every row, its skipping of a
  run's repeated keys off (policies/_scanwin.c skip_repeats; the baseline of that skipping);
- full_ring_three_pass: the same with the walk, the copy and the column read as three passes
  over the batch, not one (ringwalk.walk_copy_read_c; the baseline of that one pass);
- full_ring_numpy_columns: three passes with the numpy column read instead of the compiled one
  (the path before both);
- full_ring_nodetect: the same without the detector (the capture's own cost);
- full_ring_pywalk: the batch path with the pure-Python walker;
- perframe_ring / perframe_recv: today's per-frame SpanCapture (FlowSample per frame) feeding
  AbuseDetector.ingest + evaluate.
Per-core figures are frames handled per CPU-second of the capture thread alone, between its
first and last batch, so the sender sharing the machine does not skew them; kernel drops and
the rate actually offered (frames seen + dropped per second) are reported beside them. The
`*_saturated` figures run the same capture loops over a synthetic, full TPACKET_V3 ring (no
sender): the thread's capacity when a flood keeps the ring full, whatever the sender manages.
Needs root. Ends with one JSON line of figures.
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
from rackwarden.drivers.capture import MirrorSource, SpanCapture, columns, ringwalk, span
from rackwarden.drivers.capture.afpacket import PKT_HDR, RawSocket, enter_netns
from rackwarden.drivers.capture.rawring import RawFrameRing
from rackwarden.drivers.capture.span import DEFAULT_BATCH_FRAMES, DEFAULT_BATCH_WAIT_S
from rackwarden.policies.detect import AbuseDetector, ServerSpec
from rackwarden.policies.flowcols import SampleColumns
from rackwarden.policies.flowfacts import FlowSample

try:
    from rackwarden.policies import _scanwin_c
except ImportError:  # the C scan loop is not built: no run skipping to compare
    _scanwin_c = None  # type: ignore[assignment]

N_SERVERS = 40
SNAPLEN = 256


# evaluate() as often as the daemon runs it (detection.evaluate_interval_s, default 0.25 s).
EVALUATE_S = 0.25

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


def _specs() -> list[ServerSpec]:
    return [ServerSpec(f"s{i}", frozenset({("span", 100 + i)}),
                       frozenset({f"198.51.100.{i + 1}"})) for i in range(N_SERVERS)]


class _Timed:
    """CPU of the capture thread and frames read, from its first batch to its last: what
    the thread spent on the frames in between, idle polls cost nothing."""

    cap: SpanCapture

    def __init__(self) -> None:
        self.clock = SystemClock()
        self.detections = 0
        self._last_eval = 0.0
        self._clockid: int | None = None
        self._cpu0 = 0.0
        self._pk0 = 0
        self.cpu_s = 0.0
        self.frames = 0

    def _tick(self) -> None:
        if self._clockid is None:
            self._clockid = time.pthread_getcpuclockid(threading.get_ident())
            self._cpu0 = time.clock_gettime(self._clockid)
            self._pk0 = self.cap.counters.packets
            return
        self.cpu_s = time.clock_gettime(self._clockid) - self._cpu0
        self.frames = self.cap.counters.packets - self._pk0

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


class FullPath(_Timed):
    """Today's per-frame SpanCapture (struct decode into FlowSamples) feeding AbuseDetector."""

    def __init__(self, ifname: str, netns: str, mode: str) -> None:
        super().__init__()
        self.detector = AbuseDetector(_specs())
        self.cap = SpanCapture(
            [MirrorSource(ifname)], self._on_batch, self.clock, netns=netns, mode=mode,  # type: ignore[arg-type]
            mac_ports={_mac(i): 100 + i for i in range(N_SERVERS)}, snaplen=SNAPLEN)

    def _on_batch(self, batch: Sequence[FlowSample]) -> None:
        if self._clockid is None:
            self._tick()
        self.detector.ingest(batch)
        now = self.clock.now()
        if now - self._last_eval >= EVALUATE_S:
            self._last_eval = now
            self.detections += len(self.detector.evaluate(now, self.clock.at()))
        self._tick()


def vector_detector(raw_ring: RawFrameRing) -> Any | None:
    """VectorDetector over the bench's servers, when policies.detect_vec exists."""
    try:
        from rackwarden.policies.detect_vec import VectorDetector
    except ImportError:
        return None
    return VectorDetector(_specs(), resolve=raw_ring.resolve)


def _numpy_read(*args: Any, **kw: Any) -> Any:
    """frames_to_columns with its numpy read (the read before the compiled one)."""
    kw["impl"] = "python"
    return columns.frames_to_columns(*args, **kw)


class BatchPath(_Timed):
    """The batch path: SpanCapture(on_columns) -> columns + raw ring -> ingest_columns."""

    def __init__(self, ifname: str, netns: str, walker: str, detect: bool = True,
                 batching: tuple[int, float] | None = None, skip_repeats: bool = True,
                 one_pass: bool = True, numpy_columns: bool = False) -> None:
        super().__init__()
        self.skip_repeats = skip_repeats
        self.numpy_columns = numpy_columns
        self._skip_was: bool | None = None
        self.raw_ring = RawFrameRing(slot=SNAPLEN)
        self.detector = vector_detector(self.raw_ring) if detect else None
        self.rows = 0
        frames, wait = batching or (DEFAULT_BATCH_FRAMES, DEFAULT_BATCH_WAIT_S)
        self.cap = SpanCapture(
            [MirrorSource(ifname)], None, self.clock, netns=netns, mode="ring",  # type: ignore[arg-type]
            mac_ports={_mac(i): 100 + i for i in range(N_SERVERS)}, snaplen=SNAPLEN,
            on_columns=self._on_columns, raw_ring=self.raw_ring,
            walker=walker, batch_frames=frames, batch_wait_s=wait)  # type: ignore[arg-type]
        self.cap.one_pass = one_pass and not numpy_columns

    def start(self) -> None:
        # The C scan loop's skipping of a run's repeated keys (policies/_scanwin.c), off for
        # the full_ring_every_row baseline.
        if _scanwin_c is not None:
            self._skip_was = _scanwin_c.skip_repeats(self.skip_repeats)
        if self.numpy_columns:  # the C walk and copy, then the numpy column read
            span.frames_to_columns = _numpy_read
        super().start()

    def stop(self) -> None:
        super().stop()
        if _scanwin_c is not None and self._skip_was is not None:
            _scanwin_c.skip_repeats(self._skip_was)
        span.frames_to_columns = columns.frames_to_columns

    def _on_columns(self, cols: SampleColumns) -> None:
        if self._clockid is None:
            self._tick()
        self.rows += len(cols)
        if self.detector is not None:
            self.detector.ingest_columns(cols)
            now = self.clock.now()
            if now - self._last_eval >= EVALUATE_S:
                self._last_eval = now
                self.detections += len(self.detector.evaluate(now, self.clock.at()))
        self._tick()


def _sh(*argv: str) -> None:
    subprocess.run(list(argv), check=True, capture_output=True, text=True)


STEADY_PPS = 300_000  # the offered rate: no kernel drops at a steady 300k frames/s
TOP_SPEED_PPS = 1_000_000_000  # the paced sender's "as fast as it can"


def sender_kind(want: str) -> str:
    """The frame sender: `want`; "auto" is the paced sendmmsg sender (bench/_span_sender.py),
    which needs nothing installed."""
    return "paced" if want == "auto" else want


def _trafgen_conf(frames: list[bytes], path: Path) -> None:
    """The frames as a trafgen packet configuration: one { 0x.., ... } block each."""
    path.write_text("".join("{ " + ", ".join(f"0x{b:02x}" for b in f) + " }\n" for f in frames))


def _sender(kind: str, ns: str, tmp: Path, seconds: float,
            pps: int | None) -> list[subprocess.Popen[str]]:
    if kind == "paced":
        return [subprocess.Popen(
            ["ip", "netns", "exec", ns, "chrt", "--idle", "0", sys.executable,
             str(Path(__file__).with_name("_span_sender.py")), "b0", str(tmp / "frames.pkl"),
             str(pps or TOP_SPEED_PPS), f"{seconds:g}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)]
    if kind == "trafgen":
        # No rate: the TX_RING at top speed, one trafgen process pinned to each CPU, all in
        # the idle scheduling class (SCHED_IDLE), so a sender runs only where nothing else
        # wants the CPU: one CPU sends flat out (about 290k frames/s of this mix; the veth
        # delivers into the capture's ring in the sender's context), and the capture's CPU
        # adds frames only while the capture thread waits. The capture is never slowed by
        # its own sender; the rate offered is counted, not assumed (frames seen + dropped).
        # With a rate: one process at normal priority (a rate limit makes trafgen send a
        # frame per call: ~240k at most here, and each second's quota in one burst).
        # --no-sock-mem -Q: leave the machine's socket memory limits and IRQ affinity alone.
        how = (["-P", "1", "-b", f"{pps}pps"] if pps else
               ["-P", str(os.cpu_count() or 1)])
        idle = [] if pps else ["chrt", "--idle", "0"]
        return [subprocess.Popen(
            ["ip", "netns", "exec", ns, "timeout", "-s", "INT", f"{seconds:g}", *idle, "trafgen",
             "-i", str(tmp / "mix.cfg"), "-o", "b0", *how, "--no-sock-mem", "-Q", "-C"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)]
    if kind == "tcpreplay":
        # --pps-multi: bursts of 50 per timer tick; one frame per tick tops out far below
        # 300k/s on this 2-core machine.
        rate = ["-t"] if not pps else [f"--pps={pps}", "--pps-multi=50"]
        return [subprocess.Popen(
            ["ip", "netns", "exec", ns, "tcpreplay", "-q", "-i", "b0", *rate, "-K",
             "--loop=0", f"--duration={int(seconds)}", str(tmp / "mix.pcap")],
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
                              str(tmp / "frames.pkl"), str(seconds)]) for _ in range(2)]


def run_phase(kind: str, ns: str, tmp: Path, seconds: float, pps: int | None,
              make: Callable[[], Any]) -> dict[str, Any]:
    cap = make()
    cap.start()
    senders = _sender(kind, ns, tmp, seconds, pps)
    for p in senders:
        p.wait(timeout=seconds + 30)
    time.sleep(0.3)
    cap.stop()
    cpu = cap.cpu_s
    frames = getattr(cap, "frames", cap.packets)  # _Timed: frames between first/last batch
    spans = getattr(cap, "cap", None)
    batches = spans.counters.batches if spans is not None else 0
    return {
        "mean_batch": round(spans.counters.samples / batches) if batches else None,
        "packets": cap.packets,
        "kernel_drops": cap.drops,
        "cpu_s": round(cpu, 3),
        "pkts_per_cpu_s": round(frames / cpu) if cpu > 0 else None,
        "offered_pps": round((cap.packets + cap.drops) / seconds),
    }


# ---- saturated: the same code on a full ring, no sender -------------------------------------

class _FullRing(RawSocket):
    """A TPACKET_V3 ring laid out as the kernel lays it out (PERFORMANCE-NOTES section 2),
    every block ready: what the capture thread sees when it runs behind a flood."""

    def __init__(self, frames: list[bytes], block_size: int, stop: threading.Event) -> None:
        super().__init__("synthetic")
        blocks: list[bytearray] = []
        cur = bytearray()
        pos = count = last = 0
        for i, f in enumerate(frames):
            size = (82 + len(f) + 15) & ~15
            if not blocks or pos + size > block_size:
                cur = bytearray(block_size)
                blocks.append(cur)
                pos, count = 48, 0
                Struct("=III").pack_into(cur, 8, 1, 0, 48)
            elif count:
                Struct("=I").pack_into(cur, last, pos - last)
            Struct("=IIIIIIH").pack_into(cur, pos, 0, i, 0, len(f), len(f), 1, 82)
            cur[pos + 82:pos + 82 + len(f)] = f
            last, pos, count = pos, pos + size, count + 1
            Struct("=I").pack_into(cur, 12, count)
        blocks.append(bytearray(block_size))  # free: the walk stops there
        import mmap

        self.ring = mmap.mmap(-1, block_size * len(blocks))
        self.ring[:] = b"".join(blocks)
        self.block_size = block_size
        self.block_nr = len(blocks)
        self._stop_event = stop
        self._r, self._w = os.pipe()

    def fileno(self) -> int:
        return self._r

    def ready_blocks(self) -> Any:
        yield from super().ready_blocks()
        self._stop_event.set()  # one pass over the full ring, then the loop ends

    def close(self) -> None:
        super().close()
        os.close(self._r)
        os.close(self._w)


def saturated(frames: list[bytes], kind: str, walker: str) -> int:
    """Frames per CPU-second of one pass of the capture loop over a full ring (the default
    batches, as far as half the ring holds)."""
    path: Any = FullPath("x", "unused", "ring") if kind == "perframe" else BatchPath(
        "x", "unused", walker, detect=kind == "batch")
    cap: SpanCapture = path.cap
    raw = _FullRing(frames, 1 << 18, cap._stop)
    cap.sources[0].raw = raw
    t0 = time.thread_time()
    if kind == "perframe":
        cap._loop_ring()
    else:
        cap._loop_ring_columns()
    cpu = time.thread_time() - t0
    raw.close()
    return round(len(frames) / cpu)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--sender", choices=("auto", "paced", "trafgen", "tcpreplay", "python"),
                    default="auto", help="auto: the paced sendmmsg sender (bench/_span_sender.py)")
    ap.add_argument("--pps", type=int, default=None,
                    help="offered rate (default: 300k/s steady for the paced sender and "
                    "tcpreplay, top speed for trafgen); 0 = top speed; with a rate, trafgen "
                    "runs one process at normal priority and sends in bursts; the Python "
                    "sender ignores it")
    ap.add_argument("--repeat", type=int, default=3, help="rounds; figures are medians")
    ap.add_argument("--only", default="", help="comma-separated phase names to run")
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
        (tmp / "frames.pkl").write_bytes(pickle.dumps(frames))
        _trafgen_conf(frames, tmp / "mix.cfg")
        kind = sender_kind(a.sender)
        if kind == "trafgen" and not shutil.which("trafgen"):
            print("bench/capture.py: trafgen not installed (Debian's netsniff-ng)",
                  file=sys.stderr)
            return 2
        pps = a.pps if a.pps is not None else (0 if kind == "trafgen" else STEADY_PPS)
        print(f"sender: {kind}, " + (f"{pps:,} frames/s asked" if pps else "top speed")
              + (f", a process per CPU ({os.cpu_count()}) in SCHED_IDLE"
                 if kind == "trafgen" and not pps else "")
              + (f", steady in 1 ms steps, a thread per CPU ({os.cpu_count()}) in SCHED_IDLE"
                 if kind == "paced" else ""), flush=True)
        walker = ringwalk.choose()
        has_vec = vector_detector(RawFrameRing(byte_budget=1 << 12)) is not None
        print(f"batch path: ring walker {walker!r}"
              + ("" if walker == "c" else f" ({ringwalk.unavailable_reason()})")
              + ", detector "
              + ("VectorDetector.ingest_columns + evaluate" if has_vec else
                 "none (rackwarden.policies.detect_vec not importable): walk + columns + "
                 "raw ring only"), flush=True)
        phases: list[tuple[str, Callable[[], Any]]] = [
            ("bare_ring", lambda: BareCapture("b1", ns, "ring")),
            ("full_ring", lambda: BatchPath("b1", ns, walker)),
            ("full_ring_flood", lambda: BatchPath("b1", ns, walker)),
            ("full_ring_4k", lambda: BatchPath("b1", ns, walker, batching=(4096, 0.01))),
            ("full_ring_every_row", lambda: BatchPath("b1", ns, walker, skip_repeats=False)),
            ("full_ring_three_pass", lambda: BatchPath("b1", ns, walker, one_pass=False)),
            ("full_ring_numpy_columns", lambda: BatchPath("b1", ns, walker, numpy_columns=True)),
            ("full_ring_nodetect", lambda: BatchPath("b1", ns, walker, detect=False)),
            ("full_ring_pywalk", lambda: BatchPath("b1", ns, "python")),
            ("perframe_ring", lambda: FullPath("b1", ns, "ring")),
            ("bare_recv", lambda: BareCapture("b1", ns, "recv")),
            ("perframe_recv", lambda: FullPath("b1", ns, "recv")),
        ]
        if kind not in ("paced", "trafgen"):  # no top speed to flood with
            phases = [p for p in phases if p[0] != "full_ring_flood"]
        if a.only:
            keep = set(a.only.split(","))
            phases = [p for p in phases if p[0] in keep]
        # Capacity when the ring is full (what 300k frames/s would give the thread when the
        # sender cannot offer that much here): the same loops over a synthetic full ring.
        sat_frames = (frames * (28_000 // len(frames) + 1))[:28_000]
        sat: dict[str, list[int]] = {"full_ring_saturated": [],
                                     "full_ring_nodetect_saturated": [],
                                     "perframe_ring_saturated": []}
        for rnd in range(a.repeat):
            sat["full_ring_saturated"].append(saturated(sat_frames, "batch", walker))
            sat["full_ring_nodetect_saturated"].append(
                saturated(sat_frames, "batch_nodetect", walker))
            sat["perframe_ring_saturated"].append(saturated(sat_frames, "perframe", walker))
            print(f"[{rnd + 1}] saturated ring, 28k frames, frames/CPU-s: batch "
                  f"{sat['full_ring_saturated'][-1]:,}, batch without detector "
                  f"{sat['full_ring_nodetect_saturated'][-1]:,}, per-frame "
                  f"{sat['perframe_ring_saturated'][-1]:,}", flush=True)
        rounds: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in phases}
        for rnd in range(a.repeat):
            for name, make in phases:  # interleaved: each round runs every phase once
                # The flood phase: the same sender at top speed (trafgen's is its default).
                r = run_phase(kind, ns, tmp, a.seconds, 0 if name == "full_ring_flood" else pps,
                              make)
                rounds[name].append(r)
                print(f"[{rnd + 1}] {name:16s} {r['pkts_per_cpu_s'] or 0:>10,} frames/CPU-s  "
                      f"{r['packets']:>10,} frames  {r['kernel_drops']:>9,} kernel drops  "
                      f"offered ~{r['offered_pps']:,}/s  mean batch {r['mean_batch']}",
                      flush=True)

        def med(name: str, key: str) -> Any:
            vals = sorted(r[key] for r in rounds[name] if r[key] is not None)
            return vals[len(vals) // 2] if vals else None

        results = {name: {k: med(name, k) for k in ("pkts_per_cpu_s", "kernel_drops",
                                                     "offered_pps")} for name in rounds}
        print("medians:")
        for name, r in results.items():
            print(f"  {name:16s} {r['pkts_per_cpu_s'] or 0:>10,} frames/CPU-s  "
                  f"{r['kernel_drops'] or 0:>9,} kernel drops  offered ~{r['offered_pps']:,}/s")
        base = results.get("perframe_ring", {}).get("pkts_per_cpu_s")
        new = results.get("full_ring", {}).get("pkts_per_cpu_s")
        small = results.get("full_ring_4k", {}).get("pkts_per_cpu_s")
        every = results.get("full_ring_every_row", {}).get("pkts_per_cpu_s")
        npcols = results.get("full_ring_numpy_columns", {}).get("pkts_per_cpu_s")
        three = results.get("full_ring_three_pass", {}).get("pkts_per_cpu_s")
        figures = {
            "bench": "capture",
            "sender": kind,
            "seconds": a.seconds,
            "requested_pps": pps,
            "rounds": a.repeat,
            "ring_walker": walker,
            "detector": "VectorDetector" if has_vec else "none",
            **{f"{k}_pkts_per_core": v["pkts_per_cpu_s"] for k, v in results.items()},
            **{f"{k}_pkts_per_core": sorted(v)[len(v) // 2] for k, v in sat.items()},
            **{f"{k}_drops": v["kernel_drops"] for k, v in results.items()},
            **{f"{k}_offered_pps": v["offered_pps"] for k, v in results.items()},
            "ratio_full_ring_vs_perframe_ring": round(new / base, 2) if new and base else None,
            "ratio_full_ring_vs_4k_batches": round(new / small, 2) if new and small else None,
            "ratio_full_ring_vs_every_row": round(new / every, 2) if new and every else None,
            "ratio_full_ring_vs_three_pass": round(new / three, 2) if new and three else None,
            "ratio_full_ring_vs_numpy_columns": round(new / npcols, 2) if new and npcols
            else None,
            "ratio_saturated_batch_vs_perframe": round(
                sorted(sat["full_ring_saturated"])[a.repeat // 2]
                / sorted(sat["perframe_ring_saturated"])[a.repeat // 2], 2),
        }
        print(json.dumps(figures))
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
