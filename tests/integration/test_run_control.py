"""Cancel, retry-from-failure and idempotency keys, through the Python API on real stores."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator import (
    IdempotencyConflict,
    InvalidRunState,
    Orchestrator,
    RunCancelled,
    RunFailed,
    RunNotFound,
    call,
    chord,
    each,
    parallel,
    sequence,
)
from orchestrator.core import events as ev
from orchestrator.core.events import Event
from tests.commands import ledger_read, make_registry
from tests.support.polling import wait_until

DEADLINE_S = 30.0


def fails_until(marker: str, value: Any = None) -> Any:
    """Fails while ``marker`` does not exist: a step that a fix (the marker) makes pass."""
    if not os.path.exists(marker):
        raise ConnectionError(f"{marker} is missing")
    return value


def registry() -> Any:
    commands = make_registry()
    commands.register("fails_until", fails_until)
    return commands


@pytest.fixture
def orch(tmp_path: Path) -> Iterator[Orchestrator]:
    with Orchestrator(registry(), executor="threads://4", home=tmp_path / "home") as started:
        yield started


def types_after(events: list[Event], kind: str) -> list[str]:
    first = next(i for i, event in enumerate(events) if event.type == kind)
    return [event.type for event in events[first + 1 :]]


# --- cancel -------------------------------------------------------------------------------------


def test_a_cancelled_run_dispatches_nothing_more_and_ends_cancelled(
    orch: Orchestrator, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    run = orch.submit(sequence(call("wait_for_file", str(gate), 1), call("inc"), call("inc")))
    wait_until(
        lambda: any(e.type == ev.COMMAND_DISPATCHED for e in orch.events(run.id)),
        timeout=DEADLINE_S,
        what="the first step dispatched",
    )

    run.cancel("no longer needed")
    with pytest.raises(RunCancelled):
        run.result(DEADLINE_S)
    gate.touch()  # the running step finishes; its outcome is recorded and ignored
    wait_until(
        lambda: any(e.type == ev.OUTCOME_IGNORED for e in orch.events(run.id)),
        timeout=DEADLINE_S,
        what="the running step's outcome recorded and ignored",
    )

    events = orch.events(run.id)
    assert run.status() == "cancelled"
    assert types_after(events, ev.RUN_CANCELLED) == [ev.OUTCOME_IGNORED]
    assert next(e for e in events if e.type == ev.RUN_CANCELLED).data["reason"] == "no longer needed"
    assert sum(e.type == ev.COMMAND_DISPATCHED for e in events) == 1


def test_cancel_is_idempotent_and_refuses_ended_or_unknown_runs(orch: Orchestrator, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    blocked = orch.submit(call("wait_for_file", str(gate)))
    orch.cancel(blocked.id)
    orch.cancel(blocked.id)  # a second cancel changes nothing
    done = orch.submit(call("inc", 1))
    assert done.result(DEADLINE_S) == 2

    with pytest.raises(InvalidRunState, match="already succeeded"):
        orch.cancel(done.id)
    with pytest.raises(RunNotFound):
        orch.cancel("0" * 32)
    assert [e.type for e in orch.events(blocked.id)].count(ev.RUN_CANCELLED) == 1
    gate.touch()


# --- retry from failure -------------------------------------------------------------------------


def test_retry_keeps_what_succeeded_and_runs_only_what_failed(orch: Orchestrator, tmp_path: Path) -> None:
    ledger, marker = str(tmp_path / "ledger.jsonl"), str(tmp_path / "fixed")
    flow = chord(
        [
            call("ledgered", 1, ledger=ledger),
            call("fails_until", marker, 10),
            call("ledgered", 100, ledger=ledger),
        ],
        call("total"),
    )
    failed = orch.submit(flow)
    with pytest.raises(RunFailed):
        failed.result(DEADLINE_S)
    assert len(ledger_read(ledger)) == 2

    Path(marker).touch()
    retried = orch.retry(failed.id)

    assert retried.result(DEADLINE_S) == 111
    assert retried.id != failed.id
    assert len(ledger_read(ledger)) == 2  # the two calls that had succeeded did not run again
    assert orch.retry(failed.id).id == retried.id  # retrying the same run again: the same new run
    assert failed.status() == "failed"  # the old run's log is left as it ended
    submitted = orch.events(retried.id)[0].data
    assert submitted["retry_of"] == failed.id
    dispatched = {e.node for e in orch.events(retried.id) if e.type == ev.COMMAND_DISPATCHED}
    assert dispatched == {"r.0.1", "r.1"}


def test_retry_of_a_map_keeps_the_items_that_succeeded(orch: Orchestrator, tmp_path: Path) -> None:
    marker = str(tmp_path / "fixed")
    flow = sequence(call("noop", [1, 2, 3]), each("inc"), call("total"))
    assert orch.run(flow, timeout=DEADLINE_S) == 9  # control: the flow itself is right

    failing = sequence(
        call("noop", [1, 2]), parallel(each("inc"), call("fails_until", marker, [0]).si()), call("noop")
    )
    failed = orch.submit(failing)
    with pytest.raises(RunFailed):
        failed.result(DEADLINE_S)
    Path(marker).touch()
    retried = orch.retry(failed.id)

    assert retried.result(DEADLINE_S) == [[2, 3], [0]]
    dispatched = sorted(e.node for e in orch.events(retried.id) if e.type == ev.COMMAND_DISPATCHED)
    assert dispatched == ["r.1.1", "r.2"]


def test_retry_refuses_running_and_succeeded_runs(orch: Orchestrator, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    running = orch.submit(call("wait_for_file", str(gate), 1))
    with pytest.raises(InvalidRunState, match="still running"):
        orch.retry(running.id)
    gate.touch()
    assert running.result(DEADLINE_S) == 1
    with pytest.raises(InvalidRunState, match="nothing to retry"):
        orch.retry(running.id)
    with pytest.raises(RunNotFound):
        orch.retry("f" * 32)


def test_a_cancelled_run_can_be_retried(orch: Orchestrator, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    run = orch.submit(sequence(call("inc", 1), call("wait_for_file", str(gate)).si(), call("inc", 5).si()))
    wait_until(
        lambda: any(e.node == "r.1" and e.type == ev.COMMAND_DISPATCHED for e in orch.events(run.id)),
        timeout=DEADLINE_S,
        what="r.1 dispatched",
    )
    run.cancel()
    gate.touch()
    assert orch.retry(run.id).result(DEADLINE_S) == 6


# --- idempotency keys ---------------------------------------------------------------------------


def test_the_same_key_and_payload_give_the_same_run(orch: Orchestrator) -> None:
    first = orch.submit(call("inc", 1), key="order-42")
    second = orch.submit(call("inc", 1), key="order-42")

    assert first.id == second.id
    assert second.result(DEADLINE_S) == 2
    assert orch.run(call("inc", 1), key="order-42", timeout=DEADLINE_S) == 2
    assert [e.type for e in orch.events(first.id)].count(ev.RUN_SUBMITTED) == 1


def test_another_payload_under_a_used_key_is_a_conflict(orch: Orchestrator) -> None:
    orch.submit(call("inc", 1), key="order-43")
    with pytest.raises(IdempotencyConflict, match="order-43"):
        orch.submit(call("inc", 2), key="order-43")
    with pytest.raises(IdempotencyConflict):
        orch.submit(call("inc", 1), key="order-43", name="another name")
    with pytest.raises(IdempotencyConflict):
        orch.submit(call("inc"), input=5, key="order-43")


def test_keys_hold_across_restarts(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with Orchestrator(registry(), executor="threads://2", home=home) as first:
        run = first.submit(call("inc", 1), key="invoice-7")
        assert run.result(DEADLINE_S) == 2
    with Orchestrator(registry(), executor="threads://2", home=home) as second:
        assert second.submit(call("inc", 1), key="invoice-7").id == run.id
        with pytest.raises(IdempotencyConflict):
            second.submit(call("inc", 3), key="invoice-7")


# --- a run whose command this orchestrator lacks ---------------------------------------------


def unfinished(store: Any, flow: Any) -> str:
    """A run some orchestrator submitted and never drove: only its ``run.submitted`` is logged."""
    from uuid import uuid4

    from orchestrator.core.events import utcnow
    from orchestrator.core.flows import encode_flow

    run = uuid4().hex
    data = {"flow": encode_flow(flow), "name": None}
    store.append([Event(run, 1, ev.RUN_SUBMITTED, utcnow(), data=data, by="gone", correlation=run)])
    return run


def test_a_run_needing_a_command_the_registry_lacks_is_parked_and_the_others_go_on() -> None:
    """RELIABILITY.md: command gone after a deploy, run resumed -> that run parked; other runs continue."""
    from orchestrator import RunParked
    from orchestrator.store import MemoryStore

    store = MemoryStore()
    parked = unfinished(store, sequence(call("inc", 1), call("deployed_later")))
    healthy = unfinished(store, call("inc", 41))
    old = registry()
    with Orchestrator(old, store=store, executor="inline") as first:
        assert first.result(healthy, timeout=DEADLINE_S) == 42
        with pytest.raises(RunParked, match="'deployed_later'"):
            first.result(parked, timeout=DEADLINE_S)
        assert [e.type for e in store.read(parked)] == [ev.RUN_SUBMITTED], "a parked run is not written"

    new = registry()
    new.register("deployed_later", lambda x: x * 10)
    with Orchestrator(new, store=store, executor="inline") as fixed:
        assert fixed.result(parked, timeout=DEADLINE_S) == 20


def test_resume_drives_a_parked_run_once_its_command_is_registered() -> None:
    from orchestrator import RunParked
    from orchestrator.core.errors import InvalidRunState, RunNotFound
    from orchestrator.store import MemoryStore

    store = MemoryStore()
    parked = unfinished(store, sequence(call("inc", 1), call("deployed_later")))
    commands = registry()
    with Orchestrator(commands, store=store, executor="inline") as orch:
        with pytest.raises(RunParked, match="'deployed_later'"):
            orch.result(parked, timeout=DEADLINE_S)
        with pytest.raises(RunParked, match="'deployed_later'"):
            orch.resume(parked)  # looked at again, still missing
        commands.register("deployed_later", lambda x: x * 10)
        orch.resume(parked)
        assert orch.result(parked, timeout=DEADLINE_S) == 20
        with pytest.raises(InvalidRunState, match="already succeeded; nothing to resume"):
            orch.resume(parked)
        with pytest.raises(RunNotFound):
            orch.resume("no-such-run")
    assert [e.node for e in store.read(parked) if e.type == ev.COMMAND_DISPATCHED] == ["r.0", "r.1"]


def test_resume_of_a_run_the_engine_cannot_read_now_keeps_what_it_holds_and_runs_nothing_twice() -> None:
    """A run whose log could not be read holds the outcomes that came meanwhile; resuming it then is
    refused, and the engine finishes it by itself once the log answers, each command run once."""
    import threading

    from orchestrator.core.errors import StoreUnavailable
    from orchestrator.store import MemoryStore

    class Outage(MemoryStore):
        down = False

        def append(self, events: Any) -> None:
            if self.down:
                raise StoreUnavailable("down")
            super().append(events)

        def read(self, run: str, after_seq: int = 0) -> list[Event]:
            if self.down:
                raise StoreUnavailable("down")
            return super().read(run, after_seq)

    gate, started, ran = threading.Event(), threading.Event(), []

    def block() -> int:
        ran.append(1)
        started.set()
        gate.wait(DEADLINE_S)
        return len(ran)

    commands = registry()
    commands.register("block", block)
    store = Outage()
    with Orchestrator(commands, store=store, executor="threads://2", read_models=False) as orch:
        run = orch.submit(call("block"))
        assert started.wait(DEADLINE_S)
        store.down = True
        gate.set()  # its outcome arrives while the log can be neither written nor read
        wait_until(lambda: run.id in orch.engine.book.stale, what="the run to be held as unreadable")
        with pytest.raises(StoreUnavailable, match="cannot be read now"):
            orch.resume(run.id)
        store.down = False
        assert run.result(timeout=DEADLINE_S) == 1
    assert len(ran) == 1
    assert not [e for e in store.read(run.id) if e.type == ev.COMMAND_FAILED]


def test_a_resume_still_waiting_when_the_orchestrator_closes_is_answered() -> None:
    import queue
    from concurrent.futures import Future

    from orchestrator.core.errors import EvenflowError
    from orchestrator.engine.messages import Resume, answer_the_rest

    inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
    waiting: Future[None] = Future()
    inbox.put(Resume("some-run", waiting))
    answer_the_rest(inbox, {})
    with pytest.raises(EvenflowError, match="closed"):
        waiting.result(timeout=0)
