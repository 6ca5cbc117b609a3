"""Safety rails that fail closed: what may never be shut, how many shuts a window allows, when to stop and page."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

Rail = Literal["protected_port", "unknown_port", "held", "switch_budget", "global_budget",
               "breaker", "mode"]


@dataclass(frozen=True, slots=True)
class SafetyConfig:
    max_shuts_per_switch: int = 2  # K per budget window
    max_shuts_total: int = 5  # M per budget window, all switches
    budget_window_s: float = 3600.0
    breaker_fraction: float = 0.5  # more than this share of a switch's servers breaching at once
    breaker_min_servers: int = 3  # a 2-server switch with one violator is not a broken meter


@dataclass(frozen=True, slots=True)
class SafetyState:
    recent_shuts: tuple[tuple[datetime, str], ...] = ()  # (at, switch)
    open_breakers: tuple[tuple[str, datetime, str], ...] = ()  # (switch, at, why)

    def breaker_open(self, switch: str) -> bool:
        return any(s == switch for s, _, _ in self.open_breakers)


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    rail: Rail | None = None
    reason: str = ""


def _recent(state: SafetyState, cfg: SafetyConfig, at: datetime) -> list[tuple[datetime, str]]:
    since = at - timedelta(seconds=cfg.budget_window_s)
    return [(t, s) for t, s in state.recent_shuts if t > since]


def check_shut(
    state: SafetyState,
    cfg: SafetyConfig,
    at: datetime,
    *,
    switch: str,
    port: str,
    inventory_ports: tuple[str, ...],
    protected_ports: frozenset[str],
    managed: bool,
    held: bool = False,
) -> Verdict:
    """May this port be shut now? Every refusal names its rail; unknown means no."""
    if port in protected_ports:
        return Verdict(False, "protected_port", f"{switch} {port} is protected (uplink/trunk)")
    if port not in inventory_ports or not managed:
        return Verdict(False, "unknown_port", f"{switch} {port} is not a customer port in the inventory")
    if held:
        return Verdict(False, "held", "server is on hold: exempt from automation")
    if state.breaker_open(switch):
        return Verdict(False, "breaker", f"breaker open on {switch}: too many servers breaching at once")
    recent = _recent(state, cfg, at)
    on_switch = sum(1 for _, s in recent if s == switch)
    if on_switch >= cfg.max_shuts_per_switch:
        return Verdict(False, "switch_budget",
                       f"{on_switch} shuts on {switch} in {cfg.budget_window_s:g} s"
                       f" (budget {cfg.max_shuts_per_switch})")
    if len(recent) >= cfg.max_shuts_total:
        return Verdict(False, "global_budget",
                       f"{len(recent)} shuts in {cfg.budget_window_s:g} s (budget {cfg.max_shuts_total})")
    return Verdict(True)


def record_shut(state: SafetyState, cfg: SafetyConfig, at: datetime, switch: str) -> SafetyState:
    return replace(state, recent_shuts=tuple(_recent(state, cfg, at)) + ((at, switch),))


def evaluate_breaker(
    state: SafetyState, cfg: SafetyConfig, at: datetime, *, switch: str, breaching: int, servers: int
) -> tuple[SafetyState, str | None]:
    """Open the switch's breaker when too many of its servers breach at once.

    An open breaker stays open until an operator resets it: a broken meter that recovers on
    its own is still a meter nobody should trust without looking.
    """
    if state.breaker_open(switch) or servers < cfg.breaker_min_servers:
        return state, None
    if breaching > cfg.breaker_fraction * servers:
        why = f"{breaching} of {servers} servers on {switch} breaching at once (> {cfg.breaker_fraction:.0%})"
        return replace(state, open_breakers=state.open_breakers + ((switch, at, why),)), why
    return state, None


def reset_breaker(state: SafetyState, switch: str) -> SafetyState:
    return replace(state, open_breakers=tuple(b for b in state.open_breakers if b[0] != switch))
