"""Property tests of the pure core: replay is a fold, and flows compute what they say."""

from __future__ import annotations

import pickle
import subprocess
import sys
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.core.evolve import fold
from orchestrator.core.flows import encode_flow
from orchestrator.core.planner import decide
from tests.simulation import ReferenceFailed, Simulation, evaluate
from tests.strategies import COMMANDS, flows, plans

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def histories(draw: st.DrawFn) -> tuple[dict, dict]:
    flow = draw(flows())
    return encode_flow(flow), draw(plans(flow))


@SETTINGS
@given(histories())
def test_replaying_the_log_gives_the_same_state(history: tuple[dict, dict]) -> None:
    flow, plan = history
    sim = Simulation(COMMANDS, plan)
    live = sim.go(flow)
    assert live.finished
    assert fold(sim.run, sim.events) == live
    for cut in range(len(sim.events) + 1):
        assert fold(sim.run, sim.events[:cut]).seq == cut  # every prefix folds


@SETTINGS
@given(histories())
def test_a_finished_run_decides_nothing_more(history: tuple[dict, dict]) -> None:
    flow, plan = history
    sim = Simulation(COMMANDS, plan)
    state = sim.go(flow)
    later = sim.clock.advance(timedelta(days=365))
    assert decide(fold(sim.run, sim.events), later) == []
    assert decide(state, later) == []


@SETTINGS
@given(histories())
def test_the_result_equals_evaluating_the_flow_directly(history: tuple[dict, dict]) -> None:
    flow, plan = history
    state = Simulation(COMMANDS, plan).go(flow)
    try:
        expected = evaluate(flow, COMMANDS, plan)
    except ReferenceFailed as failure:
        assert state.status == "failed"
        failed = sorted({f["node"] for f in state.failures})
        modes = {spec.get("siblings") for spec in flow["nodes"]}
        if "cancel" not in modes:
            assert failed == sorted(set(failure.nodes))
    else:
        assert state.status == "succeeded", state.failures
        assert state.result == expected


FOLD_IN_CHILD = (
    "import pickle, sys\n"
    "from orchestrator.core.evolve import fold\n"
    "histories = pickle.load(sys.stdin.buffer)\n"
    "sys.stdout.buffer.write(pickle.dumps([fold(run, events) for run, events in histories]))\n"
)


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(histories(), min_size=1, max_size=10))
def test_a_fresh_process_folds_the_same_states(batch: list[tuple[dict, dict]]) -> None:
    sims = [Simulation(COMMANDS, plan, run=f"run-{i}") for i, (_, plan) in enumerate(batch)]
    live = [sim.go(flow) for sim, (flow, _) in zip(sims, batch, strict=True)]
    logs = pickle.dumps([(sim.run, sim.events) for sim in sims])
    child = [sys.executable, "-c", FOLD_IN_CHILD]
    done = subprocess.run(child, input=logs, capture_output=True, timeout=120, check=True)
    assert pickle.loads(done.stdout) == live


@SETTINGS
@given(histories(), st.integers(1, 4))
def test_a_limited_decision_is_the_start_of_the_whole_one(history: tuple[dict, dict], limit: int) -> None:
    """The engine decides a wide fan-out a slice per turn: each slice must be what one decision
    of everything would have begun with, at every point of the run."""
    flow, plan = history
    sim = Simulation(COMMANDS, plan)
    sim.go(flow)
    now = sim.clock.now()
    for cut in range(1, len(sim.events) + 1):
        state = fold(sim.run, sim.events[:cut])
        assert decide(state, now, limit) == decide(state, now)[:limit]
