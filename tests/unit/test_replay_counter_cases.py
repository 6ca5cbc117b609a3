"""Every counter case of issue 2 replayed through the daemon's metering policy, one row each."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from rackwarden.agent import config as configmod
from rackwarden.agent.replay import replay

FIX = Path(__file__).parent.parent / "fixtures" / "replay"
T0 = datetime(2026, 11, 22, 10, 0, tzinfo=timezone(timedelta(hours=8)))
MBIT = 1_000_000 // 8  # octets per second at 1 Mbit/s


def poll(i: int, octets_a: int, *, dt: int = 60, uptime: int | None = None, bits: int = 64,
         if_index: int = 1, disc: int | None = None, speed: int = 100, in_b: int = 0,
         out_b: int = 0, out_a: int = 0, drop_a: bool = False, error: str | None = None,
         t: int | None = None) -> dict[str, Any]:
    """Poll number i of sw1; srv-a's port counters are given, srv-b's are steady."""
    secs = t if t is not None else i * dt
    ports: dict[str, Any] = {
        "Gi0/1": {"if_index": if_index, "in_octets": octets_a, "out_octets": out_a,
                  "counter_bits": bits, "oper": "up", "admin": "up", "high_speed_mbps": speed,
                  "discontinuity_ticks": disc},
        "Gi0/2": {"if_index": 2, "in_octets": in_b, "out_octets": out_b, "counter_bits": 64,
                  "oper": "up", "admin": "up", "high_speed_mbps": 100},
    }
    if drop_a:
        del ports["Gi0/1"]
    doc: dict[str, Any] = {
        "switch": "sw1",
        "at": (T0 + timedelta(seconds=secs)).isoformat(),
        "sys_uptime": uptime if uptime is not None else 1_000_000 + secs * 100,
        "ports": {} if error else ports,
    }
    if error:
        doc["error"] = error
    return doc


def run(polls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    cfg = configmod.load(FIX / "lab.yaml")
    out, err = io.StringIO(), io.StringIO()
    bad = replay(cfg, io.StringIO("\n".join(json.dumps(p) for p in polls)), out, err)
    assert bad == 0, err.getvalue()
    return [json.loads(line) for line in out.getvalue().splitlines()]


def srv(rows: list[dict[str, Any]], server: str = "srv-a") -> list[dict[str, Any]]:
    return [r for r in rows if r["server"] == server]


def steady(n: int, mbps: float, start: int = 0, **kw: Any) -> list[dict[str, Any]]:
    rate = int(mbps * MBIT)
    return [poll(i, start + i * 60 * rate, **kw) for i in range(n)]


def test_output_has_one_line_per_configured_port_per_poll_with_the_documented_keys() -> None:
    rows = run(steady(3, 5))
    assert len(rows) == 6
    assert set(rows[0]) == {"switch", "port", "server", "at", "in_bps", "out_bps", "status", "cap_state"}
    assert [r["status"] for r in srv(rows)] == ["first", "ok", "ok"]
    assert srv(rows)[0]["in_bps"] is None
    assert srv(rows)[1]["in_bps"] == 5_000_000


def test_15_mbps_for_the_window_is_sustained_and_5_mbps_stays_ok() -> None:
    rows = srv(run(steady(7, 15)))
    assert [r["status"] for r in rows] == ["first"] + ["ok"] * 6
    assert [r["cap_state"] for r in rows] == ["ok", "over", "over", "over", "over", "sustained", "sustained"]
    assert all(r["in_bps"] == 15_000_000 for r in rows[1:])
    assert [r["cap_state"] for r in srv(run(steady(7, 5)))] == ["ok"] * 7


def test_exactly_at_the_cap_is_not_over() -> None:
    # Over means strictly greater than the cap.
    assert {r["cap_state"] for r in srv(run(steady(7, 10)))} == {"ok"}


# (name, polls, expected statuses of srv-a, expected in_bps of srv-a)
R = 12 * MBIT * 60  # octets in one 60 s interval at 12 Mbit/s
CASES: list[tuple[str, list[dict[str, Any]], list[str], list[int | None]]] = [
    ("counter64_decrease_is_suspect_until_the_next_reading_counts_on_from_it",
     # Issue 11: a Counter64 that went down without sysUpTime, snmpEngineBoots or
     # ifCounterDiscontinuityTime saying so is no baseline until a second reading confirms it.
     [poll(0, 10 * R), poll(1, 11 * R), poll(2, 5_000), poll(3, 5_000 + R), poll(4, 5_000 + 2 * R)],
     ["first", "ok", "suspect", "reset", "ok"], [None, 12_000_000, None, None, 12_000_000]),
    ("counter32_wrap_is_a_rate",
     [poll(0, 2**32 - R // 2, bits=32), poll(1, R - R // 2, bits=32)],
     ["first", "ok"], [None, 12_000_000]),
    ("counter32_on_a_fast_port_could_wrap_twice_so_is_a_gap",
     # 10 Gbit/s wraps Counter32 in 3.4 s: a 60 s delta is ambiguous.
     [poll(0, 1000, bits=32, speed=10_000), poll(1, 2000, bits=32, speed=10_000)],
     ["first", "gap"], [None, None]),
    ("sysuptime_497_day_wrap_is_not_a_reboot",
     [poll(0, 0, uptime=2**32 - 3000), poll(1, R, uptime=3000)],
     ["first", "ok"], [None, 12_000_000]),
    ("sysuptime_backwards_is_a_reboot_even_when_counters_grew",
     [poll(0, R, uptime=90_000_000), poll(1, 2 * R, uptime=5000)],
     ["first", "reset"], [None, None]),
    ("sysuptime_advancing_less_than_wall_time_is_a_reboot",
     # 60 s passed but the agent has been up for only 20 s more than before: it restarted.
     [poll(0, R, uptime=100), poll(1, 2 * R, uptime=2100)],
     ["first", "reset"], [None, None]),
    ("ifname_moving_to_another_ifindex_is_a_discontinuity",
     [poll(0, 0, if_index=1), poll(1, R, if_index=7), poll(2, 2 * R, if_index=7)],
     ["first", "reset", "ok"], [None, None, 12_000_000]),
    ("ifcounterdiscontinuitytime_change_is_a_discontinuity",
     [poll(0, 0, disc=0), poll(1, R, disc=4500), poll(2, 2 * R, disc=4500)],
     ["first", "reset", "ok"], [None, None, 12_000_000]),
    ("missing_port_is_missing_never_zero_and_bytes_are_kept",
     [poll(0, 0), poll(1, R, drop_a=True), poll(2, 2 * R)],
     ["first", "missing", "ok"], [None, None, 12_000_000]),
    ("timeout_is_missing",
     [poll(0, 0), poll(1, R, error="timeout"), poll(2, 2 * R)],
     ["first", "missing", "ok"], [None, None, 12_000_000]),
    ("rate_above_port_speed_is_a_glitch_never_clamped",
     [poll(0, 0), poll(1, 101 * MBIT * 60), poll(2, 101 * MBIT * 60 + R)],
     ["first", "glitch", "ok"], [None, None, 12_000_000]),
    ("interval_longer_than_max_gap_is_a_gap",
     [poll(0, 0), poll(1, R * 6, t=360), poll(2, R * 7, t=420)],
     ["first", "gap", "ok"], [None, None, 12_000_000]),
    ("delta_t_is_measured_not_nominal",
     # A late reply: 90 s apart, so 12 Mbit/s worth of 90 s is 12 Mbit/s, not 18.
     [poll(0, 0, t=0), poll(1, 12 * MBIT * 90, t=90)],
     ["first", "ok"], [None, 12_000_000]),
]


@pytest.mark.parametrize("name,polls,statuses,rates", CASES, ids=[c[0] for c in CASES])
def test_counter_case(name: str, polls: list[dict[str, Any]], statuses: list[str],
                      rates: list[int | None]) -> None:
    rows = srv(run(polls))
    assert [r["status"] for r in rows] == statuses
    assert [r["in_bps"] for r in rows] == rates
    assert all(r["out_bps"] is None for r, s in zip(rows, statuses, strict=True) if s != "ok")


def _jittered(mbps: float, late_s: list[int]) -> list[dict[str, Any]]:
    """60 s polls of a steady port; reply i reached the poller late_s[i] seconds late.

    The agent read the counters (and sysUpTime) on time; only the NOC host's timestamp moved.
    """
    rate = int(mbps * MBIT)
    return [poll(i, i * 60 * rate, t=i * 60 + late, uptime=1_000_000 + i * 60 * 100)
            for i, late in enumerate(late_s)]


def test_a_reply_handled_late_by_the_poller_does_not_change_the_rate() -> None:
    # 9.8 Mbit/s under a 10 Mbit/s cap. By the poller's clock the interval ending in the late
    # reply is 64 s and the next one 56 s: 10.5 Mbit/s, over the cap. The agent's clock is right.
    rows = srv(run(_jittered(9.8, [0, 0, 4, 0, 0])))
    assert [r["status"] for r in rows] == ["first", "ok", "ok", "ok", "ok"]
    assert [r["in_bps"] for r in rows[1:]] == [9_800_000] * 4
    assert {r["cap_state"] for r in rows} == {"ok"}


def test_an_agent_clock_that_disagrees_beyond_the_jitter_tolerance_is_not_used() -> None:
    # sysUpTime advanced 20 s per 60 s poll: not a restart (it went forwards), but no clock to
    # measure with either, so the poller's interval is used.
    rate = int(5 * MBIT)
    polls = [poll(i, i * 60 * rate, uptime=1_000_000 + i * 20 * 100) for i in range(3)]
    rows = srv(run(polls))
    # advancing 20 s in 60 s is an agent restart by the uptime rule: a reset, no rate
    assert [r["status"] for r in rows] == ["first", "reset", "reset"]
    polls = [poll(i, i * 60 * rate, uptime=1_000_000 + i * 75 * 100) for i in range(3)]
    rows = srv(run(polls))
    assert [r["status"] for r in rows] == ["first", "ok", "ok"]
    assert [r["in_bps"] for r in rows[1:]] == [5_000_000] * 2  # octets over the 60 s, not 75 s


def test_an_unknown_sample_breaks_the_sustained_run() -> None:
    rate = 15 * MBIT * 60
    polls = [poll(i, i * rate) for i in range(4)]
    polls.append(poll(4, 4 * rate, error="timeout"))
    polls += [poll(i, i * rate) for i in range(5, 12)]
    rows = srv(run(polls))
    states = [r["cap_state"] for r in rows]
    # Three over intervals, broken by the timeout. The next sample spans the unanswered poll:
    # billed, but its 120 s are an average, not measured time (issue 11), so the run restarts
    # after it and sustained needs 300 s of measured intervals from there.
    assert states[:5] == ["ok", "over", "over", "over", "ok"]
    assert rows[5]["status"] == "ok" and states[5] == "ok"
    assert states[6:] == ["over", "over", "over", "over", "sustained", "sustained"]


def test_mostly_inbound_overage_is_reported_not_actionable() -> None:
    # srv-b judges max(in, out): a 40 Mbit/s flood *towards* it makes it sustained but a victim.
    rate = 40 * MBIT * 60
    polls = [poll(i, 0, out_b=i * rate, in_b=i * MBIT) for i in range(7)]
    cfg = configmod.load(FIX / "lab.yaml")
    out, err = io.StringIO(), io.StringIO()
    replay(cfg, io.StringIO("\n".join(json.dumps(p) for p in polls)), out, err, explain=True)
    rows = [json.loads(x) for x in out.getvalue().splitlines() if '"srv-b"' in x]
    assert rows[-1]["cap_state"] == "sustained"
    assert rows[-1]["actionable"] is False
    assert "victim" in rows[-1]["reason"]


def test_bad_lines_are_named_and_skipped_and_the_rest_is_replayed() -> None:
    cfg = configmod.load(FIX / "lab.yaml")
    lines = [json.dumps(poll(0, 0)), "{not json", json.dumps({**poll(1, 1), "switch": "nosuch"}),
             json.dumps(poll(1, 60 * MBIT))]
    out, err = io.StringIO(), io.StringIO()
    assert replay(cfg, io.StringIO("\n".join(lines)), out, err) == 2
    assert "<input>:2: skipped: not JSON" in err.getvalue()
    assert "<input>:3: skipped: switch 'nosuch'" in err.getvalue()
    assert [json.loads(x)["status"] for x in out.getvalue().splitlines() if "srv-a" in x] == ["first", "ok"]


def test_replay_cli_end_to_end(tmp_path: Path) -> None:
    f = tmp_path / "polls.jsonl"
    f.write_text("\n".join(json.dumps(p) for p in steady(7, 15)) + "\n")
    res = subprocess.run(
        [sys.executable, "-m", "rackwarden.agent.cli", "replay", "snmp", "--input", str(f),
         "--config", str(FIX / "lab.yaml")], capture_output=True, text=True, check=True)
    rows = [json.loads(x) for x in res.stdout.splitlines()]
    assert srv(rows)[-1] == {"switch": "sw1", "port": "Gi0/1", "server": "srv-a",
                             "at": (T0 + timedelta(seconds=360)).isoformat(),
                             "in_bps": 15_000_000, "out_bps": 0, "status": "ok",
                             "cap_state": "sustained"}
