"""The console's words in zh-CN (the default) and en, and how it writes times, rates and money."""

from __future__ import annotations

from datetime import datetime

from rackwarden.policies.sla import contract_timezone

LANGS = ("zh-CN", "en")
DEFAULT_LANG = "zh-CN"

_WORDS: dict[str, tuple[str, str]] = {
    "title": ("RackWarden 控制台", "RackWarden console"),
    "customer_title": ("RackWarden 客户自助", "RackWarden customer page"),
    "fleet": ("服务器总览", "Fleet"),
    "ledger": ("故障账本", "Ledger"),
    "logout": ("退出", "Log out"),
    "login": ("登录", "Log in"),
    "operator_login": ("运维登录", "Operator login"),
    "customer_login": ("客户登录", "Customer login"),
    "user": ("用户名", "User"),
    "password": ("密码", "Password"),
    "bad_login": ("用户名或密码错误", "Wrong user or password"),
    "too_many": ("登录失败次数过多，请 {s} 秒后再试", "Too many failed logins; try again in {s} s"),
    "server": ("服务器", "Server"),
    "customer": ("客户", "Customer"),
    "switch": ("交换机", "Switch"),
    "port": ("端口", "Port"),
    "state": ("状态", "State"),
    "all": ("全部", "all"),
    "filter": ("筛选", "Filter"),
    "rate_now": ("当前速率 出/入", "Rate now out/in"),
    "cap": ("带宽上限", "Cap"),
    "ladder": ("处置阶梯", "Ladder"),
    "hold": ("暂停自动处置", "Hold"),
    "last_action": ("最近动作", "Last action"),
    "last_hour": ("最近 1 小时", "Last hour"),
    "no_data": ("暂无数据", "no data"),
    "rate_chart": ("速率 出/入 与上限", "Rate out/in against the cap"),
    "p95_month": ("本月 95 计费值（至今）", "Month's 95th percentile so far"),
    "buckets": ("个 5 分钟样本", "5-minute buckets"),
    "actions": ("交换机动作", "Switch actions"),
    "audit": ("审计记录", "Audit records"),
    "notices": ("客户通知", "Customer notices"),
    "outages": ("故障/中断", "Outages"),
    "credit": ("本月 SLA 赔付", "The month's SLA credit"),
    "credit_due": ("应赔付", "Credit due"),
    "extension": ("顺延时长", "Service extension"),
    "no_credit_rule": ("合同无赔付条款", "the contract has no credit rule"),
    "arithmetic": ("计算过程（与 `rackwarden sla explain` 相同）", "The arithmetic (as `rackwarden sla explain`)"),
    "at": ("时间", "At"),
    "action": ("动作", "Action"),
    "reason": ("原因", "Reason"),
    "mode": ("模式", "Mode"),
    "result": ("结果", "Result"),
    "actor": ("操作人", "Actor"),
    "decision": ("决定", "Decision"),
    "delivered": ("已送达", "Delivered"),
    "detail": ("详情", "Detail"),
    "start": ("开始", "Start"),
    "end": ("结束", "End"),
    "class": ("归类", "Class"),
    "cause": ("起因", "Cause"),
    "duration": ("时长", "Duration"),
    "open": ("进行中", "open"),
    "verify": ("哈希链校验", "Hash chain"),
    "verify_ok": ("完好", "verifies"),
    "verify_bad": ("损坏", "BROKEN"),
    "head": ("链头", "Head"),
    "unknown_first": ("待归类的故障（未知）", "Unknown outages to classify"),
    "none_unknown": ("没有待归类的故障", "No unknown outage"),
    "classify": ("归类", "Classify"),
    "false_positive": ("误判（算作服务商责任）", "False positive (provider time)"),
    "default_cause": ("该类的默认起因", "the class's default cause"),
    "all_outages": ("全部故障", "All outages"),
    "suspend": ("暂停服务", "Suspend"),
    "restore": ("恢复服务", "Restore"),
    "hold_for": ("暂停自动处置（秒）", "Hold automation (seconds)"),
    "note": ("备注", "Note"),
    "until": ("直到", "until"),
    "evidence": ("证据", "Evidence"),
    "restrictions": ("当前限制", "Current restrictions"),
    "none": ("无", "none"),
    "recheck": ("已修复——请重新检查", "Fixed — please re-check"),
    "throttled_to": ("限速 {rate} Mbit/s（服务器保持在线）", "limited to {rate} Mbit/s (the server stays online)"),
    "blocked_service": ("已封禁外发 {service}（其他流量正常）",
                        "outbound {service} blocked (all other traffic passes)"),
    "recheck_passed": ("重新检查通过（{r}）：{why}。", "Re-check passed ({r}): {why}."),
    "recheck_refused": ("重新检查未通过（{r}），限制保持：{why}。",
                        "Re-check refused ({r}), the restriction stays: {why}."),
    "recheck_figures": ("最近一次测量：出 {out}，入 {in_}，上限 {cap}。",
                        "Last measured: out {out}, in {in_}, cap {cap}."),
    "recheck_mailed": ("结果已发邮件至 {to}。", "The answer was e-mailed to {to}."),
    "recheck_not_mailed": ("结果邮件未能送达：{why}。", "The answer could not be e-mailed: {why}."),
    "recheck_not_yours": ("此限制只能由运维解除，请联系我们", "Only the operator can lift this restriction; "
                          "please contact us"),
    "done": ("已完成", "Done"),
    "error": ("错误", "Error"),
    "times_in": ("时间为合同时区 {tz}", "Times in the contract timezone {tz}"),
    "my_servers": ("我的服务器", "My servers"),
    "month_usage": ("本月用量", "Month usage"),
    "windows": ("维护窗口", "Maintenance windows"),
    "declare": ("登记维护窗口", "Declare a window"),
    "kind": ("类型", "Kind"),
    "servers": ("服务器", "Servers"),
    "notified_at": ("通知客户时间", "Customers notified at"),
    "declared_at": ("登记时间", "Declared at"),
    "refused": ("被安全规则拒绝", "Refused by a rail"),
    "p95_projection": ("95 计费值：至今与月末预测", "95th percentile: so far and projected to month end"),
    "p95_projected": ("月末预测", "Projected at month end"),
    "p95_floor": ("月末下限", "Month-end floor"),
    "too_early": ("数据不足（{n}/{min} 个样本，至少需要一天）", "too early ({n}/{min} buckets: needs a day)"),
    "p95_method": (
        "方法：月末 95 计费值取全月 {total} 个 5 分钟样本，去掉最高的 {discard} 个后的最大值。"
        "预测假定本月剩余时间重复至今的速率分布，因此预测值即至今样本的 95 值；不足 {min} 个样本（一天）时不预测。"
        "下限为至今第 {rank} 高的样本：月末最多只能去掉 {discard} 个，所以无论剩余时间流量如何，月末值都不会低于它。",
        "Method: the month-end 95th percentile takes the month's {total} 5-minute buckets, drops the top "
        "{discard} and keeps the highest left. The projection assumes the rest of the month repeats the mix "
        "of rates seen so far, so it is the 95th percentile of the buckets so far; with fewer than {min} "
        "buckets (one day) there is none. The floor is the bucket ranked {rank} from the top so far: only {discard} "
        "can be dropped at month end, so the month's figure cannot end below it whatever the rest carries."),
    "detections": ("检测记录与证据", "Detections and evidence"),
    "detector": ("检测器/类型", "Detector/kind"),
    "size": ("大小", "Size"),
    "pcap": ("证据包（pcap）", "Evidence pcap"),
    "no_file": ("无证据文件", "no evidence file"),
}


def pick_lang(value: str | None) -> str:
    return "en" if value == "en" else DEFAULT_LANG


def t(lang: str, key: str, **kw: object) -> str:
    zh, en = _WORDS[key]
    text = en if lang == "en" else zh
    return text.format(**kw) if kw else text


def yuan(fen: int) -> str:
    """Integer fen as yuan, exactly: no float ever touches money."""
    sign = "-" if fen < 0 else ""
    whole, cents = divmod(abs(fen), 100)
    return f"{sign}¥{whole:,}.{cents:02d}"


def local_time(at: datetime | str | None, tz_name: str) -> str:
    """An instant in the contract's timezone (ISO text from the stores is accepted as is)."""
    if at is None or at == "":
        return "-"
    if isinstance(at, str):
        try:
            when = datetime.fromisoformat(at)
        except ValueError:
            return at
    else:
        when = at
    return when.astimezone(contract_timezone(tz_name)).strftime("%Y-%m-%d %H:%M:%S")


def mbps(bps: float | None) -> str:
    return "-" if bps is None else f"{bps / 1e6:.2f} Mbit/s"
