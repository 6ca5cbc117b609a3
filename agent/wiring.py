"""The only place real objects are built: config in, a runnable daemon out."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

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
from .api import ensure_token
from .clock import Clock, SystemClock
from .config import Config, SwitchConfig
from .daemon import Daemon
from .enforcer import Enforcer
from .ha import EnforcementLease, Lease, LocalLease
from .ledger import LedgerStore, OutageRecorder
from .metrics import Metrics
from .notices import CustomerNotices
from .usage import UsageStore
from .web import ConsoleParts, WebServer, load_customers_config, operator_users
from .web.metrics import MetricsServer
from .webauth import load_web_config

log = logging.getLogger("rackwarden.wiring")

def snmp_target(sw: SwitchConfig) -> SnmpTarget:
    a = sw.snmp
    return SnmpTarget(
        name=sw.name,
        host=sw.address,
        port=sw.snmp_port,
        version="3" if a.version == "3" else "2c",
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
        host_key=sw.ssh.host_key, pin_file=sw.ssh.pin_file,
        conn_timeout_s=sw.ssh.timeout_s, auth_timeout_s=sw.ssh.timeout_s,
        read_timeout_s=sw.ssh.timeout_s, save_config=sw.ssh.save_config, ports=managed,
    ))


def ssh_host_keys(config: Config) -> dict[str, str]:
    """Host-key mode of every switch the enforcer logs in to, for the metric."""
    return {name: sw.ssh.host_key or "pin" for name, sw in config.switches.items() if sw.ssh is not None}


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


class PortPoller(Protocol):
    """What the daemon needs of an SNMP poller: drivers/snmp's, or the simulated switch's."""

    async def start(self) -> None: ...
    async def poll(self, target: SnmpTarget) -> PortPoll: ...
    async def close(self) -> None: ...


def enforcement_lease(config: Config) -> Lease:
    """PostgreSQL advisory-lock leases when agents share a ledger; otherwise every switch is ours."""
    ha = config.agent.ha
    if ha is None:
        return LocalLease(keys=sorted(config.switches))
    return EnforcementLease(config.agent.ledger_database(), holder=ha.holder, keys=sorted(config.switches),
                            renew_s=ha.renew_s)


class Reconfigurable(Protocol):
    """Takes a new config snapshot after a good reload."""

    def reconfigure(self, config: Config) -> None: ...


class _LeaseKeys:
    """The enforcement lease follows the configured switches: a switch added by a reload is
    leased (and so enforced and recorded), a removed one is released."""

    def __init__(self, lease: Lease, metrics: Metrics) -> None:
        self.lease, self.metrics = lease, metrics

    def reconfigure(self, config: Config) -> None:
        self.lease.set_keys(sorted(config.switches))
        self.metrics.set_lease(self.lease, sorted(config.switches))
        self.metrics.set_ssh_host_keys(ssh_host_keys(config))


DriverFactory = Callable[[SwitchConfig], SwitchDriver | None]
NoticesFactory = Callable[[Config], CustomerNotices | None]
OnCallFactory = Callable[[Config], OnCall | None]
LeaseFactory = Callable[[Config], Lease]


class _EnforcerParts:
    """The enforcer's config and the parts built from it. An unchanged switch keeps its driver
    (and its one-session-at-a-time lock); an edited one gets a new driver."""

    def __init__(self, enforcer: Enforcer, drivers: DriverFactory, notices: NoticesFactory,
                 oncall: OnCallFactory) -> None:
        self.enforcer, self.drivers, self.notices, self.oncall = enforcer, drivers, notices, oncall

    def reconfigure(self, config: Config) -> None:
        old = self.enforcer.config
        switches = {}
        for name, sw in config.switches.items():
            kept = self.enforcer.switches.get(name)
            same = name in old.switches and old.switches[name] == sw
            d = kept if same and kept is not None else self.drivers(sw)
            if d is not None:
                switches[name] = d
        self.enforcer.reconfigure(config, switches, self.notices(config), self.oncall(config))


class Runtime:
    """The daemon plus the resources it owns (poller, metrics server) and their lifecycles.

    Every real part is built here from one config snapshot. The poller and the factories of
    switch drivers, customer notices and on-call sinks can be injected: tests/sim runs this
    same wiring against a simulated switch and a fake clock.
    """

    def __init__(
        self,
        config: Config,
        config_path: Path | None,
        clock: Clock | None = None,
        *,
        poller: PortPoller | None = None,
        driver_factory: DriverFactory = switch_driver,
        notices_factory: NoticesFactory = customer_notices,
        oncall_factory: OnCallFactory = oncall,
        lease_factory: LeaseFactory = enforcement_lease,
    ):
        self.clock = clock or SystemClock()
        self.metrics = Metrics()
        self._driver_factory = driver_factory
        self._notices_factory = notices_factory
        self._oncall_factory = oncall_factory
        self.poller: PortPoller = poller or SnmpPoller(
            wall=self.clock.at, mono=self.clock.now,
            max_concurrency=config.agent.snmp_max_concurrency,
        )
        usage = UsageStore(f"sqlite:///{config.agent.state_dir / 'usage.sqlite'}")
        self.actions = ActionStore(config.agent.ledger_database())
        self.lease: Lease = lease_factory(config)
        self.ledger = LedgerStore(config.agent.ledger_database())
        self.outages = OutageRecorder(self.ledger, config)
        drivers = {name: d for name, sw in config.switches.items() if (d := driver_factory(sw)) is not None}
        self.enforcer = Enforcer(
            config, store=self.actions, switches=drivers, readback=self._readback,
            clock=self.clock, metrics=self.metrics, notifier=notices_factory(config),
            oncall=oncall_factory(config), outages=self.outages, lease=self.lease,
        )
        self.lease.on_acquired = self.enforcer.take_over
        self.metrics.set_lease(self.lease, sorted(config.switches))
        self.metrics.set_poller(self.poller)
        self.metrics.set_ssh_host_keys(ssh_host_keys(config))
        for warning in config.warnings:
            log.warning("%s", warning)
        self.daemon = Daemon(
            config, clock=self.clock, poll=self._poll, metrics=self.metrics, usage=usage,
            config_path=config_path, on_reports=self.enforcer.on_reports, tick=self.enforcer.tick,
            outages=self.outages, ledger=self.ledger,
        )
        self.daemon.records = self.lease.held
        self._http: MetricsServer | None = None
        self.api: WebServer | None = None
        self.abuse: AbuseService | None = None
        if config.detection.enabled:
            self.abuse = AbuseService(config, clock=self.clock, metrics=self.metrics, enforcer=self.enforcer,
                                      if_index=self.daemon.metering.if_index)
            self.daemon.after_poll = self.abuse.refresh_ports
        self.daemon.after_reload = self._reconfigure

    def _reconfigure(self, new: Config) -> None:
        """SIGHUP: one new snapshot handed to every component that holds the config, in order."""
        for part in self._reloadables():
            part.reconfigure(new)

    def _reloadables(self) -> list[Reconfigurable]:
        parts: list[Reconfigurable] = [
            self.daemon, self.outages, _LeaseKeys(self.lease, self.metrics),
            _EnforcerParts(self.enforcer, self._driver_factory, self._notices_factory, self._oncall_factory),
        ]
        if self.abuse is not None:
            parts.append(self.abuse)
        return parts

    async def _poll(self, sw: SwitchConfig) -> PortPoll:
        return await self.poller.poll(snmp_target(sw))

    async def _readback(self, switch: str, port: str) -> str | None:
        """ifAdminStatus straight from the switch: the judge of every change."""
        poll = await self.poller.poll(snmp_target(self.daemon.config.switches[switch]))
        pc = poll.ports.get(port)
        return pc.admin if pc is not None and pc.admin in ("up", "down") else None

    async def start_metrics_server(self) -> int:
        """/metrics on this loop; scrapes and password checks run in threads (web/metrics.py)."""
        a = self.daemon.config.agent
        web = load_web_config(a.metrics_web_config) if a.metrics_web_config else None
        self._http = MetricsServer(self.metrics.registry, a.metrics_listen, a.metrics_port, web)
        return await self._http.start()

    async def start_core(self) -> None:
        """Open the stores, take the leases and reconcile: everything but the network listeners.

        tests/sim starts the agent this way and then drives its jobs with a fake clock.
        """
        self.daemon.config.agent.state_dir.mkdir(parents=True, exist_ok=True)
        await self.poller.start()
        if self.daemon.usage is not None:
            self.daemon.usage.start()
            # Billing resumes from the baselines committed with the last billed poll.
            self.daemon.metering.restore(self.daemon.usage.baselines(), self.clock.now(), self.clock.at())
        self.ledger.start()
        # The enforcement records share the ledger's database and transactions.
        self.actions.start(engine=self.ledger.engine)
        legacy = self.daemon.config.agent.state_dir / "actions.sqlite"
        if self.daemon.config.agent.ledger_url is None and (moved := self.actions.absorb(legacy)):
            log.info("moved %d enforcement records from %s into the ledger database", moved, legacy)
        self.outages.start()
        await self.lease.start()
        await self.enforcer.start()

    async def stop_core(self) -> None:
        await self.lease.stop()
        await self.poller.close()
        self.actions.close()
        self.ledger.close()
        if self.daemon.usage is not None:
            self.daemon.usage.close()

    def console_parts(self) -> ConsoleParts | None:
        """The web console (and the customer page) when the config names their logins."""
        a = self.daemon.config.agent
        if a.console_web_config is None and a.customers_web_config is None:
            return None
        operators = operator_users(load_web_config(a.console_web_config)) if a.console_web_config else {}
        customers = (load_customers_config(a.customers_web_config,
                                           frozenset(s.customer for s in self.daemon.config.servers))
                     if a.customers_web_config is not None else None)
        tls = a.api_web_config is not None
        return ConsoleParts(self.enforcer, self.ledger, self.daemon.usage, operators=operators,
                            customers=customers, secure_cookies=tls)

    async def run(self) -> None:
        a = self.daemon.config.agent
        await self.start_core()
        # The API and its token exist before /metrics answers: whoever waits for the agent to
        # come up can then use both.
        self.api = WebServer(self.enforcer, listen=a.api_listen, port=a.api_port,
                             token=ensure_token(a.state_dir),
                             web_config=load_web_config(a.api_web_config) if a.api_web_config else None,
                             console=self.console_parts())
        await self.api.start()
        if self.abuse is not None:
            await self.abuse.start()
        await self.start_metrics_server()
        try:
            await self.daemon.run_until_stopped()
        finally:
            if self.abuse is not None:
                await self.abuse.stop()
            await self.api.stop()
            await self.stop_core()
            if self._http is not None:
                await self._http.stop()
