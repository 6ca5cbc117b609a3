"""Benchmark: the sFlow path after receive, old (per datagram) and batch, at 9,600 servers.

A fleet of 200 sFlow agents x 48 ports (one server per port, one IPv4 and one IPv6 address
each, contract_ips 2, sampling 1-in-16) sends a healthy mix (TCP replies and SYNs, DNS, ICMP
in 802.1Q, IPv6 UDP), and 8 servers flood UDP (their ports sampled 1-in-4096). The same
datagrams, stamped with the same receive times (15 us apart: ~470 k samples/s offered), go
through:

- old: SflowCollector.datagram_received per datagram (allow-list, decode_datagram, counters,
  sequence trackers) -> AbuseService's sample filter -> AbuseDetector.ingest, and
  AbuseDetector.evaluate (screen off: findings() for every dirty server) every 0.25 s of
  receive time (the daemon's evaluate_interval_s);
- batch: SflowCollector.datagrams_received per batch (decode_batch, the same counters) -> the
  same filter and ingest, and evaluate with its screen (findings() only where the screen cannot
  rule a finding out).

Code both paths share (ingest, _ServerState.prune) is the current tree's, so "old" is the old
entry points on today's detector, not the previous release. Separately, one evaluate() call with
all 9,600 servers dirty, screen off and on, after the same traffic; and the bare struct walk
(bench/sflow.py's) over the same datagrams, for scale.

Both run interleaved in the same process, fresh per repetition (detector and collector are
built before the timer starts: that is configuration time); figures are samples per
CPU-second (time.process_time) and the median of the repetitions. Before timing, one run of
each is checked to give the same counters and the same detections. Receive (the socket) is not
in either figure. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from struct import Struct
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rackwarden.drivers.sflow.collector import SflowCollector  # noqa: E402
from rackwarden.policies.detect import AbuseDetector, Detection, ServerSpec  # noqa: E402
from rackwarden.policies.flowfacts import FlowSample  # noqa: E402

from bench.sflow import struct_walk  # noqa: E402

AGENTS = 200
PORTS = 48
UPLINK = 49
RATE = 16
FLOOD_RATE = 4096  # the flooders' ports sample 1-in-4096: ~200 k pps of UDP from each
DATAGRAM_SPACING_S = 15e-6
EVALUATE_S = 0.25
AT0 = datetime(2026, 12, 1, tzinfo=UTC)
SNAPLEN = 128

_ETH = Struct("!6s6sH")
_VLAN = Struct("!HH")
_IP4 = Struct("!BBHHHBBH4s4s")
_IP6 = Struct("!IHBB16s16s")
_TCP = Struct("!HHIIBBHHH")
_UDP = Struct("!HHHH")
_ICMP = Struct("!BBHHH")
_FLOW = Struct("!IIIIIIIIIIIIIIII")  # sample type/len, 8 fixed words, record type/len, 4 raw words
_HEAD = Struct("!II4sIIII")


def _agent(a: int) -> bytes:
    return bytes((10, 200, a // 256, a % 256))


def _server_ip4(g: int) -> bytes:
    return bytes((10, 1 + g // 65536, (g // 256) % 256, g % 256))


def _server_ip6(g: int) -> bytes:
    return bytes.fromhex("20010db8000000000000000000000000")[:12] + g.to_bytes(4, "big")


def _mac(g: int) -> bytes:
    return bytes((2, 0)) + g.to_bytes(4, "big")


GW = bytes.fromhex("02ffffffff01")
HOSTS = [bytes((198, 51, 100, 10 + i)) for i in range(10)]
RESOLVERS = [bytes((192, 0, 2, 53)), bytes((192, 0, 2, 54))]
V6_PEER = bytes.fromhex("20010db8ffff00000000000000000001")


def _frame(g: int, j: int, flood: bool) -> tuple[bytes, int, bool]:
    """(header bytes, frame length, sent by the server) for server g's j-th sample."""
    sent = j % 2 == 0 or flood
    me4, me6, mac = _server_ip4(g), _server_ip6(g), _mac(g)
    size = (64, 120, 590, 1500)[(j // 2) % 4]
    kind = j % 10 if not flood else 5
    src_mac, dst_mac = (mac, GW) if sent else (GW, mac)
    if kind < 5:
        host = HOSTS[(j // 2) % 10]
        if sent:
            syn = (j // 2) % 3 == 0
            sport, dport = (40000 + j % 2000, (80, 443, 22)[j % 3]) if syn else (443, 50000 + j % 999)
            flags = 0x02 if syn else 0x18
            ip = _IP4.pack(0x45, 0, size - 14, 1, 0, 64, 6, 0, me4, host)
        else:
            sport, dport, flags = 50000 + j % 999, 443, 0x10
            ip = _IP4.pack(0x45, 0, size - 14, 1, 0, 64, 6, 0, host, me4)
        l4 = _TCP.pack(sport, dport, 1, 1, 0x50, flags, 65535, 0, 0)
        pkt = _ETH.pack(dst_mac, src_mac, 0x0800) + ip + l4
    elif kind < 8:
        res = RESOLVERS[j % 2]
        if sent:
            ip = _IP4.pack(0x45, 0, size - 14, 1, 0, 64, 17, 0, me4, res)
            l4 = _UDP.pack(30000 + j % 3000, 53, size - 34, 0)
        else:
            ip = _IP4.pack(0x45, 0, size - 14, 1, 0, 64, 17, 0, res, me4)
            l4 = _UDP.pack(53, 30000 + j % 3000, size - 34, 0)
        pkt = _ETH.pack(dst_mac, src_mac, 0x0800) + ip + l4
    elif kind == 8:
        src, dst = (me4, HOSTS[0]) if sent else (HOSTS[0], me4)
        ip = _IP4.pack(0x45, 0, size - 18, 1, 0, 64, 1, 0, src, dst)
        pkt = (_ETH.pack(dst_mac, src_mac, 0x8100) + _VLAN.pack(100, 0x0800) + ip
               + _ICMP.pack(8 if sent else 0, 0, 0, 1, j))
    else:
        src, dst = (me6, V6_PEER) if sent else (V6_PEER, me6)
        pkt = (_ETH.pack(dst_mac, src_mac, 0x86DD) + _IP6.pack(6 << 28, size - 54, 17, 64, src, dst)
               + _UDP.pack(4000, 443, size - 54, 0))
    pkt = (pkt + b"\0" * SNAPLEN)[:min(size, SNAPLEN)]
    return pkt, size, sent


def build_corpus(samples_per_port: int, flooders: int = 8,
                 agents: int = AGENTS) -> tuple[list[bytes], list[ServerSpec], int]:
    """Datagrams interleaved across agents, sequence-numbered per agent and per source."""
    flooding = {g * 1201 % (agents * PORTS) for g in range(flooders)}
    per_agent: list[list[bytes]] = [[] for _ in range(agents)]
    seqs = [[0] * (PORTS + 1) for _ in range(agents)]
    nsamples = 0
    for j in range(samples_per_port):
        for a in range(agents):
            for p in range(1, PORTS + 1):
                g = a * PORTS + p - 1
                hdr, size, sent = _frame(g, j, g in flooding)
                inp, outp = (p, UPLINK) if sent else (UPLINK, p)
                seqs[a][p] += 1
                seq = seqs[a][p]
                hlen = len(hdr)
                pad = -hlen % 4
                rec_len = 16 + hlen + pad
                sample_len = 32 + 8 + rec_len
                rate = FLOOD_RATE if g in flooding else RATE
                per_agent[a].append(_FLOW.pack(
                    1, sample_len, seq, p, rate, seq * rate, 0, inp, outp, 1,
                    1, rec_len, 1, size, 4, hlen) + hdr + b"\0" * pad)
                nsamples += 1
    datagrams_by_agent: list[list[bytes]] = []
    for a in range(agents):
        out = []
        enc = per_agent[a]
        for dseq, i in enumerate(range(0, len(enc), 7), start=1):
            chunk = enc[i:i + 7]
            out.append(_HEAD.pack(5, 1, _agent(a), 0, dseq, 1000 + dseq, len(chunk)) + b"".join(chunk))
        datagrams_by_agent.append(out)
    # Every agent sends as many datagrams: interleave them round-robin, as they arrive.
    datagrams = [d for row in zip(*datagrams_by_agent, strict=True) for d in row]
    specs = []
    from socket import AF_INET6, inet_ntoa, inet_ntop
    for a in range(agents):
        for p in range(1, PORTS + 1):
            g = a * PORTS + p - 1
            specs.append(ServerSpec(f"s{g}", frozenset({(inet_ntoa(_agent(a)), p)}),
                                    frozenset({inet_ntoa(_server_ip4(g)),
                                               inet_ntop(AF_INET6, _server_ip6(g))}),
                                    contract_ips=2))
    return datagrams, specs, nsamples


class _Clock:
    """The receive time the driver sets before each datagram (the old path reads it)."""

    def __init__(self) -> None:
        self.t = 0.0
        self.a = AT0

    def now(self) -> float:
        return self.t

    def at(self) -> datetime:
        return self.a


def _stamps(n: int) -> tuple[list[float], list[datetime]]:
    nows = [1000.0 + i * DATAGRAM_SPACING_S for i in range(n)]
    return nows, [AT0 + timedelta(seconds=x - 1000.0) for x in nows]


def _filter(detector: AbuseDetector) -> Callable[[Sequence[Any]], None]:
    def on_samples(samples: Sequence[Any]) -> None:  # AbuseService.on_samples
        detector.ingest([s for s in samples if type(s) is FlowSample])
    return on_samples


Run = tuple[SflowCollector, AbuseDetector, list[Detection]]


def make_old(specs: list[ServerSpec]) -> tuple[SflowCollector, AbuseDetector, _Clock]:
    """Built before the clock starts: detector set-up is configuration time, not traffic."""
    det = AbuseDetector(specs, screen=False)
    clock = _Clock()
    col = SflowCollector(allowed_agents=["10.200.0.0/16"], on_samples=_filter(det), clock=clock)
    return col, det, clock


def make_batch(specs: list[ServerSpec]) -> tuple[SflowCollector, AbuseDetector, _Clock]:
    det = AbuseDetector(specs)
    clock = _Clock()
    col = SflowCollector(allowed_agents=["10.200.0.0/16"], on_samples=_filter(det), clock=clock)
    return col, det, clock


def run_old(built: tuple[SflowCollector, AbuseDetector, _Clock], datagrams: list[bytes],
            nows: list[float], ats: list[datetime]) -> Run:
    col, det, clock = built
    found: list[Detection] = []
    next_eval = nows[0] + EVALUATE_S
    addrs = _addrs()
    recv = col.datagram_received
    for i, d in enumerate(datagrams):
        now = nows[i]
        if now >= next_eval:
            found += det.evaluate(next_eval, ats[i])
            next_eval += EVALUATE_S
        clock.t, clock.a = now, ats[i]
        recv(d, addrs[_agent_of(d)])
    found += det.evaluate(next_eval, ats[-1])
    return col, det, found


def _addrs() -> list[tuple[str | int, ...]]:
    return [(f"10.200.{a // 256}.{a % 256}", 6343) for a in range(AGENTS)]


def _agent_of(d: bytes) -> int:
    return d[10] * 256 + d[11]


def run_batch(built: tuple[SflowCollector, AbuseDetector, _Clock], datagrams: list[bytes],
              nows: list[float], ats: list[datetime], batch: int) -> Run:
    col, det, _ = built
    found: list[Detection] = []
    next_eval = nows[0] + EVALUATE_S
    addrs = _addrs()
    i = 0
    n = len(datagrams)
    while i < n:
        # A batch ends where an evaluation falls due, as the receive thread hands over what it
        # has when the loop's evaluate timer runs.
        j = min(n, i + batch)
        if nows[j - 1] >= next_eval:
            while j > i and nows[j - 1] >= next_eval:
                j -= 1
            if j == i:
                found += det.evaluate(next_eval, ats[i])
                next_eval += EVALUATE_S
                continue
        col.datagrams_received([(datagrams[k], addrs[_agent_of(datagrams[k])], nows[k], ats[k])
                                for k in range(i, j)])
        i = j
    found += det.evaluate(next_eval, ats[-1])
    return col, det, found


def _counters(col: SflowCollector) -> dict[str, Any]:
    return {
        "datagrams": col.datagrams_total, "by_agent": dict(col.datagrams_by_agent),
        "errors": dict(col.decode_errors), "skipped": dict(col.skipped),
        "flows": col.flow_samples_total, "counters": col.counter_samples_total,
        "lost": dict(col.sequence.lost), "sample_lost": dict(col.sample_sequence.lost),
        "resets": dict(col.sample_sequence.resets),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--samples-per-port", type=int, default=60,
                    help="flow samples per server port (9,600 ports)")
    ap.add_argument("--batch", type=int, default=1024, help="datagrams per batch")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()

    t0 = time.perf_counter()
    datagrams, specs, nsamples = build_corpus(args.samples_per_port)
    nows, ats = _stamps(len(datagrams))
    print(f"corpus: {len(specs)} servers on {AGENTS} agents, {len(datagrams)} datagrams, "
          f"{nsamples} flow samples ({nsamples / len(datagrams):.2f}/datagram), "
          f"{nows[-1] - nows[0]:.2f} s of receive time, built in {time.perf_counter() - t0:.1f} s")

    # Same answers first: counters, detections, detector stats.
    col_a, det_a, found_a = run_old(make_old(specs), datagrams, nows, ats)
    col_b, det_b, found_b = run_batch(make_batch(specs), datagrams, nows, ats, args.batch)
    assert _counters(col_a) == _counters(col_b), "counters differ"
    assert found_a == found_b, "detections differ"
    assert det_a.stats == det_b.stats, "detector stats differ"
    assert col_a.flow_samples_total == nsamples
    print(f"check: same counters, same {len(found_a)} detections "
          f"({len({d.server for d in found_a})} servers) on both paths")

    old: list[float] = []
    new: list[float] = []
    for _ in range(args.reps):
        built = make_old(specs)
        t = time.process_time()
        run_old(built, datagrams, nows, ats)
        old.append(nsamples / (time.process_time() - t))
        built = make_batch(specs)
        t = time.process_time()
        run_batch(built, datagrams, nows, ats, args.batch)
        new.append(nsamples / (time.process_time() - t))
    o, b = statistics.median(old), statistics.median(new)

    # One evaluate() with every server dirty: the cost the notes measured at 224 ms.
    _, det, _ = run_batch(make_batch(specs), datagrams, nows, ats, args.batch)
    when = nows[-1] + EVALUATE_S
    ev: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(5):
        for screen in (False, True):
            det.screen = screen
            for st in det._states.values():
                st.dirty = True
            t = time.process_time()
            det.evaluate(when, ats[-1])
            ev[screen].append(time.process_time() - t)
    ev_old, ev_new = statistics.median(ev[False]) * 1e3, statistics.median(ev[True]) * 1e3

    per_source: Counter[int] = Counter()
    walked = sum(struct_walk(d, per_source) for d in datagrams)
    walk: list[float] = []
    for _ in range(args.reps):
        t = time.process_time()
        for d in datagrams:
            struct_walk(d, per_source)
        walk.append(walked / (time.process_time() - t))
    w = statistics.median(walk)
    print(f"old path (per datagram):   {o:10,.0f} samples/CPU-s  (runs: "
          + ", ".join(f"{x:,.0f}" for x in old) + ")")
    print(f"batch path ({args.batch} datagrams): {b:10,.0f} samples/CPU-s  (runs: "
          + ", ".join(f"{x:,.0f}" for x in new) + ")")
    print(f"batch / old: {b / o:.2f}")
    print(f"evaluate(), {len(specs)} servers all dirty: {ev_old:.1f} ms screen off, "
          f"{ev_new:.1f} ms screen on ({ev_old / ev_new:.1f}x)")
    print(f"bare struct walk, same datagrams: {w:10,.0f} samples/CPU-s")
    print(json.dumps({
        "servers": len(specs),
        "samples": nsamples,
        "batch_datagrams": args.batch,
        "old_path_samples_per_cpu_s": round(o),
        "batch_path_samples_per_cpu_s": round(b),
        "ratio_batch_vs_old": round(b / o, 3),
        "evaluate_ms_screen_off": round(ev_old, 1),
        "evaluate_ms_screen_on": round(ev_new, 1),
        "struct_walk_samples_per_cpu_s": round(w),
        "python": sys.version.split()[0],
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
