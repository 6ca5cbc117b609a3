"""VectorDetector gives exactly AbuseDetector's answers.

The same random streams (every detector's traffic, late samples, tiny windows and caps, odd
thresholds, two agents, IPv4 and IPv6, unattributed rows, servers attributed by IP only,
whitelists and declared ports on the object path) go to AbuseDetector.ingest, to
VectorDetector.ingest, and to VectorDetector.ingest_columns in random batch splits; every
evaluation's detections (every field, evidence and top flows included: the row store holds
the whole stream), the active list and the counters must be equal. Every test runs for both
scan-window loops (policies/_scanwin.c and the Python one); the C one is skipped, loudly, only
when it is not built.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rackwarden.policies import detect, detect_vec
from rackwarden.policies.detect import AbuseDetector, Detection, DetectThresholds, ServerSpec
from rackwarden.policies.detect_vec import VectorDetector, _text, _Win
from rackwarden.policies.flowcols import SampleColumns
from rackwarden.policies.flowfacts import FLOW_SAMPLE_FIELDS, FlowSample, new_flow_sample

from .test_detect_columnar import _DEFAULTS, AGENT, AT0, T0, specs, streams, thresholds

AGENT2 = "2001:db8:a::2"

if detect_vec.SCANWIN_C_ERROR is not None:
    # Said loudly: the C half of every test below is skipped, which must not go unseen.
    print(f"\n*** test_detect_vec: {detect_vec.SCANWIN_C_ERROR}: C scan-window tests SKIPPED ***")

SCANWINS = [
    pytest.param("c", marks=pytest.mark.skipif(
        detect_vec.SCANWIN_C_ERROR is not None, reason=str(detect_vec.SCANWIN_C_ERROR))),
    "python",
]


@pytest.fixture(scope="module", params=SCANWINS, autouse=True)
def scanwin(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test of this module runs once for each scan-window loop (policies/_scanwin.c and
    the Python one): every VectorDetector built here uses the one asked for. Module-scoped,
    so hypothesis' tests take it too."""
    impl: str = request.param
    plain = detect_vec.scan_loop
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(detect_vec, "scan_loop", lambda want=None: plain(want or impl))
        yield impl


SCAN_LOOP = detect_vec.scan_loop  # before the fixture above stands in for it


def test_the_scan_window_loop_is_the_one_asked_for(scanwin: str) -> None:
    vec = VectorDetector(fleet(False))
    assert vec.scanwin == scanwin
    with pytest.raises(ValueError, match="must be 'c' or 'python'"):
        VectorDetector([], scanwin="fortran")


def test_c_asked_for_without_the_module_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(detect_vec, "_scan_rows_c", None)
    monkeypatch.setattr(detect_vec, "SCANWIN_C_ERROR", "the compiled scan-window loop is not built")
    with pytest.raises(RuntimeError, match="'c' asked for, but the compiled scan-window loop is not"):
        SCAN_LOOP("c")
    assert SCAN_LOOP(None)[0] == SCAN_LOOP("python")[0] == "python"


def fleet(whitelist: bool) -> list[ServerSpec]:
    """test_detect_columnar's servers, plus one on a second (IPv6) agent and an IPv6-only one,
    with only allowed_out_ports and only declared_ports."""
    return [*specs(whitelist),
            ServerSpec("s6", frozenset({(AGENT2, 1)}), frozenset({"2001:db8::66", "10.9.9.9"}),
                       contract_ips=1, allowed_out_ports=frozenset({443, 25})),
            ServerSpec("s7", frozenset({(AGENT2, 2), (AGENT, 9)}), frozenset({"2001:db8:f::9"}),
                       template="tight", declared_ports=frozenset({22, 53}),
                       whitelist=("fe80::/64", "203.0.113.54/31") if whitelist else ())]


def on_agent2(s: FlowSample) -> FlowSample:
    return dataclasses.replace(s, agent=AGENT2)


def _detectors(t: DetectThresholds, tight: DetectThresholds, whitelist: bool,
               **kw: Any) -> tuple[AbuseDetector, VectorDetector, VectorDetector]:
    servers = fleet(whitelist)
    sparse = VectorDetector(servers, templates={"tight": tight}, default=t, **kw)
    assert sparse._port_dense is not None
    sparse._port_dense = None  # the sorted-key port lookup, as for wide ifIndex numbers
    sparse._bulk_rows = 2  # and scan rows in bulk wherever a server has two in a batch
    return (AbuseDetector(servers, templates={"tight": tight}, default=t),
            VectorDetector(servers, templates={"tight": tight}, default=t, **kw), sparse)


def _splits(draw: Callable[..., Any], n: int) -> list[int]:
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=4)))
    return [0, *cuts, n]


def _run(ref: AbuseDetector, a: VectorDetector, b: VectorDetector,
         steps: list[tuple[str, Any]], draw: Callable[..., Any],
         columns: Any = SampleColumns.from_samples) -> int:
    emitted = 0
    for what, arg in steps:
        if what == "samples":
            ref.ingest(arg)
            a.ingest(arg)
            cuts = _splits(draw, len(arg))
            for lo, hi in zip(cuts, cuts[1:], strict=False):
                if hi > lo:
                    b.ingest_columns(columns(arg[lo:hi]))
        else:
            at = AT0 + timedelta(seconds=arg - T0)
            want = ref.evaluate(arg, at)
            assert a.evaluate(arg, at) == want
            assert b.evaluate(arg, at) == want
            emitted += len(want)
        assert a.stats == ref.stats
        assert b.stats == ref.stats
    want_active = ref.active()
    assert a.active() == want_active
    assert b.active() == want_active
    return emitted


@st.composite
def mixed_streams(draw: st.DrawFn) -> list[tuple[str, Any]]:
    """test_detect_columnar's streams, with some samples moved to the second agent."""
    steps = draw(streams())
    out: list[tuple[str, Any]] = []
    for what, arg in steps:
        if what == "samples":
            moved = draw(st.lists(st.booleans(), min_size=len(arg), max_size=len(arg)))
            arg = [on_agent2(s) if m else s for s, m in zip(arg, moved, strict=True)]
        out.append((what, arg))
    return out


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(t=thresholds, tight=thresholds, whitelist=st.booleans(), steps=mixed_streams(),
       data=st.data())
def test_vector_detector_equals_abuse_detector(
    t: DetectThresholds, tight: DetectThresholds, whitelist: bool,
    steps: list[tuple[str, Any]], data: st.DataObject
) -> None:
    ref, a, b = _detectors(t, tight, whitelist)
    _run(ref, a, b, steps, data.draw)


def _no_objects(samples: list[FlowSample]) -> SampleColumns:
    cols = SampleColumns.from_samples(samples)
    cols.objects = None
    return cols


def _shape(d: Detection) -> tuple[Any, ...]:
    """A Detection without the parts columns cannot carry (header bytes, wall time)."""
    ev = tuple((s.agent, s.now, s.src_ip, s.dst_ip, s.protocol, s.src_port, s.dst_port,
                s.tcp_flags, s.sampling_rate, s.frame_length) for s in d.evidence)
    return (dataclasses.replace(d, evidence=()), ev)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(t=thresholds, tight=thresholds, steps=mixed_streams(), data=st.data())
def test_columns_without_objects_rebuild_the_same_evidence(
    t: DetectThresholds, tight: DetectThresholds, steps: list[tuple[str, Any]],
    data: st.DataObject
) -> None:
    ref = AbuseDetector(fleet(False), templates={"tight": tight}, default=t)
    vec = VectorDetector(fleet(False), templates={"tight": tight}, default=t)
    for what, arg in steps:
        if what == "samples":
            ref.ingest(arg)
            cuts = _splits(data.draw, len(arg))
            for lo, hi in zip(cuts, cuts[1:], strict=False):
                if hi > lo:
                    vec.ingest_columns(_no_objects(arg[lo:hi]))
        else:
            at = AT0 + timedelta(seconds=arg - T0)
            assert [_shape(d) for d in vec.evaluate(arg, at)] == [
                _shape(d) for d in ref.evaluate(arg, at)]
    assert [_shape(d) for d in vec.active()] == [_shape(d) for d in ref.active()]
    assert vec.stats == ref.stats


def _sample(**kw: Any) -> FlowSample:
    base: dict[str, Any] = dict(
        source="sflow", agent=AGENT, input_ifindex=1, output_ifindex=None, sampling_rate=1,
        now=T0, at=AT0, frame_length=64, header=b"x", src_ip="198.51.100.11",
        dst_ip="203.0.113.50", protocol=17, src_port=5000, dst_port=53)
    base.update(kw)
    return new_flow_sample(*(base.get(n, _DEFAULTS[n]) for n in FLOW_SAMPLE_FIELDS))


def test_resolver_supplies_evidence_by_ref() -> None:
    """Columns with `ref`s and no objects: evidence comes from resolve(refs), exactly."""
    t = DetectThresholds(udp_pps=5.0, min_samples=1, rate_window_s=1.0)
    samples = [_sample(now=T0 + i * 0.01, dst_port=53 + i % 3, header=bytes([i]))
               for i in range(40)]
    asked: list[list[int]] = []

    def resolve(refs: np.ndarray) -> list[FlowSample | None]:
        asked.append(refs.tolist())
        return [samples[r] for r in refs.tolist()]

    ref = AbuseDetector(fleet(False), default=t)
    vec = VectorDetector(fleet(False), default=t, resolve=resolve)
    cols = SampleColumns.from_samples(samples)
    cols.objects = None
    cols.ref = np.arange(len(samples), dtype=np.int64)
    ref.ingest(samples)
    vec.ingest_columns(cols)
    want = ref.evaluate(T0 + 0.5, AT0)
    assert [d.key for d in want] == [("s1", "flood", "udp")]
    assert vec.evaluate(T0 + 0.5, AT0) == want
    assert asked and all(r >= 0 for refs in asked for r in refs)


def test_resolved_evidence_is_kept_while_its_detection_is_judged() -> None:
    """An ongoing detection is judged at every evaluation: its evidence rows are resolved
    once, not decoded again each time, and they keep their header bytes after the raw ring
    has let their datagrams go."""
    t = DetectThresholds(udp_pps=5.0, min_samples=1, rate_window_s=1.0, repeat_s=0.0)
    samples = [_sample(now=T0 + i * 0.01, dst_port=53 + i % 3, header=bytes([i + 1]))
               for i in range(40)]
    ring: dict[int, FlowSample] = dict(enumerate(samples))
    asked: list[int] = []

    def resolve(refs: np.ndarray) -> list[FlowSample | None]:
        asked.extend(refs.tolist())
        return [ring.get(r) for r in refs.tolist()]

    vec = VectorDetector(fleet(False), default=t, resolve=resolve)
    cols = SampleColumns.from_samples(samples)
    cols.objects = None
    cols.ref = np.arange(len(samples), dtype=np.int64)
    vec.ingest_columns(cols)
    (first,) = vec.evaluate(T0 + 0.5, AT0)
    assert first.evidence and all(s.header for s in first.evidence)
    n_asked = len(asked)
    ring.clear()  # the raw ring moved on
    (again,) = vec.evaluate(T0 + 0.55, AT0)
    assert again.update and again.evidence == first.evidence
    assert len(asked) == n_asked  # nothing resolved twice


def test_a_held_back_report_resolves_no_evidence() -> None:
    """An ongoing detection judged again within repeat_s is held back: nothing is resolved
    for it, and active() reports that evaluation's counts with the evidence and top flows of
    the last emitted report (the ladder reads it at every evaluation)."""
    t = DetectThresholds(udp_pps=5.0, min_samples=1, rate_window_s=1.0, repeat_s=10.0)
    samples = [_sample(now=T0 + i * 0.01, dst_port=53 + i % 3, header=bytes([i + 1]))
               for i in range(80)]
    asked: list[int] = []

    def resolve(refs: np.ndarray) -> list[FlowSample | None]:
        asked.extend(refs.tolist())
        return [samples[r] for r in refs.tolist()]

    ref = AbuseDetector(fleet(False), default=t)
    vec = VectorDetector(fleet(False), default=t, resolve=resolve)
    for lo, hi, now in ((0, 40, T0 + 0.45), (40, 80, T0 + 0.85)):
        cols = SampleColumns.from_samples(samples[lo:hi])
        cols.objects = None
        cols.ref = np.arange(lo, hi, dtype=np.int64)
        vec.ingest_columns(cols)
        ref.ingest(samples[lo:hi])
        n_asked = len(asked)
        got = vec.evaluate(now, AT0)
        assert got == ref.evaluate(now, AT0)
        if lo:
            assert got == [] and len(asked) == n_asked  # held back: nothing resolved
        else:
            (first,) = got
    (standing,) = vec.active()
    assert standing == ref.active()[0]
    assert standing.samples > first.samples  # this evaluation's counts
    assert standing.evidence == first.evidence and standing.top_flows == first.top_flows
    assert len(asked) == n_asked


def test_small_store_keeps_the_newest_evidence() -> None:
    """A store smaller than the stream: the newest rows of the server, oldest first."""
    t = DetectThresholds(udp_pps=5.0, min_samples=1, rate_window_s=1.0, evidence_samples=64)
    samples = [_sample(now=T0 + i * 0.01, dst_port=1000 + i) for i in range(50)]
    ref = AbuseDetector(fleet(False), default=t)
    vec = VectorDetector(fleet(False), default=t, evidence_rows=8)
    ref.ingest(samples)
    vec.ingest(samples)
    (want,) = ref.evaluate(T0 + 0.6, AT0)
    (got,) = vec.evaluate(T0 + 0.6, AT0)
    assert got.evidence == want.evidence[-8:]
    assert dataclasses.replace(got, evidence=(), top_flows=(), onset=0.0) == dataclasses.replace(
        want, evidence=(), top_flows=(), onset=0.0)
    # Not knowing the first flood sample any more, onset is its bucket's start: at most
    # bucket_s early, never late.
    assert got.onset is not None and want.onset is not None
    assert want.onset - t.bucket_s <= got.onset <= want.onset


@pytest.mark.parametrize("keys", [3, 65536])
def test_rate_check_forgets_sources_as_abuse_detector_does(
        keys: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past RATE_CHECK_KEYS sources both start afresh at the same sample: the same suspects."""
    monkeypatch.setattr(detect, "RATE_CHECK_KEYS", keys)
    t = DetectThresholds(udp_pps=5.0, min_samples=1)
    samples = []
    for i in range(2000):
        src = i % 5
        samples.append(_sample(now=T0 + i * 0.001, input_ifindex=1 + src % 3,
                               sampling_rate=16, sample_sequence=i // 5,
                               sample_pool=(i // 5) * (16 if src else 64),
                               source_id_type=0, source_id_index=src))
    ref = AbuseDetector(fleet(False), default=t)
    vec = VectorDetector(fleet(False), default=t)
    ref.ingest(samples)
    for lo in range(0, 2000, 333):
        vec.ingest_columns(SampleColumns.from_samples(samples[lo:lo + 333]))
    want = ref.evaluate(T0 + 2.1, AT0)
    assert vec.evaluate(T0 + 2.1, AT0) == want
    assert any(d.confidence < 1.0 or not d.actionable for d in want) or keys == 3
    assert vec.active() == ref.active()


def _syn(now: float, dst: str, dport: int, **kw: Any) -> FlowSample:
    return _sample(now=now, protocol=6, tcp_flags=0x02, dst_ip=dst, dst_port=dport,
                   src_port=40000, **kw)


WINDOW_CASES: dict[str, tuple[tuple[str, str], list[FlowSample]]] = {
    # Each at exactly its count rule, at rates far below every rate rule, so only the
    # windows can make the screen look at the server.
    "scan_hosts": (("scan", "hosts"), [_syn(T0 + i * 0.01, f"203.0.113.{i + 1}", 80)
                                       for i in range(5)]),
    "scan_ports": (("scan", "ports"), [_syn(T0 + i * 0.01, "203.0.113.7", 1000 + i)
                                       for i in range(4)]),
    "spam": (("spam", "smtp_fanout"), [_syn(T0 + i * 0.01, f"2001:db8:77::{i + 1}", 25)
                                       for i in range(3)]),
    "spoof": (("spoof", "spoofed"), [_sample(src_ip="192.0.2.200")]),
    "proxy": (("proxy", "relay"), [
        _sample(now=T0, input_ifindex=None, output_ifindex=1, protocol=6, tcp_flags=0x02,
                src_ip="203.0.113.60", dst_ip="198.51.100.11", src_port=5555, dst_port=3128),
        _sample(now=T0 + 0.5, input_ifindex=None, output_ifindex=1, protocol=6,
                tcp_flags=0x10, src_ip="203.0.113.61", dst_ip="198.51.100.11", src_port=5556,
                dst_port=3128),
        _syn(T0 + 1.0, "203.0.113.70", 443), _syn(T0 + 1.1, "203.0.113.71", 443)]),
}


@pytest.mark.parametrize("case", sorted(WINDOW_CASES))
def test_a_window_at_its_limit_alone_is_found(case: str) -> None:
    """The screen's window rules at equality: nothing but the window flags the server."""
    t = DetectThresholds(scan_distinct_hosts=5, scan_distinct_ports=4, spam_distinct_dsts=3,
                         proxy_min_clients=1, proxy_min_fanout=2, spoof_min_samples=1)
    key, samples = WINDOW_CASES[case]
    ref = AbuseDetector(fleet(False), default=t)
    vec = VectorDetector(fleet(False), default=t)
    ref.ingest(samples)
    vec.ingest_columns(SampleColumns.from_samples(samples))
    want = ref.evaluate(T0 + 1.5, AT0)
    assert ("s1", *key) in [d.key for d in want]
    assert vec.evaluate(T0 + 1.5, AT0) == want
    assert vec.active() == ref.active()


def test_no_servers_still_counts_and_checks_rates() -> None:
    ref = AbuseDetector([])
    vec = VectorDetector([])
    samples = [_sample(sample_sequence=i, sample_pool=i * 16, source_id_type=0,
                       source_id_index=1) for i in range(3)]
    ref.ingest(samples)
    vec.ingest(samples)
    assert vec.evaluate(T0 + 1, AT0) == ref.evaluate(T0 + 1, AT0) == []
    assert vec.stats == ref.stats
    assert vec.server_ids() == []


@st.composite
def relay_streams(draw: st.DrawFn) -> list[tuple[str, Any]]:
    """Proxy and spam traffic the general streams rarely make: clients connecting to proxy
    ports of s1/s6 (in by port), the server's SYNs out soon after, to mail and web ports."""
    steps: list[tuple[str, Any]] = []
    now = T0
    for _ in range(draw(st.integers(1, 12))):
        if draw(st.integers(0, 3)) == 0:
            steps.append(("evaluate", now + draw(st.sampled_from([0.0, 0.2]))))
            continue
        batch = []
        for _ in range(draw(st.integers(1, 25))):
            now += draw(st.sampled_from([0.0, 0.05, 0.05, 0.2, 2.5, -0.3]))
            agent, port = draw(st.sampled_from([(AGENT, 1), (AGENT2, 1)]))
            peer = f"203.0.113.{draw(st.integers(60, 75))}"
            if draw(st.booleans()):  # a client in, to a proxy port or not
                batch.append(_sample(
                    now=now, agent=agent, input_ifindex=None, output_ifindex=port, protocol=6,
                    tcp_flags=draw(st.sampled_from([0x02, 0x10, 0x04, 0x12])), src_ip=peer,
                    dst_ip="198.51.100.11", src_port=draw(st.integers(5000, 5003)),
                    dst_port=draw(st.sampled_from([3128, 8080, 80]))))
            else:  # the server out
                batch.append(_sample(
                    now=now, agent=agent, input_ifindex=port, protocol=6,
                    tcp_flags=draw(st.sampled_from([0x02, 0x18, 0x02])), dst_ip=peer,
                    src_port=40000, dst_port=draw(st.sampled_from([25, 587, 443, 3128]))))
        steps.append(("samples", batch))
        if draw(st.integers(0, 2)):  # judged while the relay is still in its windows
            steps.append(("evaluate", now + draw(st.sampled_from([0.0, 0.2]))))
    steps.append(("evaluate", now + 0.5))
    steps.append(("evaluate", now + 30.0))
    return steps


relay_thresholds = st.builds(
    DetectThresholds, proxy_min_clients=st.sampled_from([1, 2]),
    proxy_min_fanout=st.sampled_from([1, 2]), proxy_follow_s=st.sampled_from([0.1, 2.0]),
    proxy_window_s=st.sampled_from([3.0, 10.0]), spam_distinct_dsts=st.sampled_from([2, 4]),
    spam_window_s=st.sampled_from([1.0, 3.0]), distinct_cap=st.sampled_from([2, 4096, 4096]),
    min_samples=st.sampled_from([1, 5]), repeat_s=st.sampled_from([0.0, 10.0]),
    clear_s=st.sampled_from([0.5, 10.0]), evidence_samples=st.sampled_from([1, 3]),
    proxy_actionable=st.booleans())


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(t=relay_thresholds, steps=relay_streams(), data=st.data())
def test_relays_and_mail_fanout_equal_abuse_detector(
    t: DetectThresholds, steps: list[tuple[str, Any]], data: st.DataObject
) -> None:
    ref, a, b = _detectors(t, t, False)
    _run(ref, a, b, steps, data.draw)


# The scan windows' container (detect_vec._Win: a plain dict keyed by ints) against
# detect._Distinct, operation by operation: keys, order of last sight, evictions, saturation,
# groups. Times go backwards too (late samples), so prune's "expired prefix" is exercised.
_WIN_HOSTS = [(0xFFFF << 32) | (0xC6336400 + i) for i in range(4)] + [
    (0x20010DB8 << 96) | 7, 1]  # IPv6 and ::1 (an address below 2**32)
_M64 = (1 << 64) - 1


def _pair_of(k: int) -> tuple[int, int]:
    p = k & _M64
    return (k >> 64, p - (1 << 64) if p >> 63 else p)


@settings(max_examples=300, deadline=None)
@given(cap=st.integers(1, 5), grouped=st.booleans(), ops=st.lists(st.tuples(
    st.sampled_from(["add", "add", "add", "prune"]), st.integers(0, len(_WIN_HOSTS) - 1),
    st.sampled_from([-1, 22, 443, 65535]), st.sampled_from([0.0, 0.5, 1.0, 2.5, 4.0, 9.0])),
    max_size=40))
def test_int_keyed_window_is_distinct(cap: int, grouped: bool,
                                      ops: list[tuple[str, int, int, float]]) -> None:
    ref = detect._Distinct(2.0, cap, grouped=grouped)
    win = _Win(2.0, cap, grouped=grouped)
    for op, h, port, now in ops:
        a = _WIN_HOSTS[h]
        if op == "prune":
            ref.prune(now)
            win.prune(now)
        elif grouped:
            ref.add((a, port), now)
            win.add(a << 64 | (port & _M64), now)
        else:
            ref.add(a, now)
            win.add(a, now)
        conv = _pair_of if grouped else (lambda k: k)
        assert [(conv(k), t) for k, t in win.seen.items()] == list(ref.seen.items())
        assert win.saturated_until == ref.saturated_until
        assert win.groups == ref.groups
        assert win.max_group()[1] == ref.max_group()[1]


def test_scan_past_the_cap_in_one_batch_equals_abuse_detector() -> None:
    """The scan rows' own loop at its cap inside one batch (evictions, saturation, the hot
    check on growth only), a second server's rows interleaved, re-sights after the cap."""
    t = DetectThresholds(distinct_cap=4, scan_distinct_hosts=4, scan_distinct_ports=3,
                         scan_window_s=2.0)
    samples = []
    for i in range(30):
        samples.append(_syn(T0 + i * 0.01, f"203.0.113.{i % 9 + 1}", (80, 443, 22)[i % 3]))
        samples.append(_syn(T0 + i * 0.01, "203.0.113.60", 80 + i % 2,
                            src_ip="198.51.100.12", input_ifindex=2))
    samples += [_syn(T0 + 0.5, "203.0.113.1", 80), _syn(T0 + 0.4, "203.0.113.2", 80)]
    ref = AbuseDetector(fleet(False), default=t)
    vec = VectorDetector(fleet(False), default=t)
    ref.ingest(samples)
    vec.ingest_columns(SampleColumns.from_samples(samples))
    for now in (T0 + 0.6, T0 + 1.9, T0 + 2.45, T0 + 5.0):
        want = ref.evaluate(now, AT0 + timedelta(seconds=now - T0))
        assert vec.evaluate(now, AT0 + timedelta(seconds=now - T0)) == want
        if now == T0 + 0.6:
            assert ("s1", "scan", "hosts") in [d.key for d in want]
    assert vec.active() == ref.active()
    assert vec.stats == ref.stats


@pytest.mark.parametrize("hosts", [4, 5])
def test_scan_hosts_alone_at_their_rule_make_the_server_hot(hosts: int) -> None:
    """Hosts at their rule while the pairs are far below theirs (a higher port rule): only
    the hosts' own check can make the screen judge the server (5 is the rule, 4 is not)."""
    t = DetectThresholds(scan_distinct_hosts=5, scan_distinct_ports=50)
    samples = [_syn(T0 + i * 0.01, f"203.0.113.{i + 1}", 80) for i in range(hosts)]
    ref = AbuseDetector(fleet(False), default=t)
    vec = VectorDetector(fleet(False), default=t)
    ref.ingest(samples)
    vec.ingest_columns(SampleColumns.from_samples(samples))
    want = ref.evaluate(T0 + 1.5, AT0)
    assert (("s1", "scan", "hosts") in [d.key for d in want]) == (hosts == 5)
    assert vec.evaluate(T0 + 1.5, AT0) == want


@settings(max_examples=500, deadline=None)
@given(a=st.floats(-1e12, 1e12, allow_nan=False, allow_infinity=False),
       b=st.sampled_from([0.25, 0.1, 1 / 3, 1.0, 0.3, 7.0, 1e-3, 2.5]),
       nudge=st.sampled_from([0, 1, -1]))
def test_bucket_ids_are_python_floor_division(a: float, b: float, nudge: int) -> None:
    """_floor_div (floor(a / b), recomputed near integers) gives _Buckets' `now // bucket_s`,
    on exact multiples of b and their float neighbours too."""
    from math import inf, nextafter

    from rackwarden.policies.detect_vec import _floor_div
    x = (a // b) * b
    x = nextafter(x, inf) if nudge > 0 else nextafter(x, -inf) if nudge < 0 else x
    for v in (a, x):
        assert _floor_div(np.array([v]), np.array([b])).tolist() == [int(v // b)]


def test_a_key_due_to_expire_within_rounding_is_pruned() -> None:
    """The screen skips a server's windows until their due time (key time + window length);
    where that sum rounds up to `now` while the key is already out of the window (t < now -
    window), the window is pruned all the same, as AbuseDetector prunes it."""
    t0, window, now = 215.98918183189485, 470.6396974961537, 686.6288793280486
    assert t0 < now - window and t0 + window >= now  # the rounding case itself
    t = DetectThresholds(scan_window_s=window, scan_distinct_hosts=5)
    samples = [_syn(t0, f"203.0.113.{i + 1}", 80) for i in range(5)]
    ref = AbuseDetector(fleet(False), default=t)
    vec = VectorDetector(fleet(False), default=t)
    ref.ingest(samples)
    vec.ingest_columns(SampleColumns.from_samples(samples))
    assert vec.evaluate(now, AT0) == ref.evaluate(now, AT0)
    assert not ref._states["s1"].scan_hosts.seen
    w = vec._win[vec._index["s1"]]
    assert w.scan_hosts is not None and not w.scan_hosts.seen


@pytest.mark.parametrize("bulk_rows", [1, 10_000])
def test_a_heavy_scanner_in_one_batch_equals_abuse_detector(bulk_rows: int) -> None:
    """Many scan rows of one server in one batch (re-sights, a SYN without a destination
    port, late rows), taken in bulk or row by row, then past the cap (where bulk gives way to
    the row loop): the same windows, groups and detections as AbuseDetector's."""
    t = DetectThresholds(distinct_cap=64, scan_distinct_hosts=20, scan_distinct_ports=15)
    batches = []
    for b in range(4):
        rows = [_syn(T0 + b + i * 0.001 - (0.0005 if i % 7 == 3 else 0),
                     f"203.0.113.{(i * 5 + b) % (12 + 8 * b) + 1}", (80, 443, 22, 25)[i % 4])
                for i in range(40)]
        rows.append(_sample(now=T0 + b + 0.05, protocol=6, tcp_flags=0x02,
                            dst_ip="203.0.113.3", dst_port=None, src_port=40000))
        batches.append(rows)
    ref = AbuseDetector(fleet(False), default=t)
    vec = VectorDetector(fleet(False), default=t)
    vec._bulk_rows = bulk_rows
    for b, rows in enumerate(batches):
        ref.ingest(rows)
        vec.ingest_columns(SampleColumns.from_samples(rows))
        now = T0 + b + 0.5
        assert vec.evaluate(now, AT0) == ref.evaluate(now, AT0)
        w = vec._win[vec._index["s1"]]
        st = ref._states["s1"]
        assert w.scan_hosts is not None and w.scan_pairs is not None
        assert [(_text(k), v) for k, v in w.scan_hosts.seen.items()] == list(
            st.scan_hosts.seen.items())
        assert [(_text(k >> 64), None if k & _M64 == _M64 else k & _M64, v)
                for k, v in w.scan_pairs.seen.items()] == [
            (a, p, v) for (a, p), v in st.scan_pairs.seen.items()]
        assert {_text(g): c for g, c in (w.scan_pairs.groups or {}).items()} == \
            st.scan_pairs.groups
        assert w.scan_pairs.saturated_until == st.scan_pairs.saturated_until
    assert vec.active() == ref.active()


def test_whitelisted_servers_stay_on_the_columns() -> None:
    """A server with a destination whitelist is judged from its columns like any other: its
    rows are not turned into FlowSamples (resolving one decodes its datagram), and traffic to
    the whitelisted network counts for nothing but the source checks."""
    t = DetectThresholds(udp_pps=5.0, min_samples=1, rate_window_s=1.0)
    s2 = {"input_ifindex": 2, "src_ip": "198.51.100.12"}  # s2 whitelists 203.0.113.48/30
    to_wl = [_sample(**{**s2, "now": T0 + i * 0.01, "dst_ip": "203.0.113.49"}) for i in range(40)]
    spoofed = [_sample(**{**s2, "now": T0 + 0.5, "src_ip": "203.0.113.77",
                          "dst_ip": "203.0.113.49"}) for _ in range(6)]
    asked: list[int] = []

    def resolve(refs: np.ndarray) -> list[FlowSample | None]:
        asked.extend(refs.tolist())
        return [None] * len(refs)

    ref = AbuseDetector(fleet(True), default=t)
    vec = VectorDetector(fleet(True), default=t, resolve=resolve)
    cols = SampleColumns.from_samples(to_wl + spoofed)
    cols.objects = None
    cols.ref = np.arange(len(cols), dtype=np.int64)
    ref.ingest(to_wl + spoofed)
    vec.ingest_columns(cols)
    assert asked == []
    want = ref.evaluate(T0 + 0.6, AT0)
    assert [d.key for d in want] == [("s2", "spoof", "spoofed")]  # no flood: whitelisted
    assert [d.key for d in vec.evaluate(T0 + 0.6, AT0)] == [d.key for d in want]


@pytest.mark.parametrize("bulk_rows", [16, 10_000])
def test_a_port_scan_tie_names_the_host_first_scanned(bulk_rows: int) -> None:
    """Two hosts scanned on as many ports: the detection names the one whose ports were
    first seen (its group was made first), as AbuseDetector does, also when the batch is
    taken in bulk and the other host's pairs were last seen first."""
    t = DetectThresholds(scan_distinct_ports=3, scan_distinct_hosts=50)
    a, b = "203.0.113.1", "203.0.113.2"
    rows = [_syn(T0, a, 80), _syn(T0 + 0.01, b, 80), _syn(T0 + 0.02, b, 443),
            _syn(T0 + 0.03, b, 22), _syn(T0 + 0.04, a, 443), _syn(T0 + 0.05, a, 22)]
    rows += [_syn(T0 + 0.06 + i * 0.01, b, 80) for i in range(10)]  # re-sights
    rows.append(_syn(T0 + 0.2, a, 80))  # a's first pair is the last one seen
    ref = AbuseDetector(fleet(False), default=t)
    vec = VectorDetector(fleet(False), default=t)
    vec._bulk_rows = bulk_rows
    ref.ingest(rows)
    vec.ingest_columns(SampleColumns.from_samples(rows))
    want = ref.evaluate(T0 + 0.5, AT0)
    assert [d.subjects for d in want if d.key[1:] == ("scan", "ports")] == [(a,)]
    assert vec.evaluate(T0 + 0.5, AT0) == want


# Mail senders (the spam windows' own row loop, _spam_rows): s1 a plain server, s2 with the
# whitelist 203.0.113.48/30, s3 a declared mail server. Destinations from a small pool, so the
# windows sit around their caps and count rules: re-sights, evictions, saturation, prunes.
_SENDERS = [(1, "198.51.100.11"), (2, "198.51.100.12"), (3, "198.51.100.13")]
# Not ::ffff:a.b.c.d (documented); ::a.b.c.d is spelled as the parser spells it (inet_ntop).
_MAIL_DSTS = [f"203.0.113.{i}" for i in (48, 49, 50, 51, 52, 60, 61, 62, 63, 64)] + [
    f"2001:db8:77::{i}" for i in (1, 2, 3)] + ["fe80::1", "::203.0.113.9", "::102"]


@st.composite
def mail_streams(draw: st.DrawFn) -> list[tuple[str, Any]]:
    steps: list[tuple[str, Any]] = []
    now = T0
    for _ in range(draw(st.integers(1, 10))):
        batch = []
        for _ in range(draw(st.integers(1, 40))):
            now += draw(st.sampled_from([0.0, 0.01, 0.05, 0.3, 1.2, -0.2]))
            port, src = draw(st.sampled_from(_SENDERS))
            batch.append(_sample(
                now=now, input_ifindex=port, src_ip=src, protocol=6,
                # SYN, mid-connection, RST (no spam), SYN-ACK (no spam)
                tcp_flags=draw(st.sampled_from([0x02, 0x02, 0x18, 0x10, 0x04, 0x12])),
                dst_ip=draw(st.sampled_from(_MAIL_DSTS)), src_port=40000,
                dst_port=draw(st.sampled_from([25, 587, 465, 80]))))
        steps.append(("samples", batch))
        if draw(st.integers(0, 2)):
            steps.append(("evaluate", now + draw(st.sampled_from([0.0, 0.1, 0.5]))))
    steps.append(("evaluate", now + 0.5))
    steps.append(("evaluate", now + 30.0))
    return steps


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(t=st.builds(DetectThresholds, spam_distinct_dsts=st.sampled_from([3, 5, 6]),
                   spam_window_s=st.sampled_from([1.0, 3.0]),
                   distinct_cap=st.sampled_from([3, 5, 6, 4096]),
                   min_samples=st.sampled_from([1, 5]), repeat_s=st.sampled_from([0.0, 10.0]),
                   evidence_samples=st.sampled_from([1, 3])),
       steps=mail_streams(), data=st.data())
def test_mail_senders_around_cap_and_rule_equal_abuse_detector(
    t: DetectThresholds, steps: list[tuple[str, Any]], data: st.DataObject
) -> None:
    """Spam windows at, under and over their caps and count rules (a mail server's mail and
    whitelisted destinations not counted): the same detections, and the same windows (keys,
    order, times, saturation) as AbuseDetector's at the end."""
    ref, a, b = _detectors(t, t, True)
    _run(ref, a, b, steps, data.draw)
    for vec in (a, b):
        for sid in ("s1", "s2", "s3"):
            st_ = ref._states.get(sid)
            w = vec._win.get(vec._index[sid])
            d = None if w is None else w.spam_dsts
            if st_ is None or not st_.spam_dsts.seen:
                assert d is None or not d.seen
                continue
            assert d is not None
            assert [(_text(k), v) for k, v in d.seen.items()] == list(st_.spam_dsts.seen.items())
            assert d.saturated_until == st_.spam_dsts.saturated_until


def test_many_mail_destinations_past_the_cap_in_one_batch() -> None:
    """One batch of 40 mail destinations per sender, twice round (cap 8, rule 6): evictions
    and saturation inside the batch; the mail server and the whitelisted ones never count."""
    t = DetectThresholds(spam_distinct_dsts=6, distinct_cap=8, spam_window_s=5.0)
    samples = []
    for i in range(80):
        for port, src in _SENDERS:
            dst = f"203.0.113.{48 + i % 40}"  # the first four are s2's whitelisted ones
            samples.append(_syn(T0 + i * 0.01, dst, 25, input_ifindex=port, src_ip=src))
    ref = AbuseDetector(fleet(True), default=t)
    vec = VectorDetector(fleet(True), default=t)
    ref.ingest(samples)
    vec.ingest_columns(SampleColumns.from_samples(samples))
    for now in (T0 + 1.0, T0 + 4.0, T0 + 5.5, T0 + 20.0):
        want = ref.evaluate(now, AT0 + timedelta(seconds=now - T0))
        assert vec.evaluate(now, AT0 + timedelta(seconds=now - T0)) == want
        if now == T0 + 1.0:
            keys = [d.key for d in want]
            assert ("s1", "spam", "smtp_fanout") in keys
            assert ("s2", "spam", "smtp_fanout") in keys
            assert not any(k[0] == "s3" for k in keys)
    w = vec._win[vec._index["s1"]].spam_dsts
    assert w is not None and w.saturated_until == ref._states["s1"].spam_dsts.saturated_until
    assert vec._index["s3"] not in vec._win or vec._win[vec._index["s3"]].spam_dsts is None
    assert vec.active() == ref.active()


@pytest.mark.parametrize("cap", [4, 5, 6])
@pytest.mark.parametrize("dsts", [4, 5, 6, 9])
def test_mail_destinations_at_the_rule_and_cap_alone_are_found(cap: int, dsts: int) -> None:
    """Rule 5 with the cap below, at and above it, and 4 to 9 destinations in one batch at
    rates far below every rate rule: only the spam window can make the screen judge s1, and
    it holds min(dsts, cap) keys (a window at its cap that keeps evicting stays at it)."""
    t = DetectThresholds(spam_distinct_dsts=5, distinct_cap=cap)
    samples = [_syn(T0 + i * 0.01, f"203.0.113.{60 + i}", 25) for i in range(dsts)]
    ref = AbuseDetector(fleet(False), default=t)
    vec = VectorDetector(fleet(False), default=t)
    ref.ingest(samples)
    vec.ingest_columns(SampleColumns.from_samples(samples))
    want = ref.evaluate(T0 + 1.5, AT0)
    assert (("s1", "spam", "smtp_fanout") in [d.key for d in want]) == (min(dsts, cap) >= 5)
    assert vec.evaluate(T0 + 1.5, AT0) == want
    assert vec.active() == ref.active()
