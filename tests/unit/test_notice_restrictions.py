"""Restriction notices (issue 12): a throttle or a service block is told as what it is, never as a
suspension, with the rate or the service, the rule and figures, and the operator to contact."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rackwarden.agent import config as configmod
from rackwarden.agent.notices import CustomerNotices, restriction_fields
from rackwarden.drivers.notify import Notice, render_email, subject_for
from rackwarden.drivers.notify.notice import format_rate, render_text
from rackwarden.drivers.switch.restrictions import SERVICE_PORTS
from rackwarden.policies import ladder as L

from tests.unit.test_notify_render import SENDER, body_of, reparse

AT = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)  # 20:00 in Asia/Shanghai
# Words that would tell the customer the server is off the network: a restriction is not that.
SUSPENSION_WORDS = re.compile(r"暂停|停机|断网|suspend", re.IGNORECASE)


def make_notice(**changes: Any) -> Notice:
    base = Notice(
        key="overage:srv-1:3:restriction",
        server="srv-1",
        customer="厦门某某科技有限公司",
        to=("ops@customer.example",),
        reason="overage",
        stage="restriction",
        rule="R1/R2 — 服务器租用协议 annex 1 §3: cap 10 Mbit/s",
        summary="5-minute average above the cap for 15 minutes",
        figures=(("5-min average rate", 23.4, "Mbit/s"), ("cap", 10, "Mbit/s")),
        at=AT,
        until=None,
        timezone="Asia/Shanghai",
        evidence_refs=("poll:8812",),
        operator_contact="noc@idc.example, +86 592 000 0000",
        restriction="throttle",
        rate_bps=10_000_000,
    )
    return replace(base, **changes)


def block(**changes: Any) -> Notice:
    return make_notice(**{"reason": "abuse", "restriction": "block", "rate_bps": None,
                          "service": "smtp", "service_ports": (25, 465, 587), **changes})


def rendered(notice: Notice) -> tuple[str, str]:
    msg = reparse(render_email(notice, SENDER))
    return str(msg["Subject"]), body_of(msg)


# --- the rate, exactly ---------------------------------------------------------------------------

@pytest.mark.parametrize("bps, text", [
    (10_000_000, "10 Mbit/s"), (9_500_000, "9.5 Mbit/s"), (512_000, "0.512 Mbit/s"),
    (9_999_999, "9.999999 Mbit/s"), (1, "0.000001 Mbit/s"), (1_000_000_000, "1000 Mbit/s"),
    # Past 2**53 a float cannot hold the rate; the integer text still can.
    (100_000_000_000_000_001, "100000000000.000001 Mbit/s"),
])
def test_format_rate(bps: int, text: str) -> None:
    assert format_rate(bps) == text


@given(st.integers(min_value=1, max_value=10**15))
def test_format_rate_is_the_exact_rate(bps: int) -> None:
    text = format_rate(bps)
    number = text.removesuffix(" Mbit/s")
    assert Decimal(number) * 1_000_000 == bps
    assert not ("." in number and number.endswith(("0", ".")))  # no trailing zeros after a point


# --- the texts -----------------------------------------------------------------------------------

@pytest.mark.parametrize("language", ["zh", "en"])
def test_throttle_says_limited_to_the_rate_and_never_suspended(language: Literal["zh", "en"]) -> None:
    subject, body = rendered(make_notice(rate_bps=9_500_000, language=language))
    assert not SUSPENSION_WORDS.search(subject + body)
    if language == "zh":
        assert subject == "[RackWarden] 服务器 srv-1 带宽限速通知"
        assert "依据合同将该服务器的带宽限制为 9.5 Mbit/s（合同约定的带宽上限）" in body
        assert "服务器照常运行，网络连接保持正常" in body
        assert "限速速率：9.5 Mbit/s" in body
        assert "限速至：您的流量回落至合同上限以下为止" in body
        for needle in ("依据条款：R1/R2", "说明：5-minute average", "  - cap：10 Mbit/s",
                       "联系运营方：noc@idc.example", "  - poll:8812", "时间：2024-05-01 20:00:00+08:00"):
            assert needle in body, needle
    else:
        assert subject == "[RackWarden] Server srv-1: Bandwidth limit notice"
        assert "has been limited to 9.5 Mbit/s, the cap in your contract" in body
        assert "The server keeps running and its network stays up" in body
        assert "Rate limit: 9.5 Mbit/s" in body
        assert "Limited until: your traffic is back under the cap" in body
        for needle in ("Contract rule: R1/R2", "Details: 5-minute average", "  - cap: 10 Mbit/s",
                       "Operator contact: noc@idc.example", "  - poll:8812"):
            assert needle in body, needle


def test_throttle_until_is_in_the_contract_zone() -> None:
    _, body = rendered(make_notice(until=AT + timedelta(hours=24)))
    assert "限速至：2024-05-02 20:00:00+08:00" in body
    assert "Limited until: 2024-05-02 20:00:00+08:00" in body
    assert "12:00:00" not in body


@pytest.mark.parametrize("language", ["zh", "en"])
def test_block_says_mail_blocked_other_traffic_passes(language: Literal["zh", "en"]) -> None:
    subject, body = rendered(block(language=language))
    assert not SUSPENSION_WORDS.search(subject + body)
    if language == "zh":
        assert subject == "[RackWarden] 服务器 srv-1 邮件端口封禁通知"
        assert "封禁该服务器的对外邮件发送（出方向 TCP 25/465/587 端口）" in body
        assert "其他网络流量均正常通行" in body
        assert "回复本邮件申请复查" in body
        assert "封禁至：您处理完毕并申请复查、经确认后解除（或由运营方解除）" in body
        assert "原因：合同禁止的使用行为" in body and "联系运营方：noc@idc.example" in body
    else:
        assert subject == "[RackWarden] Server srv-1: Outbound mail block notice"
        assert "outbound mail (TCP 25/465/587) from your server srv-1 has been blocked" in body
        assert "all other traffic passes as before" in body
        assert "ask for a re-check" in body
        assert "Blocked until: you fix the cause and ask us for a re-check" in body
        assert "Reason: use forbidden by the contract" in body and "Operator contact: noc@" in body


@pytest.mark.parametrize("language", ["zh", "en"])
@pytest.mark.parametrize("kind", ["throttle", "block"])
def test_lifted_says_restored_and_never_suspended(language: Literal["zh", "en"], kind: str) -> None:
    notice = make_notice(stage="lifted", language=language, rate_bps=None) if kind == "throttle" \
        else block(stage="lifted", language=language)
    subject, body = rendered(notice)
    assert not SUSPENSION_WORDS.search(subject + body)
    expected = {
        ("throttle", "zh"): ("带宽限速解除通知", "带宽限速已于 2024-05-01 20:00:00+08:00 解除"),
        ("throttle", "en"): ("Bandwidth limit lifted notice", "full rate restored"),
        ("block", "zh"): ("邮件端口解封通知", "对外邮件发送（出方向 TCP 25/465/587 端口）封禁已于"),
        ("block", "en"): ("Outbound mail unblocked notice",
                          "outbound mail (TCP 25/465/587) from your server srv-1 is unblocked"),
    }[(kind, language)]
    assert expected[0] in subject and expected[1] in body
    assert ("联系运营方" if language == "zh" else "Operator contact") in body


def test_both_languages_in_one_notice() -> None:
    subject, body = rendered(make_notice())
    assert subject == "[RackWarden] 服务器 srv-1 带宽限速通知 / Bandwidth limit notice"
    assert body.index("带宽限制为 10 Mbit/s") < body.index("limited to 10 Mbit/s")
    assert not SUSPENSION_WORDS.search(body)


@pytest.mark.parametrize("notice, zh, en", [
    (make_notice(stage="warning", until=AT + timedelta(minutes=10)),
     "否则我们将依据合同将该服务器的带宽限制为 10 Mbit/s", "its bandwidth will be limited to 10 Mbit/s"),
    (block(stage="warning", until=None),
     "否则我们将依据合同封禁该服务器的对外邮件发送（出方向 TCP 25/465/587 端口）",
     "its outbound mail (TCP 25/465/587) will be blocked; all other traffic passes"),
])
def test_a_warning_announces_the_restriction_not_a_suspension(notice: Notice, zh: str, en: str) -> None:
    subject, body = rendered(notice)
    assert zh in body and en in body
    assert not SUSPENSION_WORDS.search(body)
    assert subject_for(notice).endswith("网络使用警告通知 / Network usage warning")


def test_a_warning_without_a_restriction_still_announces_a_suspension() -> None:
    body = render_text(make_notice(stage="warning", restriction=None, rate_bps=None))
    assert "否则我们将依据合同暂停该服务器的网络连接" in body
    assert "otherwise its network access will be suspended as the contract provides" in body
    assert "宽限期截止：无（可随时暂停）" in body


# --- validation ----------------------------------------------------------------------------------

@pytest.mark.parametrize("notice_changes, problem", [
    ({"restriction": None, "rate_bps": None}, "a restriction notice must name its restriction"),
    ({"stage": "lifted", "restriction": None, "rate_bps": None},
     "a lifted notice must name its restriction"),
    ({"rate_bps": None}, "a throttle needs rate_bps"),
    ({"rate_bps": 0}, "rate_bps must be a positive integer bit/s, got 0"),
    ({"rate_bps": -10}, "rate_bps must be a positive integer bit/s, got -10"),
    ({"rate_bps": 9.5e6}, "rate_bps must be a positive integer bit/s, got 9500000.0"),
    ({"rate_bps": True}, "rate_bps must be a positive integer bit/s, got True"),
    ({"service": "smtp"}, "service and service_ports are for a block"),
    ({"restriction": "shape"}, "restriction 'shape' not one of ('throttle', 'block')"),
    ({"stage": "suspension"}, "a suspension notice cannot name a restriction"),
    ({"stage": "restored", "restriction": None}, "rate_bps, service and service_ports need a restriction"),
])
def test_invalid_throttle_notices_are_refused(notice_changes: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)) as err:
        make_notice(**notice_changes)
    assert "notice 'overage:srv-1:3:restriction' for 'srv-1'" in str(err.value)


@pytest.mark.parametrize("notice_changes, problem", [
    ({"service": None}, "a block needs service"),
    ({"service": ""}, "a block needs service"),
    ({"service": "smtp\r\nBcc: x@y"}, "a block needs service"),
    ({"rate_bps": 10_000_000}, "rate_bps is for a throttle, not a block"),
    ({"service_ports": (25, 0)}, "service port 0 is not a TCP port"),
    ({"service_ports": (70000,)}, "service port 70000 is not a TCP port"),
])
def test_invalid_block_notices_are_refused(notice_changes: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        block(**notice_changes)


def test_valid_restriction_notices_are_accepted() -> None:
    assert make_notice(stage="lifted", rate_bps=None).rate_bps is None  # the full rate is back
    assert block(service_ports=[25, 465]).service_ports == (25, 465)  # a list becomes a tuple
    assert block(service="ftp", service_ports=()).service == "ftp"
    assert "ftp" in render_text(block(service="ftp", service_ports=(21,), language="en"))


# --- from the ladder's Notify --------------------------------------------------------------------

def _notify(stage: L.Stage, restriction: L.Restriction | None) -> L.Notify:
    ev = L.Evidence(rule="R1 cap 10 Mbit/s over 300 s", summary="5-min average 23.4 Mbit/s",
                    figures=(("rate_bps", 23_400_000), ("cap_bps", 10_000_000)), refs=("poll:1",))
    return L.Notify("s1", "overage", stage, ev, f"s1:overage:1:{stage}", None, restriction)


def _customer_notices(tmp_path: Path) -> tuple[CustomerNotices, Any]:
    cfg = configmod.loads(
        "version: 1\nagent: {state_dir: " + str(tmp_path) + "}\nnotify: {language: both}\n"
        "templates:\n  rental: {cap_mbps: 10, credit: rental, timezone: Asia/Shanghai}\n"
        "switches:\n  sw1: {address: 127.0.0.1, vendor: cisco_ios, snmp: {version: '2c', community: x},"
        " ports: ['Gi0/1']}\n"
        "servers:\n  - {id: s1, customer: c1, switch: sw1, port: Gi0/1, ips: [192.0.2.1], template: rental,"
        " monthly_fee_fen: 1, contacts: [a@c1.example]}\n", "t.yaml")
    return CustomerNotices(cfg, None), cfg.servers[0]  # type: ignore[arg-type]


def test_ladder_notify_becomes_a_throttle_notice(tmp_path: Path) -> None:
    notices, server = _customer_notices(tmp_path)
    intent = _notify("restriction", L.Restriction("throttle", rate_bps=10_000_000))
    n = notices.notice(server, intent, L.Rung("s1", "overage"), AT)
    assert (n.stage, n.restriction, n.rate_bps, n.service) == ("restriction", "throttle", 10_000_000, None)
    # The rate the switch enforces (rounded down by the vendor) is what the customer is told.
    rounded = notices.notice(server, intent, L.Rung("s1", "overage"), AT, enforced_rate_bps=9_984_000)
    assert rounded.rate_bps == 9_984_000 and "9.984 Mbit/s" in render_text(rounded)
    assert not SUSPENSION_WORDS.search(render_text(rounded))


def test_ladder_notify_becomes_a_block_notice_with_the_drivers_ports(tmp_path: Path) -> None:
    notices, server = _customer_notices(tmp_path)
    n = notices.notice(server, _notify("restriction", L.Restriction("block", service="smtp")),
                       L.Rung("s1", "abuse"), AT)
    assert (n.restriction, n.service, n.service_ports) == ("block", "smtp", SERVICE_PORTS["smtp"])
    lifted = notices.notice(server, _notify("lifted", L.Restriction("block", service="smtp")),
                            L.Rung("s1", "abuse"), AT)
    assert lifted.stage == "lifted" and "unblocked" in render_text(lifted)


def test_a_shut_notice_carries_no_restriction(tmp_path: Path) -> None:
    notices, server = _customer_notices(tmp_path)
    # A suspension that follows a failed throttle is a plain suspension notice.
    for intent in (_notify("suspension", L.Restriction("throttle", rate_bps=10_000_000)),
                   _notify("suspension", None)):
        assert restriction_fields(intent) == {}
        n = notices.notice(server, intent, L.Rung("s1", "overage"), AT)
        assert n.restriction is None and "暂停" in render_text(n)
    assert restriction_fields(_notify("warning", None)) == {}


def test_a_lifted_throttle_quotes_only_the_rate_the_switch_enforced(tmp_path: Path) -> None:
    notices, server = _customer_notices(tmp_path)
    intent = _notify("lifted", L.Restriction("throttle", rate_bps=10_000_000))
    n = notices.notice(server, intent, L.Rung("s1", "overage"), AT)
    assert (n.restriction, n.rate_bps) == ("throttle", None)  # the ladder's cap was only asked for
    assert "full rate restored" in render_text(n)
    known = notices.notice(server, intent, L.Rung("s1", "overage"), AT, enforced_rate_bps=9_984_000)
    assert "Previous rate limit: 9.984 Mbit/s" in render_text(known)


def test_a_warning_names_the_restriction_that_follows(tmp_path: Path) -> None:
    notices, server = _customer_notices(tmp_path)
    n = notices.notice(server, _notify("warning", L.Restriction("block", service="smtp")),
                       L.Rung("s1", "abuse"), AT)
    assert (n.stage, n.restriction, n.service_ports) == ("warning", "block", (25, 465, 587))
    assert not SUSPENSION_WORDS.search(render_text(n))
