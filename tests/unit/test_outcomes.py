"""Why an outcome is ignored: ``late`` for an attempt the orchestrator gave up, ``duplicate`` for one
whose outcome was already accepted."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from orchestrator.core import events as ev
from orchestrator.core.envelope import ErrorInfo, Outcome
from orchestrator.core.events import Event
from orchestrator.core.evolve import fold
from orchestrator.core.flows import call, encode_flow
from orchestrator.core.outcomes import record_outcome
from orchestrator.core.stored_names import INTERRUPTED

AT = datetime(2026, 1, 1, tzinfo=UTC)


def ended(reason: str, type_: str = "builtins.ValueError") -> list[Event]:
    """A run whose only attempt ended failed with ``reason`` (not yet retried)."""
    flow = encode_flow(call("noop"))
    error = ErrorInfo(type_, "m", reason=reason)  # type: ignore[arg-type]
    return [
        Event("r", 1, ev.RUN_SUBMITTED, AT, data={"flow": flow, "name": None}),
        Event("r", 2, ev.COMMAND_DISPATCHED, AT, node="r", attempt=1, command="noop", data={"args": []}),
        Event(
            "r", 3, ev.COMMAND_FAILED, AT, node="r", attempt=1, command="noop", data={"error": error.to_doc()}
        ),
    ]


@pytest.mark.parametrize(
    ("reason", "type_", "why"),
    [
        ("lost", INTERRUPTED, "late"),  # the orchestrator restarted; the old attempt's result comes after
        ("lost", "orchestrator.core.errors.WorkerLost", "late"),
        ("timeout", "orchestrator.core.errors.CommandTimeout", "late"),
        ("raised", "builtins.ValueError", "duplicate"),
    ],
)
def test_an_outcome_of_an_attempt_already_ended_says_why_it_is_ignored(
    reason: str, type_: str, why: str
) -> None:
    state = fold("r", ended(reason, type_))
    outcome = Outcome("r", "r", 1, ok=True, result=1)
    (draft,) = record_outcome(state, outcome)
    assert (draft.type, draft.data["reason"]) == (ev.OUTCOME_IGNORED, why)
