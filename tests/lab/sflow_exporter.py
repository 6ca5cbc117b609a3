"""Lab sFlow v5 agent: samples the switch namespace's customer ports 1-in-N and exports datagrams.

It behaves like a switch's sFlow agent: one data source per customer port (source id = the
port's ifIndex), random 1-in-N packet sampling of both directions, raw packet header records
(128 bytes), cumulative sample_pool / drops / per-source sample sequence numbers, one datagram
sequence for the agent, periodic generic interface counters from /sys, all sent over UDP from
the switch's management address to a collector.

Run inside the switch namespace (`start_sflow_exporter` does it with `ip netns exec`):
`python -m tests.lab.sflow_exporter --collector HOST:PORT --agent ADDR --ports p1:16 p2:16 ...`.
It reads each port with its own AF_PACKET TPACKET_V3 ring, truncated to the header length by a
one-instruction BPF program, so frames are walked with struct and never dissected.

The direction comes from the frame's packet type: PACKET_OUTGOING on pN left the switch towards
the server (output ifIndex = pN), anything else entered from the server (input ifIndex = pN).
The other side of each sample is left 0 ("unknown"): a frame between two customer ports is
sampled on both, once as the sender's ingress and once as the receiver's egress, and filling in
the far port from the FDB would make each server see it twice.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import random
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from rackwarden.drivers.capture.afpacket import PKT_HDR, RawSocket
from rackwarden.drivers.sflow.decoder import Sample
from rackwarden.drivers.sflow.encoder import DEFAULT_MAX_DATAGRAM, pack_datagrams
from rackwarden.policies.flowfacts import HEADER_ETHERNET, CounterSample, FlowSample

from tests.lab.netlab import Lab, LabError, pid_alive

SFLOW_PORT = 6343  # the IANA port; tshark dissects it as sFlow by port
DEFAULT_HEADER_BYTES = 128  # what switches copy; sflow_version_5.txt's suggested default
FCS_BYTES = 4  # on the wire and in a switch's frame_length, stripped before the header copy
MAX_LIFETIME_S = 900.0  # a leaked exporter ends itself
# How the next skip is drawn. "deterministic": every Nth packet, which aliases with regular
# traffic (a scanner's SYN/RST alternation at an even N only ever yields the RSTs).
# "random": the sFlow reference agent's skip, uniform on 1..2N-1. "bernoulli": p = 1/N per
# packet, as switch ASICs sample. "jitter": uniform on N-N/2..N+N/2, random enough not to
# alias and tight enough that policies/detect.py's drift check (pool/sequence over 8 samples
# against 2x the declared rate) can never trip on it; that check calls the honest "random"
# and "bernoulli" samplers suspect in ~0.6% and ~6% of checks, and each time holds the
# port's shutdowns back for 10 s. Hence "jitter" is the default.
SAMPLING_MODES = ("jitter", "random", "bernoulli", "deterministic")
U32 = 0xFFFFFFFF
UNKNOWN_COUNTER = U32  # sFlow: a counter the agent does not have is all ones

# tpacket3_hdr is 48 bytes; the kernel puts a sockaddr_ll right after it (TPACKET_ALIGN(48)),
# whose sll_pkttype byte sits at offset 10.
_SLL_PKTTYPE_OFF = 48 + 10
PACKET_OUTGOING = 4
# Sizes as the encoder lays them out, to fill datagrams without encoding twice.
_FLOW_SAMPLE_FIXED = 8 + 32 + 8 + 16  # sample head, compact flow_sample, record head, raw hdr
_COUNTER_SAMPLE_SIZE = 8 + 12 + 8 + 88
_DATAGRAM_HEAD_V4 = 8 + 4 + 16
# SO_ATTACH_FILTER and BPF_RET|BPF_K: a classic BPF program returning N keeps N bytes per frame
# (tp_len still reports the full length), so the ring holds ~200-byte slots, not MTU-sized.
_SO_ATTACH_FILTER = 26
_BPF_RET_K = 0x06
# A switch port never carries more than a 1500-byte MTU frame plus one VLAN tag. A veth can
# carry a 64 KiB GSO train as one "frame"; it is sampled as one packet, so such frames are
# counted for the test to insist on none (the lab turns segmentation offload down instead).
MAX_WIRE_FRAME = 1518
_IFF_UP = 0x1
_IFF_PROMISC = 0x100


@dataclass
class _Port:
    """One data source: a customer port, its ring and its sFlow bookkeeping."""

    name: str
    ifindex: int
    rate: int
    raw: RawSocket
    skip: int = 0
    pool: int = 0  # frames the sampler saw (every one could have been sampled)
    seq: int = 0  # flow samples taken
    counter_seq: int = 0
    drops: int = 0  # frames the kernel dropped before the sampler saw them (ring full)
    ingress: int = 0
    egress: int = 0
    oversize: int = 0  # GSO trains longer than any wire frame (see MAX_WIRE_FRAME)


def _attach_snap_filter(sock: socket.socket, snap: int) -> None:
    insn = ctypes.create_string_buffer(struct.pack("HBBI", _BPF_RET_K, 0, 0, snap))
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; } with native padding.
    prog = struct.pack("HL", 1, ctypes.addressof(insn))
    sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, prog)


def _read_int(path: Path, default: int = 0) -> int:
    try:
        return int(path.read_text().strip(), 0)
    except (OSError, ValueError):  # veth speed reads EINVAL when unknown
        return default


class Exporter:
    """The agent loop; runs in the switch namespace. Constructor does no I/O; run() does it."""

    def __init__(self, *, collector: tuple[str, int], agent: str, ports: Mapping[str, int],
                 header_bytes: int = DEFAULT_HEADER_BYTES, counter_interval_s: float = 5.0,
                 flush_interval_s: float = 0.1, max_datagram_bytes: int = DEFAULT_MAX_DATAGRAM,
                 mode: str = "jitter", seed: int | None = None,
                 stats_file: str | None = None,
                 lifetime_s: float = MAX_LIFETIME_S, ring_block_size: int = 1 << 17,
                 ring_blocks: int = 128, ring_timeout_ms: int = 40) -> None:
        if not ports or any(r < 1 for r in ports.values()):
            raise ValueError("need at least one port, each with a sampling rate >= 1")
        if mode not in SAMPLING_MODES:
            raise ValueError(f"mode must be one of {SAMPLING_MODES}")
        self.collector = collector
        self.agent = agent
        self.port_rates = dict(ports)
        self.header_bytes = header_bytes
        self.counter_interval_s = counter_interval_s
        self.flush_interval_s = flush_interval_s
        self.max_datagram_bytes = max_datagram_bytes
        self.mode = mode
        self.rng = random.Random(seed)
        self.stats_file = stats_file
        self.lifetime_s = min(lifetime_s, MAX_LIFETIME_S)
        self.ring_block_size = ring_block_size
        self.ring_blocks = ring_blocks
        self.ring_timeout_ms = ring_timeout_ms
        self.ports: list[_Port] = []
        self.sock: socket.socket | None = None
        self.stop_requested = False
        self.started = 0.0
        self.datagram_seq = 0  # last one sent; the first datagram carries 1
        self.datagrams = 0
        self.bytes_sent = 0
        self.send_errors = 0
        self.flow_samples = 0
        self.counter_samples = 0
        self.packets = 0
        self.pending: list[Sample] = []
        self.pending_bytes = _DATAGRAM_HEAD_V4
        self.pending_since = 0.0

    # ---- sampling -------------------------------------------------------------------------

    def _next_skip(self, rate: int) -> int:
        if self.mode == "deterministic" or rate == 1:
            return rate
        if self.mode == "jitter":
            return self.rng.randint(rate - rate // 2, rate + rate // 2)
        if self.mode == "bernoulli":
            # Each packet taken with p = 1/N, as switch ASICs do: a geometric skip.
            u = 1.0 - self.rng.random()
            return int(math.log(u) / math.log1p(-1.0 / rate)) + 1
        # sflow_version_5.txt asks for a random skip so periodic traffic cannot alias with the
        # sampler (a 64-packet cyclic flood at 1-in-64 would always yield the same packet);
        # the reference agent draws it uniform on 1..2N-1, mean N.
        return self.rng.randint(1, 2 * rate - 1)

    def open(self) -> None:
        for name, rate in self.port_rates.items():
            raw = RawSocket(name)
            raw.open(4 << 20)
            assert raw.sock is not None
            _attach_snap_filter(raw.sock, self.header_bytes)
            raw.open_ring(self.ring_block_size, self.ring_blocks, 2048, self.ring_timeout_ms)
            raw.stats()  # the kernel resets on read: count drops from here on
            port = _Port(name, socket.if_nametoindex(name), rate, raw)
            port.skip = self._next_skip(rate)
            self.ports.append(port)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((self.agent, 0))  # the collector only accepts the switch's mgmt address
        self.sock = sock
        self.started = time.monotonic()

    def _uptime_ms(self, now: float) -> int:
        return int((now - self.started) * 1000) & U32

    def _take(self, port: _Port, ring: Any, off: int, snap: int, wire: int, mac: int,
              outgoing: bool, now: float, at: datetime) -> None:
        port.seq += 1
        # The BPF program already cut the copy to header_bytes; min() guards a kernel that
        # ignored it.
        header = bytes(ring[off + mac:off + mac + min(snap, self.header_bytes)])
        s = FlowSample(
            "sflow", self.agent,
            None if outgoing else port.ifindex, port.ifindex if outgoing else None,
            port.rate, now, at, wire + FCS_BYTES, header,
            header_protocol=HEADER_ETHERNET, sample_sequence=port.seq & U32, source_id_type=0,
            source_id_index=port.ifindex, sample_pool=port.pool & U32,
            drops=port.drops & U32, stripped=FCS_BYTES,
        )
        self._queue(s, _FLOW_SAMPLE_FIXED + len(header) + (-len(header) % 4), now)

    def _walk(self, port: _Port, now: float, at: datetime) -> int:
        raw = port.raw
        ring = raw.ring
        assert ring is not None
        unpack = PKT_HDR.unpack_from
        seen = 0
        for base, num, first in raw.ready_blocks():
            off = base + first
            try:
                for _ in range(num):
                    nxt, snap, wire, mac = unpack(ring, off)
                    outgoing = ring[off + _SLL_PKTTYPE_OFF] == PACKET_OUTGOING
                    port.pool += 1
                    if wire > MAX_WIRE_FRAME:
                        port.oversize += 1
                    if outgoing:
                        port.egress += 1
                    else:
                        port.ingress += 1
                    port.skip -= 1
                    if port.skip <= 0:
                        port.skip = self._next_skip(port.rate)
                        self._take(port, ring, off, snap, wire, mac, outgoing, now, at)
                    off += nxt
            finally:
                raw.release(base)
            seen += num
        return seen

    # ---- export ---------------------------------------------------------------------------

    def _queue(self, s: Sample, size: int, now: float) -> None:
        if self.pending and self.pending_bytes + size > self.max_datagram_bytes:
            self.flush(now)
        if not self.pending:
            self.pending_since = now
        self.pending.append(s)
        self.pending_bytes += size

    def flush(self, now: float) -> None:
        if not self.pending:
            return
        assert self.sock is not None
        datagrams = pack_datagrams(self.pending, agent=self.agent,
                                   first_sequence=(self.datagram_seq + 1) & U32,
                                   uptime_ms=self._uptime_ms(now),
                                   max_datagram_bytes=self.max_datagram_bytes)
        flows = sum(1 for s in self.pending if type(s) is FlowSample)
        for d in datagrams:
            self.datagram_seq = (self.datagram_seq + 1) & U32
            try:
                self.bytes_sent += self.sock.sendto(d, self.collector)
                self.datagrams += 1
            except OSError:
                self.send_errors += 1  # a lost datagram is a sequence gap the collector counts
        self.flow_samples += flows
        self.counter_samples += len(self.pending) - flows
        self.pending = []
        self.pending_bytes = _DATAGRAM_HEAD_V4

    def _counters(self, port: _Port, now: float, at: datetime) -> None:
        base = Path("/sys/class/net") / port.name
        st = base / "statistics"

        def stat(name: str) -> int:
            return _read_int(st / name)

        rx_packets, multicast = stat("rx_packets"), stat("multicast")
        flags = _read_int(base / "flags")
        speed_mbps = _read_int(base / "speed", -1)
        try:
            oper = (base / "operstate").read_text().strip()
            duplex = (base / "duplex").read_text().strip()
        except OSError:
            oper = duplex = ""
        port.counter_seq += 1
        c = CounterSample(
            "sflow", self.agent, now, at, port.ifindex,
            6,  # ethernetCsmacd
            speed_mbps * 1_000_000 if speed_mbps > 0 else 0,
            {"full": 1, "half": 2}.get(duplex, 0),
            (1 if flags & _IFF_UP else 0) | (2 if oper == "up" else 0),
            # "in" is what the switch received on the port, i.e. what the server sent.
            stat("rx_bytes"), (rx_packets - multicast) & U32, multicast & U32,
            UNKNOWN_COUNTER, stat("rx_dropped") & U32, stat("rx_errors") & U32, UNKNOWN_COUNTER,
            stat("tx_bytes"), stat("tx_packets") & U32, UNKNOWN_COUNTER, UNKNOWN_COUNTER,
            stat("tx_dropped") & U32, stat("tx_errors") & U32,
            1 if flags & _IFF_PROMISC else 2,  # TruthValue: 1 true, 2 false
            sample_sequence=port.counter_seq & U32, source_id_type=0,
            source_id_index=port.ifindex,
        )
        self._queue(c, _COUNTER_SAMPLE_SIZE, now)

    def _read_drops(self) -> None:
        for p in self.ports:
            try:
                _pk, dropped = p.raw.stats()
            except OSError:
                continue
            p.drops += dropped

    def write_stats(self, final: bool = False) -> None:
        if self.stats_file is None:
            return
        data = {
            "pid": os.getpid(), "final": final, "packets": self.packets,
            "samples": self.flow_samples, "counter_samples": self.counter_samples,
            "datagrams": self.datagrams, "bytes_sent": self.bytes_sent,
            "send_errors": self.send_errors, "sequence": self.datagram_seq,
            "drops": sum(p.drops for p in self.ports),
            "oversize": sum(p.oversize for p in self.ports),
            "ports": {p.name: {"ifindex": p.ifindex, "rate": p.rate, "pool": p.pool,
                               "samples": p.seq, "drops": p.drops, "ingress": p.ingress,
                               "egress": p.egress, "oversize": p.oversize,
                               "counter_samples": p.counter_seq}
                      for p in self.ports},
        }
        tmp = self.stats_file + ".tmp"
        Path(tmp).write_text(json.dumps(data))
        os.replace(tmp, self.stats_file)  # readers never see half a file

    def run(self) -> None:
        poller = select.poll()
        for p in self.ports:
            poller.register(p.raw.fileno(), select.POLLIN | select.POLLERR)
        next_counters = self.started + self.counter_interval_s
        next_stats = self.started
        end = self.started + self.lifetime_s
        while not self.stop_requested:
            now = time.monotonic()
            if now >= end:
                break
            at = datetime.now(UTC)
            got = 0
            for p in self.ports:
                got += self._walk(p, now, at)
            self.packets += got
            if now >= next_counters:
                # Every port in one go, as agents poll their counters on one tick.
                next_counters = now + self.counter_interval_s
                for p in self.ports:
                    self._counters(p, now, at)
            if self.pending and now - self.pending_since >= self.flush_interval_s:
                self.flush(now)
            if now >= next_stats:
                next_stats = now + 0.2
                self._read_drops()
                self.write_stats()
            if not got:
                # Sleep until a ring block retires, or the next flush or counter tick is due.
                wait = min(next_counters, next_stats) - now
                if self.pending:
                    wait = min(wait, self.pending_since + self.flush_interval_s - now)
                poller.poll(max(1, min(100, int(wait * 1000))))
        now = time.monotonic()
        self.flush(now)
        self._read_drops()
        self.write_stats(final=True)

    def close(self) -> None:
        for p in self.ports:
            p.raw.close()
        if self.sock is not None:
            self.sock.close()
            self.sock = None


# ---- the test process's side ---------------------------------------------------------------

@dataclass(frozen=True)
class ExporterCounters:
    """What the exporter did, as its stats file last said."""

    packets: int = 0  # frames the sampler saw, all ports
    samples: int = 0  # flow samples sent
    counter_samples: int = 0
    datagrams: int = 0
    bytes_sent: int = 0
    send_errors: int = 0
    drops: int = 0  # kernel ring drops: frames the sampler never saw
    sequence: int = 0  # the last datagram sequence number sent
    oversize: int = 0  # frames longer than a wire frame (GSO trains on the veths)
    final: bool = False
    ports: Mapping[str, Mapping[str, int]] = field(default_factory=dict)


class SflowExporterHandle:
    """A running lab exporter: its PID, the ports' ifIndexes, live counters, stop()."""

    def __init__(self, lab: Lab, proc: subprocess.Popen[str], stats_file: Path, agent: str,
                 collector: tuple[str, int], rates: Mapping[str, int],
                 ifindex: Mapping[str, int]) -> None:
        self.lab = lab
        self.proc = proc
        self.stats_file = stats_file
        self.agent = agent
        self.collector = collector
        self.rates = dict(rates)
        self.ifindex = dict(ifindex)
        self._final: ExporterCounters | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc.poll() is None and pid_alive(self.proc.pid)

    def port_key(self, port: int | str) -> tuple[str, int]:
        """The detectors' (agent, ifIndex) for a server index or port name."""
        name = port if isinstance(port, str) else self.lab.port_name(port)
        return (self.agent, self.ifindex[name])

    @property
    def counters(self) -> ExporterCounters:
        if self._final is not None:
            return self._final
        try:
            data = json.loads(self.stats_file.read_text())
        except (OSError, ValueError):
            return ExporterCounters()
        return ExporterCounters(**{k: v for k, v in data.items() if k != "pid"})

    def stop(self, timeout_s: float = 5.0) -> ExporterCounters:
        """SIGTERM by PID (it flushes and writes final counters), SIGKILL if it hangs."""
        if self._final is not None:
            return self._final
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        err = self.proc.stderr.read() if self.proc.stderr is not None else ""
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        self._final = self.counters
        if self.proc.returncode not in (0, -signal.SIGTERM) or not self._final.final:
            raise LabError(f"sflow exporter pid {self.proc.pid} ended badly "
                           f"(rc={self.proc.returncode}): {err.strip()}")
        return self._final


def start_sflow_exporter(
    lab: Lab,
    collector: tuple[str, int],
    sampling_rate: int | Mapping[int | str, int] = 64,
    ports: Sequence[int | str] | None = None,
    *,
    agent: str | None = None,
    header_bytes: int = DEFAULT_HEADER_BYTES,
    counter_interval_s: float = 5.0,
    flush_interval_s: float = 0.1,
    mode: str = "jitter",
    seed: int | None = None,
    lifetime_s: float = MAX_LIFETIME_S,
    timeout_s: float = 10.0,
) -> SflowExporterHandle:
    """Start the lab sFlow agent in the switch namespace; returns once its rings are open.

    `ports` are server indices or port names (default: every customer port). `sampling_rate`
    is one 1-in-N for all, or per port (index or name) with key 0 as the default, as switches
    configure it per interface. `mode` is one of SAMPLING_MODES. `agent` defaults to the
    switch's mgmt address, which is also the datagrams' UDP source.
    """
    names = [p if isinstance(p, str) else lab.port_name(p)
             for p in (ports if ports is not None else range(1, lab.n_servers + 1))]
    if isinstance(sampling_rate, int):
        rates = {n: sampling_rate for n in names}
    else:
        by_name = {(k if isinstance(k, str) else lab.port_name(k)): v
                   for k, v in sampling_rate.items() if k != 0}
        default = sampling_rate.get(0)
        missing = [n for n in names if n not in by_name and default is None]
        if missing:
            raise ValueError(f"no sampling rate for {missing}")
        rates = {n: by_name.get(n, default or 0) for n in names}
    agent = agent or lab.mgmt_addr
    stats_file = lab.workdir / f"sflow-exporter-{len(lab.started_pids)}.json"
    argv = [sys.executable, "-m", "tests.lab.sflow_exporter",
            "--collector", f"{collector[0]}:{collector[1]}", "--agent", agent,
            "--ports", *(f"{n}:{r}" for n, r in rates.items()),
            "--header-bytes", str(header_bytes), "--counter-interval", str(counter_interval_s),
            "--flush-interval", str(flush_interval_s), "--mode", mode,
            "--stats-file", str(stats_file), "--lifetime", str(lifetime_s)]
    if seed is not None:
        argv += ["--seed", str(seed)]
    proc = lab.spawn(lab.switch_ns, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                     text=True)
    assert proc.stdout is not None
    ready: dict[str, Any] = {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        r, _, _ = select.select([proc.stdout], [], [], 0.1)
        if r:
            line = proc.stdout.readline()
            if line.startswith("{"):
                ready = json.loads(line)
                break
            if not line:  # EOF: it died before opening its rings
                break
    if ready.get("event") != "ready":
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
        err = proc.stderr.read() if proc.stderr is not None else ""
        raise LabError(f"sflow exporter did not start: {err.strip()}")
    return SflowExporterHandle(lab, proc, stats_file, agent, collector, rates, ready["ifindex"])


# ---- the namespace side's entry point ------------------------------------------------------

def _parse_ports(specs: Sequence[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for spec in specs:
        name, _, rate = spec.partition(":")
        out[name] = int(rate) if rate else 64
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tests.lab.sflow_exporter")
    p.add_argument("--collector", required=True, help="HOST:PORT")
    p.add_argument("--agent", required=True, help="agent address, also the UDP source")
    p.add_argument("--ports", nargs="+", required=True, help="NAME[:N] per port, N = 1-in-N")
    p.add_argument("--header-bytes", type=int, default=DEFAULT_HEADER_BYTES)
    p.add_argument("--counter-interval", type=float, default=5.0)
    p.add_argument("--flush-interval", type=float, default=0.1)
    p.add_argument("--mode", choices=SAMPLING_MODES, default="jitter")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stats-file", default=None)
    p.add_argument("--lifetime", type=float, default=MAX_LIFETIME_S)
    a = p.parse_args(argv)
    host, _, port = a.collector.rpartition(":")
    ex = Exporter(collector=(host, int(port)), agent=a.agent, ports=_parse_ports(a.ports),
                  header_bytes=a.header_bytes, counter_interval_s=a.counter_interval,
                  flush_interval_s=a.flush_interval, mode=a.mode, seed=a.seed,
                  stats_file=a.stats_file, lifetime_s=a.lifetime)

    def on_term(signum: int, frame: FrameType | None) -> None:
        ex.stop_requested = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    try:
        ex.open()
        ex.write_stats()
        print(json.dumps({"event": "ready", "pid": os.getpid(), "agent": a.agent,
                          "ifindex": {p.name: p.ifindex for p in ex.ports}}), flush=True)
        ex.run()
    finally:
        ex.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
