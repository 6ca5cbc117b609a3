"""The ledger store's shared test suite (LedgerSuite), run here on a real SQLite file.

tests/integration/test_ledger_postgres.py runs the very same LedgerSuite on a real PostgreSQL
server: a backend passes when it passes this class, nothing else.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy.exc
from prometheus_client import generate_latest
from rackwarden.agent import config as configmod
from rackwarden.agent.clock import FakeClock
from rackwarden.agent.ledger import (
    GENESIS_HASH,
    Head,
    LedgerError,
    LedgerStore,
    OutageRecorder,
    deadline_findings,
    entry_hash,
    ledger_metrics,
    sla_report,
)
from rackwarden.agent.ledger.cli import (
    main_ledger_ack,
    main_ledger_incident,
    main_ledger_list,
    main_ledger_reclassify,
    main_ledger_resolve,
    main_ledger_verify,
    main_maintenance_add,
    main_maintenance_cancel,
)
from rackwarden.agent.ledger.report_cli import main_report_deadlines, main_report_sla
from rackwarden.agent.metrics import Metrics
from rackwarden.policies.facts import PortCounters, PortPoll
from rackwarden.policies.sla_deadlines import REPAIR_TERMS
from sqlalchemy import text

T0 = datetime(2026, 11, 1, tzinfo=UTC)
Z = datetime.fromisoformat
AS_OF = "2026-12-01T00:00:00+08:00"  # after November in Asia/Shanghai: nothing open counts on
SERVERS = {"r1": "p1", "r2": "p2", "r3": "p3", "c1": "p4"}

CONFIG = """\
version: 1
agent: {{state_dir: "{state}", timezone: Asia/Shanghai}}
templates:
  rental: {{cap_mbps: 10, credit: rental}}
  colo: {{cap_mbps: 10, credit: colo}}
switches:
  sw1:
    address: 192.0.2.2
    vendor: linux
    snmp: {{version: "2c", community: public}}
    ports: ["p[1-4]"]
servers:
  - {{id: r1, customer: acme, switch: sw1, port: p1, ips: [192.0.2.11], template: rental,
     monthly_fee_fen: 72000}}
  - {{id: r2, customer: acme, switch: sw1, port: p2, ips: [192.0.2.12], template: rental,
     monthly_fee_fen: 72000}}
  - {{id: r3, customer: blue, switch: sw1, port: p3, ips: [192.0.2.13], template: rental,
     monthly_fee_fen: 72000}}
  - {{id: c1, customer: blue, switch: sw1, port: p4, ips: [192.0.2.14], template: colo,
     monthly_fee_fen: 60000}}
"""
# Hand computation used below. November has 30 days, so a rental server's average hourly fee
# is 72000 fen / (24 × 30) = 100 fen, and each credited hour is worth 2 × 100 = 200 fen.


def poll(at: str, down: tuple[str, ...] = (), admin: tuple[str, ...] = (),
         answered: bool = True, uptime_s: int | None = None) -> PortPoll:
    """One poll of sw1; ports of the servers in `down` are oper-down, in `admin` admin-down."""
    ports = {}
    for i, (sid, name) in enumerate(SERVERS.items(), 1):
        oper = "down" if sid in down or sid in admin else "up"
        ports[name] = PortCounters(name, i, 1000, 1000, 64, oper,
                                   "down" if sid in admin else "up")
    if not answered:
        return PortPoll("sw1", Z(at), 0.0, None, {}, error="timeout", error_detail="no reply")
    return PortPoll("sw1", Z(at), 0.0, None if uptime_s is None else uptime_s * 100, ports)


def raw(store: LedgerStore, *statements: str) -> None:
    """SQL straight to the database, as someone with database access (not the store) would."""
    with store.engine.begin() as conn:
        for s in statements:
            conn.exec_driver_sql(s)


def drop_guards(store: LedgerStore) -> None:
    """What a determined tamperer does first: remove the append-only triggers."""
    if store.dialect == "postgresql":
        raw(store, "DROP TRIGGER ledger_entries_no_update ON ledger_entries")
    else:
        raw(store, "DROP TRIGGER ledger_entries_no_update",
            "DROP TRIGGER ledger_entries_no_delete")


def notes(store: LedgerStore, n: int) -> None:
    for i in range(n):
        store.append("note", T0 + timedelta(seconds=i), {"n": i, "text": f"note {i}"},
                     server="r1")


def scenario(store: LedgerStore, config: configmod.Config) -> dict[str, int]:
    """The lab's three outages (issue 5 "Done when") plus one colo outage, fed as polls and
    enforcement acts through the recorder; returns each outage's seq."""
    rec = OutageRecorder(store, config)
    rec.start()
    seqs: dict[str, int] = {}

    def starts(entries: list[Any]) -> None:
        for e in entries:
            if e.kind == "outage_start":
                seqs[e.server] = e.seq

    # r1: its port stops forwarding between two polls: 02:00Z to 03:30Z, 5400 s, unknown.
    for p in (poll("2026-11-03T01:00:00Z"), poll("2026-11-03T02:00:00Z", ("r1",)),
              poll("2026-11-03T03:30:00Z")):
        starts(rec.on_poll(p))
    # r2: suspended for overage 10:00Z, restored 12:00Z: 7200 s, customer.
    starts(rec.enforcement_started("r2", Z("2026-11-05T10:00:00Z"), "overage",
                                   {"rate_bps": 15_000_000, "cap_bps": 10_000_000}))
    rec.on_poll(poll("2026-11-05T10:30:00Z", admin=("r2",)))
    rec.enforcement_ended("r2", Z("2026-11-05T12:00:00Z"), {"action": "restore"})
    rec.on_poll(poll("2026-11-05T12:30:00Z"))
    # r3: planned work in a declared window (01:00Z to 03:00Z, notified two days before):
    # down 01:10Z to 01:40Z, 1800 s.
    store.add_maintenance(kind="planned", start=Z("2026-11-10T01:00:00Z"),
                          end=Z("2026-11-10T03:00:00Z"), notified_at=Z("2026-11-08T01:00:00Z"),
                          servers=["r3"], at=Z("2026-11-08T01:05:00Z"), reason="line card swap")
    for p in (poll("2026-11-10T01:00:00Z"), poll("2026-11-10T01:10:00Z", ("r3",)),
              poll("2026-11-10T01:40:00Z")):
        starts(rec.on_poll(p))
    # c1 (colo): down 05:10Z to 05:40Z, 1800 s.
    for p in (poll("2026-11-12T05:00:00Z"), poll("2026-11-12T05:10:00Z", ("c1",)),
              poll("2026-11-12T05:40:00Z")):
        starts(rec.on_poll(p))
    return seqs


def cli_clock(monkeypatch: pytest.MonkeyPatch, at: str) -> None:
    """The ledger commands stamp entries with this time, as if run then (their ledger time)."""
    monkeypatch.setattr("rackwarden.agent.ledger.cli.SystemClock", lambda: FakeClock(Z(at)))


def report(config_path: Path, url: str, capsys: pytest.CaptureFixture[str],
           *extra: str) -> dict[str, Any]:
    code = main_report_sla(["--month", "2026-11", "--config", str(config_path), "--db", url,
                            "--as-of", AS_OF, "--format", "json", *extra])
    out = capsys.readouterr()
    assert code == 0, out.err
    doc: dict[str, Any] = json.loads(out.out)
    return doc


def by_id(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["id"]: s for s in doc["servers"]}


class LedgerSuite:
    """Every ledger backend must pass these; a subclass provides the `ledger_url` fixture."""

    # Fixtures live in the class so that every backend's subclass inherits them.
    @pytest.fixture
    def config_path(self, tmp_path: Path) -> Path:
        path = tmp_path / "rackwarden.yaml"
        path.write_text(CONFIG.format(state=tmp_path / "state"))
        return path

    @pytest.fixture
    def config(self, config_path: Path) -> configmod.Config:
        return configmod.load(config_path)

    @pytest.fixture
    def store(self, ledger_url: str) -> Iterator[LedgerStore]:
        s = LedgerStore(ledger_url)
        s.start(T0)
        yield s
        s.close()

    # -- the chain --------------------------------------------------------------------------

    def test_constructor_does_no_io(self, ledger_url: str) -> None:
        s = LedgerStore(ledger_url)
        with pytest.raises(LedgerError, match="start"):
            s.head()

    def test_append_links_every_entry_to_the_previous(self, store: LedgerStore) -> None:
        notes(store, 4)
        entries = store.entries()
        assert [e.seq for e in entries] == [1, 2, 3, 4]
        prev = GENESIS_HASH
        for e in entries:
            assert e.prev_hash == prev
            assert e.hash == entry_hash(prev, e.seq, e.at.isoformat(), e.kind, e.server,
                                        e.ref_seq, dict(e.payload))
            prev = e.hash
        assert store.head() == Head(4, prev)
        r = store.verify()
        assert (r.ok, r.entries, r.last_seq, r.head) == (True, 4, 4, Head(4, prev))

    def test_canonical_form_is_the_documented_one(self, store: LedgerStore) -> None:
        # Written out by hand: sorted keys, no spaces, UTF-8, prev hash then the document.
        e = store.append("note", Z("2026-11-03T08:00:00+08:00"), {"z": 1, "text": "开始"})
        doc = ('{"at":"2026-11-03T00:00:00+00:00","kind":"note","payload":{"text":"开始",'
               '"z":1},"ref":null,"seq":1,"server":null}')
        assert e.hash == hashlib.sha256((GENESIS_HASH + doc).encode()).hexdigest()
        with store.engine.connect() as conn:
            stored = conn.execute(text("SELECT payload FROM ledger_entries")).scalar_one()
        assert stored == '{"text":"开始","z":1}'

    def test_bad_entries_are_refused(self, store: LedgerStore) -> None:
        with pytest.raises(LedgerError, match="floats are not exact"):
            store.append("note", T0, {"credit": 1.5})
        with pytest.raises(LedgerError, match="no timezone"):
            store.append("note", datetime(2026, 11, 1), {})
        with pytest.raises(LedgerError, match="unknown entry kind"):
            store.append("update", T0, {})
        with pytest.raises(LedgerError, match="does not exist"):
            store.append("note", T0, {}, ref_seq=7)
        assert store.head() == Head(0, GENESIS_HASH)  # nothing half-written

    def test_migrations_are_versioned_and_idempotent(self, store: LedgerStore,
                                                     ledger_url: str) -> None:
        again = LedgerStore(ledger_url)
        again.start(T0 + timedelta(days=1))
        again.close()
        with store.engine.connect() as conn:
            rows = conn.execute(text(
                "SELECT version, applied_at FROM schema_version ORDER BY version")).all()
        assert [(v, a) for v, a in rows] == [(1, "2026-11-01T00:00:00+00:00"),
                                             (2, "2026-11-01T00:00:00+00:00")]
        assert store.schema_version() == 2

    def test_triggers_refuse_update_and_delete(self, store: LedgerStore) -> None:
        notes(store, 2)
        with pytest.raises(sqlalchemy.exc.DBAPIError, match="append-only"):
            raw(store, "UPDATE ledger_entries SET payload = '{}' WHERE seq = 1")
        with pytest.raises(sqlalchemy.exc.DBAPIError, match="append-only"):
            raw(store, "DELETE FROM ledger_entries WHERE seq = 2")
        assert store.verify().ok

    def test_verify_catches_an_edited_row(self, store: LedgerStore, ledger_url: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
        notes(store, 5)
        drop_guards(store)
        raw(store, """UPDATE ledger_entries SET payload = '{"n":2,"text":"note 20"}'
                      WHERE seq = 3""")
        r = store.verify()
        assert (r.ok, r.first_bad_seq, r.problem) == (False, 3, "modified")
        assert main_ledger_verify(["--db", ledger_url]) == 1
        assert capsys.readouterr().out.startswith("ledger BROKEN at seq 3: modified entry: ")

    def test_verify_catches_a_rehashed_row(self, store: LedgerStore) -> None:
        notes(store, 5)
        e2, e3 = store.entries()[1:3]
        forged = {"n": 2, "text": "forged"}
        h = entry_hash(e2.hash, 3, e3.at.isoformat(), "note", "r1", None, forged)
        drop_guards(store)
        raw(store, f"""UPDATE ledger_entries SET payload = '{json.dumps(forged)}',
                       hash = '{h}' WHERE seq = 3""")
        r = store.verify()
        assert (r.first_bad_seq, r.problem) == (3, "modified")
        assert "entry 3 was changed and re-hashed" in r.detail

    def test_verify_catches_a_deleted_tail(self, store: LedgerStore, ledger_url: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
        notes(store, 6)
        drop_guards(store)
        raw(store, "DELETE FROM ledger_entries WHERE seq >= 5")
        r = store.verify()
        assert (r.ok, r.first_bad_seq, r.problem, r.last_seq, r.head.seq) == (
            False, 5, "truncated", 4, 6)
        assert r.detail.startswith("truncated after seq 4")
        assert main_ledger_verify(["--db", ledger_url, "--format", "json"]) == 1
        doc = json.loads(capsys.readouterr().out)
        assert (doc["ok"], doc["first_bad_seq"], doc["problem"]) == (False, 5, "truncated")

    def test_verify_catches_entries_missing_from_the_middle(self, store: LedgerStore) -> None:
        notes(store, 5)
        drop_guards(store)
        raw(store, "DELETE FROM ledger_entries WHERE seq = 3")
        r = store.verify()
        assert (r.first_bad_seq, r.problem) == (3, "missing")

    def test_anchor_catches_a_rewritten_chain(self, store: LedgerStore, ledger_url: str) -> None:
        notes(store, 4)
        anchor = store.head()
        # Rewrite the whole chain from seq 2 with consistent hashes and head: only the anchor
        # kept outside the database can tell.
        entries = store.entries()
        drop_guards(store)
        prev = entries[0].hash
        stmts = []
        for e in entries[1:]:
            payload = {**dict(e.payload), "text": "rewritten"}
            h = entry_hash(prev, e.seq, e.at.isoformat(), e.kind, e.server, e.ref_seq, payload)
            stmts.append(f"UPDATE ledger_entries SET payload = '{json.dumps(payload)}', "
                         f"prev_hash = '{prev}', hash = '{h}' WHERE seq = {e.seq}")
            prev = h
        stmts.append(f"UPDATE ledger_head SET hash = '{prev}' WHERE id = 1")
        raw(store, *stmts)
        assert store.verify().ok
        r = store.verify(anchor)
        assert (r.ok, r.first_bad_seq, r.problem) == (False, 4, "anchor_mismatch")
        assert main_ledger_verify(["--db", ledger_url, "--expect-head",
                                   f"{anchor.seq}:{anchor.hash}"]) == 1

    def test_concurrent_appends_keep_one_chain(self, store: LedgerStore, ledger_url: str) -> None:
        # Two stores (two engines, as two agent processes would have) and two threads.
        other = LedgerStore(ledger_url)
        other.start(T0)
        errors: list[BaseException] = []

        def writer(s: LedgerStore, name: str) -> None:
            try:
                for i in range(25):
                    s.append("note", T0, {"writer": name, "i": i})
            except BaseException as e:  # noqa: BLE001 - reported by the assertion below
                errors.append(e)

        threads = [threading.Thread(target=writer, args=(s, n))
                   for s, n in ((store, "a"), (other, "b"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        other.close()
        assert errors == []
        entries = store.entries()
        assert [e.seq for e in entries] == list(range(1, 51))
        for name in ("a", "b"):
            assert [e.payload["i"] for e in entries if e.payload["writer"] == name] == list(
                range(25))
        assert store.verify().ok

    # -- outages ------------------------------------------------------------------------------

    def test_outages_from_polls_and_enforcement(self, store: LedgerStore,
                                                config: configmod.Config) -> None:
        seqs = scenario(store, config)
        views = {v.server: v for v in store.outages()}
        got = {s: (v.seq, v.start, v.end, v.outage_class, v.cause) for s, v in views.items()}
        assert got == {
            "r1": (seqs["r1"], Z("2026-11-03T02:00:00Z"), Z("2026-11-03T03:30:00Z"), "unknown",
                   "port_oper_down"),
            "r2": (seqs["r2"], Z("2026-11-05T10:00:00Z"), Z("2026-11-05T12:00:00Z"), "customer",
                   "overage"),
            "r3": (seqs["r3"], Z("2026-11-10T01:10:00Z"), Z("2026-11-10T01:40:00Z"), "unknown",
                   "port_oper_down"),
            "c1": (seqs["c1"], Z("2026-11-12T05:10:00Z"), Z("2026-11-12T05:40:00Z"), "unknown",
                   "port_oper_down"),
        }
        assert dict(views["r2"].evidence) == {"rate_bps": 15_000_000, "cap_bps": 10_000_000}
        assert views["r1"].evidence["oper"] == "down"
        # Period queries: only what overlaps [start, end).
        assert [v.server for v in store.outages(start=Z("2026-11-05T00:00:00Z"),
                                                end=Z("2026-11-10T01:10:00Z"))] == ["r2"]
        assert [v.server for v in store.outages(server="c1")] == ["c1"]
        assert store.open_outages() == []
        unknown = [(v.server, s) for v, s in store.unresolved_unknown(Z(AS_OF))]
        assert unknown == [("r1", 5400), ("r3", 1800), ("c1", 1800)]  # longest first
        assert store.verify().ok

    def test_recorder_resumes_open_outages_after_restart(self, store: LedgerStore,
                                                         config: configmod.Config) -> None:
        first = OutageRecorder(store, config)
        first.start()
        first.on_poll(poll("2026-11-03T01:00:00Z"))
        (start,) = first.on_poll(poll("2026-11-03T02:00:00Z", ("r1",)))
        (opened,) = store.open_outages()
        assert opened.seq == start.seq
        second = OutageRecorder(store, config)  # the daemon restarted
        second.start()
        assert second.on_poll(poll("2026-11-03T02:30:00Z", ("r1",))) == []
        (end,) = second.on_poll(poll("2026-11-03T03:00:00Z"))
        assert (end.kind, end.ref_seq, end.payload["end"]) == (
            "outage_end", start.seq, "2026-11-03T03:00:00+00:00")
        assert len(store.outages()) == 1 and store.open_outages() == []

    def test_unreachable_switch_is_unknown_time(self, store: LedgerStore,
                                                config: configmod.Config) -> None:
        rec = OutageRecorder(store, config)
        rec.start()
        rec.on_poll(poll("2026-11-03T01:00:00Z"))
        rec.on_poll(poll("2026-11-03T01:01:00Z", answered=False))
        rec.on_poll(poll("2026-11-03T01:05:00Z"))
        views = store.outages()
        assert {(v.server, v.cause, v.outage_class, v.seconds(T0)) for v in views} == {
            (s, "switch_unreachable", "unknown", 240) for s in SERVERS}
        assert views[0].evidence["detail"] == "timeout: no reply"
        # The operator checks the switch's logs: r1's port forwarded all along.
        store.reclassify(views[0].seq, "none", "port forwarded; only SNMP was blocked",
                         Z("2026-11-03T02:00:00Z"))
        v = store.outage(views[0].seq)
        assert (v.outage_class, v.cause, v.record(T0)) == ("none", None, None)
        assert sorted(u.server for u, _ in store.unresolved_unknown(T0)) == ["c1", "r2", "r3"]

    def test_quick_reboot_is_one_atomic_batch(self, store: LedgerStore,
                                              config: configmod.Config) -> None:
        rec = OutageRecorder(store, config)
        rec.start()
        rec.on_poll(poll("2026-11-03T01:00:00Z", uptime_s=100_000))
        # Up at both polls, but sysUpTime says the switch booted at 01:04:00Z.
        entries = rec.on_poll(poll("2026-11-03T01:05:00Z", uptime_s=60))
        assert [(e.kind, e.server) for e in entries] == [
            (k, s) for s in SERVERS for k in ("outage_start", "outage_end")]
        start, end = entries[0], entries[1]
        assert (end.ref_seq, start.payload["cause"], start.payload["start"]) == (
            start.seq, "switch_reboot", "2026-11-03T01:04:00+00:00")
        assert {(v.outage_class, v.seconds(T0)) for v in store.outages()} == {("provider", 60)}

    def test_reclassify_appends_and_leaves_the_old_entry(self, store: LedgerStore,
                                                         config: configmod.Config) -> None:
        seqs = scenario(store, config)
        before = store.entry(seqs["r1"])
        e = store.reclassify(seqs["r1"], "provider", "switch line card fault, ticket 4711",
                             Z("2026-11-04T00:00:00Z"), by="noc-li")
        assert (e.kind, e.ref_seq, e.server) == ("reclassify", seqs["r1"], "r1")
        assert e.payload["previous"] == {"class": "unknown", "cause": "port_oper_down",
                                         "false_positive": False}
        assert store.entry(seqs["r1"]) == before  # the original entry is untouched
        v = store.outage(seqs["r1"])
        assert (v.outage_class, v.cause, v.recorded_cause) == ("provider", "provider_fault",
                                                               "port_oper_down")
        # A later correction wins; both stay in the log.
        store.reclassify(seqs["r1"], "customer", "customer confirmed own NIC failure",
                         Z("2026-11-05T00:00:00Z"))
        v = store.outage(e.seq)  # any entry of the outage leads to it
        assert (v.outage_class, v.cause) == ("customer", "customer_fault")
        assert [(c.kind, c.outage_class, c.by) for c in v.changes] == [
            ("reclassify", "provider", "noc-li"), ("reclassify", "customer", "operator")]
        assert store.verify().ok

    def test_reclassify_refuses_what_it_cannot_mean(self, store: LedgerStore,
                                                    config: configmod.Config) -> None:
        seqs = scenario(store, config)
        with pytest.raises(LedgerError, match="not an enforcement"):
            store.reclassify(seqs["r1"], "provider", "x", T0, false_positive=True)
        with pytest.raises(LedgerError, match="needs a reason"):
            store.reclassify(seqs["r1"], "provider", " ", T0)
        with pytest.raises(LedgerError, match="not of class customer"):
            store.reclassify(seqs["r1"], "customer", "x", T0, cause="line_fault")
        with pytest.raises(LedgerError, match="is a maintenance, not an outage"):
            store.reclassify(store.entries(kinds=["maintenance"])[0].seq, "provider", "x", T0)

    def test_report_before_and_after_resolution(self, store: LedgerStore,
                                                config: configmod.Config, config_path: Path,
                                                ledger_url: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
        seqs = scenario(store, config)
        doc = report(config_path, ledger_url, capsys)
        # Unresolved unknown time comes first: r1 5400 s, r3 1800 s, c1 1800 s.
        assert [(u["server"], u["unknown_seconds"]) for u in doc["unresolved_unknown"]] == [
            ("r1", 5400), ("r3", 1800), ("c1", 1800)]
        s = by_id(doc)
        assert s["r1"]["credit_fen"] == 0 and s["r1"]["seconds_by_class"]["unknown"] == 5400
        assert s["r2"]["seconds_by_class"]["customer"] == 7200 and s["r2"]["credit_fen"] == 0
        # Operators resolve: r1 was the provider's fault, r3 was the planned work, c1 too.
        store.reclassify(seqs["r1"], "provider", "uplink optic", Z("2026-11-04T00:00:00Z"))
        assert main_ledger_reclassify([str(seqs["r3"]), "--class", "maintenance", "--reason",
                                       "line card swap", "--db", ledger_url]) == 0
        assert main_ledger_reclassify([str(seqs["c1"]), "--class", "provider", "--reason",
                                       "patch cable", "--config", str(config_path), "--db",
                                       ledger_url]) == 0
        capsys.readouterr()
        doc = report(config_path, ledger_url, capsys)
        assert doc["unresolved_unknown"] == []
        s = by_id(doc)
        # r1 rental: ceil(5400 s / 3600) = 2 h; 2 × 2 h × 100 fen = 400 fen.
        assert (s["r1"]["seconds_by_class"]["provider"], s["r1"]["credit_fen"]) == (5400, 400)
        # r2: customer (overage suspension, R16): nothing.
        assert (s["r2"]["seconds_by_class"]["customer"], s["r2"]["credit_fen"]) == (7200, 0)
        # r3: inside the window declared 48 h ahead: maintenance, no breach under rental.
        assert (s["r3"]["seconds_by_class"]["maintenance"], s["r3"]["credit_fen"]) == (1800, 0)
        r3 = s["r3"]["outages"][0]
        assert (r3["class"], r3["cause"], r3["class_in_month"]) == (
            "provider", "planned_work", "maintenance")
        # c1 colo: ceil(2 × 1800 s / 3600) = 1 h of extension.
        assert (s["c1"]["seconds_by_class"]["provider"], s["c1"]["extension_hours"]) == (1800,
                                                                                          "1")
        assert s["c1"]["credit_fen"] is None
        r1_outage = s["r1"]["outages"][0]
        assert (r1_outage["seq"], r1_outage["class"], r1_outage["seconds_in_month"],
                r1_outage["evidence"]["state"]) == (seqs["r1"], "provider", 5400, "oper_down")
        assert doc["ledger"]["verified"] is True
        assert doc["ledger"]["head_seq"] == store.head().seq

    def test_the_credit_rule_is_the_one_the_template_names(self, store: LedgerStore, config_path: Path,
                                                          ledger_url: str,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
        # Bug: the credit rule was looked up by the template's *name*, so a template called
        # anything but rental or colo (e.g. `campus`) silently earned no credit at all.
        text = config_path.read_text().replace("  rental: {cap_mbps: 10, credit: rental}",
                                                "  campus: {cap_mbps: 10, credit: rental}")
        config_path.write_text(text.replace("template: rental", "template: campus"))
        config = configmod.load(config_path)
        assert set(config.templates) == {"campus", "colo"} and config.server("r1").template == "campus"  # type: ignore[union-attr]
        seqs = scenario(store, config)
        store.reclassify(seqs["r1"], "provider", "uplink optic", Z("2026-11-04T00:00:00Z"))
        s = by_id(report(config_path, ledger_url, capsys))
        # The same arithmetic as under `rental`: 2 × ceil(5400 s / 3600 s) h × 100 fen.
        assert (s["r1"]["seconds_by_class"]["provider"], s["r1"]["credit_fen"]) == (5400, 400)

    def test_false_positive_enforcement_becomes_provider(
        self, store: LedgerStore, config: configmod.Config, config_path: Path, ledger_url: str,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        seqs = scenario(store, config)
        assert main_ledger_reclassify([str(seqs["r2"]), "--class", "provider", "--reason",
                                       "rate was a counter glitch", "--false-positive",
                                       "--db", ledger_url]) == 0
        assert "customer -> provider (cause overage, false positive)" in capsys.readouterr().out
        v = store.outage(seqs["r2"])
        assert (v.outage_class, v.cause, v.false_positive) == ("provider", "overage", True)
        s = by_id(report(config_path, ledger_url, capsys))
        # 7200 s of provider time: 2 h × 200 fen = 400 fen.
        assert (s["r2"]["seconds_by_class"]["provider"], s["r2"]["credit_fen"]) == (7200, 400)

    def test_short_notice_window_excuses_nothing(
        self, store: LedgerStore, config: configmod.Config, config_path: Path, ledger_url: str,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        rec = OutageRecorder(store, config)
        rec.start()
        # Two colo cut-overs of c1, 30 min each: one notified 13 h ahead (colo needs 48 h),
        # one 72 h ahead; each recorded in the ledger when its notice went out.
        cli_clock(monkeypatch, "2026-11-19T20:00:00+08:00")
        assert main_maintenance_add([
            "--start", "2026-11-20T09:00:00+08:00", "--end", "2026-11-20T10:00:00+08:00",
            "--kind", "cutover", "--servers", "c1", "--notified-at",
            "2026-11-19T20:00:00+08:00", "--config", str(config_path), "--db", ledger_url]) == 0
        cli_clock(monkeypatch, "2026-11-22T09:00:00+08:00")
        assert main_maintenance_add([
            "--start", "2026-11-25T09:00:00+08:00", "--end", "2026-11-25T10:00:00+08:00",
            "--kind", "cutover", "--servers", "all", "--notified-at",
            "2026-11-22T09:00:00+08:00", "--db", ledger_url]) == 0
        out = capsys.readouterr().out
        assert "notice 13h" in out and "notice 72h" in out
        seqs = []
        for day in ("20", "25"):
            rec.on_poll(poll(f"2026-11-{day}T01:00:00Z"))
            (e,) = rec.on_poll(poll(f"2026-11-{day}T01:10:00Z", ("c1",)))
            rec.on_poll(poll(f"2026-11-{day}T01:40:00Z"))
            seqs.append(e.seq)
            store.reclassify(e.seq, "maintenance", "cut-over", Z(f"2026-11-{day}T02:00:00Z"),
                             cause="cutover")
        s = by_id(report(config_path, ledger_url, capsys))["c1"]
        # The late window leaves 1800 s provider (ceil(2 × 1800 / 3600) = 1 h extension); the
        # noticed one makes 1800 s excluded (colo §7.3), which earns nothing.
        assert (s["seconds_by_class"]["provider"], s["seconds_by_class"]["excluded"],
                s["extension_hours"]) == (1800, 1800, "1")
        reasons = [p["segments"][0]["reason"] for p in s["parts"]]
        assert "notified 13h before start, colo needs 48h: excuses nothing" in reasons[0]

    def test_a_window_cancelled_before_it_starts_excuses_nothing(
        self, store: LedgerStore, config: configmod.Config, config_path: Path, ledger_url: str,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        rec = OutageRecorder(store, config)
        rec.start()
        # c1: a 72 h-noticed cut-over window 01:00Z-02:00Z, cancelled the evening before; the
        # port still goes down 30 min inside the old window's hours.
        w = store.add_maintenance(kind="cutover", start=Z("2026-11-25T01:00:00Z"),
                                  end=Z("2026-11-25T02:00:00Z"),
                                  notified_at=Z("2026-11-22T01:00:00Z"), servers=["c1"],
                                  at=Z("2026-11-22T01:00:00Z"))
        with pytest.raises(LedgerError, match="say why"):
            store.cancel_maintenance(w.seq, Z("2026-11-24T20:00:00Z"), by="noc", reason=" ")
        c = store.cancel_maintenance(w.seq, Z("2026-11-24T20:00:00Z"), by="noc",
                                     reason="vendor postponed")
        assert c.ref_seq == w.seq and store.verify().ok
        assert store.maintenance_windows() == []
        assert len(store.entries(kinds=("maintenance",))) == 2  # the declaration stays
        with pytest.raises(LedgerError, match="already cancelled"):
            store.cancel_maintenance(w.seq, Z("2026-11-24T21:00:00Z"), by="noc", reason="x")
        rec.on_poll(poll("2026-11-25T01:00:00Z"))
        (e,) = rec.on_poll(poll("2026-11-25T01:10:00Z", ("c1",)))
        rec.on_poll(poll("2026-11-25T01:40:00Z"))
        store.reclassify(e.seq, "maintenance", "cut-over", Z("2026-11-25T02:00:00Z"),
                         cause="cutover")
        s = by_id(report(config_path, ledger_url, capsys))["c1"]
        # No window covers it any more: the 1800 s are provider time, as with no notice at all.
        assert s["seconds_by_class"]["provider"] == 1800
        assert s["seconds_by_class"]["excluded"] == 0

        # A window that has started cannot be withdrawn; the CLI takes the id as printed.
        late = store.add_maintenance(kind="planned", start=Z("2026-11-26T01:00:00Z"),
                                     end=Z("2026-11-26T02:00:00Z"),
                                     notified_at=Z("2026-11-23T01:00:00Z"), servers="all",
                                     at=Z("2026-11-23T01:00:00Z"))
        with pytest.raises(LedgerError, match="cannot be cancelled; reclassify"):
            store.cancel_maintenance(late.seq, Z("2026-11-26T01:00:00Z"), by="noc", reason="x")
        future = store.add_maintenance(kind="planned", start=Z("2099-01-01T01:00:00Z"),
                                       end=Z("2099-01-01T02:00:00Z"),
                                       notified_at=Z("2026-11-01T00:00:00Z"), servers="all",
                                       at=Z("2026-11-01T00:00:00Z"))
        assert main_maintenance_cancel([f"M{future.seq}", "--reason", "not needed",
                                        "--db", ledger_url]) == 0
        assert f"window M{future.seq} cancelled" in capsys.readouterr().out
        assert [v.seq for v in store.maintenance_windows()] == [late.seq]
        assert main_maintenance_cancel(["W1", "--reason", "x", "--db", ledger_url]) == 2
        assert "not a window id" in capsys.readouterr().err

    def test_paid_total_caps_the_running_credit(
        self, store: LedgerStore, config: configmod.Config, config_path: Path, ledger_url: str,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        rec = OutageRecorder(store, config)
        rec.start()
        # October: r1, r2, r3 go down together (provider) for 30 min on 10 Oct.
        rec.on_poll(poll("2026-10-10T01:00:00Z"))
        rec.on_poll(poll("2026-10-10T02:00:00Z", ("r1", "r2", "r3")))
        rec.on_poll(poll("2026-10-10T02:30:00Z"))
        (v,) = store.outages(server="r1")
        assert (v.cause, v.outage_class) == ("ports_down_together", "provider")
        seqs = scenario(store, config)
        store.reclassify(seqs["r1"], "provider", "uplink", Z("2026-11-04T00:00:00Z"))
        # October (31 days): ceil(1800/3600) = 1 h; 2 × 72000 / (24 × 31) = 193.548… → 194 fen.
        # November: 400 fen, but only 500 − 194 = 306 fen of the paid total is left (R20).
        s = by_id(report(config_path, ledger_url, capsys, "--paid-total", "r1=500"))["r1"]
        assert (s["credit_fen"], s["caps_applied"], s["paid_total_fen"]) == (
            306, ["paid_total"], 500)
        without = by_id(report(config_path, ledger_url, capsys))["r1"]
        assert without["credit_fen"] == 400
        assert without["notes"] == [
            "paid-total cap (R20) not applied: no paid total given (--paid-total)"]

    def test_report_table_and_csv_list_unknown_first(
        self, store: LedgerStore, config: configmod.Config, config_path: Path, ledger_url: str,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        seqs = scenario(store, config)
        args = ["--month", "2026-11", "--config", str(config_path), "--db", ledger_url,
                "--as-of", AS_OF]
        assert main_report_sla([*args, "--customer", "acme"]) == 0
        table = capsys.readouterr().out
        lines = table.splitlines()
        assert lines[2].startswith("UNRESOLVED UNKNOWN TIME: 1 outage(s)")
        assert lines[3].split()[:3] == ["seq", str(seqs["r1"]), "r1"]
        assert "r3" not in table  # another customer
        assert main_report_sla([*args, "--format", "csv"]) == 0
        rows = capsys.readouterr().out.splitlines()
        assert rows[0].startswith("section,server,customer,template,seq,start,end,class,cause")
        assert [r.split(",")[:2] for r in rows[1:4]] == [["unknown", "r1"], ["unknown", "r3"],
                                                         ["unknown", "c1"]]
        assert rows[4].split(",")[:2] == ["server", "r1"]

    def test_report_refuses_a_broken_ledger(
        self, store: LedgerStore, config: configmod.Config, config_path: Path, ledger_url: str,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        scenario(store, config)
        drop_guards(store)
        raw(store, "DELETE FROM ledger_entries WHERE seq = (SELECT MAX(seq) FROM ledger_entries)")
        code = main_report_sla(["--month", "2026-11", "--config", str(config_path), "--db",
                                ledger_url])
        captured = capsys.readouterr()
        assert code == 1 and captured.out == ""
        assert "truncated tail" in captured.err

    def test_ledger_list_and_usage_errors(self, store: LedgerStore, config: configmod.Config,
                                          ledger_url: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
        seqs = scenario(store, config)
        assert main_ledger_list(["--db", ledger_url, "--outages", "--format", "json"]) == 0
        rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [(r["seq"], r["server"], r["class"]) for r in rows] == [
            (seqs["r1"], "r1", "unknown"), (seqs["r2"], "r2", "customer"),
            (seqs["r3"], "r3", "unknown"), (seqs["c1"], "c1", "unknown")]
        assert main_ledger_list(["--db", ledger_url, "--kind", "maintenance"]) == 0
        out = capsys.readouterr().out.splitlines()
        assert len(out) == 2 and "line card swap" in out[1]
        assert main_maintenance_add(["--db", ledger_url, "--start", "2026-11-20T09:00:00",
                                     "--end", "2026-11-20T10:00:00+08:00", "--kind", "planned",
                                     "--servers", "all", "--notified-at",
                                     "2026-11-19T09:00:00+08:00"]) == 2
        assert "has no UTC offset" in capsys.readouterr().err
        assert main_ledger_reclassify(["999", "--class", "provider", "--reason", "x", "--db",
                                       ledger_url]) == 2
        assert "no ledger entry 999" in capsys.readouterr().err
        assert main_report_sla(["--month", "2026-13", "--db", ledger_url]) == 2
        assert main_ledger_verify([]) == 2
        assert "give --db URL or --config PATH" in capsys.readouterr().err

    def test_metrics_values(self, store: LedgerStore, config: configmod.Config) -> None:
        seqs = scenario(store, config)
        store.reclassify(seqs["r1"], "provider", "uplink", Z("2026-11-04T00:00:00Z"))
        m = ledger_metrics(store, config, Z("2026-11-20T00:00:00Z"))
        assert dict(m.outage_seconds) == {("r1", "port_oper_down"): 5400,
                                          ("r2", "overage"): 7200,
                                          ("r3", "port_oper_down"): 1800,
                                          ("c1", "port_oper_down"): 1800}
        assert dict(m.credit_fen) == {"r1": 400, "r2": 0, "r3": 0}
        assert m.unknown_seconds == 3600  # r3 and c1, not yet resolved
        rows = sla_report(store, config, "2026-11", Z(AS_OF), customer="blue")
        assert [r.server.id for r in rows] == ["r3", "c1"]

    # -- R13 incidents and R19 repair times ---------------------------------------------------

    def test_incident_report_deadline(self, store: LedgerStore, config: configmod.Config) -> None:
        detected = Z("2026-11-03T10:00:00+08:00")
        late = store.add_incident(summary="botnet C2 on r1", detected_at=detected,
                                  at=Z("2026-11-03T10:05:00+08:00"), by="noc", server="r1")
        on_time = store.add_incident(summary="defaced site", detected_at=detected,
                                     reported_at=Z("2026-11-04T10:00:00+08:00"),
                                     at=Z("2026-11-04T10:00:00+08:00"), by="noc")
        never = store.add_incident(summary="credential leak", detected_at=detected,
                                   at=Z("2026-11-03T12:00:00+08:00"), by="noc")
        # The first is reported 30 h after detection; the correction is a new entry.
        report = store.report_incident(late.seq, Z("2026-11-04T16:00:00+08:00"),
                                       Z("2026-11-04T16:00:00+08:00"), by="noc")
        assert report.ref_seq == late.seq and store.verify().ok
        with pytest.raises(LedgerError, match="already reported"):
            store.report_incident(late.seq, Z("2026-11-04T17:00:00+08:00"),
                                  Z("2026-11-04T17:00:00+08:00"), by="noc")
        with pytest.raises(LedgerError, match="before detected_at"):
            store.report_incident(never.seq, Z("2026-11-03T09:00:00+08:00"),
                                  Z("2026-11-04T17:00:00+08:00"), by="noc")
        with pytest.raises(LedgerError, match="no incident"):
            store.report_incident(report.seq, Z("2026-11-04T17:00:00+08:00"),
                                  Z("2026-11-04T17:00:00+08:00"), by="noc")

        def status(now: str) -> dict[str, tuple[str, str]]:
            return {f.subject: (f.status, f.reason) for f in
                    deadline_findings(store, config, Z(now)) if f.rule == "R13"}

        # Hand check: due at detection + 24 h = 2026-11-04T10:00+08:00, that instant included.
        before = status("2026-11-04T09:00:00+08:00")
        assert before[f"I{never.seq}"] == ("pending", "R13: no report yet after 23h, due within 24h")
        after = status("2026-11-05T00:00:00+08:00")
        assert after == {
            f"I{late.seq}": ("breached", "R13: report after 30h, over the 24h limit"),
            f"I{on_time.seq}": ("met", "R13: report after 24h, within the 24h limit"),
            f"I{never.seq}": ("breached", "R13: no report after 38h, limit 24h passed"),
        }

    def test_repair_deadlines_of_provider_outages(self, store: LedgerStore,
                                                  config: configmod.Config) -> None:
        seqs = scenario(store, config)
        # c1 (colo: repaired within 24 h) was down 30 min; it becomes provider time.
        store.reclassify(seqs["c1"], "provider", "line card", Z("2026-11-12T06:00:00Z"))
        # r1's outage is provider time too, but rental has no repair term.
        store.reclassify(seqs["r1"], "provider", "uplink", Z("2026-11-04T00:00:00Z"))
        # c1 again: down 2026-11-13T00:00Z and still down.
        rec = OutageRecorder(store, config)
        rec.start()
        rec.on_poll(poll("2026-11-12T23:59:00Z"))
        (open_seq,) = [e.seq for e in rec.on_poll(poll("2026-11-13T00:00:00Z", ("c1",)))
                       if e.kind == "outage_start"]
        store.reclassify(open_seq, "provider", "fibre cut", Z("2026-11-13T00:30:00Z"))

        def found(now: str) -> dict[str, tuple[str, str, str | None]]:
            return {f.subject: (f.check, f.status, f.done_at.isoformat() if f.done_at else None)
                    for f in deadline_findings(store, config, Z(now)) if f.rule == "R19"}

        assert found("2026-11-13T23:00:00Z") == {
            f"#{seqs['c1']}": ("resolve", "met", "2026-11-12T05:40:00+00:00"),  # by its end
            f"#{open_seq}": ("resolve", "pending", None),
        }
        assert found("2026-11-14T00:00:01Z")[f"#{open_seq}"] == ("resolve", "breached", None)
        # The metric counts what is still to do: pending, then overdue (which pages).
        assert dict(ledger_metrics(store, config, Z("2026-11-13T23:00:00Z")).deadlines_open) == {
            ("R19", "resolve", "pending"): 1}
        m = ledger_metrics(store, config, Z("2026-11-14T00:00:01Z"))
        assert dict(m.deadlines_open) == {("R19", "resolve", "overdue"): 1}
        metrics = Metrics()
        metrics.set_ledger(m)
        assert ('rackwarden_deadlines_open{check="resolve",rule="R19",state="overdue"} 1.0'
                in generate_latest(metrics.registry).decode())
        # Repaired (and recorded) at 20:00Z: within the 24 h, whenever it is judged. A repair
        # recorded after the deadline with an earlier --at: test_ledger_claimed_times.py.
        store.note_outage("resolve", open_seq, Z("2026-11-13T20:00:00Z"), by="noc",
                          when=Z("2026-11-13T20:00:00Z"))
        assert found("2026-11-20T00:00:00Z")[f"#{open_seq}"] == (
            "resolve", "met", "2026-11-13T20:00:00+00:00")
        assert dict(ledger_metrics(store, config, Z("2026-11-20T00:00:00Z")).deadlines_open) == {}
        with pytest.raises(LedgerError, match="before outage"):
            store.note_outage("ack", open_seq, Z("2026-11-14T09:00:00Z"), by="noc",
                              when=Z("2026-11-12T00:00:00Z"))
        with pytest.raises(LedgerError, match="in the future"):
            store.note_outage("ack", open_seq, Z("2026-11-14T09:00:00Z"), by="noc",
                              when=Z("2026-11-15T00:00:00Z"))

    def test_answer_and_on_site_terms(self, store: LedgerStore, config: configmod.Config) -> None:
        # The integration contract's terms (answer 1 h; on site 2 h when service is down),
        # applied to rental servers for the test.
        # r1 stops forwarding 02:00Z to 03:30Z; each note is recorded when it happens (the
        # ledger time counts, never an earlier --at: test_ledger_claimed_times.py).
        rec = OutageRecorder(store, config)
        rec.start()
        rec.on_poll(poll("2026-11-03T01:00:00Z"))
        (r1,) = [e.seq for e in rec.on_poll(poll("2026-11-03T02:00:00Z", ("r1",)))
                 if e.kind == "outage_start"]
        store.note_outage("ack", r1, Z("2026-11-03T02:40:00Z"), by="noc",
                          when=Z("2026-11-03T02:40:00Z"))  # 40 min after the 02:00Z start
        rec.on_poll(poll("2026-11-03T03:30:00Z"))
        store.note_outage("on_site", r1, Z("2026-11-03T04:30:00Z"), by="noc",
                          when=Z("2026-11-03T04:30:00Z"))  # 2 h 30 min after
        store.reclassify(r1, "provider", "uplink", Z("2026-11-04T00:00:00Z"))
        got = [(f.check, f.status, f.reason) for f in deadline_findings(
            store, config, Z("2026-11-20T00:00:00Z"), terms={"rental": REPAIR_TERMS["integration"]})
            if f.subject == f"#{r1}"]
        assert got == [
            ("answer", "met", "R19: answer after 40m, within the 1h limit"),
            ("on_site", "breached",
             "R19: on site (service interrupted) after 2h30m, over the 2h limit"),
        ]

    def test_incident_ack_and_deadlines_commands(self, store: LedgerStore,
                                                 config: configmod.Config, config_path: Path,
                                                 ledger_url: str,
                                                 capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
        seqs = scenario(store, config)
        db = ["--db", ledger_url]
        cli_clock(monkeypatch, "2026-11-05T20:00:00+08:00")  # the report is recorded when made
        assert main_ledger_incident(["add", "--summary", "DDoS from r2", "--server", "r2",
                                     "--detected-at", "2026-11-05T10:00:00+08:00", *db]) == 0
        out = capsys.readouterr().out
        seq = int(out.split(":")[0].split()[1])
        assert f"incident I{seq} detected 2026-11-05T02:00:00+00:00" in out
        assert main_ledger_incident(["report", str(seq), "--at", "2026-11-05T20:00:00+08:00",
                                     *db]) == 0
        assert f"incident I{seq} reported 2026-11-05T12:00:00+00:00" in capsys.readouterr().out
        assert main_ledger_incident(["add", "--summary", "x", "--server", "nope",
                                     "--detected-at", "2026-11-05T10:00:00+08:00",
                                     "--config", str(config_path), *db]) == 2
        assert "no server nope" in capsys.readouterr().err
        store.reclassify(seqs["c1"], "provider", "line card", Z("2026-11-12T06:00:00Z"))
        cli_clock(monkeypatch, "2026-11-12T06:00:00Z")
        assert main_ledger_ack([str(seqs["c1"]), "--at", "2026-11-12T05:20:00Z", *db]) == 0
        assert f"outage {seqs['c1']} (c1) ack at 2026-11-12T05:20:00+00:00" in capsys.readouterr().out
        assert main_ledger_resolve([str(seqs["c1"]), "--at", "2026-11-12T04:00:00Z", *db]) == 2
        assert "before outage" in capsys.readouterr().err
        assert main_report_deadlines(["--config", str(config_path), *db, "--as-of",
                                      "2026-12-01T00:00:00Z", "--format", "json"]) == 0
        rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
        assert [(r["rule"], r["subject"], r["check"], r["status"]) for r in rows] == [
            ("R13", f"I{seq}", "incident_report", "met"),
            ("R19", f"#{seqs['c1']}", "resolve", "met"),
        ]
        assert main_report_deadlines(["--config", str(config_path), *db, "--open"]) == 0
        assert capsys.readouterr().out.splitlines()[-1].startswith("0 deadlines, 0 breached")
        assert main_report_deadlines(db) == 2
        assert "--config PATH is required" in capsys.readouterr().err


class TestLedgerSqlite(LedgerSuite):
    @pytest.fixture
    def ledger_url(self, tmp_path: Path) -> str:
        return f"sqlite:///{tmp_path / 'state' / 'ledger.sqlite'}"

    def test_default_url_is_in_state_dir(self, config: configmod.Config, tmp_path: Path) -> None:
        from rackwarden.agent.ledger import default_url

        assert default_url(config) == f"sqlite:///{tmp_path / 'state' / 'ledger.sqlite'}"

    def test_memory_database_is_refused(self) -> None:
        with pytest.raises(LedgerError, match="must be a file"):
            LedgerStore("sqlite://").start()
