"""The executor contract for ``FuturesExecutor`` around stdlib and loky pools, and what only it promises."""

from __future__ import annotations

import concurrent.futures
import itertools
import multiprocessing
import os
from collections.abc import Callable, Iterator
from datetime import timedelta

import loky
import pytest

from orchestrator import Orchestrator, RetryPolicy, call, chord, parallel, sequence
from orchestrator.core import events as ev
from orchestrator.core.errors import ConfigurationError
from tests import commands
from tests.commands import ledger_read, make_registry
from tests.contract.executor_suite import (
    WAIT_S,
    ExecutorContract,
    Harness,
    MakeExecutor,
    envelope,
    started,
)
from tests.support.polling import wait_until
from workers import FuturesExecutor, InlineExecutor, as_executor

Pool = concurrent.futures.Executor
_gates = itertools.count()


def forkserver() -> multiprocessing.context.BaseContext:
    """Forkserver where there is one (no fork of a threaded test process), else spawn."""
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    return multiprocessing.get_context(method)


def thread_pool() -> tuple[Pool, bool]:
    return concurrent.futures.ThreadPoolExecutor(4), True


def process_pool() -> tuple[Pool, bool]:
    return concurrent.futures.ProcessPoolExecutor(2, mp_context=forkserver()), True


def loky_pool() -> tuple[Pool, bool]:
    """loky's process-wide reusable pool: shared, so the executor must not shut it down."""
    return loky.get_reusable_executor(max_workers=2, timeout=60), False


POOLS: dict[str, Callable[[], tuple[Pool, bool]]] = {
    "threads": thread_pool,
    "processes": process_pool,
    "loky": loky_pool,
}


class TestFuturesExecutor(ExecutorContract):
    @pytest.fixture
    def kind(self) -> str:
        return "futures"

    @pytest.fixture(params=list(POOLS))
    def make_executor(self, request: pytest.FixtureRequest) -> Iterator[MakeExecutor]:
        """Pools the test built are owned and shut down by their executor; loky's shared one never is."""
        built: list[FuturesExecutor] = []

        def make() -> FuturesExecutor:
            pool, owns = POOLS[request.param]()
            built.append(FuturesExecutor(pool, owns=owns))
            return built[-1]

        yield make
        for executor in built:
            executor.close()


# --- building ---------------------------------------------------------------------------


def test_requires_pickle_is_false_only_for_a_thread_pool() -> None:
    with concurrent.futures.ThreadPoolExecutor(1) as threads:
        assert FuturesExecutor(threads).requires_pickle is False
        assert FuturesExecutor(threads, requires_pickle=True).requires_pickle is True
    processes = concurrent.futures.ProcessPoolExecutor(1, mp_context=forkserver())
    assert FuturesExecutor(processes).requires_pickle is True
    processes.shutdown()


@pytest.mark.parametrize("pool", [object(), "threads://2", InlineExecutor()])
def test_only_a_plain_concurrent_futures_executor_is_wrapped(pool: object) -> None:
    with pytest.raises(ConfigurationError):
        FuturesExecutor(pool)  # type: ignore[arg-type]


def test_as_executor_wraps_a_plain_pool_and_leaves_it_to_its_owner() -> None:
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        executor = as_executor(pool)
        assert isinstance(executor, FuturesExecutor) and executor.pool is pool and not executor.owns
        executor.start(make_registry(), lambda outcome: None)
        executor.close()
        assert pool.submit(commands.square, 3).result(timeout=WAIT_S) == 9


def test_an_unpicklable_command_fails_clearly_before_reaching_a_process_pool() -> None:
    registry = make_registry()
    registry.register("lambda_inc", lambda x: x + 1)
    executor, outcomes = started(FuturesExecutor(loky.get_reusable_executor(max_workers=2)), registry)
    try:
        outcome = Harness("futures", executor, outcomes).run_one(envelope("lambda_inc", 1))
        assert outcome.error is not None and "cannot be sent to a child process" in outcome.error.message
    finally:
        executor.close()


# --- killed workers ---------------------------------------------------------------------


@pytest.mark.parametrize("make_pool", [process_pool, lambda: (loky.ProcessPoolExecutor(2), True)])
def test_a_killed_worker_loses_the_attempt_and_a_broken_pool_says_so(
    make_pool: Callable[[], tuple[Pool, bool]],
) -> None:
    pool, owns = make_pool()
    executor, outcomes = started(FuturesExecutor(pool, owns=owns))
    harness = Harness("futures", executor, outcomes)
    try:
        killed = harness.run_one(envelope("kill_self"))
        assert killed.error is not None
        assert killed.error.type == "orchestrator.core.errors.WorkerLost"
        assert killed.error.reason == "lost"
        after = harness.run_one(envelope("inc", 1))
        assert after.error is not None and after.error.reason == "lost"
        assert "broken" in after.error.message and "processes://N" in after.error.message
    finally:
        executor.close()
    outcomes.assert_unique()


def test_a_kill_amid_a_batch_still_gives_every_envelope_one_outcome() -> None:
    pool, _ = process_pool()
    executor, outcomes = started(FuturesExecutor(pool, owns=True))
    try:
        batch = [envelope("noop", i) for i in range(40)] + [envelope("kill_self")]
        results = Harness("futures", executor, outcomes).run(*batch)
        assert results[-1].error is not None and results[-1].error.reason == "lost"
        for i, outcome in enumerate(results[:-1]):
            assert outcome.result == i if outcome.ok else outcome.error and outcome.error.reason == "lost"
    finally:
        executor.close()
    outcomes.assert_unique()


# --- closing ----------------------------------------------------------------------------


def test_closing_an_owned_process_pool_kills_a_stuck_command(ledger: str) -> None:
    pool = concurrent.futures.ProcessPoolExecutor(1, mp_context=forkserver())
    executor, outcomes = started(FuturesExecutor(pool, owns=True, close_timeout_s=0.2))
    try:
        executor.dispatch([envelope("ledgered", 1, ledger=ledger), envelope("slow", 600.0)])
        outcomes.wait_for(1)
        stuck_pid = ledger_read(ledger)[0].pid
    finally:
        executor.close()
    wait_until(lambda: not alive(stuck_pid), timeout=WAIT_S, what=f"the stuck child {stuck_pid} gone")
    assert len(outcomes.items) == 1


def test_closing_leaves_a_pool_it_does_not_own_running(gate_name: str) -> None:
    """Running attempts get ``close_timeout_s``, then are abandoned unreported; the pool stays usable."""
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        executor, outcomes = started(FuturesExecutor(pool, close_timeout_s=0.2))
        executor.dispatch([envelope("slow", 600.0, gate_name)])
        executor.close()
        commands.gate(gate_name).set()
        assert pool.submit(commands.inc, 1).result(timeout=WAIT_S) == 2
    assert outcomes.items == []


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def gate_name() -> Iterator[str]:
    """A fresh gate for ``slow``, opened at teardown so no thread stays blocked on it."""
    name = f"futures-gate-{next(_gates)}"
    try:
        yield name
    finally:
        commands.gate(name).set()


# --- through the orchestrator -----------------------------------------------------------

QUICK = RetryPolicy(max_attempts=3, initial_delay=timedelta(milliseconds=10), jitter=0)


@pytest.fixture(params=["threads", "loky"])
def plain_pool(request: pytest.FixtureRequest) -> Iterator[Pool]:
    if request.param == "threads":
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            yield pool
    else:
        yield loky.get_reusable_executor(max_workers=2, timeout=60)


def test_an_orchestrator_runs_flows_on_a_plain_pool(plain_pool: Pool) -> None:
    with Orchestrator(make_registry(), executor=plain_pool, store="memory://") as orch:
        flow = sequence(call("inc", 1), parallel(call("square"), call("triple")), call("total"))
        assert orch.run(flow, timeout=60) == 10
        assert orch.run(chord([call("square", i) for i in range(10)], call("total")), timeout=60) == 285
        assert orch.run(sequence(call("returns_flow", 3), call("inc")), timeout=60) == 6
        run = orch.submit(call("flaky", "ok").options(retry=QUICK))
        assert run.result(timeout=60) == "ok"
        started_by = [e.data["by"] for e in orch.events(run.id) if e.type == ev.COMMAND_STARTED]
        assert started_by and all(by.endswith("/futures") for by in started_by)


def test_a_plain_pool_keeps_running_after_the_orchestrator_closes() -> None:
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        with Orchestrator(make_registry(), executor=pool, store="memory://") as orch:
            assert orch.run(call("inc", 1), timeout=60) == 2
        assert pool.submit(commands.inc, 2).result(timeout=WAIT_S) == 3
