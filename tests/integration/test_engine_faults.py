"""The engine under faults: store outages, partial appends, refused dispatches, cancellations.

Each test started as a bug found in review and names the behaviour it pins.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest

from orchestrator import (
    Orchestrator,
    Registry,
    RetryPolicy,
    RunFailed,
    call,
    current_call,
    each,
    parallel,
    sequence,
)
from orchestrator.core import events as ev
from orchestrator.core.clock import FakeClock
from orchestrator.core.envelope import Envelope
from orchestrator.core.errors import ResultTimeout
from orchestrator.core.events import Event
from orchestrator.core.flows import encode_flow
from orchestrator.store.memory import MemoryStore
from tests.simulation import Simulation
from tests.support.polling import wait_until
from workers.execution import execute
from workers.inline import InlineExecutor

QUICK = RetryPolicy(max_attempts=2, initial_delay=timedelta(milliseconds=10), jitter=0)
BIG = 3_000_000  # one result under the 4 MB payload limit; two of them over it
executions: list[str] = []


def boom(*args: Any) -> None:
    raise ValueError("boom")


def take_one(xs: list[int]) -> list[int]:
    """Consumes its argument (as plenty of real code does) and fails on its first attempt."""
    xs.pop()
    context = current_call()
    if context is not None and context.attempt == 1:
        raise ConnectionError("first attempt fails")
    return xs


def counted(x: int) -> int:
    executions.append(f"counted({x})")
    return x


def make_registry() -> Registry:
    commands = Registry()
    commands.register("noop", lambda x=None: x)
    commands.register("boom", boom)
    commands.register("make", lambda: [1, 2, 3])
    commands.register("take_one", take_one)
    commands.register("big", lambda: "x" * BIG)
    commands.register("length", lambda xs: sum(len(x) for x in xs))
    commands.register("counted", counted)
    return commands


@pytest.fixture(autouse=True)
def _clear() -> Iterator[None]:
    executions.clear()
    yield


# --- stores and executors with faults ----------------------------------------------------------


class DownStore(MemoryStore):
    """Unavailable (append and read raise) for its first ``down`` calls, then healthy."""

    def __init__(self, down: int) -> None:
        super().__init__()
        self.down = down
        self.armed = False

    def _fault(self) -> None:
        if self.armed and self.down > 0:
            self.down -= 1
            raise ConnectionError("store unavailable")

    def append(self, events: Sequence[Event]) -> None:
        self._fault()
        super().append(events)

    def read(self, run: str, after_seq: int = 0) -> list[Event]:
        self._fault()
        return super().read(run, after_seq)


class PartialStore(MemoryStore):
    """The first armed append writes only the first event of its batch, then raises."""

    armed = False

    def append(self, events: Sequence[Event]) -> None:
        if self.armed and len(events) > 1:
            self.armed = False
            super().append(events[:1])
            raise ConnectionError("connection reset after the first insert")
        super().append(events)


class FailSucceededOnce(MemoryStore):
    """Refuses (writing nothing) the first batch that records a command.succeeded."""

    failed = False

    def append(self, events: Sequence[Event]) -> None:
        if not self.failed and any(e.type == ev.COMMAND_SUCCEEDED for e in events):
            self.failed = True
            raise ConnectionError("write refused; nothing written")
        super().append(events)


class GatedStore(MemoryStore):
    """Blocks every append while ``gate`` is clear (a slow server)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def append(self, events: Sequence[Event]) -> None:
        self.entered.set()
        assert self.gate.wait(10)
        super().append(events)


class SlowStartStore(MemoryStore):
    def unfinished_runs(self) -> list[str]:
        threading.Event().wait(0.3)  # a slow server at start-up widens the race, waits for nothing
        return super().unfinished_runs()


class CountingStarts(InlineExecutor):
    def __init__(self) -> None:
        super().__init__()
        self.starts = 0

    def start(self, registry: Registry, report: Any) -> None:
        self.starts += 1
        super().start(registry, report)


class FlakyDispatch:
    """Inline executor whose first dispatch raises (a broken pool, a socket error)."""

    requires_pickle = False

    def __init__(self) -> None:
        self.calls = 0

    def start(self, registry: Registry, report: Any) -> None:
        self.registry, self.report = registry, report

    def dispatch(self, envelopes: Sequence[Envelope]) -> None:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("transient dispatch failure")
        for envelope in envelopes:
            self.report(execute(self.registry, envelope, by="flaky"))

    def close(self) -> None:
        pass


def orchestrator(store: MemoryStore, executor: Any = "threads://2") -> Orchestrator:
    return Orchestrator(make_registry(), executor=executor, store=store)


# --- 1. decide's drafts are applied as a batch although one can invalidate the next -----------


def test_cancel_group_whose_failure_cancels_a_ready_sibling_does_not_corrupt_the_run() -> None:
    flow = encode_flow(parallel(each("noop"), call("noop", 1), siblings="cancel"))
    sim = Simulation({"noop": lambda x=None: x})
    state = sim.go(flow, input=5)  # 5 is not a list: the map fails while its sibling is ready
    assert state.status == "failed"


def test_two_failures_in_one_turn_in_a_cancel_group_fail_the_run() -> None:
    with orchestrator(MemoryStore(), executor="inline") as orch, pytest.raises(RunFailed):
        orch.run(parallel(call("boom"), call("boom"), siblings="cancel"), timeout=3)


# --- 2. a dirty (reloaded) run is not advanced until something else arrives --------------------


def test_a_resumed_run_whose_log_ends_at_submission_is_driven_on_start() -> None:
    store = MemoryStore()
    flow = encode_flow(call("noop", 1))
    store.append([Event("r1", 1, ev.RUN_SUBMITTED, FakeClock().now(), data={"flow": flow, "name": None})])
    with orchestrator(store):
        wait_until(
            lambda: any(e.type == ev.RUN_SUCCEEDED for e in store.read("r1")),
            timeout=3.0,
            what="the resumed run succeeded",
        )


def test_a_partially_written_turn_does_not_leave_run_waiting_forever() -> None:
    store = PartialStore()
    with orchestrator(store) as orch:
        store.armed = True  # [run.submitted, command.dispatched]: only run.submitted lands
        assert orch.run(call("noop", 1), timeout=3) == 1


# --- 3. the store being down for a moment kills the engine thread -------------------------------


def test_engine_survives_a_store_that_is_briefly_unavailable() -> None:
    store = DownStore(down=3)
    with orchestrator(store) as orch:
        store.armed = True
        try:
            assert orch.run(call("noop", 1), timeout=5) == 1
        finally:
            assert orch.engine.alive(), "the engine thread died"


# --- 4. an executor whose dispatch raises loses the attempt forever ----------------------------


def test_a_refused_dispatch_ends_the_attempt_as_lost_and_the_policy_retries_it() -> None:
    with orchestrator(MemoryStore(), executor=FlakyDispatch()) as orch:
        run = orch.submit(call("noop", 1).options(retry=QUICK))
        assert run.result(timeout=3) == 1
        failed = [e.data["error"] for e in orch.events(run.id) if e.type == ev.COMMAND_FAILED]
        assert [(f["reason"], f["type"]) for f in failed] == [("lost", "orchestrator.core.errors.WorkerLost")]


# --- 5. an append failure makes the engine re-dispatch attempts whose outcome it holds -----------


def test_an_append_failure_does_not_run_a_finished_attempt_again() -> None:
    with orchestrator(FailSucceededOnce()) as orch:
        assert orch.run(call("counted", 1), timeout=5) == 1
        try:  # a check that something does NOT happen: a second execution, at any time within 0.5 s
            wait_until(lambda: len(executions) >= 2, timeout=0.5, what="a second execution")
        except AssertionError:
            pass  # 0.5 s went by without one, as it should
        else:
            pytest.fail(f"the finished attempt ran again: {executions}")


# --- 6. one event too big for the store stalls its run (and every run batched with it) ----------


def test_oversize_arguments_fail_the_run_instead_of_stalling_it() -> None:
    with orchestrator(MemoryStore()) as orch:
        flow = sequence(parallel(call("big"), call("big")), call("length"))
        with pytest.raises(RunFailed):
            orch.run(flow, timeout=5)


def test_one_oversize_run_does_not_refuse_every_other_submission() -> None:
    with orchestrator(MemoryStore()) as orch:
        poisoned = orch.submit(sequence(parallel(call("big"), call("big")), call("length")))
        assert orch.run(call("noop", 1), timeout=5) == 1
        with pytest.raises(RunFailed):
            poisoned.result(timeout=5)
        assert orch.engine.backoff.failures == 0


# --- 7. live state shares mutable values with commands ------------------------------------------


def test_a_retry_gets_the_arguments_the_log_recorded_not_what_the_last_attempt_left() -> None:
    with orchestrator(MemoryStore()) as orch:
        run = orch.submit(sequence(call("make"), call("take_one").options(retry=QUICK)))
        result = run.result(timeout=5)
        dispatched = [e.data["args"] for e in orch.events(run.id) if e.type == ev.COMMAND_DISPATCHED]
        assert dispatched[1:] == [[[1, 2, 3]], [[1, 2, 3]]]
        assert result == [1, 2]


# --- 8. a cancelled submit future aborts the turn; other submitters hang -------------------------


def test_a_cancelled_async_submit_does_not_strand_other_submitters() -> None:
    store = GatedStore()
    with orchestrator(store) as orch:
        store.gate.clear()
        store.entered.clear()
        first = orch.submit_future(call("noop", 0))  # the engine blocks appending this
        assert store.entered.wait(3)

        async def impatient() -> None:
            await asyncio.wait_for(orch.submit_async(call("noop", 1)), 0.05)

        with pytest.raises(TimeoutError):
            asyncio.run(impatient())  # cancels the engine's submit future, as asyncio does
        second = orch.submit_future(call("noop", 2))  # what orch.submit() waits on
        store.gate.set()
        assert first.result(3)
        assert second.result(3)  # never resolves: the turn died on the cancelled future


# --- 9. closing the orchestrator leaves waiters hanging -------------------------------------------


def test_close_answers_runs_still_being_waited_on() -> None:
    gate = threading.Event()
    commands = make_registry()
    commands.register("wait", lambda: gate.wait(10))
    orch = Orchestrator(commands, executor="threads://2", store=MemoryStore()).start()
    with ThreadPoolExecutor(2) as pool:
        waiting = pool.submit(orch.run, call("wait"), timeout=3)
        wait_until(lambda: bool(orch.engine.book.live), timeout=3.0, what="the run live in the engine")
        closing = pool.submit(orch.close)
        wait_until(lambda: not orch.engine.alive(), timeout=3.0, what="the engine thread stopped")
        gate.set()
        closing.result(5)
        with pytest.raises(Exception) as caught:
            waiting.result(5)
        assert not isinstance(caught.value, ResultTimeout), "run() hung until its own timeout"


# --- 10. Orchestrator.start is not safe for concurrent first use -----------------------------------


def test_two_threads_submitting_first_do_not_start_the_engine_twice() -> None:
    executor = CountingStarts()
    orch = orchestrator(SlowStartStore(), executor)  # not started: submit() starts it lazily
    barrier = threading.Barrier(2)

    def submit(x: int) -> Any:
        barrier.wait()
        return orch.submit(call("noop", x))

    try:
        with ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(submit, i) for i in range(2)]
            for future in futures:
                future.result(5)
    finally:
        orch.close()
    assert executor.starts == 1  # 2: both threads ran Engine.start (and Thread.start) at once


# --- 7. a failed append paused the whole engine thread (issue 12: a backoff is a timer) ---------


class StuckAppends(MemoryStore):
    """Appends fail while ``stuck`` is set; reads always work."""

    stuck = False

    def append(self, events: Sequence[Event]) -> None:
        if self.stuck:
            raise ConnectionError("appends are failing")
        super().append(events)


def test_while_appends_fail_the_engine_still_answers_what_it_holds_and_then_catches_up() -> None:
    store = StuckAppends()
    with orchestrator(store) as orch:
        done = orch.submit(call("noop", 7))
        assert done.result(timeout=5) == 7
        store.stuck = True
        pending = orch.submit_future(call("noop", 8))  # its append fails, again and again
        wait_until(lambda: orch.engine.backoff.failures >= 2, what="appends failing in a row")
        assert done.result(timeout=5) == 7  # served from memory during the pause
        assert store.stuck and not pending.done()
        store.stuck = False
        assert orch.result(pending.result(timeout=10), timeout=10) == 8
        assert orch.engine.backoff.failures == 0
