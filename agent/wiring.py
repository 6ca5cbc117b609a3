"""The only place real objects are built: config in, a runnable daemon out."""

from __future__ import annotations

import asyncio
from pathlib import Path

from rackwarden.drivers.notify import (
    AlertmanagerClient,
    Notifier,
    OnCall,
    SmtpNotifier,
    WebhookNotifier,
)
from rackwarden.drivers.snmp.poller import SnmpPoller, SnmpTarget
from rackwarden.drivers.switch.base import SwitchDriver
from rackwarden.drivers.switch.session import NetmikoSwitch, SwitchTarget
from rackwarden.policies.facts import PortPoll

from .abuse import AbuseService
from .actions import ActionStore
from .api import ApiServer, ensure_token
from .clock import Clock, SystemClock
from .config import Config, SwitchConfig
from .daemon import Daemon
from .enforcer import Enforcer
from .ha import EnforcementLease, Lease, LocalLease
from .ledger import LedgerStore, OutageRecorder
from .metrics import Metrics
from .notices import CustomerNotices
from .usage import UsageStore
from .webauth import MetricsServer, load_web_config


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


def switch_driver(sw: SwitchConfig) -> SwitchDriver | None:
    """A netmiko session driver for a switch with SSH configured; None means it cannot be shut."""
    if sw.ssh is None:
        return None
    managed = frozenset(sw.cli_name(p) for p in sw.ports if p not in sw.protected_ports)
    return NetmikoSwitch(SwitchTarget(
        name=sw.name, vendor=sw.vendor, host=sw.address, username=sw.ssh.username, port=sw.ssh.port,
        key_file=sw.ssh.key_file, password=sw.ssh.password, known_hosts=sw.ssh.known_hosts,
        conn_timeout_s=sw.ssh.timeout_s, auth_timeout_s=sw.ssh.timeout_s,
        read_timeout_s=sw.ssh.timeout_s, save_config=sw.ssh.save_config, ports=managed,
    ))


def customer_notices(config: Config) -> CustomerNotices | None:
    n = config.notify.smtp
    if n is None:
        return None
    return CustomerNotices(config, SmtpNotifier(n.host, n.port, n.sender, starttls=n.starttls,
                                                username=n.username, password=n.password))


def oncall(config: Config) -> OnCall | None:
    sinks: dict[str, Notifier] = {}
    if config.notify.alertmanager_url:
        sinks["alertmanager"] = AlertmanagerClient(config.notify.alertmanager_url)
    if config.notify.webhook_url:
        sinks["webhook"] = WebhookNotifier(config.notify.webhook_url)
    return OnCall(sinks) if sinks else None


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
        self.actions = ActionStore(config.agent.actions_database())
        ha = config.agent.ha
        self.lease: Lease = (
            EnforcementLease(config.agent.ledger_database(), holder=ha.holder, keys=sorted(config.switches),
                             renew_s=ha.renew_s)
            if ha is not None else LocalLease(keys=sorted(config.switches)))
        self.ledger = LedgerStore(config.agent.ledger_database())
        self.outages = OutageRecorder(self.ledger, config)
        drivers = {name: d for name, sw in config.switches.items() if (d := switch_driver(sw)) is not None}
        self.enforcer = Enforcer(
            config, store=self.actions, switches=drivers, readback=self._readback,
            clock=self.clock, metrics=self.metrics, notifier=customer_notices(config),
            oncall=oncall(config), outages=self.outages, lease=self.lease,
        )
        if isinstance(self.lease, EnforcementLease):
            self.lease.on_acquired = self.enforcer.take_over
        self.metrics.set_lease(self.lease, sorted(config.switches))
        self.daemon = Daemon(
            config, clock=self.clock, poll=self._poll, metrics=self.metrics, usage=usage,
            config_path=config_path, on_reports=self.enforcer.on_reports, tick=self.enforcer.tick,
            outages=self.outages, ledger=self.ledger,
        )
        self.daemon.records = self.lease.held
        self._http: MetricsServer | None = None
        self.api: ApiServer | None = None
        self.abuse: AbuseService | None = None
        if config.detection.enabled:
            self.abuse = AbuseService(config, clock=self.clock, metrics=self.metrics, enforcer=self.enforcer,
                                      if_index=self.daemon.metering.if_index)
            self.daemon.after_poll = self.abuse.refresh_ports
        self.daemon.after_reload = self._reconfigure

    def _reconfigure(self, new: Config) -> None:
        """SIGHUP: the enforcer and the detectors follow the daemon onto the new config."""
        old = self.enforcer.config
        drivers = {}
        for name, sw in new.switches.items():
            kept = self.enforcer.switches.get(name)
            same = name in old.switches and old.switches[name] == sw
            d = kept if same and kept is not None else switch_driver(sw)
            if d is not None:
                drivers[name] = d
        self.enforcer.reconfigure(new, drivers, customer_notices(new), oncall(new))
        if self.abuse is not None:
            self.abuse.reconfigure(new)

    async def _poll(self, sw: SwitchConfig) -> PortPoll:
        return await self.poller.poll(snmp_target(sw))

    async def _readback(self, switch: str, port: str) -> str | None:
        """ifAdminStatus straight from the switch: the judge of every change."""
        poll = await self.poller.poll(snmp_target(self.daemon.config.switches[switch]))
        pc = poll.ports.get(port)
        return pc.admin if pc is not None and pc.admin in ("up", "down") else None

    def start_metrics_server(self) -> int:
        a = self.daemon.config.agent
        web = load_web_config(a.metrics_web_config) if a.metrics_web_config else None
        self._http = MetricsServer(self.metrics.registry, a.metrics_listen, a.metrics_port, web)
        return self._http.start()

    async def run(self) -> None:
        a = self.daemon.config.agent
        a.state_dir.mkdir(parents=True, exist_ok=True)
        await self.poller.start()
        self.actions.start()
        self.ledger.start()
        self.outages.start()
        await self.lease.start()
        await self.enforcer.start()
        # The API and its token exist before /metrics answers: whoever waits for the agent to
        # come up can then use both.
        self.api = ApiServer(self.enforcer, listen=a.api_listen, port=a.api_port,
                             token=ensure_token(a.state_dir))
        self.api.start(asyncio.get_running_loop())
        if self.abuse is not None:
            await self.abuse.start()
        self.start_metrics_server()
        try:
            await self.daemon.run_until_stopped()
        finally:
            if self.abuse is not None:
                await self.abuse.stop()
            self.api.stop()
            await self.lease.stop()
            await self.poller.close()
            self.actions.close()
            self.ledger.close()
            if self._http is not None:
                self._http.stop()
