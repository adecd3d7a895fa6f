"""The executor contract for the in-process kinds, and what only one local kind promises."""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import os
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta

import pytest

from orchestrator.core.errors import ConfigurationError
from orchestrator.core.events import utcnow
from tests import commands
from tests.commands import ledger_read, make_registry
from tests.contract.executor_suite import (
    WAIT_S,
    ExecutorContract,
    Harness,
    MakeExecutor,
    Outcomes,
    envelope,
    started,
)
from tests.support.polling import wait_until
from workers import (
    AsyncioExecutor,
    InlineExecutor,
    ProcessExecutor,
    ThreadExecutor,
    as_executor,
    executor_from_url,
)
from workers.base import BaseExecutor

URLS = {
    "inline": "inline",
    "asyncio": "asyncio",
    "threads": "threads://4",
    "processes": "processes://2",
}
_gates = itertools.count()


class TestLocalExecutors(ExecutorContract):
    @pytest.fixture(params=list(URLS))
    def kind(self, request: pytest.FixtureRequest) -> str:
        return str(request.param)

    @pytest.fixture
    def make_executor(self, kind: str) -> MakeExecutor:
        return lambda: executor_from_url(URLS[kind])


def test_the_asyncio_face_awaits_coroutine_functions() -> None:
    with AsyncioExecutor() as executor:
        assert executor.submit(commands.async_double, 4).result(timeout=WAIT_S) == 8


# --- building executors -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "cls", "workers"),
    [
        ("inline", InlineExecutor, None),
        ("asyncio", AsyncioExecutor, None),
        ("threads://8", ThreadExecutor, 8),
        ("threads", ThreadExecutor, os.cpu_count()),
        ("processes://3", ProcessExecutor, 3),
        (" PROCESSES ", ProcessExecutor, os.cpu_count()),
    ],
)
def test_executor_from_url_builds_each_kind(url: str, cls: type, workers: int | None) -> None:
    executor = executor_from_url(url)
    try:
        assert type(executor) is cls
        assert getattr(executor, "max_workers", None) == workers
    finally:
        executor.close()


@pytest.mark.parametrize(
    "url",
    ["threads://0", "threads://x", "threads://-2", "processes://1.5", "inline://2", "bogus", "", "threads:8"],
)
def test_executor_from_url_rejects_bad_urls(url: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        executor_from_url(url)
    message = str(raised.value)
    assert repr(url) in message
    assert "inline, asyncio, threads[://N], processes[://N]" in message


def test_as_executor_takes_a_url_or_an_executor() -> None:
    from workers import FuturesExecutor

    executor = InlineExecutor()
    assert as_executor(executor) is executor
    assert isinstance(as_executor("inline"), InlineExecutor)
    with pytest.raises(ConfigurationError, match="not an executor"):
        as_executor(object())  # type: ignore[arg-type]
    with concurrent.futures.ThreadPoolExecutor(1) as plain:
        wrapped = as_executor(plain)
        assert isinstance(wrapped, FuturesExecutor) and wrapped.pool is plain


@pytest.mark.parametrize(
    "build",
    [
        lambda: ThreadExecutor(0),
        lambda: ThreadExecutor(True),
        lambda: ProcessExecutor(-1),
        lambda: ProcessExecutor(2, mp_context="teleport"),
        lambda: AsyncioExecutor(max_threads=0),
    ],
)
def test_bad_constructor_arguments_are_refused(build: Callable[[], BaseExecutor]) -> None:
    with pytest.raises(ConfigurationError):
        build()


# --- one kind only ----------------------------------------------------------------------


@pytest.fixture
def processes() -> Iterator[Harness]:
    executor, outcomes = started(executor_from_url("processes://2"))
    try:
        yield Harness("processes", executor, outcomes)
    finally:
        executor.close()
    outcomes.assert_unique()


def test_a_killed_worker_process_loses_the_attempt_and_the_pool_recovers(processes: Harness) -> None:
    outcome = processes.run_one(envelope("kill_self"))
    assert outcome.error is not None
    assert outcome.error.type == "orchestrator.core.errors.WorkerLost"
    assert "orchestrator.core.errors.CommandError" in outcome.error.mro
    assert outcome.error.reason == "lost"
    assert [o.result for o in processes.run(*(envelope("inc", i) for i in range(10)))] == list(range(1, 11))


def test_a_kill_amid_a_batch_still_gives_every_envelope_one_outcome(processes: Harness) -> None:
    batch = [envelope("noop", i) for i in range(40)] + [envelope("kill_self")]
    outcomes = processes.run(*batch)
    assert outcomes[-1].error is not None and outcomes[-1].error.reason == "lost"
    for i, outcome in enumerate(outcomes[:-1]):
        assert outcome.result == i if outcome.ok else outcome.error and outcome.error.reason == "lost"
    assert processes.run_one(envelope("inc", 1)).result == 2


def test_processes_run_in_other_processes(processes: Harness) -> None:
    pids = {outcome.result for outcome in processes.run(*(envelope("pid") for _ in range(20)))}
    assert os.getpid() not in pids


def test_a_command_registered_after_start_reaches_new_workers(processes: Harness) -> None:
    registry = processes.executor._registry
    assert registry is not None
    registry.register("late_square", commands.square)
    assert processes.run_one(envelope("late_square", 9)).result == 81


def test_an_unpicklable_command_fails_clearly_in_processes(processes: Harness) -> None:
    registry = processes.executor._registry
    assert registry is not None
    registry.register("lambda_inc", lambda x: x + 1)
    outcome = processes.run_one(envelope("lambda_inc", 1))
    assert outcome.error is not None and "cannot be sent to a child process" in outcome.error.message
    assert processes.run_one(envelope("inc", 1)).result == 2


def test_closing_processes_does_not_wait_for_a_stuck_command(ledger: str) -> None:
    executor = ProcessExecutor(1, close_timeout_s=0.2)
    outcomes = Outcomes()
    executor.start(make_registry(), outcomes)
    try:
        executor.dispatch([envelope("ledgered", 1, ledger=ledger), envelope("slow", 600.0)])
        outcomes.wait_for(1)
        stuck_pid = ledger_read(ledger)[0].pid
    finally:
        executor.close()
    wait_until(lambda: not _alive(stuck_pid), timeout=WAIT_S, what=f"the stuck child {stuck_pid} gone")
    assert len(outcomes.items) == 1


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def gate_name() -> Iterator[str]:
    """A fresh gate for ``slow``, opened at teardown so no thread stays blocked on it."""
    name = f"gate-{next(_gates)}"
    try:
        yield name
    finally:
        commands.gate(name).set()


@pytest.mark.parametrize("command", ["async_slow", "slow"])
def test_asyncio_bounds_a_running_attempt_by_its_deadline(command: str, gate_name: str) -> None:
    executor, outcomes = started(AsyncioExecutor())
    asyncio_harness = Harness("asyncio", executor, outcomes)
    args = [30.0] if command == "async_slow" else [30.0, gate_name]
    try:
        item = replace(envelope(command, *args), deadline=utcnow() + timedelta(milliseconds=300))
        outcome = asyncio_harness.run_one(item)
        assert outcome.error is not None
        assert outcome.error.type == "orchestrator.core.errors.CommandTimeout"
        assert outcome.error.reason == "timeout" and "while it ran" in outcome.error.message
        assert asyncio_harness.run_one(envelope("inc", 1)).result == 2
    finally:
        commands.gate(gate_name).set()
        executor.close()
    outcomes.assert_unique()


def test_inline_awaits_a_coroutine_even_inside_a_running_loop() -> None:
    executor, outcomes = started(InlineExecutor())

    async def engine_step() -> None:
        executor.dispatch([envelope("async_double", 5), envelope("async_echo_context")])

    try:
        asyncio.run(engine_step())
        doubled, context = outcomes.wait_for(2)
        assert doubled.result == 10
        assert context.result is not None and context.result["command"] == "async_echo_context"
    finally:
        executor.close()
