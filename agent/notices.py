"""Turns ladder notices into customer e-mails (R9): the adapter between the enforcer and drivers/notify."""

from __future__ import annotations

from datetime import datetime

from rackwarden.drivers.notify import Notice, SmtpNotifier, figures_from_metrics
from rackwarden.policies import ladder as L

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
        d = await self.smtp.send(self.notice(server, intent, rung, at), at=at)
        return d.delivered, d.detail
