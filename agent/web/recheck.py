"""The answer to a customer's "Fixed — please re-check": what the page shows and the e-mail says.

The request itself runs through the ladder (Enforcer.restore, the enforcement step with its
rails); this module only words its outcome, from facts the caller gathered. Pure: no I/O, no
clock. Page and e-mail are built from one `RecheckAnswer`, so they cannot tell different stories.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rackwarden.drivers.notify.notice import Figure

CAP_STATES = {0: "ok", 1: "over", 2: "sustained"}  # rackwarden_server_cap_state's values


@dataclass(frozen=True)
class Measured:
    """The last poll's verdict for the server, as metering published it."""

    out_bps: float | None  # what the server sends; None: no valid rate at the last poll
    in_bps: float | None
    cap_bps: int
    state: str | None  # ok / over / sustained; None: not polled yet

    @staticmethod
    def of(out_bps: float | None, in_bps: float | None, cap_bps: int, state: float | None) -> Measured:
        def rate(v: float | None) -> float | None:
            return None if v is None or math.isnan(v) else v
        return Measured(rate(out_bps), rate(in_bps), cap_bps,
                        None if state is None or math.isnan(state) else CAP_STATES.get(int(state)))


@dataclass(frozen=True)
class RecheckAnswer:
    reason: str  # overage or abuse
    restored: bool  # this reason's restriction is lifted
    port_up: bool  # and nothing else holds the port shut: it forwards again
    why: str  # in English, for the page, the e-mail and the audit record
    measured: Measured

    def figures(self) -> tuple[Figure, ...]:
        """The figures of the e-mail, written as the page writes them (two decimals, Mbit/s)."""
        m = self.measured
        return (("rate_out", _mbit(m.out_bps), "Mbit/s"), ("rate_in", _mbit(m.in_bps), "Mbit/s"),
                ("cap", _mbit(m.cap_bps), "Mbit/s"), ("port", "up" if self.port_up else "down", ""))


def _mbit(bps: float | None) -> str:
    return "-" if bps is None else f"{bps / 1e6:.2f}"


def still_over(reason: str, m: Measured) -> str | None:
    """Why the traffic still breaks the rule the restriction is for, or None.

    Only an overage can be judged from the poll: the last verdict over the cap means the fix
    has not taken (a restriction that lets traffic through, or traffic that resumed), and a
    restore would only start a new episode. An abuse finding is judged by the ladder itself
    when it sees the detector's next observation.
    """
    if reason != "overage" or m.state not in ("over", "sustained"):
        return None
    return (f"the traffic is still over the rule: {_mbit(m.out_bps)} Mbit/s out, {_mbit(m.in_bps)} Mbit/s in "
            f"against the {_mbit(m.cap_bps)} Mbit/s cap at the last poll")


def answer(reason: str, m: Measured, *, over: str | None, error: str | None, phase_after: str,
           refused: str | None, others_shut: tuple[str, ...], last_restore_state: str | None) -> RecheckAnswer:
    """The outcome of one re-check: refused before the ladder was asked (`over`), refused by the
    enforcer (`error`, or the rung still shut with the rail's `refused` reason), or accepted:
    the rung left `shut`; the port forwards again when the switch read the restore back and no
    other reason holds it shut."""
    if over is not None:
        return RecheckAnswer(reason, False, False, over, m)
    if error is not None:
        return RecheckAnswer(reason, False, False, error, m)
    if phase_after == "shut":
        return RecheckAnswer(reason, False, False, refused or "the ladder kept the suspension", m)
    if phase_after == "restricted":
        # The ladder lifts a throttle or a blocked service only on traffic measured within the rule.
        return RecheckAnswer(reason, False, True, refused or "the traffic still violates the rule at the last"
                             " measurement; the restriction stays", m)
    if others_shut:
        return RecheckAnswer(reason, True, False,
                             f"the {reason} suspension is lifted; the port stays shut for {', '.join(others_shut)}", m)
    if last_restore_state == "APPLIED":
        return RecheckAnswer(reason, True, True, "the port is restored: the switch read it back", m)
    if last_restore_state == "DRYRUN":
        return RecheckAnswer(reason, True, False, "the suspension is lifted (notify mode: the switch was not changed)",
                             m)
    return RecheckAnswer(reason, True, False, "the suspension is lifted; the switch has not confirmed the restore "
                                              f"({last_restore_state or 'no record'}), the operator is told", m)
