"""A store that refuses events for what they hold: the guilty run ends with the reason, the rest go on.

The boundary checks catch bad values before any append; this is the net under them (a server-side
rule, a store with limits of its own). ``RefusingStore`` refuses the events a predicate picks, naming
them (``EventRefused``) or not (a plain ``PayloadError``), before writing anything, as evenflow's
stores do.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from datetime import timedelta
from typing import Any

import pytest

from orchestrator import Orchestrator, PayloadError, RetryPolicy, RunFailed, call, parallel, sequence
from orchestrator.core import events as ev
from orchestrator.core.errors import EventRefused
from orchestrator.core.events import Event
from orchestrator.store import MemoryStore
from tests.commands import make_registry

WAIT_S = 60.0
RETRY = RetryPolicy(max_attempts=3, initial_delay=timedelta(milliseconds=10))


class RefusingStore(MemoryStore):
    def __init__(self, refuse: Callable[[Event], bool], *, named: bool = True) -> None:
        super().__init__()
        self.refuse = refuse
        self.named = named
        self.refusals = 0

    def append(self, events: Sequence[Event]) -> None:
        bad = [event.id for event in events if self.refuse(event)]
        if bad:
            self.refusals += 1
            if self.named:
                raise EventRefused(f"the test store refuses {bad}", events=bad)
            raise PayloadError("the test store refuses part of this append")
        super().append(events)


def result_is(value: Any, type_: str = ev.COMMAND_SUCCEEDED) -> Callable[[Event], bool]:
    return lambda event: event.type == type_ and event.data.get("result") == value


@pytest.fixture(params=[True, False], ids=["named", "unnamed"])
def named(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def orchestrator(store: RefusingStore) -> Orchestrator:
    return Orchestrator(make_registry(), store=store, executor="threads://4", read_models=False)


class Bystanders:
    """Runs submitted around the guilty one without waiting, so they share its turns; each must succeed."""

    def __init__(self, orch: Orchestrator, count: int, start: int = 0) -> None:
        self.orch = orch
        self.numbers = list(range(start, start + count))
        self.submitted: list[Future[str]] = [
            orch.submit_future(sequence(call("inc", i), call("square"))) for i in self.numbers
        ]

    def check(self) -> None:
        results = [self.orch.result(future.result(WAIT_S), WAIT_S) for future in self.submitted]
        assert results == [(i + 1) ** 2 for i in self.numbers]


@pytest.fixture
def quiet(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.ERROR, logger="evenflow.engine")
    yield caplog


def outage_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "append of a turn failed" in r.getMessage()]


def test_a_refused_result_fails_its_attempt_without_retry_and_the_others_go_on(
    named: bool, quiet: pytest.LogCaptureFixture
) -> None:
    store = RefusingStore(result_is("poison"), named=named)
    with orchestrator(store) as orch:
        before = Bystanders(orch, 10)
        guilty = orch.submit(parallel(call("noop", "poison").options(retry=RETRY), call("inc", 1)))
        after = Bystanders(orch, 10, start=10)
        with pytest.raises(RunFailed) as caught:
            guilty.result(timeout=WAIT_S)
        before.check()
        after.check()
        assert orch.run(call("inc", 41), timeout=WAIT_S) == 42
        events = orch.events(guilty.id)
    (failure,) = caught.value.failures
    assert failure.type.endswith("PayloadError") and "could not take" in failure.message
    dispatched = [e for e in events if e.type == ev.COMMAND_DISPATCHED and e.node == "r.0"]
    assert len(dispatched) == 1, "a refused result is not retried"
    assert any(e.type == ev.COMMAND_SUCCEEDED and e.node == "r.1" for e in events), "its sibling ran"
    assert outage_warnings(quiet) == [], "a refusal is not an outage"


def test_a_refused_decision_ends_its_run_failed_with_the_reason(named: bool) -> None:
    store = RefusingStore(result_is("final", ev.RUN_SUCCEEDED), named=named)
    with orchestrator(store) as orch:
        around = Bystanders(orch, 20)
        guilty = orch.submit(call("noop", "final"))
        with pytest.raises(RunFailed) as caught:
            guilty.result(timeout=WAIT_S)
        around.check()
        state = orch.state(guilty.id)
    assert state.status == "failed"
    assert state.failures[0]["type"].endswith("EventRefused")
    assert "refuses" in caught.value.failures[0].message


def test_a_refused_submission_is_refused_to_its_caller_and_nothing_is_logged(named: bool) -> None:
    store = RefusingStore(lambda event: event.type == ev.RUN_SUBMITTED and event.data.get("name") == "bad")
    store.named = named
    with orchestrator(store) as orch:
        around = Bystanders(orch, 20)
        with pytest.raises(PayloadError, match="refuses"):
            orch.submit(call("inc", 1), name="bad")
        around.check()
        assert orch.run(call("inc", 1), timeout=WAIT_S) == 2
    assert store.refusals >= 1


def test_a_refused_first_dispatch_answers_the_submitter_with_what_the_log_holds(named: bool) -> None:
    """Refused with the run's submission in the same turn: a store that wrote nothing refuses the
    submission; one that wrote the events before the refused one has the run, which then fails."""
    store = RefusingStore(lambda event: event.type == ev.COMMAND_DISPATCHED and event.command == "triple")
    store.named = named
    flow = call("triple", 3)
    with orchestrator(store) as orch:
        around = Bystanders(orch, 20)
        if named:
            with pytest.raises(PayloadError, match="refuses"):
                orch.submit(flow)
        else:
            run = orch.submit(flow)
            with pytest.raises(RunFailed, match="refuses"):
                run.result(timeout=WAIT_S)
            assert [e.type for e in orch.events(run.id)] == [ev.RUN_SUBMITTED, ev.RUN_FAILED]
        around.check()
