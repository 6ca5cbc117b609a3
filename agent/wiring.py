"""The only place real objects are built: config in, a runnable daemon out."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import start_http_server

from rackwarden.drivers.snmp.poller import SnmpPoller, SnmpTarget
from rackwarden.policies.facts import PortPoll

from .clock import Clock, SystemClock
from .config import Config, SwitchConfig
from .daemon import Daemon
from .metrics import Metrics
from .usage import UsageStore


def snmp_target(sw: SwitchConfig) -> SnmpTarget:
    a = sw.snmp
    return SnmpTarget(
        name=sw.name,
        host=sw.address,
        port=sw.snmp_port,
        version=a.version,
        community=a.community,
        user=a.user,
        auth_protocol=a.auth_protocol or "sha",
        auth_key=a.auth_key,
        priv_protocol=a.priv_protocol,
        priv_key=a.priv_key,
        timeout_s=sw.timeout_s,
        retries=sw.retries,
        max_repetitions=sw.max_repetitions,
    )


class Runtime:
    """The daemon plus the resources it owns (poller, metrics server) and their lifecycles."""

    def __init__(self, config: Config, config_path: Path | None, clock: Clock | None = None):
        self.clock = clock or SystemClock()
        self.metrics = Metrics()
        self.poller = SnmpPoller(
            wall=self.clock.at, mono=self.clock.now,
            max_concurrency=config.agent.snmp_max_concurrency,
        )
        usage = UsageStore(f"sqlite:///{config.agent.state_dir / 'usage.sqlite'}")
        self.daemon = Daemon(
            config, clock=self.clock, poll=self._poll, metrics=self.metrics, usage=usage,
            config_path=config_path,
        )
        self._http: object | None = None

    async def _poll(self, sw: SwitchConfig) -> PortPoll:
        return await self.poller.poll(snmp_target(sw))

    def start_metrics_server(self) -> int:
        a = self.daemon.config.agent
        server, _thread = start_http_server(a.metrics_port, addr=a.metrics_listen, registry=self.metrics.registry)
        self._http = server
        return int(server.server_port)

    async def run(self) -> None:
        self.daemon.config.agent.state_dir.mkdir(parents=True, exist_ok=True)
        await self.poller.start()
        self.start_metrics_server()
        try:
            await self.daemon.run_until_stopped()
        finally:
            await self.poller.close()
            if self._http is not None:
                self._http.shutdown()  # type: ignore[attr-defined]
