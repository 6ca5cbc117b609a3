"""R3: a dated cap change is announced once, with the date it applies and a 15-day objection period."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rackwarden.agent import config as configmod
from rackwarden.agent.notices import CustomerNotices
from rackwarden.drivers.notify.notice import render_text
from rackwarden.policies.cap import OBJECTION_PERIOD_S, CapSchedule, cap_announcements

from tests.unit.test_port_state import Agent

T = datetime(2026, 11, 10, 2, 0, tzinfo=UTC)
MBIT = 1_000_000


def test_only_changes_still_in_their_objection_period_are_announced() -> None:
    sched = CapSchedule(10 * MBIT, ((T - timedelta(days=40), 30 * MBIT), (T - timedelta(days=3), 20 * MBIT),
                                    (T + timedelta(days=20), 20 * MBIT), (T + timedelta(days=30), 50 * MBIT)))
    anns = cap_announcements("s1", sched, T)
    # 40 days ago: history. 3 days ago: late, still objectable. +20 d: the same cap (no change).
    assert [(a.effective_at - T, a.from_bps, a.to_bps, a.short_notice) for a in anns] == [
        (timedelta(days=-3), 30 * MBIT, 20 * MBIT, True),
        (timedelta(days=30), 20 * MBIT, 50 * MBIT, False),
    ]
    assert all(a.objection_until == T + timedelta(seconds=OBJECTION_PERIOD_S) for a in anns)
    assert len({a.key for a in anns}) == 2 and cap_announcements("s1", sched, T)[0].key == anns[0].key


def test_the_notice_says_the_new_cap_its_date_and_the_objection_deadline(tmp_path: Path) -> None:
    cfg = configmod.loads(
        "version: 1\nagent: {state_dir: " + str(tmp_path) + "}\nnotify: {language: both}\n"
        "templates:\n  rental: {cap_mbps: 10, credit: rental, timezone: Asia/Shanghai}\n"
        "switches:\n  sw1: {address: 127.0.0.1, vendor: cisco_ios, snmp: {version: '2c', community: x},"
        " ports: ['Gi0/1']}\n"
        "servers:\n  - {id: s1, customer: c1, switch: sw1, port: Gi0/1, ips: [192.0.2.1], template: rental,"
        " monthly_fee_fen: 1, contacts: [a@c1.example],"
        " cap_changes: [{cap_mbps: 20, effective: '2026-11-30T00:00:00+08:00'}]}\n", "t.yaml")
    server = cfg.servers[0]
    (ann,) = cap_announcements("s1", cfg.cap_schedule(server), T)
    text = render_text(CustomerNotices(cfg, None).cap_notice(server, ann, T))  # type: ignore[arg-type]
    assert "10 → 20 Mbit/s from 2026-11-30 00:00:00+08:00" in text
    assert "异议期截止：2026-11-25 10:00:00+08:00" in text
    assert "Objection period ends: 2026-11-25 10:00:00+08:00" in text


def test_an_announcement_is_recorded_in_the_ledger_once(tmp_path: Path) -> None:
    agent = Agent(tmp_path)
    server = agent.cfg.servers[0]
    s1 = dataclasses.replace(server, cap_changes=((agent.clock.at() + timedelta(days=20), 20.0),))
    agent.enf.config = dataclasses.replace(agent.cfg, servers=(s1, *agent.cfg.servers[1:]))
    assert asyncio.run(agent.enf.announce_cap_changes()) == 1
    assert asyncio.run(agent.enf.announce_cap_changes()) == 0  # once per change, ever
    (entry,) = agent.ledger.entries(kinds=("cap_change",))
    assert entry.server == "s1" and entry.payload["to_bps"] == 20 * MBIT and entry.payload["delivered"] is False
    assert entry.payload["detail"] == "no notifier configured"
    assert agent.store.notice(entry.payload["key"]) == (False, "no notifier configured")
    assert agent.ledger.verify().ok
    agent.close()
