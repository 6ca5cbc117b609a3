"""R2's billing record: `rackwarden report overage` over one month computed by hand.

The month is 2026-11 in Asia/Shanghai (+08:00, no DST). Every 5-minute bucket of it holds
ordinary traffic (1 MB each way), except the buckets listed in MONTH below; the expected
invoice lines are worked out beside them from the rule in policies/overage.py:
bytes above the cap = max(0, floor(bytes − cap_bps × 300 / 8)).
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from rackwarden.agent import cli
from rackwarden.agent.ledger import LedgerStore
from rackwarden.agent.usage import UsageStore, usage_5m
from rackwarden.policies.cap import CapSchedule
from rackwarden.policies.overage import above_cap, cap_pieces, judge_bucket, server_overage

CST = datetime.fromisoformat("2026-11-01T00:00:00+08:00").tzinfo
MB10, MB20 = 10_000_000, 20_000_000  # bit/s
ALLOW10 = MB10 * 300 // 8  # 375_000_000 bytes a 10 Mbit/s cap allows per 5-minute bucket
ALLOW20 = MB20 * 300 // 8  # 750_000_000
FILL = 1_000_000  # ordinary traffic per bucket, each way: far under any cap


def local(text: str) -> datetime:
    """A bucket start written in the contract's local time."""
    return datetime.fromisoformat(text).replace(tzinfo=CST)


# (server, local bucket start) -> (covered_ms, out_octets, in_octets); None = no row at all.
MONTH: dict[tuple[str, str], tuple[int, int, int] | None] = {
    # srv-a (rental: cap 10 Mbit/s, direction out; 20 Mbit/s from 2026-11-16 00:00 local)
    ("srv-a", "2026-11-03T10:00"): (300_000, ALLOW10 + 1_000, FILL),  # over by 1_000
    ("srv-a", "2026-11-03T10:05"): (300_000, ALLOW10 + 2_000, FILL),  # over by 2_000
    ("srv-a", "2026-11-03T10:10"): (300_000, ALLOW10 + 3_000, ALLOW10 * 2),  # 3_000 (in ignored)
    ("srv-a", "2026-11-03T10:15"): (300_000, ALLOW10, FILL),  # exactly at the cap: not over
    ("srv-a", "2026-11-03T10:20"): (300_000, ALLOW10 + 1, FILL),  # one byte over
    ("srv-a", "2026-11-15T23:55"): (300_000, 400_000_000, FILL),  # cap 10: 25_000_000 over
    ("srv-a", "2026-11-16T00:00"): (300_000, 760_000_000, FILL),  # cap 20: 10_000_000 over
    ("srv-a", "2026-11-16T00:05"): (300_000, 700_000_000, FILL),  # cap 20: under
    ("srv-a", "2026-11-20T12:00"): None,  # missing
    ("srv-a", "2026-11-20T12:05"): None,  # missing
    ("srv-a", "2026-11-20T12:10"): (120_000, 900_000_000, FILL),  # partly measured: a gap
    ("srv-a", "2026-11-25T08:00"): (300_000, 800_000_000, FILL),  # throttled: 50_000_000 not billed
    ("srv-a", "2026-11-25T08:05"): (300_000, 800_000_000, FILL),  # throttled: 50_000_000 not billed
    ("srv-a", "2026-11-25T08:10"): (300_000, 800_000_000, FILL),  # throttle lifted 08:10: billed
    # srv-b (colo: cap 10 Mbit/s, direction max)
    ("srv-b", "2026-11-10T03:00"): (300_000, 1_000, ALLOW10 + 5_000_000),  # max=in: 5_000_000
    ("srv-b", "2026-11-29T12:00"): (300_000, FILL, 500_000_000),  # throttled from 11-28 on
}
THROTTLES = [  # (server, start, end or None: still throttled)
    ("srv-a", local("2026-11-25T08:00"), local("2026-11-25T08:10")),
    ("srv-b", local("2026-11-28T00:00"), None),
]
# The invoice lines, by hand.
EXPECTED = {
    "srv-a": {
        "over_cap_seconds": 3 * 300 + 300 + 300 + 300 + 300,  # 10:00-10:15, 10:20, 23:55, 00:00, 08:10
        "bytes_above_cap": 1_000 + 2_000 + 3_000 + 1 + 25_000_000 + 10_000_000 + 50_000_000,
        "caps_applied_bps": [MB10, MB20],
        "throttled_seconds": 600,
        "throttled_bytes_above_cap_not_billed": 2 * (800_000_000 - ALLOW20),
        "gap_seconds": 900,
    },
    "srv-b": {
        "over_cap_seconds": 300,
        "bytes_above_cap": 5_000_000,
        "caps_applied_bps": [MB10],
        "throttled_seconds": 3 * 86_400,  # 11-28 00:00 .. 12-01 00:00 local
        "throttled_bytes_above_cap_not_billed": 500_000_000 - ALLOW10,
        "gap_seconds": 0,
    },
    "srv-c": {  # never metered: the whole month is a gap, nothing billed
        "over_cap_seconds": 0, "bytes_above_cap": 0, "caps_applied_bps": [],
        "throttled_seconds": 0, "throttled_bytes_above_cap_not_billed": 0,
        "gap_seconds": 30 * 86_400,
    },
}
# srv-a's periods, by hand: (kind, local start, local end, caps, bytes above the cap).
PERIODS_A = [
    ("over", "2026-11-03T10:00", "2026-11-03T10:15", [MB10], 6_000),
    ("over", "2026-11-03T10:20", "2026-11-03T10:25", [MB10], 1),
    ("over", "2026-11-15T23:55", "2026-11-16T00:00", [MB10], 25_000_000),
    ("over", "2026-11-16T00:00", "2026-11-16T00:05", [MB20], 10_000_000),  # split at the change
    ("gap", "2026-11-20T12:00", "2026-11-20T12:15", [MB20], 0),
    ("throttled", "2026-11-25T08:00", "2026-11-25T08:10", [MB20], 100_000_000),
    ("over", "2026-11-25T08:10", "2026-11-25T08:15", [MB20], 50_000_000),
]

CONFIG = """version: 1
agent:
  state_dir: {state}
  timezone: Asia/Shanghai
templates:
  rental: {{cap_mbps: 10, window_s: 300, direction: out, credit: rental}}
  colo: {{cap_mbps: 10, window_s: 300, direction: max, credit: colo}}
switches:
  sw1:
    address: 127.0.0.1
    vendor: cisco_ios
    snmp: {{version: "2c", community: "replay-only"}}
    ports: ["Gi0/[1-3]"]
servers:
  - {{id: srv-a, customer: c1, switch: sw1, port: Gi0/1, ips: [198.19.1.11], template: rental,
      monthly_fee_fen: 80000, cap_changes: [{{cap_mbps: 20, effective: "2026-11-16"}}]}}
  - {{id: srv-b, customer: c2, switch: sw1, port: Gi0/2, ips: [198.19.1.12], template: colo,
      monthly_fee_fen: 60000}}
  - {{id: srv-c, customer: c2, switch: sw1, port: Gi0/3, ips: [198.19.1.13], template: rental,
      monthly_fee_fen: 60000}}
"""
AS_OF = "2026-12-05T00:00:00+00:00"


def write_usage(db: Path) -> None:
    """Every bucket of the month for srv-a and srv-b as MONTH says (srv-c: none)."""
    store = UsageStore(f"sqlite:///{db}")
    store.start()
    start, end = local("2026-11-01T00:00"), local("2026-12-01T00:00")
    rows = []
    for server in ("srv-a", "srv-b"):
        at = start
        while at < end:
            key = (server, at.strftime("%Y-%m-%dT%H:%M"))
            value = MONTH.get(key, (300_000, FILL, FILL))
            if value is not None:
                c, o, i = value
                rows.append({"server": server, "bucket_start": int(at.timestamp()),
                             "covered_ms": c, "out_octets": o, "in_octets": i})
            at += timedelta(minutes=5)
    with store.engine.begin() as conn:
        conn.execute(usage_5m.insert(), rows)
    store.close()


def write_ledger(db: Path) -> LedgerStore:
    ledger = LedgerStore(f"sqlite:///{db}")
    ledger.start(datetime(2026, 10, 1, tzinfo=UTC))
    for server, start, end in THROTTLES:
        e = ledger.append("restriction_start", start, {
            "server": server, "restriction": "throttle", "rate_bps": MB10,
            "reason": "overage", "key": f"{server}:throttle:{start.isoformat()}"}, server=server)
        if end is not None:
            ledger.append("restriction_end", end, {"server": server, "restriction": "throttle"},
                          server=server, ref_seq=e.seq)
    return ledger


@pytest.fixture
def setup(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    state.mkdir()
    write_usage(state / "usage.sqlite")
    write_ledger(state / "ledger.sqlite").close()
    path = tmp_path / "rackwarden.yaml"
    path.write_text(CONFIG.format(state=state))
    return path


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return rc, out, err


def report(config: Path, capsys: pytest.CaptureFixture[str], fmt: str, *extra: str) -> str:
    rc, out, err = run(["report", "overage", "--month", "2026-11", "--config", str(config),
                        "--as-of", AS_OF, "--format", fmt, *extra], capsys)
    assert rc == 0, err
    return out


# ---------------------------------------------------------------------------------------------
# The month by hand, through main() with a real usage.sqlite and ledger


def test_json_invoice_lines_match_the_month_by_hand(setup: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = json.loads(report(setup, capsys, "json"))
    assert doc["ledger"]["verified"] is True
    got = {s["id"]: s["invoice"] for s in doc["servers"]}
    assert got == EXPECTED


def test_json_periods_of_srv_a_by_hand(setup: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = json.loads(report(setup, capsys, "json"))
    (a,) = (s for s in doc["servers"] if s["id"] == "srv-a")
    got = [(p["kind"], p["start"], p["end"], p["caps_bps"], p["bytes_above_cap"]) for p in a["periods"]]
    assert got == [(k, local(s).isoformat(), local(e).isoformat(), c, b) for k, s, e, c, b in PERIODS_A]
    # Only over-cap periods are billed; a gap or a throttle never is.
    assert {p["kind"]: p["billed"] for p in a["periods"]} == {"over": True, "gap": False, "throttled": False}
    # Times are the contract's: the month starts at local midnight.
    assert a["start"] == "2026-11-01T00:00:00+08:00" and a["end"] == "2026-12-01T00:00:00+08:00"


def test_csv_invoice_rows_carry_the_same_integers(setup: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = list(csv.DictReader(io.StringIO(report(setup, capsys, "csv"))))
    invoice = {r["server"]: r for r in rows if r["section"] == "invoice"}
    for server, exp in EXPECTED.items():
        r = invoice[server]
        assert int(r["seconds"]) == exp["over_cap_seconds"]
        assert int(r["bytes_above_cap"]) == exp["bytes_above_cap"]
        assert int(r["throttled_s"]) == exp["throttled_seconds"]
        assert int(r["gap_s"]) == exp["gap_seconds"]
    periods = [r for r in rows if r["section"] == "period" and r["server"] == "srv-a"]
    assert [(r["kind"], int(r["bytes_above_cap"]), r["billed"]) for r in periods] == [
        (k, b, "yes" if k == "over" else "no") for k, _, _, _, b in PERIODS_A]
    # The period rows of each server add up to its invoice row: nothing billed twice or lost.
    assert sum(int(r["bytes_above_cap"]) for r in periods if r["billed"] == "yes") == \
        EXPECTED["srv-a"]["bytes_above_cap"]


def test_table_shows_the_invoice_line_and_throttled_time(setup: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = report(setup, capsys, "table")
    (line,) = (x.split() for x in out.splitlines() if x.strip().startswith("srv-a ") and "c1" in x)
    # server customer dir seconds duration bytes caps throttled gaps
    assert line[3:6] == [str(EXPECTED["srv-a"]["over_cap_seconds"]), "35m",
                         str(EXPECTED["srv-a"]["bytes_above_cap"])]
    assert line[6] == "10000000->20000000" and line[7:9] == ["10m", "15m"]
    throttled = [x for x in out.splitlines() if " throttled " in x and "srv-a" in x]
    assert len(throttled) == 1 and "throttled, not billed" in throttled[0]
    assert "2026-11-25T08:00:00+08:00 .. 2026-11-25T08:10:00+08:00" in throttled[0]
    gap = next(x for x in out.splitlines() if " gap " in x and "srv-a" in x)
    assert "no usage recorded" in gap and "partly measured: 120000 ms" in gap


def test_customer_filter(setup: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = json.loads(report(setup, capsys, "json", "--customer", "c2"))
    assert [s["id"] for s in doc["servers"]] == ["srv-b", "srv-c"]


def test_a_month_still_running_judges_only_the_buckets_that_ended(
        setup: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # As of 2026-11-16 00:07 local the 00:00 bucket has ended and the 00:05 one has not.
    rc, out, err = run(["report", "overage", "--month", "2026-11", "--config", str(setup),
                        "--as-of", "2026-11-16T00:07:00+08:00", "--format", "json"], capsys)
    assert rc == 0, err
    (a,) = (s for s in json.loads(out)["servers"] if s["id"] == "srv-a")
    assert a["end"] == "2026-11-16T00:05:00+08:00"
    assert a["invoice"]["bytes_above_cap"] == 6_000 + 1 + 25_000_000 + 10_000_000
    assert any("month not over" in n for n in a["notes"])


# ---------------------------------------------------------------------------------------------
# Refusals: exit codes and one line, no traceback


def test_a_tampered_ledger_is_refused(setup: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import sqlite3

    with sqlite3.connect(tmp_path / "state" / "ledger.sqlite") as conn:
        # Moving a throttle's end would move what is billed: what a tamperer does first is
        # remove the append-only trigger.
        conn.execute("DROP TRIGGER ledger_entries_no_update")
        conn.execute("UPDATE ledger_entries SET at = '2026-11-25T00:05:00+00:00' WHERE seq = 2")
    rc, out, err = run(["report", "overage", "--month", "2026-11", "--config", str(setup),
                        "--as-of", AS_OF], capsys)
    assert rc == 1 and out == ""
    assert "ledger BROKEN at seq 2" in err


def test_a_missing_usage_database_is_a_usage_error_and_not_created(
        setup: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "state" / "usage.sqlite"
    db.unlink()
    rc, out, err = run(["report", "overage", "--month", "2026-11", "--config", str(setup)], capsys)
    assert rc == 2 and out == ""
    assert f"{db}: no usage database" in err and err.count("\n") == 1
    assert not db.exists()


@pytest.mark.parametrize("argv, expected", [
    (["--month", "2026-13"], "--month: period must be YYYY-MM"),
    (["--month", "2026-11", "--as-of", "2026-11-30T00:00:00"], "has no UTC offset"),
    (["--month", "2026-11", "--customer", "nobody"], "no server of customer 'nobody'"),
    (["--month", "2026-11", "--format", "xml"], "invalid choice: 'xml'"),
])
def test_bad_arguments_are_usage_errors(setup: Path, capsys: pytest.CaptureFixture[str],
                                        argv: list[str], expected: str) -> None:
    rc, out, err = run(["report", "overage", "--config", str(setup), *argv], capsys)
    assert rc == 2 and out == "" and expected in err, err


def test_a_bad_config_is_named_by_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "rackwarden.yaml"
    path.write_text(CONFIG.format(state=tmp_path).replace("direction: max", "direction: sideways"))
    rc, out, err = run(["report", "overage", "--month", "2026-11", "--config", str(path)], capsys)
    assert rc == 2 and out == ""
    assert f"{path}:7" in err, err


# ---------------------------------------------------------------------------------------------
# The arithmetic alone (policies/overage.py)


def test_a_fraction_of_a_byte_is_never_billed() -> None:
    # 10_000_001 bit/s × 300 s / 8 = 375_000_037.5 bytes allowed.
    pieces = [(10_000_001, 300_000)]
    assert above_cap(375_000_037, pieces) == 0
    assert above_cap(375_000_038, pieces) == 0  # 0.5 byte above: rounded down, not over
    assert above_cap(375_000_039, pieces) == 1  # 1.5 bytes above: 1


def test_a_cap_change_inside_a_bucket_counts_each_cap_for_its_share() -> None:
    # 10 Mbit/s until 00:02:30, 20 Mbit/s after: 150 s each.
    slot = datetime(2026, 11, 15, 16, 0, tzinfo=UTC)
    sched = CapSchedule(MB10, ((slot + timedelta(seconds=150), MB20),))
    assert cap_pieces(sched, slot, slot + timedelta(seconds=300)) == [(MB10, 150_000), (MB20, 150_000)]
    allowance = MB10 * 150 // 8 + MB20 * 150 // 8  # 187_500_000 + 375_000_000
    from rackwarden.policies.overage import Bucket
    v = judge_bucket(slot, Bucket(slot, 300_000, allowance + 7, 0), sched, "out", ())
    assert (v.state, v.above_bytes, v.caps_bps) == ("over", 7, (MB10, MB20))
    # Such a bucket is a period of its own: it carries two caps.
    ov = server_overage("s", [Bucket(slot, 300_000, allowance + 7, 0),
                              Bucket(slot + timedelta(seconds=300), 300_000, ALLOW20 + 1, 0)],
                        sched, "out", slot, slot + timedelta(seconds=600), slot + timedelta(days=1))
    assert [(p.caps_bps, p.above_bytes) for p in ov.periods] == [((MB10, MB20), 7), ((MB20,), 1)]


@pytest.mark.parametrize("direction, expected", [
    ("out", 100), ("in", 0), ("max", 100), ("sum", ALLOW10),  # (ALLOW10 + 100) + (ALLOW10 - 100) - ALLOW10
])
def test_direction_is_the_templates(direction: str, expected: int) -> None:
    from rackwarden.policies.overage import Bucket
    slot = datetime(2026, 11, 1, tzinfo=UTC)
    b = Bucket(slot, 300_000, ALLOW10 + 100, ALLOW10 - 100)
    v = judge_bucket(slot, b, CapSchedule(MB10), direction, ())  # type: ignore[arg-type]
    assert v.above_bytes == expected


def test_the_month_loop_agrees_with_judging_each_bucket_alone() -> None:
    # server_overage skips the plain under-cap buckets without judging them one by one; around
    # a fractional allowance (10_000_001 bit/s: 375_000_037.5 B), at changes inside a bucket
    # (up, then down: 675 MB is under 20 Mbit/s' 750 MB, over the mixed allowance) and under a
    # throttle it must bill exactly what judge_bucket says bucket by bucket.
    from rackwarden.policies.overage import Bucket
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    sched = CapSchedule(10_000_001, ((t0 + timedelta(seconds=20 * 300 + 150), MB20),
                                     (t0 + timedelta(seconds=25 * 300 + 100), 10_000_001)))
    throttles = [(t0 + timedelta(seconds=10 * 300 + 1), t0 + timedelta(seconds=12 * 300))]
    buckets = [Bucket(t0 + timedelta(seconds=300 * k), 300_000,
                      375_000_036 + k % 4 + (0 if k < 20 else 300_000_000), FILL) for k in range(30)]
    ov = server_overage("s", buckets, sched, "out", t0, t0 + timedelta(seconds=9000),
                        t0 + timedelta(days=1), throttles)
    alone = [judge_bucket(b.start, b, sched, "out", throttles) for b in buckets]
    assert ov.above_bytes == sum(v.above_bytes for v in alone if v.state == "over")
    assert ov.over_seconds == 300 * sum(1 for v in alone if v.state == "over")
    assert ov.throttled_seconds == 300 * sum(1 for v in alone if v.state == "throttled")
    assert ov.measured_buckets == 30 and ov.above_bytes > 0 and ov.throttled_seconds == 600
