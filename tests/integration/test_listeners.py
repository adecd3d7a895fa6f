"""Emitted events in the log and listeners that answer them, end to end through an orchestrator.

Runs on the memory, mongomock and embedded stores where that is cheap. Nothing
sleeps: tests poll a condition with a deadline. "Nothing more happened" is
checked on an observable: a listener's checkpoint is saved only after the
runs it triggered are durable, so once a listener's checkpoint is past an
event, every run that event will ever cause for it is in the log.
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from orchestrator import (
    ConfigurationError,
    Listener,
    Orchestrator,
    RetryPolicy,
    RunFailed,
    call,
    on,
    parallel,
)
from orchestrator.core import events as ev
from orchestrator.core.envelope import Envelope, Outcome, attempt_id
from orchestrator.core.events import Event
from orchestrator.core.keys import run_for_key
from orchestrator.core.listening import Trigger, trigger_key, triggers_for
from orchestrator.core.ports import FeedStore
from orchestrator.core.registry import Registry
from tests.commands import gate
from tests.integration.listener_commands import (
    ORDER_PLACED,
    PING,
    answer_in_child,
    answer_order,
    answer_ping,
    die_on_odd_in_child,
    die_once_in_child,
    make_registry,
    only_even,
)
from tests.support.polling import wait_until
from workers.threads import ThreadExecutor

KINDS = ["memory", "mongomock", "embedded"]
POLL_S = 0.05
"""How often listeners look for events no wake-up announced: short, so the tests are quick."""
WAIT_S = 30.0
QUICK = RetryPolicy(max_attempts=3, initial_delay=timedelta(milliseconds=10), jitter=0)
CASCADE_TYPE = "orchestrator.core.errors.CascadeLimit"
LISTENER_ERROR = "orchestrator.core.errors.ListenerError"


@contextmanager
def orchestrator(kind: str, tmp_path: Path, **options: Any) -> Iterator[Orchestrator]:
    store = None if kind == "embedded" else f"{kind}://"
    home = tmp_path / "home" if kind == "embedded" else None
    options.setdefault("executor", "threads://4")
    with Orchestrator(make_registry(), store=store, home=home, listener_poll_s=POLL_S, **options) as orch:
        yield orch


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def feed(orch: Orchestrator) -> FeedStore:
    assert isinstance(orch.store, FeedStore)
    return orch.store


def whole_log(orch: Orchestrator) -> list[Event]:
    events, _ = feed(orch).read_feed(None, ["*"], 1_000_000)
    return list(events)


def of_type(events: Sequence[Event], type_: str) -> list[Event]:
    return [event for event in events if event.type == type_]


def started_by(orch: Orchestrator, listener: str) -> list[Event]:
    """The ``run.submitted`` of every run ``listener`` triggered."""
    return [e for e in of_type(whole_log(orch), ev.RUN_SUBMITTED) if e.data.get("listener") == listener]


def is_past(orch: Orchestrator, listener: Listener, event_id: str) -> bool:
    """The listener's checkpoint is past the event: what it triggers for it is logged."""
    position = feed(orch).load_checkpoint(listener.name)
    events, _ = feed(orch).read_feed(position, listener.patterns, 1_000_000)
    return event_id not in {event.id for event in events}


def wait_past(orch: Orchestrator, listener: Listener, event_id: str) -> None:
    wait_until(
        lambda: is_past(orch, listener, event_id),
        timeout=WAIT_S,
        what=f"listener {listener.name!r} past {event_id}",
    )


def triggered_run(listener: str, event: Event, index: int = 0) -> str:
    return run_for_key(trigger_key(listener, event.id, index))


def wait_for_run(orch: Orchestrator, run: str) -> list[Event]:
    """The run's log once it has finished."""
    return wait_until(
        lambda: (found := orch.events(run)) and found[-1].type in ev.RUN_TERMINAL and found,
        timeout=WAIT_S,
        what=f"run {run} finished",
    )


def answered(orch: Orchestrator, listener: str, event: Event, index: int = 0) -> Any:
    """The result of the run ``listener`` triggered for ``event`` (RunFailed if it failed), once it ended."""
    run = triggered_run(listener, event, index)
    wait_for_run(orch, run)
    return orch.result(run, timeout=WAIT_S)


def emitted_by(orch: Orchestrator, run: str, type_: str) -> list[Event]:
    return of_type(orch.events(run), type_)


# --- emitted events in the log ------------------------------------------------------------------


@pytest.mark.parametrize("command", ["emits", "async_emits"])
def test_emitted_events_are_logged_right_after_command_started(
    kind: str, tmp_path: Path, command: str
) -> None:
    with orchestrator(kind, tmp_path) as orch:
        run = orch.submit(call(command, ["order.placed", "order.paid"]))
        assert run.result(timeout=WAIT_S) == 2
        events = orch.events(run.id)
    types = [event.type for event in events]
    at = types.index(ev.COMMAND_STARTED)
    assert types[at : at + 4] == [ev.COMMAND_STARTED, "order.placed", "order.paid", ev.COMMAND_SUCCEEDED]
    assert [event.seq for event in events] == list(range(1, len(events) + 1))
    for index, event in enumerate(events[at + 1 : at + 3]):
        assert (event.node, event.attempt, event.command) == ("r", 1, command)
        assert event.causation == attempt_id(run.id, "r", 1) == events[at].causation
        assert event.correlation == run.id and event.by == orch.by
        assert event.data == {"index": index}


def test_each_attempt_of_a_retried_command_logs_its_own_events(kind: str, tmp_path: Path) -> None:
    with orchestrator(kind, tmp_path) as orch:
        run = orch.submit(call("tries", 2).options(retry=QUICK))
        assert run.result(timeout=WAIT_S) == 3
        events = orch.events(run.id)
    tried = of_type(events, "work.tried")
    assert [(e.attempt, e.data["attempt"]) for e in tried] == [(1, 1), (2, 2), (3, 3)]
    for event in tried:
        before, after = events[event.seq - 2], events[event.seq]
        assert (before.type, before.attempt) == (ev.COMMAND_STARTED, event.attempt)
        ending = ev.COMMAND_SUCCEEDED if event.attempt == 3 else ev.COMMAND_FAILED
        assert (after.type, after.attempt) == (ending, event.attempt)
        assert event.attempt is not None and event.causation == attempt_id(run.id, "r", event.attempt)


def test_a_command_that_fails_for_good_still_logs_what_it_emitted(tmp_path: Path) -> None:
    with orchestrator("memory", tmp_path) as orch:
        node = call("emits", ["order.placed", "order.voided"], fail=True).options(
            retry=RetryPolicy.no_retry()
        )
        run = orch.submit(node)
        with pytest.raises(RunFailed, match="failed after emitting 2 events"):
            run.result(timeout=WAIT_S)
        types = [event.type for event in orch.events(run.id)]
    at = types.index(ev.COMMAND_STARTED)
    assert types[at:] == [
        ev.COMMAND_STARTED,
        "order.placed",
        "order.voided",
        ev.COMMAND_FAILED,
        ev.NODE_FAILED,
        ev.RUN_FAILED,
    ]


class Duplicating:
    """A chaos executor: every outcome is reported twice."""

    requires_pickle = False

    def __init__(self) -> None:
        self.inner = ThreadExecutor(2)

    def start(self, registry: Registry, report: Callable[[Outcome], None]) -> None:
        def twice(outcome: Outcome) -> None:
            report(outcome)
            report(outcome)

        self.inner.start(registry, twice)

    def dispatch(self, envelopes: Sequence[Envelope]) -> None:
        self.inner.dispatch(envelopes)

    def close(self) -> None:
        self.inner.close()


def test_a_duplicate_outcomes_events_are_not_logged_but_named(tmp_path: Path) -> None:
    with orchestrator("memory", tmp_path, executor=Duplicating()) as orch:
        flow = parallel(call("emits", ["order.placed"]), call("emits", ["order.paid", "order.shipped"]))
        run = orch.submit(flow)
        assert run.result(timeout=WAIT_S) == [1, 2]
        ignored = wait_until(
            lambda: len(found := emitted_by(orch, run.id, ev.OUTCOME_IGNORED)) == 2 and found,
            timeout=WAIT_S,
            what="both duplicates recorded",
        )
        counts = Counter(event.type for event in orch.events(run.id))
    assert counts["order.placed"] == counts["order.paid"] == counts["order.shipped"] == 1
    discarded = {event.node: (event.data["reason"], event.data["discarded_events"]) for event in ignored}
    assert discarded == {
        "r.0": ("duplicate", ["order.placed"]),
        "r.1": ("duplicate", ["order.paid", "order.shipped"]),
    }


def test_a_late_outcomes_events_are_not_logged_but_named(tmp_path: Path) -> None:
    gate_name = f"late-{uuid.uuid4().hex}"
    with orchestrator("memory", tmp_path) as orch:
        node = call("emits_then_waits", gate_name).options(
            timeout=timedelta(milliseconds=100), retry=RetryPolicy.no_retry()
        )
        run = orch.submit(node)
        with pytest.raises(RunFailed, match="timeout"):
            run.result(timeout=WAIT_S)
        gate(gate_name).set()
        (ignored,) = wait_until(
            lambda: emitted_by(orch, run.id, ev.OUTCOME_IGNORED),
            timeout=WAIT_S,
            what="the late outcome recorded",
        )
        assert emitted_by(orch, run.id, "work.late") == []
    assert ignored.data["reason"] == "late" and ignored.data["ok"] is True
    assert ignored.data["discarded_events"] == ["work.late"]


# --- listeners trigger runs ---------------------------------------------------------------------


async def answer_order_async(event: Event) -> Any:
    await asyncio.sleep(0)
    return call("record", "receipt", event.data["id"])


LISTENERS: dict[str, tuple[Callable[[Event], Any], bool]] = {
    "sync": (answer_order, False),
    "async": (answer_order_async, False),
    "process": (answer_in_child, True),
}


@pytest.mark.parametrize("mode", list(LISTENERS))
def test_sync_async_and_process_listeners_each_trigger_their_runs(
    kind: str, tmp_path: Path, mode: str
) -> None:
    fn, process = LISTENERS[mode]
    with orchestrator(kind, tmp_path) as orch:
        orch.listen(ORDER_PLACED, fn, name="receipts", process=process)
        orders = [orch.submit(call("place_order", i)) for i in range(3)]
        assert [order.result(timeout=WAIT_S) for order in orders] == [0, 1, 2]
        for order in orders:
            (placed,) = emitted_by(orch, order.id, ORDER_PLACED)
            run = triggered_run("receipts", placed)
            events = wait_for_run(orch, run)
            submitted = events[0]
            assert submitted.type == ev.RUN_SUBMITTED and submitted.causation == placed.id
            assert submitted.correlation == order.id
            assert submitted.data["listener"] == "receipts" and submitted.data["depth"] == 1
            assert submitted.data["key"] == trigger_key("receipts", placed.id, 0)
            result = orch.result(run, timeout=WAIT_S)
            if process:
                assert result[0] == placed.data["id"] and result[1] != os.getpid()
            else:
                assert result == ["receipt", placed.data["id"]]
        assert len(started_by(orch, "receipts")) == 3


def test_a_process_listener_whose_child_dies_is_answered_by_a_fresh_child(tmp_path: Path) -> None:
    marker = str(tmp_path / "died-once")
    with orchestrator("memory", tmp_path) as orch:
        orch.listen("order.marked", die_once_in_child, name="dies-once", process=True)
        run = orch.submit(call("mark", marker))
        run.result(timeout=WAIT_S)
        (marked,) = emitted_by(orch, run.id, "order.marked")
        wait_until(lambda: os.path.exists(marker), timeout=WAIT_S, what="the first child died")
        answered_run = triggered_run("dies-once", marked)
        wait_until(lambda: orch.events(answered_run), timeout=5.0, what="a fresh child answered the event")
        result = orch.result(answered_run, timeout=WAIT_S)
    assert result[0] == "answered after a crash" and result[1] != os.getpid()


def test_an_event_that_kills_the_listeners_process_is_its_failure_and_the_others_are_answered(
    tmp_path: Path,
) -> None:
    with orchestrator("memory", tmp_path) as orch:
        orch.listen(ORDER_PLACED, die_on_odd_in_child, name="poisoned", process=True)
        for order in (1, 2, 3, 4):
            orch.run(call("place_order", order), timeout=WAIT_S)
        placed = {event.data["id"]: event for event in of_type(whole_log(orch), ORDER_PLACED)}
        runs = {order: triggered_run("poisoned", event) for order, event in placed.items()}
        wait_until(
            lambda: all(orch.events(run) for run in runs.values()),
            timeout=WAIT_S,
            what="every order answered or failed",
        )
        failed = {order for order, run in runs.items() if orch.state(run).status == "failed"}
        answered = {
            order: orch.result(run, timeout=WAIT_S)[0] for order, run in runs.items() if order % 2 == 0
        }
        (failure,) = orch.state(runs[1]).failures
    assert failed == {1, 3}
    assert answered == {2: 2, 4: 4}
    assert (
        failure["type"] == "orchestrator.core.errors.WorkerLost" and "'poisoned' died" in failure["message"]
    )


def test_a_process_listener_that_dies_costs_another_process_listener_nothing(tmp_path: Path) -> None:
    with orchestrator("memory", tmp_path) as orch:
        orch.listen(ORDER_PLACED, die_on_odd_in_child, name="poisoned", process=True)
        orch.listen(ORDER_PLACED, answer_in_child, name="innocent", process=True)
        for order in range(1, 7):
            orch.run(call("place_order", order), timeout=WAIT_S)
        placed = of_type(whole_log(orch), ORDER_PLACED)
        innocent = [triggered_run("innocent", event) for event in placed]
        wait_until(
            lambda: all(orch.events(run) for run in innocent),
            timeout=WAIT_S,
            what="every order answered by the innocent",
        )
        statuses = {orch.result(run, timeout=WAIT_S)[0] for run in innocent}
    assert statuses == {event.data["id"] for event in placed}


def test_a_closed_orchestrator_refuses_triggers_instead_of_starting_again(tmp_path: Path) -> None:
    orch = Orchestrator(make_registry(), store="memory://", executor="inline")
    orch.run(call("place_order", 1), timeout=WAIT_S)
    (placed,) = of_type(whole_log(orch), ORDER_PLACED)
    orch.close()
    (trigger,) = triggers_for("late", placed, call("record", 1, 2))
    with pytest.raises(ConfigurationError, match="was closed"):
        orch.trigger([trigger])
    assert orch.store.read(trigger.run) == []


def test_a_predicate_filters_events(tmp_path: Path) -> None:
    with orchestrator("memory", tmp_path) as orch:
        even = orch.listen(ORDER_PLACED, answer_order, predicate=only_even, name="even")
        orders = [orch.run(call("place_order", i), timeout=WAIT_S) for i in range(1, 6)]
        assert orders == [1, 2, 3, 4, 5]
        placed = of_type(whole_log(orch), ORDER_PLACED)
        wait_past(orch, even, placed[-1].id)
        causes = {event.causation for event in started_by(orch, "even")}
    assert causes == {event.id for event in placed if event.data["id"] in (2, 4)}


def test_patterns_exact_wildcard_and_everything(tmp_path: Path) -> None:
    heard: dict[str, list[str]] = {"order.*": [], "order.placed": [], "*": [], "pair": []}

    def hearing(key: str) -> Callable[[Event], None]:
        return lambda event: heard[key].append(event.type)

    emitted = ["order.placed", "orders.placed", "order", "order.placed.late", "border.placed", "order.paid"]
    with orchestrator("memory", tmp_path) as orch:
        listeners = [
            orch.listen(pattern, hearing(pattern), name=pattern)
            for pattern in ("order.*", "order.placed", "*")
        ]
        listeners.append(orch.listen([ORDER_PLACED, "run.*"], hearing("pair"), name="pair"))
        run = orch.submit(call("emits", emitted))
        assert run.result(timeout=WAIT_S) == len(emitted)
        events = orch.events(run.id)
        for listener in listeners:
            wait_past(orch, listener, events[-1].id)  # run.succeeded: after every emitted event
    assert heard["order.*"] == ["order.placed", "order.placed.late", "order.paid"]
    assert heard["order.placed"] == ["order.placed"]
    assert heard["*"] == [event.type for event in events]
    assert heard["pair"] == [ev.RUN_SUBMITTED, ORDER_PLACED, ev.RUN_SUCCEEDED]


def test_system_events_are_listened_to_like_any_other(kind: str, tmp_path: Path) -> None:
    with orchestrator(kind, tmp_path) as orch:
        orch.listen(ev.RUN_FAILED, lambda e: call("record", e.type, e.run), name="on-run-failed")
        orch.listen(
            ev.COMMAND_FAILED,
            lambda e: call("record", e.type, e.data["error"]["type"]),
            name="on-command-failed",
        )
        run = orch.submit(call("fail", "boom").options(retry=RetryPolicy.no_retry()))
        with pytest.raises(RunFailed, match="boom"):
            run.result(timeout=WAIT_S)
        (run_failed,) = emitted_by(orch, run.id, ev.RUN_FAILED)
        (command_failed,) = emitted_by(orch, run.id, ev.COMMAND_FAILED)
        answers = {
            "on-run-failed": answered(orch, "on-run-failed", run_failed),
            "on-command-failed": answered(orch, "on-command-failed", command_failed),
        }
    assert answers == {
        "on-run-failed": [ev.RUN_FAILED, run.id],
        "on-command-failed": [ev.COMMAND_FAILED, "builtins.ValueError"],
    }


def test_a_list_answer_starts_several_runs_and_none_starts_none(tmp_path: Path) -> None:
    quiet_heard = threading.Event()

    def quiet(event: Event) -> None:
        quiet_heard.set()

    def fan(event: Event) -> list[Any]:
        return [call("record", branch, event.data["id"]) for branch in ("a", "b", "c")]

    with orchestrator("memory", tmp_path) as orch:
        quiet_listener = orch.listen(ORDER_PLACED, quiet, name="quiet")
        orch.listen(ORDER_PLACED, fan, name="fan")
        order = orch.submit(call("place_order", 5))
        order.result(timeout=WAIT_S)
        (placed,) = emitted_by(orch, order.id, ORDER_PLACED)
        results = [answered(orch, "fan", placed, index) for index in range(3)]
        wait_past(orch, quiet_listener, placed.id)
        assert quiet_heard.is_set()
        assert started_by(orch, "quiet") == []
        assert len(started_by(orch, "fan")) == 3
    assert results == [["a", 5], ["b", 5], ["c", 5]]


BAD_ANSWERS: dict[str, tuple[Callable[[Event], Any], str, str]] = {
    "a number": (lambda event: 42, LISTENER_ERROR, "returned 42"),
    "a list holding a string": (
        lambda event: [call("record"), "record"],
        LISTENER_ERROR,
        "returned 'record'",
    ),
    "an unknown command": (lambda event: call("recrod"), "orchestrator.core.errors.UnknownCommand", "recrod"),
    "an unstorable argument": (
        lambda event: call("record", {1, 2}),
        "orchestrator.core.errors.PayloadError",
        "builtins.set",
    ),
}


@pytest.mark.parametrize("bad", list(BAD_ANSWERS))
def test_a_bad_answer_is_logged_as_a_failed_run(tmp_path: Path, bad: str) -> None:
    fn, error_type, detail = BAD_ANSWERS[bad]
    with orchestrator("memory", tmp_path) as orch:
        orch.listen(ORDER_PLACED, fn, name="bad")
        order = orch.submit(call("place_order", 1))
        order.result(timeout=WAIT_S)
        (placed,) = emitted_by(orch, order.id, ORDER_PLACED)
        run = triggered_run("bad", placed)
        events = wait_for_run(orch, run)
        with pytest.raises(RunFailed) as failed:
            orch.result(run, timeout=WAIT_S)
    assert [event.type for event in events] == [ev.RUN_SUBMITTED, ev.RUN_FAILED]
    assert events[0].causation == placed.id and events[1].causation == events[0].id
    assert events[0].correlation == order.id
    (failure,) = failed.value.failures
    assert failure.type == error_type
    assert failure.message.startswith(f"listener 'bad' failed on event {placed.id} (order.placed): ")
    assert detail in failure.message


def test_a_raising_listener_fails_its_runs_and_the_others_go_on(kind: str, tmp_path: Path) -> None:
    def broken(event: Event) -> Any:
        raise ValueError(f"cannot answer order {event.data['id']}")

    async def broken_async(event: Event) -> Any:
        raise LookupError(f"no receipt template for order {event.data['id']}")

    def exits(event: Event) -> Any:
        raise SystemExit(3)

    def bad_predicate(event: Event) -> bool:
        return bool(event.data["no such field"])

    failing = {
        "broken": "builtins.ValueError",
        "broken-async": "builtins.LookupError",
        "exits": "builtins.SystemExit",
        "bad-predicate": "builtins.KeyError",
    }
    with orchestrator(kind, tmp_path) as orch:
        orch.listen(ORDER_PLACED, broken, name="broken")
        orch.listen(ORDER_PLACED, broken_async, name="broken-async")
        orch.listen(ORDER_PLACED, exits, name="exits")
        orch.listen(ORDER_PLACED, answer_order, predicate=bad_predicate, name="bad-predicate")
        orch.listen(ORDER_PLACED, answer_order, name="receipts")
        for order_id in (1, 2):
            order = orch.submit(call("place_order", order_id))
            assert order.result(timeout=WAIT_S) == order_id
            (placed,) = emitted_by(orch, order.id, ORDER_PLACED)
            assert answered(orch, "receipts", placed) == ["receipt", order_id]
            for name, error_type in failing.items():
                run = triggered_run(name, placed)
                wait_for_run(orch, run)
                failure = orch.state(run).failures[0]
                assert failure["type"] == error_type, name
                assert failure["message"].startswith(f"listener {name!r} failed on event {placed.id}")
                if name == "broken":
                    assert f"cannot answer order {order_id}" in failure["message"]
                    assert "in broken" in failure["traceback"]
        assert orch.run(call("record", "still", "running"), timeout=WAIT_S) == ["still", "running"]
        assert len(started_by(orch, "receipts")) == 2


def test_a_self_triggering_cascade_stops_at_the_cascade_limit(kind: str, tmp_path: Path) -> None:
    limit = 3
    with orchestrator(kind, tmp_path, cascade_limit=limit) as orch:
        pinger = orch.listen(PING, answer_ping, name="pinger")
        alarm = orch.listen(ev.RUN_FAILED, lambda e: call("record", "alarm", e.run), name="alarm")
        root = orch.submit(call("ping", 0))
        assert root.result(timeout=WAIT_S) == 0

        def cut() -> Event | None:
            for event in of_type(whole_log(orch), ev.RUN_FAILED):
                if event.data["failures"][0]["type"] == CASCADE_TYPE:
                    return event
            return None

        cut_failed = wait_until(cut, timeout=WAIT_S, what="the chain cut with CascadeLimit")
        for ping in of_type(whole_log(orch), PING):
            wait_past(orch, pinger, ping.id)
        wait_past(orch, alarm, cut_failed.id)
        log = whole_log(orch)
        chain = sorted(started_by(orch, "pinger"), key=lambda event: event.data["depth"])
        states = {event.run: orch.state(event.run) for event in chain}
        assert started_by(orch, "alarm") == []  # the cut run's own run.failed is past the limit: unanswered
    assert [event.data["depth"] for event in chain] == [1, 2, 3, 4]
    assert [states[event.run].status for event in chain] == ["succeeded"] * limit + ["failed"]
    assert [states[event.run].result for event in chain[:limit]] == [1, 2, 3]
    failure = states[chain[-1].run].failures[0]
    assert failure["type"] == CASCADE_TYPE
    assert f"past the cascade limit of {limit}" in failure["message"] and "'pinger'" in failure["message"]
    assert cut_failed.run == chain[-1].run
    pings = {event.id: event for event in of_type(log, PING)}
    assert len(pings) == limit + 1  # the root's and one per run that succeeded
    cause_runs = [root.id] + [event.run for event in chain[:-1]]
    for event, cause_run in zip(chain, cause_runs, strict=True):
        assert event.causation in pings and pings[event.causation].run == cause_run
    assert {event.correlation for event in log} == {root.id}  # one chain, one correlation id
    assert max(int(event.data.get("depth", 0)) for event in of_type(log, ev.RUN_SUBMITTED)) == limit + 1


def test_listener_configuration_errors(tmp_path: Path) -> None:
    def local(event: Event) -> None:
        return None

    with orchestrator("memory", tmp_path) as orch:
        orch.listen(ORDER_PLACED, answer_order, name="receipts")
        with pytest.raises(ConfigurationError, match="a listener named 'receipts' is already listening"):
            orch.listen("order.*", answer_order, name="receipts")
        orch.listen(ORDER_PLACED, local)
        with pytest.raises(ConfigurationError, match="already listening"):
            orch.listen(ORDER_PLACED, local)  # the same default name: the function and the patterns
        with pytest.raises(ConfigurationError, match="takes no second listener"):
            orch.listen(on(ORDER_PLACED, answer_order, name="other"), answer_order)
        with pytest.raises(ConfigurationError, match="give the callable"):
            orch.listen(ORDER_PLACED)
        with pytest.raises(ConfigurationError, match="must pickle"):
            orch.listen(ORDER_PLACED, local, name="in-a-child", process=True)
        with pytest.raises(ConfigurationError, match="not dotted words"):
            orch.listen("order placed", answer_order, name="spaces")
        assert orch.run(call("place_order", 1), timeout=WAIT_S) == 1
    for bad in ({"cascade_limit": 0}, {"cascade_limit": 2.5}, {"listener_poll_s": 0}):
        with pytest.raises(ConfigurationError):
            Orchestrator(make_registry(), store="memory://", **bad)


def test_since_now_skips_what_was_logged_before_and_since_start_hears_it(kind: str, tmp_path: Path) -> None:
    with orchestrator(kind, tmp_path) as orch:
        assert orch.run(call("place_order", 1), timeout=WAIT_S) == 1
        now = orch.listen(ORDER_PLACED, answer_order, name="from-now")
        start = orch.listen(ORDER_PLACED, answer_order, name="from-start", since="start")
        assert orch.run(call("place_order", 2), timeout=WAIT_S) == 2
        first, second = of_type(whole_log(orch), ORDER_PLACED)
        for listener in (now, start):
            wait_past(orch, listener, second.id)
        heard_now = {event.causation for event in started_by(orch, "from-now")}
        heard_start = {event.causation for event in started_by(orch, "from-start")}
    assert heard_now == {second.id}
    assert heard_start == {first.id, second.id}


def test_a_listener_added_before_start_hears_what_comes_after_it(tmp_path: Path) -> None:
    orch = Orchestrator(make_registry(), store="memory://", listener_poll_s=POLL_S)
    orch.listen(ORDER_PLACED, answer_order, name="early")
    with orch:
        order = orch.submit(call("place_order", 3))
        order.result(timeout=WAIT_S)
        (placed,) = emitted_by(orch, order.id, ORDER_PLACED)
        assert answered(orch, "early", placed) == ["receipt", 3]


def test_triggering_the_same_answer_twice_gives_one_run(tmp_path: Path) -> None:
    with orchestrator("memory", tmp_path) as orch:
        order = orch.submit(call("place_order", 4))
        order.result(timeout=WAIT_S)
        (placed,) = emitted_by(orch, order.id, ORDER_PLACED)
        triggers: list[Trigger] = triggers_for("by-hand", placed, answer_order(placed))
        orch.trigger(triggers)
        orch.trigger(triggers)
        assert orch.result(triggers[0].run, timeout=WAIT_S) == ["receipt", 4]
        assert [event.causation for event in started_by(orch, "by-hand")] == [placed.id]


# --- exactly once across restarts (the embedded store outlives its orchestrator) ----------------


def causes_per_listener(log: Sequence[Event]) -> Counter[tuple[str | None, str]]:
    """(causing event id, listener) -> how many runs claim it, over the whole log."""
    return Counter(
        (event.causation, event.data["listener"])
        for event in of_type(log, ev.RUN_SUBMITTED)
        if event.data.get("listener")
    )


def test_listeners_trigger_each_event_once_across_restarts(tmp_path: Path) -> None:
    def receipts() -> Listener:
        return on(ORDER_PLACED, answer_order, name="receipts", since="start")

    def settle(orch: Orchestrator, listeners: Sequence[Listener]) -> list[Event]:
        """Every order.placed answered by every listener, and every run finished; the whole log."""
        placed = of_type(whole_log(orch), ORDER_PLACED)
        for listener in listeners:
            wait_past(orch, listener, placed[-1].id)
            for event in placed:
                wait_for_run(orch, triggered_run(listener.name, event))
        return whole_log(orch)

    with orchestrator("embedded", tmp_path) as orch:
        first = orch.listen(receipts())
        for order_id in range(3):
            orch.run(call("place_order", order_id), timeout=WAIT_S)
        log = settle(orch, [first])
    placed = of_type(log, ORDER_PLACED)
    assert causes_per_listener(log) == Counter({(event.id, "receipts"): 1 for event in placed})

    with orchestrator("embedded", tmp_path) as orch:  # the same listener again, and one with no checkpoint
        again = orch.listen(receipts())
        late = orch.listen(on(ORDER_PLACED, answer_order, name="late-receipts", since="start"))
        orch.run(call("place_order", 3), timeout=WAIT_S)
        log = settle(orch, [again, late])
    placed = of_type(log, ORDER_PLACED)
    assert len(placed) == 4
    expected = Counter({(event.id, name): 1 for event in placed for name in ("receipts", "late-receipts")})
    assert causes_per_listener(log) == expected

    with orchestrator("embedded", tmp_path) as orch:  # a lost checkpoint replays onto the runs logged
        feed(orch).save_checkpoint("receipts", {})
        replayed = orch.listen(receipts())
        log = settle(orch, [replayed])
    assert causes_per_listener(log) == expected
    runs = {event.run for event in log}
    assert len(runs) == 4 + 8
