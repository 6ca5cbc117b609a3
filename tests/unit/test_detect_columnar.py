"""evaluate()'s screen gives exactly the answers of findings() on every server.

The reference is the detector with the screen off and _ServerState.prune as it was before
the screen (pruning every window on every call, copied below): the same sample streams and
evaluations go to both, and the detections, the active list, the counters and every piece of
per-server state must come out equal. Streams mix every detector's traffic with late samples,
tiny windows and caps (so windows close and sets saturate), and odd thresholds.
"""

from __future__ import annotations

import types
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rackwarden.policies import detect
from rackwarden.policies.detect import AbuseDetector, DetectThresholds, ServerSpec
from rackwarden.policies.flowfacts import FLOW_SAMPLE_FIELDS, FlowSample, new_flow_sample

AT0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
T0 = 1000.0
AGENT = "192.0.2.1"
SERVER_IPS = ["198.51.100.11", "198.51.100.12", "198.51.100.13", "198.51.100.14",
              "198.51.100.24", "2001:db8::11"]
OTHER_IPS = ["203.0.113.50", "203.0.113.51", "203.0.113.52", "203.0.113.53", "203.0.113.54",
             "203.0.113.55", "10.9.9.9", "0.0.0.0", "169.254.1.1", "fe80::1", "2001:db8:f::9"]
_DEFAULTS = {f.name: f.default for f in fields(FlowSample)}


def _reference_prune(self: Any, now: float) -> None:
    """_ServerState.prune before the screen: every window pruned on every call."""
    for d in (self.spam_dsts, self.scan_hosts, self.scan_pairs, self.scan_answered,
              self.spoof_srcs, self.proxy_clients, self.proxy_fanout, self.undeclared):
        d.prune(now)
    t = self.t
    if now - self.last_flow_prune >= t.bucket_s * 4:
        self.last_flow_prune = now
        horizon = now - max(t.rate_window_s, t.spoof_window_s)
        stale = [k for k, v in self.flows.items() if v[3] < horizon]
        for k in stale:
            del self.flows[k]
        if not self.flows:
            self.flows_other = 0
    for what in [w for w in self.undeclared_hits if w not in self.undeclared]:
        del self.undeclared_hits[what]


def specs(whitelist: bool) -> list[ServerSpec]:
    return [
        ServerSpec("s1", frozenset({(AGENT, 1)}), frozenset({SERVER_IPS[0]})),
        ServerSpec("s2", frozenset({(AGENT, 2)}), frozenset({SERVER_IPS[1]}), template="tight",
                   whitelist=("203.0.113.48/30",) if whitelist else ()),
        ServerSpec("s3", frozenset({(AGENT, 3)}), frozenset({SERVER_IPS[2]}), mail_server=True),
        ServerSpec("s4", frozenset({(AGENT, 4), ("span:sw", 4)}),
                   frozenset({SERVER_IPS[3], SERVER_IPS[4]}),
                   declared_ports=frozenset({22, 80, 443}),
                   allowed_out_ports=frozenset({53, 443}), contract_ips=1),
        ServerSpec("s5", frozenset(), frozenset({SERVER_IPS[5]})),  # attributed by IP only
    ]


thresholds = st.builds(
    DetectThresholds,
    rate_window_s=st.sampled_from([0.5, 1.0, 2.0]),
    bucket_s=st.sampled_from([0.25, 0.5]),
    flood_pps=st.sampled_from([20.0, 200.0, 10_000.0, -1.0]),
    flood_bps=st.sampled_from([5_000.0, 30_000_000.0]),
    udp_pps=st.sampled_from([10.0, 5_000.0]),
    icmp_pps=st.sampled_from([5.0, 1_000.0]),
    syn_pps=st.sampled_from([5.0, 1_000.0]),
    response_ratio=st.sampled_from([1.5, 0.0, -1.0]),
    spam_window_s=st.sampled_from([1.0, 3.0]),
    spam_distinct_dsts=st.sampled_from([1, 2, 4]),
    scan_window_s=st.sampled_from([0.75, 2.0]),
    scan_distinct_hosts=st.sampled_from([3, 6]),
    scan_distinct_ports=st.sampled_from([1, 3, 5]),
    spoof_window_s=st.sampled_from([0.5, 1.5]),
    spoof_min_samples=st.sampled_from([1, 3]),
    proxy_window_s=st.sampled_from([1.0, 3.0]),
    proxy_min_clients=st.sampled_from([1, 2]),
    proxy_min_fanout=st.sampled_from([1, 2]),
    ports_window_s=st.sampled_from([0.5, 4.0]),
    ports_min_samples=st.sampled_from([1, 2]),
    min_samples=st.sampled_from([1, 3]),
    distinct_cap=st.sampled_from([3, 6, 4096]),
    flow_table_cap=st.sampled_from([2, 1024]),
    evidence_samples=st.sampled_from([1, 4]),
    repeat_s=st.sampled_from([0.0, 0.5, 10.0]),
    clear_s=st.sampled_from([0.5, 10.0]),
)


@st.composite
def flow(draw: st.DrawFn, now: float) -> FlowSample:
    proto = draw(st.sampled_from([6, 6, 6, 17, 17, 1, 58, 47, None]))
    ips = st.sampled_from(SERVER_IPS + OTHER_IPS + [None])
    port = st.sampled_from([22, 25, 53, 80, 443, 587, 1080, 3128, 8080, 40000, 50000])
    ifs = st.sampled_from([1, 2, 3, 4, 9, None])
    rate = draw(st.sampled_from([1, 1, 16, 1024, 0, 10_000]))
    flags = draw(st.sampled_from([0x02, 0x12, 0x10, 0x04, 0x14, 0x18, None])) if proto == 6 else None
    # As packets.parse_tuple gives them: TCP flags only with both ports, ports only as a pair
    # (a header cut before them has neither).
    ports = proto in (6, 17) and (flags is not None or draw(st.booleans()))
    kw: dict[str, Any] = dict(
        source="sflow", agent=draw(st.sampled_from([AGENT, AGENT, "span:sw"])),
        input_ifindex=draw(ifs), output_ifindex=draw(ifs), sampling_rate=rate, now=now,
        at=AT0 + timedelta(seconds=now - T0),
        frame_length=draw(st.sampled_from([0, 64, 1500, 9000, -64])), header=b"",
        src_ip=draw(ips), dst_ip=draw(ips), protocol=proto,
        src_port=draw(port) if ports else None,
        dst_port=draw(port) if ports else None,
        tcp_flags=flags,
        icmp_type=draw(st.sampled_from([0, 3, 8, 128, 129, 135, None]))
        if proto in (1, 58) else None,
    )
    if draw(st.booleans()):
        kw.update(sample_sequence=draw(st.integers(0, 3000)), sample_pool=draw(
            st.integers(0, 2**32 - 1)), source_id_type=0, source_id_index=kw["input_ifindex"])
    return new_flow_sample(*(kw.get(n, _DEFAULTS[n]) for n in FLOW_SAMPLE_FIELDS))


@st.composite
def streams(draw: st.DrawFn) -> list[tuple[str, Any]]:
    """("samples", [...]) and ("evaluate", now) steps; time mostly moves on, sometimes back."""
    steps: list[tuple[str, Any]] = []
    now = T0
    for _ in range(draw(st.integers(1, 25))):
        if draw(st.integers(0, 3)) == 0:
            steps.append(("evaluate", now + draw(st.sampled_from([0.0, 0.1, 0.3]))))
            continue
        batch = []
        for _ in range(draw(st.integers(1, 30))):
            now += draw(st.sampled_from([0.0, 0.001, 0.02, 0.3, 1.1, -0.4]))
            batch.append(draw(flow(now)))
            # A burst: the same packet repeated, so rates and counts cross their limits.
            if draw(st.integers(0, 5)) == 0:
                batch.extend([batch[-1]] * draw(st.integers(1, 60)))
        steps.append(("samples", batch))
    steps.append(("evaluate", now + 0.5))
    steps.append(("evaluate", now + 30.0))
    return steps


def state(det: AbuseDetector) -> list[Any]:
    """Everything a server's detectors remember, in comparable form (order included)."""
    out: list[Any] = []
    for sid, s in det._states.items():
        out.append((
            sid, s.dirty, s.rate_suspect_until, s.last_proxy_in, s.seen_reply_window_until,
            s.last_flow_prune, list(s.flows.items()), s.flows_other, dict(s.undeclared_hits),
            sorted(s.used_ips), list(s.spoof_hits), s.out.ring, s.out.cur, s.inb.ring, s.inb.cur,
            [(list(d.seen.items()), d.saturated_until, d.groups) for d in s.distincts],
            [list(e) for e in (s.ev_flood, s.ev_spam, s.ev_scan, s.ev_spoof, s.ev_proxy,
                               s.ev_ports)],
        ))
    out.append(list(det._active))
    out.append(det._rate_check)
    return out


def _pair(t: DetectThresholds, tight: DetectThresholds,
          whitelist: bool) -> tuple[AbuseDetector, AbuseDetector]:
    screened = AbuseDetector(specs(whitelist), templates={"tight": tight}, default=t)
    reference = AbuseDetector(specs(whitelist), templates={"tight": tight}, default=t,
                              screen=False)
    for s in reference._states.values():
        s.prune = types.MethodType(_reference_prune, s)  # type: ignore[method-assign]
    return screened, reference


def _run_both(screened: AbuseDetector, reference: AbuseDetector,
              steps: list[tuple[str, Any]]) -> int:
    emitted = 0
    for what, arg in steps:
        if what == "samples":
            screened.ingest(arg)
            reference.ingest(arg)
        else:
            at = AT0 + timedelta(seconds=arg - T0)
            got = screened.evaluate(arg, at)
            want = reference.evaluate(arg, at)
            assert got == want
            emitted += len(got)
        assert state(screened) == state(reference)
    assert screened.active() == reference.active()
    assert screened.stats == reference.stats
    return emitted


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(t=thresholds, tight=thresholds, whitelist=st.booleans(), steps=streams())
def test_screened_evaluate_equals_findings_everywhere(
    t: DetectThresholds, tight: DetectThresholds, whitelist: bool, steps: list[tuple[str, Any]]
) -> None:
    screened, reference = _pair(t, tight, whitelist)
    _run_both(screened, reference, steps)


def test_screen_skips_quiet_servers_and_still_finds_the_flooder() -> None:
    specs_ = [ServerSpec(f"q{i}", frozenset({(AGENT, i)}), frozenset({f"10.0.{i // 256}.{i % 256}"}))
              for i in range(1, 201)]
    screened = AbuseDetector(specs_)
    reference = AbuseDetector(specs_, screen=False)
    calls = {"n": 0}
    real = detect._ServerState.findings

    def counting(self: Any, now: float, owners: Any) -> Any:
        calls["n"] += 1
        return real(self, now, owners)

    samples = []
    for k in range(400):  # every server a little traffic; q7 floods (UDP, 1-in-1024 sampled)
        for i in (1 + k % 200, 7):
            samples.append(new_flow_sample(*({
                **_DEFAULTS, "source": "sflow", "agent": AGENT, "input_ifindex": i,
                "output_ifindex": None, "sampling_rate": 1024 if i == 7 else 1,
                "now": T0 + k * 0.001, "at": AT0, "frame_length": 64, "header": b"",
                "src_ip": f"10.0.{i // 256}.{i % 256}", "dst_ip": "203.0.113.9", "protocol": 17,
                "src_port": 5000, "dst_port": 53}[n] for n in FLOW_SAMPLE_FIELDS)))
    screened.ingest(samples)
    reference.ingest(samples)
    detect._ServerState.findings = counting  # type: ignore[method-assign]
    try:
        got = screened.evaluate(T0 + 0.5, AT0)
        screened_calls = calls["n"]
        want = reference.evaluate(T0 + 0.5, AT0)
    finally:
        detect._ServerState.findings = real  # type: ignore[method-assign]
    assert got == want
    assert [(d.server, d.detector, d.kind) for d in got] == [("q7", "flood", "udp")]
    assert screened_calls == 1  # the 199 quiet servers were screened out
    assert calls["n"] - screened_calls == 200


@settings(max_examples=200, deadline=None)
@given(bucket_s=st.sampled_from([0.25, 0.5]), window=st.sampled_from([0.5, 2.0]),
       adds=st.lists(st.tuples(st.floats(0, 20, allow_nan=False), st.integers(0, 10**12)),
                     max_size=80))
def test_bucket_upper_bound_is_at_least_the_window_total(
    bucket_s: float, window: float, adds: list[tuple[float, int]]
) -> None:
    b = detect._Buckets(window, bucket_s)
    for now, v in adds:
        slot = b.at(now)
        for i in range(detect._B_PKTS, detect._B_SAMPLES):
            slot[i] += v
        # done is exactly the other slots' sums
        others = [s for s in b.ring if s is not b.cur]
        assert b.done[1:] == [sum(int(s[i]) for s in others)
                              for i in range(detect._B_PKTS, detect._B_SAMPLES)]
        for probe in (now, now + bucket_s, now + window, now - bucket_s):
            tot = b.totals(probe)
            for i in range(detect._B_PKTS, detect._B_SAMPLES):
                assert b.upper(i) >= tot[i]


def test_a_nan_receive_time_keeps_prune_exact() -> None:
    """A NaN `now` reaches a window only by the spoof check before a whitelisted destination
    returns; the windows' floor cannot bound it, so that server is pruned every time."""
    t = DetectThresholds(spoof_window_s=0.5, spoof_min_samples=1)
    screened, reference = _pair(t, t, whitelist=True)

    def spoofed(now: float, dst: str, src: str = "203.0.113.99") -> FlowSample:
        kw: dict[str, Any] = dict(
            source="sflow", agent=AGENT, input_ifindex=2, output_ifindex=None,
            sampling_rate=1, now=now, at=AT0, frame_length=64, header=b"",
            src_ip=src, dst_ip=dst, protocol=17, src_port=1, dst_port=2)
        return new_flow_sample(*(kw.get(n, _DEFAULTS[n]) for n in FLOW_SAMPLE_FIELDS))

    nan = float("nan")
    steps: list[tuple[str, Any]] = [
        ("samples", [spoofed(T0, "203.0.113.50"), spoofed(nan, "203.0.113.49", "203.0.113.98"),
                     spoofed(T0 + 0.1, "203.0.113.50")]),
        ("evaluate", T0 + 0.2),
        ("samples", [spoofed(T0 + 0.3, "203.0.113.9")]),
        ("evaluate", T0 + 0.4),
        ("evaluate", T0 + 5.0),
    ]
    assert _run_both(screened, reference, steps) > 0
    assert screened._states["s2"].floor_holds is False
