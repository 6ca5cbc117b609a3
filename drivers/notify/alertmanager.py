"""On-call alerts pushed to Alertmanager's v2 API (POST /api/v2/alerts); failures return False."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from .base import SecretLike
from .httppost import HttpResult, check_url, post_json

_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")  # Alertmanager 0.25's classic label names


def rfc3339(at: datetime) -> str:
    """An aware time as Alertmanager's date-time: UTC, milliseconds, "Z"."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("alert times must be aware datetimes")
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def postable_alert(
    alertname: str,
    labels: Mapping[str, object],
    annotations: Mapping[str, object],
    starts_at: datetime | None,
    ends_at: datetime | None,
    generator_url: str | None = None,
) -> dict[str, Any]:
    """One `postableAlert` of the v2 OpenAPI schema; raises ValueError on unusable labels."""
    # Empty values mean "no label" to Alertmanager; dropping them keeps fingerprints stable.
    merged = {str(k): str(v) for k, v in labels.items() if str(v) != ""}
    merged["alertname"] = alertname
    bad = sorted(k for k in merged if not _LABEL_NAME.match(k))
    if not alertname or bad:
        raise ValueError(f"invalid label names {bad}" if bad else "alertname must not be empty")
    alert: dict[str, Any] = {
        "labels": merged,
        "annotations": {str(k): str(v) for k, v in annotations.items() if str(v) != ""},
    }
    if starts_at is not None:
        alert["startsAt"] = rfc3339(starts_at)
    if ends_at is not None:
        alert["endsAt"] = rfc3339(ends_at)
    if starts_at is not None and ends_at is not None and ends_at < starts_at:
        raise ValueError("ends_at is before starts_at (Alertmanager answers 400)")
    if generator_url:
        alert["generatorURL"] = generator_url
    return alert


class AlertmanagerClient:
    """Talks to one Alertmanager (or an HA peer list's load balancer); no I/O until used."""

    def __init__(
        self,
        url: str,
        timeout_s: float = 5.0,
        *,
        bearer_token: SecretLike | None = None,  # for an authenticating proxy in front
        generator_url: str | None = None,  # a link back to the agent's status page
        tls_cafile: str | None = None,
    ):
        base = check_url(url).rstrip("/")
        # Accept the base URL or the endpoint itself: both appear in operators' configs.
        self.endpoint = base if base.endswith("/api/v2/alerts") else base + "/api/v2/alerts"
        self.timeout_s = timeout_s
        self._token = bearer_token
        self.generator_url = generator_url
        self.tls_cafile = tls_cafile
        self.last_result: HttpResult | None = None  # the detail of the latest post

    def __repr__(self) -> str:
        return f"AlertmanagerClient({self.endpoint!r})"

    @property
    def last_detail(self) -> str:
        return self.last_result.detail if self.last_result else ""

    async def post_alerts(self, alerts: Sequence[Mapping[str, Any]]) -> HttpResult:
        """POST a list of postable alerts as they are; the result keeps the HTTP detail."""
        headers = {"Authorization": f"Bearer {self._token.reveal()}"} if self._token else {}
        result = await post_json(self.endpoint, list(alerts), timeout_s=self.timeout_s,
                                 headers=headers, cafile=self.tls_cafile)
        self.last_result = result
        return result

    async def fire(
        self,
        alertname: str,
        labels: Mapping[str, object],
        annotations: Mapping[str, object],
        starts_at: datetime,
        ends_at: datetime | None = None,
    ) -> bool:
        """Fire (or refresh) an alert. Without `ends_at` it resolves after Alertmanager's
        resolve_timeout unless fired again, so long-lived conditions are re-fired."""
        try:
            alert = postable_alert(alertname, labels, annotations, starts_at, ends_at,
                                   self.generator_url)
        except ValueError as e:
            self.last_result = HttpResult(False, None, f"not sent: {e}")
            return False
        return (await self.post_alerts([alert])).ok

    async def resolve(
        self,
        alertname: str,
        labels: Mapping[str, object],
        ends_at: datetime,
        *,
        annotations: Mapping[str, object] | None = None,
        starts_at: datetime | None = None,
    ) -> bool:
        """Resolve the alert with these labels (same fingerprint) as of `ends_at`, now-ish."""
        try:
            alert = postable_alert(alertname, labels, annotations or {}, starts_at, ends_at,
                                   self.generator_url)
        except ValueError as e:
            self.last_result = HttpResult(False, None, f"not sent: {e}")
            return False
        return (await self.post_alerts([alert])).ok

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
        return await self.fire(name, {**labels, "severity": severity},
                               {"summary": summary, "description": description}, at)

    async def resolve_alert(
        self, name: str, severity: str, labels: Mapping[str, str], at: datetime
    ) -> bool:
        # The same label set as `alert` sent, or Alertmanager sees a different alert.
        return await self.resolve(name, {**labels, "severity": severity}, at)
