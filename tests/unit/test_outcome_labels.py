"""Late or duplicate: an ignored outcome's label, decided by the fold alone (no timing).

Each case builds a run's log with the same drafts the engine appends
(``record_outcome`` for outcomes, ``decide`` for timers and retries, the
takeover's ``Interrupted`` ending), then offers one more outcome. ``late``: the
attempt was given up while its command ran (the orchestrator ended it, or
another reporter declared it lost); ``duplicate``: its accepted outcome again,
from the reporter it was accepted from.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.core import events as ev
from orchestrator.core.envelope import ErrorInfo, Outcome
from orchestrator.core.errors import Interrupted, WorkerLost
from orchestrator.core.events import Event
from orchestrator.core.evolve import evolve
from orchestrator.core.flows import call, encode_flow
from orchestrator.core.outcomes import record_outcome
from orchestrator.core.planner import Draft, decide
from orchestrator.core.state import RunState

AT = datetime(2026, 1, 1, tzinfo=UTC)
WORKER, HUB = "zmq:worker-1", "zmq:service"


def apply(state: RunState, drafts: list[Draft], at: datetime = AT) -> RunState:
    for draft in drafts:
        event = Event(
            state.run, state.seq + 1, draft.type, at, draft.node, draft.attempt, draft.command, draft.data
        )
        state = evolve(state, event)
    return state


def running(timeout_s: float | None = None) -> RunState:
    """A run of one call whose attempt 1 is dispatched."""
    node = call("noop").options(timeout=timedelta(seconds=timeout_s)) if timeout_s else call("noop")
    flow = encode_flow(node)
    state = apply(RunState("r"), [Draft(ev.RUN_SUBMITTED, data={"flow": flow, "name": None})])
    return apply(state, decide(state, AT))


def result(by: str = WORKER, attempt: int = 1) -> Outcome:
    return Outcome("r", "r", attempt, ok=True, result="done", started_at=AT, finished_at=AT, by=by)


def lost(by: str) -> Outcome:
    return Outcome(
        "r", "r", 1, ok=False, error=ErrorInfo.from_exception(WorkerLost("gone"), reason="lost"), by=by
    )


def label(state: RunState, outcome: Outcome) -> str:
    (draft,) = record_outcome(state, outcome)
    assert draft.type == ev.OUTCOME_IGNORED
    return str(draft.data["reason"])


def interrupted(state: RunState) -> RunState:
    """What a takeover appends for an attempt in flight: its ending, with no outcome accepted."""
    error = ErrorInfo.from_exception(Interrupted("the orchestrator stopped"), reason="lost")
    return apply(state, [Draft(ev.COMMAND_FAILED, "r", 1, "noop", {"error": error.to_doc()})])


def test_a_result_after_a_takeover_interrupted_its_attempt_is_late_before_and_after_the_retry() -> None:
    state = interrupted(running())
    assert label(state, result()) == "late"  # ended, no retry scheduled yet
    state = apply(state, decide(state, AT))
    assert [n.status for n in state.nodes.values()] == ["waiting"]
    assert label(state, result()) == "late"  # the retry is scheduled
    state = apply(state, decide(state, AT))
    assert state.nodes["r"].attempt == 2
    assert label(state, result()) == "late"  # attempt 2 runs


def test_a_workers_result_after_the_hub_declared_it_lost_is_late() -> None:
    state = running()
    state = apply(state, record_outcome(state, lost(HUB)))
    assert label(state, result(WORKER)) == "late"
    assert label(state, lost(HUB)) == "duplicate"  # the hub's own report again


def test_a_lost_outcome_its_worker_sends_again_is_a_duplicate() -> None:
    state = running()
    state = apply(state, record_outcome(state, lost(WORKER)))
    assert label(state, lost(WORKER)) == "duplicate"


def test_a_result_after_its_timeout_is_late() -> None:
    state = running(timeout_s=1.0)
    state = apply(state, decide(state, AT + timedelta(seconds=2)))
    assert state.nodes["r"].error is not None and state.nodes["r"].error["reason"] == "timeout"
    assert label(state, result()) == "late"


@pytest.mark.parametrize("ok", [True, False])
def test_an_accepted_outcome_sent_again_is_a_duplicate(ok: bool) -> None:
    state = running()
    first = (
        result()
        if ok
        else Outcome("r", "r", 1, ok=False, error=ErrorInfo("builtins.ValueError", "no"), by=WORKER)
    )
    state = apply(state, record_outcome(state, first))
    assert label(state, first) == "duplicate"
