"""Every metric RackWarden exports is defined here, once, on a registry the agent owns."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from rackwarden.policies.cap import CAP_STATE_VALUE, CapVerdict
from rackwarden.policies.metering import RateSample

NAN = float("nan")

# A series' labels: their values, or the one value of a one-label gauge.
_Key = tuple[str, ...] | str
# Most per-server values are a state or a flag (0, 1, 2, ...): one float object for each such
# value, not one per series (24 bytes each; Python makes a new float on every float(0)).
_SMALL = tuple(float(i) for i in range(16))


def _shared(v: float) -> float:
    if v.is_integer() and 0.0 <= v < len(_SMALL) and math.copysign(1.0, v) > 0:  # not -0.0
        return _SMALL[int(v)]
    return v


class _SeriesGauge(Collector):
    """A labelled gauge kept as one value per label tuple, exported at scrape time.

    prometheus_client's Gauge holds a child object (with its own lock, value and copies of the
    metric's settings) per label set: ~1 KB each, ~40 MB for the per-server series of 10,000
    servers. This keeps a dict of floats and yields the same family, name, help, type, labels,
    values and series order (first set first) as that Gauge would. `labels(...).set(v)` (and
    inc/dec), `remove` and `clear` work as on a Gauge, so callers need not know.

    A gauge with one label (most per-server ones) keys its dict by the label's string itself:
    a 1-tuple per series is 56 bytes more, 1.7 MB at 10,000 servers (bench/scale.py).
    """

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str],
                 registry: CollectorRegistry) -> None:
        self._name = name
        self._documentation = documentation
        self._labelnames = tuple(labelnames)
        self._single = len(self._labelnames) == 1
        self._values: dict[_Key, float] = {}
        registry.register(self)

    def labels(self, *labelvalues: object, **labelkwargs: object) -> _SeriesChild:
        if labelvalues and labelkwargs:
            raise ValueError("Can't pass both *args and **kwargs")
        if labelkwargs:
            if sorted(labelkwargs) != sorted(self._labelnames):
                raise ValueError("Incorrect label names")
            labelvalues = tuple(labelkwargs[n] for n in self._labelnames)
        elif len(labelvalues) != len(self._labelnames):
            raise ValueError("Incorrect label count")
        key = self._key(labelvalues)
        # As Gauge.labels: the series exists (at 0) from here, in this place in the order.
        self._values.setdefault(key, 0.0)
        return _SeriesChild(self._values, key)

    def remove(self, *labelvalues: object) -> None:
        if len(labelvalues) != len(self._labelnames):
            raise ValueError(f"Incorrect label count (expected {len(self._labelnames)}, got {labelvalues})")
        self._values.pop(self._key(labelvalues), None)

    def _key(self, labelvalues: Sequence[object]) -> _Key:
        return str(labelvalues[0]) if self._single else tuple(str(v) for v in labelvalues)

    def clear(self) -> None:
        self._values.clear()

    def describe(self) -> Iterator[Any]:
        yield GaugeMetricFamily(self._name, self._documentation, labels=self._labelnames)

    def collect(self) -> Iterator[Any]:
        fam = GaugeMetricFamily(self._name, self._documentation, labels=self._labelnames)
        # A copy: a scrape runs in a thread of its own while polls add series (dict.copy is
        # one step under the GIL, iterating the live dict is not).
        for key, value in self._values.copy().items():
            fam.add_metric((key,) if isinstance(key, str) else key, value)
        yield fam


class _SeriesChild:
    """What `_SeriesGauge.labels()` returns: writes one series' value (made per call, not kept)."""

    __slots__ = ("_key", "_values")

    def __init__(self, values: dict[_Key, float], key: _Key) -> None:
        self._values = values
        self._key = key

    def set(self, value: float) -> None:
        self._values[self._key] = _shared(float(value))

    def inc(self, amount: float = 1) -> None:
        self._values[self._key] = _shared(self._values.get(self._key, 0.0) + float(amount))

    def dec(self, amount: float = 1) -> None:
        self.inc(-amount)


class Metrics:
    """rackwarden_<subsystem>_<name>_<unit>; tests read them with registry.get_sample_value."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.port_rate_bps = _SeriesGauge(
            "rackwarden_port_rate_bps",
            "Measured rate of a server's port in bits/s, from the server's point of view"
            " (direction=outbound is what the server sends, the switch port's ifIn). NaN when"
            " the last poll gave no valid rate.",
            ["server", "switch", "port", "direction"], registry=r,
        )
        self.server_cap_bps = _SeriesGauge(
            "rackwarden_server_cap_bps", "The server's contract cap in force, bits/s.",
            ["server"], registry=r,
        )
        self.server_cap_state = _SeriesGauge(
            "rackwarden_server_cap_state", "Cap state: 0 ok, 1 over, 2 sustained over.",
            ["server"], registry=r,
        )
        self.server_cap_actionable = _SeriesGauge(
            "rackwarden_server_cap_actionable",
            "1 when a sustained overage is the server's own (not a victim's inbound flood).",
            ["server"], registry=r,
        )
        self.poll_duration = Histogram(
            "rackwarden_snmp_poll_duration_seconds", "Time for one SNMP poll of a switch.",
            ["switch"], registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.poll_errors = Counter(
            "rackwarden_snmp_poll_errors_total",
            "Failed or partial SNMP polls by kind (timeout, auth, transport, protocol, partial).",
            ["switch", "kind"], registry=r,
        )
        self.discontinuities = Counter(
            "rackwarden_counter_discontinuities_total",
            "Counter resets (reboots, re-indexing, Counter64 decreases): no rate, new baseline.",
            ["switch"], registry=r,
        )
        self.port_samples = Counter(
            "rackwarden_port_samples_total",
            "Port samples by status: ok, first, reset, gap, glitch, missing, suspect, repeat.",
            ["switch", "status"], registry=r,
        )
        self.port_speed_mismatch = _SeriesGauge(
            "rackwarden_port_speed_mismatch",
            "1 when the switch's ifHighSpeed for a server's port disagrees with the configured"
            " port speed (the contract's speed stays the rate ceiling; samples are kept).",
            ["server", "switch", "port"], registry=r,
        )
        self.last_poll_success = Gauge(
            "rackwarden_snmp_last_success_timestamp_seconds",
            "Unix time of the switch's last successful poll.", ["switch"], registry=r,
        )

        self.enforcement_actions = Counter(
            "rackwarden_enforcement_actions_total",
            "Enforcement decisions by action (shut, restore, throttle, unthrottle, block,"
            " unblock), reason, result (applied, failed, unknown, refused, dryrun) and mode"
            " (enforce, notify).",
            ["action", "reason", "result", "mode"], registry=r,
        )
        self.enforcement_state = _SeriesGauge(
            "rackwarden_server_enforcement_state",
            "Where the server stands on the ladder: 0 observing, 1 notified (grace), 2 suspended,"
            " 3 restricted (throttled or a service blocked; the port still forwards).",
            ["server"], registry=r,
        )
        self.server_throttled = _SeriesGauge(
            "rackwarden_server_throttled",
            "1 while RackWarden holds the server's port policed to a rate (its contract cap) and"
            " the switch's read-back shows the policer in force; 0 otherwise. Not an outage.",
            ["server"], registry=r,
        )
        self.server_service_blocked = _SeriesGauge(
            "rackwarden_server_service_blocked",
            "1 while RackWarden blocks a service's outbound traffic from the server (smtp: TCP"
            " 25/465/587) and the switch's read-back shows the filter in force; other traffic"
            " passes. 0 otherwise.",
            ["server", "service"], registry=r,
        )
        self.breaker_open = Gauge(
            "rackwarden_breaker_open",
            "1 while a switch's breaker is open: too many servers breached at once, automation stopped.",
            ["switch"], registry=r,
        )
        self.drift = Counter(
            "rackwarden_enforcement_drift_total",
            "Ports found up although RackWarden holds them suspended (re-enabled outside RackWarden).",
            ["server"], registry=r,
        )
        self.notices = Counter(
            "rackwarden_notices_total", "Customer notices by stage and result (delivered, unreachable).",
            ["stage", "result"], registry=r,
        )

        self.ssh_host_key_insecure = Gauge(
            "rackwarden_switch_ssh_host_key_insecure",
            "1 when a switch's SSH host key is accepted unverified (ssh.host_key:"
            " insecure-accept-any): a spoofed management address would get its credentials.",
            ["switch"], registry=r,
        )
        self.ledger_errors = Counter(
            "rackwarden_ledger_errors_total", "Ledger writes or reads that failed (the action stands).",
            registry=r,
        )
        self.ledger_verify_failed = Gauge(
            "rackwarden_ledger_verify_failed", "1 when the ledger's hash chain no longer verifies.",
            registry=r,
        )
        self._ledger_collector = _LedgerCollector()
        r.register(self._ledger_collector)
        self.detections = Counter(
            "rackwarden_detections_total", "Abuse detections (new findings, not refreshes) by detector.",
            ["detector", "server"], registry=r,
        )
        self.detection_latency = Histogram(
            "rackwarden_detection_latency_seconds",
            "From the first offending sample to the detection.", registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
        )
        self._sources_collector = _SourcesCollector()
        r.register(self._sources_collector)
        self._lease_collector = _LeaseCollector()
        r.register(self._lease_collector)
        self._poller_collector = _PollerCollector()
        r.register(self._poller_collector)

    def set_ssh_host_keys(self, modes: dict[str, str]) -> None:
        """Each SSH-managed switch's host-key mode (switch -> drivers.switch.HOST_KEY_MODES)."""
        self.ssh_host_key_insecure.clear()
        for switch, mode in modes.items():
            self.ssh_host_key_insecure.labels(switch).set(1 if mode == "insecure-accept-any" else 0)

    def set_lease(self, lease: Any, switches: list[str]) -> None:
        """The enforcement lease whose held switches are exported at scrape time."""
        self._lease_collector.lease = lease
        self._lease_collector.switches = switches

    def set_poller(self, poller: Any) -> None:
        """The SNMP poller whose fast-path fallbacks are exported at scrape time."""
        self._poller_collector.poller = poller

    def set_sources(self, service: Any) -> None:
        """The abuse service whose collector and capture counters are exported at scrape time."""
        self._sources_collector.service = service

    def set_ledger(self, values: Any) -> None:
        """Values computed from the ledger (agent/ledger/reports.py's LedgerMetrics)."""
        self._ledger_collector.values = values

    def observe_poll(self, switch: str, duration_s: float, error: str | None, ok_at: float | None) -> None:
        self.poll_duration.labels(switch).observe(duration_s)
        if error:
            self.poll_errors.labels(switch, error).inc()
        if ok_at is not None:
            self.last_poll_success.labels(switch).set(ok_at)

    def observe_port(self, server: str, sample: RateSample, verdict: CapVerdict) -> None:
        self.port_samples.labels(sample.switch, sample.status).inc()
        if sample.status == "reset":
            self.discontinuities.labels(sample.switch).inc()
        # Port ingress is the server's outbound traffic. A repeat (a re-poll within a second)
        # measured nothing and changed nothing: the last rate stands.
        if sample.status != "repeat":
            outbound = sample.in_bps if sample.ok and sample.in_bps is not None else NAN
            inbound = sample.out_bps if sample.ok and sample.out_bps is not None else NAN
            self.port_rate_bps.labels(server, sample.switch, sample.port, "outbound").set(outbound)
            self.port_rate_bps.labels(server, sample.switch, sample.port, "inbound").set(inbound)
        if sample.reported_speed_bps is not None:
            self.port_speed_mismatch.labels(server, sample.switch, sample.port).set(
                1 if sample.speed_mismatch else 0)
        self.server_cap_bps.labels(server).set(verdict.cap_bps)
        self.server_cap_state.labels(server).set(CAP_STATE_VALUE[verdict.state])
        self.server_cap_actionable.labels(server).set(1 if verdict.actionable else 0)


class _LedgerCollector(Collector):
    """Outage seconds and credits are facts of the ledger; this exports its latest reading."""

    def __init__(self) -> None:
        self.values: Any = None

    def collect(self) -> Iterator[Any]:
        v = self.values
        if v is None:
            return
        secs = CounterMetricFamily(
            "rackwarden_outage_seconds", "Seconds a customer port was not forwarding, by recorded cause.",
            labels=["server", "cause"])
        for (server, cause), n in sorted(v.outage_seconds.items()):
            secs.add_metric([server, cause], n)
        yield secs
        credit = GaugeMetricFamily("rackwarden_sla_credit_fen", "This month's SLA credit so far, in fen.",
                                   labels=["server"])
        for server, fen in sorted(v.credit_fen.items()):
            credit.add_metric([server], fen)
        yield credit
        yield GaugeMetricFamily("rackwarden_unknown_outage_seconds",
                                "Outage seconds still classified unknown: an operator must resolve them.",
                                value=v.unknown_seconds)
        open_ = GaugeMetricFamily(
            "rackwarden_deadlines_open",
            "R13 incident reports and R19 repair steps not yet done, pending or already overdue.",
            labels=["rule", "check", "state"])
        for (rule, check, state), n in sorted(v.deadlines_open.items()):
            open_.add_metric([rule, check, state], n)
        yield open_


class _SourcesCollector(Collector):
    """sFlow and SPAN counters live on the drivers; read them when Prometheus asks."""

    def __init__(self) -> None:
        self.service: Any = None

    def collect(self) -> Iterator[Any]:
        if self.service is None:
            return
        c = self.service.source_counters()
        # Only sources that exist are exported: a host without sFlow must not look "silent".
        if c["sflow"]:
            yield CounterMetricFamily("rackwarden_sflow_datagrams", "sFlow datagrams received from allowed agents.",
                                      value=c["sflow_datagrams"])
            errs = CounterMetricFamily("rackwarden_sflow_decode_errors",
                                       "sFlow datagrams dropped as malformed, by reason.", labels=["reason"])
            for reason, n in sorted(c["sflow_errors"].items()):
                errs.add_metric([reason], n)
            yield errs
            yield CounterMetricFamily("rackwarden_sflow_backlog_drops",
                                      "sFlow datagrams the receive thread dropped: the event loop was behind.",
                                      value=c.get("sflow_backlog_drops", 0))
        if c["span"]:
            yield CounterMetricFamily("rackwarden_capture_packets", "Frames read from SPAN/mirror interfaces.",
                                      value=c["capture_packets"])
            yield CounterMetricFamily("rackwarden_capture_drops",
                                      "Frames the kernel dropped before capture read them.", value=c["capture_drops"])


class _PollerCollector(Collector):
    """The SNMP poller's own counters (drivers/snmp/poller.py), read when Prometheus asks."""

    def __init__(self) -> None:
        self.poller: Any = None

    def collect(self) -> Iterator[Any]:
        fallbacks = getattr(self.poller, "fast_path_fallbacks", None)
        if fallbacks is None:
            return
        fam = CounterMetricFamily(
            "rackwarden_snmp_fast_path_fallbacks",
            "Polls of a v2c switch that went through pysnmp because RackWarden's own BER codec could not"
            " read the agent's replies (the switch stays on pysnmp until a restart).", labels=["switch"])
        for switch, n in sorted(fallbacks().items()):
            fam.add_metric([switch], n)
        yield fam


class _LeaseCollector(Collector):
    """Which switches this agent may enforce on (a shared deployment's advisory-lock leases)."""

    def __init__(self) -> None:
        self.lease: Any = None
        self.switches: list[str] = []

    def collect(self) -> Iterator[Any]:
        if self.lease is None:
            return
        held = GaugeMetricFamily("rackwarden_ha_lease_held",
                                 "1 when this agent holds the enforcement lease on the switch.", labels=["switch"])
        for sw in self.switches:
            held.add_metric([sw], 1 if self.lease.held(sw) else 0)
        yield held
        for attr, name, doc in (("takeovers_total", "rackwarden_ha_takeovers", "Leases taken over from another agent."),
                                ("lost_total", "rackwarden_ha_leases_lost", "Leases lost (session dropped).")):
            if hasattr(self.lease, attr):
                yield CounterMetricFamily(name, doc, value=getattr(self.lease, attr))
