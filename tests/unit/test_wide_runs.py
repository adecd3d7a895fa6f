"""What a run of many nodes costs: a call node holds no list of its own, a map's items share its
template, call specs share their keys, and what is due is found without reading every timer."""

from __future__ import annotations

import copy
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import bson
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.core.flows import call, chord, each, encode_flow, parallel, sequence
from orchestrator.core.state import _NONE_SET, NodeState, RunState
from tests.simulation import Simulation
from tests.strategies import COMMANDS

START = datetime(2026, 1, 1, tzinfo=UTC)


def _own_lists(node: NodeState) -> list[str]:
    return [name for name in ("children", "results", "failures") if type(getattr(node, name)) is not tuple]


def test_the_calls_of_a_wide_chord_and_map_share_their_empty_lists() -> None:
    width = 40
    flow = parallel(
        chord([call("count", i) for i in range(width)], call("count")),
        sequence(call("spread", *range(width - 1)), each("count")),
    )
    state = Simulation(COMMANDS).go(encode_flow(flow))
    assert state.status == "succeeded" and state.result == [1, [1] * width]
    calls = [node for node in state.nodes.values() if node.kind == "call"]
    assert len(calls) == 2 * width + 2
    assert {node.path: lists for node in calls if (lists := _own_lists(node))} == {}


def test_the_calls_of_a_wide_chord_keep_no_record_of_the_fields_only_some_nodes_set() -> None:
    flow = chord([call("count", i) for i in range(40)], call("count"))
    state = Simulation(COMMANDS).go(encode_flow(flow))
    calls = [node for node in state.nodes.values() if node.kind == "call"]
    assert state.status == "succeeded" and all(node._rare is _NONE_SET for node in calls)
    assert state.nodes["r.0"]._rare is not _NONE_SET  # a group: its results and children


def test_a_node_that_set_a_field_back_to_its_default_equals_one_that_never_set_it() -> None:
    plain, touched = NodeState("r.0", {"kind": "call"}), NodeState("r.0", {"kind": "call"})
    touched.error, touched.lost = {"type": "x"}, 1
    assert touched != plain and touched._rare is not _NONE_SET
    touched.error, touched.lost = None, 0
    assert touched == plain and repr(touched) == repr(plain)


def test_a_group_with_failing_branches_lists_every_failure_once() -> None:
    flow = chord([call("count", i) for i in range(6)], call("count"))
    plan = {(f"r.0.{i}", 1): True for i in (1, 4)}
    state = Simulation(COMMANDS, plan).go(encode_flow(flow))
    assert state.status == "failed"
    assert [failure["node"] for failure in state.failures] == ["r.0.1", "r.0.4"]
    assert state.nodes["r.0.0"].failures == () and state.nodes["r.0"].failures == state.failures


def test_the_items_of_a_map_share_its_template_unless_each_needs_its_own_key() -> None:
    items = 10
    plain = sequence(call("spread", *range(items - 1)), each("count"))
    state = Simulation(COMMANDS).go(encode_flow(plain))
    assert state.result == [1] * items
    template = state.nodes["r.1"].spec["template"]
    assert all(state.nodes[f"r.1.{i}"].spec is template for i in range(items))

    keyed = sequence(call("spread", *range(items - 1)), each(call("count").options(key="k")))
    sim = Simulation(COMMANDS)
    assert sim.go(encode_flow(keyed)).result == [1] * items
    keys = [event.data["key"] for event in sim.events if event.type == "command.dispatched"]
    assert keys[1:] == [f"k/{i}" for i in range(items)]


def test_the_call_specs_of_a_flow_share_their_keys_and_empty_kwargs_and_store_as_before() -> None:
    flow = chord([call("count", i) for i in range(50)], call("count", scale=2))
    doc = encode_flow(flow)
    calls = [spec for spec in doc["nodes"] if spec["kind"] == "call"]
    plain = copy.deepcopy(doc)  # every spec a dict of its own keys, as a store gives them back
    assert doc == plain and bson.encode(doc) == bson.encode(plain)
    assert all(type(spec) is dict and list(spec) == list(calls[0]) for spec in calls)
    assert all(sys.getsizeof(spec) < sys.getsizeof(dict(spec)) for spec in calls)
    assert len({id(spec["kwargs"]) for spec in calls[:-1]}) == 1 and calls[-1]["kwargs"] == {"scale": 2}
    assert encode_flow(flow)["nodes"][2]["kwargs"] is not calls[0]["kwargs"]  # not shared between flows


class _CountingList(list):  # type: ignore[type-arg]
    """A heap that counts the entries read from Python, to see how far a lookup went."""

    reads = 0

    def __getitem__(self, index: Any) -> Any:
        _CountingList.reads += 1
        return super().__getitem__(index)


def test_what_is_due_is_found_without_reading_every_timer() -> None:
    state = RunState("run-1")
    state._heap = _CountingList()
    later = START + timedelta(hours=1)
    for i in range(10_000):
        state.set_timer(f"r.{i}", later + timedelta(seconds=i))
    for i in (17, 4_242, 9_001):
        state.set_timer(f"r.{i}", START)  # set again, now due: the old entries are left behind
    _CountingList.reads = 0
    assert state.due(START) == ["r.17", "r.4242", "r.9001"]
    assert state.next_due() == START
    assert _CountingList.reads < 40  # the due ones and the entries right below them, not 10,000


operations = st.lists(
    st.tuples(st.sampled_from(["set", "pop"]), st.integers(0, 8), st.integers(0, 5)), max_size=60
)


@settings(max_examples=200, deadline=None)
@given(operations, st.integers(0, 5))
def test_due_and_next_due_are_what_scanning_the_timers_gives(
    ops: list[tuple[str, int, int]], at: int
) -> None:
    state = RunState("run-1")
    for op, node, minutes in ops:
        if op == "set":
            state.set_timer(f"r.{node}", START + timedelta(minutes=minutes))
        else:
            state.timers.pop(f"r.{node}", None)
    now = START + timedelta(minutes=at)
    assert state.due(now) == [path for path, when in state.timers.items() if when <= now]
    assert state.next_due() == (min(state.timers.values()) if state.timers else None)


def test_a_long_run_keeps_its_timer_heap_near_the_number_of_live_timers() -> None:
    state = RunState("run-1")
    for i in range(5_000):  # each call gets a deadline, then completes: its entry goes stale
        state.set_timer(f"r.{i}", START + timedelta(hours=1, seconds=i))
        state.timers.pop(f"r.{i - 3}", None)
    assert len(state.timers) == 3
    assert len(state._heap) <= 2 * 3 + 64 + 1
    assert state.due(START + timedelta(hours=3)) == list(state.timers)
