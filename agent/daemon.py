"""The daemon: APScheduler poll jobs on one asyncio loop, metering, metrics, records, reload."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from prometheus_client import Gauge
from rackwarden.policies.facts import PortPoll

from . import config as configmod
from . import sdnotify
from .clock import Clock
from .ledger import LedgerStore, OutageRecorder
from .metering import MeteringService, PortReport
from .metrics import Metrics
from .pollio import poll_to_json
from .usage import UsageStore

log = logging.getLogger("rackwarden.daemon")

PollFn = Callable[[configmod.SwitchConfig], Awaitable[PortPoll]]


class Daemon:
    """Assembled from its parts (wiring.py builds the real ones); constructor does no I/O."""

    def __init__(
        self,
        config: configmod.Config,
        *,
        clock: Clock,
        poll: PollFn,
        metrics: Metrics,
        usage: UsageStore | None = None,
        config_path: Path | None = None,
        on_reports: Callable[[list[PortReport]], Awaitable[None]] | None = None,
        tick: Callable[[], Awaitable[None]] | None = None,
        tick_interval_s: float = 5.0,
        outages: OutageRecorder | None = None,
        ledger: LedgerStore | None = None,
        ledger_interval_s: float = 30.0,
    ):
        self.config = config
        self.clock = clock
        self._poll = poll
        self.metrics = metrics
        self.usage = usage
        self.config_path = config_path
        self._on_reports = on_reports
        self._tick = tick
        self._tick_interval_s = tick_interval_s
        self._outages = outages
        self._ledger = ledger
        self._ledger_interval_s = ledger_interval_s
        self.metering = MeteringService(
            config, metrics=metrics, poll_sink=usage.commit_poll if usage else None
        )
        self.reload_failed = Gauge(
            "rackwarden_config_reload_failed",
            "1 when the last reload was refused (the previous config keeps running).",
            registry=metrics.registry,
        )
        self.after_poll: Callable[[], None] | None = None
        # A good reload's snapshot goes here (agent/wiring.py hands it to every component).
        self.after_reload: Callable[[configmod.Config], None] | None = None
        # In a shared deployment only the lease holder of a switch writes its outages.
        self.records: Callable[[str], bool] = lambda switch: True
        self._scheduler: AsyncIOScheduler | None = None
        self._stop = asyncio.Event()

    async def poll_switch(self, name: str) -> list[PortReport]:
        """One job run: poll, meter, record. Errors stay inside the job and are counted."""
        sw = self.config.switches.get(name)
        if sw is None:
            return []
        try:
            poll = await self._poll(sw)
        except Exception as e:  # a driver bug must not kill the scheduler
            log.exception("poll of %s raised", name)
            poll = PortPoll(name, self.clock.at(), self.clock.now(), None, {},
                            error="protocol", error_detail=f"driver raised {type(e).__name__}: {e}")
        self.metrics.observe_poll(
            name, poll.duration_s, poll.error,
            poll.at.timestamp() if poll.error in (None, "partial") else None,
        )
        if poll.error:
            log.warning("poll of %s: %s %s", name, poll.error, poll.error_detail)
        if self.config.agent.record_polls:
            self._record(poll)
        reports = self.metering.ingest(poll)
        if self._outages is not None and self.records(name):
            try:
                self._outages.on_poll(poll, reports)
            except Exception:  # the ledger being down must not stop metering; the alert says so
                log.exception("recording outages of the poll of %s failed", name)
                self.metrics.ledger_errors.inc()
        for r in reports:
            if r.verdict.state == "sustained":
                log.warning("%s sustained over cap: %s", r.server.id, r.verdict.reason)
        if self.after_poll is not None:
            self.after_poll()
        if self._on_reports is not None:
            try:
                await self._on_reports(reports)
            except Exception:  # an enforcement bug must not stop metering
                log.exception("acting on the poll of %s raised", name)
        return reports

    def refresh_ledger_metrics(self, verify: bool = False) -> None:
        """Outage seconds, this month's credits, unknown time; optionally re-check the chain."""
        if self._ledger is None:
            return
        from .ledger import ledger_metrics

        try:
            self.metrics.set_ledger(ledger_metrics(self._ledger, self.config, self.clock.at()))
            if verify:
                self.metrics.ledger_verify_failed.set(0 if self._ledger.verify().ok else 1)
        except Exception:
            log.exception("ledger metrics failed")
            self.metrics.ledger_errors.inc()

    async def _run_tick(self) -> None:
        if self._tick is not None:
            try:
                await self._tick()
            except Exception:
                log.exception("enforcement tick raised")

    def _record(self, poll: PortPoll) -> None:
        folder = self.config.agent.state_dir / "polls"
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"{poll.switch}.jsonl", "a", encoding="utf-8") as f:
            f.write(poll_to_json(poll) + "\n")

    def _schedule(self) -> None:
        assert self._scheduler is not None
        self._scheduler.remove_all_jobs()
        for name, sw in self.config.switches.items():
            self._scheduler.add_job(
                self.poll_switch, "interval", args=[name], seconds=sw.interval_s,
                id=f"poll:{name}", max_instances=1, coalesce=True,
                next_run_time=self.clock.at(),
                misfire_grace_time=max(1, int(sw.interval_s / 2)),
            )
        if self._tick is not None:
            self._scheduler.add_job(self._run_tick, "interval", seconds=self._tick_interval_s,
                                    id="enforcement:tick", max_instances=1, coalesce=True)
        if self._ledger is not None:
            self._scheduler.add_job(self.refresh_ledger_metrics, "interval", seconds=self._ledger_interval_s,
                                    id="ledger:metrics", max_instances=1, coalesce=True,
                                    next_run_time=self.clock.at())
            self._scheduler.add_job(self.refresh_ledger_metrics, "interval", seconds=600, kwargs={"verify": True},
                                    id="ledger:verify", max_instances=1, coalesce=True,
                                    next_run_time=self.clock.at())

    def reload(self) -> bool:
        """Re-read the config file; a bad one is refused and the running config stays."""
        if self.config_path is None:
            return False
        try:
            new = configmod.load(self.config_path)
        except configmod.ConfigError as e:
            self.reload_failed.set(1)
            log.error("reload refused, keeping the running config:\n%s", e)
            return False
        if self.after_reload is not None:
            self.after_reload(new)  # wiring hands the snapshot to every component, this one included
        else:
            self.reconfigure(new)
        self.reload_failed.set(0)
        log.info("config reloaded: %d switches, %d servers", len(new.switches), len(new.servers))
        return True

    def reconfigure(self, config: configmod.Config) -> None:
        """A new config snapshot: metering follows it and the poll jobs are rescheduled."""
        self.config = config
        self.metering.reconfigure(config)
        if self._scheduler is not None:
            self._schedule()

    async def start(self) -> None:
        """Start the jobs; the stores (usage included) are opened by whoever owns them."""
        self._scheduler = AsyncIOScheduler(timezone="UTC")
        self._schedule()
        self._scheduler.start()

    async def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None

    def request_stop(self) -> None:
        self._stop.set()

    async def run_until_stopped(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        await self.start()
        sdnotify.notify("READY=1\nSTATUS=polling")
        wd = sdnotify.watchdog_interval_s()
        try:
            while not self._stop.is_set():
                try:
                    await asyncio.wait_for(self._stop.wait(), timeout=wd or 3600)
                except TimeoutError:
                    pass
                if wd:
                    sdnotify.notify("WATCHDOG=1")
        finally:
            sdnotify.notify("STOPPING=1")
            await self.stop()

    def _on_sighup(self) -> None:
        sdnotify.notify("RELOADING=1")
        self.reload()
        sdnotify.notify("READY=1")
