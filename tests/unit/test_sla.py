"""Table-driven and property tests of the SLA credit engine (policies/sla.py, sla_deadlines.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from fractions import Fraction
from typing import Literal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rackwarden.policies.sla import (
    BUILTIN_TEMPLATES,
    CAUSES,
    CLASSES,
    COLO,
    RENTAL,
    WINDOW_KINDS,
    CreditTemplate,
    MaintenanceWindow,
    OutageRecord,
    Rounding,
    ServerContract,
    TemplateError,
    WindowKind,
    WindowRule,
    classify,
    contract_timezone,
    month_to_date,
    outage_class_of,
    periods_between,
    report_template,
    round_fraction,
    server_month,
    server_months,
    template_from_dict,
)
from rackwarden.policies.sla_deadlines import (
    REPAIR_TERMS,
    Finding,
    check_incident_report,
    check_repair,
    check_unreachable,
    open_deadlines,
    outage_repair,
)

T = datetime.fromisoformat
SHANGHAI = ZoneInfo("Asia/Shanghai")


def out(start: str, end: str, cause: str = "provider_fault", fp: bool = False,
        server: str = "s1") -> OutageRecord:
    return OutageRecord(f"{cause}@{start}", server, T(start), T(end), cause, fp)


def win(wid: str, kind: WindowKind, start: str, end: str, notified: str,
        servers: tuple[str, ...] | Literal["all"] = "all") -> MaintenanceWindow:
    return MaintenanceWindow(wid, kind, T(start), T(end), T(notified), servers)


def opt(text: str | None) -> datetime | None:
    return None if text is None else T(text)


def classes(**nonzero: int) -> dict[str, int]:
    return {c: nonzero.get(c, 0) for c in CLASSES}


# A planned window on 2026-11-05 09:00–12:00 (+08:00), declared a day ahead.
PLANNED_OK = win("mw-ok", "planned", "2026-11-05T09:00:00+08:00", "2026-11-05T12:00:00+08:00",
                 "2026-11-04T09:00:00+08:00")
# The same window declared 5 minutes after it began.
PLANNED_LATE = win("mw-late", "planned", "2026-11-05T09:00:00+08:00",
                   "2026-11-05T12:00:00+08:00", "2026-11-05T09:05:00+08:00")
# Declared exactly as it starts: notice 0 s, which "before it starts" (≥ 0) allows.
PLANNED_AT_START = win("mw-0", "planned", "2026-11-05T09:00:00+08:00",
                       "2026-11-05T12:00:00+08:00", "2026-11-05T09:00:00+08:00")
PLANNED_S2 = win("mw-s2", "planned", "2026-11-05T09:00:00+08:00", "2026-11-05T12:00:00+08:00",
                 "2026-11-04T09:00:00+08:00", ("s2",))
# Cut-over 2026-11-10 02:00–04:00, declared 47 h and 48 h before it.
CUT_47H = win("cut-47h", "cutover", "2026-11-10T02:00:00+08:00", "2026-11-10T04:00:00+08:00",
              "2026-11-08T03:00:00+08:00")
CUT_48H = win("cut-48h", "cutover", "2026-11-10T02:00:00+08:00", "2026-11-10T04:00:00+08:00",
              "2026-11-08T02:00:00+08:00")
CUT_1H = win("cut-1h", "cutover", "2026-11-10T02:00:00+08:00", "2026-11-10T04:00:00+08:00",
             "2026-11-10T01:00:00+08:00")
PLANNED_NIGHT = win("pl-night", "planned", "2026-11-10T02:00:00+08:00",
                    "2026-11-10T04:00:00+08:00", "2026-11-09T02:00:00+08:00")


@dataclass(frozen=True)
class RentalCase:
    name: str
    outages: tuple[OutageRecord, ...]
    seconds: dict[str, int]
    credit_fen: int
    raw_fen: Fraction
    caps: tuple[str, ...] = ()
    windows: tuple[MaintenanceWindow, ...] = ()
    period: str = "2026-11"
    tz: str = "Asia/Shanghai"
    fee: int = 72000
    paid: int = 10_000_000
    before: int = 0


# 2026-11 has 30 days, so with a fee of 72000 fen one hour averages 72000/(24×30) = 100 fen and
# each credited hour is worth 2 × 100 = 200 fen, unless a row says otherwise.
RENTAL_CASES = [
    # 1h30m = 5400 s → ceil = 2 h; 2×2×72000/(24×30) = 400 fen
    RentalCase("one_outage_90min",
               (out("2026-11-03T10:00:00+08:00", "2026-11-03T11:30:00+08:00"),),
               classes(provider=5400), 400, Fraction(400)),
    # 11-30 23:20 → 12-01 01:00 Shanghai; November keeps 23:20→24:00 = 2400 s → 1 h → 200 fen
    RentalCase("boundary_shanghai_nov",
               (out("2026-11-30T23:20:00+08:00", "2026-12-01T01:00:00+08:00"),),
               classes(provider=2400), 200, Fraction(200)),
    # December keeps 00:00→01:00 = 3600 s → 1 h; 2026-12 has 31 days:
    # 2×1×72000/(24×31) = 6000/31 = 193.548… → 194 fen
    RentalCase("boundary_shanghai_dec",
               (out("2026-11-30T23:20:00+08:00", "2026-12-01T01:00:00+08:00"),),
               classes(provider=3600), 194, Fraction(6000, 31), period="2026-12"),
    # the same instants written in UTC: 15:20Z–17:00Z; the month still ends at 16:00Z → 2400 s
    RentalCase("boundary_given_in_utc",
               (out("2026-11-30T15:20:00+00:00", "2026-11-30T17:00:00+00:00"),),
               classes(provider=2400), 200, Fraction(200)),
    # contract in +05:30: 11-30 23:00 → 12-01 00:30 local; November keeps 3600 s → 1 h → 200 fen
    # (in Shanghai time this is 12-01 01:30–03:00: all of it would be December)
    RentalCase("offset_plus_0530_nov",
               (out("2026-11-30T23:00:00+05:30", "2026-12-01T00:30:00+05:30"),),
               classes(provider=3600), 200, Fraction(200), tz="+05:30"),
    # December keeps 1800 s → 1 h; 2×1×72000/(24×31) = 6000/31 → 194 fen
    RentalCase("offset_plus_0530_dec",
               (out("2026-11-30T23:00:00+05:30", "2026-12-01T00:30:00+05:30"),),
               classes(provider=1800), 194, Fraction(6000, 31), period="2026-12", tz="+05:30"),
    # contract in -03:00: 11-30 22:00 → 12-01 02:00 local; November 7200 s → 2 h → 400 fen
    RentalCase("offset_minus_0300_nov",
               (out("2026-11-30T22:00:00-03:00", "2026-12-01T02:00:00-03:00"),),
               classes(provider=7200), 400, Fraction(400), tz="-03:00"),
    # December 7200 s → 2 h; 2×2×72000/(24×31) = 12000/31 = 387.096… → 387 fen
    RentalCase("offset_minus_0300_dec",
               (out("2026-11-30T22:00:00-03:00", "2026-12-01T02:00:00-03:00"),),
               classes(provider=7200), 387, Fraction(12000, 31), period="2026-12", tz="-03:00"),
    # 2027-02 has 28 days; fee 67200 → 67200/(24×28) = 100 fen/h; 1 s → ceil = 1 h → 200 fen
    RentalCase("february_one_second",
               (out("2027-02-10T08:00:00+08:00", "2027-02-10T08:00:01+08:00"),),
               classes(provider=1), 200, Fraction(200), period="2027-02", fee=67200),
    # 02-28 23:30 → 03-01 00:30; February keeps 1800 s → 1 h → 2×1×67200/(24×28) = 200 fen
    RentalCase("february_into_march_feb",
               (out("2027-02-28T23:30:00+08:00", "2027-03-01T00:30:00+08:00"),),
               classes(provider=1800), 200, Fraction(200), period="2027-02", fee=67200),
    # March keeps 1800 s → 1 h → 2×1×67200/(24×31) = 5600/31 = 180.645… → 181 fen
    RentalCase("february_into_march_mar",
               (out("2027-02-28T23:30:00+08:00", "2027-03-01T00:30:00+08:00"),),
               classes(provider=1800), 181, Fraction(5600, 31), period="2027-03", fee=67200),
    # window declared a day ahead covers 10:00–11:00 → maintenance; rental credits it 0 fen
    RentalCase("planned_window_noticed",
               (out("2026-11-05T10:00:00+08:00", "2026-11-05T11:00:00+08:00"),),
               classes(maintenance=3600), 0, Fraction(0), windows=(PLANNED_OK,)),
    # declared 5 min after it began: excuses nothing → provider 3600 s → 1 h → 200 fen
    RentalCase("planned_window_short_notice",
               (out("2026-11-05T10:00:00+08:00", "2026-11-05T11:00:00+08:00"),),
               classes(provider=3600), 200, Fraction(200), windows=(PLANNED_LATE,)),
    # declared at the very second it starts: notice 0 s ≥ 0 s required → maintenance → 0 fen
    RentalCase("planned_window_notice_at_start",
               (out("2026-11-05T10:00:00+08:00", "2026-11-05T11:00:00+08:00"),),
               classes(maintenance=3600), 0, Fraction(0), windows=(PLANNED_AT_START,)),
    # outage 11:00–13:00, window ends 12:00: 3600 s maintenance + 3600 s provider → 1 h → 200 fen
    RentalCase("window_excuses_only_inside",
               (out("2026-11-05T11:00:00+08:00", "2026-11-05T13:00:00+08:00"),),
               classes(provider=3600, maintenance=3600), 200, Fraction(200),
               windows=(PLANNED_OK,)),
    # the window names only s2; s1's hour stays provider → 200 fen
    RentalCase("window_for_other_server",
               (out("2026-11-05T10:00:00+08:00", "2026-11-05T11:00:00+08:00"),),
               classes(provider=3600), 200, Fraction(200), windows=(PLANNED_S2,)),
    # rental: a cut-over is planned maintenance needing notice ≥ 0 s; 1 h notice is enough → 0 fen
    RentalCase("rental_cutover_is_planned",
               (out("2026-11-10T02:00:00+08:00", "2026-11-10T04:00:00+08:00", "cutover"),),
               classes(maintenance=7200), 0, Fraction(0), windows=(CUT_1H,)),
    # a cut-over record with no window at all is the provider's: 2 h → 2×2×100 = 400 fen
    RentalCase("cutover_without_window",
               (out("2026-11-10T02:00:00+08:00", "2026-11-10T04:00:00+08:00", "cutover"),),
               classes(provider=7200), 400, Fraction(400)),
    # 10:00–11:00 and 10:30–11:40 merge to 10:00–11:40 = 6000 s → ceil = 2 h → 400 fen
    # (unmerged they would be 1 h + 2 h = 600 fen)
    RentalCase("overlapping_records_merge",
               (out("2026-11-03T10:00:00+08:00", "2026-11-03T11:00:00+08:00"),
                out("2026-11-03T10:30:00+08:00", "2026-11-03T11:40:00+08:00", "switch_reboot")),
               classes(provider=6000), 400, Fraction(400)),
    # 10:00–10:20 and 10:20–10:40 touch: one 2400 s interruption → 1 h → 200 fen (not 400)
    RentalCase("touching_records_merge",
               (out("2026-11-03T10:00:00+08:00", "2026-11-03T10:20:00+08:00"),
                out("2026-11-03T10:20:00+08:00", "2026-11-03T10:40:00+08:00")),
               classes(provider=2400), 200, Fraction(200)),
    # 10:00–10:20 and 10:30–10:50 are two interruptions: 1 h + 1 h → 400 fen
    RentalCase("separate_outages_each_rounded",
               (out("2026-11-03T10:00:00+08:00", "2026-11-03T10:20:00+08:00"),
                out("2026-11-03T10:30:00+08:00", "2026-11-03T10:50:00+08:00")),
               classes(provider=2400), 400, Fraction(400)),
    # provider 10:00–12:00 with an overage suspension 10:30–11:00 inside: customer wins its
    # 1800 s, provider keeps 5400 s → 2 h → 400 fen
    RentalCase("customer_outranks_provider",
               (out("2026-11-03T10:00:00+08:00", "2026-11-03T12:00:00+08:00"),
                out("2026-11-03T10:30:00+08:00", "2026-11-03T11:00:00+08:00", "overage")),
               classes(provider=5400, customer=1800), 400, Fraction(400)),
    # overage suspension later marked a false positive: provider 2700 s → 1 h → 200 fen
    RentalCase("false_positive_becomes_provider",
               (out("2026-11-03T10:00:00+08:00", "2026-11-03T10:45:00+08:00", "overage", True),),
               classes(provider=2700), 200, Fraction(200)),
    # the same suspension, not a false positive: customer 2700 s → 0 fen
    RentalCase("overage_earns_nothing",
               (out("2026-11-03T10:00:00+08:00", "2026-11-03T10:45:00+08:00", "overage"),),
               classes(customer=2700), 0, Fraction(0)),
    # abuse, non-payment and the customer's own fault, 1 h each → customer 10800 s → 0 fen
    RentalCase("customer_causes_earn_nothing",
               (out("2026-11-03T10:00:00+08:00", "2026-11-03T11:00:00+08:00", "abuse"),
                out("2026-11-04T10:00:00+08:00", "2026-11-04T11:00:00+08:00", "nonpayment"),
                out("2026-11-05T10:00:00+08:00", "2026-11-05T11:00:00+08:00", "customer_fault")),
               classes(customer=10800), 0, Fraction(0)),
    # force majeure 3 h → excluded 10800 s → 0 fen
    RentalCase("force_majeure_excluded",
               (out("2026-11-03T10:00:00+08:00", "2026-11-03T13:00:00+08:00", "force_majeure"),),
               classes(excluded=10800), 0, Fraction(0)),
    # provider 10–12 and force majeure 11–13: provider 3600 s, excluded 7200 s → 1 h → 200 fen
    RentalCase("force_majeure_outranks_provider",
               (out("2026-11-03T10:00:00+08:00", "2026-11-03T12:00:00+08:00"),
                out("2026-11-03T11:00:00+08:00", "2026-11-03T13:00:00+08:00", "force_majeure")),
               classes(provider=3600, excluded=7200), 200, Fraction(200)),
    # overage 10–12 and force majeure 11–13: the customer's suspension keeps its 7200 s
    # (customer outranks excluded), force majeure gets 12–13 = 3600 s → 0 fen
    RentalCase("customer_outranks_force_majeure",
               (out("2026-11-03T10:00:00+08:00", "2026-11-03T12:00:00+08:00", "overage"),
                out("2026-11-03T11:00:00+08:00", "2026-11-03T13:00:00+08:00", "force_majeure")),
               classes(customer=7200, excluded=3600), 0, Fraction(0)),
    # unknown 10–12 under force majeure 11–13: excluded 7200 s, unknown only 10–11 = 3600 s
    RentalCase("excluded_outranks_unknown",
               (out("2026-11-03T10:00:00+08:00", "2026-11-03T12:00:00+08:00", "unknown"),
                out("2026-11-03T11:00:00+08:00", "2026-11-03T13:00:00+08:00", "force_majeure")),
               classes(unknown=3600, excluded=7200), 0, Fraction(0)),
    # a lone port oper-down is unknown until resolved: 7200 s unknown → 0 fen
    RentalCase("unknown_earns_nothing_yet",
               (out("2026-11-03T10:00:00+08:00", "2026-11-03T12:00:00+08:00", "port_oper_down"),),
               classes(unknown=7200), 0, Fraction(0)),
    # provider 10–12 and unknown 11–13: provider 3600 s, unknown 7200 s → 1 h → 200 fen
    RentalCase("unknown_outranks_provider",
               (out("2026-11-03T10:00:00+08:00", "2026-11-03T12:00:00+08:00"),
                out("2026-11-03T11:00:00+08:00", "2026-11-03T13:00:00+08:00", "port_oper_down")),
               classes(provider=3600, unknown=7200), 200, Fraction(200)),
    # a window never excuses unknown time: 10–11 stays unknown 3600 s → 0 fen
    RentalCase("unknown_not_excused_by_window",
               (out("2026-11-05T10:00:00+08:00", "2026-11-05T11:00:00+08:00", "unknown"),),
               classes(unknown=3600), 0, Fraction(0), windows=(PLANNED_OK,)),
    # 11-01 00:00 → 11-20 00:00 = 19 d = 456 h → 2×456×100 = 91200 fen > fee → capped at 72000
    RentalCase("month_fee_cap",
               (out("2026-11-01T00:00:00+08:00", "2026-11-20T00:00:00+08:00"),),
               classes(provider=19 * 86400), 72000, Fraction(91200), caps=("month_fee",)),
    # 11-01 00:00 → 11-16 00:00 = 15 d = 360 h → 2×360×100 = 72000 fen: exactly the fee, no cap
    RentalCase("month_fee_exactly_reached",
               (out("2026-11-01T00:00:00+08:00", "2026-11-16T00:00:00+08:00"),),
               classes(provider=360 * 3600), 72000, Fraction(72000)),
    # one more hour: 361 h → 72200 fen > 72000 → capped at 72000
    RentalCase("month_fee_cap_just_over",
               (out("2026-11-01T00:00:00+08:00", "2026-11-16T01:00:00+08:00"),),
               classes(provider=361 * 3600), 72000, Fraction(72200), caps=("month_fee",)),
    # same, but only 50000 fen paid in total: 91200 → 72000 (month) → 50000 (paid)
    RentalCase("paid_total_cap",
               (out("2026-11-01T00:00:00+08:00", "2026-11-20T00:00:00+08:00"),),
               classes(provider=19 * 86400), 50000, Fraction(91200),
               caps=("month_fee", "paid_total"), paid=50000),
    # 1 h → 200 fen, but 49900 of the 50000 fen paid were credited before: only 100 fen left
    RentalCase("paid_total_running",
               (out("2026-11-03T10:00:00+08:00", "2026-11-03T11:00:00+08:00"),),
               classes(provider=3600), 100, Fraction(200), caps=("paid_total",), paid=50000,
               before=49900),
    # 1 h → 200 fen with 50000 − 49801 = 199 fen left → 199 fen
    RentalCase("paid_total_one_fen_short",
               (out("2026-11-03T10:00:00+08:00", "2026-11-03T11:00:00+08:00"),),
               classes(provider=3600), 199, Fraction(200), caps=("paid_total",), paid=50000,
               before=49801),
    # 1 h → 200 fen with exactly 200 fen left → 200 fen, no cap
    RentalCase("paid_total_exactly_enough",
               (out("2026-11-03T10:00:00+08:00", "2026-11-03T11:00:00+08:00"),),
               classes(provider=3600), 200, Fraction(200), paid=50000, before=49800),
    # everything paid already credited: 200 fen → 0 fen
    RentalCase("paid_total_exhausted",
               (out("2026-11-03T10:00:00+08:00", "2026-11-03T11:00:00+08:00"),),
               classes(provider=3600), 0, Fraction(200), caps=("paid_total",), paid=50000,
               before=50000),
    # fee 72180: 1 h → 2×1×72180/720 = 200.5 fen → half-up → 201 fen
    RentalCase("round_half_up",
               (out("2026-11-03T10:00:00+08:00", "2026-11-03T11:00:00+08:00"),),
               classes(provider=3600), 201, Fraction(401, 2), fee=72180),
    # fee 72162: 1 h → 144324/720 = 200.45 fen → 200 fen
    RentalCase("round_below_half",
               (out("2026-11-03T10:00:00+08:00", "2026-11-03T11:00:00+08:00"),),
               classes(provider=3600), 200, Fraction(4009, 20), fee=72162),
    # fee 72180, two 1 h outages: 200.5 + 200.5 = 401 fen exactly (per-outage rounding: 402)
    RentalCase("rounded_once_per_month_halves",
               (out("2026-11-03T10:00:00+08:00", "2026-11-03T11:00:00+08:00"),
                out("2026-11-04T10:00:00+08:00", "2026-11-04T11:00:00+08:00")),
               classes(provider=7200), 401, Fraction(401), fee=72180),
    # fee 72090, two 1 h outages: 200.25 + 200.25 = 400.5 → 401 fen (per-outage rounding: 400)
    RentalCase("rounded_once_per_month_quarters",
               (out("2026-11-03T10:00:00+08:00", "2026-11-03T11:00:00+08:00"),
                out("2026-11-04T10:00:00+08:00", "2026-11-04T11:00:00+08:00")),
               classes(provider=7200), 401, Fraction(801, 2), fee=72090),
]


@pytest.mark.parametrize("case", RENTAL_CASES, ids=[c.name for c in RENTAL_CASES])
def test_rental_credit(case: RentalCase) -> None:
    contract = ServerContract("s1", RENTAL, case.fee, case.paid)
    month = server_month(contract, case.outages, case.windows, case.period,
                         contract_timezone(case.tz), case.before)
    assert dict(month.seconds_by_class) == case.seconds
    assert month.credit_before_caps_fen == case.raw_fen
    assert month.credit_fen == case.credit_fen
    assert month.caps_applied == case.caps
    assert month.extension_s == 0


@dataclass(frozen=True)
class ColoCase:
    name: str
    outages: tuple[OutageRecord, ...]
    seconds: dict[str, int]
    extension_hours: int
    part_hours: tuple[int, ...]
    windows: tuple[MaintenanceWindow, ...] = ()
    period: str = "2026-11"


COLO_CASES = [
    # 1 s → ceil(2×1/3600) = 1 h: the minimum unit
    ColoCase("one_second_minimum_1h",
             (out("2026-11-03T10:00:00+08:00", "2026-11-03T10:00:01+08:00"),),
             classes(provider=1), 1, (1,)),
    # 10 min → ceil(2×600/3600) = ceil(1/3) = 1 h
    ColoCase("ten_minutes",
             (out("2026-11-03T10:00:00+08:00", "2026-11-03T10:10:00+08:00"),),
             classes(provider=600), 1, (1,)),
    # 1 h → ceil(7200/3600) = 2 h
    ColoCase("one_hour", (out("2026-11-03T10:00:00+08:00", "2026-11-03T11:00:00+08:00"),),
             classes(provider=3600), 2, (2,)),
    # 1h30m → ceil(2×5400/3600) = 3 h
    ColoCase("ninety_minutes", (out("2026-11-03T10:00:00+08:00", "2026-11-03T11:30:00+08:00"),),
             classes(provider=5400), 3, (3,)),
    # 1h00m01s → ceil(7202/3600) = 3 h
    ColoCase("one_hour_one_second",
             (out("2026-11-03T10:00:00+08:00", "2026-11-03T11:00:01+08:00"),),
             classes(provider=3601), 3, (3,)),
    # cut-over declared 47 h ahead (48 h needed): excuses nothing → provider 7200 s → 4 h
    ColoCase("cutover_47h_notice",
             (out("2026-11-10T02:00:00+08:00", "2026-11-10T04:00:00+08:00", "cutover"),),
             classes(provider=7200), 4, (4,), windows=(CUT_47H,)),
    # cut-over declared 48 h ahead: excluded 7200 s → 0 h
    ColoCase("cutover_48h_notice",
             (out("2026-11-10T02:00:00+08:00", "2026-11-10T04:00:00+08:00", "cutover"),),
             classes(excluded=7200), 0, (0,), windows=(CUT_48H,)),
    # outage 01:30–03:00, 48 h cut-over from 02:00: provider 1800 s + excluded 3600 s;
    # ceil(2×1800/3600) = 1 h
    ColoCase("cutover_48h_partly_outside",
             (out("2026-11-10T01:30:00+08:00", "2026-11-10T03:00:00+08:00", "cutover"),),
             classes(provider=1800, excluded=3600), 1, (1,), windows=(CUT_48H,)),
    # declared planned work is credited under colo (§7.3): maintenance 7200 s → 4 h
    ColoCase("planned_work_credited",
             (out("2026-11-10T02:00:00+08:00", "2026-11-10T04:00:00+08:00", "planned_work"),),
             classes(maintenance=7200), 4, (4,), windows=(PLANNED_NIGHT,)),
    # 01:00–03:00 with planned work from 02:00: provider 3600 + maintenance 3600 in one outage:
    # ceil(2×7200/3600) = 4 h (rounded once for the outage)
    ColoCase("provider_and_maintenance_one_outage",
             (out("2026-11-10T01:00:00+08:00", "2026-11-10T03:00:00+08:00"),),
             classes(provider=3600, maintenance=3600), 4, (4,), windows=(PLANNED_NIGHT,)),
    # a 48 h cut-over and a planned window over the same hours: excluded wins → 0 h
    ColoCase("excluded_beats_maintenance",
             (out("2026-11-10T02:00:00+08:00", "2026-11-10T04:00:00+08:00"),),
             classes(excluded=7200), 0, (0,), windows=(PLANNED_NIGHT, CUT_48H)),
    # overage 2 h and force majeure 2 h → customer 7200 s, excluded 7200 s → 0 h
    ColoCase("customer_and_excluded_earn_nothing",
             (out("2026-11-03T10:00:00+08:00", "2026-11-03T12:00:00+08:00", "overage"),
              out("2026-11-04T10:00:00+08:00", "2026-11-04T12:00:00+08:00", "force_majeure")),
             classes(customer=7200, excluded=7200), 0, (0, 0)),
    # 10:00–10:40 and 10:20–11:00 merge to 3600 s → 2 h (unmerged: 2 h + 2 h)
    ColoCase("overlapping_records_merge",
             (out("2026-11-03T10:00:00+08:00", "2026-11-03T10:40:00+08:00"),
              out("2026-11-03T10:20:00+08:00", "2026-11-03T11:00:00+08:00")),
             classes(provider=3600), 2, (2,)),
    # 11-30 23:30 → 12-01 00:15 Shanghai: November keeps 1800 s → ceil(2×1800/3600) = 1 h
    ColoCase("boundary_nov",
             (out("2026-11-30T23:30:00+08:00", "2026-12-01T00:15:00+08:00"),),
             classes(provider=1800), 1, (1,)),
    # December keeps 900 s → ceil(2×900/3600) = ceil(1/2) = 1 h
    ColoCase("boundary_dec",
             (out("2026-11-30T23:30:00+08:00", "2026-12-01T00:15:00+08:00"),),
             classes(provider=900), 1, (1,), period="2026-12"),
]


@pytest.mark.parametrize("case", COLO_CASES, ids=[c.name for c in COLO_CASES])
def test_colo_extension(case: ColoCase) -> None:
    contract = ServerContract("s1", COLO, 50000, 600000)
    month = server_month(contract, case.outages, case.windows, case.period, SHANGHAI)
    assert dict(month.seconds_by_class) == case.seconds
    assert month.extension_hours == case.extension_hours
    assert month.extension_s == case.extension_hours * 3600
    assert tuple(p.extension_s // 3600 for p in month.parts) == case.part_hours
    assert month.credit_fen == 0


def test_parts_carry_class_reason_and_window() -> None:
    # 47 h cut-over notice under colo: the reason names the window and the missing hour.
    records = (out("2026-11-10T01:30:00+08:00", "2026-11-10T03:00:00+08:00", "cutover"),)
    month = server_month(ServerContract("s1", COLO, 0, 0), records, (CUT_47H,), "2026-11",
                         SHANGHAI)
    (part,) = month.parts
    assert (part.start, part.end) == (T("2026-11-10T01:30:00+08:00"),
                                      T("2026-11-10T03:00:00+08:00"))
    assert part.outage_class == "provider"
    assert [(s.outage_class, s.seconds, s.window) for s in part.segments] == [
        ("provider", 1800, None),
        ("provider", 3600, None),
    ]
    assert part.segments[1].reason == (
        "provider: cutover (cutover@2026-11-10T01:30:00+08:00); window cut-47h (cutover) "
        "notified 47h before start, colo needs 48h: excuses nothing"
    )
    # 48 h notice: the part inside is excluded and names the window.
    month = server_month(ServerContract("s1", COLO, 0, 0), records, (CUT_48H,), "2026-11",
                         SHANGHAI)
    (part,) = month.parts
    assert part.outage_class == "mixed"
    assert [(s.outage_class, s.seconds, s.window) for s in part.segments] == [
        ("provider", 1800, None),
        ("excluded", 3600, "cut-48h"),
    ]


def test_rental_part_reason_shows_hand_computation() -> None:
    records = (out("2026-11-03T10:00:00+08:00", "2026-11-03T11:30:00+08:00"),)
    month = server_month(ServerContract("s1", RENTAL, 72000, 10**7), records, (), "2026-11",
                         SHANGHAI)
    assert month.parts[0].reason.endswith(
        "ceil(5400 s / 3600 s) = 2 h; 2 × 2 × 72000 fen / (24 × 30 d) = 400 fen"
    )


def test_paid_total_running_across_months() -> None:
    # paid 300 fen; Nov 1 h = 200 fen; Dec 1 h = 6000/31 → 194 fen but only 100 fen remain.
    records = (out("2026-11-03T10:00:00+08:00", "2026-11-03T11:00:00+08:00"),
               out("2026-12-03T10:00:00+08:00", "2026-12-03T11:00:00+08:00"))
    nov, dec = server_months(ServerContract("s1", RENTAL, 72000, 300), records, (),
                             ("2026-11", "2026-12"), SHANGHAI)
    assert (nov.credit_fen, nov.caps_applied) == (200, ())
    assert (dec.credited_before_fen, dec.credit_fen, dec.caps_applied) == (200, 100,
                                                                           ("paid_total",))


def test_month_boundary_in_dst_zone() -> None:
    # Europe/Berlin leaves DST on 2026-10-25; November starts at 2026-11-01T00:00+01:00.
    berlin = contract_timezone("Europe/Berlin")
    records = (out("2026-10-31T23:30:00+01:00", "2026-11-01T00:30:00+01:00"),)
    contract = ServerContract("s1", COLO, 0, 0)
    assert server_month(contract, records, (), "2026-10", berlin).seconds_by_class[
        "provider"] == 1800
    assert server_month(contract, records, (), "2026-11", berlin).seconds_by_class[
        "provider"] == 1800


# ------------------------------------------------------------------ vocabulary and templates

@pytest.mark.parametrize(
    ("cause", "fp", "expected"),
    [
        ("provider_fault", False, "provider"),
        ("switch_reboot", False, "provider"),
        ("ports_down_together", False, "provider"),
        ("cutover", False, "provider"),  # excused only by a noticed window
        ("overage", False, "customer"),
        ("abuse", False, "customer"),
        ("nonpayment", False, "customer"),
        ("customer_fault", False, "customer"),
        ("overage", True, "provider"),
        ("abuse", True, "provider"),
        ("force_majeure", False, "excluded"),
        ("unknown", False, "unknown"),
        ("port_oper_down", False, "unknown"),
        ("switch_unreachable", False, "unknown"),
    ],
)
def test_cause_vocabulary(cause: str, fp: bool, expected: str) -> None:
    assert outage_class_of(cause, fp) == expected


def test_cause_vocabulary_rejects() -> None:
    with pytest.raises(ValueError, match="unknown cause 'typo'"):
        outage_class_of("typo")
    with pytest.raises(ValueError, match="false_positive applies only to customer-class"):
        outage_class_of("switch_reboot", True)
    assert {c.outage_class for c in CAUSES.values()} == {"provider", "customer", "excluded",
                                                        "unknown"}


def test_records_reject_naive_fractional_and_reversed_times() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        OutageRecord("x", "s1", datetime(2026, 11, 1), T("2026-11-02T00:00:00+08:00"),
                     "provider_fault")
    with pytest.raises(ValueError, match="whole second"):
        out("2026-11-01T00:00:00.5+08:00", "2026-11-02T00:00:00+08:00")
    with pytest.raises(ValueError, match="end must be after start"):
        out("2026-11-02T00:00:00+08:00", "2026-11-01T00:00:00+08:00")


def test_builtin_templates() -> None:
    assert set(BUILTIN_TEMPLATES) == {"rental", "colo"}
    assert RENTAL.kind == "fee_multiple" and COLO.kind == "extension_time"
    assert (RENTAL.multiplier, RENTAL.unit_s, RENTAL.unit_rounding) == (Fraction(2), 3600, "ceil")
    assert (RENTAL.month_cap_fee_fraction, RENTAL.cap_paid_total) == (Fraction(1), True)
    assert RENTAL.creditable_classes == {"provider"}
    assert COLO.creditable_classes == {"provider", "maintenance"}
    assert (COLO.multiplier, COLO.min_units) == (Fraction(2), 1)
    assert COLO.window_rule("cutover") == WindowRule("cutover", 48 * 3600, "excluded")
    assert COLO.window_rule("planned") == WindowRule("planned", 0, "maintenance")
    assert RENTAL.window_rule("cutover") == WindowRule("cutover", 0, "maintenance")


PERCENT = {
    "name": "pct5",
    "kind": "fee_multiple",
    "creditable_classes": ["provider"],
    "multiplier": "5/100",
    "fee_basis": "monthly",
    "month_cap_fee_fraction": "1/2",
}


def test_template_from_dict_percentage_of_fee() -> None:
    t = template_from_dict(PERCENT)
    assert t == CreditTemplate(
        name="pct5", kind="fee_multiple", creditable_classes=frozenset({"provider"}),
        multiplier=Fraction(1, 20), fee_basis="monthly", month_cap_fee_fraction=Fraction(1, 2),
        cap_paid_total=True,
        window_rules=(WindowRule("planned", 0, "maintenance"),
                      WindowRule("cutover", 0, "maintenance")),
    )
    contract = ServerContract("s1", t, 72000, 10**7)
    # 1h30m → ceil = 2 units; 5 % × 2 × 72000 = 7200 fen
    records = (out("2026-11-03T10:00:00+08:00", "2026-11-03T11:30:00+08:00"),)
    assert server_month(contract, records, (), "2026-11", SHANGHAI).credit_fen == 7200
    # 12 h → 12 units → 43200 fen, capped at floor(72000 × 1/2) = 36000 fen
    records = (out("2026-11-03T00:00:00+08:00", "2026-11-03T12:00:00+08:00"),)
    month = server_month(contract, records, (), "2026-11", SHANGHAI)
    assert (month.credit_fen, month.caps_applied) == (36000, ("month_fee",))


def test_min_units_applies_only_to_creditable_parts() -> None:
    # floor rounding with a 1-unit minimum: 10 min → floor(2×600/3600) = 0 → raised to 1 h;
    # 1h40m → floor(2×6000/3600) = floor(3.33) = 3 h; an overage earns 0, not the minimum.
    t = template_from_dict({"name": "floor1", "kind": "extension_time",
                            "creditable_classes": ["provider"], "multiplier": 2,
                            "unit_rounding": "floor", "min_units": 1})
    records = (out("2026-11-03T10:00:00+08:00", "2026-11-03T10:10:00+08:00"),
               out("2026-11-04T10:00:00+08:00", "2026-11-04T11:40:00+08:00"),
               out("2026-11-05T10:00:00+08:00", "2026-11-05T11:00:00+08:00", "overage"))
    month = server_month(ServerContract("s1", t, 0, 0), records, (), "2026-11", SHANGHAI)
    assert [p.units for p in month.parts] == [1, 3, 0]
    assert month.extension_hours == 4


def test_template_from_dict_matches_builtins() -> None:
    colo = template_from_dict({
        "name": "colo", "kind": "extension_time",
        "creditable_classes": ["provider", "maintenance"], "multiplier": 2, "min_units": 1,
        "cap_paid_total": False, "rules": "R15 (colo §7.2-7.3)",
        "window_rules": {"planned": {"notice_s": 0, "excused_as": "maintenance"},
                         "cutover": {"notice_s": 172800, "excused_as": "excluded"}},
    })
    assert colo == COLO


@pytest.mark.parametrize(
    ("change", "key", "reason"),
    [
        ({"multiplier": 0.05}, "multiplier", "must be an integer or a string"),
        ({"multiplier": "abc"}, "multiplier", "must look like"),
        ({"multiplier": 0}, "multiplier", "must be positive"),
        ({"kind": "percent"}, "kind", "must be one of fee_multiple, extension_time"),
        ({"creditable_classes": ["provider", "vendor"]}, "creditable_classes", "must be one of"),
        ({"unit_s": 0}, "unit_s", "must be a positive number of seconds"),
        ({"unit_s": "3600"}, "unit_s", "must be an integer"),
        ({"min_units": -1}, "min_units", "must not be negative"),
        ({"cap_paid_total": "yes"}, "cap_paid_total", "must be true or false"),
        ({"colour": "red"}, "colour", "unknown key"),
        ({"window_rules": {"emergency": {"notice_s": 0, "excused_as": "maintenance"}}},
         "window_rules", "must be one of planned, cutover"),
        ({"window_rules": {"cutover": {"notice_s": -1, "excused_as": "excluded"}}},
         "window_rules.cutover.notice_s", "must not be negative"),
        ({"window_rules": {"cutover": {"notice_s": 0, "excused_as": "provider"}}},
         "window_rules.cutover.excused_as", "must be one of maintenance, excluded"),
        ({"window_rules": {"cutover": {"notice_s": 0}}}, "window_rules.cutover.excused_as",
         "is required"),
    ],
)
def test_template_from_dict_errors_name_the_key(change: dict[str, object], key: str,
                                                reason: str) -> None:
    with pytest.raises(TemplateError) as info:
        template_from_dict({**PERCENT, **change})
    assert info.value.key == key
    assert reason in info.value.reason
    assert f"credit template 'pct5': {key}: " in str(info.value)
    assert isinstance(info.value, ValueError)


def test_template_from_dict_missing_required() -> None:
    with pytest.raises(TemplateError, match="multiplier: is required"):
        template_from_dict({"name": "x", "kind": "fee_multiple", "creditable_classes": []})
    with pytest.raises(TemplateError, match="name: is required"):
        template_from_dict({"kind": "fee_multiple"})


@pytest.mark.parametrize(
    ("value", "mode", "expected"),
    [
        (Fraction(401, 2), "half_up", 201),  # 200.5 → 201
        (Fraction(4009, 20), "half_up", 200),  # 200.45 → 200
        (Fraction(1, 2), "half_up", 1),  # 0.5 → 1 (not banker's 0)
        (Fraction(5, 2), "half_up", 3),  # 2.5 → 3 (not banker's 2)
        (Fraction(1, 3600), "ceil", 1),
        (Fraction(3599, 3600), "floor", 0),
        (Fraction(7), "ceil", 7),
    ],
)
def test_round_fraction(value: Fraction, mode: Rounding, expected: int) -> None:
    assert round_fraction(value, mode) == expected


def test_contract_timezone() -> None:
    assert contract_timezone("+05:30").utcoffset(None) == timedelta(hours=5, minutes=30)
    assert contract_timezone("-03:00").utcoffset(None) == timedelta(hours=-3)
    assert contract_timezone() == ZoneInfo("Asia/Shanghai")
    with pytest.raises(ValueError, match="unknown timezone 'Mars/Olympus'"):
        contract_timezone("Mars/Olympus")


def test_periods_between() -> None:
    assert periods_between(T("2026-11-30T23:00:00+08:00"), T("2027-01-01T00:00:00+08:00"),
                           SHANGHAI) == ("2026-11", "2026-12")


# ------------------------------------------------------------------ R12, R13, R19

NOW = T("2026-11-20T12:00:00+08:00")


@pytest.mark.parametrize(
    ("down", "silent", "status", "due"),
    [
        # down exactly 7 days: the week is complete → flag
        ("2026-11-13T12:00:00+08:00", None, "breached", "2026-11-20T12:00:00+08:00"),
        # down 6d23h59m59s → not yet; flagged one second later
        ("2026-11-13T12:00:01+08:00", None, "pending", "2026-11-20T12:00:01+08:00"),
        # silent (up, no traffic) 8 days → flag
        (None, "2026-11-12T12:00:00+08:00", "breached", "2026-11-19T12:00:00+08:00"),
        # down 3 days after being silent 8 days: the earlier start counts → flag
        ("2026-11-17T12:00:00+08:00", "2026-11-12T12:00:00+08:00", "breached",
         "2026-11-19T12:00:00+08:00"),
    ],
)
def test_r12_unreachable(down: str | None, silent: str | None, status: str, due: str) -> None:
    finding = check_unreachable("sw1:Gi0/1", NOW, opt(down), opt(silent))
    assert finding is not None
    assert (finding.rule, finding.status, finding.due_at) == ("R12", status, T(due))
    assert finding.flagged == (status == "breached")


def test_r12_nothing_quiet() -> None:
    assert check_unreachable("sw1:Gi0/1", NOW) is None
    finding = check_unreachable("sw1:Gi0/1", NOW, T("2026-11-12T12:00:00+08:00"))
    assert finding is not None and finding.reason == (
        "R12: port down for 192h, at least 168h: flag to operators"
    )


@pytest.mark.parametrize(
    ("reported", "status"),
    [
        ("2026-11-20T11:59:00+08:00", "met"),  # 23h59m after detection
        ("2026-11-20T12:00:00+08:00", "met"),  # exactly 24 h: still within
        ("2026-11-20T12:00:01+08:00", "breached"),  # 24h00m01s
        (None, "breached"),  # now = detection + 24h00m01s, nothing reported
    ],
)
def test_r13_incident_report(reported: str | None, status: str) -> None:
    detected = T("2026-11-19T12:00:00+08:00")
    now = T("2026-11-20T12:00:01+08:00")
    finding = check_incident_report("inc-7", detected, opt(reported), now)
    assert (finding.rule, finding.check, finding.status) == ("R13", "incident_report", status)
    assert finding.due_at == T("2026-11-20T12:00:00+08:00")


def test_r13_pending_and_reason() -> None:
    detected = T("2026-11-20T02:00:00+08:00")
    finding = check_incident_report("inc-8", detected, None, NOW)
    assert finding.status == "pending"
    assert finding.reason == "R13: no report yet after 10h, due within 24h"
    with pytest.raises(ValueError, match="before the start"):
        check_incident_report("inc-9", detected, T("2026-11-20T01:00:00+08:00"), NOW)


@pytest.mark.parametrize(
    ("terms", "ack", "on_site", "resolved", "interrupted", "expected"),
    [
        # colo: only the 24 h line-fault repair; resolved after 23 h → met
        ("colo", None, None, "2026-11-20T09:00:00+08:00", True, [("resolve", "met")]),
        # resolved after 25 h → breached
        ("colo", None, None, "2026-11-20T11:00:00+08:00", True, [("resolve", "breached")]),
        # unresolved at NOW = 26 h → breached
        ("colo", None, None, None, True, [("resolve", "breached")]),
        # integration: answered 59 min, on site 2h30m while interrupted (limit 2 h) → breached
        ("integration", "2026-11-19T10:59:00+08:00", "2026-11-19T12:30:00+08:00", None, True,
         [("answer", "met"), ("on_site", "breached")]),
        # the same visit when service was not interrupted (limit 4 h) → met
        ("integration", "2026-11-19T10:59:00+08:00", "2026-11-19T12:30:00+08:00", None, False,
         [("answer", "met"), ("on_site", "met")]),
        # answered after 1h00m01s → breached
        ("integration", "2026-11-19T11:00:01+08:00", "2026-11-19T11:30:00+08:00", None, True,
         [("answer", "breached"), ("on_site", "met")]),
    ],
)
def test_r19_repair(terms: str, ack: str | None, on_site: str | None, resolved: str | None,
                    interrupted: bool, expected: list[tuple[str, str]]) -> None:
    started = T("2026-11-19T10:00:00+08:00")
    now = T("2026-11-20T12:00:00+08:00")
    findings = check_repair("outages[3]", REPAIR_TERMS[terms], started, now,
                            opt(ack), opt(on_site), opt(resolved), interrupted)
    assert [(f.check, f.status) for f in findings] == expected
    assert all(f.rule == "R19" for f in findings)


def test_r19_pending_deadlines() -> None:
    started = T("2026-11-20T11:30:00+08:00")
    findings = check_repair("o1", REPAIR_TERMS["integration"], started, NOW)
    assert [(f.check, f.status, f.due_at) for f in findings] == [
        ("answer", "pending", T("2026-11-20T12:30:00+08:00")),
        ("on_site", "pending", T("2026-11-20T13:30:00+08:00")),
    ]


@pytest.mark.parametrize(
    ("outage_class", "terms", "resolved", "ended", "expected"),
    [
        # Only provider time under a contract with repair terms carries a repair duty.
        ("provider", "colo", None, None, [("resolve", "breached", None)]),
        ("customer", "colo", None, None, []),
        ("maintenance", "colo", None, None, []),
        ("excluded", "colo", None, None, []),
        ("unknown", "colo", None, None, []),  # the unknown-outage alert's business
        ("none", "colo", None, None, []),
        ("provider", None, None, None, []),  # no repair terms in the contract
        # Repaired at the resolve entry, else when the port forwarded again.
        ("provider", "colo", None, "2026-11-20T09:00:00+08:00",
         [("resolve", "met", "2026-11-20T09:00:00+08:00")]),
        ("provider", "colo", "2026-11-20T08:00:00+08:00", "2026-11-20T11:00:00+08:00",
         [("resolve", "met", "2026-11-20T08:00:00+08:00")]),
        ("provider", "colo", None, "2026-11-20T11:00:00+08:00",
         [("resolve", "breached", "2026-11-20T11:00:00+08:00")]),
        ("provider", "integration", None, None,
         [("answer", "breached", None), ("on_site", "breached", None)]),
    ],
)
def test_outage_repair_duty(outage_class: str, terms: str | None, resolved: str | None,
                            ended: str | None, expected: list[tuple[str, str, str | None]]) -> None:
    started = T("2026-11-19T10:00:00+08:00")
    now = T("2026-11-20T12:00:00+08:00")
    findings = outage_repair("#5", outage_class, REPAIR_TERMS[terms] if terms else None, started,
                             now, resolved_at=opt(resolved), ended_at=opt(ended))
    assert [(f.check, f.status, f.done_at) for f in findings] == [
        (c, st_, opt(d)) for c, st_, d in expected]
    assert all(f.subject == "#5" for f in findings)


def test_open_deadlines_counts_what_is_not_done() -> None:
    due = T("2026-11-20T12:00:00+08:00")

    def f(rule: str, check: str, status: Literal["met", "pending", "breached"],
          done: bool = False) -> Finding:
        return Finding(rule, check, "x", status, due, due if done else None, "")

    findings = [f("R13", "incident_report", "pending"), f("R13", "incident_report", "breached"),
                f("R13", "incident_report", "breached"), f("R13", "incident_report", "met", True),
                f("R19", "resolve", "breached", True),  # done late: nothing left to do
                f("R19", "answer", "pending")]
    assert open_deadlines(findings) == {
        ("R13", "incident_report", "pending"): 1,
        ("R13", "incident_report", "overdue"): 2,
        ("R19", "answer", "pending"): 1,
    }
    assert open_deadlines([]) == {}


@pytest.mark.parametrize(
    ("name", "paid", "credit_rule", "cap_paid_total", "notes"),
    [
        ("rental", 100_000, "rental", True, ()),
        ("rental", None, "rental", False,
         ("paid-total cap (R20) not applied: no paid total given (--paid-total)",)),
        ("colo", None, "colo", False, ()),
        ("colo", 5, "colo", False, ()),
        ("none", None, None, False, ("the contract names no credit rule (credit: none): seconds only",)),
    ],
)
def test_report_template(name: str, paid: int | None, credit_rule: str | None,
                         cap_paid_total: bool, notes: tuple[str, ...]) -> None:
    choice = report_template(name, BUILTIN_TEMPLATES, paid)
    assert (choice.credit_rule, choice.template.cap_paid_total, choice.notes) == (
        credit_rule, cap_paid_total, notes)
    if credit_rule is None:
        # Seconds by class are still reported, but nothing earns credit.
        assert choice.template.creditable_classes == frozenset()
        assert choice.template.name == "no credit rule"
    else:
        assert choice.template.rules == BUILTIN_TEMPLATES[name].rules


def test_month_to_date_counts_earlier_months_against_the_paid_total() -> None:
    # The same as test_paid_total_running_across_months, asked for December alone.
    records = (out("2026-11-03T10:00:00+08:00", "2026-11-03T11:00:00+08:00"),
               out("2026-12-03T10:00:00+08:00", "2026-12-03T11:00:00+08:00"))
    contract = ServerContract("s1", RENTAL, 72000, 300)
    dec = month_to_date(contract, records, (), "2026-12", SHANGHAI)
    assert (dec.credited_before_fen, dec.credit_fen, dec.caps_applied) == (200, 100,
                                                                           ("paid_total",))
    # Records only after the month, or none: the month alone.
    assert month_to_date(contract, records[1:], (), "2026-11", SHANGHAI) == server_month(
        contract, records[1:], (), "2026-11", SHANGHAI)
    assert month_to_date(contract, (), (), "2026-12", SHANGHAI) == server_month(
        contract, (), (), "2026-12", SHANGHAI)


# ------------------------------------------------------------------ properties

BASE = T("2026-11-28T00:00:00+08:00")  # near the end of November, so outages cross months
ALL_CAUSES = sorted(CAUSES)
ZONES = [SHANGHAI, timezone(timedelta(hours=-3)), timezone(timedelta(hours=5, minutes=30))]


@st.composite
def record_st(draw: st.DrawFn, causes: list[str] = ALL_CAUSES) -> OutageRecord:
    start = draw(st.integers(0, 6 * 86400))
    length = draw(st.integers(1, 2 * 86400))
    cause = draw(st.sampled_from(causes))
    fp = CAUSES[cause].outage_class == "customer" and draw(st.booleans())
    zone = draw(st.sampled_from(ZONES))
    s = (BASE + timedelta(seconds=start)).astimezone(zone)
    e = (BASE + timedelta(seconds=start + length)).astimezone(zone)
    return OutageRecord(f"r{start}-{length}-{cause}", "s1", s, e, cause, fp)


@st.composite
def window_st(draw: st.DrawFn) -> MaintenanceWindow:
    start = draw(st.integers(0, 6 * 86400))
    length = draw(st.integers(1, 86400))
    notice = draw(st.integers(-3600, 4 * 86400))
    kind: WindowKind = draw(st.sampled_from(WINDOW_KINDS))
    servers: tuple[str, ...] | Literal["all"] = draw(st.sampled_from([("s1",), ("s2",), "all"]))
    s = BASE + timedelta(seconds=start)
    return MaintenanceWindow(f"w{start}-{length}", kind, s, s + timedelta(seconds=length),
                             s - timedelta(seconds=notice), servers)


def union_seconds(records: list[OutageRecord]) -> int:
    # Independent of the engine: sort and sweep.
    spans = sorted((r.start.timestamp(), r.end.timestamp()) for r in records)
    total, cur_s, cur_e = 0, None, None
    for s, e in spans:
        if cur_e is None or s > cur_e:
            if cur_e is not None and cur_s is not None:
                total += int(cur_e - cur_s)
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None and cur_s is not None:
        total += int(cur_e - cur_s)
    return total


@settings(max_examples=200, deadline=None)
@given(st.lists(record_st(), min_size=1, max_size=8), st.lists(window_st(), max_size=4),
       st.sampled_from([RENTAL, COLO]), st.sampled_from(ZONES))
def test_every_second_in_exactly_one_class(records: list[OutageRecord],
                                           windows: list[MaintenanceWindow],
                                           template: CreditTemplate, zone: timezone) -> None:
    union = union_seconds(records)
    segments = classify("s1", records, windows, template)
    # sorted, disjoint, each with one valid class, and together exactly the union
    for a, b in zip(segments, segments[1:], strict=False):
        assert a.end <= b.start
    assert all(s.outage_class in CLASSES and s.seconds > 0 for s in segments)
    assert sum(s.seconds for s in segments) == union
    # the same holds month by month after splitting at the contract's month boundaries
    first = min(r.start for r in records)
    last = max(r.end for r in records)
    months = server_months(ServerContract("s1", template, 72000, 10**9), records, windows,
                           periods_between(first, last, zone), zone)
    by_class = {c: sum(m.seconds_by_class[c] for m in months) for c in CLASSES}
    assert sum(by_class.values()) == union
    for c in CLASSES:
        assert by_class[c] == sum(s.seconds for s in segments if s.outage_class == c)
    for m in months:
        assert sum(p.seconds for p in m.parts) == sum(m.seconds_by_class.values())


@settings(max_examples=200, deadline=None)
@given(st.lists(record_st(), min_size=1, max_size=8), st.lists(window_st(), max_size=3),
       st.integers(0, 200_000), st.integers(0, 200_000), st.integers(0, 200_000),
       st.sampled_from(["2026-11", "2026-12"]))
def test_rental_credit_never_exceeds_fee_or_paid(records: list[OutageRecord],
                                                 windows: list[MaintenanceWindow], fee: int,
                                                 paid: int, before: int, period: str) -> None:
    month = server_month(ServerContract("s1", RENTAL, fee, paid), records, windows, period,
                         SHANGHAI, before)
    assert 0 <= month.credit_fen <= fee
    assert month.credit_fen <= max(0, paid - before)


NON_PROVIDER = [c for c in ALL_CAUSES if CAUSES[c].outage_class != "provider"]


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 5 * 86400), st.integers(1, 3 * 86400), st.integers(1, 86400),
       st.lists(record_st(NON_PROVIDER).filter(lambda r: not r.false_positive), max_size=5),
       st.lists(window_st(), max_size=3), st.sampled_from([RENTAL, COLO]),
       st.integers(0, 5_000_000))
def test_credit_monotone_in_outage_length(start: int, length: int, extra: int,
                                          others: list[OutageRecord],
                                          windows: list[MaintenanceWindow],
                                          template: CreditTemplate, paid: int) -> None:
    # Lengthening a provider outage never lowers the credit. The other records are of
    # classes that earn nothing on their own, so merging with them cannot lose rounding.
    def total(seconds: int) -> tuple[int, int]:
        s = BASE + timedelta(seconds=start)
        rec = OutageRecord("main", "s1", s, s + timedelta(seconds=seconds), "provider_fault")
        records = [rec, *others]
        first = min(r.start for r in records)
        last = max(r.end for r in records)
        months = server_months(ServerContract("s1", template, 72000, paid), records, windows,
                               periods_between(first, last, SHANGHAI), SHANGHAI)
        return sum(m.credit_fen for m in months), sum(m.extension_s for m in months)

    shorter, longer = total(length), total(length + extra)
    assert longer[0] >= shorter[0]
    assert longer[1] >= shorter[1]
