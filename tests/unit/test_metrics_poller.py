"""The SNMP poller's fast-path fallbacks reach Prometheus, per switch, read at scrape time."""

from __future__ import annotations

from rackwarden.agent.metrics import Metrics


class Poller:
    def __init__(self) -> None:
        self.fallbacks = {"sw1": 0, "sw2": 0}

    def fast_path_fallbacks(self) -> dict[str, int]:
        return dict(self.fallbacks)


def test_fast_path_fallbacks_are_exported_per_switch_as_they_grow() -> None:
    m, p = Metrics(), Poller()
    m.set_poller(p)
    assert m.registry.get_sample_value("rackwarden_snmp_fast_path_fallbacks_total", {"switch": "sw2"}) == 0
    p.fallbacks["sw2"] = 4
    assert m.registry.get_sample_value("rackwarden_snmp_fast_path_fallbacks_total", {"switch": "sw2"}) == 4
    assert m.registry.get_sample_value("rackwarden_snmp_fast_path_fallbacks_total", {"switch": "sw1"}) == 0


def test_a_poller_without_a_fast_path_exports_nothing() -> None:
    m = Metrics()
    m.set_poller(object())
    assert m.registry.get_sample_value("rackwarden_snmp_fast_path_fallbacks_total", {"switch": "sw1"}) is None
