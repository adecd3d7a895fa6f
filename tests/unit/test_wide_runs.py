"""What a run of many nodes costs in memory: a call node holds no list of its own."""

from __future__ import annotations

from orchestrator.core.flows import call, chord, each, encode_flow, parallel, sequence
from orchestrator.core.state import NodeState
from tests.simulation import Simulation
from tests.strategies import COMMANDS


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
