"""The benchmark commands: module-level so every executor kind can run them."""

from __future__ import annotations

import os
import time

from orchestrator.core.context import current_call
from tests.commands import ledgered


def noop(i: int) -> int:
    return i


def inc(x: int) -> int:
    return x + 1


def square(i: int) -> int:
    return i * i


def total(values: list[int]) -> int:
    return sum(values)


def pid() -> int:
    """Which process ran it: the service benchmark waits until both workers have answered."""
    return os.getpid()


def fail_twice(i: int) -> int:
    """Fails on attempts 1 and 2, succeeds on the third (W4)."""
    context = current_call()
    attempt = context.attempt if context else 3
    if attempt < 3:
        raise RuntimeError(f"attempt {attempt} of {i} fails on purpose")
    return i


def fail_twice_raw(i: int, attempt: int) -> int:
    """W4 for systems without a retry engine: the caller passes the attempt number."""
    if attempt < 3:
        raise RuntimeError(f"attempt {attempt} of {i} fails on purpose")
    return i


def ledgered_work(i: int, ledger: str, work_s: float) -> int:
    """``bench.kill_soak``'s command: note this execution in the ledger as it starts, then work."""
    ledgered(i, ledger)
    time.sleep(work_s)  # the command's own work, long enough for kills to land mid-attempt
    return i
