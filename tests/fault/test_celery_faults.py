"""Celery under faults: worker children SIGKILLed mid-command, duplicate deliveries, deadlines.

Every test drives a real ``Orchestrator`` (embedded store) through a real
prefork Celery worker and checks RELIABILITY.md's invariants against an
external ledger: L1 (seq 1..N, the events fold), L4 (a terminal event before a
deadline), L5 (per node at least one execution, one accepted outcome; extras
flagged ``outcome.ignored``) and L9 (no execution without a logged dispatch).
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from orchestrator import Orchestrator, RetryPolicy, RunFailed, call, chord, each, parallel, sequence
from orchestrator.core import events as ev
from orchestrator.core.envelope import Envelope
from orchestrator.core.events import Event, utcnow
from tests.commands import ledger_read
from tests.contract.executor_suite import WAIT_S, Outcomes, envelope
from tests.support.celery_worker import CeleryWorker, registry
from tests.support.invariants import check
from tests.support.polling import wait_until
from workers.celery import CeleryExecutor
from workers.celery.app import MAX_DELIVERIES
from workers.celery.executor import TIME_LIMIT_GRACE_S

pytest_plugins = ["tests.support.redis_server", "tests.support.celery_worker"]
pytestmark = pytest.mark.slow

TERMINAL_S = 60.0
"""L4: how long a run may take to reach its terminal event once faults stop."""
QUICK = RetryPolicy(max_attempts=3, initial_delay=timedelta(milliseconds=10), jitter=0)
Executions = Counter[tuple[str, int]]


class Doubling(CeleryExecutor):
    """A chaos wrapper: publishes every task twice under one task id, as a redelivering broker does."""

    def _publish(self, connection: Any, outgoing: list[tuple[str, Envelope]]) -> None:
        super()._publish(connection, outgoing)
        super()._publish(connection, outgoing)


@pytest.fixture
def ledger(tmp_path: Path) -> str:
    return str(tmp_path / "ledger.jsonl")


@pytest.fixture
def orch(celery: CeleryWorker, tmp_path: Path) -> Iterator[Orchestrator]:
    executor = CeleryExecutor(celery.broker, queue=celery.queue)
    with Orchestrator(registry(), executor=executor, store=f"embedded://{tmp_path / 'home'}") as orchestrator:
        yield orchestrator


# --- the invariants ---------------------------------------------------------------------


def verified(orch: Orchestrator, run: str, ledger: str, nodes: int) -> tuple[list[Event], Executions]:
    """L1, L4, L5 and L9 (``tests.support.invariants``) for a run whose ``nodes`` nodes write the ledger.

    An outcome that arrives after the run ended (the engine's timer and the
    executor's both end an attempt at its deadline) may only be logged as
    ``outcome.ignored``. Also returns the executions per (node, attempt) in the ledger.
    """
    events, entries = orch.events(run), ledger_read(ledger)
    end = next((i for i, e in enumerate(events) if e.type in ev.RUN_TERMINAL), len(events) - 1)
    assert {e.type for e in events[end + 1 :]} <= {ev.OUTCOME_IGNORED}, "L5: events after the run ended"
    check(run, events[: end + 1], entries, ledgered_nodes=nodes)
    return events, Counter((e.node, e.attempt) for e in entries if e.run == run)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# --- killed worker children -------------------------------------------------------------


def test_a_child_sigkilled_mid_command_is_redelivered_and_the_run_completes(
    orch: Orchestrator, ledger: str, tmp_path: Path
) -> None:
    gate = str(tmp_path / "gate")
    flow = sequence(
        call("ledgered", 1, ledger=ledger), call("ledgered_wait", ledger, gate, 41).si(), call("inc")
    )
    run = orch.submit(flow)
    wait_until(lambda: any(e.node == "r.1" for e in ledger_read(ledger)), timeout=WAIT_S, what="r.1 started")
    victim = next(e.pid for e in ledger_read(ledger) if e.node == "r.1")
    os.kill(victim, signal.SIGKILL)
    wait_until(  # acks_late: redelivered
        lambda: sum(e.node == "r.1" for e in ledger_read(ledger)) == 2, timeout=WAIT_S, what="r.1 redelivered"
    )
    Path(gate).touch()
    assert run.result(timeout=TERMINAL_S) == 42
    events, executions = verified(orch, run.id, ledger, nodes=2)
    assert executions[("r.1", 1)] == 2  # the same attempt ran again; the log took one outcome
    assert not [e for e in events if e.type == ev.COMMAND_FAILED]


def test_a_command_that_kills_its_child_once_still_succeeds_in_its_first_attempt(
    orch: Orchestrator, ledger: str, tmp_path: Path
) -> None:
    marker = str(tmp_path / "marker")
    flow = parallel(call("ledgered_die_once", marker, ledger, "survived"), call("ledgered", 2, ledger=ledger))
    run = orch.submit(flow)
    assert run.result(timeout=TERMINAL_S) == ["survived", 2]
    _, executions = verified(orch, run.id, ledger, nodes=2)
    assert executions[("r.0", 1)] == 2
    assert executions[("r.1", 1)] == 1


def test_a_command_that_kills_every_child_it_runs_in_ends_as_worker_lost(
    celery: CeleryWorker, ledger: str
) -> None:
    """Requeue-on-lost is bounded: after MAX_DELIVERIES dead children the attempt is reported lost.

    (Through an orchestrator the engine would then re-dispatch it as a new attempt, a few times.)
    """
    executor = CeleryExecutor(celery.broker, queue=celery.queue)
    outcomes = Outcomes()
    executor.start(registry(), outcomes)
    try:
        killer, other = envelope("ledgered_kill", ledger), envelope("inc", 1)
        executor.dispatch([killer, other])
        lost, done = outcomes.of([killer, other])
    finally:
        executor.close()
    assert done.result == 2
    assert lost.error is not None and lost.error.type == "orchestrator.core.errors.WorkerLost"
    assert lost.error.reason == "lost" and f"each of {MAX_DELIVERIES} deliveries" in lost.error.message
    assert lost.by is not None and lost.by.endswith("/celery")
    pids = [entry.pid for entry in ledger_read(ledger)]
    assert len(pids) == len(set(pids)) == MAX_DELIVERIES  # one fresh child per delivery, each killed
    outcomes.assert_unique()


# --- duplicates and deadlines -----------------------------------------------------------


def test_a_task_delivered_twice_is_reported_once(celery: CeleryWorker, ledger: str, tmp_path: Path) -> None:
    gate = str(tmp_path / "gate")
    executor = Doubling(celery.broker, queue=celery.queue)
    with Orchestrator(registry(), executor=executor, store="memory://") as orch:
        run = orch.submit(sequence(call("ledgered_wait", ledger, gate, 7), call("inc")))
        wait_until(  # both deliveries are running at once
            lambda: len(ledger_read(ledger)) == 2, timeout=WAIT_S, what="both deliveries started"
        )
        Path(gate).touch()
        assert run.result(timeout=TERMINAL_S) == 8
        events, executions = verified(orch, run.id, ledger, nodes=1)
    assert executions[("r.0", 1)] == 2
    assert not [e for e in events if e.type == ev.OUTCOME_IGNORED]  # the executor dropped the second


def test_an_attempt_past_its_deadline_times_out_and_the_worker_is_freed(
    celery: CeleryWorker, ledger: str, tmp_path: Path
) -> None:
    executor = CeleryExecutor(celery.broker, queue=celery.queue)
    outcomes = Outcomes()
    executor.start(registry(), outcomes)
    try:
        stuck = replace(
            envelope("ledgered_wait", ledger, str(tmp_path / "never")),
            deadline=utcnow() + timedelta(seconds=1),
        )
        executor.dispatch([stuck])
        (outcome,) = outcomes.wait_for(1, timeout_s=10.0)
        assert outcome.error is not None and outcome.error.type == "orchestrator.core.errors.CommandTimeout"
        assert outcome.error.reason == "timeout"
        victim = ledger_read(ledger)[0].pid
        wait_until(  # Celery's time limit
            lambda: not alive(victim),
            timeout=TIME_LIMIT_GRACE_S + 10.0,
            what=f"the stuck child {victim} killed",
        )
        executor.dispatch([envelope("inc", 1)])
        assert outcomes.wait_for(2)[1].result == 2
    finally:
        executor.close()
    outcomes.assert_unique()


def test_a_node_timeout_through_the_orchestrator(orch: Orchestrator, ledger: str, tmp_path: Path) -> None:
    gate = str(tmp_path / "gate")
    slow = call("ledgered_wait", ledger, gate, 1).options(timeout=timedelta(seconds=1))
    run = orch.submit(slow)
    with pytest.raises(RunFailed) as caught:
        run.result(timeout=TERMINAL_S)
    assert ledger_read(ledger), "the attempt should have started well before its deadline"
    Path(gate).touch()  # lets the worker child finish; its late reply is dropped
    assert caught.value.failures[0].type == "orchestrator.core.errors.CommandTimeout"
    verified(orch, run.id, ledger, nodes=1)


# --- flows end to end -------------------------------------------------------------------


def test_flows_run_end_to_end_through_celery(orch: Orchestrator) -> None:
    flows = [
        (sequence(call("inc", 1), parallel(call("square"), call("triple")), call("total")), 10),
        (chord([call("square", i) for i in range(10)], call("total")), 285),
        (sequence(call("returns_flow", 3), call("inc")), 6),
        (sequence(call("noop", [1, 2, 3]), each("async_double")), [2, 4, 6]),
        (chord([call("flaky", i).options(retry=QUICK) for i in range(4)], call("total")), 6),
    ]
    runs = [(orch.submit(flow), expected) for flow, expected in flows]
    for run, expected in runs:
        assert run.result(timeout=TERMINAL_S) == expected
        events = orch.events(run.id)
        check(run.id, events, [])
        assert not [e for e in events if e.type == ev.OUTCOME_IGNORED]
    retried = [e for e in orch.events(runs[-1][0].id) if e.type == ev.RETRY_SCHEDULED]
    assert len(retried) == 8  # four nodes, two failed attempts each, retried by the log (not Celery)
