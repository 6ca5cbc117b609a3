"""Notices and alert payloads render right: languages, zones, figures, headers, no secrets."""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import email.utils
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rackwarden.drivers.notify import (
    Notice,
    SmtpNotifier,
    alert_event,
    figures_from_metrics,
    message_id_for,
    postable_alert,
    render_email,
    rfc3339,
    subject_for,
)
from rackwarden.drivers.notify.notice import format_value

SENDER = "RackWarden 运维中心 <noc@idc.example>"
AT = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)  # 20:00 in Asia/Shanghai
PASSWORD = "smtp-pa55-9c1e"
CJK = re.compile(r"[\u4e00-\u9fff]")


class FakeSecret:
    """Stands in for agent.config.Secret: masks itself, reveals on request."""

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret(<test>)"


def make_notice(**changes: Any) -> Notice:
    base = Notice(
        key="overage:srv-1:3:suspension",
        server="srv-1",
        customer="厦门某某科技有限公司",
        to=("ops@customer.example", "boss@customer.example"),
        reason="overage",
        stage="suspension",
        rule="R1/R2 — 服务器租用协议 annex 1 §3, §2.1.1: cap 10 Mbit/s",
        summary="5-minute average above the cap for 15 minutes",
        figures=(("5-min average rate", 23.4, "Mbit/s"), ("cap", 10, "Mbit/s"),
                 ("over cap for", 900, "s")),
        at=AT,
        until=AT + timedelta(hours=1),
        timezone="Asia/Shanghai",
        evidence_refs=("/var/lib/rackwarden/pcap/srv-1-20240501T1200Z.pcap", "poll:8812"),
        operator_contact="noc@idc.example, +86 592 000 0000",
    )
    return replace(base, **changes)


def reparse(msg: EmailMessage) -> EmailMessage:
    parsed = email.parser.BytesParser(policy=email.policy.default).parsebytes(msg.as_bytes())
    assert isinstance(parsed, EmailMessage)
    return parsed


def body_of(msg: EmailMessage) -> str:
    content = msg.get_content()
    assert isinstance(content, str)
    return content


def test_both_languages_chinese_first() -> None:
    body = body_of(reparse(render_email(make_notice(), SENDER)))
    zh = body.index("依据合同，您的服务器 srv-1 的网络连接已于")
    en = body.index("the network access of your server srv-1 was suspended at")
    assert zh < en
    for needle in ("尊敬的客户 厦门某某科技有限公司", "原因：资源使用超出合同约定标准",
                   "Reason: use of resources above the contracted standard"):
        assert needle in body


def test_single_language_only() -> None:
    zh_body = body_of(reparse(render_email(make_notice(language="zh"), SENDER)))
    assert "网络连接已于" in zh_body and "network access" not in zh_body
    en_notice = make_notice(language="en", customer="Example Ltd", rule="R1/R2 rental annex 1 §3")
    en_msg = reparse(render_email(en_notice, SENDER))
    assert not CJK.search(body_of(en_msg)) and not CJK.search(str(en_msg["Subject"]))
    assert "was suspended at" in body_of(en_msg)


def test_times_in_contract_zone_with_offset() -> None:
    msg = reparse(render_email(make_notice(), SENDER))
    body = body_of(msg)
    assert "时间：2024-05-01 20:00:00+08:00" in body
    assert "Time: 2024-05-01 20:00:00+08:00" in body
    assert "暂停至：2024-05-01 21:00:00+08:00" in body
    assert "Suspended until: 2024-05-01 21:00:00+08:00" in body
    assert "12:00:00" not in body  # no UTC leaks into what the customer reads
    assert msg["Date"] == "Wed, 01 May 2024 20:00:00 +0800"
    assert email.utils.parsedate_to_datetime(str(msg["Date"])) == AT


def test_zone_follows_the_contract_including_dst() -> None:
    body = body_of(reparse(render_email(make_notice(timezone="Europe/Berlin", language="en"),
                                        SENDER)))
    assert "Time: 2024-05-01 14:00:00+02:00" in body
    winter = make_notice(timezone="Europe/Berlin", language="en",
                         at=datetime(2024, 1, 10, 12, 0, tzinfo=UTC), until=None)
    assert "Time: 2024-01-10 13:00:00+01:00" in body_of(reparse(render_email(winter, SENDER)))


def test_rule_figures_evidence_contact_and_key_present() -> None:
    body = body_of(reparse(render_email(make_notice(), SENDER)))
    for needle in ("R1/R2 — 服务器租用协议 annex 1 §3, §2.1.1: cap 10 Mbit/s",
                   "  - 5-min average rate：23.4 Mbit/s", "  - 5-min average rate: 23.4 Mbit/s",
                   "  - cap: 10 Mbit/s", "  - over cap for: 900 s",
                   "  - /var/lib/rackwarden/pcap/srv-1-20240501T1200Z.pcap", "  - poll:8812",
                   "联系运营方：noc@idc.example, +86 592 000 0000",
                   "Operator contact: noc@idc.example, +86 592 000 0000",
                   "Notice reference: overage:srv-1:3:suspension"):
        assert needle in body, needle


def test_stage_texts_and_deadlines() -> None:
    warn = body_of(reparse(render_email(make_notice(stage="warning"), SENDER)))
    assert "请在 2024-05-01 21:00:00+08:00 之前处理" in warn
    assert "宽限期截止：2024-05-01 21:00:00+08:00" in warn
    assert "Grace period ends: 2024-05-01 21:00:00+08:00" in warn
    open_ended = body_of(reparse(render_email(make_notice(reason="abuse", until=None), SENDER)))
    assert "暂停至：由运营方处理或经您申请后恢复" in open_ended
    assert "Suspended until: an operator restores it or you request a restore" in open_ended
    assert "attacks, flooding, spam" in open_ended
    restored = reparse(render_email(make_notice(stage="restored", until=None), SENDER))
    assert "网络连接已于 2024-05-01 20:00:00+08:00 恢复" in body_of(restored)
    assert restored["Subject"] == "[RackWarden] 服务器 srv-1 网络恢复通知 / Network restored notice"


def test_subject_round_trips_and_raw_headers_are_ascii() -> None:
    msg = render_email(make_notice(), SENDER)
    assert msg["Subject"] == "[RackWarden] 服务器 srv-1 网络暂停通知 / Network suspension notice"
    raw = msg.as_bytes()
    head = raw.split(b"\n\n", 1)[0]
    head.decode("ascii")  # RFC 2047 encoded: no SMTPUTF8 needed at the relay
    parsed = reparse(msg)
    assert parsed["Subject"] == msg["Subject"]
    assert parsed["From"] == SENDER
    assert parsed.get_content_charset() == "utf-8"
    assert subject_for(make_notice(language="en")) == \
        "[RackWarden] Server srv-1: Network suspension notice"


def test_message_id_is_derived_from_the_key() -> None:
    first = reparse(render_email(make_notice(), SENDER))
    resend = reparse(render_email(make_notice(), SENDER, date=AT + timedelta(minutes=5)))
    other = reparse(render_email(make_notice(key="overage:srv-1:4:suspension"), SENDER))
    assert first["Message-ID"] == resend["Message-ID"] == message_id_for(
        "overage:srv-1:3:suspension", SENDER)
    assert other["Message-ID"] != first["Message-ID"]
    assert re.fullmatch(r"<rw\.[0-9a-f]{32}@idc\.example>", str(first["Message-ID"]))
    assert first["X-RackWarden-Key"] == "overage:srv-1:3:suspension"
    assert resend["Date"] == "Wed, 01 May 2024 20:05:00 +0800"
    assert first["To"] == "ops@customer.example, boss@customer.example"
    assert first["Auto-Submitted"] == "auto-generated"
    assert first["Content-Language"] == "zh-CN, en"


def test_no_secrets_in_message_or_notifier_repr() -> None:
    notifier = SmtpNotifier("smtp.idc.example", 587, SENDER, starttls=True,
                            username="relay-login-x7", password=FakeSecret(PASSWORD))
    assert PASSWORD not in repr(notifier) and PASSWORD not in str(notifier)
    msg = notifier.render(make_notice(), at=AT)
    raw = msg.as_bytes()
    decoded = reparse(msg)
    text = body_of(decoded) + "".join(str(v) for v in decoded.values())
    for secret in (PASSWORD, "relay-login-x7", "smtp.idc.example"):
        assert secret.encode() not in raw and secret not in text
    assert sorted(k.lower() for k in msg.keys()) == sorted([
        "subject", "from", "to", "date", "message-id", "x-rackwarden-key",
        "x-rackwarden-server", "x-rackwarden-stage", "auto-submitted", "content-type",
        "content-transfer-encoding", "mime-version", "content-language"])


def test_smtp_settings_refuse_clear_text_login() -> None:
    with pytest.raises(ValueError, match="allow_plaintext_auth"):
        SmtpNotifier("smtp.idc.example", 25, SENDER, username="u", password=FakeSecret("p"))
    with pytest.raises(ValueError, match="together"):
        SmtpNotifier("smtp.idc.example", 587, SENDER, starttls=True, username="u")


def test_empty_to_is_undelivered_without_io() -> None:
    # Port 9 on a documentation address: reaching it would hang, so this also shows no I/O.
    notifier = SmtpNotifier("192.0.2.1", 9, SENDER, timeout_s=0.1)
    delivery = asyncio.run(notifier.send(make_notice(to=()), at=AT))
    assert not delivery.delivered and delivery.detail == "no contact address"
    assert delivery.at == AT and delivery.message_id == message_id_for(make_notice().key, SENDER)


@pytest.mark.parametrize("changes, problem", [
    ({"at": datetime(2024, 5, 1, 12, 0)}, "at must be an aware"),
    ({"until": datetime(2024, 5, 1, 12, 0)}, "until must be an aware"),
    ({"server": "srv-1\r\nBcc: victim@example.com"}, "server must be"),
    ({"key": "k\n1"}, "key must be"),
    ({"to": ("ops@customer.example\r\nBcc: x@y",)}, "invalid e-mail address"),
    ({"to": ("not-an-address",)}, "invalid e-mail address"),
    ({"timezone": "Asia/Nowhere"}, "unknown timezone"),
    ({"reason": "spite"}, "reason 'spite'"),
    ({"stage": "final"}, "stage 'final'"),
    ({"language": "fr"}, "language 'fr'"),
])
def test_invalid_notices_are_refused(changes: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        make_notice(**changes)


@pytest.mark.parametrize("value, text", [
    (23.4, "23.4"), (10, "10"), (10.0, "10"), (0.0004, "0"), (-0.0001, "0"),
    (1234567.891, "1234567.891"), (2.34567, "2.346"), ("n/a", "n/a"), (True, "True"),
])
def test_format_value(value: float | int | str, text: str) -> None:
    assert format_value(value) == text


_text = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=40)


@settings(max_examples=100, deadline=None)
@given(server=_text.filter(lambda s: s.strip() == s),
       customer=_text, summary=_text, rule=_text,
       language=st.sampled_from(["zh", "en", "both"]),
       stage=st.sampled_from(["warning", "suspension", "restored"]))
def test_any_text_round_trips(server: str, customer: str, summary: str, rule: str,
                              language: str, stage: str) -> None:
    notice = make_notice(server=server, customer=customer, summary=summary, rule=rule,
                         language=language, stage=stage)
    msg = render_email(notice, SENDER)
    parsed = reparse(msg)
    assert parsed["Subject"] == subject_for(notice)
    assert parsed["X-RackWarden-Server"] == server
    body = body_of(parsed)
    for part in (server, customer, summary, rule):
        assert part in body


def test_alertmanager_payload_matches_the_v2_schema() -> None:
    alert = postable_alert("RackWardenPortShut", {"server": "srv-1", "switch": "sw1",
                                                  "note": ""},
                           {"summary": "srv-1 shut for overage", "runbook": ""},
                           AT, AT + timedelta(minutes=5), "http://agent:9105/status")
    assert alert == {
        "labels": {"alertname": "RackWardenPortShut", "server": "srv-1", "switch": "sw1"},
        "annotations": {"summary": "srv-1 shut for overage"},
        "startsAt": "2024-05-01T12:00:00.000Z",
        "endsAt": "2024-05-01T12:05:00.000Z",
        "generatorURL": "http://agent:9105/status",
    }
    assert rfc3339(datetime(2024, 5, 1, 20, 0, tzinfo=ZoneInfo("Asia/Shanghai"))) == \
        "2024-05-01T12:00:00.000Z"
    with pytest.raises(ValueError, match="invalid label names"):
        postable_alert("X", {"bad-name": "1"}, {}, AT, None)
    with pytest.raises(ValueError, match="before"):
        postable_alert("X", {}, {}, AT, AT - timedelta(seconds=1))
    with pytest.raises(ValueError, match="aware"):
        rfc3339(datetime(2024, 5, 1))


def test_webhook_event_shape() -> None:
    event = alert_event("firing", "RackWardenBreakerOpen", "critical", {"switch": "sw1"},
                        AT, summary="breaker open", description="40% of sw1 over cap")
    assert event == {"source": "rackwarden", "kind": "alert", "status": "firing",
                     "name": "RackWardenBreakerOpen", "severity": "critical",
                     "labels": {"switch": "sw1"}, "at": "2024-05-01T12:00:00+00:00",
                     "summary": "breaker open", "description": "40% of sw1 over cap"}
    resolved = alert_event("resolved", "RackWardenBreakerOpen", "critical", {}, AT)
    assert "summary" not in resolved and resolved["status"] == "resolved"


def test_ladder_figures_become_readable() -> None:
    figures = figures_from_metrics([("rate_bps", 23_400_000), ("cap_bps", 10_000_000),
                                    ("over_s", 900.0), ("fee_fen", 12_345), ("syn_pps", 52_000),
                                    ("score", 0.93), ("_s", 1)])
    assert figures == (("rate", 23.4, "Mbit/s"), ("cap", 10.0, "Mbit/s"), ("over", 900.0, "s"),
                       ("fee", 123.45, "CNY"), ("syn", 52_000, "packets/s"), ("score", 0.93, ""),
                       ("_s", 1, ""))
    body = body_of(reparse(render_email(make_notice(figures=figures, language="en"), SENDER)))
    assert "  - rate: 23.4 Mbit/s" in body and "  - cap: 10 Mbit/s" in body
    assert "  - fee: 123.45 CNY" in body and "  - score: 0.93\n" in body
