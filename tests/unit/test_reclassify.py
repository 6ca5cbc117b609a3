"""Table tests of operators' reclassification and of where an outage stands (policies/sla.py)."""

from __future__ import annotations

import itertools

import pytest
from rackwarden.policies.sla import (
    CAUSES,
    RECLASS_TARGETS,
    Classification,
    ReclassificationError,
    reclassification,
    standing_class,
)

# The cause vocabulary by class, written out here so a new cause must be placed in this table.
PROVIDER = ("provider_fault", "switch_reboot", "ports_down_together", "line_fault", "power_fault",
            "planned_work", "cutover")
CUSTOMER = ("overage", "abuse", "nonpayment", "customer_fault", "customer_request")
EXCLUDED = ("force_majeure",)
UNKNOWN = ("unknown", "port_oper_down", "switch_unreachable")

# target → (default cause, causes it accepts, the class recorded). Maintenance is written as a
# provider cause: only a declared window with notice turns it into maintenance (R17).
ACCEPTS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "provider": ("provider_fault", PROVIDER, "provider"),
    "customer": ("customer_fault", CUSTOMER, "customer"),
    "maintenance": ("planned_work", ("planned_work", "cutover"), "provider"),
    "excluded": ("force_majeure", EXCLUDED, "excluded"),
}
TARGETS = (*RECLASS_TARGETS, "unknown", "bogus")  # the last two are not targets
CAUSE_ARGS: tuple[str | None, ...] = (None, *CAUSES, "typo")
# The outage of the product table: an overage suspension (an enforcement), still so classed.
OUTAGE, CURRENT, RECORDED = "7", "overage", "overage"

FP_NEEDS_PROVIDER = "--false-positive makes the outage provider time: use --class provider"
FP_NO_CAUSE = "--cause cannot be combined with --false-positive"
NONE_NO_CAUSE = "--class none takes no --cause"


def test_table_covers_the_vocabulary() -> None:
    assert sorted((*PROVIDER, *CUSTOMER, *EXCLUDED, *UNKNOWN)) == sorted(CAUSES)
    assert set(RECLASS_TARGETS) == {*ACCEPTS, "none"}


def expected(target: str, cause: str | None, fp: bool) -> Classification | str:
    """The table's answer: what is recorded, or the error message."""
    if fp:
        if target != "provider":
            return FP_NEEDS_PROVIDER
        return Classification("provider", CURRENT, True) if cause in (None, CURRENT) else FP_NO_CAUSE
    if target == "none":
        return Classification("none", None) if cause is None else NONE_NO_CAUSE
    if target not in ACCEPTS:
        return f"class must be one of provider, customer, maintenance, excluded, none, got {target!r}"
    default, accepted, recorded = ACCEPTS[target]
    if cause is None:
        return Classification(recorded, default)
    if cause not in CAUSES:
        return f"unknown cause {cause!r}; known: {', '.join(CAUSES)}"
    if cause in accepted:
        return Classification(recorded, cause)
    return f"cause {cause!r} is not of class {target}"


@pytest.mark.parametrize(("target", "cause", "fp"),
                         list(itertools.product(TARGETS, CAUSE_ARGS, (False, True))))
def test_every_target_cause_and_false_positive(target: str, cause: str | None, fp: bool) -> None:
    want = expected(target, cause, fp)
    if isinstance(want, str):
        with pytest.raises(ReclassificationError) as err:
            reclassification(OUTAGE, CURRENT, RECORDED, target, cause, fp)
        assert str(err.value) == want
    else:
        assert reclassification(OUTAGE, CURRENT, RECORDED, target, cause, fp) == want


@pytest.mark.parametrize(
    ("current", "recorded", "result"),
    [
        ("overage", "overage", "overage"),
        ("nonpayment", "abuse", "nonpayment"),  # the cause now comes first
        (None, "abuse", "abuse"),  # an operator said "none"; the enforcement was still abuse
        ("provider_fault", "abuse", "abuse"),  # reclassified provider, recorded an enforcement
        ("abuse", "port_oper_down", "abuse"),  # the agent's later evidence found the enforcement
        ("customer_fault", "port_oper_down", "customer_fault"),  # an operator's customer class
        ("port_oper_down", "port_oper_down", None),
        ("provider_fault", "switch_reboot", None),
        (None, "switch_unreachable", None),
        ("force_majeure", "force_majeure", None),
    ],
)
def test_false_positive_needs_an_enforcement(current: str | None, recorded: str,
                                             result: str | None) -> None:
    if result is None:
        with pytest.raises(ReclassificationError) as err:
            reclassification("12", current, recorded, "provider", None, True)
        assert str(err.value) == (
            f"outage 12 ({recorded}) was not an enforcement or customer outage; a false "
            f"positive applies only to those. Use --class provider.")
    else:
        assert reclassification("12", current, recorded, "provider", None, True) == (
            Classification("provider", result, True))


@pytest.mark.parametrize(
    ("agent_cause", "operator", "standing"),
    [
        ("port_oper_down", None, Classification("unknown", "port_oper_down")),
        ("switch_reboot", None, Classification("provider", "switch_reboot")),
        ("abuse", None, Classification("customer", "abuse")),
        ("force_majeure", None, Classification("excluded", "force_majeure")),
        # An operator's decision wins over whatever the agent says later.
        ("port_oper_down", Classification("customer", "customer_fault"),
         Classification("customer", "customer_fault")),
        ("abuse", Classification("provider", "abuse", True), Classification("provider", "abuse", True)),
        ("switch_unreachable", Classification("none", None), Classification("none", None)),
        ("port_oper_down", Classification("provider", "planned_work"),
         Classification("provider", "planned_work")),
        # The cause decides the class, whatever class an entry wrote beside it.
        ("port_oper_down", Classification("customer", "line_fault"),
         Classification("provider", "line_fault")),
    ],
)
def test_standing_class(agent_cause: str, operator: Classification | None,
                        standing: Classification) -> None:
    assert standing_class(agent_cause, operator) == standing


def test_standing_class_refuses_unknown_causes() -> None:
    with pytest.raises(ValueError, match="unknown cause 'typo'"):
        standing_class("typo", None)
