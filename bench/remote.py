"""W1-W5 across processes: evenflow's zmq executor (in this process, with 2 worker processes on
loopback, every event durable on the embedded store), ``evenflow serve`` with 2 workers driven
through a ``Client``, and Celery 5 with Redis and ``--concurrency 2``, measured in the same run. A
system whose packages or redis-server are missing is skipped with a line that says what to install,
not a traceback.

Each system is set up once and its workloads run ``rounds`` times back to back on it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from orchestrator import Orchestrator, call, parallel

from .workloads import W1_N, W2_N, W3_N, W4_N, W5_N, Results, evenflow, registry, timed

REPO = Path(__file__).resolve().parents[1]
READY_S = 60.0
SYSTEMS = ("zmq", "service", "celery", "evenflow-celery")
ZMQ = "evenflow zmq, 2 worker processes / embedded"
SERVICE = "evenflow serve + 2 workers, by Client / embedded"
REGISTRY = "bench.workloads:registry"
ZMQ_ONLY = ("zmq", "service")
"""The systems that need pyzmq and nothing else (no Redis)."""
CELERY = "Celery 5 + Redis, --concurrency 2, canvas"
EVENFLOW_CELERY = "evenflow celery executor / embedded"
Measured = tuple[str, list[Results]]  # a system's name and its rounds


def zmq(home: str, rounds: int = 1) -> list[Results]:
    """The service in this process and two ``evenflow worker`` processes of one slot each."""
    from tests.support.zmq_cluster import wait_for_workers, worker
    from workers.zmq import ZmqExecutor

    executor = ZmqExecutor("tcp://127.0.0.1:0")
    with ExitStack() as stack, Orchestrator(registry(), executor=executor, home=home) as orch:
        for _ in range(2):
            stack.enter_context(worker(executor.endpoint, Path(home), registry=REGISTRY))
        wait_for_workers(executor, 2, READY_S)
        orch.run(call("noop", 0))  # warm up
        return [evenflow(orch) for _ in range(rounds)]


def service(home: str, rounds: int = 1) -> list[Results]:
    """``evenflow serve`` and two ``evenflow worker`` processes of one slot each, driven from here by a
    ``Client``: what a process without the commands' code sees, one more hop each way."""
    from orchestrator.client import Client
    from tests.support.polling import wait_until
    from tests.support.zmq_cluster import free_endpoint, worker
    from tests.support.zmq_cluster import service as served

    endpoint, workdir = free_endpoint(), Path(home).parent
    with ExitStack() as stack:
        stack.enter_context(served(endpoint, Path(home), workdir, heartbeat_s=1.0))
        for _ in range(2):
            stack.enter_context(worker(endpoint, workdir, registry=REGISTRY, heartbeat_s=1.0))
        client = stack.enter_context(Client(endpoint))
        both = parallel(call("pid"), call("pid"))  # one slot each: two calls at once take both workers
        wait_until(lambda: len(set(client.run(both, wait_for_worker=READY_S))) == 2, timeout=READY_S,
                   what="both workers answered")  # fmt: skip
        return [evenflow(client) for _ in range(rounds)]


def evenflow_celery(home: str, redis: str, rounds: int = 1) -> list[Results]:
    """evenflow driving Celery as one more executor: its log and retries, Celery carrying attempts."""
    from workers.celery import CeleryExecutor
    from workers.celery.app import make_app

    env = {"EVENFLOW_REGISTRY": REGISTRY, "EVENFLOW_BROKER": redis}
    with celery_process("workers.celery.app", ["-Q", "evenflow-bench"], env, Path(home), make_app(redis)):
        executor = CeleryExecutor(redis, queue="evenflow-bench")
        with Orchestrator(registry(), executor=executor, home=home) as orch:
            orch.run(call("noop", 0))
            return [evenflow(orch) for _ in range(rounds)]


def celery(redis: str) -> Results:
    """Celery's own canvas: group, chain, chord, and its own retry."""
    from celery import chain, chord, group

    from . import celery_app as tasks

    results = Results()
    timed(results, "W1", lambda: group(tasks.noop.s(i) for i in range(W1_N)).apply_async().get(),
          list(range(W1_N)))  # fmt: skip
    steps = chain(tasks.inc.s(0), *[tasks.inc.s() for _ in range(W2_N - 1)])
    timed(results, "W2", lambda: steps.apply_async().get(), W2_N)
    squares = chord(tasks.square.s(i) for i in range(W3_N))
    timed(results, "W3", lambda: squares(tasks.total.s()).get(), sum(i * i for i in range(W3_N)))
    timed(results, "W4", lambda: group(tasks.fail_twice.s(i) for i in range(W4_N)).apply_async().get(),
          list(range(W4_N)))  # fmt: skip
    for i in range(W5_N):
        start = time.perf_counter()
        tasks.noop.delay(i).get()
        results.latencies_ms.append((time.perf_counter() - start) * 1000)
    return results


@contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    from tests.support.redis_server import redis_server as server

    with server(workdir) as url:
        yield url


@contextmanager
def celery_process(
    app: str, extra: list[str], env: dict[str, str], workdir: Path, control: Any
) -> Iterator[None]:
    """``celery -A app worker --concurrency 2`` (prefork), ready once it answers ``control``'s ping."""
    from tests.support.polling import wait_until

    command = [sys.executable, "-m", "celery", "-A", app, "worker", "--concurrency", "2", "--pool", "prefork"]
    command += ["--without-gossip", "--without-mingle", "--loglevel", "WARNING", *extra]
    log = (workdir / f"{app}.log").open("wb")
    environment = {**os.environ, **env, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(command, env=environment, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)  # fmt: skip
    try:
        ready = f"{app} worker ready"
        wait_until(lambda: bool(control.control.ping(timeout=0.5)), timeout=READY_S, what=ready)
        yield
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)
        log.close()


def missing(system: str) -> str | None:
    """Why ``system`` cannot be measured on this machine, worded as what to install; None if it can."""
    # pytest: tests/support/redis_server.py, which starts the throwaway Redis, imports it
    packages = ("zmq",) if system in ZMQ_ONLY else ("celery", "redis", "pytest")
    absent = [name for name in packages if importlib.util.find_spec(name) is None]
    if absent:
        extra = "zmq" if system in ZMQ_ONLY else "celery,test"
        return f"{system} not measured: no Python package {', '.join(absent)} (pip install -e '.[{extra}]')"
    if system not in ZMQ_ONLY and shutil.which("redis-server") is None:
        return f"{system} not measured: redis-server is not installed (apt-get install redis-server)"
    return None


def measure(systems: list[str], rounds: int = 1) -> list[Measured]:
    """Each system asked for, ``rounds`` times, less those ``missing`` names (the caller says why)."""
    wanted = [system for system in systems if missing(system) is None]
    with tempfile.TemporaryDirectory(prefix="evenflow-bench-remote-") as workdir:
        rows = [(ZMQ, zmq(_home(workdir, "zmq"), rounds))] if "zmq" in wanted else []
        if "service" in wanted:
            rows.append((SERVICE, service(str(Path(workdir, "service")), rounds)))
        if {"celery", "evenflow-celery"} & set(wanted):
            with redis_server(Path(workdir)) as redis:
                rows += _celery_rows(wanted, redis, Path(workdir), rounds)
    return rows


def _home(workdir: str, name: str) -> str:
    home = Path(workdir, name)
    home.mkdir()
    return str(home)


def _celery_rows(wanted: list[str], redis: str, workdir: Path, rounds: int) -> list[Measured]:
    rows: list[Measured] = []
    if "celery" in wanted:
        os.environ["EVENFLOW_BENCH_REDIS"] = redis
        from . import celery_app

        celery_app.app.conf.broker_url = celery_app.app.conf.result_backend = redis
        env = {"EVENFLOW_BENCH_REDIS": redis}
        with celery_process("bench.celery_app", [], env, workdir, celery_app.app):
            celery_app.noop.delay(0).get(timeout=READY_S)  # warm up
            rows.append((CELERY, [celery(redis) for _ in range(rounds)]))
    if "evenflow-celery" in wanted:
        rows.append((EVENFLOW_CELERY, evenflow_celery(_home(str(workdir), "celery"), redis, rounds)))
    return rows
