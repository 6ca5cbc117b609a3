"""Issue 13, the Server page's month-end 95th percentile projection and its detections with their
evidence pcaps (operators only, path-traversal safe), on the world of tests/unit/test_web_console.py.
"""

from __future__ import annotations

import math
import random
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from rackwarden.agent.web.console import (
    PROJECTION_MIN_BUCKETS,
    evidence_dir,
    evidence_files,
    project_p95,
    safe_evidence_file,
)
from rackwarden.policies.billing import percentile_95
from rackwarden.policies.sla import contract_timezone, month_bounds

from tests.unit.test_web_console import START, World, run

PCAP = b"\xd4\xc3\xb2\xa1" + bytes(20) + b"frame bytes"
NAME = "20261116T021500.000000Z-flood-udp.pcap"

# --- the projection: a pure function ------------------------------------------------------------


def test_the_projection_is_the_95th_so_far_and_matches_a_month_that_repeats_the_mix() -> None:
    rng = random.Random(13)
    sample = [rng.uniform(0, 20e6) for _ in range(20)]
    pr = project_p95(sample, month_buckets=100, min_buckets=10)
    assert pr.so_far == percentile_95(sample) and pr.projected == pr.so_far
    assert (pr.buckets, pr.month_buckets, pr.discard) == (20, 100, 100 - math.ceil(0.95 * 100))
    # The stated assumption, checked: a month that repeats the mix so far ends at the projection.
    assert percentile_95(sample * 5) == pr.projected


def test_the_floor_holds_whatever_the_rest_of_the_month_carries() -> None:
    rng = random.Random(7)
    month = 200
    for _ in range(200):
        n = rng.randrange(1, month)
        so_far = [rng.uniform(0, 1e8) for _ in range(n)]
        pr = project_p95(so_far, month, min_buckets=1)
        assert pr.discard == month - math.ceil(0.95 * month)
        if n <= pr.discard:
            assert pr.floor is None  # every bucket so far could still be dropped
            continue
        assert pr.floor is not None and pr.projected is not None and pr.floor <= pr.projected
        for rest in ([0.0] * (month - n), [rng.uniform(0, 1e8) for _ in range(month - n)]):
            final = percentile_95(so_far + rest)
            assert final is not None and final >= pr.floor
        # An idle rest of the month ends exactly at the floor: it is the bound, not a guess below it.
        assert percentile_95(so_far + [0.0] * (month - n)) == pr.floor


def test_no_projection_before_a_day_of_buckets() -> None:
    day = [5e6] * (PROJECTION_MIN_BUCKETS - 1)
    early = project_p95(day, 8640)
    assert early.so_far == 5e6 and early.projected is None
    assert project_p95([*day, 5e6], 8640).projected == 5e6
    empty = project_p95([], 8640)
    assert (empty.so_far, empty.floor, empty.projected, empty.buckets) == (None, None, None, 0)
    with pytest.raises(ValueError, match="month_buckets"):
        project_p95([1.0], 0)


def test_the_server_page_shows_the_projection_and_states_its_method(tmp_path: Path) -> None:
    start, end = month_bounds(START.astimezone(contract_timezone("Asia/Shanghai")).strftime("%Y-%m"),
                              contract_timezone("Asia/Shanghai"))
    total = int((end - start).total_seconds()) // 300
    discard = total - math.ceil(0.95 * total)

    async def body(w: World) -> None:
        await w.login("noc")
        status, html = await w.page("/server/srv-1?lang=en")
        assert status == 200
        so_far, p95 = re.search(r'id="p95-so-far">([^<]+)<', html), re.search(r'id="p95">([^<]+)<', html)
        assert so_far and p95 and so_far[1] == p95[1]  # the same 95th as the usage line above
        assert re.search(rf"\((\d+)/{total} 5-minute buckets\)", html)
        # 20 minutes of data: too early to project, and the page says why.
        assert re.search(rf'id="p95-projected">too early \(\d+/{PROJECTION_MIN_BUCKETS} buckets', html)
        method = re.search(r'id="p95-method">([^<]+)<', html)
        assert method and f"{total} 5-minute buckets, drops the top {discard}" in method[1]
        status, zh = await w.page("/server/srv-1?lang=zh-CN")
        assert status == 200 and "月末预测" in zh and f"去掉最高的 {discard} 个" in zh

    run(tmp_path, body)


# --- detections and their evidence --------------------------------------------------------------


def _plant(w: World) -> tuple[Path, Path]:
    """An evidence pcap for srv-1 as agent/abuse.py writes it, and the audit record citing it."""
    state = w.enforcer.config.agent.state_dir
    d = evidence_dir(state, "srv-1")
    d.mkdir(parents=True)
    pcap = d / NAME
    pcap.write_bytes(PCAP)
    w.enforcer.store.audit(
        at=datetime(2026, 11, 16, 2, 15, tzinfo=UTC), server="srv-1", reason="abuse", decision="notify_warning",
        mode="enforce", actor="daemon", rule="R5 flood/udp",
        inputs={"evidence": {"summary": "outbound UDP 90,000 pps to 203.0.113.9", "figures": {},
                             "refs": [str(pcap), "203.0.113.9"]}},
        before="idle", after="noticed", result="delivered")
    secret = state / "ledger-copy.pcap"  # outside the server's evidence directory
    secret.write_bytes(b"not evidence")
    return pcap, secret


def test_an_operator_sees_the_detection_and_downloads_its_pcap(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        _plant(w)
        await w.login("noc")
        status, html = await w.page("/server/srv-1?lang=en")
        assert status == 200 and "Detections and evidence" in html
        row = re.search(rf"<tr[^>]*>(?:(?!</tr>).)*{re.escape(NAME)}(?:(?!</tr>).)*</tr>", html, re.S)
        assert row, html
        assert "flood/udp" in row[0] and "R5 flood/udp" in row[0] and "90,000 pps" in row[0]
        assert "2026-11-16 10:15:00" in row[0]  # the detection's time, in the contract timezone
        r = await w.client.get(f"/server/srv-1/evidence/{NAME}")
        assert r.status == 200 and await r.read() == PCAP
        assert r.headers["Content-Type"] == "application/vnd.tcpdump.pcap"
        assert r.headers["Content-Disposition"] == f'attachment; filename="{NAME}"'
        _, other = await w.page("/server/srv-2?lang=en")
        assert NAME not in other and 'id="no-detections"' in other

    run(tmp_path, body)


def test_evidence_is_for_operators_only_and_no_path_leaves_the_servers_directory(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        pcap, secret = _plant(w)
        state = w.enforcer.config.agent.state_dir
        (evidence_dir(state, "srv-1") / "link.pcap").symlink_to(secret)
        evidence_dir(state, "srv-2").mkdir(parents=True)
        url = f"/server/srv-1/evidence/{NAME}"
        r = await w.client.get(url, allow_redirects=False)
        assert r.status == 303  # no session: to the login page, no bytes
        # srv-1's owner is a customer, not an operator: the same 404 as for anything else.
        assert await w.login("alice", customer=True) == 303
        r = await w.client.get(url, allow_redirects=False)
        assert r.status == 404 and PCAP not in await r.read()
        _, page = await w.page("/customer/server/srv-1?lang=en")
        assert NAME not in page
        assert await w.login("noc") == 303
        for bad in (f"/server/srv-2/evidence/{NAME}",  # another server's directory
                    "/server/srv-1/evidence/..%2Fledger-copy.pcap",
                    "/server/srv-1/evidence/..%2F..%2Fledger.sqlite",
                    "/server/srv-1/evidence/%2E%2E",
                    "/server/srv-1/evidence/link.pcap",  # a symlink out of the directory
                    "/server/srv-1/evidence/missing.pcap",
                    f"/server/srv-9/evidence/{NAME}"):
            r = await w.client.get(bad, allow_redirects=False)
            body_bytes = await r.read()
            assert r.status == 404, bad
            assert b"not evidence" not in body_bytes and b"SQLite" not in body_bytes, bad

    run(tmp_path, body)


def test_safe_evidence_file_takes_only_a_listed_plain_pcap(tmp_path: Path) -> None:
    d = evidence_dir(tmp_path, "srv/../1")
    assert d.parent == tmp_path / "evidence" and d.name == "srv_.._1"  # the server id cannot climb either
    d = evidence_dir(tmp_path, "srv-1")
    d.mkdir(parents=True)
    (d / NAME).write_bytes(PCAP)
    (d / "notes.txt").write_text("x")
    (tmp_path / "evidence" / "top.pcap").write_bytes(PCAP)
    (d / "up.pcap").symlink_to(tmp_path / "evidence" / "top.pcap")
    assert safe_evidence_file(tmp_path, "srv-1", NAME) == d / NAME
    for name in ("../top.pcap", "..", "", ".pcap", "notes.txt", "up.pcap", "/etc/passwd", f"./{NAME}",
                 f"{NAME}\0", "x" * 300 + ".pcap"):
        assert safe_evidence_file(tmp_path, "srv-1", name) is None, name
    files = evidence_files(tmp_path, "srv-1")
    assert [(f.name, f.detector, f.kind, f.size) for f in files] == [(NAME, "flood", "udp", len(PCAP))]
    assert files[0].detected_at == datetime(2026, 11, 16, 2, 15, tzinfo=UTC)
    assert evidence_files(tmp_path, "srv-none") == []
