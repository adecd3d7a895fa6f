"""Real processes for the ZeroMQ tests: ``evenflow worker`` and ``evenflow serve`` on 127.0.0.1.

Each process runs in its own session so a test can SIGKILL, SIGSTOP or SIGCONT
it by pid; every one is killed (and reaped) when its context exits, even if
the test failed. Readiness is polled with a deadline, never slept for.

Registries for "hosts with different code": ``billing`` has ``billing.charge``,
``mail`` has ``mail.send``; both also have the ledgered test commands.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.core.registry import Registry
from tests import commands
from tests.support.polling import wait_until

READY_S = 30.0
REPO = Path(__file__).resolve().parents[2]


# --- registries for worker hosts ------------------------------------------------------------


def charge(amount: int, ledger: str | None = None) -> dict[str, Any]:
    if ledger:
        commands.ledgered(ledger=ledger)
    return {"charged": amount}


def send_mail(address: str, ledger: str | None = None) -> str:
    if ledger:
        commands.ledgered(ledger=ledger)
    return f"sent to {address}"


def ledgered_wait(ledger: str, gate: str, value: Any = None, finished: str = "") -> Any:
    """Ledger this execution, then wait for the file ``gate``: a command a test can interrupt mid-run.

    ``finished`` names a file created just before returning, so a test knows the
    command is over while its outcome may still be on its way (or held by its worker).
    """
    commands.ledgered(ledger=ledger)
    result = commands.wait_for_file(gate, value, seconds=120.0)
    if finished:
        Path(finished).touch()
    return result


def ledgered_slow(ledger: str, value: Any = None, seconds: float = 0.002) -> Any:
    """Ledger, then take ``seconds``: a slow worker for flow-control tests."""
    commands.ledgered(ledger=ledger)
    threading.Event().wait(seconds)
    return value


def everything() -> Registry:
    registry = commands.make_registry()
    for fn in (ledgered_wait, ledgered_slow):
        registry.register(fn.__name__, fn)
    return registry


def held_in_c(marker: str, gate: str) -> str:
    """Say it has begun (``marker``), then wait for ``gate`` inside one C call that no signal ends: a
    two-party ``pthread_barrier_wait``, whose other party is a thread that waits for ``gate``. What a
    command deep in a C library looks like to a worker asked to stop."""
    libc = ctypes.CDLL(None)  # lets go of the GIL during each call
    barrier = ctypes.create_string_buffer(128)  # larger than any pthread_barrier_t
    libc.pthread_barrier_init(barrier, None, 2)

    def release() -> None:
        commands.wait_for_file(gate)
        libc.pthread_barrier_wait(barrier)

    threading.Thread(target=release, name="gatekeeper", daemon=True).start()
    Path(marker).touch()
    libc.pthread_barrier_wait(barrier)  # a signal's handler runs, then the wait goes on (POSIX)
    return "released"


def held() -> Registry:
    registry = Registry()
    registry.register("held_in_c", held_in_c)
    return registry


def billing() -> Registry:
    registry = Registry()
    registry.register("billing.charge", charge)
    registry.register("ledgered", commands.ledgered)
    return registry


def mail() -> Registry:
    registry = Registry()
    registry.register("mail.send", send_mail)
    return registry


# --- processes --------------------------------------------------------------------------------


def free_endpoint() -> str:
    """A loopback endpoint with a port free right now (the OS picks it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{probe.getsockname()[1]}"


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **(extra or {})}


@dataclass
class Proc:
    """One evenflow process: signal it by pid, read its log."""

    popen: subprocess.Popen[bytes]
    log: Path
    killed: bool = field(default=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def signal(self, number: int) -> None:
        with suppress(ProcessLookupError):
            os.kill(self.pid, number)

    def kill(self) -> None:
        self.signal(signal.SIGCONT)  # a stopped process must run to die
        self.signal(signal.SIGKILL)
        self.popen.wait(timeout=30)
        self.killed = True

    def terminate(self, timeout_s: float = 30.0) -> int:
        """SIGTERM and wait for a clean exit; returns the exit code."""
        self.signal(signal.SIGTERM)
        return self.popen.wait(timeout=timeout_s)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def _start(args: list[str], log: Path, env: dict[str, str] | None = None) -> Proc:
    with log.open("wb") as sink:
        popen = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", *args],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=_env(env),
            cwd=REPO,
            start_new_session=True,
        )
    return Proc(popen, log)


@contextmanager
def worker(
    endpoint: str,
    workdir: Path,
    *,
    registry: str = "tests.support.zmq_cluster:everything",
    concurrency: int = 1,
    heartbeat_s: float = 0.2,
    extra: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> Iterator[Proc]:
    """``evenflow worker`` connecting to ``endpoint``; killed on exit if still running."""
    log = workdir / f"worker-{time.monotonic_ns()}.log"
    args = ["worker", "--connect", endpoint, "--registry", registry, "--concurrency", str(concurrency)]
    proc = _start([*args, "--heartbeat", str(heartbeat_s), *extra], log, env)
    try:
        yield proc
    finally:
        if proc.popen.poll() is None:
            proc.kill()


@contextmanager
def service(
    endpoint: str, home: Path, workdir: Path, *, heartbeat_s: float = 0.2, extra: tuple[str, ...] = ()
) -> Iterator[Proc]:
    """``evenflow serve`` on the embedded store in ``home``, waited for until it says it serves."""
    log = workdir / f"service-{time.monotonic_ns()}.log"
    args = ["serve", "--bind", endpoint, "--home", str(home), "--heartbeat", str(heartbeat_s), *extra]
    proc = _start(args, log)
    try:
        wait_until(
            lambda: "serving on" in proc.output() or proc.popen.poll() is not None,
            timeout=READY_S,
            what=f"evenflow serve said it serves (log: {log})",
        )
        if proc.popen.poll() is not None:
            raise AssertionError(f"evenflow serve exited with {proc.popen.returncode}:\n{proc.output()}")
        yield proc
    finally:
        if proc.popen.poll() is None:
            proc.kill()


def wait_for_workers(executor: Any, count: int, timeout_s: float = READY_S) -> list[Any]:
    """Until a ``ZmqExecutor`` sees ``count`` live workers."""
    return wait_until(
        lambda: (found := executor.workers()) and len(found) >= count and found,
        timeout=timeout_s,
        what=f"{count} live workers",
    )
