"""The engine end to end on the in-memory store: data flow, failure, retries, timers and the log."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import suppress
from datetime import timedelta
from typing import Any

import pytest

from orchestrator import (
    Orchestrator,
    PayloadError,
    Registry,
    RetryPolicy,
    RunFailed,
    UnknownCommand,
    WorkerLost,
    call,
    chord,
    current_call,
    each,
    parallel,
    sequence,
)
from orchestrator.core import events as ev
from orchestrator.core.envelope import Envelope, ErrorInfo, Outcome
from orchestrator.core.planner import LOST_REDISPATCHES
from orchestrator.core.registry import Registry as RegistryType
from orchestrator.store.memory import MemoryStore
from tests.support.polling import wait_until
from workers.threads import ThreadExecutor

QUICK = RetryPolicy(max_attempts=3, initial_delay=timedelta(milliseconds=20), jitter=0)
release = threading.Event()


def flaky(x: int, fail_times: int = 2) -> int:
    context = current_call()
    assert context is not None
    if context.attempt <= fail_times:
        raise ConnectionError(f"attempt {context.attempt} failed")
    return x


def boom(*args: Any) -> None:
    raise ValueError(f"boom {args}")


def blocks(x: int) -> int:
    release.wait(10)
    return x


def expand(n: int) -> Any:
    return sequence(call("inc", n), call("square"))


def make_registry() -> Registry:
    commands = Registry()
    commands.register("inc", lambda x: x + 1)
    commands.register("square", lambda x: x * x)
    commands.register("total", sum)
    commands.register("flaky", flaky)
    commands.register("boom", boom)
    commands.register("blocks", blocks)
    commands.register("expand", expand)
    commands.register("as_set", lambda x: {x})
    commands.register("record", lambda *a: list(a))
    return commands


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def orch(store: MemoryStore) -> Iterator[Orchestrator]:
    release.clear()
    with Orchestrator(make_registry(), executor="threads://4", store=store) as orchestrator:
        yield orchestrator
    release.set()


def types(orch: Orchestrator, run: str) -> list[str]:
    return [event.type for event in orch.events(run)]


def test_the_issue_example_computes_8_and_a_chord_of_squares(orch: Orchestrator) -> None:
    flow = sequence(call("inc", 1), parallel(call("square"), call("square")), call("total"))
    assert orch.run(flow, timeout=30) == 8
    run = orch.submit(chord([call("square", i) for i in range(10)], call("total")))
    assert run.result(timeout=30) == sum(i * i for i in range(10))
    assert run.status() == "succeeded"


def test_every_step_is_in_the_log_with_gapless_seq(orch: Orchestrator) -> None:
    run = orch.submit(sequence(call("inc", 1), call("inc")))
    assert run.result(timeout=30) == 3
    events = orch.events(run.id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert types(orch, run.id) == [
        ev.RUN_SUBMITTED,
        *[ev.COMMAND_DISPATCHED, ev.COMMAND_STARTED, ev.COMMAND_SUCCEEDED] * 2,
        ev.RUN_SUCCEEDED,
    ]
    assert events[1].data["args"] == [1] and events[4].data["args"] == [2]


def test_input_goes_to_the_first_step_and_immutable_steps_ignore_it(orch: Orchestrator) -> None:
    assert orch.run(sequence(call("inc"), call("record", "x").si()), input=4, timeout=30) == ["x"]
    assert orch.run(sequence(call("inc"), call("record", "x")), input=4, timeout=30) == [5, "x"]


def test_empty_chord_header_calls_the_body_with_an_empty_list(orch: Orchestrator) -> None:
    assert orch.run(chord([], call("record")), timeout=30) == [[]]


def test_each_maps_over_the_previous_result(orch: Orchestrator) -> None:
    flow = sequence(call("record", 1, 2, 3), each("square"), call("total"))
    assert orch.run(flow, timeout=30) == 14


def test_a_command_returning_a_flow_is_replaced_by_it(orch: Orchestrator) -> None:
    assert orch.run(sequence(call("expand", 2), call("inc")), timeout=30) == 10


def test_retries_follow_the_policy_and_are_logged(orch: Orchestrator) -> None:
    run = orch.submit(call("flaky", 7).options(retry=QUICK))
    assert run.result(timeout=30) == 7
    events = orch.events(run.id)
    kinds = Counter(e.type for e in events)
    assert kinds[ev.COMMAND_DISPATCHED] == 3
    assert kinds[ev.RETRY_SCHEDULED] == 2
    assert kinds[ev.COMMAND_FAILED] == 2
    due = [e.data["due"] for e in events if e.type == ev.RETRY_SCHEDULED]
    later = [e.at for e in events if e.type == ev.COMMAND_DISPATCHED][1:]
    assert all(dispatched >= when for dispatched, when in zip(later, due, strict=True))


def test_retries_run_out_and_the_failure_names_node_attempt_and_type(orch: Orchestrator) -> None:
    with pytest.raises(RunFailed) as caught:
        orch.run(call("flaky", 1, fail_times=5).options(retry=QUICK), timeout=30)
    (failure,) = caught.value.failures
    assert (failure.node, failure.command, failure.attempt) == ("r", "flaky", 3)
    assert failure.type == "builtins.ConnectionError"
    assert "Traceback" in failure.traceback
    assert "attempt 3" in str(caught.value)


def test_a_failing_group_fails_once_listing_every_failed_branch(orch: Orchestrator) -> None:
    flow = chord([call("boom", 1), call("inc", 1), call("boom", 2)], call("total"))
    run = orch.submit(flow)
    with pytest.raises(RunFailed) as caught:
        run.result(timeout=30)
    assert sorted(f.node for f in caught.value.failures) == ["r.0.0", "r.0.2"]
    kinds = types(orch, run.id)
    assert kinds.count(ev.RUN_FAILED) == 1
    assert not any(e.node == "r.1" for e in orch.events(run.id))  # the chord body never ran


def test_nested_groups_propagate_failure(orch: Orchestrator) -> None:
    flow = parallel(call("inc", 1), sequence(call("inc", 1), parallel(call("boom"), call("square"))))
    with pytest.raises(RunFailed) as caught:
        orch.run(flow, timeout=30)
    assert [f.node for f in caught.value.failures] == ["r.1.1.0"]


def test_cancel_mode_fails_the_group_without_waiting_for_siblings(orch: Orchestrator) -> None:
    run = orch.submit(parallel(call("blocks", 1), call("boom"), siblings="cancel"))
    with pytest.raises(RunFailed):
        run.result(timeout=30)  # does not wait for "blocks", which waits for `release`
    release.set()
    assert orch.state(run.id).nodes["r.0"].status == "cancelled"


def test_a_timed_out_attempt_is_retried_and_its_late_result_ignored(orch: Orchestrator) -> None:
    node = call("blocks", 5).options(timeout=timedelta(milliseconds=100), retry=QUICK)
    run = orch.submit(node)
    with suppress(AssertionError):  # a bounded wait, not a check of its own: the assertions below check
        wait_until(
            lambda: ev.RETRY_SCHEDULED in types(orch, run.id),
            timeout=6.0,
            what="the first attempt timed out and its retry scheduled",
        )
    release.set()
    assert run.result(timeout=30) == 5
    events = orch.events(run.id)
    failed = [e for e in events if e.type == ev.COMMAND_FAILED]
    assert failed[0].data["error"]["reason"] == "timeout"
    assert failed[0].data["error"]["type"] == "orchestrator.core.errors.CommandTimeout"


def test_a_result_that_cannot_be_stored_fails_the_node(orch: Orchestrator) -> None:
    with pytest.raises(RunFailed) as caught:
        orch.run(call("as_set", 1), timeout=30)
    assert caught.value.failures[0].type == "orchestrator.core.errors.PayloadError"


def test_each_over_something_not_a_list_fails_clearly(orch: Orchestrator) -> None:
    with pytest.raises(RunFailed, match="needs a list, got a int"):
        orch.run(sequence(call("inc", 1), each("square")), timeout=30)


def test_a_refused_submission_appends_nothing(orch: Orchestrator, store: MemoryStore) -> None:
    with pytest.raises(UnknownCommand):
        orch.submit(call("nope"))
    with pytest.raises(PayloadError):
        orch.submit(call("inc", 1), input={1, 2})
    assert store.unfinished_runs() == []


def test_the_async_face_uses_the_same_engine(orch: Orchestrator) -> None:
    async def main() -> tuple[Any, Any]:
        first = await orch.run_async(sequence(call("inc", 1), call("square")), timeout=30)
        run = await orch.submit_async(call("inc", 41))
        return first, await run.result_async(timeout=30)

    assert asyncio.run(main()) == (4, 42)


class Duplicating:
    """A chaos executor: every outcome is reported twice."""

    requires_pickle = False

    def __init__(self) -> None:
        self.inner = ThreadExecutor(2)

    def start(self, registry: RegistryType, report: Any) -> None:
        self.inner.start(registry, lambda outcome: (report(outcome), report(outcome)))

    def dispatch(self, envelopes: Sequence[Envelope]) -> None:
        self.inner.dispatch(envelopes)

    def close(self) -> None:
        self.inner.close()


def test_duplicate_outcomes_are_recorded_and_ignored(store: MemoryStore) -> None:
    with Orchestrator(make_registry(), executor=Duplicating(), store=store) as orch:
        run = orch.submit(sequence(call("inc", 1), parallel(call("inc"), call("square"))))
        assert run.result(timeout=30) == [3, 4]
        ignored = [e for e in orch.events(run.id) if e.type == ev.OUTCOME_IGNORED]
        assert sorted(e.node or "" for e in ignored if e.data["reason"] == "duplicate")[:1] == ["r.0"]
        assert Counter(e.type for e in orch.events(run.id))[ev.COMMAND_SUCCEEDED] == 3


def test_outcome_type_is_plain_data() -> None:
    outcome = Outcome("r", "n", 1, True, result=[1])
    assert outcome.attempt_id == "r/n#1"


class Losing:
    """A chaos executor: the first ``lose`` attempts of every node end ``lost``, as if their worker died."""

    requires_pickle = False

    def __init__(self, lose: int) -> None:
        self.lose = lose
        self.inner = ThreadExecutor(2)
        self.report: Any = None

    def start(self, registry: RegistryType, report: Any) -> None:
        self.report = report
        self.inner.start(registry, report)

    def dispatch(self, envelopes: Sequence[Envelope]) -> None:
        run = [e for e in envelopes if e.attempt > self.lose]
        for envelope in envelopes:
            if envelope.attempt <= self.lose:
                error = ErrorInfo.from_exception(WorkerLost("the worker vanished"), reason="lost")
                self.report(Outcome.failed(envelope, error))
        self.inner.dispatch(run)

    def close(self) -> None:
        self.inner.close()


@pytest.mark.parametrize("lose", [1, 3])
def test_lost_attempts_are_sent_again_whatever_the_retry_policy(store: MemoryStore, lose: int) -> None:
    with Orchestrator(make_registry(), executor=Losing(lose), store=store) as orch:
        run = orch.submit(parallel(call("inc", 1), call("square", 3).options(retry=RetryPolicy.no_retry())))
        assert run.result(timeout=30) == [2, 9]
        events = orch.events(run.id)
        retries = [e for e in events if e.type == ev.RETRY_SCHEDULED]
        assert len(retries) == 2 * lose and all(e.data["lost"] and e.data["delay_s"] == 0 for e in retries)


def test_a_command_that_loses_every_worker_fails_after_bounded_attempts(store: MemoryStore) -> None:
    with Orchestrator(make_registry(), executor=Losing(100), store=store) as orch:
        run = orch.submit(call("inc", 1))
        with pytest.raises(RunFailed, match="lost") as failed:
            run.result(timeout=30)
        assert failed.value.failures[0].attempt == LOST_REDISPATCHES + 1
        assert failed.value.failures[0].type == "orchestrator.core.errors.WorkerLost"
