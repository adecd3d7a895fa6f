"""A submission too large for one event is logged in parts, and runs exactly as it would whole.

The parts are forced here by shrinking the limits (``ONE_EVENT_BYTES`` to 0,
``PART_BYTES`` to a few hundred bytes), so random flows split at every place a
slice can end; tests/integration/test_large_submissions.py runs one past the
real 16 MiB on each store.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.core import events as ev
from orchestrator.core import flows as flow_docs
from orchestrator.core import submitting
from orchestrator.core.errors import CorruptEvent, InvalidRunState, PayloadError, SubmissionIncomplete
from orchestrator.core.events import Event
from orchestrator.core.evolve import evolve, fold
from orchestrator.core.flows import call, chord, encode_flow, narrowed, widened
from orchestrator.core.planner import Draft, decide
from orchestrator.core.retry_run import retry_submission
from orchestrator.core.stored_names import stored_name
from orchestrator.core.submitting import Submission
from tests.simulation import Simulation
from tests.strategies import COMMANDS, flows, plans

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@contextmanager
def tiny_parts(part_bytes: int) -> Iterator[None]:
    """Every submission made inside split, into parts of at most ``part_bytes``."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(submitting, "ONE_EVENT_BYTES", 0)
        patch.setattr(submitting, "EVENT_ROOM_BYTES", 0)
        patch.setattr(submitting, "PART_BYTES", part_bytes)
        patch.setattr(flow_docs, "WIDE_GROUP", 1)  # every group's children stored as their count
        yield


@st.composite
def split_histories(draw: st.DrawFn) -> tuple[dict[str, Any], dict[tuple[str, int], bool], int]:
    flow = draw(flows())
    return encode_flow(flow), draw(plans(flow)), draw(st.integers(700, 3_000))


@SETTINGS
@given(split_histories())
def test_a_run_submitted_in_parts_ends_as_the_same_run_submitted_whole(
    history: tuple[dict[str, Any], dict[tuple[str, int], bool], int],
) -> None:
    flow, plan, part_bytes = history
    with tiny_parts(part_bytes):
        logged = Submission("run-1", flow, input=[1, 2]).logged()
    assert [kind for kind, _ in logged[:1]] == [ev.RUN_SUBMITTED]
    assert {kind for kind, _ in logged[1:]} == {ev.RUN_FLOW_PART}
    assert logged[0][1]["parts"] == len(logged) - 1
    stored = [spec for _, part in logged[1:] for spec in part["nodes"]]
    assert [widened(spec) for spec in stored] == flow["nodes"]
    assert not any(spec.get("children") for spec in stored)  # every group here is named by the rule
    split = Simulation(COMMANDS, plan)
    whole = Simulation(COMMANDS, plan)
    got = split.go(flow, logged=logged)
    expected = whole.go(flow, [1, 2])
    assert (got.status, got.result, got.failures) == (expected.status, expected.result, expected.failures)
    assert got.nodes == expected.nodes
    assert got.flow == expected.flow  # the whole flow again, as a retry needs it
    assert fold(split.run, split.events) == got
    assert [e.type for e in split.events[len(logged) :]] == [e.type for e in whole.events[1:]]


@SETTINGS
@given(split_histories(), st.data())
def test_a_run_cut_short_in_its_parts_fails_before_anything_runs(
    history: tuple[dict[str, Any], dict[tuple[str, int], bool], int], data: st.DataObject
) -> None:
    flow, _, part_bytes = history
    with tiny_parts(part_bytes):
        logged = Submission("run-1", flow).logged()
    kept = data.draw(st.integers(1, len(logged) - 1), label="events that landed")
    sim = Simulation(COMMANDS)
    for kind, payload in logged[:kept]:
        sim.apply(Draft(kind, data=payload))
    drafts = decide(sim.state, sim.clock.now())
    assert [draft.type for draft in drafts] == [ev.RUN_FAILED]
    failure = drafts[0].data["failures"][0]
    assert failure["type"] == stored_name(SubmissionIncomplete)
    assert f"lacks {len(logged) - kept} part(s)" in failure["message"]
    sim.apply(drafts[0])
    assert sim.state.finished and sim.state.status == "failed"
    assert decide(sim.state, sim.clock.now()) == []


def test_a_part_with_no_submission_waiting_for_it_is_corrupt() -> None:
    flow = encode_flow(chord([call("count", i) for i in range(3)], call("count")))
    sim = Simulation(COMMANDS)
    sim.go(flow)
    stray = Event("run-1", sim.state.seq + 1, ev.RUN_FLOW_PART, sim.clock.now(), data={"nodes": []})
    with pytest.raises(CorruptEvent, match="no submission part due"):
        evolve(sim.state, stray)


def test_a_retry_of_a_run_submitted_in_parts_keeps_its_results_in_parts() -> None:
    flow = encode_flow(chord([call("count", i) for i in range(40)], call("count")))
    plan = {("r.0.7", 1): True}
    with tiny_parts(1_200):
        first = Simulation(COMMANDS, plan)
        failed = first.go(flow, logged=Submission("run-1", flow).logged())
        assert failed.status == "failed"
        retry = retry_submission("run-1", first.events)
        logged = retry.logged()
    kinds = [kind for kind, _ in logged]
    parts = [data for _, data in logged[1:]]
    assert kinds[0] == ev.RUN_SUBMITTED and logged[0][1]["kept"] == []
    assert sum(len(part.get("kept", ())) for part in parts) == 39  # every call of the header but r.0.7
    again = Simulation(COMMANDS, run=retry.run)
    done = again.go(flow, logged=logged)
    assert done.status == "succeeded"
    dispatched = [e.node for e in again.events if e.type == ev.COMMAND_DISPATCHED]
    assert dispatched == ["r.0.7", "r.1"]  # only what failed, and the body


def test_a_submission_over_the_whole_bound_is_refused_naming_its_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(submitting, "MAX_SUBMISSION_BYTES", 50_000)
    flow = encode_flow(chord([call("count", "x" * 1_000) for _ in range(60)], call("count")))
    with pytest.raises(PayloadError, match=r"over the 50,000-byte limit"):
        Submission.of(flow)


def test_what_fits_one_event_is_logged_as_it_always_was() -> None:
    flow = encode_flow(chord([call("count", i) for i in range(3)], call("count")))
    submission = Submission.of(flow, input=5, name="small")
    assert submission.logged() == [(ev.RUN_SUBMITTED, submission.data())]
    assert "parts" not in submission.data()


def test_a_run_cut_short_cannot_be_retried_and_says_to_submit_again() -> None:
    flow = encode_flow(chord([call("count", i) for i in range(40)], call("count")))
    with tiny_parts(1_200):
        logged = Submission("run-1", flow).logged()
    sim = Simulation(COMMANDS)
    sim.apply(Draft(logged[0][0], data=logged[0][1]))
    sim.apply(decide(sim.state, sim.clock.now())[0])
    with pytest.raises(
        InvalidRunState, match=r"never had its whole submission logged.*submit the flow again"
    ):
        retry_submission("run-1", sim.events)


def test_a_wide_group_is_stored_by_its_count_only_when_its_children_follow_the_naming_rule() -> None:
    wide = {"path": "r.0", "parent": "r", "kind": "parallel", "children": [f"r.0.{i}" for i in range(1_500)]}
    stored = narrowed(wide)
    assert stored == {"path": "r.0", "parent": "r", "kind": "parallel", "width": 1_500}
    assert widened(stored) == wide
    odd = dict(wide, children=[*wide["children"][:-1], "r.0.x"])
    assert narrowed(odd) is odd  # a document from elsewhere may name children otherwise: kept whole
    narrow = dict(wide, children=wide["children"][:10])
    assert narrowed(narrow) is narrow
