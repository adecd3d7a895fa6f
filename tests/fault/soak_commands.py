"""Commands and process helpers for the soak and poison tests.

The commands are module-level callables, so worker processes import them by name.
``Owners`` starts orchestrator subprocesses on one embedded home and always kills
and reaps them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from orchestrator.core.registry import Registry
from tests.commands import kill_self, ledgered, make_registry

REPO = Path(__file__).resolve().parents[2]

# --- commands -------------------------------------------------------------------------------


def ledgered_work(value: Any = None, seconds: float = 0.005, ledger: str | None = None) -> Any:
    """Record this execution in the external ledger first, then work ``seconds`` and return ``value``.

    The ledger line is written before the work, so an execution cut short by a kill is still counted.
    """
    result = ledgered(value, ledger=ledger)
    threading.Event().wait(seconds)  # stands for the command's own work, not a wait for a condition
    return result


def ledgered_kill_self(ledger: str | None = None) -> None:
    """A poison command: record the execution in the ledger, then SIGKILL the process running it."""
    ledgered(None, ledger=ledger)
    kill_self()


def count_and_sum(values: list[int]) -> dict[str, int]:
    """A chord's callback: how many results arrived and their sum."""
    return {"count": len(values), "sum": sum(values)}


SOAK_COMMANDS: dict[str, Any] = {
    "ledgered_work": ledgered_work,
    "ledgered_kill_self": ledgered_kill_self,
    "count_and_sum": count_and_sum,
}


def soak_registry() -> Registry:
    """``tests.commands`` plus the commands above."""
    registry = make_registry()
    for name, fn in SOAK_COMMANDS.items():
        registry.register(name, fn)
    return registry


# --- test-side helpers ----------------------------------------------------------------------


class Owners:
    """Orchestrator subprocesses running ``script`` (with ``args``) one after another on one home.

    Each is started with this repository on ``PYTHONPATH`` and its output in files under ``logs``;
    ``kill()`` SIGKILLs the current one and reaps it; ``close()`` does that to any still alive.
    """

    def __init__(self, script: str, args: list[str], logs: Path) -> None:
        self.script, self.args, self.logs = script, args, logs
        self.current: subprocess.Popen[bytes] | None = None
        self.started = 0
        logs.mkdir(parents=True, exist_ok=True)

    def start(self) -> subprocess.Popen[bytes]:
        assert self.current is None or self.current.poll() is not None, "an owner is still running"
        self.started += 1
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        with (
            open(self.logs / f"owner-{self.started}.out", "wb") as out,
            open(self.logs / f"owner-{self.started}.err", "wb") as err,
        ):
            self.current = subprocess.Popen(
                [sys.executable, "-c", self.script, *self.args], stdout=out, stderr=err, env=env, cwd=REPO
            )
        return self.current

    def kill(self) -> int:
        """SIGKILL the current owner (if it still runs) and reap it; its exit status."""
        process = self.current
        assert process is not None, "no owner was started"
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        return process.wait(30)

    def wait(self, seconds: float) -> int:
        """Let the current owner finish by itself within ``seconds``; its exit status."""
        assert self.current is not None, "no owner was started"
        return self.current.wait(seconds)

    def output(self, which: str = "err") -> str:
        """The current owner's stderr (or ``"out"``), for assertion messages."""
        path = self.logs / f"owner-{self.started}.{which}"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def close(self) -> None:
        if self.current is not None and self.current.poll() is None:
            self.current.send_signal(signal.SIGKILL)
            self.current.wait(30)
