"""The soak, short: three simulated days that meet every kind of trouble in tests/sim/soak.py's
plan once (`make soak` runs thirty), then the offline audit: buckets, 95th percentile and credits
recomputed from the raw polls and the ledger, the ledger's chain, and memory after warm-up."""

from __future__ import annotations

from pathlib import Path

from tests.sim.soak import RSS_BOUND_MB, check, run_soak


def test_three_days_of_trouble_leave_billing_credits_and_ledger_exact(tmp_path: Path) -> None:
    fig = run_soak(3, 7, tmp_path)
    assert check(fig) == []
    # The plan really met its trouble (a soak that saw nothing would prove nothing).
    assert fig["restarts"] == 1 and fig["reloads"] == 1
    assert {"provider", "unknown", "customer"} <= set(fig["outages_by_class"])
    assert any(a.startswith("shut ") and a.endswith(" APPLIED") for a in fig["actions"])
    assert fig["report_seconds_by_class"]["maintenance"] > 0
    assert sum(fig["credits_fen"].values()) > 0 and fig["billed_octets"] > 0
    assert fig["rss_growth_mb"] <= RSS_BOUND_MB
