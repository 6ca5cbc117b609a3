"""Fan-out of on-call alerts to every configured sink (Alertmanager and/or webhooks)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Mapping
from datetime import datetime

from .base import Notifier

log = logging.getLogger(__name__)


class OnCall:
    """The one object the enforcer pages through; results per sink name, never an exception."""

    def __init__(self, sinks: Mapping[str, Notifier]):
        self.sinks = dict(sinks)

    def __repr__(self) -> str:
        return f"OnCall({sorted(self.sinks)})"

    async def alert(
        self,
        name: str,
        severity: str,
        labels: Mapping[str, str],
        summary: str,
        description: str,
        at: datetime,
    ) -> dict[str, bool]:
        """Send to all sinks at once; {} when none is configured (the caller sees nobody paged)."""
        return await self._fan_out(
            name, {k: s.alert(name, severity, labels, summary, description, at)
                   for k, s in self.sinks.items()})

    async def resolve_alert(
        self, name: str, severity: str, labels: Mapping[str, str], at: datetime
    ) -> dict[str, bool]:
        return await self._fan_out(
            name, {k: s.resolve_alert(name, severity, labels, at) for k, s in self.sinks.items()})

    async def _fan_out(self, name: str, calls: Mapping[str, Awaitable[bool]]) -> dict[str, bool]:
        # Sinks run concurrently so a slow webhook cannot delay the Alertmanager page.
        results = await asyncio.gather(*calls.values(), return_exceptions=True)
        out: dict[str, bool] = {}
        for sink, result in zip(calls, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result  # cancellation and the like are not a sink's failure
                # A sink is meant to return False; one that raises must not silence the others.
                log.warning("on-call sink %s raised for alert %s: %r", sink, name, result)
                out[sink] = False
            else:
                if not result:
                    detail = getattr(self.sinks[sink], "last_detail", "")
                    log.warning("on-call sink %s did not take alert %s: %s", sink, name, detail)
                out[sink] = bool(result)
        return out
