"""Commands for the cap tests, run by ``evenflow worker`` processes (``--registry`` names these).

``poison`` waits for a gate file, then SIGKILLs the process running it: every
worker it lands on dies. ``innocent`` records its execution in a ledger and
returns. ``options_registry`` registers a command with a retry policy and a
timeout, as a worker's own code would.
"""

from __future__ import annotations

import os
import signal
from datetime import timedelta
from typing import Any

from orchestrator.core.policy import RetryPolicy
from orchestrator.core.registry import Registry
from tests import commands


def poison(gate: str, ledger: str) -> None:
    """Record this execution, wait (bounded) for ``gate``, then die the hard way."""
    commands.ledgered(ledger=ledger)
    commands.wait_for_file(gate, seconds=60.0)
    os.kill(os.getpid(), signal.SIGKILL)


def innocent(value: Any, ledger: str) -> Any:
    return commands.ledgered(value, ledger=ledger)


def registry() -> Registry:
    found = Registry()
    found.register("poison", poison)
    found.register("innocent", innocent)
    return found


FLAKY_POLICY = RetryPolicy(max_attempts=3, initial_delay=timedelta(0), jitter=0.0)


def flaky(marker_dir: str) -> str:
    """Fail the first two attempts (counted by files in ``marker_dir``), succeed on the third."""
    attempts = len(os.listdir(marker_dir))
    open(os.path.join(marker_dir, f"attempt-{attempts + 1}"), "w").close()
    if attempts < 2:
        raise RuntimeError(f"flaky attempt {attempts + 1}")
    return "third time"


def options_registry() -> Registry:
    found = Registry()
    found.register("flaky", flaky, retry=FLAKY_POLICY, timeout=timedelta(seconds=90))
    return found


def other_options_registry() -> Registry:
    """``flaky`` again, registered with other options: a conflict the service logs."""
    found = Registry()
    found.register("flaky", flaky, retry=RetryPolicy(max_attempts=7), timeout=timedelta(seconds=5))
    return found
