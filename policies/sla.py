"""SLA credit engine: puts every outage second in one class and computes each contract's credit.

CONTRACT_RULES R14–R18 and R20; issue 5, "The credit rules". Everything here is pure: times
come in as timezone-aware datetimes, money is integer fen (0.01 CNY) and all arithmetic is
int / Fraction, so a finance clerk redoing a credit by hand gets the same fen.

Pipeline for one server:
1. `classify`: the server's outage records and the maintenance windows that name it are cut
   into elementary intervals at every record and window edge; each interval gets exactly one
   class by `CLASS_PRECEDENCE` and the window rules of the server's template.
2. Intervals that touch form one outage (overlapping or back-to-back records are one
   interruption of the port). An outage crossing a month boundary of the contract's timezone
   is split there; each part belongs to its month.
3. `server_month`: each outage part earns units by the template (per part, rounded per the
   template), the month's amount is summed, capped, and rounded once per server-month.

Around it: what an operator may reclassify an outage to and what that records
(`reclassification`), where an outage stands after corrections (`standing_class`), and which
template a report runs for a contract (`report_template`, `month_to_date` for R20).
"""

from __future__ import annotations

import calendar
import itertools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from fractions import Fraction
from types import MappingProxyType
from typing import Any, Literal, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

OutageClass = Literal["provider", "customer", "maintenance", "excluded", "unknown"]
CLASSES: tuple[OutageClass, ...] = ("provider", "customer", "maintenance", "excluded", "unknown")
WindowKind = Literal["planned", "cutover"]
WINDOW_KINDS: tuple[WindowKind, ...] = ("planned", "cutover")
CreditKind = Literal["fee_multiple", "extension_time"]
CREDIT_KINDS: tuple[CreditKind, ...] = ("fee_multiple", "extension_time")
FeeBasis = Literal["unit_average", "monthly"]
FEE_BASES: tuple[FeeBasis, ...] = ("unit_average", "monthly")
Rounding = Literal["ceil", "floor", "half_up"]
ROUNDINGS: tuple[Rounding, ...] = ("ceil", "floor", "half_up")
DEFAULT_TIMEZONE = "Asia/Shanghai"
HOUR_S = 3600
DAY_S = 86400

# Which class wins a second covered by records of several classes, strongest first. Records
# are merged before any window is looked at, and a window only ever touches `provider` time.
#
# - customer: R16. If the customer's own act (suspension for overage, abuse, non-payment) or
#   its own server took the port down, the customer would have been offline that second
#   whatever else went wrong, so no credit; a provider fault at the same time changes nothing.
# - excluded: R18. Force majeure excuses everything on the provider's side.
# - unknown: it outranks provider but nothing else, and no window excuses it. It stands
#   exactly where an operator's resolution can still change the credit: resolved as the
#   customer's, the second earns nothing; resolved as the provider's, it is provider (and then
#   a window may excuse it). Under customer or excluded no resolution could change anything,
#   so it would only be noise there. Letting a window or a concurrent provider record absorb
#   it would hide from operators the time they must classify (issue 5: operators must see
#   unknown time and resolve it) and would credit or excuse time nobody has attributed.
# - provider: what is left. Inside a declared window with enough notice for the server's
#   template it becomes the template's class for that window kind (`maintenance` or
#   `excluded`); otherwise it stays `provider` (R17: a late window excuses nothing).
CLASS_PRECEDENCE: tuple[OutageClass, ...] = ("customer", "excluded", "unknown", "provider")


@dataclass(frozen=True, slots=True)
class Cause:
    """One word of the cause vocabulary on outage records, with the class it maps to."""

    name: str
    outage_class: OutageClass
    rules: str
    meaning: str


# The cause vocabulary. An outage record carries exactly one of these; anything else is an
# error, so a typo can never silently become credited (or uncredited) time.
#
# `planned_work` and `cutover` are provider causes on purpose: the provider took the port down.
# They turn into `maintenance` / `excluded` only where a declared window with the template's
# notice covers them (R17: a window declared too late excuses nothing), exactly like any other
# provider time inside such a window. Under `colo` a properly noticed cut-over is `excluded`,
# under `rental` it is `maintenance`; that is the template's call, not the cause's.
CAUSE_LIST: tuple[Cause, ...] = (
    Cause("provider_fault", "provider", "R14/R15", "a fault on the provider's side"),
    Cause("switch_reboot", "provider", "R14/R15", "the access switch rebooted"),
    Cause("ports_down_together", "provider", "R14/R15", "several ports of one switch went down"),
    Cause("line_fault", "provider", "R14/R15/R19", "a line fault (24 h repair time, R19)"),
    Cause("power_fault", "provider", "R14/R15", "power failed on the provider's side"),
    Cause(
        "planned_work",
        "provider",
        "R17",
        "the provider's planned work: excused only inside a declared window with notice",
    ),
    Cause(
        "cutover",
        "provider",
        "R17/R18",
        "a network cut-over: excused only inside a declared window with the template's notice",
    ),
    Cause("overage", "customer", "R2/R16", "suspended for using more than its resource standard"),
    Cause("abuse", "customer", "R5-R7/R10/R16", "cut off for spam, attacks, proxy or resale"),
    Cause("nonpayment", "customer", "R11/R16", "shut for late payment"),
    Cause("customer_fault", "customer", "R16", "the customer's own server or its configuration"),
    Cause("customer_request", "customer", "R16", "shut at the customer's own request"),
    Cause("force_majeure", "excluded", "R18", "force majeure"),
    Cause("unknown", "unknown", "-", "not yet classified: an operator must resolve it"),
    Cause(
        "port_oper_down",
        "unknown",
        "-",
        "one port oper-down while admin-up: often the customer's server, but unproven",
    ),
    Cause("switch_unreachable", "unknown", "-", "the switch could not be polled"),
)
CAUSES: Mapping[str, Cause] = MappingProxyType({c.name: c for c in CAUSE_LIST})


class TemplateError(ValueError):
    """A credit template is malformed; `key` names the offending field."""

    def __init__(self, template: str, key: str, reason: str) -> None:
        super().__init__(f"credit template {template!r}: {key}: {reason}")
        self.template = template
        self.key = key
        self.reason = reason


def outage_class_of(cause: str, false_positive: bool = False) -> OutageClass:
    """The class of one outage record: its cause's class, or `provider` for a false positive.

    An enforcement later found to be a false positive was the provider's doing after all
    (issue 5), so only customer-class causes can carry the flag.
    """
    entry = CAUSES.get(cause)
    if entry is None:
        raise ValueError(f"unknown cause {cause!r}; known causes: {', '.join(CAUSES)}")
    if false_positive:
        if entry.outage_class != "customer":
            raise ValueError(
                f"false_positive applies only to customer-class causes (enforcements), "
                f"not to {cause!r} ({entry.outage_class})"
            )
        return "provider"
    return entry.outage_class


# ---------------------------------------------------------------------------------------------
# Operators' corrections (issue 5): what an outage may be reclassified to, and what is recorded.
#
# The engine classifies by cause, so a class is always written as a cause:
# - maintenance is written as planned_work (or cutover): R17 lets only a declared window with
#   the template's notice excuse time, so the report shows it as maintenance exactly where such
#   a window covers it, and as provider elsewhere, with the reason.
# - none says "no outage after all" (e.g. the switch did not answer but the port forwarded):
#   the record stays in the log and counts nowhere.

ReclassTarget = Literal["provider", "customer", "maintenance", "excluded", "none"]
RECLASS_TARGETS: tuple[ReclassTarget, ...] = ("provider", "customer", "maintenance", "excluded", "none")
DEFAULT_CAUSE: Mapping[str, str] = MappingProxyType(
    {
        "provider": "provider_fault",
        "customer": "customer_fault",
        "maintenance": "planned_work",
        "excluded": "force_majeure",
    }
)
MAINTENANCE_CAUSES: tuple[str, ...] = ("planned_work", "cutover")


class ReclassificationError(ValueError):
    """A correction that cannot mean anything; the message says what to ask for instead."""


@dataclass(frozen=True, slots=True)
class Classification:
    """Where an outage stands: its class ("none": no outage after all), cause and false-positive
    flag. `cause` is None exactly when the class is "none"."""

    outage_class: str
    cause: str | None
    false_positive: bool = False


def reclassification(
    outage: str,
    current_cause: str | None,
    recorded_cause: str,
    outage_class: str,
    cause: str | None = None,
    false_positive: bool = False,
) -> Classification:
    """What an operator's "make outage `outage` of class `outage_class`" records.

    `current_cause` is the outage's cause now (None if an operator said "none"), and
    `recorded_cause` the one it started with. `cause` picks a cause of the class (default: the
    class's generic one, DEFAULT_CAUSE). `false_positive` marks an enforcement (a customer-class
    cause, now or at the start) as RackWarden's mistake: it keeps that cause and becomes
    provider time. Raises ReclassificationError, saying what to ask for, when the request
    cannot mean anything.
    """
    if false_positive:
        if outage_class != "provider":
            raise ReclassificationError(
                "--false-positive makes the outage provider time: use --class provider"
            )
        enforcement = next(
            (c for c in (current_cause, recorded_cause)
             if c is not None and c in CAUSES and CAUSES[c].outage_class == "customer"),
            None,
        )
        if enforcement is None:
            raise ReclassificationError(
                f"outage {outage} ({recorded_cause}) was not an enforcement or customer "
                f"outage; a false positive applies only to those. Use --class provider."
            )
        if cause is not None and cause != enforcement:
            raise ReclassificationError("--cause cannot be combined with --false-positive")
        return Classification(outage_class_of(enforcement, True), enforcement, True)
    if outage_class == "none":
        if cause is not None:
            raise ReclassificationError("--class none takes no --cause")
        return Classification("none", None)
    if outage_class not in DEFAULT_CAUSE:
        raise ReclassificationError(
            f"class must be one of {', '.join(RECLASS_TARGETS)}, got {outage_class!r}"
        )
    new_cause = cause or DEFAULT_CAUSE[outage_class]
    if new_cause not in CAUSES:
        raise ReclassificationError(f"unknown cause {new_cause!r}; known: {', '.join(CAUSES)}")
    fits = (new_cause in MAINTENANCE_CAUSES if outage_class == "maintenance"
            else CAUSES[new_cause].outage_class == outage_class)
    if not fits:
        raise ReclassificationError(f"cause {new_cause!r} is not of class {outage_class}")
    return Classification(outage_class_of(new_cause), new_cause)


def standing_class(agent_cause: str, operator: Classification | None) -> Classification:
    """Where an outage stands now: the last operator's decision, else the agent's latest cause.

    An operator's decision stands until another operator's; the agent's later evidence only
    refines what the agent itself recorded.
    """
    if operator is None:
        return Classification(outage_class_of(agent_cause), agent_cause)
    if operator.cause is None:
        return operator
    return Classification(outage_class_of(operator.cause, operator.false_positive),
                          operator.cause, operator.false_positive)


def _check_time(name: str, at: datetime) -> None:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got {at.isoformat()}")
    # Seconds are the unit of the ledger and of the partition; sub-second edges would make
    # "seconds by class" fractional. Callers truncate poll timestamps explicitly.
    if at.microsecond:
        raise ValueError(f"{name} must be a whole second, got {at.isoformat()}")


@dataclass(frozen=True, slots=True)
class OutageRecord:
    """One record of a customer port not forwarding, as the ledger or a scenario file has it."""

    id: str
    server: str
    start: datetime
    end: datetime
    cause: str
    false_positive: bool = False

    def __post_init__(self) -> None:
        _check_time("start", self.start)
        _check_time("end", self.end)
        if self.end <= self.start:
            raise ValueError(f"outage {self.id}: end must be after start")
        outage_class_of(self.cause, self.false_positive)

    @property
    def outage_class(self) -> OutageClass:
        return outage_class_of(self.cause, self.false_positive)

    @property
    def label(self) -> str:
        marked = " marked false positive" if self.false_positive else ""
        return f"{self.cause}{marked} ({self.id})"


def counted_time(claimed: datetime, recorded: datetime | None) -> datetime:
    """The time a money or deadline rule counts for a time a person claimed (a notice, an
    arrival, a report): the claim, but never earlier than when the ledger recorded it.

    A claimed time earlier than its own entry cannot be checked by anyone reading the ledger,
    and it is always the claimant's side it would help (an earlier notice excuses more, an
    earlier arrival meets more deadlines), so only the ledger's append time is trusted there.
    `recorded` None: no ledger time is known (a hand-written scenario), the claim counts.
    """
    return claimed if recorded is None or recorded <= claimed else recorded


@dataclass(frozen=True, slots=True)
class MaintenanceWindow:
    """A declared maintenance window; `servers` is a tuple of server ids or "all".

    `notified_at` is when the operator says customers were told; `declared_at` is when the
    ledger recorded the window (its append time), None when there is no ledger (a scenario
    file). With a ledger time, the notice counts from the later of the two (`counted_time`),
    and a window recorded after its start excuses nothing (R17; issue 11): time already past
    is excused only by `ledger reclassify`, with a reason, as its own entry.
    """

    id: str
    kind: WindowKind
    start: datetime
    end: datetime
    notified_at: datetime
    servers: tuple[str, ...] | Literal["all"] = "all"
    declared_at: datetime | None = None

    def __post_init__(self) -> None:
        for name in ("start", "end", "notified_at"):
            _check_time(name, getattr(self, name))
        if self.declared_at is not None:
            _check_time("declared_at", self.declared_at)
        if self.end <= self.start:
            raise ValueError(f"window {self.id}: end must be after start")
        if self.kind not in WINDOW_KINDS:
            raise ValueError(f"window {self.id}: kind must be one of {WINDOW_KINDS}")
        if self.servers != "all":
            object.__setattr__(self, "servers", tuple(self.servers))

    def covers(self, server: str) -> bool:
        return self.servers == "all" or server in self.servers

    @property
    def notice_from(self) -> datetime:
        """When the notice counts from: the claimed `notified_at`, never before `declared_at`."""
        return counted_time(self.notified_at, self.declared_at)

    @property
    def notice_s(self) -> int:
        """Seconds between the counted notice and the window's start; negative if late."""
        return _epoch(self.start) - _epoch(self.notice_from)

    @property
    def claimed_notice_s(self) -> int:
        """Seconds between the claimed `notified_at` and the window's start."""
        return _epoch(self.start) - _epoch(self.notified_at)

    @property
    def declared_after_start(self) -> bool:
        """Recorded in the ledger after the window had started: it excuses nothing."""
        return self.declared_at is not None and self.declared_at > self.start


@dataclass(frozen=True, slots=True)
class WindowRule:
    """How a template treats one kind of window: notice it needs and the class it excuses to."""

    kind: str
    notice_s: int
    excused_as: Literal["maintenance", "excluded"]


@dataclass(frozen=True, slots=True)
class CreditTemplate:
    """A contract's credit rule, as data.

    kind "fee_multiple" (rental R14): per outage part, units = round(creditable s / unit_s)
    by `unit_rounding`, at least `min_units`; amount = multiplier × units × unit fee, where the
    unit fee is the monthly fee × unit_s / (86400 × days in the month) for fee_basis
    "unit_average" (1 h units: monthly / (24 × days)), or the monthly fee itself for "monthly"
    (then multiplier 1/20 means "5 % of the monthly fee per unit"). The month's sum is capped
    at floor(monthly fee × month_cap_fee_fraction) if that is set, rounded to fen once by
    `fen_rounding`, and if `cap_paid_total` the running total never exceeds what was paid.

    kind "extension_time" (colo R15): per outage part, units = round(multiplier × creditable s
    / unit_s), at least `min_units`; the extension is units × unit_s seconds. No money.

    `window_rules` say, per window kind, the notice a window needs (seconds before its start)
    and what provider time inside it becomes; a kind without a rule excuses nothing.
    """

    name: str
    kind: CreditKind
    creditable_classes: frozenset[OutageClass]
    multiplier: Fraction
    unit_s: int = HOUR_S
    unit_rounding: Rounding = "ceil"
    min_units: int = 0
    fee_basis: FeeBasis = "unit_average"
    month_cap_fee_fraction: Fraction | None = None
    cap_paid_total: bool = False
    fen_rounding: Rounding = "half_up"
    window_rules: tuple[WindowRule, ...] = ()
    rules: str = ""  # clause references quoted in reasons

    def __post_init__(self) -> None:
        def bad(key: str, reason: str) -> TemplateError:
            return TemplateError(self.name, key, reason)

        if self.kind not in CREDIT_KINDS:
            raise bad("kind", f"must be one of {', '.join(CREDIT_KINDS)}, got {self.kind!r}")
        unknown = set(self.creditable_classes) - set(CLASSES)
        if unknown:
            raise bad("creditable_classes", f"unknown classes {sorted(unknown)}")
        if self.multiplier <= 0:
            raise bad("multiplier", "must be positive")
        if self.unit_s <= 0:
            raise bad("unit_s", "must be a positive number of seconds")
        if self.unit_rounding not in ROUNDINGS:
            raise bad("unit_rounding", f"must be one of {', '.join(ROUNDINGS)}")
        if self.fen_rounding not in ROUNDINGS:
            raise bad("fen_rounding", f"must be one of {', '.join(ROUNDINGS)}")
        if self.min_units < 0:
            raise bad("min_units", "must not be negative")
        if self.fee_basis not in FEE_BASES:
            raise bad("fee_basis", f"must be one of {', '.join(FEE_BASES)}")
        if self.month_cap_fee_fraction is not None and self.month_cap_fee_fraction < 0:
            raise bad("month_cap_fee_fraction", "must not be negative")
        seen: set[str] = set()
        for rule in self.window_rules:
            if rule.kind not in WINDOW_KINDS:
                raise bad("window_rules", f"unknown window kind {rule.kind!r}")
            if rule.kind in seen:
                raise bad("window_rules", f"two rules for {rule.kind!r}")
            seen.add(rule.kind)
            if rule.notice_s < 0:
                raise bad(f"window_rules.{rule.kind}.notice_s", "must not be negative")
            if rule.excused_as not in ("maintenance", "excluded"):
                raise bad(f"window_rules.{rule.kind}.excused_as", "must be maintenance or excluded")

    def window_rule(self, kind: str) -> WindowRule | None:
        for rule in self.window_rules:
            if rule.kind == kind:
                return rule
        return None


RENTAL = CreditTemplate(
    name="rental",
    kind="fee_multiple",
    creditable_classes=frozenset({"provider"}),
    multiplier=Fraction(2),
    unit_s=HOUR_S,
    unit_rounding="ceil",
    fee_basis="unit_average",
    month_cap_fee_fraction=Fraction(1),
    cap_paid_total=True,
    fen_rounding="half_up",
    # rental §6.1: declared maintenance is no breach; a cut-over is just planned maintenance.
    window_rules=(
        WindowRule("planned", 0, "maintenance"),
        WindowRule("cutover", 0, "maintenance"),
    ),
    rules="R14 (rental §2.2.5), R20 (rental §6.4)",
)

COLO = CreditTemplate(
    name="colo",
    kind="extension_time",
    # colo §7.3: planned work with notice is compensated as in §7.2.
    creditable_classes=frozenset({"provider", "maintenance"}),
    multiplier=Fraction(2),
    unit_s=HOUR_S,
    unit_rounding="ceil",
    min_units=1,
    window_rules=(
        WindowRule("planned", 0, "maintenance"),
        # colo §6.3: 48 h notice; then the cut-over is excluded (colo §7.3, R18).
        WindowRule("cutover", 48 * HOUR_S, "excluded"),
    ),
    rules="R15 (colo §7.2-7.3)",
)

BUILTIN_TEMPLATES: Mapping[str, CreditTemplate] = MappingProxyType({"rental": RENTAL, "colo": COLO})

_TEMPLATE_KEYS = frozenset(
    {
        "name",
        "kind",
        "creditable_classes",
        "multiplier",
        "unit_s",
        "unit_rounding",
        "min_units",
        "fee_basis",
        "month_cap_fee_fraction",
        "cap_paid_total",
        "fen_rounding",
        "window_rules",
        "rules",
    }
)
_FRACTION_RE = re.compile(r"^\s*\d+(\.\d+)?(\s*/\s*\d+)?\s*$")


def _fraction_value(name: str, key: str, value: object) -> Fraction:
    # Floats are refused: 0.1 is not 1/10, and money rules must be exact as written.
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TemplateError(
            name,
            key,
            f'must be an integer or a string such as "2", "1/20" or "0.05", '
            f"got {value!r} ({type(value).__name__})",
        )
    if isinstance(value, int):
        return Fraction(value)
    if not _FRACTION_RE.match(value):
        raise TemplateError(name, key, f'must look like "2", "1/20" or "0.05", got {value!r}')
    try:
        return Fraction(value.replace(" ", ""))
    except ZeroDivisionError:
        raise TemplateError(name, key, f"divides by zero: {value!r}") from None


def _int_value(name: str, key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TemplateError(name, key, f"must be an integer, got {value!r}")
    return value


def _choice(name: str, key: str, value: object, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise TemplateError(name, key, f"must be one of {', '.join(choices)}, got {value!r}")
    return value


def template_from_dict(d: Mapping[str, Any]) -> CreditTemplate:
    """Build a CreditTemplate from config data; a bad key or value raises TemplateError.

    Keys are the CreditTemplate field names. `window_rules` is a mapping
    `{kind: {"notice_s": int, "excused_as": "maintenance" | "excluded"}}`; when absent, both
    kinds need no notice and excuse to `maintenance`. Fractions are ints or strings ("1/20").
    """
    if not isinstance(d, Mapping):
        raise TemplateError("?", "(template)", "must be a mapping")
    raw_name = d.get("name")
    if not isinstance(raw_name, str) or not raw_name:
        raise TemplateError("?", "name", "is required and must be a non-empty string")
    name = raw_name
    for key in d:
        if key not in _TEMPLATE_KEYS:
            raise TemplateError(
                name, str(key), f"unknown key; known keys: {', '.join(sorted(_TEMPLATE_KEYS))}"
            )
    for key in ("kind", "creditable_classes", "multiplier"):
        if key not in d:
            raise TemplateError(name, key, "is required")
    kind = _choice(name, "kind", d["kind"], CREDIT_KINDS)
    classes = d["creditable_classes"]
    if not isinstance(classes, (list, tuple)) or not all(isinstance(c, str) for c in classes):
        raise TemplateError(name, "creditable_classes", "must be a list of class names")
    for c in classes:
        _choice(name, "creditable_classes", c, CLASSES)
    cap: Fraction | None = None
    if d.get("month_cap_fee_fraction") is not None:
        cap = _fraction_value(name, "month_cap_fee_fraction", d["month_cap_fee_fraction"])
    cap_paid = d.get("cap_paid_total", kind == "fee_multiple")
    if not isinstance(cap_paid, bool):
        raise TemplateError(name, "cap_paid_total", f"must be true or false, got {cap_paid!r}")
    rules_text = d.get("rules", "")
    if not isinstance(rules_text, str):
        raise TemplateError(name, "rules", "must be a string")
    raw_windows = d.get(
        "window_rules",
        {k: {"notice_s": 0, "excused_as": "maintenance"} for k in WINDOW_KINDS},
    )
    if not isinstance(raw_windows, Mapping):
        raise TemplateError(name, "window_rules", "must be a mapping of window kind to rule")
    window_rules: list[WindowRule] = []
    for wkind, wrule in raw_windows.items():
        key = f"window_rules.{wkind}"
        _choice(name, "window_rules", wkind, WINDOW_KINDS)
        if not isinstance(wrule, Mapping):
            raise TemplateError(name, key, "must be a mapping with notice_s and excused_as")
        extra = set(wrule) - {"notice_s", "excused_as"}
        if extra:
            raise TemplateError(name, f"{key}.{sorted(extra)[0]}", "unknown key")
        for sub in ("notice_s", "excused_as"):
            if sub not in wrule:
                raise TemplateError(name, f"{key}.{sub}", "is required")
        notice = _int_value(name, f"{key}.notice_s", wrule["notice_s"])
        excused = _choice(
            name, f"{key}.excused_as", wrule["excused_as"], ("maintenance", "excluded")
        )
        window_rules.append(
            WindowRule(wkind, notice, cast(Literal["maintenance", "excluded"], excused))
        )
    return CreditTemplate(
        name=name,
        kind=cast(CreditKind, kind),
        creditable_classes=frozenset(cast(list[OutageClass], list(classes))),
        multiplier=_fraction_value(name, "multiplier", d["multiplier"]),
        unit_s=_int_value(name, "unit_s", d.get("unit_s", HOUR_S)),
        unit_rounding=cast(
            Rounding, _choice(name, "unit_rounding", d.get("unit_rounding", "ceil"), ROUNDINGS)
        ),
        min_units=_int_value(name, "min_units", d.get("min_units", 0)),
        fee_basis=cast(
            FeeBasis, _choice(name, "fee_basis", d.get("fee_basis", "unit_average"), FEE_BASES)
        ),
        month_cap_fee_fraction=cap,
        cap_paid_total=cap_paid,
        fen_rounding=cast(
            Rounding, _choice(name, "fen_rounding", d.get("fen_rounding", "half_up"), ROUNDINGS)
        ),
        window_rules=tuple(window_rules),
        rules=rules_text,
    )


@dataclass(frozen=True, slots=True)
class ServerContract:
    """What the credit of one server depends on besides its outages."""

    id: str
    template: CreditTemplate
    monthly_fee_fen: int
    paid_total_fen: int

    def __post_init__(self) -> None:
        for name in ("monthly_fee_fen", "paid_total_fen"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"server {self.id}: {name} must be a non-negative integer")


# ---------------------------------------------------------------------------------------------
# Time: epoch seconds internally, so comparisons never depend on which tzinfo a datetime carries
# (aware datetimes sharing one ZoneInfo compare by wall clock, which is wrong across DST).

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_OFFSET_RE = re.compile(r"^([+-])(\d{2}):(\d{2})$")
_PERIOD_RE = re.compile(r"^(\d{4})-(\d{2})$")


def _epoch(at: datetime) -> int:
    return (at - _EPOCH) // timedelta(seconds=1)


def _at(epoch: int, tz: tzinfo) -> datetime:
    return (_EPOCH + timedelta(seconds=epoch)).astimezone(tz)


def contract_timezone(name: str = DEFAULT_TIMEZONE) -> tzinfo:
    """An IANA zone name ("Asia/Shanghai") or a fixed offset ("+05:30", "-03:00")."""
    m = _OFFSET_RE.match(name)
    if m:
        hours, minutes = int(m.group(2)), int(m.group(3))
        if hours > 23 or minutes > 59:
            raise ValueError(f"bad UTC offset {name!r}")
        delta = timedelta(hours=hours, minutes=minutes)
        return timezone(-delta if m.group(1) == "-" else delta)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown timezone {name!r}: give an IANA name such as Asia/Shanghai "
            f"or a fixed offset such as +08:00"
        ) from None


def parse_period(period: str) -> tuple[int, int]:
    """ "2026-11" → (2026, 11)."""
    m = _PERIOD_RE.match(period)
    if not m or not 1 <= int(m.group(2)) <= 12:
        raise ValueError(f"period must be YYYY-MM, got {period!r}")
    return int(m.group(1)), int(m.group(2))


def days_in_month(period: str) -> int:
    year, month = parse_period(period)
    return calendar.monthrange(year, month)[1]


def month_bounds(period: str, tz: tzinfo) -> tuple[datetime, datetime]:
    """Start (inclusive) and end (exclusive) of a calendar month in the contract's timezone."""
    year, month = parse_period(period)
    nxt = (year + 1, 1) if month == 12 else (year, month + 1)
    return datetime(year, month, 1, tzinfo=tz), datetime(nxt[0], nxt[1], 1, tzinfo=tz)


def periods_between(start: datetime, end: datetime, tz: tzinfo) -> tuple[str, ...]:
    """The months of the contract's timezone that [start, end) touches, in order."""
    first = start.astimezone(tz)
    last = (end - timedelta(seconds=1)).astimezone(tz)
    year, month = first.year, first.month
    out: list[str] = []
    while (year, month) <= (last.year, last.month):
        out.append(f"{year:04d}-{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return tuple(out)


def duration_text(seconds: int) -> str:
    """4530 → "1h15m30s"; days are shown as hours because notices are quoted in hours."""
    sign = "-" if seconds < 0 else ""
    h, rest = divmod(abs(seconds), HOUR_S)
    m, s = divmod(rest, 60)
    text = "".join(f"{v}{u}" for v, u in ((h, "h"), (m, "m"), (s, "s")) if v)
    return sign + (text or "0s")


def round_fraction(value: Fraction, mode: Rounding) -> int:
    """Exact rounding of a non-negative amount; half_up sends x.5 up."""
    if mode == "ceil":
        return math.ceil(value)
    if mode == "floor":
        return math.floor(value)
    return math.floor(value + Fraction(1, 2))


def fraction_text(value: Fraction) -> str:
    """Exact text of an amount: "400" or "2000/31"."""
    return (
        str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"
    )


# ---------------------------------------------------------------------------------------------
# Classification


@dataclass(frozen=True, slots=True)
class Segment:
    """A maximal stretch of one server's outage time with one class and one reason."""

    start: datetime
    end: datetime
    outage_class: OutageClass
    seconds: int
    reason: str
    records: tuple[str, ...]  # ids of every record covering the stretch
    window: str | None = None  # id of the window that excused it, if one did


@dataclass(frozen=True, slots=True)
class _Elem:
    start: int
    end: int
    outage_class: OutageClass
    reason: str
    records: tuple[str, ...]
    window: str | None


def _notice_text(w: MaintenanceWindow) -> str:
    def rel(seconds: int) -> str:
        return (f"{duration_text(seconds)} before start" if seconds >= 0
                else f"{duration_text(-seconds)} after start")

    text = f"notified {rel(w.notice_s)}"
    if w.notice_from != w.notified_at:
        # The claim is shown beside what counted, so a reader sees both (issue 11).
        text += f" by its ledger time (notified_at claims {rel(w.claimed_notice_s)})"
    return text


def _decide(
    covering: Sequence[OutageRecord],
    windows: Sequence[MaintenanceWindow],
    template: CreditTemplate,
) -> tuple[OutageClass, str, str | None]:
    present = {r.outage_class for r in covering}
    top = next(c for c in CLASS_PRECEDENCE if c in present)
    causes = ", ".join(r.label for r in covering if r.outage_class == top)
    outranked = [c for c in CLASS_PRECEDENCE if c in present and c != top]
    tail = f"; outranks {', '.join(outranked)}" if outranked else ""
    if top != "provider":
        return top, f"{top}: {causes}{tail}", None
    notes: list[str] = []
    best: tuple[int, int, str, MaintenanceWindow, WindowRule] | None = None
    for w in windows:
        rule = template.window_rule(w.kind)
        if rule is None:
            notes.append(f"window {w.id} ({w.kind}): template {template.name} has no rule for it")
            continue
        if w.declared_after_start:
            # Checked before the notice so the reason names the real fault whatever notice
            # the entry claims: a window written after its start cannot excuse time.
            late = _epoch(cast(datetime, w.declared_at)) - _epoch(w.start)
            notes.append(
                f"window {w.id} ({w.kind}) recorded in the ledger {duration_text(late)} after "
                f"it started: excuses nothing (past time is excused only by ledger reclassify)"
            )
            continue
        notice = w.notice_s
        if notice < rule.notice_s:
            notes.append(
                f"window {w.id} ({w.kind}) {_notice_text(w)}, {template.name} needs "
                f"{duration_text(rule.notice_s)}: excuses nothing"
            )
            continue
        # Several valid windows: excluded beats maintenance (the stronger, contractually
        # explicit exclusion), then the earliest-starting, then the smallest id, so the
        # answer never depends on input order.
        key = (0 if rule.excused_as == "excluded" else 1, _epoch(w.start), w.id, w, rule)
        if best is None or key[:3] < best[:3]:
            best = key
    if best is not None:
        _, _, _, w, rule = best
        reason = (
            f"{rule.excused_as}: window {w.id} ({w.kind}, {_notice_text(w)}, {template.name} needs "
            f"{duration_text(rule.notice_s)}) covers provider time of {causes}"
        )
        return rule.excused_as, reason, w.id
    extra = f"; {'; '.join(notes)}" if notes else ""
    return "provider", f"provider: {causes}{extra}", None


def _classify(
    server: str,
    records: Iterable[OutageRecord],
    windows: Iterable[MaintenanceWindow],
    template: CreditTemplate,
) -> list[_Elem]:
    recs = [(_epoch(r.start), _epoch(r.end), r) for r in records if r.server == server]
    wins = [(_epoch(w.start), _epoch(w.end), w) for w in windows if w.covers(server)]
    points = sorted(
        {p for s, e, _ in recs for p in (s, e)} | {p for s, e, _ in wins for p in (s, e)}
    )
    out: list[_Elem] = []
    for a, b in itertools.pairwise(points):
        covering = [r for s, e, r in recs if s <= a and b <= e]
        if not covering:
            continue
        inside = [w for s, e, w in wins if s <= a and b <= e]
        cls, reason, window = _decide(covering, inside, template)
        ids = tuple(r.id for r in covering)
        last = out[-1] if out else None
        if (
            last is not None
            and last.end == a
            and (last.outage_class, last.reason, last.window, last.records)
            == (cls, reason, window, ids)
        ):
            out[-1] = _Elem(last.start, b, cls, reason, ids, window)
        else:
            out.append(_Elem(a, b, cls, reason, ids, window))
    return out


def classify(
    server: str,
    records: Iterable[OutageRecord],
    windows: Iterable[MaintenanceWindow],
    template: CreditTemplate,
    tz: tzinfo = UTC,
) -> tuple[Segment, ...]:
    """Every outage second of `server`, in order, each in exactly one class with its reason.

    Records and windows of other servers are ignored, so callers may pass the whole ledger.
    """
    return tuple(
        Segment(
            _at(e.start, tz),
            _at(e.end, tz),
            e.outage_class,
            e.end - e.start,
            e.reason,
            e.records,
            e.window,
        )
        for e in _classify(server, records, windows, template)
    )


# ---------------------------------------------------------------------------------------------
# Credit


@dataclass(frozen=True, slots=True)
class OutagePart:
    """The part of one merged outage that falls in one month, with what it earns."""

    server: str
    period: str
    start: datetime
    end: datetime
    seconds: int
    seconds_by_class: Mapping[OutageClass, int]
    creditable_seconds: int
    units: int
    credit_fen: Fraction  # fee_multiple: exact, before the month's caps and rounding
    extension_s: int  # extension_time: units × unit_s
    reason: str
    segments: tuple[Segment, ...]

    @property
    def outage_class(self) -> OutageClass | Literal["mixed"]:
        """The part's class when it has one; "mixed" when its segments differ (see segments)."""
        present = [c for c in CLASSES if self.seconds_by_class[c]]
        return present[0] if len(present) == 1 else "mixed"


@dataclass(frozen=True, slots=True)
class ServerMonth:
    """One server's outages and credit for one calendar month."""

    server: str
    period: str
    template: CreditTemplate
    days_in_month: int
    seconds_by_class: Mapping[OutageClass, int]
    parts: tuple[OutagePart, ...]
    credit_before_caps_fen: Fraction
    credit_fen: int
    caps_applied: tuple[str, ...]
    extension_s: int
    credited_before_fen: int
    reason: str

    @property
    def extension_hours(self) -> Fraction:
        return Fraction(self.extension_s, HOUR_S)


def _zero_classes() -> dict[OutageClass, int]:
    return {c: 0 for c in CLASSES}


def _part_credit(
    template: CreditTemplate, creditable_s: int, monthly_fee_fen: int, days: int
) -> tuple[int, Fraction, int, str]:
    """(units, credit in fen, extension seconds, reason) of one outage part."""
    t = template
    prefix = f"{t.rules}: " if t.rules else ""
    if creditable_s == 0:
        return (
            0,
            Fraction(0),
            0,
            f"{prefix}no creditable time ({', '.join(sorted(t.creditable_classes))})",
        )
    unit = "h" if t.unit_s == HOUR_S else f"× {t.unit_s} s"
    minimum = f", at least {t.min_units}" if t.min_units else ""
    if t.kind == "fee_multiple":
        exact_units = Fraction(creditable_s, t.unit_s)
        units = max(round_fraction(exact_units, t.unit_rounding), t.min_units)
        if t.fee_basis == "unit_average" and t.unit_s == HOUR_S:
            unit_fee = Fraction(monthly_fee_fen, 24 * days)
            basis = f"{monthly_fee_fen} fen / (24 × {days} d)"
        elif t.fee_basis == "unit_average":
            unit_fee = Fraction(monthly_fee_fen * t.unit_s, DAY_S * days)
            basis = f"{monthly_fee_fen} fen × {t.unit_s} s / (86400 s × {days} d)"
        else:
            unit_fee = Fraction(monthly_fee_fen)
            basis = f"{monthly_fee_fen} fen"
        credit = t.multiplier * units * unit_fee
        reason = (
            f"{prefix}{t.unit_rounding}({creditable_s} s / {t.unit_s} s){minimum} = "
            f"{units} {unit}; "
            f"{fraction_text(t.multiplier)} × {units} × {basis} = {fraction_text(credit)} fen"
        )
        return units, credit, 0, reason
    exact_units = t.multiplier * creditable_s / t.unit_s
    units = max(round_fraction(exact_units, t.unit_rounding), t.min_units)
    reason = (
        f"{prefix}{t.unit_rounding}({fraction_text(t.multiplier)} × {creditable_s} s / "
        f"{t.unit_s} s){minimum} = {units} {unit} extension"
    )
    return units, Fraction(0), units * t.unit_s, reason


def _outages(elems: list[_Elem]) -> list[list[_Elem]]:
    # Touching intervals are one interruption: the port never forwarded in between.
    groups: list[list[_Elem]] = []
    for e in elems:
        if groups and groups[-1][-1].end == e.start:
            groups[-1].append(e)
        else:
            groups.append([e])
    return groups


def server_month(
    contract: ServerContract,
    records: Iterable[OutageRecord],
    windows: Iterable[MaintenanceWindow],
    period: str,
    tz: tzinfo,
    credited_before_fen: int = 0,
) -> ServerMonth:
    """Seconds by class and the credit of one server for one month of the contract's timezone.

    `credited_before_fen` is what earlier months already credited; with the paid-total cap
    (R20) this month adds at most paid_total_fen − credited_before_fen.
    """
    if credited_before_fen < 0:
        raise ValueError("credited_before_fen must not be negative")
    t = contract.template
    days = days_in_month(period)
    m_start, m_end = (_epoch(x) for x in month_bounds(period, tz))
    totals = _zero_classes()
    parts: list[OutagePart] = []
    for group in _outages(_classify(contract.id, records, windows, t)):
        if group[-1].end <= m_start or group[0].start >= m_end:
            continue
        by_class = _zero_classes()
        segments: list[Segment] = []
        for e in group:
            s, en = max(e.start, m_start), min(e.end, m_end)
            if s >= en:
                continue
            by_class[e.outage_class] += en - s
            segments.append(
                Segment(
                    _at(s, tz), _at(en, tz), e.outage_class, en - s, e.reason, e.records, e.window
                )
            )
        creditable = sum(by_class[c] for c in t.creditable_classes)
        units, credit, ext, reason = _part_credit(t, creditable, contract.monthly_fee_fen, days)
        for c in CLASSES:
            totals[c] += by_class[c]
        parts.append(
            OutagePart(
                server=contract.id,
                period=period,
                start=segments[0].start,
                end=segments[-1].end,
                seconds=sum(by_class.values()),
                seconds_by_class=MappingProxyType(by_class),
                creditable_seconds=creditable,
                units=units,
                credit_fen=credit,
                extension_s=ext,
                reason=reason,
                segments=tuple(segments),
            )
        )
    raw = sum((p.credit_fen for p in parts), Fraction(0))
    caps: list[str] = []
    steps = [f"sum of parts {fraction_text(raw)} fen"]
    credit_fen = 0
    if t.kind == "fee_multiple":
        capped = raw
        if t.month_cap_fee_fraction is not None:
            # Floor keeps the cap in whole fen, so rounding the capped amount never passes it.
            month_cap = math.floor(contract.monthly_fee_fen * t.month_cap_fee_fraction)
            steps.append(f"month cap {month_cap} fen")
            if capped > month_cap:
                capped = Fraction(month_cap)
                caps.append("month_fee")
        credit_fen = round_fraction(capped, t.fen_rounding)
        steps.append(f"rounded {t.fen_rounding} {credit_fen} fen")
        if t.cap_paid_total:
            # Both caps are whole fen, so capping after rounding equals capping before it.
            remaining = max(0, contract.paid_total_fen - credited_before_fen)
            steps.append(
                f"paid-total cap {contract.paid_total_fen} − {credited_before_fen} already "
                f"credited = {remaining} fen"
            )
            if credit_fen > remaining:
                credit_fen = remaining
                caps.append("paid_total")
        steps.append(f"credit {credit_fen} fen")
    extension = sum(p.extension_s for p in parts)
    if t.kind == "extension_time":
        steps = [
            f"extension {' + '.join(duration_text(p.extension_s) for p in parts) or '0s'} = "
            f"{duration_text(extension)} over {len(parts)} outage part(s)"
        ]
    prefix = f"{t.rules}: " if t.rules else ""
    return ServerMonth(
        server=contract.id,
        period=period,
        template=t,
        days_in_month=days,
        seconds_by_class=MappingProxyType(totals),
        parts=tuple(parts),
        credit_before_caps_fen=raw,
        credit_fen=credit_fen,
        caps_applied=tuple(caps),
        extension_s=extension,
        credited_before_fen=credited_before_fen,
        reason=prefix + "; ".join(steps),
    )


def server_months(
    contract: ServerContract,
    records: Iterable[OutageRecord],
    windows: Iterable[MaintenanceWindow],
    periods: Sequence[str],
    tz: tzinfo,
    credited_before_fen: int = 0,
) -> tuple[ServerMonth, ...]:
    """Consecutive months in order, carrying the running total for the paid-total cap (R20)."""
    records = tuple(records)
    windows = tuple(windows)
    out: list[ServerMonth] = []
    running = credited_before_fen
    for period in periods:
        month = server_month(contract, records, windows, period, tz, running)
        running += month.credit_fen
        out.append(month)
    return tuple(out)


def month_to_date(
    contract: ServerContract,
    records: Sequence[OutageRecord],
    windows: Sequence[MaintenanceWindow],
    period: str,
    tz: tzinfo,
) -> ServerMonth:
    """One month with the paid-total cap (R20) on the running total: every earlier month the
    records reach is computed by the same engine first, so its credit counts against the cap."""
    m_start, m_end = month_bounds(period, tz)
    if not records:
        return server_month(contract, records, windows, period, tz)
    first = min(r.start for r in records)
    periods = periods_between(min(first, m_start), m_end, tz)
    return server_months(contract, records, windows, periods, tz)[-1]


@dataclass(frozen=True, slots=True)
class TemplateChoice:
    """The credit template a report runs for one contract, and why it differs from the contract's."""

    template: CreditTemplate
    credit_rule: str | None  # the contract's credit rule; None: it has none (seconds only)
    notes: tuple[str, ...] = ()


NO_CREDIT = "none"  # a contract template's explicit "no credit rule": seconds by class only


def report_template(
    credit: str, templates: Mapping[str, CreditTemplate], paid_total_fen: int | None
) -> TemplateChoice:
    """The credit rule a contract template names (`templates.<name>.credit`), without the
    paid-total cap (R20) when no paid total is known; `none` earns nothing (the seconds by
    class are still reported). A rule that is not known is an error, never a silent zero."""
    template = templates.get(credit)
    if template is None:
        if credit != NO_CREDIT:
            raise TemplateError(credit, "credit", f"unknown credit rule (known: {', '.join(templates)},"
                                f" {NO_CREDIT})")
        neutral = CreditTemplate(
            name="no credit rule",
            kind="extension_time",
            creditable_classes=frozenset(),
            multiplier=Fraction(1),
            window_rules=(WindowRule("planned", 0, "maintenance"),
                          WindowRule("cutover", 0, "maintenance")),
        )
        return TemplateChoice(neutral, None, ("the contract names no credit rule (credit: none): seconds only",))
    if template.cap_paid_total and paid_total_fen is None:
        return TemplateChoice(
            replace(template, cap_paid_total=False), template.name,
            ("paid-total cap (R20) not applied: no paid total given (--paid-total)",))
    return TemplateChoice(template, template.name)


__all__ = [
    "BUILTIN_TEMPLATES",
    "CAUSES",
    "NO_CREDIT",
    "CAUSE_LIST",
    "CLASSES",
    "CLASS_PRECEDENCE",
    "COLO",
    "Cause",
    "Classification",
    "CreditTemplate",
    "DEFAULT_CAUSE",
    "DEFAULT_TIMEZONE",
    "MAINTENANCE_CAUSES",
    "MaintenanceWindow",
    "OutageClass",
    "OutagePart",
    "OutageRecord",
    "RECLASS_TARGETS",
    "RENTAL",
    "ReclassTarget",
    "ReclassificationError",
    "Segment",
    "ServerContract",
    "ServerMonth",
    "TemplateChoice",
    "TemplateError",
    "WINDOW_KINDS",
    "WindowRule",
    "classify",
    "contract_timezone",
    "counted_time",
    "days_in_month",
    "duration_text",
    "fraction_text",
    "month_bounds",
    "month_to_date",
    "outage_class_of",
    "parse_period",
    "periods_between",
    "reclassification",
    "report_template",
    "round_fraction",
    "server_month",
    "server_months",
    "standing_class",
    "template_from_dict",
]
