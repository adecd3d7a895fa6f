"""Listeners as values: patterns, ``on``, and how an answer to an event becomes triggers.

Everything here is pure: no store, no host. The patterns must mean the same in
the three places that match them (``fnmatchcase`` in memory, a ``$regex`` on
MongoDB, ``GLOB`` in SQLite), so a property test holds them to each other.
"""

from __future__ import annotations

import functools
import re
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator import CascadeLimit, ConfigurationError, ListenerError, on
from orchestrator.core import events as ev
from orchestrator.core.events import Event
from orchestrator.core.flow_docs import decode_flow
from orchestrator.core.flows import Parallel, call, encode_flow, parallel, sequence
from orchestrator.core.keys import run_for_key
from orchestrator.core.listening import (
    DEFAULT_CASCADE_LIMIT,
    MAX_TRIGGERS,
    NOTHING,
    Listener,
    Trigger,
    cascade_limit,
    check_patterns,
    failed_trigger,
    matches,
    pattern_regex,
    trigger_key,
    triggers_for,
)

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
EVENT = Event("run-a", 4, "order.placed", AT, "r", 1, "place_order", {"id": 7}, correlation="root-run")


def answer(event: Event) -> Any:
    return call("send_receipt", event.data["id"])


# --- patterns ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given_", "expected"),
    [
        ("order.placed", ("order.placed",)),
        ("order.*", ("order.*",)),
        ("*", ("*",)),
        (["order.*", "run.failed"], ("order.*", "run.failed")),
        (("a-b_c.*.d",), ("a-b_c.*.d",)),
        (iter(["x", "y"]), ("x", "y")),
    ],
)
def test_patterns_are_dotted_words_with_stars(given_: Any, expected: tuple[str, ...]) -> None:
    assert check_patterns(given_) == expected


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "order placed",
        "order..placed",
        ".order",
        "order.",
        "order.?",
        "order.[ab]",
        "order/placed",
        "$order",
        "a" * 201,
        ["order.*", 5],
        [None],
    ],
    ids=repr,
)
def test_a_bad_pattern_is_refused_with_examples(bad: Any) -> None:
    with pytest.raises(ConfigurationError, match=r"such as 'order\.\*' or 'run\.failed'"):
        check_patterns(bad)


def test_no_pattern_at_all_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="at least one event type pattern"):
        check_patterns([])


@pytest.mark.parametrize(
    ("pattern", "type_", "expected"),
    [
        ("order.*", "order.placed", True),
        ("order.*", "order.placed.late", True),
        ("order.*", "order", False),
        ("order.*", "orders.placed", False),
        ("order.*", "border.placed", False),
        ("order.placed", "order.placed", True),
        ("order.placed", "order.placed.late", False),
        ("order.placed", "Order.placed", False),
        ("*", "run.failed", True),
        ("*.failed", "command.failed", True),
        ("*.failed", "failed", False),
        ("run.*", "run.failed", True),
    ],
)
def test_a_pattern_matches_what_it_says(pattern: str, type_: str, expected: bool) -> None:
    assert matches([pattern], type_) is expected
    assert (re.fullmatch(pattern_regex(pattern), type_) is not None) is expected


@pytest.fixture(scope="module")
def sqlite() -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(":memory:")
    try:
        yield db
    finally:
        db.close()


words = st.text(alphabet="ab-_*", min_size=1, max_size=4)
patterns = st.lists(words, min_size=1, max_size=3).map(".".join)
types = st.lists(st.text(alphabet="ab-_", min_size=1, max_size=4), min_size=1, max_size=4).map(".".join)


@settings(max_examples=400, deadline=None)
@given(patterns, types)
def test_memory_mongodb_and_sqlite_read_a_pattern_alike(
    sqlite: sqlite3.Connection, pattern: str, type_: str
) -> None:
    """``fnmatchcase`` (memory), ``pattern_regex`` (MongoDB ``$regex``), ``GLOB`` (the embedded store)."""
    check_patterns(pattern)
    in_memory = matches([pattern], type_)
    as_regex = re.search(pattern_regex(pattern), type_) is not None  # $regex searches; the anchors hold it
    ((as_glob,),) = sqlite.execute("SELECT ? GLOB ?", (type_, pattern)).fetchall()
    assert in_memory == as_regex == bool(as_glob)


def test_a_pattern_regex_escapes_everything_but_the_star() -> None:
    assert pattern_regex("a.b-c_*") == "^a\\.b\\-c_.*$"
    assert re.fullmatch(pattern_regex("a.b"), "aXb") is None


# --- on() -------------------------------------------------------------------------------------


def test_on_names_a_listener_after_its_function_and_patterns() -> None:
    listener = on(["order.*", "run.failed"], answer)
    assert isinstance(listener, Listener)
    assert listener.name == f"{__name__}.answer on order.*,run.failed"
    assert listener.patterns == ("order.*", "run.failed")
    assert (listener.since, listener.process, listener.predicate) == ("now", False, None)
    assert matches(listener.patterns, EVENT.type) and not matches(listener.patterns, "orders.x")


def test_a_partial_is_named_after_what_it_wraps() -> None:
    listener = on("order.placed", functools.partial(answer))
    assert listener.name == f"{__name__}.answer on order.placed"


class Answerer:
    def __call__(self, event: Event) -> None:
        return None


def test_a_callable_object_is_named_after_its_class() -> None:
    assert on("x", Answerer()).name == f"{__name__}.Answerer on x"


def test_on_keeps_what_it_is_given() -> None:
    def keep(event: Event) -> bool:
        return True

    listener = on("x", answer, predicate=keep, name="mine", since="start", process=True)
    assert (listener.name, listener.since, listener.process, listener.predicate) == (
        "mine",
        "start",
        True,
        keep,
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fn": "not callable"}, "a listener must be callable with one event"),
        ({"predicate": True}, "predicate must be callable"),
        ({"since": "yesterday"}, "since must be 'now' or 'start'"),
        ({"name": ""}, "name must be a string of 1 to 200 characters"),
        ({"name": "n" * 201}, "name must be a string of 1 to 200 characters"),
        ({"name": 5}, "name must be a string"),
        ({"pattern": "order placed"}, "is not dotted words"),
    ],
)
def test_on_refuses_bad_arguments(kwargs: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {"pattern": "order.*", "fn": answer, **kwargs}
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        on(**arguments)


# --- answers become triggers ------------------------------------------------------------------


def test_none_triggers_nothing() -> None:
    assert triggers_for("receipts", EVENT, None) == []
    assert triggers_for("receipts", EVENT, []) == []


def test_a_flow_triggers_one_run_keyed_on_listener_event_and_index() -> None:
    (trigger,) = triggers_for("receipts", EVENT, answer(EVENT))
    assert trigger.failure is None and trigger.flow == encode_flow(call("send_receipt", 7))
    assert (trigger.listener, trigger.event, trigger.type, trigger.index) == (
        "receipts",
        "run-a/0000000004",
        "order.placed",
        0,
    )
    assert trigger.key == trigger_key("receipts", EVENT.id, 0) == "listener:receipts:run-a/0000000004#0"
    assert trigger.run == run_for_key(trigger.key)
    assert trigger.correlation == "root-run"
    assert ev.run_of(trigger.event) == "run-a"


def test_an_event_without_correlation_starts_a_chain_at_its_run() -> None:
    event = Event("run-b", 2, "order.placed", AT, data={"id": 1})
    (trigger,) = triggers_for("receipts", event, answer(event))
    assert trigger.correlation == "run-b"


@pytest.mark.parametrize("container", [list, tuple])
def test_a_list_of_flows_triggers_one_run_each_in_order(container: type) -> None:
    flows = [call("a"), sequence(call("b"), call("c")), parallel(call("d"))]
    triggers = triggers_for("fan", EVENT, container(flows))
    assert [t.index for t in triggers] == [0, 1, 2]
    assert [decode_flow(t.flow or {}) for t in triggers] == flows
    assert len({t.run for t in triggers}) == 3
    assert all(t.failure is None for t in triggers)


def test_the_same_answer_to_the_same_event_gives_the_same_runs() -> None:
    """Replaying a listener after a crash lands on the runs already logged."""
    first = triggers_for("fan", EVENT, [call("a"), call("b")])
    again = triggers_for("fan", EVENT, [call("a"), call("b")])
    assert [t.run for t in first] == [t.run for t in again]
    other = triggers_for("other", EVENT, [call("a"), call("b")])
    assert not {t.run for t in first} & {t.run for t in other}


@pytest.mark.parametrize(
    ("answer_", "message"),
    [
        (42, "returned 42; return None, a flow"),
        ("call('a')", "returned \"call('a')\""),
        ([call("a"), "b"], "returned 'b'"),
        ({"root": "r", "nodes": []}, "returned {'root'"),
        ([call("a")] * (MAX_TRIGGERS + 1), f"with {MAX_TRIGGERS + 1} flows, over {MAX_TRIGGERS}"),
    ],
    ids=["int", "str", "list with a str", "flow document", "too many"],
)
def test_a_bad_answer_becomes_one_failure(answer_: Any, message: str) -> None:
    (trigger,) = triggers_for("receipts", EVENT, answer_)
    assert trigger.flow is None and trigger.failure is not None and trigger.index == 0
    failure = trigger.failure
    assert failure["type"] == "orchestrator.core.errors.ListenerError"
    assert message in failure["message"]
    assert failure["message"].startswith(
        "listener 'receipts' failed on event run-a/0000000004 (order.placed)"
    )
    assert failure["node"] == "r" and failure["command"] is None and failure["attempt"] is None


def test_exactly_max_triggers_flows_are_taken() -> None:
    triggers = triggers_for("fan", EVENT, [call("a", i) for i in range(MAX_TRIGGERS)])
    assert len(triggers) == MAX_TRIGGERS and all(t.failure is None for t in triggers)


def test_a_raise_becomes_a_failure_with_its_type_message_and_traceback() -> None:
    try:
        raise KeyError("no such order")
    except KeyError as exc:
        trigger = failed_trigger("receipts", EVENT, exc)
    failure = trigger.failure
    assert failure is not None and trigger.flow is None
    assert failure["type"] == "builtins.KeyError"
    assert "builtins.LookupError" in failure["mro"]
    assert "listener 'receipts' failed on event run-a/0000000004 (order.placed)" in failure["message"]
    assert "no such order" in failure["message"]
    assert "test_a_raise_becomes_a_failure" in failure["traceback"]
    assert trigger.correlation == "root-run" and trigger.run == run_for_key(trigger.key)


def test_the_cascade_limit_error_names_listener_event_depth_and_fix() -> None:
    (trigger,) = triggers_for("pinger", EVENT, call("ping"))
    error = cascade_limit(trigger, DEFAULT_CASCADE_LIMIT + 1, DEFAULT_CASCADE_LIMIT)
    assert isinstance(error, CascadeLimit) and isinstance(error, ListenerError)
    text = str(error)
    assert "'pinger'" in text and "run-a/0000000004 (order.placed)" in text
    assert f"depth {DEFAULT_CASCADE_LIMIT + 1}, past the cascade limit of {DEFAULT_CASCADE_LIMIT}" in text
    assert "raise cascade_limit" in text


def test_the_flow_of_a_failure_run_is_an_empty_group() -> None:
    node = decode_flow(NOTHING)
    assert node == Parallel(branches=(), siblings="finish")


# --- triggers cross to a listener host in another process as plain documents ------------------


def test_a_trigger_round_trips_as_a_document() -> None:
    flow_trigger, failure_trigger = (
        triggers_for("receipts", EVENT, answer(EVENT))[0],
        triggers_for("receipts", EVENT, 42)[0],
    )
    for trigger in (flow_trigger, failure_trigger):
        assert Trigger.from_doc(trigger.to_doc()) == trigger


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"flow": None}, "a flow or a failure, exactly one"),
        ({"failure": {"type": "x", "message": "m"}}, "a flow or a failure, exactly one"),
        ({"listener": ""}, "listener must be a string"),
        ({"event": 5}, "event must be a string"),
        ({"type": "t" * 1001}, "type must be a string"),
        ({"index": -1}, "index must be a whole number"),
        ({"index": MAX_TRIGGERS + 1}, "index must be a whole number"),
        ({"index": True}, "index must be a whole number"),
        ({"index": 1.0}, "index must be a whole number"),
    ],
)
def test_a_bad_trigger_document_is_refused(change: dict[str, Any], message: str) -> None:
    doc = {**triggers_for("receipts", EVENT, answer(EVENT))[0].to_doc(), **change}
    with pytest.raises(ListenerError, match=message):
        Trigger.from_doc(doc)


def test_a_logged_listener_failure_fails_its_run_from_run_submitted_alone() -> None:
    """The failure rides on run.submitted, so a partial append (run.failed lost) cannot end it succeeded."""
    from orchestrator.core.evolve import fold
    from orchestrator.core.listening import NOTHING, failure_doc
    from orchestrator.core.planner import decide

    failure = failure_doc("receipts", "order-run/0000000004", "order.placed", ValueError("no email"))
    data = {"flow": NOTHING, "name": None, "listener": "receipts", "depth": 1, "refused": failure}
    submitted = Event("r1", 1, ev.RUN_SUBMITTED, AT, data=data, causation="order-run/0000000004")
    state = fold("r1", [submitted])
    (ending,) = decide(state, AT)
    assert ending.type == ev.RUN_FAILED and ending.data["failures"] == [failure]
    assert "listener 'receipts' failed on event order-run/0000000004 (order.placed)" in failure["message"]


def test_a_remote_triggers_flow_that_does_not_parse_becomes_its_failure() -> None:
    doc = {
        "listener": "far",
        "event": "r/0000000001",
        "type": "order.placed",
        "index": 0,
        "flow": {"nodes": 5},
    }
    trigger = Trigger.from_doc(doc)
    assert trigger.flow is None and trigger.failure is not None
    assert trigger.failure["type"] == "orchestrator.core.errors.InvalidFlow"
    assert trigger.failure["message"].startswith("listener 'far' failed on event r/0000000001 (order.placed)")
