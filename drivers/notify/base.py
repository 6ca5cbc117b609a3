"""The notify seams: what the enforcer holds (Protocols) and what a delivery attempt returns."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from .notice import Notice


class SecretLike(Protocol):
    """A credential that prints as a mask; only `.reveal()` yields the value (config owns it)."""

    def reveal(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Delivery:
    """The outcome of one notice attempt; `delivered=False` means "unreachable" to R9."""

    delivered: bool
    detail: str  # for the ledger and people: what happened, never a credential
    at: datetime | None = None  # the caller's time of the attempt, passed in
    message_id: str = ""  # so the ledger can match a resend to the first attempt
    refused: tuple[str, ...] = ()  # recipients the server refused (partial delivery included)
    retryable: bool = False  # network trouble and 4xx may pass; 5xx and "no address" will not


class NoticeSender(Protocol):
    """Sends one customer notice; never raises for delivery failures."""

    async def send(self, notice: Notice, *, at: datetime | None = None) -> Delivery: ...


class Notifier(Protocol):
    """One on-call sink (Alertmanager, a webhook); returns False instead of raising.

    An alert is identified by (name, severity, labels): `resolve_alert` with the same three
    ends the one `alert` started.
    """

    async def alert(
        self,
        name: str,
        severity: str,
        labels: Mapping[str, str],
        summary: str,
        description: str,
        at: datetime,
    ) -> bool: ...

    async def resolve_alert(
        self, name: str, severity: str, labels: Mapping[str, str], at: datetime
    ) -> bool: ...
