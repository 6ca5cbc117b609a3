"""Per-server metric series kept compactly (issue 10: RSS at 10,000 servers).

The per-server gauges are exported at scrape time from one dict per metric instead of one
prometheus_client child object per series. What Prometheus, the alert rules and the console
see must not change: the scrape of the same state is byte-for-byte what the Gauges gave.
"""

from __future__ import annotations

import gc
import math
import tracemalloc
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from rackwarden.agent import metrics as metrics_mod
from rackwarden.agent.metrics import Metrics
from rackwarden.policies.cap import CapVerdict
from rackwarden.policies.metering import RateSample

AT = datetime(2026, 12, 1, tzinfo=UTC)


def _sample(i: int, status: str, k: int) -> RateSample:
    return RateSample(
        switch=f"sw{i % 3}", port=f"Gi0/{i}", at=AT + timedelta(seconds=60 * k), status=status,  # type: ignore[arg-type]
        in_bps=1000.0 * i + k if status == "ok" else None,
        out_bps=None if i % 5 == 0 else 2000.0 * i,
        configured_speed_bps=100_000_000,
        reported_speed_bps=None if i % 4 == 0 else (1_000_000_000 if i % 7 == 0 else 100_000_000),
    )


def _verdict(i: int, k: int) -> CapVerdict:
    state = ("ok", "over", "sustained")[(i + k) % 3]
    return CapVerdict(server=f"srv-{i}", at=AT, state=state, actionable=(i + k) % 2 == 0,  # type: ignore[arg-type]
                      cap_bps=10_000_000 * (1 + i % 2), direction="out", valid=True)


def _drive(m: Metrics) -> None:
    """Polls (every status, NaN rates, speed mismatches, a server appearing late), then what the
    enforcer and the SSH host-key check write, including a series set back to 0 and a clear."""
    statuses = ("first", "ok", "repeat", "reset", "gap", "missing", "ok")
    for k, status in enumerate(statuses):
        for i in range(1, 12 if k else 8):
            m.observe_port(f"srv-{i}", _sample(i, status if i % 6 else "ok", k), _verdict(i, k))
        m.observe_poll(f"sw{k % 3}", 0.05 * (k + 1), "timeout" if k == 3 else None, 1e9 + k)
    for i in range(1, 12):
        m.enforcement_state.labels(f"srv-{i}").set(i % 4)
        m.server_throttled.labels(server=f"srv-{i}").set(1 if i == 3 else 0)
    m.server_service_blocked.labels("srv-2", "smtp").set(1)
    m.server_service_blocked.labels("srv-5", "smtp").set(1)
    m.server_service_blocked.labels("srv-2", "smtp").set(0)
    m.port_speed_mismatch.remove("srv-7", "sw1", "Gi0/7")
    m.server_cap_actionable.labels("srv-9").inc(2)
    m.server_cap_actionable.labels("srv-9").dec()
    m.set_ssh_host_keys({"sw0": "pin", "sw1": "insecure-accept-any"})
    m.set_ssh_host_keys({"sw2": "known-hosts"})
    m.detections.labels("flood", "srv-4").inc()


def _as_gauges(name: str, documentation: str, labelnames: Any, registry: CollectorRegistry) -> Gauge:
    return Gauge(name, documentation, labelnames, registry=registry)


def _scrape(registry: CollectorRegistry) -> list[str]:
    """The exposition text, but the counters' and histograms' creation times (clock readings)."""
    return [line for line in generate_latest(registry).decode().splitlines() if "_created" not in line]


def test_scrape_is_what_the_gauges_gave(monkeypatch: pytest.MonkeyPatch) -> None:
    now = Metrics()
    _drive(now)
    # The same Metrics with prometheus_client Gauges in place of the compact series: the old code.
    monkeypatch.setattr(metrics_mod, "_SeriesGauge", _as_gauges, raising=False)
    old = Metrics()
    _drive(old)
    assert _scrape(now.registry) == _scrape(old.registry)
    assert now.registry.get_sample_value(
        "rackwarden_port_rate_bps", {"server": "srv-2", "switch": "sw2", "port": "Gi0/2", "direction": "inbound"}
    ) == 4000.0


def test_names_and_label_errors_are_the_gauges() -> None:
    m = Metrics()
    with pytest.raises(ValueError):
        m.server_cap_bps.labels("srv-1", "extra")
    with pytest.raises(ValueError):
        m.server_service_blocked.labels(server="srv-1")
    # A second collector of the same name is refused as for a Gauge (the registry sees it).
    with pytest.raises(ValueError):
        Gauge("rackwarden_server_cap_bps", "again", ["server"], registry=m.registry)
    only = m.registry.restricted_registry(["rackwarden_server_throttled"])
    m.server_throttled.labels("srv-1").set(1)
    assert "rackwarden_server_throttled{server=\"srv-1\"} 1.0" in generate_latest(only).decode()


def _retained_per_server(n: int) -> float:
    m = Metrics()
    samples = [(f"srv-{i:05d}", _sample(i, "ok", 1), _verdict(i, 1)) for i in range(n)]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for sid, s, v in samples:
            m.observe_port(sid, s, v)
            m.enforcement_state.labels(sid).set(0)
            m.server_throttled.labels(sid).set(0)
        gc.collect()
        return (tracemalloc.get_traced_memory()[0] - before) / n
    finally:
        tracemalloc.stop()


def test_per_server_series_stay_small() -> None:
    """8 series per server (rates in and out, cap, state, actionable, speed mismatch, ladder,
    throttled). As Gauge children they held ~5 KB per server (50 MB at 10,000 servers)."""
    per_server = _retained_per_server(2000)
    assert per_server < 2000, f"{per_server:.0f} bytes per server"



def test_one_label_state_series_keep_no_object_of_their_own() -> None:
    """A one-label series is its label's string and its value: no 1-tuple per series (56
    bytes), and a state or flag (0, 1, 2) is one shared float, not a new one per series."""
    m = Metrics()
    ids = [f"srv-{i:05d}" for i in range(3000)]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for i, sid in enumerate(ids):
            m.server_cap_state.labels(sid).set(i % 3)
            m.server_cap_actionable.labels(server=sid).set(i % 2)
            m.server_cap_actionable.labels(server=sid).inc()
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    blocks = sum(st.count_diff for st in after.compare_to(before, "filename"))
    # Only the dicts' tables grow (a handful of blocks), whatever the number of series.
    assert blocks < 100, f"{blocks} blocks for {2 * len(ids)} series"
    sample = m.registry.get_sample_value
    assert sample("rackwarden_server_cap_state", {"server": "srv-00007"}) == 1.0
    assert sample("rackwarden_server_cap_actionable", {"server": "srv-00007"}) == 2.0
    m.server_cap_state.remove("srv-00007")
    assert sample("rackwarden_server_cap_state", {"server": "srv-00007"}) is None
    # What is not a small whole number is kept as given: -0.0 keeps its sign, NaN stays NaN.
    m.server_cap_bps.labels("srv-1").set(-0.0)
    m.server_cap_bps.labels("srv-2").set(float("nan"))
    m.server_cap_bps.labels("srv-3").set(2.5)
    negative_zero, nan = (sample("rackwarden_server_cap_bps", {"server": s}) for s in ("srv-1", "srv-2"))
    assert negative_zero is not None and math.copysign(1.0, negative_zero) < 0
    assert nan is not None and math.isnan(nan)
    assert sample("rackwarden_server_cap_bps", {"server": "srv-3"}) == 2.5
