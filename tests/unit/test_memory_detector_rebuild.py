"""A detector rebuild lets the old detector go before the new one is built (issue 10).

The first poll re-keys the detector by the ifIndexes it reported (a reload with new servers
does the same). Built beside the old one, the new detector took fresh memory and left the old
one's as holes the process kept mapped: +12 MB at rest at 10,000 servers (bench/scale.py).
"""

from __future__ import annotations

import gc
import weakref
from pathlib import Path
from typing import Any

import pytest
from rackwarden.agent.abuse import AbuseService, server_specs
from rackwarden.agent.clock import SystemClock
from rackwarden.agent.config import loads
from rackwarden.agent.metrics import Metrics

CONFIG = """
version: 1
agent: {{state_dir: {state}, timezone: UTC}}
templates:
  rental: {{cap_mbps: 10, window_s: 300, direction: out, billing_direction: max, credit: rental}}
switches:
  sw1:
    address: 192.0.2.2
    vendor: cisco_ios
    snmp: {{version: "2c", community: public}}
    ports: ["Gi0/[1-4]"]
    sflow_agent: 127.0.0.1
servers:
  - {{id: srv-1, customer: acme, switch: sw1, port: Gi0/1, ips: [192.0.2.101], template: rental,
     monthly_fee_fen: 80000}}
  - {{id: srv-2, customer: acme, switch: sw1, port: Gi0/2, ips: [192.0.2.102], template: rental,
     monthly_fee_fen: 80000{extra}}}
detection: {{sflow: {{listen: 127.0.0.1, port: 0}}, engine: {engine}}}
"""


class _Enforcer:
    rungs: dict[Any, Any] = {}


def _service(tmp_path: Path, engine: str, if_index: dict[str, int]) -> AbuseService:
    text = CONFIG.format(state=tmp_path / "state", engine=engine, extra="")
    return AbuseService(loads(text), clock=SystemClock(), metrics=Metrics(),
                        enforcer=_Enforcer(),  # type: ignore[arg-type]
                        if_index=lambda sw, port: if_index.get(port))


def _old_alive_at_build(svc: AbuseService, monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    old = weakref.ref(svc.detector)
    seen: list[bool] = []
    build = svc._build_detector

    def watched() -> Any:
        gc.collect()
        seen.append(old() is not None)
        return build()

    monkeypatch.setattr(svc, "_build_detector", watched)
    return seen


@pytest.mark.parametrize("engine", ["vector", "object"])
def test_first_poll_rekeys_without_the_old_detector(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    engine: str) -> None:
    if_index: dict[str, int] = {}
    svc = _service(tmp_path, engine, if_index)
    before = svc._specs
    seen = _old_alive_at_build(svc, monkeypatch)
    svc.refresh_ports()  # nothing known yet: nothing to rebuild
    assert seen == []
    if_index.update({"Gi0/1": 1, "Gi0/2": 2})  # the first poll reported them
    svc.refresh_ports()
    assert seen == [False]
    assert svc._specs != before and svc.detector is not None
    assert {p for s in svc._specs for p in s.ports} == {("127.0.0.1", 1), ("127.0.0.1", 2)}


def test_reload_with_new_servers_rebuilds_without_the_old_detector(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    svc = _service(tmp_path, "vector", {"Gi0/1": 1, "Gi0/2": 2})
    seen = _old_alive_at_build(svc, monkeypatch)
    new = loads(CONFIG.format(state=tmp_path / "state", engine="vector",
                              extra=", whitelist: [203.0.113.0/24]"))
    svc.reconfigure(new)
    assert seen == [False]
    assert svc.config is new


def test_equal_port_sets_are_one_object(tmp_path: Path) -> None:
    """A frozenset is 216 bytes however small: servers with no port known yet, or the same
    declared ports, share one."""
    text = CONFIG.format(state=tmp_path / "state", engine="vector", extra=", declared_ports: [22, 80]")
    text = text.replace("monthly_fee_fen: 80000}", "monthly_fee_fen: 80000, declared_ports: [80, 22]}", 1)
    specs = server_specs(loads(text), lambda sw, port: None)
    assert [s.ports for s in specs] == [frozenset(), frozenset()]
    assert specs[0].ports is specs[1].ports
    assert specs[0].declared_ports == specs[1].declared_ports == frozenset({22, 80})
    assert specs[0].declared_ports is specs[1].declared_ports


def test_a_poll_that_moved_no_ifindex_makes_no_specs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """refresh_ports runs after every switch's poll; the specs (one object and its sets per
    server, ~0.1 s of CPU at 10,000 servers) are made again only when an ifIndex moved."""
    from rackwarden.agent import abuse

    if_index = {"Gi0/1": 1, "Gi0/2": 2}
    svc = _service(tmp_path, "vector", if_index)
    made: list[int] = []
    real = abuse.server_specs

    def counted(config: Any, of: Any) -> Any:
        made.append(1)
        return real(config, of)

    monkeypatch.setattr(abuse, "server_specs", counted)
    detector = svc.detector
    for _ in range(3):
        svc.refresh_ports()
    assert made == [] and svc.detector is detector
    if_index["Gi0/2"] = 7  # a reboot re-indexed a port
    svc.refresh_ports()
    assert svc.detector is not detector
    assert {p for s in svc._specs for p in s.ports} == {("127.0.0.1", 1), ("127.0.0.1", 7)}
    made.clear()
    svc.refresh_ports()
    assert made == []
