"""R3: `rackwarden report cap-changes [--pending]` lists the cap changes the enforcer announced,
and which are still open to objection at --as-of; `report overage` warns of them.

The ledger entries are written by the enforcer itself (Enforcer.announce_cap_changes), so the
report reads exactly what the daemon records.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from rackwarden.agent import cli
from rackwarden.agent import config as configmod
from rackwarden.agent.usage import UsageStore

from tests.unit.test_enforcer import CONFIG, SERVERS
from tests.unit.test_port_state import Agent

T1 = datetime(2026, 11, 22, 2, 0, tzinfo=UTC)  # the Agent's clock: s1's change is announced
T2 = T1 + timedelta(days=10)  # s2's change is announced
UNTIL1, UNTIL2 = T1 + timedelta(days=15), T2 + timedelta(days=15)  # 2026-12-07, 2026-12-17 02:00Z


def config_text(state: Path, s2_change: bool) -> str:
    servers = SERVERS.replace(
        "port: Gi0/1, ips: [192.0.2.1], template: rental, monthly_fee_fen: 80000}",
        "port: Gi0/1, ips: [192.0.2.1], template: rental, monthly_fee_fen: 80000,"
        " cap_changes: [{cap_mbps: 20, effective: '2026-12-01T00:00:00+08:00'}]}")
    if s2_change:
        servers = servers.replace(
            "port: Gi0/2, ips: [192.0.2.2], template: rental, monthly_fee_fen: 80000}",
            "port: Gi0/2, ips: [192.0.2.2], template: rental, monthly_fee_fen: 80000,"
            " cap_changes: [{cap_mbps: 30, effective: '2026-11-25T00:00:00+08:00'}]}")
    assert servers != SERVERS
    return CONFIG.format(state=state, mode="enforce", k=2) + servers


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """s1's change announced at T1, s2's (added to the config later) at T2, by the enforcer."""
    agent = Agent(tmp_path)
    path = tmp_path / "rackwarden.yaml"
    path.write_text(config_text(tmp_path, s2_change=False))
    agent.enf.config = configmod.load(str(path))
    assert asyncio.run(agent.enf.announce_cap_changes()) == 1
    agent.clock.advance((T2 - T1).total_seconds())
    path.write_text(config_text(tmp_path, s2_change=True))
    agent.enf.config = configmod.load(str(path))
    assert asyncio.run(agent.enf.announce_cap_changes()) == 1
    agent.close()
    usage = UsageStore(f"sqlite:///{tmp_path / 'usage.sqlite'}")
    usage.start()
    usage.close()
    return path


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return rc, out, err


def changes(config: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> list[dict[str, object]]:
    rc, out, err = run(["report", "cap-changes", "--config", str(config), "--format", "json", *extra],
                       capsys)
    assert rc == 0, err
    return [json.loads(x) for x in out.splitlines()]


def test_pending_are_those_whose_objection_period_has_not_ended(config: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    # At 2026-12-10 s1's period (to 12-07) is over and s2's (to 12-17) is not.
    got = changes(config, capsys, "--as-of", "2026-12-10T00:00:00+00:00", "--pending")
    assert [(c["server"], c["to_bps"], c["objection_until"]) for c in got] == [
        ("s2", 30_000_000, UNTIL2.isoformat())]
    # Without --pending both, each with its status.
    got = changes(config, capsys, "--as-of", "2026-12-10T00:00:00+00:00")
    assert [(c["server"], c["pending"]) for c in got] == [("s1", False), ("s2", True)]
    # The end of the period itself is no longer pending.
    got = changes(config, capsys, "--as-of", UNTIL1.isoformat(), "--pending")
    assert [c["server"] for c in got] == ["s2"]
    got = changes(config, capsys, "--as-of", (UNTIL1 - timedelta(seconds=1)).isoformat(), "--pending")
    assert [c["server"] for c in got] == ["s1", "s2"]


def test_each_change_says_what_was_announced(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s1, s2 = changes(config, capsys, "--as-of", "2026-12-05T00:00:00+00:00")
    assert (s1["from_bps"], s1["to_bps"], s1["effective_at"], s1["announced_at"]) == (
        10_000_000, 20_000_000, "2026-11-30T16:00:00+00:00", T1.isoformat())
    # s2's change took effect before it was announced: short notice, objectable all the same.
    assert (s2["short_notice"], s2["effective_at"], s2["announced_at"]) == (
        True, "2026-11-24T16:00:00+00:00", T2.isoformat())
    assert s1["in_config"] is True and s1["delivered"] is False and s1["customer"] == "c1"


def test_customer_filter_and_table(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert [c["server"] for c in changes(config, capsys, "--customer", "c2",
                                         "--as-of", "2026-12-05T00:00:00+00:00")] == ["s2"]
    rc, out, err = run(["report", "cap-changes", "--config", str(config), "--pending",
                        "--as-of", "2026-12-10T00:00:00+00:00"], capsys)
    assert rc == 0, err
    lines = out.splitlines()
    assert len(lines) == 3 and lines[1].split()[:5] == ["2", "s2", "c2", "10000000", "30000000"]
    assert " pending " in lines[1] and "short notice" in lines[1]
    assert lines[-1] == "1 cap change(s), 1 open to objection (as of 2026-12-10T00:00:00+00:00)"


def test_a_change_no_longer_in_the_config_is_flagged(config: Path, capsys: pytest.CaptureFixture[str],
                                                     tmp_path: Path) -> None:
    config.write_text(config_text(tmp_path, s2_change=False))
    s2 = changes(config, capsys, "--as-of", "2026-12-05T00:00:00+00:00")[1]
    assert s2["server"] == "s2" and s2["in_config"] is False and s2["pending"] is True


def test_the_overage_report_warns_of_a_pending_change_in_its_month(
        config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(["report", "overage", "--month", "2026-11", "--config", str(config),
                        "--as-of", "2026-12-10T00:00:00+00:00", "--format", "json"], capsys)
    assert rc == 0, err
    notes = {s["id"]: s["notes"] for s in json.loads(out)["servers"]}
    # s2's change applies in November and is still objectable; s1's applies in December.
    assert len(notes["s2"]) == 1 and "open to objection until 2026-12-17T02:00:00+00:00" in notes["s2"][0]
    assert notes["s1"] == []


def test_a_tampered_ledger_is_refused(config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with sqlite3.connect(tmp_path / "ledger.sqlite") as conn:
        conn.execute("DROP TRIGGER ledger_entries_no_update")
        conn.execute("UPDATE ledger_entries SET payload = replace(payload, '2026-12-07', '2026-12-27')"
                     " WHERE kind = 'cap_change'")
    rc, out, err = run(["report", "cap-changes", "--config", str(config)], capsys)
    assert rc == 1 and out == "" and "ledger BROKEN" in err


def test_without_a_config_it_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(["report", "cap-changes", "--db", "sqlite:////nonexistent/x.sqlite"], capsys)
    assert rc == 2 and out == "" and "--config PATH is required" in err
