"""Clocks: the system one, and a fake that tests move by hand."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from .events import to_millis, utcnow


class SystemClock:
    def now(self) -> datetime:
        return utcnow()


class FakeClock:
    """A clock that only moves when told to; safe to read from several threads."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = to_millis(start or datetime(2026, 1, 1, tzinfo=UTC))
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta) -> datetime:
        with self._lock:
            self._now = to_millis(self._now + delta)
            return self._now
