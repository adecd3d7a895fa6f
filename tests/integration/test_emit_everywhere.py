"""Every executor kind carries what its commands emit to both kinds of listener.

A command emits two events wherever it runs: inline, asyncio, threads, worker
processes, a ``concurrent.futures`` pool of threads or processes, zmq workers
(real processes on 127.0.0.1) and Celery (a real prefork worker and Redis). A
coroutine listener in the orchestrator and a listener in a child process each
answer every event with a run; each such run is caused by its event, keyed on
it, and computes what the event asked for.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import pytest

from orchestrator import Event, Node, Orchestrator, call
from orchestrator.core.keys import run_for_key
from orchestrator.core.listening import trigger_key
from tests.commands import make_registry
from tests.integration.listener_commands import answer_tick
from tests.support.celery_worker import CeleryWorker
from tests.support.polling import wait_until
from tests.support.zmq_cluster import wait_for_workers, worker

pytest_plugins = ["tests.support.redis_server", "tests.support.celery_worker"]

WAIT_S = 60.0
TYPES = ["tick.first", "tick.second"]
LISTENERS = ("coroutine", "in-a-child")


async def answer_on_the_loop(event: Event) -> Node:
    return call("inc", event.data["index"])


def answered_everywhere(orch: Orchestrator) -> None:
    """Emit from one run; both listeners answer both events with runs that finish with index + 1."""
    orch.listen("tick.*", answer_on_the_loop, name="coroutine")
    orch.listen("tick.*", answer_tick, name="in-a-child", process=True)
    run = orch.submit(call("emits", TYPES))
    assert run.result(timeout=WAIT_S) == 2
    emitted = [event for event in orch.events(run.id) if event.type in TYPES]
    assert [event.type for event in emitted] == TYPES
    assert all(event.causation == f"{run.id}/r#1" for event in emitted)
    for event in emitted:
        for listener in LISTENERS:
            triggered = run_for_key(trigger_key(listener, event.id, 0))
            wait_until(
                lambda: orch.events(triggered),  # noqa: B023
                timeout=WAIT_S,
                what=f"{listener} answered {event.type}",
            )
            assert orch.result(triggered, timeout=WAIT_S) == event.data["index"] + 1
            (submitted, *_) = orch.events(triggered)
            assert (submitted.causation, submitted.correlation) == (event.id, run.id)


@pytest.mark.parametrize("executor", ["inline", "asyncio", "threads://2", "processes://2"])
def test_evenflow_executors(executor: str) -> None:
    with Orchestrator(make_registry(), executor=executor, store="memory://") as orch:
        answered_everywhere(orch)


@pytest.mark.parametrize("pool", [ThreadPoolExecutor, ProcessPoolExecutor])
def test_concurrent_futures_executors(pool: type[ThreadPoolExecutor] | type[ProcessPoolExecutor]) -> None:
    with pool(2) as executor, Orchestrator(make_registry(), executor=executor, store="memory://") as orch:
        answered_everywhere(orch)


@pytest.mark.slow
def test_zmq_workers(tmp_path: Path) -> None:
    from workers.zmq import ZmqExecutor

    executor = ZmqExecutor("tcp://127.0.0.1:0", heartbeat_s=0.2, liveness=3)
    with (
        Orchestrator(None, executor=executor, store="memory://") as orch,
        worker(executor.endpoint, tmp_path),
    ):
        wait_for_workers(executor, 1)
        answered_everywhere(orch)


@pytest.fixture
def celery_orch(celery: CeleryWorker) -> Iterator[Orchestrator]:
    from tests.support.celery_worker import registry
    from workers.celery import CeleryExecutor

    executor = CeleryExecutor(celery.broker, queue=celery.queue)
    with Orchestrator(registry(), executor=executor, store="memory://") as orch:
        yield orch


@pytest.mark.slow
def test_celery_workers(celery_orch: Orchestrator) -> None:
    answered_everywhere(celery_orch)
