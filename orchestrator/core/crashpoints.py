"""Named places where a test can have this process killed, to prove a crash there loses nothing.

A test arms a process with ``arm("name")`` (or ``"name@N"``: the N-th time the
place is passed); from then on ``crash_point(name)`` SIGKILLs its own process
there: no cleanup, no flush, exactly what a power cut or OOM kill does. A test
arms a child process through ``EVENFLOW_CRASH_AT``, which the child's entry
point (``evenflow``'s ``main``, a test's child ``main``) hands to
``arm_from_environment`` when it starts. Importing this module reads nothing,
so the setting is whatever was armed last, never what the environment held
when the module happened to be imported. Unarmed, a crash point costs one
comparison. Tests parametrise over ``POINTS``.
"""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass

from .errors import ConfigurationError

CRASH_ENV = "EVENFLOW_CRASH_AT"

POINTS = (
    "after-append-before-dispatch",
    "after-outcome-before-append",
    "mid-batch",
    "after-append-before-ack",
    "after-submit-append-before-answer",
    "after-lease-acquired",
    "listener-after-trigger-before-checkpoint",
    "prune-batch",
)


@dataclass
class Arming:
    """Die at ``point`` on its ``at_pass``-th pass; ``passes`` counts the passes so far."""

    point: str
    at_pass: int = 1
    passes: int = 0


_armed: Arming | None = None
_lock = threading.Lock()


def parse(spec: str) -> Arming:
    """``name`` or ``name@N`` as an arming, checked against ``POINTS``."""
    point, _, count = spec.partition("@")
    if point not in POINTS:
        raise ConfigurationError(f"crash point {spec!r} names no crash point; known: {', '.join(POINTS)}")
    if count and not (count.isdigit() and int(count) >= 1):
        raise ConfigurationError(f"crash point {spec!r}: the pass after '@' must be a whole number >= 1")
    return Arming(point, int(count or 1))


def arm(spec: str | None) -> None:
    """Arm this process at ``spec`` (``name`` or ``name@N``), counting passes from zero; ``None`` disarms."""
    global _armed
    _armed = None if spec is None else parse(spec)


def arm_from_environment() -> None:
    """Arm this process as ``EVENFLOW_CRASH_AT`` says, if it is set: what a process's entry point calls."""
    spec = os.environ.get(CRASH_ENV)
    if spec:
        arm(spec)


def crash_point(name: str) -> None:
    """SIGKILL this process if it is armed at ``name`` (and the armed pass is reached)."""
    armed = _armed
    if armed is None or armed.point != name:
        return
    with _lock:
        armed.passes += 1
        if armed.passes >= armed.at_pass:
            os.kill(os.getpid(), signal.SIGKILL)


def armed(name: str) -> bool:
    """Whether this process would die at ``name`` on its next pass (for places that must split work)."""
    arming = _armed
    return arming is not None and arming.point == name and arming.passes + 1 >= arming.at_pass
