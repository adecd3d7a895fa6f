"""``emit`` from inside a command, the drafts an outcome's events become, and a fold that ignores them.

``emit`` is checked where it is called, so a bad event fails the command that
emitted it, never the append; the events ride back on the outcome, are drafted
between ``command.started`` and the attempt's ending when it is accepted, and
only named when it is not; and a domain event moves no run state.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Iterator
from datetime import timedelta
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator import InvalidEvent, PayloadError, emit
from orchestrator.core import events as ev
from orchestrator.core.context import (
    MAX_EMITTED,
    MAX_EMITTED_BYTES,
    CallContext,
    Emitted,
    calling,
    current_call,
)
from orchestrator.core.envelope import Envelope, ErrorInfo, Outcome
from orchestrator.core.errors import CorruptEvent
from orchestrator.core.events import MAX_TYPE_CHARS, SYSTEM_PREFIXES, Event, check_domain_type, is_domain_type
from orchestrator.core.evolve import evolve, fold
from orchestrator.core.flows import call, encode_flow
from orchestrator.core.outcomes import record_outcome
from orchestrator.core.planner import Draft, decide
from orchestrator.core.registry import Registry
from orchestrator.core.state import RunState
from tests.simulation import Simulation
from tests.strategies import COMMANDS, flows, plans
from workers.execution import execute, execute_async

CONTEXT = CallContext(run="run-1", node="r", attempt=1, command="place_order", key="run-1/r")


@pytest.fixture
def emitted() -> Iterator[Emitted]:
    """Run the test body as the attempt ``CONTEXT``: ``emit`` works and fills the yielded list."""
    with calling(CONTEXT) as events:
        yield events


# --- where emit may be called -----------------------------------------------------------------


def test_emit_outside_a_command_names_the_fix() -> None:
    with pytest.raises(InvalidEvent, match=r"emit\('order.placed'\) was called outside a command") as caught:
        emit("order.placed", {"id": 1})
    assert "call it from a command an orchestrator runs" in str(caught.value)
    assert isinstance(caught.value, PayloadError)


def test_emit_after_the_command_ended_is_outside_again() -> None:
    with calling(CONTEXT) as events:
        emit("order.placed")
    assert events == [{"type": "order.placed", "data": {}}]
    assert current_call() is None
    with pytest.raises(InvalidEvent, match="outside a command"):
        emit("order.placed")


def test_a_plain_thread_started_by_a_command_is_outside_it(emitted: Emitted) -> None:
    """A new thread does not inherit the call context: the message says where emit must be called."""
    raised: list[BaseException] = []

    def in_thread() -> None:
        try:
            emit("order.placed")
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join(10)
    assert len(raised) == 1 and isinstance(raised[0], InvalidEvent)
    assert "in the thread or task that runs it" in str(raised[0])
    assert emitted == []


# --- what a type may be -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "type_",
    ["order.placed", "Order.Placed-2", "a", "a_b.c-d.e_f", "runs.started", "commands", "x.run", "a" * 200],
)
def test_a_dotted_domain_name_is_emitted(emitted: Emitted, type_: str) -> None:
    emit(type_)
    assert emitted == [{"type": type_, "data": {}}]
    assert is_domain_type(type_) and check_domain_type(type_) == type_


@pytest.mark.parametrize("prefix", sorted(SYSTEM_PREFIXES))
def test_every_system_namespace_is_refused(emitted: Emitted, prefix: str) -> None:
    for type_ in (prefix, f"{prefix}.anything", f"{prefix}.started.twice"):
        with pytest.raises(InvalidEvent, match="in a namespace evenflow writes") as caught:
            emit(type_)
        assert repr(type_) in str(caught.value) and "'order.placed'" in str(caught.value)
    assert emitted == []


@pytest.mark.parametrize("type_", sorted(ev.KNOWN_TYPES))
def test_no_type_evenflow_writes_can_be_emitted(emitted: Emitted, type_: str) -> None:
    with pytest.raises(InvalidEvent):
        emit(type_)
    assert not is_domain_type(type_)


@pytest.mark.parametrize(
    "type_",
    [
        "",
        "order placed",
        "order..placed",
        ".order",
        "order.",
        "order.*",
        "order/placed",
        "ordér.placed",
        "$order",
        "order\x00",
        "-order",
        "_order",
        "order.placed\n",
        "a" * (MAX_TYPE_CHARS + 1),
        5,
        None,
        b"order.placed",
    ],
    ids=repr,
)
def test_a_type_that_is_not_a_dotted_name_is_refused(emitted: Emitted, type_: Any) -> None:
    with pytest.raises(InvalidEvent, match="is not a dotted name") as caught:
        emit(type_)
    assert f"at most {MAX_TYPE_CHARS} characters" in str(caught.value)
    assert emitted == []


# --- what data may be -------------------------------------------------------------------------


class Order:
    pass


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ({"tags": {1, 2}}, r"\['tags'\]: builtins.set cannot be stored in the log; use a sorted list"),
        ({1: "one"}, "dict key 1 is a int; BSON keys must be str"),
        ({"order": Order()}, r"\['order'\]: tests.unit.test_emit.Order cannot be stored"),
        ({"pair": (1, 2)}, r"\['pair'\]: builtins.tuple .* use a list"),
        ({"deep": [{"x": frozenset()}]}, r"\['deep'\]\[0\]\['x'\]: builtins.frozenset"),
        ({"big": 2**64}, r"\['big'\]: int 18446744073709551616 does not fit in 64 bits"),
        ({"$set": 1}, "\\$"),
    ],
    ids=["set", "int key", "custom object", "tuple", "nested frozenset", "big int", "dollar key"],
)
def test_unstorable_data_is_refused_naming_the_value(emitted: Emitted, data: Any, named: str) -> None:
    with pytest.raises(PayloadError, match=named) as caught:
        emit("order.placed", data)
    assert "data of event 'order.placed'" in str(caught.value)
    assert emitted == []


@pytest.mark.parametrize("data", [[1, 2], "id=1", 7, ("id", 1)], ids=repr)
def test_data_that_is_not_a_mapping_is_refused(emitted: Emitted, data: Any) -> None:
    with pytest.raises(InvalidEvent, match=r"the data of event 'order.placed' must be a dict"):
        emit("order.placed", data)
    assert emitted == []


def test_data_is_copied_so_changing_it_afterwards_changes_nothing(emitted: Emitted) -> None:
    data: dict[str, Any] = {"id": 1, "lines": [{"sku": "a"}]}
    emit("order.placed", data)
    data["id"] = 2
    data["lines"][0]["sku"] = "changed"
    data["lines"].append({"sku": "b"})
    assert emitted == [{"type": "order.placed", "data": {"id": 1, "lines": [{"sku": "a"}]}}]


def test_any_mapping_is_stored_as_a_plain_dict(emitted: Emitted) -> None:
    emit("order.placed", MappingProxyType({"id": 1}))
    emit("order.paid", None)
    assert emitted == [{"type": "order.placed", "data": {"id": 1}}, {"type": "order.paid", "data": {}}]
    assert type(emitted[0]["data"]) is dict


def test_at_most_max_emitted_events_per_attempt(emitted: Emitted) -> None:
    for index in range(MAX_EMITTED):
        emit("tick", {"i": index})
    with pytest.raises(InvalidEvent, match=f"'place_order' emitted more than {MAX_EMITTED} events") as caught:
        emit("tick", {"i": MAX_EMITTED})
    assert "split the work into more commands" in str(caught.value)
    assert len(emitted) == MAX_EMITTED
    assert emitted[-1] == {"type": "tick", "data": {"i": MAX_EMITTED - 1}}


def test_the_data_of_one_attempts_events_is_bounded_together(emitted: Emitted) -> None:
    chunk = "z" * (MAX_EMITTED_BYTES // 3)
    emit("blob.made", {"blob": chunk})
    emit("blob.made", {"blob": chunk})
    with pytest.raises(InvalidEvent, match="emit a reference"):
        emit("blob.made", {"blob": chunk + chunk})
    assert len(emitted) == 2 and emitted.size < MAX_EMITTED_BYTES


def test_a_refused_event_leaves_the_ones_before_it(emitted: Emitted) -> None:
    emit("order.placed", {"id": 1})
    with pytest.raises(InvalidEvent):
        emit("run.placed")
    emit("order.paid", {"id": 1})
    assert [event["type"] for event in emitted] == ["order.placed", "order.paid"]


# --- through the executors' one place that calls commands -----------------------------------


def _emit_sync(order_id: int) -> int:
    emit("order.placed", {"id": order_id})
    emit("order.paid", {"id": order_id})
    return order_id


async def _emit_async(order_id: int) -> int:
    emit("order.placed", {"id": order_id})
    await asyncio.sleep(0)
    emit("order.paid", {"id": order_id})
    return order_id


async def _emit_from_tasks(count: int) -> int:
    async def one(index: int) -> None:
        await asyncio.sleep(0)
        emit("part.done", {"index": index})

    await asyncio.gather(*(one(index) for index in range(count)))
    return count


def _emit_then_mutate(data: dict[str, Any]) -> None:
    emit("order.placed", data)
    data["id"] = "changed after emit"


def _emit_then_raise() -> None:
    emit("order.placed", {"id": 1})
    raise KeyError("after emitting")


def _emit_bad() -> None:
    emit("order.placed", {"id": 1})
    emit("order.tagged", {"tags": {"a"}})


def _registry() -> Registry:
    registry = Registry()
    for fn in (_emit_sync, _emit_async, _emit_from_tasks, _emit_then_mutate, _emit_then_raise, _emit_bad):
        registry.register(fn.__name__.lstrip("_"), fn)
    return registry


def _envelope(command: str, *args: Any) -> Envelope:
    return Envelope(run="run-1", node="r.0", attempt=2, command=command, args=list(args))


def _run(command: str, *args: Any, on_loop: bool) -> Outcome:
    if on_loop:
        return asyncio.run(execute_async(_registry(), _envelope(command, *args), by="test"))
    return execute(_registry(), _envelope(command, *args), by="test")


PLACED_AND_PAID = (
    {"type": "order.placed", "data": {"id": 7}},
    {"type": "order.paid", "data": {"id": 7}},
)


@pytest.mark.parametrize("on_loop", [False, True], ids=["execute", "execute_async"])
@pytest.mark.parametrize("command", ["emit_sync", "emit_async"])
def test_sync_and_async_commands_emit_onto_their_outcome(command: str, on_loop: bool) -> None:
    outcome = _run(command, 7, on_loop=on_loop)
    assert outcome.ok and outcome.result == 7
    assert outcome.events == PLACED_AND_PAID


@pytest.mark.parametrize("on_loop", [False, True], ids=["execute", "execute_async"])
def test_tasks_a_command_gathers_emit_into_its_outcome(on_loop: bool) -> None:
    outcome = _run("emit_from_tasks", 5, on_loop=on_loop)
    assert outcome.ok and outcome.result == 5
    assert sorted(event["data"]["index"] for event in outcome.events) == [0, 1, 2, 3, 4]
    assert {event["type"] for event in outcome.events} == {"part.done"}


@pytest.mark.parametrize("on_loop", [False, True], ids=["execute", "execute_async"])
def test_a_command_changing_its_data_after_emit_does_not_change_the_event(on_loop: bool) -> None:
    outcome = _run("emit_then_mutate", {"id": 1}, on_loop=on_loop)
    assert outcome.events == ({"type": "order.placed", "data": {"id": 1}},)


@pytest.mark.parametrize("on_loop", [False, True], ids=["execute", "execute_async"])
def test_a_command_that_raises_keeps_what_it_emitted(on_loop: bool) -> None:
    outcome = _run("emit_then_raise", on_loop=on_loop)
    assert not outcome.ok and outcome.error is not None and outcome.error.type == "builtins.KeyError"
    assert outcome.events == ({"type": "order.placed", "data": {"id": 1}},)


@pytest.mark.parametrize("on_loop", [False, True], ids=["execute", "execute_async"])
def test_a_bad_emit_fails_the_command_where_it_emitted(on_loop: bool) -> None:
    outcome = _run("emit_bad", on_loop=on_loop)
    assert not outcome.ok and outcome.error is not None
    assert outcome.error.type == "orchestrator.core.errors.PayloadError"
    assert "data of event 'order.tagged'['tags']: builtins.set" in outcome.error.message
    assert "_emit_bad" in outcome.error.traceback
    assert outcome.events == ({"type": "order.placed", "data": {"id": 1}},)


def test_a_command_that_emits_nothing_has_no_events() -> None:
    registry = Registry()
    registry.register("quiet", lambda: 1)
    assert execute(registry, _envelope("quiet"), by="test").events == ()


# --- record_outcome: where an outcome's events go ---------------------------------------------


def _running(command: str = "emits") -> RunState:
    """A run whose single node ``r`` runs attempt 1, folded from its own log."""
    sim = Simulation({command: lambda: None})
    sim.apply(Draft(ev.RUN_SUBMITTED, data={"flow": encode_flow(call(command))}))
    for draft in decide(sim.state, sim.clock.now()):
        sim.apply(draft)
    assert sim.state.nodes["r"].status == "running" and sim.state.nodes["r"].attempt == 1
    return sim.state


EMITTED = ({"type": "order.placed", "data": {"id": 1}}, {"type": "order.paid", "data": {}})


@pytest.mark.parametrize("ok", [True, False], ids=["succeeded", "failed"])
def test_an_accepted_outcome_drafts_its_events_between_started_and_the_ending(ok: bool) -> None:
    error = None if ok else ErrorInfo("builtins.ValueError", "no")
    outcome = Outcome("run-1", "r", 1, ok=ok, result=1 if ok else None, error=error, events=EMITTED)
    drafts = record_outcome(_running(), outcome)
    ending = ev.COMMAND_SUCCEEDED if ok else ev.COMMAND_FAILED
    assert [d.type for d in drafts] == [ev.COMMAND_STARTED, "order.placed", "order.paid", ending]
    for draft in drafts:
        assert (draft.node, draft.attempt, draft.command) == ("r", 1, "emits")
    assert [dict(d.data) for d in drafts[1:3]] == [{"id": 1}, {}]


def _accept(state: RunState, outcome: Outcome) -> None:
    for draft in record_outcome(state, outcome):
        at = ev.utcnow()
        event = Event(
            state.run, state.seq + 1, draft.type, at, draft.node, draft.attempt, draft.command, draft.data
        )
        evolve(state, event)


@pytest.mark.parametrize("attempt", [1, 2], ids=["duplicate", "late"])
def test_an_ignored_outcome_logs_no_events_and_names_them(attempt: int) -> None:
    """Attempt 1's outcome is accepted first; then attempt 1 again is a duplicate, attempt 2 never ran."""
    state = _running()
    _accept(state, Outcome("run-1", "r", 1, ok=True, result=1))
    assert state.nodes["r"].status == "succeeded"
    drafts = record_outcome(state, Outcome("run-1", "r", attempt, ok=True, result=2, events=EMITTED))
    assert [d.type for d in drafts] == [ev.OUTCOME_IGNORED]
    assert drafts[0].data["discarded_events"] == ["order.placed", "order.paid"]
    assert drafts[0].data["reason"] == ("duplicate" if attempt == 1 else "late")


def test_an_ignored_outcome_without_events_names_none() -> None:
    drafts = record_outcome(_running(), Outcome("run-1", "r", 9, ok=True, result=1))
    assert [d.type for d in drafts] == [ev.OUTCOME_IGNORED]
    assert "discarded_events" not in drafts[0].data


# --- the fold ignores domain events -----------------------------------------------------------

FOLD = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
domain_types = st.from_regex(r"[a-z][a-z0-9_-]{0,8}(\.[a-z0-9_-]{1,8}){0,2}", fullmatch=True).filter(
    is_domain_type
)


@st.composite
def logs_with_domain_events(draw: st.DrawFn) -> tuple[list[Event], list[Event]]:
    """A finished run's log, and the same log with domain events inserted anywhere after its submission."""
    flow = draw(flows(max_leaves=8))
    sim = Simulation(COMMANDS, draw(plans(flow)))
    sim.go(encode_flow(flow))
    log = list(sim.events)
    nodes: list[str | None] = [e.node for e in log if e.node is not None] or [None]
    inserts = draw(
        st.lists(
            st.tuples(
                st.integers(1, len(log)),
                domain_types,
                st.sampled_from(nodes),
                st.none() | st.integers(1, 3),
                st.dictionaries(st.text(max_size=4), st.integers() | st.text(max_size=4), max_size=3),
            ),
            min_size=1,
            max_size=12,
        )
    )
    mixed: list[Event | tuple[str, str | None, int | None, dict[str, Any]]] = list(log)
    for position, type_, node, attempt, data in sorted(inserts, key=lambda item: -item[0]):
        mixed.insert(position, (type_, node, attempt, data))
    renumbered: list[Event] = []
    for seq, item in enumerate(mixed, start=1):
        if isinstance(item, Event):
            renumbered.append(dataclasses.replace(item, seq=seq))
        else:
            type_, at_node, attempt, data = item
            at = renumbered[-1].at + timedelta(milliseconds=1)
            renumbered.append(
                Event("run-1", seq, type_, at, at_node, attempt, "wrap" if at_node else None, data, by="sim")
            )
    return log, renumbered


@FOLD
@given(logs_with_domain_events())
def test_domain_events_anywhere_in_a_log_change_no_run_state(logs: tuple[list[Event], list[Event]]) -> None:
    plain, mixed = logs
    without = fold("run-1", plain)
    with_them = fold("run-1", mixed)
    assert with_them.seq == len(mixed) > len(plain) == without.seq
    assert dataclasses.replace(with_them, seq=without.seq) == without
    for cut in range(1, len(mixed) + 1):  # every prefix folds too
        assert fold("run-1", mixed[:cut]).seq == cut


def test_a_domain_event_before_the_submission_is_refused() -> None:
    at = ev.utcnow()
    with pytest.raises(CorruptEvent, match="comes before the run was submitted"):
        fold("run-1", [Event("run-1", 1, "order.placed", at)])


@pytest.mark.parametrize("type_", ["run.placed", "command.emitted", "order..placed", "order placed"])
def test_a_type_neither_known_nor_domain_is_refused_by_the_fold(type_: str) -> None:
    sim = Simulation(COMMANDS)
    sim.go(encode_flow(call("wrap", 1)))
    bad = Event("run-1", len(sim.events) + 1, type_, ev.utcnow())
    with pytest.raises(CorruptEvent, match="unknown type"):
        fold("run-1", [*sim.events, bad])
