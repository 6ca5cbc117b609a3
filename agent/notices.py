"""Turns ladder notices into customer e-mails (R9): the adapter between the enforcer and drivers/notify."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rackwarden.drivers.notify import Notice, NoticeSender, figures_from_metrics
from rackwarden.drivers.notify.notice import Figure, Reason, local_time
from rackwarden.drivers.switch.restrictions import SERVICE_PORTS
from rackwarden.policies import ladder as L
from rackwarden.policies.cap import CapAnnouncement

from .config import Config, ServerConfig


class CustomerNotices:
    """Builds a Notice from a ladder intent and sends it; a failure means the customer is unreachable."""

    # Any NoticeSender: SmtpNotifier in the agent, the sim's relay in tests/sim.
    def __init__(self, config: Config, smtp: NoticeSender):
        self.config = config
        self.smtp = smtp

    def notice(self, server: ServerConfig, intent: L.Notify, rung: L.Rung, at: datetime, *,
               enforced_rate_bps: int | None = None) -> Notice:
        """`enforced_rate_bps`: the rate the switch read back for a throttle (it may round the cap
        down), which the notice states instead of the rate the ladder asked for."""
        t = self.config.templates[server.template]
        # The enforcement step decided what this notice may promise (a grace end, a term end
        # or nothing); a deadline recomputed here from the config could promise a grace
        # period that never runs.
        until = intent.until
        ev = intent.evidence
        return Notice(
            key=intent.key, server=server.id, customer=server.customer, to=server.contacts,
            reason=intent.reason, stage=intent.stage, rule=ev.rule, summary=ev.summary,
            figures=figures_from_metrics(list(ev.figures)), at=at, until=until, timezone=t.timezone,
            evidence_refs=ev.refs, language=self.config.notify.language,  # type: ignore[arg-type]
            operator_contact=self.config.notify.operator_contact,
            **restriction_fields(intent, enforced_rate_bps),
        )

    async def send(self, server: ServerConfig, intent: L.Notify, rung: L.Rung, at: datetime, *,
                   enforced_rate_bps: int | None = None) -> tuple[bool, str]:
        notice = self.notice(server, intent, rung, at, enforced_rate_bps=enforced_rate_bps)
        return await self.send_notice(notice, at)

    def cap_notice(self, server: ServerConfig, ann: CapAnnouncement, at: datetime) -> Notice:
        """R3: the new standard, when it applies, and until when the customer may object."""
        t = self.config.templates[server.template]
        when = local_time(ann.effective_at, t.timezone)
        return Notice(
            key=ann.key, server=server.id, customer=server.customer, to=server.contacts,
            reason="standard", stage="cap_change", rule="R3 (rental §2.1.1): the standard may change with notice",
            summary=f"{ann.from_bps / 1e6:g} → {ann.to_bps / 1e6:g} Mbit/s from {when}",
            figures=(("cap_now", ann.from_bps / 1e6, "Mbit/s"), ("cap_new", ann.to_bps / 1e6, "Mbit/s")),
            at=at, until=ann.objection_until, timezone=t.timezone, language=self.config.notify.language,  # type: ignore[arg-type]
            operator_contact=self.config.notify.operator_contact,
        )

    async def send_notice(self, notice: Notice, at: datetime) -> tuple[bool, str]:
        d = await self.smtp.send(notice, at=at)
        return d.delivered, d.detail


def restriction_fields(intent: L.Notify, enforced_rate_bps: int | None = None) -> dict[str, Any]:
    """The Notice fields for the restriction a ladder notice is about; {} when it is about none.

    A warning may name the restriction that follows its grace period; the restriction and
    lifted stages must (Notice refuses them otherwise). The ports of a blocked service are the
    ones the switch drivers drop, so the notice and the ACL cannot disagree.
    """
    r = intent.restriction
    if r is None or intent.stage not in ("warning", "restriction", "lifted"):
        return {}
    if r.kind == "throttle":
        # The ladder's rate is the cap it asked for; a vendor may police a little below it.
        # A lifted notice says the full rate is back and quotes the old limit only when known.
        rate = enforced_rate_bps if enforced_rate_bps is not None or intent.stage == "lifted" else r.rate_bps
        return {"restriction": "throttle", "rate_bps": rate}
    return {"restriction": r.kind, "service": r.service,
            "service_ports": SERVICE_PORTS.get(r.service or "", ())}


def recheck_notice(config: Config, server: ServerConfig, *, key: str, reason: Reason, restored: bool, rule: str,
                   summary: str, figures: tuple[Figure, ...], at: datetime) -> Notice:
    """The answer to a customer's re-check request (the console's "Fixed — please re-check"):
    passed (the restriction is lifted) or refused, with the figures the page shows."""
    t = config.templates[server.template]
    return Notice(
        key=key, server=server.id, customer=server.customer, to=server.contacts,
        reason=reason,
        stage="recheck_restored" if restored else "recheck_refused", rule=rule, summary=summary,
        figures=figures, at=at, until=None, timezone=t.timezone,
        language=config.notify.language,  # type: ignore[arg-type]
        operator_contact=config.notify.operator_contact,
    )
