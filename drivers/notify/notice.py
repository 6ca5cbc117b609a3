"""Customer notices (CONTRACT_RULES R2, R9–R11) and their pure Chinese/English e-mail rendering."""

from __future__ import annotations

import email.utils
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from email.header import Header
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as _POLICY
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

Reason = Literal["overage", "abuse", "nonpayment", "operator", "standard"]
Stage = Literal["warning", "suspension", "restored", "cap_change"]
Language = Literal["zh", "en", "both"]
Figure = tuple[str, float | int | str, str]  # (name, value, unit)

REASONS: tuple[Reason, ...] = ("overage", "abuse", "nonpayment", "operator", "standard")
STAGES: tuple[Stage, ...] = ("warning", "suspension", "restored", "cap_change")
LANGUAGES: tuple[Language, ...] = ("zh", "en", "both")


def _has_control(text: str) -> bool:
    # Header injection and mangled subjects start with CR, LF or other C0/C1 characters.
    return any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in text)


@dataclass(frozen=True, slots=True, kw_only=True)
class Notice:
    """One notice to one customer about one server; `key` makes a resend recognisable."""

    key: str  # idempotency key from the ladder; the Message-ID is derived from it
    server: str
    customer: str
    to: tuple[str, ...]  # e-mail addresses; empty means the customer has no contact (R9)
    reason: Reason
    stage: Stage
    # The contract rule text, e.g. "R1/R2 — 服务器租用协议 annex 1 §3, §2.1.1: cap 10 Mbit/s".
    rule: str
    summary: str
    figures: tuple[Figure, ...]
    at: datetime  # aware; when the decision was taken
    until: datetime | None  # aware; grace end (warning) or term end (suspension)
    timezone: str  # the contract's IANA zone, e.g. "Asia/Shanghai"
    evidence_refs: tuple[str, ...] = ()  # pcap paths, record ids
    language: Language = "both"
    operator_contact: str = ""

    def __post_init__(self) -> None:
        # Fail when the notice is built (config / enforcer), not halfway through a send.
        problems: list[str] = []
        if not self.key or _has_control(self.key):
            problems.append("key must be non-empty without control characters")
        if not self.server or _has_control(self.server):
            problems.append("server must be non-empty without control characters")
        if _has_control(self.customer):
            problems.append("customer must not contain control characters")
        for addr in self.to:
            if not addr or _has_control(addr) or "@" not in addr or any(c.isspace() for c in addr):
                problems.append(f"invalid e-mail address {addr!r}")
        if self.reason not in REASONS:
            problems.append(f"reason {self.reason!r} not one of {REASONS}")
        if self.stage not in STAGES:
            problems.append(f"stage {self.stage!r} not one of {STAGES}")
        if self.language not in LANGUAGES:
            problems.append(f"language {self.language!r} not one of {LANGUAGES}")
        if self.at.tzinfo is None or self.at.utcoffset() is None:
            problems.append("at must be an aware datetime")
        if self.until is not None and (self.until.tzinfo is None or self.until.utcoffset() is None):
            problems.append("until must be an aware datetime or None")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            problems.append(f"unknown timezone {self.timezone!r}")
        if problems:
            raise ValueError(f"notice {self.key!r} for {self.server!r}: " + "; ".join(problems))
        # Lists passed by callers would make a "frozen" notice mutable and unhashable.
        object.__setattr__(self, "to", tuple(self.to))
        object.__setattr__(self, "figures", tuple(tuple(f) for f in self.figures))
        object.__setattr__(self, "evidence_refs", tuple(self.evidence_refs))


_STAGE_TITLE: dict[Stage, tuple[str, str]] = {
    "warning": ("网络使用警告通知", "Network usage warning"),
    "suspension": ("网络暂停通知", "Network suspension notice"),
    "restored": ("网络恢复通知", "Network restored notice"),
    "cap_change": ("资源标准变更通知", "Change of the resource standard"),
}

_REASON_TEXT: dict[Reason, tuple[str, str]] = {
    "overage": (
        "资源使用超出合同约定标准（带宽超限）",
        "use of resources above the contracted standard (bandwidth overage)",
    ),
    "abuse": (
        "合同禁止的使用行为（如攻击、对外发包、垃圾邮件、代理）",
        "use forbidden by the contract (e.g. attacks, flooding, spam, proxying)",
    ),
    "nonpayment": ("逾期未缴费", "overdue payment"),
    "operator": ("运营方依合同采取的措施", "action taken by the operator under the contract"),
    "standard": ("运营方依合同调整资源标准", "the operator revises the resource standard under the contract"),
}

_SEPARATOR = "-" * 60


def local_time(at: datetime, timezone: str) -> str:
    """`at` in the contract's zone with its offset, e.g. "2024-05-01 20:00:00+08:00"."""
    return at.astimezone(ZoneInfo(timezone)).isoformat(sep=" ", timespec="seconds")


def format_value(value: float | int | str) -> str:
    """A figure's value for people: integers as they are, floats to at most 3 decimals."""
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else "0"


# Unit suffixes used in metric-style names (STYLE.md §9) → (divisor, unit people read).
_UNIT_SUFFIXES: tuple[tuple[str, float, str], ...] = (
    ("_bps", 1e6, "Mbit/s"),
    ("_pps", 1.0, "packets/s"),
    ("_mbps", 1.0, "Mbit/s"),
    ("_bytes", 1e6, "MB"),
    ("_fen", 100.0, "CNY"),
    ("_s", 1.0, "s"),
)


def figures_from_metrics(pairs: Iterable[tuple[str, float | int]]) -> tuple[Figure, ...]:
    """("rate_bps", 23_400_000) → ("rate", 23.4, "Mbit/s"): the ladder's figures made readable."""
    out: list[Figure] = []
    for name, value in pairs:
        for suffix, divisor, unit in _UNIT_SUFFIXES:
            if name.endswith(suffix) and len(name) > len(suffix):
                scaled = value / divisor if divisor != 1.0 else value
                out.append((name[: -len(suffix)], scaled, unit))
                break
        else:
            out.append((name, value, ""))
    return tuple(out)


def message_id_for(key: str, sender: str) -> str:
    """The Message-ID for a notice key: the same key always gives the same id (resends match)."""
    # Hashed because keys may hold characters a msg-id may not; the domain is the sender's.
    domain = email.utils.parseaddr(sender)[1].rpartition("@")[2] or "rackwarden.invalid"
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]
    return f"<rw.{digest}@{domain}>"


def subject_for(notice: Notice) -> str:
    zh, en = _STAGE_TITLE[notice.stage]
    if notice.language == "zh":
        return f"[RackWarden] 服务器 {notice.server} {zh}"
    if notice.language == "en":
        return f"[RackWarden] Server {notice.server}: {en}"
    return f"[RackWarden] 服务器 {notice.server} {zh} / {en}"


def _zh_body(n: Notice) -> list[str]:
    at = local_time(n.at, n.timezone)
    until = local_time(n.until, n.timezone) if n.until is not None else None
    reason = _REASON_TEXT[n.reason][0]
    lines = [f"尊敬的客户 {n.customer}：" if n.customer else "尊敬的客户：", ""]
    if n.stage == "warning":
        deadline = f"请在 {until} 之前处理" if until else "请尽快处理"
        lines.append(
            f"我们检测到您的服务器 {n.server} 存在{reason}。"
            f"{deadline}，否则我们将依据合同暂停该服务器的网络连接。"
        )
    elif n.stage == "suspension":
        lines.append(f"依据合同，您的服务器 {n.server} 的网络连接已于 {at} 暂停。原因：{reason}。")
    elif n.stage == "cap_change":
        lines.append(f"依据合同，您的服务器 {n.server} 的带宽标准将按下列数据调整：{n.summary}。"
                     f"如有异议，请于 {until} 之前提出。")
    else:
        lines.append(f"您的服务器 {n.server} 的网络连接已于 {at} 恢复。")
    lines += ["", f"服务器：{n.server}", f"原因：{reason}", f"依据条款：{n.rule}",
              f"说明：{n.summary}", f"时间：{at}"]
    if n.figures:
        lines.append("测量数据：")
        lines += [f"  - {name}：{format_value(v)} {unit}".rstrip() for name, v, unit in n.figures]
    if n.stage == "cap_change":
        lines.append(f"异议期截止：{until}")
    if n.stage == "warning":
        lines.append(f"宽限期截止：{until or '无（可随时暂停）'}")
    elif n.stage == "suspension":
        lines.append(f"暂停至：{until or '由运营方处理或经您申请后恢复'}")
    if n.evidence_refs:
        lines.append("证据记录：")
        lines += [f"  - {ref}" for ref in n.evidence_refs]
    lines += [f"联系运营方：{n.operator_contact or '请回复本邮件'}", f"通知编号：{n.key}", "",
              f"以上时间均为 {n.timezone} 时间。本邮件由 RackWarden 自动发送。"]
    return lines


def _en_body(n: Notice) -> list[str]:
    at = local_time(n.at, n.timezone)
    until = local_time(n.until, n.timezone) if n.until is not None else None
    reason = _REASON_TEXT[n.reason][1]
    lines = [f"Dear {n.customer}," if n.customer else "Dear customer,", ""]
    if n.stage == "warning":
        deadline = f"Please correct it before {until}" if until else "Please correct it promptly"
        lines.append(
            f"We detected {reason} on your server {n.server}. {deadline}; otherwise its network "
            "access will be suspended as the contract provides."
        )
    elif n.stage == "suspension":
        lines.append(
            f"As the contract provides, the network access of your server {n.server} was "
            f"suspended at {at}. Reason: {reason}."
        )
    elif n.stage == "cap_change":
        lines.append(
            f"As the contract provides, the bandwidth standard of your server {n.server} changes: "
            f"{n.summary}. If you object, please tell us before {until}."
        )
    else:
        lines.append(f"The network access of your server {n.server} was restored at {at}.")
    lines += ["", f"Server: {n.server}", f"Reason: {reason}", f"Contract rule: {n.rule}",
              f"Details: {n.summary}", f"Time: {at}"]
    if n.figures:
        lines.append("Measured figures:")
        lines += [f"  - {name}: {format_value(v)} {unit}".rstrip() for name, v, unit in n.figures]
    if n.stage == "cap_change":
        lines.append(f"Objection period ends: {until}")
    if n.stage == "warning":
        lines.append(f"Grace period ends: {until or 'none (suspension may follow at any time)'}")
    elif n.stage == "suspension":
        lines.append(
            f"Suspended until: {until or 'an operator restores it or you request a restore'}"
        )
    if n.evidence_refs:
        lines.append("Evidence:")
        lines += [f"  - {ref}" for ref in n.evidence_refs]
    lines += [f"Operator contact: {n.operator_contact or 'reply to this e-mail'}",
              f"Notice reference: {n.key}", "",
              f"All times are {n.timezone} time. This e-mail was sent by RackWarden automatically."]
    return lines


def render_text(notice: Notice) -> str:
    """The plain-text body: Chinese first when both languages are asked for."""
    if notice.language == "zh":
        lines = _zh_body(notice)
    elif notice.language == "en":
        lines = _en_body(notice)
    else:
        lines = [*_zh_body(notice), "", _SEPARATOR, "", *_en_body(notice)]
    return "\n".join(lines) + "\n"


def render_email(notice: Notice, sender: str, *, date: datetime | None = None) -> EmailMessage:
    """The notice as a UTF-8 e-mail; `date` (default `notice.at`) fills the Date header."""
    when = date if date is not None else notice.at
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError("date must be an aware datetime")
    if _has_control(sender):
        raise ValueError("sender must not contain control characters")
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(notice.to)
    msg["Date"] = email.utils.format_datetime(when.astimezone(ZoneInfo(notice.timezone)))
    msg["Message-ID"] = message_id_for(notice.key, sender)
    msg["X-RackWarden-Key"] = notice.key
    msg["X-RackWarden-Server"] = notice.server
    msg["X-RackWarden-Stage"] = notice.stage
    # RFC 3834: vacation responders must not answer, so no auto-reply loops with the NOC box.
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(render_text(notice), charset="utf-8")
    # After set_content, which clears every Content-* header it finds.
    msg["Content-Language"] = {"zh": "zh-CN", "en": "en", "both": "zh-CN, en"}[notice.language]
    return _with_subject(msg, subject_for(notice))


def _with_subject(msg: EmailMessage, subject: str) -> EmailMessage:
    # Python < 3.15's header folder drops a space that falls between two encoded-words
    # (CPython gh-144156), so long Chinese subjects lost spaces. email.header.Header keeps
    # spaces inside the encoded-words; a parsed header is re-emitted verbatim when its lines
    # are short, so the message is assembled as source and parsed once.
    folded = Header(subject, "utf-8", maxlinelen=76, header_name="Subject").encode(linesep="\n")
    raw = b"Subject: " + folded.encode("ascii") + b"\n" + msg.as_bytes(policy=_POLICY)
    parsed = BytesParser(policy=_POLICY).parsebytes(raw)
    assert isinstance(parsed, EmailMessage)
    return parsed
