"""The one way tests wait: poll a condition until it holds, or fail naming what never happened.

No test sleeps a fixed time to let something happen; it states the outcome it
waits for and a generous deadline, so a busy machine only makes it slower.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

DEADLINE_S = 60.0
"""Long enough for a loaded CI machine; a passing test never waits it out."""


def wait_until(
    condition: Callable[[], T],
    *,
    timeout: float = DEADLINE_S,
    what: str = "the condition",
    every: float = 0.01,
) -> T:
    """``condition()``'s first truthy value, checked every ``every`` s; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout:g}s: {what}")
        pause.wait(every)
