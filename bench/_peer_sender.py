"""The paced sFlow sender of bench/peer_fastnetmon.py, in a process of its own.

Its CPU is charged to neither tool. It builds the fleet's stream with the project's encoder
(pack_datagrams over FlowSamples made from bench/sflow_batch.py's frames) and sends every
datagram twice over loopback, once to each tool, from a socket bound to the datagram's own
agent address (127.200.a.b: all of 127/8 is loopback, nothing to configure), so RackWarden's
allow-list (the switches' sflow_agent) accepts it as a switch's.

Commands arrive on stdin as JSON lines, answers leave on stdout as JSON lines:
{"rate": datagrams/s, "seconds": s, "flood": server number or null, "flood_at": s}
-> {"sent_datagrams", "sent_samples", "elapsed_s", "flood_start", "send_errors", ...}.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from struct import Struct

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rackwarden.drivers.packets import flow_sample_from_frame  # noqa: E402
from rackwarden.drivers.sflow.encoder import pack_datagrams  # noqa: E402

from bench.sflow_batch import _frame  # noqa: E402

AT = datetime(2026, 12, 1, tzinfo=UTC)
RATE = 16  # background ports sample 1-in-16
FLOOD_RATE = 1024  # the flooder's port samples 1-in-1024
UPLINK = 49
SNAPLEN = 128
FLOOD_SOURCE_OFFSET = 1000  # the flood's samples carry their own data source id (see _flood)
_U32 = Struct("!I")
_U32X2 = Struct("!II")


def agent_ip(a: int) -> str:
    return f"127.200.{a // 256}.{a % 256}"


def server_ip(g: int) -> str:
    """Server g's address: bench/sflow_batch.py's numbering (10.1.0.0 upwards)."""
    return f"10.{1 + g // 65536}.{(g // 256) % 256}.{g % 256}"


def server_id(g: int) -> str:
    return f"s{g:05d}"


@dataclass(slots=True)
class Datagram:
    """One encoded datagram and where its sequence numbers sit, to renumber each pass."""

    buf: bytearray
    agent: int
    dseq: int
    sample_offsets: list[int]  # each flow sample's sequence number; its sample_pool is 12 on
    sample_seqs: list[int]
    sample_rates: list[int]


def _samples(a: int, g: int, p: int, js: range, flood: bool) -> list:  # type: ignore[type-arg]
    agent = agent_ip(a)
    out = []
    for j in js:
        # No IPv6 frames (sflow_batch's kind 9): the fleet's servers have one IPv4 address.
        hdr, size, sent = _frame(g, j + 1 if j % 10 == 9 else j, flood)
        inp, outp = (p, UPLINK) if sent else (UPLINK, p)
        rate = FLOOD_RATE if flood else RATE
        s = flow_sample_from_frame(hdr, source="sflow", agent=agent, now=0.0, at=AT,
                                   frame_length=size, sampling_rate=rate, input_ifindex=inp,
                                   output_ifindex=outp, snaplen=SNAPLEN)
        seq = j + 1
        source = p + (FLOOD_SOURCE_OFFSET if flood else 0)
        out.append(replace(s, sample_sequence=seq, source_id_type=0, source_id_index=source,
                           sample_pool=seq * rate, drops=0))
    return out


def _index(datagrams: list[bytes], agent: int) -> list[Datagram]:
    """Where the datagram and flow-sample sequence numbers are (IPv4 agent: 28-byte header)."""
    out = []
    for d in datagrams:
        count = _U32.unpack_from(d, 24)[0]
        off = 28
        offs, seqs, rates = [], [], []
        for _ in range(count):
            fmt, length = _U32X2.unpack_from(d, off)
            if fmt == 1:
                offs.append(off + 8)
                seqs.append(_U32.unpack_from(d, off + 8)[0])
                rates.append(_U32.unpack_from(d, off + 16)[0])
            off += 8 + length
        out.append(Datagram(bytearray(d), agent, _U32.unpack_from(d, 16)[0], offs, seqs, rates))
    return out


def build_background(agents: int, ports: int, samples_per_port: int) -> list[Datagram]:
    """Every agent's datagrams for one pass, interleaved round-robin as they would arrive."""
    per_agent = []
    for a in range(agents):
        samples = []
        for j in range(samples_per_port):
            for p in range(1, ports + 1):
                samples += _samples(a, a * ports + p - 1, p, range(j, j + 1), False)
        per_agent.append(_index(pack_datagrams(samples, agent=agent_ip(a)), a))
    out: list[Datagram] = []
    for k in range(max(len(x) for x in per_agent)):
        out.extend(x[k] for x in per_agent if k < len(x))
    return out


def build_flood(g: int, ports: int, samples: int) -> list[Datagram]:
    """Server g's flood: UDP sent at a fixed rate, its own datagrams (sub-agent 1, so the
    agent's datagram sequence stays whole) and its own data source id (so the port's
    background sample sequence stays whole)."""
    a, p = divmod(g, ports)
    enc = pack_datagrams(_samples(a, g, p + 1, range(samples), True), agent=agent_ip(a),
                         sub_agent_id=1)
    return _index(enc, a)


class _Pass:
    """The background as one buffer, renumbered in bulk once per pass: sFlow fields are 4-byte
    aligned and so is every datagram's length, so one big-endian uint32 view reaches every
    sequence number and pool. Per datagram the send loop then only slices and sends (~25 us
    per datagram with a per-sample renumbering in Python, which at 20k datagrams/s took half
    a core from the tools)."""

    def __init__(self, datagrams: list[Datagram], agents: int) -> None:
        self.blob = bytearray(b"".join(d.buf for d in datagrams))
        self.view = memoryview(self.blob)
        words = np.frombuffer(self.blob, dtype=">u4")
        self.words = words
        bounds, at = [], 0
        for d in datagrams:
            assert len(d.buf) % 4 == 0
            bounds.append((at, at + len(d.buf)))
            at += len(d.buf)
        self.bounds = bounds
        self.agents = [d.agent for d in datagrams]
        per_agent = np.bincount(np.array(self.agents), minlength=agents)
        self.dseq_idx = np.array([b[0] // 4 + 4 for b in bounds])
        self.dseq_base = np.array([d.dseq for d in datagrams], dtype=np.int64)
        self.dseq_step = per_agent[np.array(self.agents)].astype(np.int64)
        self.seq_idx = np.array([(b[0] + off) // 4 for b, d in zip(bounds, datagrams, strict=True)
                                 for off in d.sample_offsets])
        self.seq_base = np.array([x for d in datagrams for x in d.sample_seqs], dtype=np.int64)
        self.rates = np.array([x for d in datagrams for x in d.sample_rates], dtype=np.int64)
        self.samples = [len(d.sample_offsets) for d in datagrams]

    def renumber(self, passes: int, samples_per_port: int) -> None:
        """As pass number `passes`: the agent's datagram sequence and every source's sample
        sequence continue where the previous pass left them, the pool with the sequence (a pool
        that stood still while the sequence advanced would read as an agent whose effective
        sampling rate drifted, and the detector holds such a source's detections back)."""
        w = self.words
        w[self.dseq_idx] = (self.dseq_base + passes * self.dseq_step) & 0xFFFFFFFF
        seq = self.seq_base + passes * samples_per_port
        w[self.seq_idx] = seq & 0xFFFFFFFF
        w[self.seq_idx + 3] = (seq * self.rates) & 0xFFFFFFFF


class Sender:
    def __init__(self, agents: int, ports: int, samples_per_port: int, targets: list[int]) -> None:
        self.ports = ports
        self.background = build_background(agents, ports, samples_per_port)
        self.bg = _Pass(self.background, agents)
        self.samples_per_port = samples_per_port
        self.socks = []
        for a in range(agents):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((agent_ip(a), 0))
            self.socks.append(s)
        self.targets = [("127.0.0.1", t) for t in targets]
        self.pos = 0
        self.passes = 0

    def _send(self, d: Datagram, dseq: int, sample_add: int) -> int:
        """A flood datagram (few: renumbered one by one, as _Pass.renumber does in bulk)."""
        buf = d.buf
        _U32.pack_into(buf, 16, dseq & 0xFFFFFFFF)
        for off, base, rate in zip(d.sample_offsets, d.sample_seqs, d.sample_rates, strict=True):
            seq = base + sample_add
            _U32.pack_into(buf, off, seq & 0xFFFFFFFF)
            _U32.pack_into(buf, off + 12, (seq * rate) & 0xFFFFFFFF)
        return self._out(self.socks[d.agent], buf)

    def _out(self, sock: socket.socket, data: bytes | bytearray | memoryview) -> int:
        errors = 0
        for t in self.targets:
            try:
                sock.sendto(data, t)
            except OSError:
                errors += 1
        return errors

    def run(self, rate: float, seconds: float, flood: int | None, flood_at: float,
            flood_samples_per_s: float) -> dict[str, object]:
        bg = self.bg
        n = len(bg.bounds)
        view, bounds, agents, socks, counts = bg.view, bg.bounds, bg.agents, self.socks, bg.samples
        targets = self.targets
        fl = build_flood(flood, self.ports, 256) if flood is not None else []
        flood_dps = flood_samples_per_s / (sum(len(d.sample_offsets) for d in fl) / len(fl)) if fl else 0.0
        sent = fsent = samples = errors = 0
        flood_start: float | None = None
        t0 = time.perf_counter()
        end = t0 + seconds
        while True:
            now = time.perf_counter()
            if now >= end:
                break
            due = int((now - t0) * rate)
            while sent < due:
                pos = self.pos
                a, b = bounds[pos]
                sock = socks[agents[pos]]
                data = view[a:b]
                for t in targets:
                    try:
                        sock.sendto(data, t)
                    except OSError:
                        errors += 1
                samples += counts[pos]
                sent += 1
                self.pos = pos + 1
                if self.pos == n:
                    self.pos = 0
                    self.passes += 1
                    bg.renumber(self.passes, self.samples_per_port)
            if fl and now - t0 >= flood_at:
                fdue = 1 + int((now - t0 - flood_at) * flood_dps)
                while fsent < fdue:
                    if flood_start is None:
                        flood_start = time.time()
                    k, lap = divmod(fsent, len(fl))
                    d = fl[k]
                    errors += self._send(d, d.dseq + lap * len(fl), lap * 256)
                    samples += len(d.sample_offsets)
                    fsent += 1
            time.sleep(0.0005)
        elapsed = time.perf_counter() - t0
        return {"sent_datagrams": sent + fsent, "sent_samples": samples, "flood_datagrams": fsent,
                "elapsed_s": elapsed, "flood_start": flood_start, "send_errors": errors}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--agents", type=int, required=True)
    ap.add_argument("--ports", type=int, required=True)
    ap.add_argument("--samples-per-port", type=int, default=4)
    ap.add_argument("--targets", type=int, nargs="+", required=True, help="UDP ports on 127.0.0.1")
    args = ap.parse_args()
    sender = Sender(args.agents, args.ports, args.samples_per_port, args.targets)
    nsamples = sum(len(d.sample_offsets) for d in sender.background)
    print(json.dumps({"ready": True, "datagrams_per_pass": len(sender.background),
                      "samples_per_pass": nsamples}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        out = sender.run(cmd["rate"], cmd["seconds"], cmd.get("flood"), cmd.get("flood_at", 0.0),
                         cmd.get("flood_samples_per_s", 0.0))
        print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
