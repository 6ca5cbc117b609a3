"""The RackWarden side of bench/peer_fastnetmon.py: the daemon's sFlow path in a process of its own.

What runs is what `rackwarden run` runs for sFlow (agent/wiring.py): the config loaded by
agent/config.py, agent/abuse.AbuseService built and started as the Runtime does it (its
SflowCollector with the receive thread and the daemon's socket settings, the AbuseDetector with
the config's thresholds, the evaluation loop at detection.evaluate_interval_s, evidence pcaps
into state_dir) and /metrics served by agent/web/metrics.MetricsServer. Two stand-ins, because
the bench has no switches: ifIndexes come from the switch's port list (position + 1, what the
first SNMP poll would report for a switch numbered that way), and the enforcer only records the
wall time a standing detection first reaches it (the moment the daemon hands it to enforcement)
and prints it as a JSON line. SNMP polling, the ledger and the web API are not running.

stdout: one JSON line {"ready": ..., "metrics_port", "sflow_port", "pid"}, then one line per
first detection of a server {"detect": server, "t": time.time(), "detector": ...}. It stops
(collector closed, threads joined) when stdin closes or on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def fleet_yaml(state_dir: Path, agents: int, ports: int, threshold_pps: int) -> str:
    """`agents` switches x `ports` servers, keys as in config/example.yaml; one sFlow agent per
    switch at 127.200.a.b (bench/_peer_sender.py sends from there), server g on port g % ports
    + 1 with bench/sflow_batch.py's address. One template: flood and UDP-flood thresholds at
    `threshold_pps` (the peer's threshold_pps); every other detector at its default."""
    out = [f"""# bench/peer_fastnetmon.py fleet: {agents} switches x {ports} ports
version: 1
agent:
  state_dir: {state_dir}
  mode: notify
detection:
  sflow: {{listen: 127.0.0.1, port: 0}}
  thresholds:
    rental: {{flood_pps: {threshold_pps}, udp_pps: {threshold_pps}}}
templates:
  rental: {{cap_mbps: 10, window_s: 300, direction: out, billing_direction: max, credit: rental}}
switches:
"""]
    for a in range(agents):
        out.append(f"""  sw{a:03d}:
    address: 10.200.{a // 256}.{a % 256}
    vendor: cisco_ios
    snmp: {{version: "2c", community: public}}
    ports: ["Gi0/[1-{ports}]", "Te0/1"]
    protected_ports: ["Te0/1"]
    sflow_agent: 127.200.{a // 256}.{a % 256}
""")
    out.append("servers:\n")
    for a in range(agents):
        for p in range(1, ports + 1):
            g = a * ports + p - 1
            ip = f"10.{1 + g // 65536}.{(g // 256) % 256}.{g % 256}"
            out.append(f"  - {{id: s{g:05d}, customer: c{g // 7:04d}, switch: sw{a:03d}, port: Gi0/{p},"
                       f" ips: [{ip}], template: rental, monthly_fee_fen: 60000,"
                       f" contacts: [ops@c{g // 7:04d}.example]}}\n")
    return "".join(out)


class _Enforcer:
    """Stands in for agent.enforcer.Enforcer where AbuseService.evaluate reaches it."""

    def __init__(self) -> None:
        self.rungs: dict[tuple[str, str], Any] = {}
        self.seen: set[str] = set()

    async def on_abuse(self, server: str, standing: Any, evidence: Any) -> None:
        if standing is not None and server not in self.seen:
            self.seen.add(server)
            print(json.dumps({"detect": server, "t": time.time(), "detector": standing.detector}),
                  flush=True)


class _SampleCounter:
    """bench_sflow_flow_samples: the collector's flow-sample counter (not among the daemon's
    metrics, which count datagrams), so CPU per sample is per sample the tool took."""

    def __init__(self, service: Any) -> None:
        self.service = service

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily

        col = self.service.collector
        yield CounterMetricFamily("bench_sflow_flow_samples", "Flow samples decoded.",
                                  value=col.flow_samples_total if col is not None else 0)


async def run(config_path: Path) -> None:
    from rackwarden.agent import config as configmod
    from rackwarden.agent.abuse import AbuseService
    from rackwarden.agent.clock import SystemClock
    from rackwarden.agent.metrics import Metrics
    from rackwarden.agent.web.metrics import MetricsServer

    cfg = configmod.load(config_path)
    cfg.agent.state_dir.mkdir(parents=True, exist_ok=True)
    positions = {name: {p: i for i, p in enumerate(sw.ports, start=1)}
                 for name, sw in cfg.switches.items()}

    def if_index(switch: str, port: str) -> int | None:
        return positions.get(switch, {}).get(port)

    metrics = Metrics()
    service = AbuseService(cfg, clock=SystemClock(), metrics=metrics,
                           enforcer=_Enforcer(), if_index=if_index)  # type: ignore[arg-type,unused-ignore]
    metrics.registry.register(_SampleCounter(service))
    http = MetricsServer(metrics.registry, "127.0.0.1", 0)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    try:
        metrics_port = await http.start()
        await service.start()
        assert service.collector is not None
        print(json.dumps({"ready": True, "metrics_port": metrics_port,
                          "sflow_port": service.collector.bound_port,
                          "rcvbuf_bytes": service.collector.rcvbuf_bytes, "pid": os.getpid()}),
              flush=True)

        def wait_eof() -> None:
            sys.stdin.read()
            loop.call_soon_threadsafe(stop.set)

        # A daemon thread: asyncio.run's executor shutdown would wait for a blocked read.
        threading.Thread(target=wait_eof, name="stdin-eof", daemon=True).start()
        await stop.wait()
    finally:
        await service.stop()
        await http.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, required=True)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="rackwarden %(levelname)s %(name)s: %(message)s")
    # Detections are logged at WARNING by the daemon; the bench reads them from stdout instead.
    logging.getLogger("rackwarden.abuse").setLevel(logging.ERROR)
    asyncio.run(run(args.config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
