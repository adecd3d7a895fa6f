"""processes://: each envelope is reported exactly once, and a dead child costs only what it had started.

Envelopes go straight to one child each; the child marks in shared memory the
attempt it starts and streams its outcome back. When a child dies, what it had
queued but not started runs once elsewhere, a replacement child starts, and
its siblings carry on. The ticket each envelope holds until it is reported
lets only one outcome through, however often a message arrives.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest

from orchestrator.core.registry import Registry
from tests import commands
from tests.commands import ledger_read, make_registry
from tests.contract.executor_suite import WAIT_S, Harness, Outcomes, envelope, harnessed
from tests.support.polling import wait_until
from workers import executor_from_url
from workers.execution import failed
from workers.process_child import encode
from workers.process_work import MAX_RESENDS
from workers.processes import ProcessExecutor

pytestmark = pytest.mark.slow


@pytest.fixture
def processes() -> Iterator[Harness]:
    with harnessed("processes", executor_from_url("processes://2")) as found:
        yield found


@pytest.fixture
def one_child() -> Iterator[Harness]:
    """One child: everything dispatched queues behind whatever runs in it."""
    with harnessed("processes", ProcessExecutor(1)) as found:
        yield found


@pytest.fixture
def ledger(tmp_path: Path) -> str:
    return str(tmp_path / "ledger.jsonl")


def _pids(executor: ProcessExecutor) -> set[int]:
    return {child.process.pid for child in executor._children if child.process.pid is not None}


def test_thousands_of_streamed_outcomes_are_each_reported_once(processes: Harness) -> None:
    for _ in range(3):
        batch = [envelope("noop", i) for i in range(2_000)]
        assert [outcome.result for outcome in processes.run(*batch)] == list(range(2_000))
    processes.outcomes.assert_unique()
    assert isinstance(processes.executor, ProcessExecutor)
    assert processes.executor._book.tickets == {}
    assert not processes.executor._book.backlog


def test_an_outcome_that_arrives_twice_is_reported_once(processes: Harness) -> None:
    executor = processes.executor
    assert isinstance(executor, ProcessExecutor)
    item = envelope("inc", 1)
    outcome = failed(item, ValueError("made up"), by="test")
    executor._book.add(item)
    number = next(iter(executor._book.tickets))
    executor._book.backlog.clear()  # held as if sent, so no child ends it first
    child = executor._children[0]
    executor._on_messages(child, [encode(number, outcome), encode(number, outcome)])
    executor._on_messages(child, [encode(number, outcome)])
    assert [o.attempt_id for o in processes.outcomes.items] == [item.attempt_id]
    assert [o.error and o.error.message for o in processes.outcomes.items] == ["made up"]


def test_envelopes_queued_behind_a_dying_attempt_run_once_in_a_new_child(
    one_child: Harness, ledger: str, tmp_path: Path
) -> None:
    executor = one_child.executor
    assert isinstance(executor, ProcessExecutor)
    (first,) = _pids(executor)
    killer = envelope("die_once", str(tmp_path / "killed"))
    queued = [envelope("ledgered", i, ledger=ledger) for i in range(30)]
    outcomes = one_child.run(killer, *queued)

    assert outcomes[0].error is not None and outcomes[0].error.reason == "lost"
    assert [outcome.result for outcome in outcomes[1:]] == list(range(30))
    runs = collections.Counter(entry.node for entry in ledger_read(ledger))
    assert sorted(runs) == sorted(item.node for item in queued) and set(runs.values()) == {1}
    assert first not in {entry.pid for entry in ledger_read(ledger)}, "they ran in the child that died"


def test_a_dead_child_is_replaced_and_its_sibling_is_undisturbed(processes: Harness, tmp_path: Path) -> None:
    executor = processes.executor
    assert isinstance(executor, ProcessExecutor)
    gate = tmp_path / "gate"
    slow = envelope("wait_for_file", str(gate), "slow", WAIT_S)
    executor.dispatch([slow])
    wait_until(lambda: any(child.started.value >= 0 for child in executor._children), what="slow started")
    try:
        outcome = processes.run_one(envelope("kill_self"))
        assert outcome.error is not None and outcome.error.reason == "lost"
        wait_until(lambda: len(executor._children) == 2, what="a replacement child")
    finally:
        gate.touch()
    assert processes.outcomes.of([slow])[0].result == "slow", "the sibling's attempt was disturbed"


def test_the_futures_face_survives_a_child_death(tmp_path: Path, ledger: str) -> None:
    with ProcessExecutor(1) as executor:
        dying = executor.submit(commands.die_once, str(tmp_path / "killed"))
        behind = [executor.submit(commands.ledgered, i, ledger) for i in range(5)]
        assert isinstance(dying.exception(timeout=WAIT_S), BrokenProcessPool)
        assert [future.result(timeout=WAIT_S) for future in behind] == list(range(5))
        assert len(ledger_read(ledger)) == 5
        assert executor.submit(commands.square, 3).result(timeout=WAIT_S) == 9


def test_a_call_that_cannot_be_rebuilt_in_the_child_fails_alone() -> None:
    with ProcessExecutor(1) as executor:
        future = executor.submit(_Unrebuildable(), 1)
        error = future.exception(timeout=WAIT_S)
        assert error is not None
        assert executor.submit(commands.square, 4).result(timeout=WAIT_S) == 16


class _Unrebuildable:
    """Pickles fine; rebuilding it raises (in the child)."""

    def __reduce__(self) -> tuple[object, ...]:
        return (_no_such_thing, ())

    def __call__(self, value: int) -> int:
        return value


def _no_such_thing() -> None:
    raise LookupError("this call cannot be rebuilt in the child")


class Bomb:
    """A command whose unpickling ends the process doing it: every child dies as it loads the registry."""

    def __reduce__(self) -> tuple[object, ...]:
        return (os._exit, (3,))

    def __call__(self) -> None:
        return None


def test_children_that_die_before_starting_anything_cost_bounded_resends() -> None:
    registry: Registry = make_registry()
    registry.register("bomb", Bomb())
    outcomes = Outcomes()
    executor = ProcessExecutor(2)
    executor.start(registry, outcomes)
    try:
        executor.dispatch([item := envelope("inc", 1)])
        (outcome,) = outcomes.of([item])
        assert outcome.error is not None and outcome.error.reason == "lost"
        assert f"died {MAX_RESENDS + 1} times before it could start" in outcome.error.message
        wait_until(lambda: not executor._children, what="no child left starting over and over")
    finally:
        executor.close()


def test_an_envelope_whose_arguments_will_not_pickle_fails_alone(one_child: Harness) -> None:
    refused = envelope("describe", lambda: None)
    batch = [*(envelope("inc", i) for i in range(10)), refused, *(envelope("inc", i) for i in range(10, 20))]
    outcomes = one_child.run(*batch)  # in chunks of six: the refused one shares its chunk with others
    assert [outcome.result for outcome in outcomes if outcome.ok] == list(range(1, 21))
    error = outcomes[10].error
    assert error is not None and error.type == "orchestrator.core.errors.PayloadError"
    assert "cannot be sent to a worker process" in error.message
