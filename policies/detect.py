"""Abuse detectors (CONTRACT_RULES R4–R8): sampled packets in, per-server Detections out."""

from __future__ import annotations

import ipaddress
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from .flowfacts import FlowSample

# Detector names: the `detector` label of rackwarden_detections_total and of the ledger.
FLOOD = "flood"
SPAM = "spam"
SCAN = "scan"
SPOOF = "spoof"
EXTRA_IP = "extra_ip"
UNDECLARED_PORT = "undeclared_port"
PROXY = "proxy"
DETECTORS: tuple[str, ...] = (FLOOD, SPAM, SCAN, SPOOF, EXTRA_IP, UNDECLARED_PORT, PROXY)
RULE_OF: Mapping[str, str] = {
    FLOOD: "R6", SPAM: "R5", SCAN: "R6", SPOOF: "R4", EXTRA_IP: "R4",
    UNDECLARED_PORT: "R8", PROXY: "R7",
}
# R9: which findings are attacks on other people's machines. Only these may be cut before the
# customer has been told (when the customer cannot be reached); spam, stolen addresses, proxies
# and undeclared ports wait out the grace period. The enforcement policy is the only reader.
ATTACKS_OTHERS: Mapping[str, bool] = {
    FLOOD: True, SCAN: True, SPAM: False, SPOOF: False, EXTRA_IP: False,
    UNDECLARED_PORT: False, PROXY: False,
}

Severity = Literal["info", "warning", "critical"]
PortKey = tuple[str, int]
"""(agent, ifIndex): the sFlow agent address, or the SPAN capture's name, and the switch port."""

_TCP, _UDP, _ICMP, _ICMP6 = 6, 17, 1, 58
_SYN, _RST, _ACK = 0x02, 0x04, 0x10
# ICMP types a host sends in answer to something it received: echo reply, unreachable,
# source quench, time exceeded, parameter problem. Counted as responses, not as initiated.
_ICMP4_RESPONSES = frozenset((0, 3, 4, 11, 12))
_ICMP6_ECHO_REPLY = 129
_FlowKey = tuple[int, str, str, int, int]  # protocol, src, dst, sport, dport


RATE_CHECK_SAMPLES = 256  # samples per sampling-rate judgement (see _check_rate)
RATE_CHECK_KEYS = 65536  # sFlow sources remembered by _check_rate; past it, it starts afresh


@dataclass(frozen=True, slots=True)
class DetectThresholds:
    """One contract template's detector settings; the defaults suit a 10 Mbps-capped 1U server.

    Rates are estimated on the wire (each sample weighted by its sampling rate); distinct
    counts are what was seen, a lower bound under sampling, so sampling never inflates them.
    """

    # Rate windows: sliding, in buckets, on the samples' own `now`.
    rate_window_s: float = 2.0
    bucket_s: float = 0.25
    # Outbound flood (R6). 10 Mbps of minimum-size frames is ~19.5k pps, so 10k pps of
    # initiated traffic is not a download's ACKs nor a busy web server's replies.
    flood_pps: float = 10_000.0
    flood_bps: float = 30_000_000.0  # 3x the default cap: overage alone is the cap policy's
    udp_pps: float = 5_000.0
    icmp_pps: float = 1_000.0
    syn_pps: float = 1_000.0
    # Responses (SYN-ACK, RST, ICMP errors, echo replies) count as initiated only beyond this
    # multiple of what the server received, so a flooded victim's answers never blame it.
    response_ratio: float = 1.5
    # Spam (R5): distinct destination hosts on the mail ports.
    mail_ports: frozenset[int] = frozenset((25, 465, 587))
    spam_window_s: float = 60.0
    spam_distinct_dsts: int = 20
    # Scan (R6): distinct destination hosts, or distinct ports on one host.
    scan_window_s: float = 30.0
    scan_distinct_hosts: int = 200
    scan_distinct_ports: int = 100
    # Where replies are visible (rate-1 SPAN), a scan's attempts mostly fail (no SYN-ACK);
    # below this failed share the fan-out looks like a busy client and is only reported.
    scan_failed_ratio: float = 0.5
    # Spoofing / IP theft (R4).
    spoof_window_s: float = 10.0
    spoof_min_samples: int = 5
    # Proxy (R7): inbound client connections to proxy ports, then outbound fan-out.
    proxy_ports: frozenset[int] = frozenset((1080, 3128, 3129, 8000, 8080, 8118, 8888, 9050))
    proxy_window_s: float = 60.0
    proxy_min_clients: int = 20
    proxy_min_fanout: int = 10
    proxy_follow_s: float = 2.0  # an outbound connection this soon after client traffic counts
    proxy_actionable: bool = False  # R7 is a heuristic: notify-only unless a template says so
    # Declared ports (R8).
    ports_window_s: float = 300.0
    ports_min_samples: int = 3
    # Confidence: before any detector may ask for a shutdown.
    min_samples: int = 20
    max_sampling_rate: int = 4096
    max_rate_drift: float = 2.0  # agent's effective 1-in-N vs its declared rate
    # Bounds and reporting.
    distinct_cap: int = 4096
    flow_table_cap: int = 1024
    top_flows: int = 10
    evidence_samples: int = 64
    repeat_s: float = 10.0  # re-emit a still-active detection at most this often
    clear_s: float = 10.0  # a detection ends after this long without its condition

    def __post_init__(self) -> None:
        if self.bucket_s <= 0 or self.rate_window_s < self.bucket_s:
            raise ValueError("need 0 < bucket_s <= rate_window_s")
        for name in ("spam_window_s", "scan_window_s", "spoof_window_s", "proxy_window_s",
                     "ports_window_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.distinct_cap < 1 or self.flow_table_cap < 1 or self.evidence_samples < 1:
            raise ValueError("caps must be at least 1")
        # Limits a finding's confidence is scaled by: 0 would divide by zero on the first sample.
        for name in ("spam_distinct_dsts", "scan_distinct_hosts", "scan_distinct_ports",
                     "proxy_min_clients", "proxy_min_fanout"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")


@dataclass(frozen=True, slots=True)
class ServerSpec:
    """What the detectors know about one server: where it is plugged in and what it may do."""

    id: str
    ports: frozenset[PortKey]
    ips: frozenset[str]
    template: str = "default"
    contract_ips: int = 1  # IPs the fee includes; more in use is reported for billing (R4)
    mail_server: bool = False
    declared_ports: frozenset[int] | None = None  # inbound service ports (R8); None: undeclared
    allowed_out_ports: frozenset[int] | None = None  # outbound service ports; None: any
    whitelist: tuple[str, ...] = ()  # destination networks never counted against it

    def __post_init__(self) -> None:
        # Normalize address text so "2001:DB8::1" and "2001:db8::1" compare equal.
        object.__setattr__(self, "ips", frozenset(str(ipaddress.ip_address(a)) for a in self.ips))
        for net in self.whitelist:
            ipaddress.ip_network(net, strict=False)


@dataclass(frozen=True, slots=True)
class Exemption:
    """An operator's time-limited waiver: `detector` None waives them all for the server."""

    server: str
    detector: str | None
    until_at: datetime
    reason: str = ""


@dataclass(frozen=True, slots=True)
class FlowSummary:
    """One flow of a detection's top list, estimated on the wire."""

    protocol: int
    src_ip: str
    dst_ip: str
    src_port: int
    dst_port: int
    packets: int
    octets: int
    samples: int


@dataclass(frozen=True, slots=True)
class Detection:
    """One detector's finding about one server, with the evidence an enforcer and a notice need.

    `actionable` means the detector may ask for a shutdown: the template allows it and the
    confidence checks passed (enough samples, believable sampling rate). `evidence` holds the
    sampled packets themselves (bounded), from which a pcap is written; `ports` are where the
    server is plugged in, to find its recent frames in a capture ring. `update` is False the
    first time a condition is reported, True when an active one is re-emitted. `onset` is the
    sample time the episode began, as far as the detector's window still shows it (see
    _ServerState.onset); `first_seen` is when it was first reported, so first_seen - onset
    is the detection latency. None where there is no episode in time (extra_ip counts
    addresses, not samples) or the detection was not built by AbuseDetector.
    """

    detector: str
    kind: str
    server: str
    rule: str
    severity: Severity
    actionable: bool
    confidence: float
    reason: str
    first_seen: float
    last_seen: float
    first_at: datetime
    last_at: datetime
    samples: int
    sampling_rate: int
    rates: Mapping[str, float]
    counts: Mapping[str, int]
    thresholds: Mapping[str, float]
    subjects: tuple[str, ...]
    saturated: bool
    top_flows: tuple[FlowSummary, ...]
    evidence: tuple[FlowSample, ...]
    ports: tuple[PortKey, ...]
    update: bool = False
    onset: float | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.server, self.detector, self.kind)

    @property
    def attacks_others(self) -> bool:
        """R9: the detector's own declaration, not the severity (every actionable one is critical)."""
        return ATTACKS_OTHERS[self.detector]


class _Distinct:
    """Keys seen within a sliding window, capped; evicting the oldest sets `saturated`.

    An OrderedDict ordered by last sight prunes from the front in O(expired): a plain dict
    would rescan its deleted slots on every prune. `group` counts keys per key[0] (ports per
    host) so the per-host maximum never needs a full scan of the keys.
    """

    __slots__ = ("window_s", "cap", "seen", "saturated_until", "groups")

    def __init__(self, window_s: float, cap: int, grouped: bool = False) -> None:
        self.window_s = window_s
        self.cap = cap
        self.seen: OrderedDict[object, float] = OrderedDict()
        self.saturated_until = float("-inf")
        self.groups: dict[object, int] | None = {} if grouped else None

    def add(self, key: object, now: float) -> None:
        seen = self.seen
        if key in seen:
            seen[key] = now
            seen.move_to_end(key)
            return
        if len(seen) >= self.cap:
            old, _t = seen.popitem(last=False)
            self._ungroup(old)
            self.saturated_until = now + self.window_s
        seen[key] = now
        if self.groups is not None:
            g = key[0]  # type: ignore[index]
            self.groups[g] = self.groups.get(g, 0) + 1

    def _ungroup(self, key: object) -> None:
        if self.groups is not None:
            g = key[0]  # type: ignore[index]
            left = self.groups.get(g, 0) - 1
            if left > 0:
                self.groups[g] = left
            else:
                self.groups.pop(g, None)

    def prune(self, now: float) -> None:
        cutoff = now - self.window_s
        seen = self.seen
        while seen:
            key, t = next(iter(seen.items()))
            if t >= cutoff:
                break
            del seen[key]
            self._ungroup(key)

    def __len__(self) -> int:
        return len(self.seen)

    def __contains__(self, key: object) -> bool:
        return key in self.seen

    def saturated(self, now: float) -> bool:
        return now < self.saturated_until

    def max_group(self) -> tuple[object, int]:
        if not self.groups:
            return (None, 0)
        g = max(self.groups, key=self.groups.__getitem__)
        return (g, self.groups[g])


# Bucket slots: initiated packets/bytes by kind, responses, samples, max sampling rate.
_B_ID, _B_PKTS, _B_BYTES, _B_UDP, _B_ICMP, _B_SYN, _B_RESP, _B_RESP_BYTES, _B_SAMPLES = range(9)
_B_RATE = 9
_B_LEN = 10
# The screen's rates are exact-int bounds; findings' are float sums, which may round up by a
# few ulps. Scaling the bound up by this much keeps the screen on the safe side of that.
_SCREEN_MARGIN = 1.000001


class _Buckets:
    """Per-bucket counters for a sliding rate window; rates divide by the whole window.

    `done` holds, as exact ints, the sums of the additive slots (_B_PKTS .. _B_RESP_BYTES) over
    every ring slot but `cur`, kept up to date when `cur` moves; done + cur bounds any
    window's totals from above (every value is >= 0), which is what evaluate's screen reads.
    """

    __slots__ = ("bucket_s", "n", "ring", "cur", "done")

    def __init__(self, window_s: float, bucket_s: float) -> None:
        self.bucket_s = bucket_s
        self.n = max(1, round(window_s / bucket_s))
        self.ring: list[list[float]] = [[-1.0] + [0.0] * (_B_LEN - 1) for _ in range(self.n)]
        self.cur = self.ring[0]
        self.done = [0] * _B_SAMPLES

    def at(self, now: float) -> list[float]:
        bid = float(int(now // self.bucket_s))
        cur = self.cur
        if cur[_B_ID] == bid:
            return cur
        b = self.ring[int(bid) % self.n]
        reuse = b[_B_ID] != bid
        if reuse and b[_B_ID] > bid:  # a late sample from before this bucket was reused: drop it
            return [bid] + [0.0] * (_B_LEN - 1)
        if b is not cur:
            # The old current slot joins the others summed in `done`, b leaves them (with the
            # counts it held before any reuse below).
            d = self.done
            for i in range(1, _B_SAMPLES):
                d[i] += int(cur[i]) - int(b[i])
        if reuse:
            b[:] = [bid] + [0.0] * (_B_LEN - 1)
        self.cur = b
        return b

    def upper(self, i: int) -> int:
        """An upper bound of totals(now)[i] for any now (i in _B_PKTS .. _B_RESP_BYTES)."""
        return self.done[i] + int(self.cur[i])

    def totals(self, now: float) -> list[float]:
        newest = int(now // self.bucket_s)
        oldest = newest - self.n + 1
        out = [0.0] * _B_LEN
        for b in self.ring:
            if oldest <= b[_B_ID] <= newest:
                for i in range(1, _B_RATE):
                    out[i] += b[i]
                if b[_B_RATE] > out[_B_RATE]:
                    out[_B_RATE] = b[_B_RATE]
        return out


@dataclass(slots=True)
class _Active:
    first_seen: float
    first_at: datetime
    last_seen: float
    last_at: datetime
    last_emit: float
    actionable: bool
    severity: Severity
    onset: float | None = None
    last: Detection | None = None
    # The latest finding held back by repeat_s; built into a Detection only when asked for,
    # because building sorts the flow table and evaluate runs after every capture batch.
    pending: tuple[_ServerState, _Finding, bool, float, Severity, int] | None = None


@dataclass(frozen=True, slots=True)
class _Finding:
    detector: str
    kind: str
    reason: str
    confident: bool  # passed the detector's own bar (distinct counts, sample counts)
    confidence: float
    samples: int
    rates: dict[str, float]
    counts: dict[str, int]
    thresholds: dict[str, float]
    subjects: tuple[str, ...] = ()
    saturated: bool = False
    flow_filter: Callable[[_FlowKey], bool] | None = None
    evidence: Sequence[FlowSample] = ()  # a tuple, or made on first read (VectorDetector)
    actionable_allowed: bool = True
    base_severity: Severity = "warning"


def _is_local_only(src: str) -> bool:
    """DHCP discovery (0.0.0.0), IPv6 DAD (::) and link-local sources are never theft."""
    if src == "0.0.0.0" or src == "::" or src.startswith("169.254."):
        return True
    return src[:3].lower() in ("fe8", "fe9", "fea", "feb")  # fe80::/10


class _ServerState:
    """Everything one server's detectors remember, all of it bounded."""

    def __init__(self, spec: ServerSpec, t: DetectThresholds) -> None:
        self.spec = spec
        self.t = t
        self.ips = spec.ips
        self.out = _Buckets(t.rate_window_s, t.bucket_s)
        self.inb = _Buckets(t.rate_window_s, t.bucket_s)
        cap = t.distinct_cap
        self.spam_dsts = _Distinct(t.spam_window_s, cap)
        self.scan_hosts = _Distinct(t.scan_window_s, cap)
        self.scan_pairs = _Distinct(t.scan_window_s, cap, grouped=True)
        self.scan_answered = _Distinct(t.scan_window_s, cap)
        self.spoof_srcs = _Distinct(t.spoof_window_s, cap)
        self.spoof_hits: deque[float] = deque(maxlen=max(t.spoof_min_samples * 4, 64))
        self.proxy_clients = _Distinct(t.proxy_window_s, cap)
        self.proxy_fanout = _Distinct(t.proxy_window_s, cap)
        self.undeclared = _Distinct(t.ports_window_s, 256)
        self.undeclared_hits: dict[str, int] = {}
        self.used_ips: set[str] = set()  # bounded by the assigned set it is drawn from
        self.last_proxy_in = float("-inf")
        self.seen_reply_window_until = float("-inf")  # inbound rate-1 traffic was visible
        self.flows: dict[_FlowKey, list[float]] = {}
        self.flows_other = 0
        ev = t.evidence_samples
        self.ev_flood: deque[FlowSample] = deque(maxlen=ev)
        self.ev_spam: deque[FlowSample] = deque(maxlen=ev)
        self.ev_scan: deque[FlowSample] = deque(maxlen=ev)
        self.ev_spoof: deque[FlowSample] = deque(maxlen=ev)
        self.ev_proxy: deque[FlowSample] = deque(maxlen=ev)
        self.ev_ports: deque[FlowSample] = deque(maxlen=ev)
        self.rate_suspect_until = float("-inf")
        self.distincts = (self.spam_dsts, self.scan_hosts, self.scan_pairs, self.scan_answered,
                          self.spoof_srcs, self.proxy_clients, self.proxy_fanout, self.undeclared)
        # No key in any window is older than `floor` (every add is stamped with the sample's
        # `now`, and outbound/inbound lower floor to it first), so while floor is within the
        # shortest window nothing can expire and prune skips the windows.
        self.floor = float("inf")
        self.floor_holds = True
        self.min_window = min(d.window_s for d in self.distincts)
        # evaluate's screen bounds the flood rates from above only while every count it sums
        # is >= 0 and responses cannot add to pps (response_ratio >= 0); otherwise this server
        # always gets the full findings().
        self.unscreened = not t.response_ratio >= 0
        self.whitelist = tuple(ipaddress.ip_network(n, strict=False) for n in spec.whitelist)
        self._wl_cache: dict[str, bool] = {}
        self.dirty = False
        self.last_flow_prune = float("-inf")

    # ---- hot path ------------------------------------------------------------------------

    def whitelisted(self, dst: str | None) -> bool:
        if not self.whitelist or dst is None:
            return False
        hit = self._wl_cache.get(dst)
        if hit is None:
            if len(self._wl_cache) >= 4096:
                self._wl_cache.clear()
            try:
                addr = ipaddress.ip_address(dst)
                hit = any(addr in n for n in self.whitelist)
            except ValueError:
                hit = False
            self._wl_cache[dst] = hit
        return hit

    def outbound(self, s: FlowSample, check_source: bool) -> None:
        t = self.t
        now = s.now
        if not now >= self.floor:  # (a NaN `now` lands here too)
            self._lower_floor(now)
        r = s.sampling_rate if s.sampling_rate > 0 else 1
        self.dirty = True
        src = s.src_ip
        if src is not None:
            if src in self.ips:
                if src not in self.used_ips:
                    self.used_ips.add(src)
            elif check_source and not _is_local_only(src):
                self.spoof_srcs.add(src, now)
                self.spoof_hits.append(now)
                self.ev_spoof.append(s)
        dst = s.dst_ip
        if self.whitelist and self.whitelisted(dst):
            return
        b = self.out.at(now)
        b[_B_SAMPLES] += 1
        if r > b[_B_RATE]:
            b[_B_RATE] = r
        proto = s.protocol
        flags = s.tcp_flags
        size = s.frame_length * r
        if size < 0:
            self.unscreened = True
        response = False
        syn = False
        if proto == _TCP:
            if flags is not None:
                if flags & _SYN:
                    if flags & _ACK:
                        response = True
                    else:
                        syn = True
                elif flags & _RST:
                    response = True
        elif proto == _ICMP:
            response = s.icmp_type in _ICMP4_RESPONSES
        elif proto == _ICMP6:
            it = s.icmp_type
            response = it is not None and (it < 128 or it == _ICMP6_ECHO_REPLY)
        if response:
            b[_B_RESP] += r
            b[_B_RESP_BYTES] += size
            self.ev_flood.append(s)  # a reflection's evidence is its responses
        else:
            b[_B_PKTS] += r
            b[_B_BYTES] += size
            if proto == _UDP:
                b[_B_UDP] += r
            elif proto == _ICMP or proto == _ICMP6:
                b[_B_ICMP] += r
            elif syn:
                b[_B_SYN] += r
            self.ev_flood.append(s)
        dport = s.dst_port
        sport = s.src_port
        # Flow table for the top-flows list: bounded; past the cap, new flows only count.
        if dst is not None:
            key = (proto or 0, src or "", dst, sport or 0, dport or 0)
            f = self.flows.get(key)
            if f is not None:
                f[0] += r
                f[1] += size
                f[2] += 1
                f[3] = now
            elif len(self.flows) < t.flow_table_cap:
                self.flows[key] = [r, size, 1, now]
            else:
                self.flows_other += r
        if dst is None:
            return
        if proto == _TCP and flags is not None:
            if syn:
                if dport in t.mail_ports and not self.spec.mail_server:
                    self.spam_dsts.add(dst, now)
                    self.ev_spam.append(s)
                self.scan_hosts.add(dst, now)
                self.scan_pairs.add((dst, dport), now)
                self.ev_scan.append(s)
                if now - self.last_proxy_in <= t.proxy_follow_s and dport not in t.proxy_ports:
                    self.proxy_fanout.add((dst, dport), now)
                    self.ev_proxy.append(s)
                allowed = self.spec.allowed_out_ports
                if allowed is not None and dport not in allowed:
                    self._undeclared(f"out/tcp/{dport}", now, s)
            elif flags & _SYN and sport is not None:  # SYN-ACK: it accepted a connection
                declared = self.spec.declared_ports
                if declared is not None and sport not in declared:
                    self._undeclared(f"in/tcp/{sport}", now, s)
            elif dport in t.mail_ports and not self.spec.mail_server and not flags & _RST:
                # Mid-connection mail traffic still names a destination when SYNs were not
                # sampled (sFlow); SPAN sees the SYN first, so this adds nothing there.
                self.spam_dsts.add(dst, now)
                self.ev_spam.append(s)
        elif proto == _UDP and dport is not None and sport is not None:
            self.scan_hosts.add(dst, now)
            self.scan_pairs.add((dst, dport), now)
            declared = self.spec.declared_ports
            if declared is not None and sport < 1024 and dport >= 1024 and sport not in declared:
                self._undeclared(f"in/udp/{sport}", now, s)
            allowed = self.spec.allowed_out_ports
            if allowed is not None and dport < 1024 and dport not in allowed:
                self._undeclared(f"out/udp/{dport}", now, s)

    def _lower_floor(self, now: float) -> None:
        if now != now:  # NaN: no bound holds any more, so prune always prunes
            self.floor_holds = False
        self.floor = now

    def _undeclared(self, what: str, now: float, s: FlowSample) -> None:
        self.undeclared.add(what, now)
        if len(self.undeclared_hits) < 256 or what in self.undeclared_hits:
            self.undeclared_hits[what] = self.undeclared_hits.get(what, 0) + 1
        self.ev_ports.append(s)

    def inbound(self, s: FlowSample) -> None:
        t = self.t
        now = s.now
        if not now >= self.floor:
            self._lower_floor(now)
        r = s.sampling_rate if s.sampling_rate > 0 else 1
        self.dirty = True
        b = self.inb.at(now)
        b[_B_PKTS] += r
        b[_B_BYTES] += s.frame_length * r
        b[_B_SAMPLES] += 1
        if r == 1:
            self.seen_reply_window_until = now + t.scan_window_s
        if s.protocol == _TCP:
            flags = s.tcp_flags
            if flags is None:
                return
            to_proxy_port = s.dst_port in t.proxy_ports and s.src_ip is not None
            if flags & _SYN:
                if flags & _ACK:
                    if s.src_ip is not None:
                        self.scan_answered.add((s.src_ip, s.src_port), now)
                elif to_proxy_port:
                    self.proxy_clients.add((s.src_ip, s.src_port), now)
                    self.ev_proxy.append(s)
            if to_proxy_port and not flags & _RST:
                # Any live client segment, not only its SYN: the upstream connection follows
                # the client's request (CONNECT, GET), which can come well after the handshake.
                self.last_proxy_in = now

    # ---- evaluation ----------------------------------------------------------------------

    def top_flows(self, pred: Callable[[_FlowKey], bool] | None, n: int) -> tuple[FlowSummary, ...]:
        items = [(k, v) for k, v in self.flows.items() if pred is None or pred(k)]
        items.sort(key=lambda kv: (-kv[1][0], kv[0]))
        return tuple(
            FlowSummary(k[0], k[1], k[2], k[3], k[4], int(v[0]), int(v[1]), int(v[2]))
            for k, v in items[:n]
        )

    def prune(self, now: float) -> None:
        if not self.floor_holds or self.floor < now - self.min_window:
            floor = float("inf")
            for d in self.distincts:
                if d.seen:
                    d.prune(now)
                    if d.seen:
                        floor = min(floor, min(d.seen.values()))
            self.floor = floor
        t = self.t
        if now - self.last_flow_prune >= t.bucket_s * 4:
            self.last_flow_prune = now
            horizon = now - max(t.rate_window_s, t.spoof_window_s)
            stale = [k for k, v in self.flows.items() if v[3] < horizon]
            for k in stale:
                del self.flows[k]
            if not self.flows:
                self.flows_other = 0
        if self.undeclared_hits:
            for what in [w for w in self.undeclared_hits if w not in self.undeclared]:
                del self.undeclared_hits[what]

    def screen(self, now: float) -> bool:
        """False only when findings(now) would return nothing; prunes as findings does.

        Every test is findings' own condition, or one it implies: a count before the window
        closes is at least the count after, and a rate from done + cur is at least the
        window's (_Buckets.upper), with a margin for findings' float sums. prune is idempotent
        at one `now`, so findings after screen gives what findings alone gives.
        """
        self.prune(now)
        t = self.t
        spec = self.spec
        if (self.unscreened or self.undeclared_hits or self.spoof_srcs.seen
                or len(self.used_ips) > spec.contract_ips):
            return True
        if not spec.mail_server and len(self.spam_dsts.seen) >= t.spam_distinct_dsts:
            return True
        if len(self.scan_hosts.seen) >= t.scan_distinct_hosts:
            return True
        if (len(self.scan_pairs.seen) >= t.scan_distinct_ports
                and self.scan_pairs.max_group()[1] >= t.scan_distinct_ports):
            return True
        if (len(self.proxy_clients.seen) >= t.proxy_min_clients
                and len(self.proxy_fanout.seen) >= t.proxy_min_fanout):
            return True
        # _Buckets.upper inline (done + cur), summed as floats: the margin covers the rounding.
        d = self.out.done
        c = self.out.cur
        w = t.rate_window_s / _SCREEN_MARGIN
        return bool(
            (d[_B_PKTS] + c[_B_PKTS] + d[_B_RESP] + c[_B_RESP]) / w >= t.flood_pps
            or (d[_B_BYTES] + c[_B_BYTES] + d[_B_RESP_BYTES] + c[_B_RESP_BYTES]) * 8 / w
            >= t.flood_bps
            or (d[_B_UDP] + c[_B_UDP]) / w >= t.udp_pps
            or (d[_B_ICMP] + c[_B_ICMP]) / w >= t.icmp_pps
            or (d[_B_SYN] + c[_B_SYN]) / w >= t.syn_pps)

    def onset(self, f: _Finding, now: float) -> float | None:
        """The sample time an episode began: the oldest sample the finding's window still
        counts (decisions come `now`, so now - onset is the detection latency).

        A flood starts at the first bucket of the rate window whose own rate of the kind is
        over the limit (quieter traffic before it is the server's ordinary load): at its first
        sample of the kind when the evidence ring still holds every sample since the bucket
        began, else at the bucket's start (at most bucket_s early). A count detector's episode
        starts at the oldest key (or hit) its window holds. Never before the window: older
        samples no longer count. None for extra_ip: a count of addresses, with no times.
        """
        t = self.t
        if f.detector == EXTRA_IP:
            return None
        if f.detector == FLOOD:
            limit = f.thresholds.get(f"{f.kind}_limit", 0.0)
            slot, scale = {"syn": (_B_SYN, 1), "udp": (_B_UDP, 1), "icmp": (_B_ICMP, 1),
                           "pps": (_B_PKTS, 1), "bps": (_B_BYTES, 8)}.get(f.kind, (_B_PKTS, 1))
            newest = int(now // self.out.bucket_s)
            oldest = newest - self.out.n + 1
            over = [b[_B_ID] for b in self.out.ring
                    if oldest <= b[_B_ID] <= newest and b[slot] * scale / self.out.bucket_s > limit]
            # None over the limit on its own (a pps flood of excess responses): the window's start.
            start = (min(over) if over else float(oldest)) * self.out.bucket_s
            # The evidence ring holds every flood sample since `start` when it never dropped
            # one or its oldest is older: then the first of the kind in that bucket is exact.
            kept = self.ev_flood
            if len(kept) < (kept.maxlen or 0) or (kept and kept[0].now < start):
                start = min((x.now for x in f.evidence if x.now >= start), default=start)
            return min(now, max(start, now - t.rate_window_s))
        windows = {SPAM: (self.spam_dsts,), SCAN: (self.scan_hosts, self.scan_pairs),
                   PROXY: (self.proxy_clients, self.proxy_fanout), UNDECLARED_PORT: (self.undeclared,)}
        firsts = [next(iter(d.seen.values())) for d in windows.get(f.detector, ()) if d.seen]
        if f.detector == SPOOF:
            firsts += [x for x in self.spoof_hits if x >= now - t.spoof_window_s][:1]
        return min([now, *(x for x in firsts if x == x)])

    def evidence(self, name: str,
                 keep: Callable[[FlowSample], bool] | None = None) -> Sequence[FlowSample]:
        """A finding's evidence: the samples of deque `name` (ev_flood ..) that `keep` takes."""
        return tuple(x for x in getattr(self, name) if keep is None or keep(x))

    def findings(self, now: float, owners: Mapping[str, str]) -> list[_Finding]:
        t = self.t
        self.prune(now)
        out: list[_Finding] = []
        w = t.rate_window_s
        o = self.out.totals(now)
        i = self.inb.totals(now)
        samples = int(o[_B_SAMPLES])
        # Responses beyond response_ratio x received are the server's own doing (reflection).
        excess_resp = max(0.0, o[_B_RESP] - t.response_ratio * i[_B_PKTS])
        resp_share = excess_resp / o[_B_RESP] if o[_B_RESP] else 0.0
        pps = (o[_B_PKTS] + excess_resp) / w
        bps = (o[_B_BYTES] + o[_B_RESP_BYTES] * resp_share) * 8 / w
        rates = {"pps": pps, "bps": bps, "udp_pps": o[_B_UDP] / w, "icmp_pps": o[_B_ICMP] / w,
                 "syn_pps": o[_B_SYN] / w, "response_pps": o[_B_RESP] / w,
                 "inbound_pps": i[_B_PKTS] / w, "inbound_bps": i[_B_BYTES] * 8 / w}
        conf_samples = min(1.0, samples / t.min_samples) if t.min_samples else 1.0
        for kind, value, limit, proto in (
            ("syn", rates["syn_pps"], t.syn_pps, _TCP),
            ("udp", rates["udp_pps"], t.udp_pps, _UDP),
            ("icmp", rates["icmp_pps"], t.icmp_pps, _ICMP),
            ("pps", pps, t.flood_pps, None),
            ("bps", bps, t.flood_bps, None),
        ):
            if value > limit:
                pred: Callable[[_FlowKey], bool] | None
                if proto is None:
                    pred = None
                elif proto == _ICMP:
                    pred = _is_icmp
                else:
                    pred = (lambda p: lambda k: k[0] == p)(proto)
                ev = self.evidence("ev_flood", None if proto is None else (
                    lambda p: lambda x: x.protocol == p or (p == _ICMP and x.protocol == _ICMP6)
                )(proto))
                out.append(_Finding(
                    FLOOD, kind,
                    f"outbound {kind} {value:,.0f}/s over {limit:,.0f}/s "
                    f"(estimated over {w:g} s)",
                    samples >= t.min_samples, conf_samples, samples, rates,
                    {"samples": samples}, {f"{kind}_limit": limit}, (), False, pred, ev,
                    base_severity="warning"))
                break  # one flood finding per server: the most specific kind that tripped
        spam_n = len(self.spam_dsts)
        if spam_n >= t.spam_distinct_dsts and not self.spec.mail_server:
            sat = self.spam_dsts.saturated(now)
            mail = t.mail_ports
            out.append(_Finding(
                SPAM, "smtp_fanout",
                f"{spam_n} distinct mail destinations in {t.spam_window_s:g} s "
                f"(limit {t.spam_distinct_dsts})",
                True, min(1.0, spam_n / (2 * t.spam_distinct_dsts)) * 0.5 + 0.5,
                spam_n, rates, {"distinct_destinations": spam_n},
                {"spam_distinct_dsts": t.spam_distinct_dsts},
                tuple(sorted(str(k) for k in list(self.spam_dsts.seen)[-20:])), sat,
                lambda k: k[0] == _TCP and k[4] in mail, self.evidence("ev_spam"),
                base_severity="warning"))
        hosts = len(self.scan_hosts)
        top_host, ports = self.scan_pairs.max_group()
        scan_kind = None
        if ports >= t.scan_distinct_ports:
            scan_kind, n, limit = "ports", ports, t.scan_distinct_ports
        elif hosts >= t.scan_distinct_hosts:
            scan_kind, n, limit = "hosts", hosts, t.scan_distinct_hosts
        if scan_kind is not None:
            pairs = len(self.scan_pairs)
            answered = sum(1 for k in self.scan_answered.seen if k in self.scan_pairs)
            failed = 1.0 - answered / pairs if pairs else 1.0
            visible = now < self.seen_reply_window_until
            confident = not visible or failed >= t.scan_failed_ratio
            conf = min(1.0, n / (2 * limit)) * 0.5 + 0.5
            if visible:
                conf = conf if confident else conf * 0.3
            subj = (f"{top_host}",) if scan_kind == "ports" else ()
            host = top_host
            pred = ((lambda k: k[2] == host) if scan_kind == "ports" else None)
            out.append(_Finding(
                SCAN, scan_kind,
                f"{n} distinct destination "
                f"{'ports on ' + str(top_host) if scan_kind == 'ports' else 'hosts'}"
                f" in {t.scan_window_s:g} s (limit {limit})"
                + (f"; {failed:.0%} unanswered" if visible else ""),
                confident, conf, len(self.scan_pairs), rates,
                {"distinct_hosts": hosts, "max_ports_per_host": ports, "pairs": pairs,
                 "answered": answered},
                {"scan_distinct_hosts": t.scan_distinct_hosts,
                 "scan_distinct_ports": t.scan_distinct_ports},
                subj, self.scan_pairs.saturated(now) or self.scan_hosts.saturated(now),
                pred, self.evidence("ev_scan"), base_severity="warning"))
        cutoff = now - t.spoof_window_s
        hits = sum(1 for x in self.spoof_hits if x >= cutoff)
        if len(self.spoof_srcs) and hits:
            srcs = list(self.spoof_srcs.seen)
            stolen = sorted({f"{a}={owners[a]}" for a in srcs if a in owners})  # type: ignore[index]
            kind = "stolen" if stolen else "spoofed"
            spoof_subj = tuple(stolen) or tuple(sorted(str(a) for a in srcs[-20:]))
            mine = self.ips
            out.append(_Finding(
                SPOOF, kind,
                (f"sources assigned to other servers: {', '.join(stolen[:5])}" if stolen else
                 f"{len(srcs)} source address(es) not assigned to this port")
                + f" ({hits} samples in {t.spoof_window_s:g} s)",
                hits >= t.spoof_min_samples, min(1.0, hits / t.spoof_min_samples), hits,
                rates, {"distinct_sources": len(srcs), "samples": hits},
                {"spoof_min_samples": t.spoof_min_samples}, spoof_subj,
                self.spoof_srcs.saturated(now),
                lambda k: k[1] not in mine, self.evidence("ev_spoof"), base_severity="warning"))
        if len(self.used_ips) > self.spec.contract_ips:
            extra = len(self.used_ips) - self.spec.contract_ips
            out.append(_Finding(
                EXTRA_IP, "in_use",
                f"{len(self.used_ips)} assigned IPs in use, contract includes "
                f"{self.spec.contract_ips}: {extra} extra for billing",
                True, 1.0, samples, {}, {"ips_in_use": len(self.used_ips), "extra_ips": extra},
                {"contract_ips": self.spec.contract_ips}, tuple(sorted(self.used_ips)),
                actionable_allowed=False, base_severity="info"))
        if self.undeclared_hits:
            seen = {k: v for k, v in self.undeclared_hits.items() if v >= t.ports_min_samples}
            if seen:
                ports_in = {int(k.rsplit("/", 1)[1]) for k in seen if k.startswith("in/")}
                ports_out = {int(k.rsplit("/", 1)[1]) for k in seen if k.startswith("out/")}
                out.append(_Finding(
                    UNDECLARED_PORT, "service",
                    "traffic on undeclared service ports: " + ", ".join(sorted(seen)),
                    True, 1.0, sum(seen.values()), {}, {k: v for k, v in sorted(seen.items())},
                    {"ports_min_samples": t.ports_min_samples}, tuple(sorted(seen)), False,
                    lambda k: k[3] in ports_in or k[4] in ports_out, self.evidence("ev_ports"),
                    actionable_allowed=False, base_severity="info"))
        clients = len(self.proxy_clients)
        fanout = len(self.proxy_fanout)
        if clients >= t.proxy_min_clients and fanout >= t.proxy_min_fanout:
            conf = 0.5 * min(1.0, clients / (2 * t.proxy_min_clients)) + 0.5 * min(
                1.0, fanout / (2 * t.proxy_min_fanout))
            declared = self.spec.declared_ports or frozenset()
            proxy_ports = t.proxy_ports
            if any(p in declared for p in proxy_ports):
                conf *= 0.5  # a declared web service on 8080 explains some of the pattern
            out.append(_Finding(
                PROXY, "relay",
                f"{clients} inbound connections to proxy ports followed by {fanout} outbound "
                f"destinations, each within {t.proxy_follow_s:g} s of client traffic",
                True, conf, clients + fanout, rates,
                {"inbound_clients": clients, "outbound_fanout": fanout},
                {"proxy_min_clients": t.proxy_min_clients,
                 "proxy_min_fanout": t.proxy_min_fanout}, (),
                self.proxy_clients.saturated(now) or self.proxy_fanout.saturated(now),
                lambda k: k[0] == _TCP and k[3] not in proxy_ports, self.evidence("ev_proxy"),
                actionable_allowed=t.proxy_actionable, base_severity="warning"))
        return out


def _is_icmp(k: _FlowKey) -> bool:
    return k[0] == _ICMP or k[0] == _ICMP6


@dataclass
class DetectorStats:
    """Counters for metrics: samples seen and how (or whether) they were attributed."""

    samples: int = 0
    by_port: int = 0
    by_ip: int = 0
    unattributed: int = 0
    suppressed: int = 0  # findings an exemption held back
    detections: dict[tuple[str, str], int] = field(default_factory=dict)  # (detector, server)


class AbuseDetector:
    """Per-server abuse detectors over FlowSample batches; pure: time comes from the samples
    (`now`) and from evaluate's arguments, never from a clock.

    Feed with `ingest(samples)`; call `evaluate(now, at)` to get new and refreshed Detections
    (or `process` for both). A sample is attributed by switch port: its input port's server
    sent it, its output port's server receives it. Only when neither port is known are the
    assigned IPs used, and spoofing is then not judged (an IP match proves nothing).
    """

    def __init__(
        self,
        servers: Iterable[ServerSpec],
        templates: Mapping[str, DetectThresholds] | None = None,
        default: DetectThresholds | None = None,
        exemptions: Iterable[Exemption] = (),
        *,
        screen: bool = True,
    ) -> None:
        self.default = default or DetectThresholds()
        # evaluate() screens each server first (_ServerState.screen) and runs the full
        # findings only where the screen cannot rule them out; the answers are the same, False
        # runs findings everywhere (the reference the equivalence tests compare against).
        self.screen = screen
        self.templates = dict(templates or {})
        self._states: dict[str, _ServerState] = {}
        self._by_port: dict[PortKey, _ServerState] = {}
        self._by_ip: dict[str, _ServerState] = {}
        self._owners: dict[str, str] = {}
        for spec in servers:
            if spec.id in self._states:
                raise ValueError(f"server {spec.id!r} listed twice")
            st = _ServerState(spec, self.templates.get(spec.template, self.default))
            self._states[spec.id] = st
            for p in spec.ports:
                if p in self._by_port:
                    raise ValueError(f"port {p} given to {self._by_port[p].spec.id} and {spec.id}")
                self._by_port[p] = st
            for a in spec.ips:
                self._by_ip[a] = st
                self._owners[a] = spec.id
        self._exemptions: tuple[Exemption, ...] = tuple(exemptions)
        self._active: dict[tuple[str, str, str], _Active] = {}
        self._rate_check: dict[tuple[str, int | None, int | None], tuple[int, int]] = {}
        self.stats = DetectorStats()

    # ---- configuration at run time -------------------------------------------------------

    def set_exemptions(self, exemptions: Iterable[Exemption]) -> None:
        self._exemptions = tuple(exemptions)

    def exempted(self, server: str, detector: str, at: datetime) -> bool:
        return any(e.server == server and (e.detector is None or e.detector == detector)
                   and at < e.until_at for e in self._exemptions)

    def server_ids(self) -> list[str]:
        return list(self._states)

    # ---- samples in ----------------------------------------------------------------------

    def ingest(self, samples: Iterable[FlowSample]) -> None:
        by_port = self._by_port
        by_ip = self._by_ip
        stats = self.stats
        n = port_hits = ip_hits = lost = 0
        for s in samples:
            n += 1
            agent = s.agent
            ii = s.input_ifindex
            oi = s.output_ifindex
            sender = by_port.get((agent, ii)) if ii is not None else None
            receiver = by_port.get((agent, oi)) if oi is not None else None
            if s.sample_pool is not None:
                self._check_rate(s, sender or receiver)
            if sender is not None or receiver is not None:
                port_hits += 1
                if sender is not None:
                    sender.outbound(s, True)
                if receiver is not None and receiver is not sender:
                    receiver.inbound(s)
                continue
            sender = by_ip.get(s.src_ip) if s.src_ip is not None else None
            receiver = by_ip.get(s.dst_ip) if s.dst_ip is not None else None
            if sender is None and receiver is None:
                lost += 1
                continue
            ip_hits += 1
            if sender is not None:
                sender.outbound(s, False)
            if receiver is not None and receiver is not sender:
                receiver.inbound(s)
        stats.samples += n
        stats.by_port += port_hits
        stats.by_ip += ip_hits
        stats.unattributed += lost

    def _check_rate(self, s: FlowSample, st: _ServerState | None) -> None:
        """Compare an sFlow source's effective 1-in-N (pool / sequence deltas) with its claim."""
        key = (s.agent, s.source_id_type, s.source_id_index)
        seq = s.sample_sequence
        pool = s.sample_pool
        if seq is None or pool is None:
            return
        prev = self._rate_check.get(key)
        if prev is None:
            if len(self._rate_check) >= RATE_CHECK_KEYS:
                self._rate_check.clear()
            self._rate_check[key] = (seq, pool)
            return
        dseq = (seq - prev[0]) & 0xFFFFFFFF
        # A random 1-in-N sampler's pool grows by ~N ± N per sample, so the mean over n samples
        # is N ± N/√n: over 8 samples a 2x drift is only ~3 sigma, and with ~150 checks a second
        # honest agents were flagged all the time (each flag holds shutdowns back). Over 256
        # samples it is N ± 6 %, and 2x is a 16-sigma event.
        if dseq < RATE_CHECK_SAMPLES:
            return
        self._rate_check[key] = (seq, pool)
        if dseq > 1 << 20 or st is None:  # a restart or a wrap: start a new baseline
            return
        eff = ((pool - prev[1]) & 0xFFFFFFFF) / dseq
        declared = max(1, s.sampling_rate)
        drift = st.t.max_rate_drift
        if eff > declared * drift or eff * drift < declared:
            st.rate_suspect_until = s.now + st.t.rate_window_s * 5

    # ---- decisions out -------------------------------------------------------------------

    def evaluate(self, now: float, at: datetime) -> list[Detection]:
        """New and refreshed detections; servers untouched since the last call are only
        re-checked while they have an active detection (so windows can close)."""
        out: list[Detection] = []
        active_servers = {k[0] for k in self._active}
        for sid, st in self._states.items():
            if not st.dirty and sid not in active_servers:
                continue
            st.dirty = False
            if self.screen and sid not in active_servers and not st.screen(now):
                continue  # findings() would be empty: nothing to emit, nothing active to close
            self._judge(sid, st, now, at, out)
        return out

    def _judge(self, sid: str, st: _ServerState, now: float, at: datetime,
               out: list[Detection]) -> None:
        """One server's findings through exemptions into emitted Detections (appended to
        `out`); its active detections whose condition is gone for clear_s end. Shared with
        detect_vec.VectorDetector, which calls it for the servers its screen flags."""
        found = st.findings(now, self._owners)
        seen_keys: set[tuple[str, str, str]] = set()
        for f in found:
            key = (sid, f.detector, f.kind)
            if self.exempted(sid, f.detector, at):
                self.stats.suppressed += 1
                continue
            seen_keys.add(key)
            d = self._emit(st, f, key, now, at)
            if d is not None:
                out.append(d)
        for key in [k for k in self._active if k[0] == sid and k not in seen_keys]:
            if now - self._active[key].last_seen >= st.t.clear_s:
                del self._active[key]

    def process(self, samples: Iterable[FlowSample], now: float, at: datetime) -> list[Detection]:
        self.ingest(samples)
        return self.evaluate(now, at)

    def active(self) -> list[Detection]:
        """The latest report of every detection still active.

        A report held back by repeat_s is built here with that evaluation's verdict, rates
        and counts, and the evidence and top flows of the last report emitted (at most
        repeat_s old): those are the costly part, the enforcement ladder that calls this at
        every evaluation reads only the verdict, and each emitted report has its own."""
        out = []
        for a in self._active.values():
            if a.pending is not None:
                st, f, actionable, confidence, severity, rate = a.pending
                a.last = self._build(st, f, a, actionable, confidence, severity, rate, True,
                                     a.last)
                a.pending = None
            if a.last is not None:
                out.append(a.last)
        return out

    def _emit(self, st: _ServerState, f: _Finding, key: tuple[str, str, str], now: float,
              at: datetime) -> Detection | None:
        t = st.t
        rate = int(st.out.totals(now)[_B_RATE]) or int(st.inb.totals(now)[_B_RATE]) or 1
        rate_ok = rate <= t.max_sampling_rate and now >= st.rate_suspect_until
        allowed = f.actionable_allowed and (f.detector != PROXY or t.proxy_actionable)
        actionable = bool(allowed and f.confident and rate_ok and f.samples >= (
            t.spoof_min_samples if f.detector == SPOOF else
            min(t.min_samples, t.spam_distinct_dsts) if f.detector == SPAM else t.min_samples))
        confidence = round(f.confidence * (1.0 if rate_ok else 0.5), 3)
        severity: Severity = "critical" if actionable else f.base_severity
        a = self._active.get(key)
        if a is None:
            a = _Active(now, at, now, at, now, actionable, severity, onset=st.onset(f, now))
            self._active[key] = a
            update = False
        else:
            a.last_seen, a.last_at = now, at
            rising = (actionable and not a.actionable) or (
                severity == "critical" and a.severity != "critical")
            if not rising and now - a.last_emit < t.repeat_s:
                a.pending = (st, f, actionable, confidence, severity, rate)
                return None
            a.last_emit = now
            a.actionable = a.actionable or actionable
            a.severity = severity if severity == "critical" else a.severity
            update = True
        d = self._build(st, f, a, actionable, confidence, severity, rate, update)
        a.last = d
        a.pending = None
        k2 = (f.detector, st.spec.id)
        self.stats.detections[k2] = self.stats.detections.get(k2, 0) + 1
        return d

    def _build(self, st: _ServerState, f: _Finding, a: _Active, actionable: bool,
               confidence: float, severity: Severity, rate: int, update: bool,
               emitted: Detection | None = None) -> Detection:
        if emitted is not None:
            top_flows, evidence = emitted.top_flows, emitted.evidence
        else:
            top_flows, evidence = st.top_flows(f.flow_filter, st.t.top_flows), tuple(f.evidence)
        return Detection(
            detector=f.detector, kind=f.kind, server=st.spec.id, rule=RULE_OF[f.detector],
            severity=severity, actionable=actionable, confidence=confidence, reason=f.reason,
            first_seen=a.first_seen, last_seen=a.last_seen, first_at=a.first_at,
            last_at=a.last_at, samples=f.samples, sampling_rate=rate,
            rates={k: round(v, 1) for k, v in f.rates.items()}, counts=dict(f.counts),
            thresholds=dict(f.thresholds), subjects=f.subjects, saturated=f.saturated,
            top_flows=top_flows, evidence=evidence,
            ports=tuple(sorted(st.spec.ports)), update=update, onset=a.onset,
        )
