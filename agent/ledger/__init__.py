"""The outage ledger (issue 5): an append-only, hash-chained SQL log of outages, classes, windows and acts.

One module per job:
- chain.py — entry kinds, canonical form, hashes, ledger times, the chain check (pure)
- schema.py — SQL tables and migrations
- views.py — folding entries into outage, incident and maintenance-window views (pure)
- entries.py — the entries each act appends, built from checked input (pure)
- store.py — LedgerStore: connection, transactions, appends, reads
- recorder.py — OutageRecorder: polls and enforcement acts → tracker → entries
- reports.py — SLA per server-month, ledger metrics, R13/R19 deadline findings
- cli.py, report_cli.py, cli_common.py — `rackwarden ledger|maintenance|report …`
Credit, reclassification and deadline rules are in policies/sla.py and sla_deadlines.py.
This module re-exports the names other modules import.
"""

from __future__ import annotations

from rackwarden.policies.sla import DEFAULT_CAUSE, RECLASS_TARGETS, ReclassTarget

from .chain import (
    ENTRY_KINDS,
    GENESIS_HASH,
    Entry,
    EntryKind,
    Head,
    LedgerError,
    NewEntry,
    Problem,
    VerifyResult,
    canonical,
    entry_hash,
    parse_ts,
    ts,
    verify_chain,
)
from .recorder import OutageRecorder, switch_observation
from .reports import (
    LedgerMetrics,
    OutageInMonth,
    ServerSla,
    deadline_findings,
    default_url,
    ledger_metrics,
    server_sla,
    sla_report,
)
from .schema import MIGRATIONS, SCHEMA_VERSION, Migration, ledger_entries, ledger_head, metadata, migrate
from .store import LedgerStore
from .views import ClassChange, IncidentView, OutageView, WindowView

__all__ = [
    "DEFAULT_CAUSE",
    "ENTRY_KINDS",
    "GENESIS_HASH",
    "MIGRATIONS",
    "RECLASS_TARGETS",
    "SCHEMA_VERSION",
    "ClassChange",
    "Entry",
    "EntryKind",
    "Head",
    "IncidentView",
    "LedgerError",
    "LedgerMetrics",
    "LedgerStore",
    "Migration",
    "NewEntry",
    "OutageInMonth",
    "OutageRecorder",
    "OutageView",
    "Problem",
    "ReclassTarget",
    "ServerSla",
    "VerifyResult",
    "WindowView",
    "canonical",
    "deadline_findings",
    "default_url",
    "entry_hash",
    "ledger_entries",
    "ledger_head",
    "ledger_metrics",
    "metadata",
    "migrate",
    "parse_ts",
    "server_sla",
    "sla_report",
    "switch_observation",
    "ts",
    "verify_chain",
]
