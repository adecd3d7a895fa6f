"""A real Celery worker subprocess (prefork, two children) running ``workers.celery.app``.

``celery_worker(broker, queue)`` starts ``python -m celery -A workers.celery.app
worker`` in its own process group with ``EVENFLOW_REGISTRY`` naming
``registry`` below, waits until it answers a control ping, and SIGKILLs the
whole group (worker and children) on exit. The session fixture ``celery``
shares one worker among the Celery tests.

``registry()`` is ``tests.commands.make_registry()`` plus commands that both
write the external ledger and die, so fault tests can count executions of an
attempt whose worker child was killed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from orchestrator.core.registry import Registry
from tests import commands
from tests.support.polling import wait_until
from workers.celery.app import make_app

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
REGISTRY = "tests.support.celery_worker:registry"
REPO = Path(__file__).resolve().parents[2]
LOGLEVEL = os.environ.get("EVENFLOW_TEST_CELERY_LOGLEVEL", "INFO")
"""The worker's log (``celery-worker.log`` in the session's tmp dir); DEBUG shows every message."""


@dataclass(frozen=True, slots=True)
class CeleryWorker:
    broker: str
    queue: str
    pid: int
    log: Path


def ledgered_die_once(marker: str, ledger: str, value: Any = "survived") -> Any:
    """Ledger this execution, then SIGKILL the worker child the first time (``die_once``)."""
    commands.ledgered(ledger=ledger)
    return commands.die_once(marker, value)


def ledgered_kill(ledger: str) -> None:
    """Ledger this execution, then SIGKILL the worker child, every time."""
    commands.ledgered(ledger=ledger)
    commands.kill_self()


def ledgered_wait(ledger: str, gate: str, value: Any = None) -> Any:
    """Ledger this execution, then wait for ``gate`` to exist: a command a test can kill mid-run."""
    commands.ledgered(ledger=ledger)
    return commands.wait_for_file(gate, value, seconds=60.0)


def registry() -> Registry:
    commands_here = commands.make_registry()
    for fn in (ledgered_die_once, ledgered_kill, ledgered_wait):
        commands_here.register(fn.__name__, fn)
    return commands_here


@contextmanager
def celery_worker(broker: str, queue: str, workdir: Path) -> Iterator[CeleryWorker]:
    """A prefork worker with two children consuming ``queue``; killed with its group on exit."""
    name = f"evenflow-test-{uuid.uuid4().hex[:8]}@127.0.0.1"
    env = {
        **os.environ,
        "EVENFLOW_REGISTRY": REGISTRY,
        "EVENFLOW_BROKER": broker,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    env.pop("EVENFLOW_BACKEND", None)
    command = [sys.executable, "-m", "celery", "-A", "workers.celery.app", "worker", "--pool", "prefork"]
    command += ["--concurrency", "2", "-Q", queue, "-n", name, "--loglevel", LOGLEVEL]
    command += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    log_path = workdir / "celery-worker.log"
    log = log_path.open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    app = make_app(broker, queue=queue)
    try:
        wait_until(
            lambda: process.poll() is not None or bool(app.control.ping([name], timeout=0.5)),
            timeout=READY_TIMEOUT_S,
            what=f"the Celery worker answered a ping (log: {log_path})",
        )
        if process.poll() is not None:
            raise AssertionError(
                f"the Celery worker exited with {process.returncode}: {log_path.read_text()}"
            )
        yield CeleryWorker(broker, queue, process.pid, log_path)
    finally:
        app.close()
        _kill_group(process)
        log.close()


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(STOP_TIMEOUT_S)


@pytest.fixture(scope="session")
def celery(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CeleryWorker]:
    """One Celery worker for the session, on its own queue of the session's Redis."""
    queue = f"evenflow-test-{uuid.uuid4().hex[:8]}"
    with celery_worker(redis_url, queue, tmp_path_factory.mktemp("celery")) as worker:
        yield worker
