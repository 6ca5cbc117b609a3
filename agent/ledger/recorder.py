"""OutageRecorder: feeds polls and enforcement acts to the pure outage tracker and appends its events."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from types import MappingProxyType
from typing import Any

from rackwarden.policies.facts import PortPoll
from rackwarden.policies.outages import (
    PORT_STATES,
    OpenOutage,
    OutageEnd,
    OutageEvent,
    OutageStart,
    OutageTracker,
    PortObservation,
    PortState,
    SwitchObservation,
    TrackerSettings,
    port_observation,
)
from sqlalchemy.engine import Connection

from ..config import Config, ServerConfig
from ..metering import PortReport
from .chain import Entry, LedgerError
from .store import LedgerStore


def switch_observation(
    config: Config, poll: PortPoll, reports: Sequence[PortReport] = ()
) -> SwitchObservation:
    """What the tracker needs from one poll: every configured customer port on the switch."""
    by_server = {r.server.id: r for r in reports}
    answered = poll.error is None or poll.error == "partial" or bool(poll.ports)
    ports: list[PortObservation] = []
    for s in config.servers_on(poll.switch):
        report = by_server.get(s.id)
        if report is not None:
            ports.append(port_observation(s.id, report.sample))
            continue
        pc = poll.ports.get(s.port)
        ports.append(
            PortObservation(s.id, s.port, pc.oper, pc.admin, True)
            if pc is not None
            else PortObservation(s.id, s.port, answered=False)
        )
    return SwitchObservation(
        switch=poll.switch,
        at=poll.at,
        answered=answered,
        ports=tuple(ports),
        sys_uptime_ticks=poll.sys_uptime_ticks,
        engine_boots=poll.engine_boots,
        detail=f"{poll.error}: {poll.error_detail}" if poll.error and not answered else "",
    )


class OutageRecorder:
    """Feeds polls and enforcement acts to the pure tracker and appends its events.

    The daemon calls `on_poll` after each poll (with MeteringService's reports for the same
    poll, which add the traffic R12 needs); the enforcer calls `enforcement_started` once a
    shutdown is read back and `enforcement_ended` once a restore is. Constructor does no I/O;
    `start()` resumes the records a previous run left open.
    """

    def __init__(
        self, store: LedgerStore, config: Config, settings: TrackerSettings | None = None
    ) -> None:
        self._store = store
        self._config = config
        self._settings = settings
        self._tracker = OutageTracker(settings)
        self._seq_by_id: dict[str, int] = {}

    @property
    def tracker(self) -> OutageTracker:
        return self._tracker

    def start(self) -> None:
        opened: list[OpenOutage] = []
        for v in self._store.open_outages():
            state = v.state if v.state else "oper_down"
            cause = v.cause or v.recorded_cause
            opened.append(OpenOutage(v.outage_id, v.server, v.switch or "", v.port or "",
                                     v.start, cause, _port_state(state)))
            self._seq_by_id[v.outage_id] = v.seq
        self._tracker.resume(opened)

    def reconfigure(self, config: Config) -> None:
        self._config = config

    def restart(self) -> None:
        """Forget what this process believed and re-read the open records: after taking a
        switch over from another agent, the shared ledger is the truth, not our stale view."""
        self._tracker = OutageTracker(self._settings)
        self._seq_by_id = {}
        self.start()

    @property
    def store(self) -> LedgerStore:
        return self._store

    def _record(self, events: Sequence[OutageEvent], conn: Connection | None = None) -> list[Entry]:
        # One transaction per poll or act (the enforcer's, holding the action record too, when
        # it passes `conn`): a crash never leaves half of a poll's events.
        entries = self._store.record_events(events, self._seq_by_id, conn)
        for ev, entry in zip(events, entries, strict=True):
            if isinstance(ev, OutageStart):
                self._seq_by_id[ev.outage_id] = entry.seq
            elif isinstance(ev, OutageEnd):
                self._seq_by_id.pop(ev.outage_id, None)
        return entries

    def on_poll(self, poll: PortPoll, reports: Sequence[PortReport] = ()) -> list[Entry]:
        return self._record(self._tracker.observe(switch_observation(self._config, poll, reports)))

    def _server(self, server_id: str) -> ServerConfig:
        for s in self._config.servers:
            if s.id == server_id:
                return s
        raise LedgerError(f"no server {server_id!r} in the configuration")

    def enforcement_started(
        self, server_id: str, at: datetime, cause: str, evidence: Mapping[str, Any] | None = None,
        conn: Connection | None = None,
    ) -> list[Entry]:
        s = self._server(server_id)
        return self._record(self._tracker.enforcement_started(
            s.id, s.switch, s.port, at, cause, MappingProxyType(dict(evidence or {}))), conn)

    def enforcement_applied(self, server_id: str) -> None:
        """The switch answered the shut: polls judge the port again (see the tracker)."""
        self._tracker.enforcement_applied(server_id)

    def enforcement_ended(
        self, server_id: str, at: datetime, evidence: Mapping[str, Any] | None = None,
        conn: Connection | None = None,
    ) -> list[Entry]:
        return self._record(self._tracker.enforcement_ended(
            server_id, at, MappingProxyType(dict(evidence or {}))), conn)


def _port_state(state: str) -> PortState:
    for s in PORT_STATES:
        if s == state:
            return s
    raise LedgerError(f"stored outage state {state!r} is unknown")
