"""SLA per server and month, ledger metrics and R13/R19 deadlines: the ledger run through policies/.

No credit or deadline rule lives here: policies/sla.py computes the credit and picks the
template, policies/sla_deadlines.py judges the deadlines; this module gathers their inputs from
the store and the configuration.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import MappingProxyType

from rackwarden.policies.sla import (
    BUILTIN_TEMPLATES,
    CLASSES,
    CreditTemplate,
    MaintenanceWindow,
    ServerContract,
    ServerMonth,
    contract_timezone,
    month_bounds,
    month_to_date,
    report_template,
    server_month,
)
from rackwarden.policies.sla_deadlines import (
    REPAIR_TERMS,
    Finding,
    RepairTerms,
    check_incident_report,
    open_deadlines,
    outage_repair,
)

from ..config import Config, ServerConfig
from .store import LedgerStore
from .views import OutageView, RestrictionView, WindowView


@dataclass(frozen=True, slots=True)
class OutageInMonth:
    """One ledger outage within a server-month, with its seconds there by class."""

    view: OutageView
    seconds_by_class: Mapping[str, int]  # this record's seconds in the month by class

    @property
    def seconds(self) -> int:
        return sum(self.seconds_by_class.values())

    @property
    def class_in_month(self) -> str:
        """The class the engine gave its seconds (windows applied): one class, "mixed", or the
        ledger's class when it has no seconds here. A cause of planned_work shows as
        maintenance only where a window with notice covers it."""
        present = [c for c, n in self.seconds_by_class.items() if n]
        if not present:
            return self.view.outage_class
        return present[0] if len(present) == 1 else "mixed"


@dataclass(frozen=True, slots=True)
class ServerSla:
    """One server's month: the engine's result plus the ledger outages behind it."""

    server: ServerConfig
    period: str
    timezone: str
    credit_template: str | None  # None: the contract template has no credit rule
    month: ServerMonth
    outages: tuple[OutageInMonth, ...]
    paid_total_fen: int | None
    notes: tuple[str, ...] = ()
    # The declared windows that name this server and overlap the month, each with its claimed
    # notice and its ledger time (what counted is in the segments' reasons).
    windows: tuple[WindowView, ...] = ()
    # Throttled or service-blocked time overlapping the month, with its seconds in the month:
    # shown, never an outage, never credited (the port forwarded throughout).
    restricted: tuple[tuple[RestrictionView, int], ...] = ()

    @property
    def unresolved(self) -> tuple[OutageInMonth, ...]:
        return tuple(o for o in self.outages if o.view.outage_class == "unknown")

    @property
    def credit_fen(self) -> int | None:
        if self.credit_template is None or self.month.template.kind != "fee_multiple":
            return None
        return int(self.month.credit_fen)

    @property
    def extension_s(self) -> int | None:
        if self.credit_template is None or self.month.template.kind != "extension_time":
            return None
        return int(self.month.extension_s)


def _seconds_by_record(month: ServerMonth) -> dict[str, dict[str, int]]:
    # Each segment names every record covering it; a record's seconds are its segments'.
    per_record: dict[str, dict[str, int]] = {}
    for part in month.parts:
        for seg in part.segments:
            for rid in seg.records:
                cls = per_record.setdefault(rid, {c: 0 for c in CLASSES})
                cls[seg.outage_class] += seg.seconds
    return per_record


def server_sla(
    config: Config,
    server: ServerConfig,
    outages: Sequence[OutageView],
    windows: Sequence[MaintenanceWindow],
    period: str,
    now: datetime,
    paid_total_fen: int | None = None,
    templates: Mapping[str, CreditTemplate] = BUILTIN_TEMPLATES,
) -> ServerSla:
    """Runs policies/sla.py for one server-month over the ledger's current view."""
    tz_name = config.templates[server.template].timezone
    tz = contract_timezone(tz_name)
    choice = report_template(config.templates[server.template].credit, templates, paid_total_fen)
    mine = [v for v in outages if v.server == server.id]
    records = [r for r in (v.record(now) for v in mine) if r is not None]
    contract = ServerContract(server.id, choice.template, server.monthly_fee_fen,
                              paid_total_fen or 0)
    m_start, m_end = month_bounds(period, tz)
    if paid_total_fen is not None:
        month = month_to_date(contract, records, windows, period, tz)
    else:
        month = server_month(contract, records, windows, period, tz)
    per_record = _seconds_by_record(month)
    in_month = tuple(
        OutageInMonth(v, MappingProxyType(per_record.get(f"#{v.seq}", {c: 0 for c in CLASSES})))
        for v in mine
        if v.start < m_end and v.end_or(now) > m_start
    )
    return ServerSla(server, period, tz_name, choice.credit_rule, month, in_month,
                     paid_total_fen, choice.notes)


def sla_report(
    store: LedgerStore,
    config: Config,
    period: str,
    now: datetime,
    *,
    customer: str | None = None,
    paid_totals: Mapping[str, int] | None = None,
) -> list[ServerSla]:
    """Every configured server (of one customer) for one month, in config order."""
    views = store.maintenance_windows()
    windows = [w.window for w in views]
    outages = store.outages(now=now)
    restrictions = store.restrictions()
    paid = paid_totals or {}
    out = []
    for s in config.servers:
        if customer is not None and s.customer != customer:
            continue
        sla = server_sla(config, s, outages, windows, period, now, paid.get(s.id))
        m_start, m_end = month_bounds(period, contract_timezone(sla.timezone))
        mine = tuple(w for w in views if w.window.covers(s.id)
                     and w.window.start < m_end and w.window.end > m_start)
        restricted = tuple((r, r.seconds_within(m_start, m_end, now)) for r in restrictions
                           if r.server == s.id and r.start < m_end and (r.end is None or r.end > m_start))
        out.append(replace(sla, windows=mine, restricted=restricted))
    return out


@dataclass(frozen=True, slots=True)
class LedgerMetrics:
    """Values for rackwarden_outage_seconds_total{server,cause}, rackwarden_sla_credit_fen{server}
    and rackwarden_unknown_outage_seconds; agent/metrics.py owns the names."""

    outage_seconds: Mapping[tuple[str, str], int]
    credit_fen: Mapping[str, int]
    unknown_seconds: int
    # (rule, check, "pending" | "overdue"): R13/R19 obligations not yet done
    deadlines_open: Mapping[tuple[str, str, str], int] = field(
        default_factory=lambda: MappingProxyType({}))


def ledger_metrics(store: LedgerStore, config: Config, now: datetime) -> LedgerMetrics:
    """Outage seconds by the cause recorded at the start (so the counter only grows, whatever
    later reclassification says), this month's credit of fee-based contracts, the seconds
    of outages still of class unknown, and the R13/R19 obligations still open."""
    views = store.outages(now=now)
    seconds: dict[tuple[str, str], int] = {}
    for v in views:
        key = (v.server, v.recorded_cause)
        seconds[key] = seconds.get(key, 0) + max(0, v.seconds(now))
    windows = [w.window for w in store.maintenance_windows()]
    credit: dict[str, int] = {}
    for s in config.servers:
        tz = contract_timezone(config.templates[s.template].timezone)
        period = now.astimezone(tz).strftime("%Y-%m")
        sla = server_sla(config, s, views, windows, period, now)
        if sla.credit_fen is not None:
            credit[s.id] = sla.credit_fen
    unknown = sum(v.seconds(now) for v in views if v.outage_class == "unknown")
    open_ = open_deadlines(deadline_findings(store, config, now, views=views))
    return LedgerMetrics(MappingProxyType(seconds), MappingProxyType(credit), unknown,
                         MappingProxyType(open_))


def deadline_findings(
    store: LedgerStore,
    config: Config,
    now: datetime,
    terms: Mapping[str, RepairTerms] = REPAIR_TERMS,
    views: Sequence[OutageView] | None = None,
) -> list[Finding]:
    """R13 for every incident, R19 for every outage (policies/sla_deadlines.py `outage_repair`
    says which carry a repair duty). `views` are the store's outages at `now` when the caller
    already has them."""
    out = [check_incident_report(v.incident_id, v.detected_at, v.reported_at, now,
                                 reported_recorded_at=v.reported_recorded_at)
           for v in store.incidents()]
    templates = {s.id: s.template for s in config.servers}
    for v in store.outages(now=now) if views is None else views:
        template = templates.get(v.server)
        out.extend(outage_repair(
            f"#{v.seq}", v.outage_class, None if template is None else terms.get(template),
            v.start, now, acknowledged_at=v.acknowledged_at, on_site_at=v.on_site_at,
            resolved_at=v.resolved_at, ended_at=v.end,
            acknowledged_recorded_at=v.acknowledged_recorded_at,
            on_site_recorded_at=v.on_site_recorded_at,
            resolved_recorded_at=v.resolved_recorded_at))
    return out


def default_url(config: Config) -> str:
    """The config's ledger: agent.ledger_url when shared, else sqlite:///{state_dir}/ledger.sqlite."""
    return config.agent.ledger_database()
