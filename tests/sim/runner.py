"""Plays a scenario file (tests/sim/scenarios/*.yaml) against the whole agent on simulated switches with a fake clock.

The agent is built by agent/wiring.Runtime from the scenario's config, exactly as `rackwarden
run` builds it, with five parts swapped at the seams wiring offers: the SNMP poller and the
switch drivers (tests/sim/switch.py), the customers' mail relay, the on-call sinks and, for
`agent.ha` configs, the enforcement lease (tests/sim/edges.py). `start_core()` opens the real
SQLite stores in a temporary state_dir; the runner then plays the daemon's scheduler by hand
on the fake clock (see README.md here for the format and the schedule).

Assertions read effects: the simulated switch's ports, the real action store, ledger and SLA
report, the mail relay and the pager. Besides the `expect:` steps, invariants run after every
step (no change left PENDING, no warning's promised deadline broken, every notice attempt in
the store, no exception logged by the agent) and at the end (the ledger's hash chain verifies).
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import logging
import re
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

import yaml
from rackwarden.agent import cli, wiring
from rackwarden.agent import config as configmod
from rackwarden.agent.clock import FakeClock
from rackwarden.agent.config import Config, SwitchConfig
from rackwarden.agent.ledger import sla_report
from rackwarden.drivers.switch.base import SwitchDriver
from sqlalchemy import event
from sqlalchemy.engine import Engine

from .edges import LeaseTable, Mailboxes, Page, SimLease, notices_factory, oncall_factory
from .flows import FlowGen
from .switch import CLI_FAULTS, SNMP_FAULTS, SimError, SimPoller, SimSwitchDriver, SimWorld

MBIT = 1_000_000
DAEMON_TICK_S = 5.0  # agent/daemon.Daemon's tick_interval_s default: the enforcement tick
_REAL_LOAD = configmod.load
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|d|h|m|s)")
_TOP_KEYS = {"name", "description", "start", "config", "sim", "timeline"}
_SIM_KEYS = {"switches", "tick_s", "allow_exceptions"}
_ACTIONS = ("traffic", "flows", "fault", "suspend", "restore", "hold", "breaker_reset", "maintenance",
            "reclassify", "reload", "expect")


class ScenarioError(Exception):
    """The scenario file itself is wrong (not the agent)."""


# -- times -------------------------------------------------------------------------------------


def parse_duration(value: Any) -> float:
    """Seconds from `90`, `"30s"`, `"15m"`, `"1h30m"`, `"2d"`, `"250ms"`; a leading `-` negates."""
    if isinstance(value, bool):
        raise ScenarioError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    sign = -1.0 if text.startswith("-") else 1.0
    text = text.lstrip("+-").replace(" ", "")
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ScenarioError(f"not a duration: {value!r} (write e.g. 90s, 15m, 1h30m, 2d)")
    return sign * total


def offset_text(seconds: float) -> str:
    sign = "-" if seconds < 0 else ""
    s = abs(seconds)
    d, rest = divmod(int(s), 86400)
    h, rest = divmod(rest, 3600)
    m, sec = divmod(rest, 60)
    frac = s - int(s)
    tail = f"{sec:02d}s" if not frac else f"{sec + frac:05.2f}s"
    return f"{sign}{f'{d}d' if d else ''}{h:02d}h{m:02d}m{tail}"


def _aware(v: datetime) -> datetime:
    return v if v.tzinfo is not None else v.replace(tzinfo=UTC)


# -- the scenario file ---------------------------------------------------------------------------


@dataclass
class Scenario:
    name: str
    path: Path
    description: str
    start: datetime
    config: str
    sim: dict[str, Any]
    timeline: list[dict[str, Any]]


def load_scenario(path: Path) -> Scenario:
    doc = yaml.safe_load(path.read_text())
    if not isinstance(doc, dict):
        raise ScenarioError(f"{path}: a scenario is a mapping")
    unknown = set(doc) - _TOP_KEYS
    if unknown:
        raise ScenarioError(f"{path}: unknown keys {sorted(unknown)} (allowed: {sorted(_TOP_KEYS)})")
    for k in ("start", "config", "timeline"):
        if k not in doc:
            raise ScenarioError(f"{path}: {k} is required")
    start = doc["start"]
    start = _aware(start) if isinstance(start, datetime) else _aware(datetime.fromisoformat(str(start)))
    sim = doc.get("sim") or {}
    if set(sim) - _SIM_KEYS:
        raise ScenarioError(f"{path}: unknown sim keys {sorted(set(sim) - _SIM_KEYS)}")
    if not isinstance(doc["timeline"], list):
        raise ScenarioError(f"{path}: timeline is a list of steps")
    return Scenario(str(doc.get("name") or path.stem), path, str(doc.get("description") or ""), start,
                    str(doc["config"]), dict(sim), list(doc["timeline"]))


# -- one agent ----------------------------------------------------------------------------------


class _ExceptionLog(logging.Handler):
    """Every exception the agent logs (log.exception) while the scenario runs."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.records.append(record)


@dataclass
class Failure:
    at: str
    step: str
    message: str

    def __str__(self) -> str:
        return f"[{self.at}] {self.step}: {self.message}"


@dataclass
class _Unchecked:
    """Config changes no valid file can express, for the rails that defend against them."""

    protected: dict[str, set[str]] = field(default_factory=dict)  # switch -> extra protected ports


class SimAgent:
    """One Runtime on the simulated world, and the daemon's scheduler played on the fake clock."""

    def __init__(self, sc: Scenario, tmp: Path):
        self.sc = sc
        self.clock = FakeClock(sc.start)
        self.start_now = self.clock.now()
        self.world = SimWorld(self.clock, sc.sim.get("switches"))
        self.mail = Mailboxes()
        self.pages: list[Page] = []
        self.leases = LeaseTable()
        self.state_dir = tmp / "state"
        self.config_path = tmp / "rackwarden.yaml"
        self.config_text = sc.config
        self.unchecked = _Unchecked()
        self.failures: list[Failure] = []
        self.where = ("00h00m00s", "start")
        self.flows: list[FlowGen] = []
        self._reported: set[tuple[str, str]] = set()
        self.story_text = ""
        self._write_config(self.config_text)
        cfg = self._adapt(_REAL_LOAD(self.config_path))
        self.rt = wiring.Runtime(
            cfg, self.config_path, self.clock, poller=SimPoller(self.world), driver_factory=self._driver,
            notices_factory=notices_factory(self.mail), oncall_factory=oncall_factory(self.pages),
            lease_factory=self._lease,
        )
        self.t_ms = 0
        self.tick_ms = int(float(sc.sim.get("tick_s", DAEMON_TICK_S)) * 1000)
        self.next_poll: dict[str, int] = {}
        self.next_tick = self.tick_ms
        self.next_eval: int | None = None
        self.next_lease: int | None = None
        self.last_eval_now = self.clock.now()
        self._schedule_polls()
        if self.rt.abuse is not None:
            self.next_eval = self._eval_ms()
        if isinstance(self.rt.lease, SimLease):
            self.next_lease = self._lease_ms()

    # -- wiring seams ----------------------------------------------------------------------------

    def _write_config(self, text: str) -> None:
        if "${state_dir}" not in text:
            raise ScenarioError("the config must say `state_dir: ${state_dir}` (the runner fills in a temp dir)")
        self.config_path.write_text(text.replace("${state_dir}", str(self.state_dir)))

    def _adapt(self, cfg: Config) -> Config:
        """What the runner changes in every config snapshot it hands the agent (the README says why)."""
        if cfg.agent.ledger_url is not None:
            # No PostgreSQL here: the stores stay SQLite files in state_dir; the shared lease
            # table stands in for the advisory locks (lease_factory below).
            cfg = dataclasses.replace(cfg, agent=dataclasses.replace(cfg.agent, ledger_url=None))
        if self.unchecked.protected:
            switches = {name: dataclasses.replace(sw, protected_ports=sw.protected_ports
                                                  | frozenset(self.unchecked.protected.get(name, ())))
                        for name, sw in cfg.switches.items()}
            cfg = dataclasses.replace(cfg, switches=switches)
        for sw in cfg.switches.values():
            self.world.ensure(sw)
        return cfg

    def _driver(self, cfg: SwitchConfig) -> SwitchDriver | None:
        if cfg.ssh is None:
            return None  # as wiring.switch_driver: no SSH, no way to shut
        return SimSwitchDriver(self.world.ensure(cfg), cfg)

    def _lease(self, cfg: Config) -> Any:
        if cfg.agent.ha is None:
            return wiring.enforcement_lease(cfg)  # the real LocalLease
        return SimLease(self.leases, holder=cfg.agent.ha.holder, clock=self.clock, keys=sorted(cfg.switches))

    @property
    def config(self) -> Config:
        return self.rt.daemon.config

    # -- the daemon's schedule, by hand ----------------------------------------------------------

    def _schedule_polls(self) -> None:
        """As Daemon._schedule: every switch is polled now, then every interval_s."""
        self.next_poll = {name: self.t_ms for name in self.config.switches}

    def _eval_ms(self) -> int:
        return max(1, int(round(self.config.detection.evaluate_interval_s * 1000)))

    def _lease_ms(self) -> int:
        ha = self.config.agent.ha
        return max(1, int(round((ha.renew_s if ha else 2.0) * 1000)))

    def _advance_to(self, t_ms: int) -> None:
        if t_ms > self.t_ms:
            self.clock.advance((t_ms - self.t_ms) / 1000)
            self.t_ms = t_ms

    async def run_until(self, target_ms: int) -> None:
        while True:
            due = [*self.next_poll.values(), self.next_tick]
            due += [t for t in (self.next_eval, self.next_lease) if t is not None]
            t = min(due)
            if t > target_ms:
                break
            self._advance_to(t)
            await self._run_jobs(t)
        self._advance_to(target_ms)

    async def _run_jobs(self, t: int) -> None:
        rt = self.rt
        if self.next_lease is not None and self.next_lease <= t:
            await rt.lease.refresh()
            self.next_lease = t + self._lease_ms()
        for name, sw in list(self.config.switches.items()):
            if self.next_poll.get(name, t + 1) <= t:
                await rt.daemon.poll_switch(name)
                self.next_poll[name] = t + int(round(sw.interval_s * 1000))
        for name in [n for n in self.next_poll if n not in self.config.switches]:
            del self.next_poll[name]
        if self.next_eval is not None and self.next_eval <= t:
            assert rt.abuse is not None
            samples = self._flow_samples()
            if samples:
                rt.abuse.on_samples(samples)
            await rt.abuse.evaluate()
            self.next_eval = t + self._eval_ms()
        if self.next_tick <= t:
            await rt.enforcer.tick()
            self.next_tick = t + self.tick_ms

    def _flow_samples(self) -> list[Any]:
        t0, t1 = self.last_eval_now, self.clock.now()
        self.last_eval_now = t1
        out: list[Any] = []
        for g in list(self.flows):
            if g.until_now is not None and g.until_now <= t0:
                self.flows.remove(g)
                continue
            server = self.config.server(g.server)
            if server is None:
                continue
            sw = self.config.switches[server.switch]
            port = self.world.switch(sw.name).port(server.port)
            if not port.forwarding:
                g.carry = 0.0  # the switch drops what a down port would send: nothing is sampled
                continue
            if sw.sflow_agent is None:
                raise ScenarioError(f"flows from {g.server}: switch {sw.name} has no sflow_agent in the config")
            out += g.samples(t0, t1, self.clock, sw.sflow_agent, port.if_index, None)
        return out

    # -- playing ---------------------------------------------------------------------------------

    async def play(self) -> None:
        await self.rt.start_core()
        lease = self.rt.lease
        if isinstance(lease, SimLease):
            if lease.on_acquired is None:
                self.fail("wiring did not hook the enforcer's take_over into the lease")
            await lease.flush()
        await self.run_until(0)
        for i, step in enumerate(self.sc.timeline):
            await self.step(i, step)
            self.check_invariants()
        self.where = (offset_text(self.t_ms / 1000), "end")
        self.check_invariants()
        verified = self.rt.ledger.verify()
        if not verified.ok:
            self.fail(f"the ledger's hash chain does not verify: {verified}")

    async def close(self) -> None:
        await self.rt.stop_core()

    async def step(self, i: int, step: Any) -> None:
        if not isinstance(step, dict):
            raise ScenarioError(f"step {i + 1}: a step is a mapping, got {step!r}")
        actions = [k for k in step if k not in ("at", "advance", "note")]
        unknown = [k for k in actions if k not in _ACTIONS]
        if unknown or len(actions) > 1:
            raise ScenarioError(f"step {i + 1}: one action per step, one of {', '.join(_ACTIONS)}; got {actions}")
        if "at" in step and "advance" in step:
            raise ScenarioError(f"step {i + 1}: give `at` or `advance`, not both")
        if "at" in step:
            target = int(round(parse_duration(step["at"]) * 1000))
            if target < self.t_ms:
                raise ScenarioError(f"step {i + 1}: at {step['at']} is before the current time "
                                    f"{offset_text(self.t_ms / 1000)}")
            await self.run_until(target)
        elif "advance" in step:
            await self.run_until(self.t_ms + int(round(parse_duration(step["advance"]) * 1000)))
        action = actions[0] if actions else None
        self.where = (offset_text(self.t_ms / 1000), f"step {i + 1}" + (f" {action}" if action else ""))
        if action is not None:
            handler: Callable[[Any], Any] = getattr(self, f"do_{action}")
            result = handler(step[action])
            if asyncio.iscoroutine(result):
                await result

    def fail(self, message: str) -> None:
        self.failures.append(Failure(self.where[0], self.where[1], message))

    # -- resolving names -------------------------------------------------------------------------

    def server_port(self, server_id: str) -> tuple[str, str]:
        s = self.config.server(server_id)
        if s is None:
            raise ScenarioError(f"no server {server_id!r} in the running config")
        return s.switch, s.port

    def _ports_of(self, spec: Mapping[str, Any]) -> list[tuple[str, str]]:
        """(switch, port) pairs named by server/servers or switch + port/ports."""
        out: list[tuple[str, str]] = []
        for sid in _as_list(spec.get("server")) + _as_list(spec.get("servers")):
            out.append(self.server_port(sid))
        ports = _as_list(spec.get("port")) + _as_list(spec.get("ports"))
        if ports:
            if "switch" not in spec:
                raise ScenarioError(f"{spec}: ports need a switch")
            out += [(str(spec["switch"]), str(p)) for p in ports]
        if not out:
            raise ScenarioError(f"{spec}: name a server/servers or a switch and port/ports")
        return out

    def when(self, value: Any) -> datetime:
        """A time in a step: an ISO time with offset, or a duration from the scenario's start."""
        if isinstance(value, datetime):
            return _aware(value)
        text = str(value)
        if "T" in text or text.count("-") >= 2:
            at = datetime.fromisoformat(text)
            if at.tzinfo is None:
                raise ScenarioError(f"{text}: give the UTC offset")
            return at
        return self.sc.start + timedelta(seconds=parse_duration(value))

    def offset(self, at: datetime | None) -> str:
        return "-" if at is None else offset_text((at - self.sc.start).total_seconds())

    # -- actions ---------------------------------------------------------------------------------

    def do_traffic(self, spec: Any) -> None:
        for item in _as_list(spec):
            for switch, port in self._ports_of(item):
                out = item.get("out_mbps")
                inn = item.get("in_mbps")
                smtp = item.get("smtp_mbps")  # the part of out_mbps sent to TCP 25 (a block drops it)
                if out is None and inn is None:
                    raise ScenarioError(f"traffic {item}: give out_mbps and/or in_mbps")
                self.world.switch(switch).set_traffic(
                    port, out_bps=None if out is None else float(out) * MBIT,
                    in_bps=None if inn is None else float(inn) * MBIT,
                    smtp_bps=None if smtp is None else float(smtp) * MBIT)

    def do_flows(self, spec: Any) -> None:
        for item in _as_list(spec):
            sid = str(item["server"])
            if item.get("stop"):
                self.flows = [g for g in self.flows
                              if not (g.server == sid and item.get("kind") in (None, g.kind))]
                continue
            server = self.config.server(sid)
            if server is None:
                raise ScenarioError(f"flows: no server {sid!r}")
            kind = str(item["kind"])
            fanout = kind in ("smtp_fanout", "scan")
            until = item.get("for")
            self.flows.append(FlowGen(
                server=sid, kind=kind, src_ip=str(item.get("src_ip", server.ips[0])),
                pps=float(item.get("pps", 2 if kind == "smtp_fanout" else 20 if kind == "scan" else 20000)),
                sampling_rate=int(item.get("sampling_rate", 1 if fanout else 256)),
                size=int(item.get("size", 74 if fanout else 64)),
                until_now=None if until is None else self.clock.now() + parse_duration(until),
                since_now=self.clock.now(),
            ))

    def do_fault(self, spec: Mapping[str, Any]) -> None:
        if "link" in spec:
            for switch, port in self._ports_of(spec):
                self.world.switch(switch).set_link(port, _updown(spec["link"]))
        elif "console" in spec:
            # A person at the switch (or its own console) changes the running config.
            for switch, port in self._ports_of(spec):
                sw = self.world.switch(switch)
                sw.set_admin(sw.port(port), "up" if _updown(spec["console"]) else "down")
        elif "snmp" in spec:
            v = spec["snmp"]
            if v not in (*SNMP_FAULTS, "ok"):
                raise ScenarioError(f"fault snmp: one of {', '.join(SNMP_FAULTS)}, ok")
            self.world.switch(spec["switch"]).snmp_fault = None if v == "ok" else v
        elif "snmp_missing" in spec:
            self.world.switch(spec["switch"]).snmp_missing = set(_as_list(spec["snmp_missing"]))
        elif "cli" in spec:
            v = spec["cli"]
            if v not in (*CLI_FAULTS, "ok"):
                raise ScenarioError(f"fault cli: one of {', '.join(CLI_FAULTS)}, ok")
            self.world.switch(spec["switch"]).cli_fault = None if v == "ok" else v
        elif "reboot" in spec:
            self.world.switch(spec["reboot"]).reboot()
        elif "agent_restart" in spec:
            self.world.switch(spec["agent_restart"]).agent_restart()
        elif "mail" in spec:
            targets = set(map(str, _as_list(spec.get("servers")) + _as_list(spec.get("server"))))
            if spec["mail"] == "bounce":
                self.mail.bouncing |= targets
            elif spec["mail"] == "ok":
                self.mail.bouncing -= targets
            else:
                raise ScenarioError("fault mail: bounce or ok")
        elif "lease" in spec:
            ls = spec["lease"]
            key = str(ls["switch"])
            self.leases.force(key, None if ls.get("release") else str(ls["holder"]))
            lease = self.rt.lease
            if "unnoticed_for" in ls and isinstance(lease, SimLease):
                lease.blind_until = self.clock.now() + parse_duration(ls["unnoticed_for"])
        else:
            raise ScenarioError(
                f"fault {spec}: link, console, snmp, snmp_missing, cli, reboot, agent_restart, mail or lease")

    async def _request(self, spec: Mapping[str, Any], call: Callable[[], Any]) -> None:
        expected = spec.get("error")
        try:
            result = call()
            if asyncio.iscoroutine(result):
                await result
        except Exception as e:  # the enforcer refuses requests by raising
            if expected is None or str(expected) not in str(e):
                self.fail(f"request raised {type(e).__name__}: {e}")
            return
        if expected is not None:
            self.fail(f"request should have been refused with {expected!r}, was accepted")

    async def do_suspend(self, spec: Mapping[str, Any]) -> None:
        await self._request(spec, lambda: self.rt.enforcer.suspend(
            str(spec["server"]), str(spec["reason"]), str(spec.get("note", "")),
            str(spec.get("actor", "operator:sim"))))

    async def do_restore(self, spec: Mapping[str, Any]) -> None:
        await self._request(spec, lambda: self.rt.enforcer.restore(
            str(spec["server"]), str(spec.get("actor", "operator:sim")), spec.get("reason")))

    async def do_hold(self, spec: Mapping[str, Any]) -> None:
        await self._request(spec, lambda: self.rt.enforcer.hold(
            str(spec["server"]), parse_duration(spec["for"]), str(spec.get("note", "")),
            str(spec.get("actor", "operator:sim"))))

    async def do_breaker_reset(self, spec: Mapping[str, Any]) -> None:
        await self._request(spec, lambda: self.rt.enforcer.reset_breaker(
            str(spec["switch"]), str(spec.get("actor", "operator:sim"))))

    def do_maintenance(self, spec: Mapping[str, Any]) -> None:
        servers = spec.get("servers", "all")
        self.rt.ledger.add_maintenance(
            kind=str(spec["kind"]), start=self.when(spec["start"]), end=self.when(spec["end"]),
            notified_at=self.when(spec["notified_at"]),
            servers="all" if servers == "all" else [str(s) for s in _as_list(servers)],
            at=self.clock.at().replace(microsecond=0), reason=str(spec.get("reason", "")),
            by=str(spec.get("by", "operator:sim")))

    def do_reclassify(self, spec: Mapping[str, Any]) -> None:
        sid = str(spec["server"])
        views = self.rt.ledger.outages(server=sid, now=self.clock.at())
        if not views:
            raise ScenarioError(f"reclassify: {sid} has no outage")
        n = spec.get("outage", "last")
        view = views[-1] if n == "last" else views[int(n) - 1]
        self.rt.ledger.reclassify(
            view.seq, str(spec["class"]), str(spec.get("reason", "classified in the scenario")),
            self.clock.at().replace(microsecond=0), by=str(spec.get("by", "operator:sim")),
            false_positive=bool(spec.get("false_positive", False)), cause=spec.get("cause"))

    async def do_reload(self, spec: Mapping[str, Any]) -> None:
        """SIGHUP: the file changes, then the daemon re-reads it (through the real loader)."""
        text = self.config_text
        if "config" in spec:
            text = str(spec["config"])
        for old, new in spec.get("replace", []):
            if old not in text:
                raise ScenarioError(f"reload replace: {old!r} is not in the config")
            text = text.replace(old, new)
        if "unchecked" in spec:
            for item in _as_list(spec["unchecked"].get("protect", [])):
                self.unchecked.protected.setdefault(str(item["switch"]), set()).add(str(item["port"]))
        self._write_config(text)
        calls: list[Path] = []

        def load(path: str | Path) -> Config:
            calls.append(Path(path))
            return self._adapt(_REAL_LOAD(path))

        with _patched(configmod, "load", load):
            ok = self.rt.daemon.reload()
        if ok and not calls:
            raise ScenarioError("the daemon reloaded without rackwarden.agent.config.load: update the sim's reload")
        want_ok = not spec.get("refused", False)
        if ok != want_ok:
            self.fail(f"reload {'accepted' if ok else 'refused'}, expected it {'accepted' if want_ok else 'refused'}")
        if ok:
            self.config_text = text
            self._schedule_polls()
            self.next_tick = self.t_ms + self.tick_ms  # Daemon._schedule re-adds the tick job too
            if self.next_eval is not None:
                self.next_eval = min(self.next_eval, self.t_ms + self._eval_ms())
            await self.run_until(self.t_ms)

    # -- expectations ----------------------------------------------------------------------------

    def do_expect(self, spec: Mapping[str, Any]) -> None:
        for key, want in spec.items():
            base = key.removesuffix("_include").removesuffix("_exclude")
            mode = "include" if key.endswith("_include") else "exclude" if key.endswith("_exclude") else "exact"
            if base in RECORDS:
                self._expect_list(base, mode, _as_list(want), RECORDS[base](self))
            elif mode == "exact" and hasattr(self, f"expect_{key}"):
                getattr(self, f"expect_{key}")(want)
            else:
                raise ScenarioError(f"expect: unknown key {key!r}")

    def _expect_list(self, what: str, mode: str, patterns: list[Any], records: list[dict[str, Any]]) -> None:
        def show(recs: Sequence[dict[str, Any]]) -> str:
            return "\n      ".join(self._show(what, r) for r in recs) or "(none)"

        if mode == "exact":
            ok = len(patterns) == len(records) and all(
                self._match(p, r) for p, r in zip(patterns, records, strict=True))
            if not ok:
                self.fail(f"{what}: expected exactly\n      {show(patterns)}\n    got\n      {show(records)}")
        elif mode == "include":
            for p in patterns:
                if not any(self._match(p, r) for r in records):
                    self.fail(f"{what}: expected one like {self._show(what, p)}; got\n      {show(records)}")
        else:
            for p in patterns:
                hits = [r for r in records if self._match(p, r)]
                if hits:
                    self.fail(f"{what}: expected none like {self._show(what, p)}; got\n      {show(hits)}")

    def _show(self, what: str, r: Mapping[str, Any]) -> str:
        parts = []
        for k, v in r.items():
            if k in ("at", "until", "start", "end") and isinstance(v, datetime):
                v = self.offset(v)
            parts.append(f"{k}={v}")
        return "{" + ", ".join(parts) + "}"

    def _match(self, pattern: Any, record: Mapping[str, Any]) -> bool:
        if not isinstance(pattern, dict):
            raise ScenarioError(f"a record pattern is a mapping, got {pattern!r}")
        for k, want in pattern.items():
            if k in ("deadline", "at", "start", "end"):
                got = record.get("until" if k == "deadline" else k)
                if want is None:
                    if got is not None:
                        return False
                elif got is None:
                    return False
                elif isinstance(want, list):  # [earliest, latest]
                    if not self.when(want[0]) <= got <= self.when(want[1]):
                        return False
                elif got != self.when(want):
                    return False
            elif k not in record:
                raise ScenarioError(f"no field {k!r} to match (fields: {', '.join(record)})")
            elif isinstance(want, bool) or want is None:
                if record[k] is not want and record[k] != want:
                    return False
            elif isinstance(want, int | float) and isinstance(record[k], int | float | Fraction):
                if record[k] != want:
                    return False
            elif isinstance(want, list) and len(want) == 2 and isinstance(record[k], int | float):
                if not want[0] <= record[k] <= want[1]:
                    return False
            elif isinstance(want, list):
                if list(record[k]) != want:
                    return False
            elif str(record[k]) != str(want):
                return False
        return True

    def expect_ports(self, want: Mapping[str, Any]) -> None:
        """{server or "switch port": admin} or {...: {admin, oper, forwarding}} on the simulated switch."""
        for name, w in want.items():
            if " " in name:
                switch, port = name.split(None, 1)
            else:
                switch, port = self.server_port(name)
            p = self.world.switch(switch).port(port)
            wants = w if isinstance(w, dict) else {"admin": w}
            got = {"admin": p.admin, "oper": p.oper, "forwarding": p.forwarding, "link": p.link,
                   "throttled": p.throttled, "policer_bps": p.policer_bps,
                   "forwarded_mbps": round(p.forwarded_out_bps / MBIT, 3),
                   "smtp_forwarded": p.forwards_tcp(25)}
            for k, v in wants.items():
                if got[k] != v:
                    self.fail(f"port {name} ({switch} {port}) {k}: expected {v}, the switch says {got[k]}")

    def expect_ladder(self, want: Mapping[str, Mapping[str, str]]) -> None:
        """{server: {reason: phase}}; a reason the agent has no state for is `idle`."""
        for sid, reasons in want.items():
            ladder = self.rt.enforcer.server_status(sid)["ladder"]
            for reason, phase in reasons.items():
                got = ladder.get(reason, {}).get("phase", "idle")
                if got != phase:
                    self.fail(f"ladder {sid} {reason}: expected {phase}, status says {got} ({ladder})")

    def expect_breakers(self, want: Mapping[str, str]) -> None:
        open_ = {b["switch"] for b in self.rt.enforcer.status()["breakers"]}
        for sw, state in want.items():
            got = "open" if sw in open_ else "closed"
            if got != state:
                self.fail(f"breaker {sw}: expected {state}, status says {got}")

    def expect_lease(self, want: Mapping[str, str]) -> None:
        for sw, state in want.items():
            got = "held" if self.rt.lease.held(sw) else "not_held"
            if got != state:
                self.fail(f"lease on {sw}: expected {state}, the agent's lease says {got}"
                          f" (table holder: {self.leases.holder(sw)})")

    def expect_sla(self, want: Mapping[str, Any]) -> None:
        """`report sla` for one month: seconds by class (unlisted classes 0) and credit per server.

        Checked twice: through the ledger package's sla_report(), and through the command itself
        (`rackwarden report sla --format json --as-of <now>`) on the same files.
        """
        month = str(want["month"])
        api = {s.server.id: {"seconds": dict(s.month.seconds_by_class), "credit_fen": s.credit_fen,
                             "extension_hours": None if s.extension_s is None else s.month.extension_hours,
                             "why": s.month.reason, "restricted_s": sum(sec for _, sec in s.restricted)}
               for s in sla_report(self.rt.ledger, self.config, month, self.clock.at())}
        self._check_sla(f"sla {month}", want, api)
        self._check_sla(f"`rackwarden report sla --month {month}`", want, self._report_sla_command(month))

    def _report_sla_command(self, month: str) -> dict[str, dict[str, Any]]:
        out, err = io.StringIO(), io.StringIO()
        argv = ["report", "sla", "--month", month, "--config", str(self.config_path),
                "--db", self.config.agent.ledger_database(), "--format", "json", "--as-of", self.clock.at().isoformat()]
        with redirect_stdout(out), redirect_stderr(err):
            code = cli.main(argv)
        if code != 0:
            self.fail(f"`rackwarden {' '.join(argv[:4])} …` exited {code}: {err.getvalue().strip()}")
            return {}
        rows: dict[str, dict[str, Any]] = {}
        for s in json.loads(out.getvalue())["servers"]:
            ext = s.get("extension_hours")
            rows[s["id"]] = {"seconds": s["seconds_by_class"], "credit_fen": s["credit_fen"],
                             "extension_hours": None if ext is None else Fraction(ext), "why": s.get("reason", ""),
                             "restricted_s": sum(r["seconds_in_month"] for r in s.get("restricted", []))}
        return rows

    def _check_sla(self, what: str, want: Mapping[str, Any], rows: Mapping[str, Mapping[str, Any]]) -> None:
        for sid, w in want["servers"].items():
            row = rows.get(sid)
            if row is None:
                self.fail(f"{what}: no row for {sid}")
                continue
            want_s = {c: 0 for c in row["seconds"]} | dict(w.get("seconds", {}))
            if dict(row["seconds"]) != want_s:
                self.fail(f"{what} {sid} seconds: expected {want_s}, got {dict(row['seconds'])}")
            if "restricted_s" in w and row["restricted_s"] != w["restricted_s"]:
                self.fail(f"{what} {sid} restricted_s: expected {w['restricted_s']}, got {row['restricted_s']}")
            if "credit_fen" in w and row["credit_fen"] != w["credit_fen"]:
                self.fail(f"{what} {sid} credit_fen: expected {w['credit_fen']}, got {row['credit_fen']}"
                          f" ({row['why']})")
            if "extension_hours" in w and row["extension_hours"] != w["extension_hours"]:
                self.fail(f"{what} {sid} extension_hours: expected {w['extension_hours']}, got"
                          f" {row['extension_hours']} ({row['why']})")

    def expect_metrics(self, want: list[Mapping[str, Any]]) -> None:
        for m in want:
            labels = {k: str(v) for k, v in m.get("labels", {}).items()}
            got = self.rt.metrics.registry.get_sample_value(m["name"], labels)
            if (got or 0.0) != m["value"]:
                self.fail(f"metric {m['name']}{m.get('labels', {})}: expected {m['value']}, got {got}")

    # -- invariants ------------------------------------------------------------------------------

    def check_invariants(self) -> None:
        self._once("pending", [f"change {r.action} {r.server} ({r.key}) left PENDING"
                               for r in self.rt.actions.actions(state="PENDING")])
        self._once("deadline", self._broken_promises())
        store_notice = getattr(self.rt.actions, "notice", None)
        if store_notice is not None:
            missing = [f"notice {s.notice.key} was attempted ({'delivered' if s.delivery.delivered else 'undelivered'})"
                       " but is not recorded in the action store (R9)"
                       for s in self.mail.sent if (rec := store_notice(s.notice.key)) is None
                       or rec[0] != s.delivery.delivered]
            self._once("recorded", missing)
        self._once("state", self._state_disagreements())
        if not self.sc.sim.get("allow_exceptions"):
            self._once("exception", [f"the agent logged an exception: {r.getMessage()}: "
                                     f"{r.exc_info[1]!r}" for r in _EXCEPTIONS.records if r.exc_info])

    def _once(self, kind: str, messages: list[str]) -> None:
        for m in messages:
            if (kind, m) not in self._reported:
                self._reported.add((kind, m))
                self.fail(f"invariant ({kind}): {m}")

    def _state_disagreements(self) -> list[str]:
        """A port's enforcement state is one fact: the action records, the ladder, the ledger's
        open outages and the outage tracker's memory never tell different stories."""
        out = []
        ledger = {v.server for v in self.rt.ledger.open_outages() if v.state == "enforced"}
        tracker = {s.id for s in self.config.servers if self.rt.outages.tracker.enforced(s.id) is not None}
        if ledger != tracker:
            out.append(f"ledger holds {sorted(ledger)} enforced, the outage tracker {sorted(tracker)}")
        rungs = self.rt.actions.load_rungs()
        if {(r.server, r.reason, r.phase) for r in rungs} != {
                (sid, reason, r.phase) for (sid, reason), r in self.rt.enforcer.rungs.items()}:
            out.append("the enforcer's ladder in memory differs from the stored rungs")
        for s in self.config.servers:
            done = [r for r in self.rt.actions.actions(s.id) if r.mode == "enforce"]
            shut_rung = any(r.server == s.id and r.phase == "shut" for r in rungs)
            if shut_rung and done and done[-1].action == "shut" and done[-1].state == "APPLIED" and s.id not in ledger:
                out.append(f"{s.id}: a rung holds the port shut and {done[-1].key} is APPLIED, but no enforced "
                           "outage is open")
            if s.id in ledger and not shut_rung:
                out.append(f"{s.id}: an enforced outage is open but no rung holds the port shut")
            # Restricted time: the ledger's open record, the rung and the switch agree.
            held = {r.restriction.kind for r in rungs
                    if r.server == s.id and r.restriction is not None and r.phase in ("restricted", "shut")}
            for kind in ("throttle", "block"):
                if self.rt.ledger.open_restriction(s.id, kind) is not None and kind not in held:
                    out.append(f"{s.id}: the ledger has an open {kind} but no rung holds one")
            port = self.world.switch(s.switch).port(s.port)
            for r in rungs:
                if r.server != s.id or r.phase != "restricted" or r.restriction is None:
                    continue
                on = port.throttled if r.restriction.kind == "throttle" else 25 in port.blocked_tcp
                if not on:
                    out.append(f"{s.id}: the {r.reason} rung is restricted ({r.restriction.label}) but the switch"
                               " shows no such restriction")
        return out

    def _broken_promises(self) -> list[str]:
        """A warning that reached the customer promised a deadline: no shut of that reason before it (R9)."""
        shuts = [r for r in self.rt.actions.actions() if r.action == "shut"]
        out = []
        for s in self.mail.sent:
            n = s.notice
            if n.stage != "warning" or not s.delivery.delivered or n.until is None or n.until <= n.at:
                continue
            for r in shuts:
                created = datetime.fromisoformat(r.created_at)
                if r.server == n.server and r.reason == n.reason and n.at <= created < n.until:
                    out.append(f"{n.server} {n.reason}: shut at {self.offset(created)} although the delivered"
                               f" warning of {self.offset(n.at)} promised until {self.offset(n.until)}")
        return out

    # -- the story, for failure messages ---------------------------------------------------------

    def story(self) -> str:
        lines: list[tuple[datetime, str]] = []
        for s in self.mail.sent:
            n = s.notice
            lines.append((s.at, f"mail   {n.stage:<10} {n.server} {n.reason} "
                                f"{'delivered' if s.delivery.delivered else 'UNDELIVERED'} "
                                f"until {self.offset(n.until)} ({s.delivery.detail})"))
        for p in self.pages:
            lines.append((p.at, f"page   {p.name} {p.severity} {dict(p.labels)}"))
        for a in self.rt.actions.audit_rows():
            lines.append((datetime.fromisoformat(a["at"]), f"audit  {a['decision']} {a['server']} {a['reason']} "
                                                           f"[{a['mode']}] {a['before']}->{a['after']}: {a['result']}"))
        for v in self.rt.ledger.outages(now=self.clock.at()):
            lines.append((v.start, f"outage {v.server} {v.outage_class}/{v.cause} until {self.offset(v.end)}"))
        for sw in self.world.switches.values():
            for now, typed, answer in sw.transcript:
                at = self.sc.start + timedelta(seconds=now - self.start_now)
                lines.append((at, f"cli    {sw.name}: {typed}" + (f"  -> {answer.splitlines()[-1]}" if answer else "")))
        lines.sort(key=lambda x: x[0])
        return "\n".join(f"  {self.offset(at):>12}  {text}" for at, text in lines[-120:])


def _as_list(v: Any) -> list[Any]:
    if v is None:
        return []
    return list(v) if isinstance(v, list | tuple) else [v]


def _updown(v: Any) -> bool:
    if v in ("up", True):
        return True
    if v in ("down", False):
        return False
    raise ScenarioError(f"expected up or down, got {v!r}")


@contextmanager
def _patched(obj: Any, name: str, value: Any) -> Iterator[None]:
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


# -- the records expectations match against ----------------------------------------------------


def _notices(a: SimAgent) -> list[dict[str, Any]]:
    out = []
    for s in a.mail.sent:
        n = s.notice
        grace = (n.until - n.at).total_seconds() if n.until is not None and n.until > n.at else 0
        out.append({"server": n.server, "reason": n.reason, "stage": n.stage, "delivered": s.delivery.delivered,
                    "to": list(n.to), "at": n.at, "until": n.until, "grace_s": grace, "detail": s.delivery.detail})
    return out


def _actions(a: SimAgent) -> list[dict[str, Any]]:
    return [{"server": r.server, "action": r.action, "reason": r.reason, "state": r.state, "mode": r.mode,
             "switch": r.switch, "port": r.port, "at": datetime.fromisoformat(r.created_at)}
            for r in a.rt.actions.actions()]


def _pages(a: SimAgent) -> list[dict[str, Any]]:
    return [{"name": p.name, "severity": p.severity, "server": p.labels.get("server"),
             "switch": p.labels.get("switch"), "reason": p.labels.get("reason"), "rail": p.labels.get("rail"),
             "at": p.at} for p in a.pages if not p.resolved]


def _outages(a: SimAgent) -> list[dict[str, Any]]:
    now = a.clock.at()
    return [{"server": v.server, "class": v.outage_class, "cause": v.cause, "recorded_cause": v.recorded_cause,
             "open": v.open, "seconds": v.seconds(now), "start": v.start, "end": v.end, "switch": v.switch,
             "port": v.port} for v in a.rt.ledger.outages(now=now)]


def _restrictions(a: SimAgent) -> list[dict[str, Any]]:
    """The ledger's restriction records, each start with its end (None while open)."""
    return [{"server": r.server, "restriction": r.kind, "rate_bps": r.rate_bps, "service": r.service,
             "reason": r.reason, "start": r.start, "end": r.end, "open": r.end is None}
            for r in a.rt.ledger.restrictions()]


def _audit(a: SimAgent) -> list[dict[str, Any]]:
    return [{"server": r["server"], "reason": r["reason"], "decision": r["decision"], "mode": r["mode"],
             "actor": r["actor"], "rail": str(r["result"]).split(":")[0].strip(), "result": r["result"],
             "before": r["before"], "after": r["after"], "at": datetime.fromisoformat(r["at"])}
            for r in a.rt.actions.audit_rows()]


RECORDS: Mapping[str, Callable[[SimAgent], list[dict[str, Any]]]] = {
    "notices": _notices, "actions": _actions, "pages": _pages, "outages": _outages, "audit": _audit,
    "restrictions": _restrictions,
}

_EXCEPTIONS = _ExceptionLog()


async def _play(sc: Scenario, tmp: Path) -> SimAgent:
    agent = SimAgent(sc, tmp)
    try:
        try:
            await agent.play()
        except (ScenarioError, SimError):
            raise
        except Exception as e:
            raise AssertionError(f"scenario {sc.name}: the run raised at {agent.where[0]} {agent.where[1]}: "
                                 f"{type(e).__name__}: {e}\n\nwhat happened:\n{_story(agent)}") from e
        if agent.failures:
            agent.story_text = _story(agent)
    finally:
        await agent.close()
    return agent


def _story(agent: SimAgent) -> str:
    try:
        return agent.story()
    except Exception as e:  # the stores may be what broke
        return f"(no story: {type(e).__name__}: {e})"


def _no_fsync(dbapi_conn: Any, _record: Any) -> None:
    # The sim's stores are throw-away files: without an fsync per commit a scenario runs in a
    # fraction of the time. What a crash leaves behind is the lab's and the unit tests' to check.
    if isinstance(dbapi_conn, sqlite3.Connection):
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA synchronous = OFF")
        cur.close()


@contextmanager
def _sqlite_without_fsync() -> Iterator[None]:
    event.listen(Engine, "connect", _no_fsync)
    try:
        yield
    finally:
        event.remove(Engine, "connect", _no_fsync)


def run_scenario(path: Path, tmp: Path) -> SimAgent:
    """Play one scenario file; raise AssertionError listing every failed expectation and invariant."""
    sc = load_scenario(path)
    logger = logging.getLogger("rackwarden")
    _EXCEPTIONS.records.clear()
    logger.addHandler(_EXCEPTIONS)
    try:
        with _sqlite_without_fsync():
            agent = asyncio.run(_play(sc, tmp))
    except SimError as e:
        raise ScenarioError(f"{path.name}: {e}") from e
    finally:
        logger.removeHandler(_EXCEPTIONS)
    if agent.failures:
        listing = "\n".join(f"  {f}" for f in agent.failures)
        raise AssertionError(f"scenario {sc.name} ({path.name}): {len(agent.failures)} failure(s)\n{listing}\n\n"
                             f"what happened (last 120 events):\n{agent.story_text}")
    return agent
