"""Retrying a failed (or cancelled) run from where it stopped.

As DBOS forks and Temporal resets do, a retry is a new run: same flow, same
input, and the results of every call that succeeded in the old run kept, so
only what failed or never ran is executed again. The new run's id comes from
the key ``retry:<old run>``, so retrying the same run twice gives the same new
run; retry *that* one if it fails too. The old run's log stays as it ended.

Calls inside a flow that a command returned at run time are not kept: the
command that returned the flow runs again and may return another one.
"""

from __future__ import annotations

from typing import Any

from .errors import InvalidRunState
from .events import Event
from .evolve import fold
from .state import NO_INPUT, SUCCEEDED, RunState
from .submitting import Submission


def retry_key(run: str) -> str:
    return f"retry:{run}"


def retry_submission(run: str, events: list[Event]) -> Submission:
    """The run that continues ``run``; ``InvalidRunState`` unless it failed or was cancelled."""
    state = fold(run, events)
    if not state.finished:
        raise InvalidRunState(
            f"run {run} is still {state.status}; only a failed or cancelled run can be retried "
            f"(cancel it first with `evenflow cancel {run}`)"
        )
    if state.status == SUCCEEDED:
        raise InvalidRunState(f"run {run} succeeded; there is nothing to retry")
    if state.refused is not None:
        raise InvalidRunState(
            f"run {run} only records that listener {state.listener!r} failed on event {state.cause}; it "
            "holds no work to retry. Fix the listener, then submit the flow it should have answered"
        )
    if state.parts_due:
        raise InvalidRunState(
            f"run {run} never had its whole submission logged (its submitter stopped while logging it), "
            "so the log cannot say what to retry; submit the flow again"
        )
    assert state.flow is not None
    return Submission.keyed(
        retry_key(run),
        state.flow,
        input=events[0].data.get("input", NO_INPUT),
        name=state.name,
        retry_of=run,
        kept=kept_results(state),
    )


def kept_results(state: RunState) -> list[list[Any]]:
    """``[path, result]`` of each call that succeeded, outside flows returned at run time.

    Pairs, not a mapping: paths hold dots, which MongoDB dislikes in field names.
    """
    return [
        [node.path, node.result]
        for node in state.nodes.values()
        if node.kind == "call" and node.status == SUCCEEDED and not node.children and not _expanded(node.path)
    ]


def _expanded(path: str) -> bool:
    return "e" in path.split(".")
