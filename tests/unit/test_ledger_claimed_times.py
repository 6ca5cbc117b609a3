"""Issue 11, "Ledger and credits": a time a person supplies never counts before the ledger saw it.

A maintenance window recorded after it started excuses nothing whatever its `--notified-at`
says, a back-dated notice counts from the ledger's append time, and the same holds for every
other claimed time the ledger CLI accepts (R19 answer / on-site / repair, R13 reports). Each
entry keeps the claimed time beside its ledger time, and the reports show both. Past time is
excused only by `ledger reclassify`, which the report shows as a reclassification.

Pure rules first (policies/sla.py, policies/sla_deadlines.py), then the CLI on a temp SQLite
ledger, then a ledger written by the code before this change (tests/fixtures/sla/).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from rackwarden.agent import config as configmod
from rackwarden.agent.clock import FakeClock
from rackwarden.agent.ledger import LedgerStore, OutageRecorder
from rackwarden.agent.ledger.cli import (
    main_ledger_incident,
    main_ledger_reclassify,
    main_ledger_resolve,
    main_ledger_verify,
    main_maintenance_add,
)
from rackwarden.agent.ledger.report_cli import main_report_deadlines, main_report_sla
from rackwarden.policies import sla
from rackwarden.policies.sla import (
    COLO,
    RENTAL,
    MaintenanceWindow,
    OutageRecord,
    ServerContract,
    server_month,
)
from rackwarden.policies.sla_deadlines import (
    REPAIR_TERMS,
    check_incident_report,
    check_repair,
    outage_repair,
)
from sqlalchemy import text

from tests.unit.test_ledger_sqlite import CONFIG, poll

Z = datetime.fromisoformat
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sla" / "ledgers"
AS_OF = "2026-12-01T00:00:00+08:00"


# ---------------------------------------------------------------------------------------------
# Pure rules


def _rental_month(window: MaintenanceWindow) -> tuple[int, int, int, str]:
    """r1 (rental, 72000 fen, November: 200 fen per credited hour) down 10:00Z-11:00Z on the
    10th by a provider fault, with `window` declared: (provider s, maintenance s, fen, reason)."""
    rec = OutageRecord("o1", "r1", Z("2026-11-10T10:00:00Z"), Z("2026-11-10T11:00:00Z"),
                       "provider_fault")
    m = server_month(ServerContract("r1", RENTAL, 72000, 10**9), [rec], [window], "2026-11", UTC)
    return (m.seconds_by_class["provider"], m.seconds_by_class["maintenance"], m.credit_fen,
            m.parts[0].segments[0].reason)


def _window(declared_at: str | None, kind: str = "planned",
            start: str = "2026-11-10T09:00:00Z", end: str = "2026-11-10T12:00:00Z",
            notified_at: str = "2026-11-07T09:00:00Z") -> MaintenanceWindow:
    return MaintenanceWindow("M1", kind, Z(start), Z(end), Z(notified_at), ("r1",),  # type: ignore[arg-type]
                             declared_at=None if declared_at is None else Z(declared_at))


def test_counted_time_is_the_claim_never_before_the_ledger_time() -> None:
    claim, ledger = Z("2026-11-10T09:00:00Z"), Z("2026-11-10T10:30:00Z")
    assert sla.counted_time(claim, ledger) == ledger
    # A claim after its entry cannot be earlier than it; with no ledger (a scenario file) the
    # claim is all there is.
    assert sla.counted_time(ledger, claim) == ledger
    assert sla.counted_time(claim, None) == claim


def test_a_window_recorded_after_it_started_excuses_nothing() -> None:
    # The same window, 3 days' claimed notice; declared beforehand it excuses the hour.
    before = _rental_month(_window("2026-11-07T09:00:00Z"))
    assert before[:3] == (0, 3600, 0)
    # Recorded 1 h 30 min after its 09:00Z start, half-way through the outage: nothing at all
    # (not even the part after 10:30Z), whatever notice it claims.
    provider, maintenance, fen, reason = _rental_month(_window("2026-11-10T10:30:00Z"))
    assert (provider, maintenance, fen) == (3600, 0, 2 * 72000 // (24 * 30))
    assert "window M1 (planned) recorded in the ledger 1h30m after it started: excuses nothing" \
        in reason


def test_a_backdated_notice_counts_from_the_ledger_time() -> None:
    # colo cut-over: 48 h notice makes it excluded. Claimed 72 h, recorded 13 h before start.
    cut = OutageRecord("o1", "c1", Z("2026-11-25T01:10:00Z"), Z("2026-11-25T01:40:00Z"),
                       "cutover")

    def month(declared: str) -> tuple[int, int, int, str]:
        w = _window(declared, "cutover", "2026-11-25T01:00:00Z", "2026-11-25T02:00:00Z",
                    "2026-11-22T01:00:00Z")
        w = MaintenanceWindow(w.id, w.kind, w.start, w.end, w.notified_at, ("c1",),
                              declared_at=w.declared_at)
        m = server_month(ServerContract("c1", COLO, 60000, 0), [cut], [w], "2026-11", UTC)
        return (m.seconds_by_class["provider"], m.seconds_by_class["excluded"], m.extension_s,
                m.parts[0].segments[0].reason)

    assert month("2026-11-22T01:00:00Z")[:3] == (0, 1800, 0)
    provider, excluded, extension, reason = month("2026-11-24T12:00:00Z")
    assert (provider, excluded, extension) == (1800, 0, 3600)
    assert ("notified 13h before start by its ledger time (notified_at claims 72h before "
            "start), colo needs 48h: excuses nothing") in reason


def test_repair_and_report_times_count_from_the_ledger_time() -> None:
    start, now = Z("2026-11-13T00:00:00Z"), Z("2026-11-20T00:00:00Z")
    terms = REPAIR_TERMS["integration"]  # answer 1 h, on site 2 h while down
    claimed_ack, claimed_on_site = Z("2026-11-13T00:40:00Z"), Z("2026-11-13T01:30:00Z")
    # Recorded in time, the claims stand (met, as claimed).
    met = check_repair("#1", terms, start, now, claimed_ack, claimed_on_site,
                       acknowledged_recorded_at=claimed_ack,
                       on_site_recorded_at=Z("2026-11-13T01:35:00Z"))
    assert [(f.check, f.status) for f in met] == [("answer", "met"), ("on_site", "met")]
    # Recorded a day later with the same claims: the ledger time counts; the claim is kept.
    late = check_repair("#1", terms, start, now, claimed_ack, claimed_on_site,
                        acknowledged_recorded_at=Z("2026-11-14T00:00:00Z"),
                        on_site_recorded_at=Z("2026-11-14T00:00:00Z"))
    assert [(f.check, f.status, f.done_at, f.claimed_at) for f in late] == [
        ("answer", "breached", Z("2026-11-14T00:00:00Z"), claimed_ack),
        ("on_site", "breached", Z("2026-11-14T00:00:00Z"), claimed_on_site)]
    assert "the entry claims 40m" in late[0].reason
    # R13: a report claimed 18 h after detection but recorded 30 h after it.
    r13 = check_incident_report("I1", start, Z("2026-11-13T18:00:00Z"), now,
                                reported_recorded_at=Z("2026-11-14T06:00:00Z"))
    assert (r13.status, r13.done_at, r13.claimed_at) == (
        "breached", Z("2026-11-14T06:00:00Z"), Z("2026-11-13T18:00:00Z"))


def test_a_late_recorded_repair_counts_no_later_than_the_port_coming_back() -> None:
    # colo: repaired within 24 h. The port forwarded again at 10:00Z (the agent saw it); the
    # repair was written up two days later claiming 09:55Z. The port's return is independent
    # evidence, so the repair counts at 10:00Z: met, not a false breach.
    start, now = Z("2026-11-13T00:00:00Z"), Z("2026-11-20T00:00:00Z")
    (f,) = outage_repair("#1", "provider", REPAIR_TERMS["colo"], start, now,
                         resolved_at=Z("2026-11-13T09:55:00Z"), ended_at=Z("2026-11-13T10:00:00Z"),
                         resolved_recorded_at=Z("2026-11-15T00:00:00Z"))
    assert (f.status, f.done_at, f.claimed_at) == (
        "met", Z("2026-11-13T10:00:00Z"), Z("2026-11-13T09:55:00Z"))
    # An open outage has no such evidence: the ledger time counts.
    (g,) = outage_repair("#1", "provider", REPAIR_TERMS["colo"], start, now,
                         resolved_at=Z("2026-11-13T09:55:00Z"),
                         resolved_recorded_at=Z("2026-11-15T00:00:00Z"))
    assert (g.status, g.done_at) == ("breached", Z("2026-11-15T00:00:00Z"))


# ---------------------------------------------------------------------------------------------
# The CLI on a temporary SQLite ledger


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "rackwarden.yaml"
    path.write_text(CONFIG.format(state=tmp_path / "state"))
    return path


@pytest.fixture
def config(config_path: Path) -> configmod.Config:
    return configmod.load(config_path)


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'state' / 'ledger.sqlite'}"


@pytest.fixture
def store(url: str) -> Iterator[LedgerStore]:
    s = LedgerStore(url)
    s.start(Z("2026-11-01T00:00:00Z"))
    yield s
    s.close()


def cli_clock(monkeypatch: pytest.MonkeyPatch, at: str) -> None:
    """The ledger commands run as if at `at`: that is their entries' ledger time."""
    monkeypatch.setattr("rackwarden.agent.ledger.cli.SystemClock", lambda: FakeClock(Z(at)))


def report(capsys: pytest.CaptureFixture[str], config_path: Path, url: str,
           fmt: str = "json") -> Any:
    code = main_report_sla(["--month", "2026-11", "--config", str(config_path), "--db", url,
                            "--as-of", AS_OF, "--format", fmt])
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out) if fmt == "json" else out.out


def server(doc: dict[str, Any], sid: str) -> dict[str, Any]:
    return next(s for s in doc["servers"] if s["id"] == sid)


def provider_hour(store: LedgerStore, config: configmod.Config) -> int:
    """r1, r2, r3 down together 02:00Z-03:00Z on 10 Nov (provider); returns r1's outage seq."""
    rec = OutageRecorder(store, config)
    rec.start()
    rec.on_poll(poll("2026-11-10T01:00:00Z"))
    started = rec.on_poll(poll("2026-11-10T02:00:00Z", ("r1", "r2", "r3")))
    rec.on_poll(poll("2026-11-10T03:00:00Z"))
    return next(e.seq for e in started if e.kind == "outage_start" and e.server == "r1")


def test_cli_a_window_added_after_the_fact_keeps_the_credit(
    store: LedgerStore, config: configmod.Config, config_path: Path, url: str,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    seq = provider_hour(store, config)
    credited = server(report(capsys, config_path, url), "r1")
    assert (credited["seconds_by_class"]["provider"], credited["credit_fen"]) == (3600, 200)
    # An hour after the outage, a window covering it is added with a notice "three days ago".
    cli_clock(monkeypatch, "2026-11-10T04:00:00Z")
    assert main_maintenance_add([
        "--start", "2026-11-10T01:00:00Z", "--end", "2026-11-10T05:00:00Z", "--kind", "planned",
        "--servers", "r1", "--notified-at", "2026-11-07T01:00:00Z", "--reason", "after the fact",
        "--db", url]) == 0
    err = capsys.readouterr().err
    s = server(report(capsys, config_path, url), "r1")
    assert (s["seconds_by_class"]["provider"], s["seconds_by_class"]["maintenance"],
            s["credit_fen"]) == (3600, 0, 200)
    assert "after the window started: it excuses nothing" in err
    # The report shows the claim beside the ledger time.
    (w,) = s["windows"]
    assert (w["notified_at"], w["recorded_at"], w["recorded_after_start"]) == (
        "2026-11-07T09:00:00+08:00", "2026-11-10T12:00:00+08:00", True)
    table = report(capsys, config_path, url, "table")
    assert ("notified_at 2026-11-07T09:00:00+08:00 (claimed), recorded in the ledger "
            "2026-11-10T12:00:00+08:00; recorded 3h after its start: excuses nothing") in table
    rows = list(csv.DictReader(io.StringIO(report(capsys, config_path, url, "csv"))))
    (wrow,) = [r for r in rows if r["section"] == "window"]
    assert (wrow["server"], wrow["claimed_at"], wrow["recorded_at"]) == (
        "r1", "2026-11-07T09:00:00+08:00", "2026-11-10T12:00:00+08:00")

    # Excusing past time is an operator's reclassification, with a reason, shown as such.
    cli_clock(monkeypatch, "2026-11-10T04:10:00Z")
    assert main_ledger_reclassify([str(seq), "--class", "excluded", "--reason",
                                   "fibre cut by road works", "--by", "noc", "--db", url]) == 0
    capsys.readouterr()
    s = server(report(capsys, config_path, url), "r1")
    assert (s["seconds_by_class"]["excluded"], s["credit_fen"]) == (3600, 0)
    (o,) = s["outages"]
    assert [(r["class"], r["by"], r["reason"], r["recorded_at"]) for r in o["reclassified"]] == [
        ("excluded", "noc", "fibre cut by road works", "2026-11-10T12:10:00+08:00")]
    assert ("reclassified to excluded (force_majeure) by noc, ledger seq "
            in report(capsys, config_path, url, "table"))
    assert main_ledger_verify(["--db", url]) == 0


def test_cli_a_backdated_notice_counts_from_the_ledger_time(
    store: LedgerStore, config: configmod.Config, config_path: Path, url: str,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Two colo cut-overs of c1 (48 h notice makes one excluded): on the 27th, recorded 72 h
    # ahead; on the 25th, recorded 13 h ahead but claiming a notice 72 h ahead.
    cli_clock(monkeypatch, "2026-11-24T01:00:00Z")
    assert main_maintenance_add([
        "--start", "2026-11-27T01:00:00Z", "--end", "2026-11-27T02:00:00Z", "--kind", "cutover",
        "--servers", "c1", "--notified-at", "2026-11-24T01:00:00Z", "--db", url]) == 0
    cli_clock(monkeypatch, "2026-11-24T12:00:00Z")
    assert main_maintenance_add([
        "--start", "2026-11-25T01:00:00Z", "--end", "2026-11-25T02:00:00Z", "--kind", "cutover",
        "--servers", "c1", "--notified-at", "2026-11-22T01:00:00Z", "--db", url]) == 0
    out = capsys.readouterr()
    rec = OutageRecorder(store, config)
    rec.start()
    for day in ("25", "27"):
        rec.on_poll(poll(f"2026-11-{day}T01:00:00Z"))
        (e,) = rec.on_poll(poll(f"2026-11-{day}T01:10:00Z", ("c1",)))
        rec.on_poll(poll(f"2026-11-{day}T01:40:00Z"))
        store.reclassify(e.seq, "maintenance", "cut-over", Z(f"2026-11-{day}T02:00:00Z"),
                         cause="cutover")
    s = server(report(capsys, config_path, url), "c1")
    # 25th: 1800 s provider (ceil(2 × 1800 / 3600) = 1 h); 27th: 1800 s excluded.
    assert (s["seconds_by_class"]["provider"], s["seconds_by_class"]["excluded"],
            s["extension_hours"]) == (1800, 1800, "1")
    # The command says what will count, and warns about the claim.
    assert "notice 72h" in out.out and "notice 13h" in out.out
    assert "the notice counts from the ledger time, 13h before the start" in out.err
    late = next(w for w in s["windows"] if w["start"].startswith("2026-11-25"))
    assert (late["notice_s"], late["claimed_notice_s"], late["notice_counted_from"]) == (
        13 * 3600, 72 * 3600, late["recorded_at"])


def test_api_backdating_the_entry_time_gains_nothing(
    store: LedgerStore, config: configmod.Config, config_path: Path, url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    provider_hour(store, config)
    # Through the Python API someone stamps the window "2026-11-08": but it is appended after
    # the outage's entries (03:00Z on the 10th), so that is its ledger time at the earliest.
    store.add_maintenance(kind="planned", start=Z("2026-11-10T01:00:00Z"),
                          end=Z("2026-11-10T05:00:00Z"), notified_at=Z("2026-11-08T00:00:00Z"),
                          servers=["r1"], at=Z("2026-11-08T00:00:00Z"))
    assert server(report(capsys, config_path, url), "r1")["credit_fen"] == 200
    (w,) = store.maintenance_windows()
    assert w.declared_at == Z("2026-11-10T03:00:00Z")


def test_api_backdated_cancellation_after_the_start_is_not_honoured(
    store: LedgerStore, config: configmod.Config, config_path: Path, url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A window declared two days ahead excuses r1's hour; a cancellation appended after the
    # outage but stamped the day before cannot withdraw time the window already covered.
    w = store.add_maintenance(kind="planned", start=Z("2026-11-10T01:00:00Z"),
                              end=Z("2026-11-10T05:00:00Z"),
                              notified_at=Z("2026-11-08T00:00:00Z"), servers=["r1"],
                              at=Z("2026-11-08T00:00:00Z"))
    provider_hour(store, config)
    store.cancel_maintenance(w.seq, Z("2026-11-09T00:00:00Z"), by="noc", reason="back-dated")
    assert [v.seq for v in store.maintenance_windows()] == [w.seq]
    s = server(report(capsys, config_path, url), "r1")
    assert (s["seconds_by_class"]["maintenance"], s["credit_fen"]) == (3600, 0)


def test_cli_backdated_repair_and_incident_report_count_from_the_ledger_time(
    store: LedgerStore, config: configmod.Config, config_path: Path, url: str,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    db = ["--db", url]
    # R13: detected 02:00Z on the 5th, reported (it says) 18 h later, recorded 30 h later.
    cli_clock(monkeypatch, "2026-11-05T02:00:00Z")
    assert main_ledger_incident(["add", "--summary", "DDoS from r2", "--detected-at",
                                 "2026-11-05T02:00:00Z", *db]) == 0
    inc = int(capsys.readouterr().out.split(":")[0].split()[1])
    cli_clock(monkeypatch, "2026-11-06T08:00:00Z")
    assert main_ledger_incident(["report", str(inc), "--at", "2026-11-05T20:00:00Z", *db]) == 0
    # R19 (colo: repaired within 24 h): c1 down from 00:00Z on the 13th and still down; a
    # repair claimed at 20:00Z is recorded 30 h after the start.
    rec = OutageRecorder(store, config)
    rec.start()
    rec.on_poll(poll("2026-11-12T23:59:00Z"))
    (start,) = [e.seq for e in rec.on_poll(poll("2026-11-13T00:00:00Z", ("c1",)))
                if e.kind == "outage_start"]
    store.reclassify(start, "provider", "fibre cut", Z("2026-11-13T00:30:00Z"))
    capsys.readouterr()
    cli_clock(monkeypatch, "2026-11-14T06:00:00Z")
    assert main_ledger_resolve([str(start), "--at", "2026-11-13T20:00:00Z", *db]) == 0
    said = capsys.readouterr().out
    assert main_report_deadlines(["--config", str(config_path), *db, "--as-of",
                                  "2026-11-20T00:00:00Z", "--format", "json"]) == 0
    rows = {r["subject"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert [rows[k]["status"] for k in (f"I{inc}", f"#{start}")] == ["breached", "breached"]
    assert [(rows[k]["status"], rows[k]["claimed_at"], rows[k]["done_at"])
            for k in (f"I{inc}", f"#{start}")] == [
        ("breached", "2026-11-05T20:00:00+00:00", "2026-11-06T08:00:00+00:00"),
        ("breached", "2026-11-13T20:00:00+00:00", "2026-11-14T06:00:00+00:00")]
    assert "resolve at 2026-11-13T20:00:00+00:00 (recorded 2026-11-14T06:00:00+00:00)" in said
    (o,) = server(report(capsys, config_path, url), "c1")["outages"]
    assert o["repair"]["resolve"] == {"claimed": "2026-11-13T20:00:00+00:00",
                                      "recorded": "2026-11-14T06:00:00+00:00",
                                      "counted": "2026-11-14T06:00:00+00:00"}


# ---------------------------------------------------------------------------------------------
# A ledger written before this change


def test_a_ledger_written_before_this_change_loads_verifies_and_counts_ledger_time(
    store: LedgerStore, config_path: Path, url: str, capsys: pytest.CaptureFixture[str],
) -> None:
    """The fixture's rows were written by the code before issue 11 (scenario in its "made_by"):
    r1's provider hour, then a window covering it added an hour later with a notice claimed
    three days earlier, and an R19/R13 trail. Its entries carry no ledger time beyond the
    chain's own `at`, which is what counts."""
    doc = json.loads((FIXTURES / "before_claimed_times.json").read_text())
    with store.engine.begin() as conn:
        for r in doc["rows"]:
            conn.execute(text(
                "INSERT INTO ledger_entries (seq, at, kind, server, ref_seq, payload, prev_hash, "
                "hash) VALUES (:seq, :at, :kind, :server, :ref_seq, :payload, :prev_hash, :hash)"),
                r)
        conn.execute(text("UPDATE ledger_head SET seq = :seq, hash = :hash WHERE id = 1"),
                     doc["head"])
    assert main_ledger_verify(["--db", url, "--expect-head",
                               f"{doc['head']['seq']}:{doc['head']['hash']}"]) == 0
    capsys.readouterr()
    s = server(report(capsys, config_path, url), "r1")
    assert (s["seconds_by_class"]["provider"], s["credit_fen"]) == (3600, 200)
    assert doc["credit_fen_before"] == 0  # what the old code reported for the same rows
    (w,) = store.maintenance_windows()
    late = next(r for r in doc["rows"] if r["kind"] == "maintenance")
    assert w.declared_at == Z(late["at"]) and w.window.declared_after_start
    assert s["windows"][0]["recorded_at"] == "2026-11-10T12:00:00+08:00"
    # The R13 report was claimed within 24 h but recorded days later: breached.
    assert main_report_deadlines(["--config", str(config_path), "--db", url, "--as-of",
                                  "2026-11-20T00:00:00Z", "--format", "json"]) == 0
    (r13,) = [r for r in map(json.loads, capsys.readouterr().out.splitlines())
              if r["rule"] == "R13"]
    assert (r13["status"], r13["claimed_at"]) == ("breached", "2026-11-05T20:00:00+00:00")
