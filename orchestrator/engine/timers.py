"""How long the engine may wait for its inbox, and the backoff after the store fails.

The engine thread never sleeps: a backoff is a deadline the loop honours,
serving from memory what needs no store meanwhile, and every wait is a wait
on the inbox, bounded by the next thing due (a run's timer, a lease renewal,
the end of a backoff or a drain).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

BACKOFF_S = (0.05, 0.2, 1.0, 2.0)
"""Pauses after consecutive store failures."""


class Backoff:
    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.failures = 0
        """Consecutive failed appends."""
        self._until: float | None = None
        self._monotonic = monotonic

    def failed(self) -> None:
        """An append failed: hold appends back for the next pause."""
        self.failures += 1
        self._until = self._monotonic() + self.pause_s()

    def succeeded(self) -> None:
        self.failures = 0

    def pause_s(self) -> float:
        return BACKOFF_S[min(max(self.failures, 1), len(BACKOFF_S)) - 1]

    def left_s(self) -> float:
        """Seconds until appends may be tried again (0 when not holding)."""
        if self._until is None:
            return 0.0
        left = self._until - self._monotonic()
        if left <= 0:
            self._until = None
            return 0.0
        return left


def until_due(due: datetime | None, now: datetime) -> float | None:
    """Seconds until ``due`` (never negative), or None when nothing is due."""
    return None if due is None else max(0.0, (due - now).total_seconds())


def earliest(*waits: float | None) -> float | None:
    """The shortest of the waits given, ignoring None (None if all are)."""
    known = [wait for wait in waits if wait is not None]
    return min(known) if known else None
