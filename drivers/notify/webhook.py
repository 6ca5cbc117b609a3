"""On-call events as JSON POSTs to a webhook (chat bridges, ticketing); failures return False."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from .base import SecretLike
from .httppost import HttpResult, check_url, post_json


class WebhookNotifier:
    """POSTs events to one URL with an optional bearer token; no I/O until used."""

    def __init__(
        self,
        url: str,
        *,
        bearer_token: SecretLike | None = None,
        timeout_s: float = 5.0,
        tls_cafile: str | None = None,
    ):
        self.url = check_url(url)
        self._token = bearer_token
        self.timeout_s = timeout_s
        self.tls_cafile = tls_cafile
        self.last_result: HttpResult | None = None  # the detail of the latest post

    def __repr__(self) -> str:
        return f"WebhookNotifier({self.url!r}{', bearer=<secret>' if self._token else ''})"

    @property
    def last_detail(self) -> str:
        return self.last_result.detail if self.last_result else ""

    async def post(self, event: Mapping[str, Any]) -> bool:
        """POST `event` as UTF-8 JSON (datetimes as RFC 3339); True on any 2xx."""
        headers = {"Authorization": f"Bearer {self._token.reveal()}"} if self._token else {}
        self.last_result = await post_json(self.url, dict(event), timeout_s=self.timeout_s,
                                           headers=headers, cafile=self.tls_cafile)
        return self.last_result.ok

    # Notifier protocol: what OnCall calls.
    async def alert(
        self,
        name: str,
        severity: str,
        labels: Mapping[str, str],
        summary: str,
        description: str,
        at: datetime,
    ) -> bool:
        return await self.post(alert_event("firing", name, severity, labels, at,
                                           summary=summary, description=description))

    async def resolve_alert(
        self, name: str, severity: str, labels: Mapping[str, str], at: datetime
    ) -> bool:
        return await self.post(alert_event("resolved", name, severity, labels, at))


def alert_event(
    status: str,
    name: str,
    severity: str,
    labels: Mapping[str, str],
    at: datetime,
    *,
    summary: str = "",
    description: str = "",
) -> dict[str, Any]:
    """The webhook body for an on-call alert: flat, stable keys, `at` with its offset."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("alert times must be aware datetimes")
    event: dict[str, Any] = {
        "source": "rackwarden",
        "kind": "alert",
        "status": status,
        "name": name,
        "severity": severity,
        "labels": dict(labels),
        "at": at.isoformat(),
    }
    if status == "firing":
        event["summary"] = summary
        event["description"] = description
    return event
