"""The one module that reads real time; everything else is handed a Clock."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Monotonic seconds, for intervals and rates."""
        ...

    def at(self) -> datetime:
        """Aware UTC wall time, for records and billing."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.monotonic()

    def at(self) -> datetime:
        return datetime.now(UTC)


class FakeClock:
    """A clock tests advance by hand."""

    def __init__(self, start_at: datetime, start_now: float = 1000.0):
        if start_at.tzinfo is None:
            raise ValueError("FakeClock needs an aware datetime")
        self._at = start_at
        self._now = start_now

    def now(self) -> float:
        return self._now

    def at(self) -> datetime:
        return self._at

    def advance(self, seconds: float) -> None:
        from datetime import timedelta

        self._now += seconds
        self._at += timedelta(seconds=seconds)
