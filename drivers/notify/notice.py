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
Stage = Literal["warning", "suspension", "restored", "cap_change", "restriction", "lifted",
                "recheck_restored", "recheck_refused"]
Language = Literal["zh", "en", "both"]
Figure = tuple[str, float | int | str, str]  # (name, value, unit)

REASONS: tuple[Reason, ...] = ("overage", "abuse", "nonpayment", "operator", "standard")
STAGES: tuple[Stage, ...] = ("warning", "suspension", "restored", "cap_change", "restriction",
                            "lifted", "recheck_restored", "recheck_refused")
LANGUAGES: tuple[Language, ...] = ("zh", "en", "both")
RestrictionKind = Literal["throttle", "block"]
RESTRICTIONS: tuple[RestrictionKind, ...] = ("throttle", "block")
# Stages that may name a restriction: the restriction itself, its end, and the warning before
# it (which then announces the restriction instead of a suspension).
_RESTRICTION_STAGES: tuple[Stage, ...] = ("warning", "restriction", "lifted")


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
    # Graceful enforcement (stages restriction / lifted, or a warning that announces one).
    restriction: RestrictionKind | None = None
    rate_bps: int | None = None  # throttle: the rate the switch enforces, bit/s
    service: str | None = None  # block: the service whose outbound traffic is dropped ("smtp")
    service_ports: tuple[int, ...] = ()  # block: its TCP destination ports, e.g. (25, 465, 587)

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
        problems += _restriction_problems(self)
        if problems:
            raise ValueError(f"notice {self.key!r} for {self.server!r}: " + "; ".join(problems))
        # Lists passed by callers would make a "frozen" notice mutable and unhashable.
        object.__setattr__(self, "to", tuple(self.to))
        object.__setattr__(self, "figures", tuple(tuple(f) for f in self.figures))
        object.__setattr__(self, "evidence_refs", tuple(self.evidence_refs))
        object.__setattr__(self, "service_ports", tuple(self.service_ports))


def _restriction_problems(n: Notice) -> list[str]:
    """What is wrong with a notice's restriction fields; a restriction notice must say what the
    customer lives with (the rate, the blocked service), or it would promise nothing checkable."""
    problems: list[str] = []
    kind = n.restriction
    if kind is None:
        if n.stage in ("restriction", "lifted"):
            problems.append(f"a {n.stage} notice must name its restriction (throttle or block)")
        if n.rate_bps is not None or n.service is not None or n.service_ports:
            problems.append("rate_bps, service and service_ports need a restriction")
        return problems
    if kind not in RESTRICTIONS:
        return [f"restriction {kind!r} not one of {RESTRICTIONS}"]
    if n.stage not in _RESTRICTION_STAGES:
        problems.append(f"a {n.stage} notice cannot name a restriction (only {_RESTRICTION_STAGES})")
    rate = n.rate_bps
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int) or rate <= 0):
        problems.append(f"rate_bps must be a positive integer bit/s, got {rate!r}")
    if kind == "throttle":
        # A lifted throttle restores the full rate: its old rate is optional there.
        if rate is None and n.stage != "lifted":
            problems.append("a throttle needs rate_bps, the rate the switch enforces")
        if n.service is not None or n.service_ports:
            problems.append("service and service_ports are for a block, not a throttle")
    else:
        if not n.service or _has_control(n.service):
            problems.append("a block needs service (e.g. 'smtp') without control characters")
        if rate is not None:
            problems.append("rate_bps is for a throttle, not a block")
        for port in n.service_ports:
            if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
                problems.append(f"service port {port!r} is not a TCP port (1-65535)")
    return problems


def format_rate(rate_bps: int) -> str:
    """Integer bit/s in Mbit/s, exact and without trailing zeros: 10 Mbit/s, 9.5 Mbit/s.

    Integer arithmetic, so no float rounding can show a customer 9.499999 or round 9.9999995
    up to a rate above the one the switch enforces.
    """
    whole, frac = divmod(rate_bps, 1_000_000)
    text = str(whole) if frac == 0 else f"{whole}.{frac:06d}".rstrip("0")
    return f"{text} Mbit/s"


_STAGE_TITLE: dict[Stage, tuple[str, str]] = {
    "warning": ("网络使用警告通知", "Network usage warning"),
    "suspension": ("网络暂停通知", "Network suspension notice"),
    "restored": ("网络恢复通知", "Network restored notice"),
    "cap_change": ("资源标准变更通知", "Change of the resource standard"),
    "restriction": ("网络限制通知", "Network restriction notice"),
    "lifted": ("限制解除通知", "Restriction lifted notice"),
    "recheck_restored": ("重新检查结果：已通过", "Re-check result: passed"),
    "recheck_refused": ("重新检查结果：未通过", "Re-check result: refused"),
}

# A restriction notice's title names what was done, as an IDC's 通知 does.
_RESTRICTION_TITLE: dict[tuple[Stage, RestrictionKind], tuple[str, str]] = {
    ("restriction", "throttle"): ("带宽限速通知", "Bandwidth limit notice"),
    ("restriction", "block"): ("邮件端口封禁通知", "Outbound mail block notice"),
    ("lifted", "throttle"): ("带宽限速解除通知", "Bandwidth limit lifted notice"),
    ("lifted", "block"): ("邮件端口解封通知", "Outbound mail unblocked notice"),
}

# What a block stops, by service; another service is named as it is.
_SERVICE_TEXT: dict[str, tuple[str, str]] = {"smtp": ("对外邮件发送", "outbound mail")}

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


def _title(notice: Notice) -> tuple[str, str]:
    if notice.restriction is not None and notice.stage in ("restriction", "lifted"):
        if notice.restriction == "throttle" or notice.service == "smtp":
            return _RESTRICTION_TITLE[(notice.stage, notice.restriction)]
        if notice.stage == "restriction":
            return ("端口封禁通知", "Outbound service block notice")
    return _STAGE_TITLE[notice.stage]


def subject_for(notice: Notice) -> str:
    zh, en = _title(notice)
    if notice.language == "zh":
        return f"[RackWarden] 服务器 {notice.server} {zh}"
    if notice.language == "en":
        return f"[RackWarden] Server {notice.server}: {en}"
    return f"[RackWarden] 服务器 {notice.server} {zh} / {en}"


# Restriction texts. None of them may say 暂停 / "suspended": the server keeps forwarding, and
# a customer told "suspended" would claim an outage (and an SLA credit) that never happened.

def _rate_text(n: Notice) -> str:
    return format_rate(n.rate_bps) if n.rate_bps is not None else ""


def _zh_service(n: Notice) -> str:
    service = n.service or ""
    name = _SERVICE_TEXT[service][0] if service in _SERVICE_TEXT else f"{service} 服务的出方向连接"
    ports = "/".join(str(p) for p in n.service_ports)
    return f"{name}（出方向 TCP {ports} 端口）" if ports else name


def _en_service(n: Notice) -> str:
    service = n.service or ""
    name = _SERVICE_TEXT[service][1] if service in _SERVICE_TEXT else f"outbound {service} connections"
    ports = "/".join(str(p) for p in n.service_ports)
    return f"{name} (TCP {ports})" if ports else name


def _zh_next(n: Notice) -> str:
    """What a warning says follows the grace period."""
    if n.restriction == "throttle":
        return f"将该服务器的带宽限制为 {_rate_text(n)}（合同约定上限），服务器照常运行"
    if n.restriction == "block":
        return f"封禁该服务器的{_zh_service(n)}，其他网络流量不受影响"
    return "暂停该服务器的网络连接"


def _en_next(n: Notice) -> str:
    if n.restriction == "throttle":
        return (f"as the contract provides, its bandwidth will be limited to {_rate_text(n)} (the "
                "contract cap); the server keeps running")
    if n.restriction == "block":
        return (f"as the contract provides, its {_en_service(n)} will be blocked; all other "
                "traffic passes")
    return "its network access will be suspended as the contract provides"


def _zh_restriction(n: Notice, at: str, reason: str) -> list[str]:
    if n.stage == "lifted":
        if n.restriction == "throttle":
            return [f"您的服务器 {n.server} 的带宽限速已于 {at} 解除，网络速率已恢复正常（不再限速）。"]
        return [f"您的服务器 {n.server} 的{_zh_service(n)}封禁已于 {at} 解除，恢复正常通行。"]
    if n.restriction == "throttle":
        return [f"由于您的服务器 {n.server} 存在{reason}，我们已于 {at} 依据合同将该服务器的带宽"
                f"限制为 {_rate_text(n)}（合同约定的带宽上限）。服务器照常运行，网络连接保持正常，"
                "仅超出上限的流量受到限制。"]
    return [f"由于您的服务器 {n.server} 存在{reason}，我们已于 {at} 依据合同封禁该服务器的"
            f"{_zh_service(n)}。服务器照常运行，其他网络流量均正常通行。请排查并处理问题后回复本邮件"
            "申请复查，经确认后即解除封禁。"]


def _en_restriction(n: Notice, at: str, reason: str) -> list[str]:
    if n.stage == "lifted":
        if n.restriction == "throttle":
            return [f"The bandwidth limit on your server {n.server} was lifted at {at}: full rate "
                    "restored."]
        return [f"The block was lifted at {at}: {_en_service(n)} from your server {n.server} is "
                "unblocked and passes again."]
    if n.restriction == "throttle":
        return [f"As the contract provides, the bandwidth of your server {n.server} has been limited "
                f"to {_rate_text(n)}, the cap in your contract, since {at}. Reason: {reason}. The "
                "server keeps running and its network stays up; only traffic above the cap is "
                "held back."]
    return [f"As the contract provides, {_en_service(n)} from your server {n.server} has been "
            f"blocked since {at}. Reason: {reason}. The server keeps running and all other traffic "
            "passes as before. Please fix the cause, then reply to this e-mail to ask for a re-check; "
            "the block is lifted once it is confirmed."]


def _zh_restriction_details(n: Notice, until: str | None) -> list[str]:
    if n.restriction is None or n.stage == "warning":
        return []
    if n.stage == "lifted":
        if n.restriction == "throttle":
            return ["当前状态：已恢复全速", *([f"原限速速率：{_rate_text(n)}"] if n.rate_bps else [])]
        return [f"已解除封禁：{_zh_service(n)}"]
    if n.restriction == "throttle":
        return [f"限速速率：{_rate_text(n)}", f"限速至：{until or '您的流量回落至合同上限以下为止'}"]
    return [f"封禁范围：{_zh_service(n)}",
            f"封禁至：{until or '您处理完毕并申请复查、经确认后解除（或由运营方解除）'}"]


def _en_restriction_details(n: Notice, until: str | None) -> list[str]:
    if n.restriction is None or n.stage == "warning":
        return []
    if n.stage == "lifted":
        if n.restriction == "throttle":
            return ["Status: full rate restored",
                    *([f"Previous rate limit: {_rate_text(n)}"] if n.rate_bps else [])]
        return [f"Unblocked: {_en_service(n)}"]
    if n.restriction == "throttle":
        return [f"Rate limit: {_rate_text(n)}",
                f"Limited until: {until or 'your traffic is back under the cap'}"]
    open_end = "you fix the cause and ask us for a re-check (reply to this e-mail), or an operator lifts it"
    return [f"Blocked: {_en_service(n)}", f"Blocked until: {until or open_end}"]


def _zh_no_grace(n: Notice) -> str:
    return {"throttle": "无（可随时限速）", "block": "无（可随时封禁）"}.get(n.restriction or "", "无（可随时暂停）")


def _en_no_grace(n: Notice) -> str:
    return {"throttle": "none (the limit may follow at any time)",
            "block": "none (the block may follow at any time)"}.get(
        n.restriction or "", "none (suspension may follow at any time)")


def _zh_body(n: Notice) -> list[str]:
    at = local_time(n.at, n.timezone)
    until = local_time(n.until, n.timezone) if n.until is not None else None
    reason = _REASON_TEXT[n.reason][0]
    lines = [f"尊敬的客户 {n.customer}：" if n.customer else "尊敬的客户：", ""]
    if n.stage == "warning":
        deadline = f"请在 {until} 之前处理" if until else "请尽快处理"
        lines.append(
            f"我们检测到您的服务器 {n.server} 存在{reason}。"
            f"{deadline}，否则我们将依据合同{_zh_next(n)}。"
        )
    elif n.stage == "suspension":
        lines.append(f"依据合同，您的服务器 {n.server} 的网络连接已于 {at} 暂停。原因：{reason}。")
    elif n.stage in ("restriction", "lifted"):
        lines += _zh_restriction(n, at, reason)
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
        lines.append(f"宽限期截止：{until or _zh_no_grace(n)}")
    elif n.stage == "suspension":
        lines.append(f"暂停至：{until or '由运营方处理或经您申请后恢复'}")
    lines += _zh_restriction_details(n, until)
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
            f"We detected {reason} on your server {n.server}. {deadline}; otherwise "
            f"{_en_next(n)}."
        )
    elif n.stage == "suspension":
        lines.append(
            f"As the contract provides, the network access of your server {n.server} was "
            f"suspended at {at}. Reason: {reason}."
        )
    elif n.stage in ("restriction", "lifted"):
        lines += _en_restriction(n, at, reason)
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
        lines.append(f"Grace period ends: {until or _en_no_grace(n)}")
    elif n.stage == "suspension":
        lines.append(
            f"Suspended until: {until or 'an operator restores it or you request a restore'}"
        )
    lines += _en_restriction_details(n, until)
    if n.evidence_refs:
        lines.append("Evidence:")
        lines += [f"  - {ref}" for ref in n.evidence_refs]
    lines += [f"Operator contact: {n.operator_contact or 'reply to this e-mail'}",
              f"Notice reference: {n.key}", "",
              f"All times are {n.timezone} time. This e-mail was sent by RackWarden automatically."]
    return lines


def render_text(notice: Notice) -> str:
    """The plain-text body: Chinese first when both languages are asked for."""
    if notice.stage in RECHECK_STAGES:
        return _recheck_text(notice)
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


# -- the answer to a customer's "Fixed — please re-check" (the console's restore request) -------

RECHECK_STAGES: tuple[Stage, ...] = ("recheck_restored", "recheck_refused")


def _recheck_zh(n: Notice) -> list[str]:
    at = local_time(n.at, n.timezone)
    reason = _REASON_TEXT[n.reason][0]
    lines = [f"尊敬的客户 {n.customer}：" if n.customer else "尊敬的客户：", ""]
    if n.stage == "recheck_restored":
        lines.append(f"您于 {at} 申请对服务器 {n.server} 重新检查（原因：{reason}）。检查通过，该项限制已解除。"
                     "我们将继续按合同监测；如再次违反约定，将重新发出警告。")
    else:
        lines.append(f"您于 {at} 申请对服务器 {n.server} 重新检查（原因：{reason}）。检查未通过，该项限制保持不变。"
                     "请处理后再次申请，或联系运营方。")
    lines += ["", f"服务器：{n.server}", f"原因：{reason}", f"依据条款：{n.rule}", f"检查结果：{n.summary}",
              f"时间：{at}"]
    if n.figures:
        lines.append("测量数据：")
        lines += [f"  - {name}：{format_value(v)} {unit}".rstrip() for name, v, unit in n.figures]
    lines += [f"联系运营方：{n.operator_contact or '请回复本邮件'}", f"通知编号：{n.key}", "",
              f"以上时间均为 {n.timezone} 时间。本邮件由 RackWarden 自动发送。"]
    return lines


def _recheck_en(n: Notice) -> list[str]:
    at = local_time(n.at, n.timezone)
    reason = _REASON_TEXT[n.reason][1]
    lines = [f"Dear {n.customer}," if n.customer else "Dear customer,", ""]
    if n.stage == "recheck_restored":
        lines.append(f"You asked at {at} for a re-check of your server {n.server} (reason: {reason}). "
                     "The re-check passed and this restriction is lifted. We keep measuring as the "
                     "contract provides; a new violation starts a new warning.")
    else:
        lines.append(f"You asked at {at} for a re-check of your server {n.server} (reason: {reason}). "
                     "The re-check was refused and the restriction stays. Please fix the cause and ask "
                     "again, or contact the operator.")
    lines += ["", f"Server: {n.server}", f"Reason: {reason}", f"Contract rule: {n.rule}",
              f"Re-check result: {n.summary}", f"Time: {at}"]
    if n.figures:
        lines.append("Measured figures:")
        lines += [f"  - {name}: {format_value(v)} {unit}".rstrip() for name, v, unit in n.figures]
    lines += [f"Operator contact: {n.operator_contact or 'reply to this e-mail'}",
              f"Notice reference: {n.key}", "",
              f"All times are {n.timezone} time. This e-mail was sent by RackWarden automatically."]
    return lines


def _recheck_text(n: Notice) -> str:
    if n.language == "zh":
        lines = _recheck_zh(n)
    elif n.language == "en":
        lines = _recheck_en(n)
    else:
        lines = [*_recheck_zh(n), "", _SEPARATOR, "", *_recheck_en(n)]
    return "\n".join(lines) + "\n"
