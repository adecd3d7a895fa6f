"""Named places where a test can have this process killed, to prove a crash there loses nothing.

``EVENFLOW_CRASH_AT=name`` (or ``name@N``, the N-th time the place is passed)
makes ``crash_point(name)`` SIGKILL its own process there: no cleanup, no
flush, exactly what a power cut or OOM kill does. Unset, a crash point costs
one comparison. Tests parametrise over ``POINTS``.
"""

from __future__ import annotations

import os
import signal
import threading

CRASH_ENV = "EVENFLOW_CRASH_AT"

POINTS = (
    "after-append-before-dispatch",
    "after-outcome-before-append",
    "mid-batch",
    "after-append-before-ack",
    "after-submit-append-before-answer",
    "after-lease-acquired",
    "listener-after-trigger-before-checkpoint",
)


def _armed() -> tuple[str, int] | None:
    spec = os.environ.get(CRASH_ENV)
    if not spec:
        return None
    name, _, count = spec.partition("@")
    if name not in POINTS:
        raise ValueError(f"{CRASH_ENV}={spec!r} names no crash point; known: {', '.join(POINTS)}")
    return name, int(count or 1)


_ARMED = _armed()
_passes = 0
_lock = threading.Lock()


def crash_point(name: str) -> None:
    """SIGKILL this process if ``EVENFLOW_CRASH_AT`` names this place (and its pass count is reached)."""
    global _passes
    if _ARMED is None or _ARMED[0] != name:
        return
    with _lock:
        _passes += 1
        if _passes >= _ARMED[1]:
            os.kill(os.getpid(), signal.SIGKILL)


def armed(name: str) -> bool:
    """Whether this process would die at ``name`` on its next pass (for places that must split work)."""
    return _ARMED is not None and _ARMED[0] == name and _passes + 1 >= _ARMED[1]
