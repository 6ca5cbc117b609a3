"""Turns ladder notices into customer e-mails (R9): the adapter between the enforcer and drivers/notify."""

from __future__ import annotations

from datetime import datetime

from rackwarden.drivers.notify import Notice, SmtpNotifier, figures_from_metrics
from rackwarden.drivers.notify.notice import local_time
from rackwarden.policies import ladder as L
from rackwarden.policies.cap import CapAnnouncement

from .config import Config, ServerConfig


class CustomerNotices:
    """Builds a Notice from a ladder intent and sends it; a failure means the customer is unreachable."""

    def __init__(self, config: Config, smtp: SmtpNotifier):
        self.config = config
        self.smtp = smtp

    def notice(self, server: ServerConfig, intent: L.Notify, rung: L.Rung, at: datetime) -> Notice:
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
        )

    async def send(self, server: ServerConfig, intent: L.Notify, rung: L.Rung, at: datetime) -> tuple[bool, str]:
        return await self.send_notice(self.notice(server, intent, rung, at), at)

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
