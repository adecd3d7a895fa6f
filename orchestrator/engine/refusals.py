"""When the store refuses events for what they hold: who pays for it, so every other run goes on.

A refusal (``EventRefused``) is not an outage: the same events would be refused
again, so retrying the append would stop the engine for everyone. The turn's
other runs are appended without the guilty ones; each guilty run is then
judged by the first of its events that was refused:

- its submission: the submission is refused and nothing of the run is logged;
- what an attempt reported (a result, emitted events): that attempt fails with
  a ``PayloadError`` saying why, logged like any failure (never retried);
- a decision of the engine's own: the run is ended failed, with the reason.

Events before the refused one may have landed (a server writes an ordered
batch up to the document it refuses): the run is folded again from the log,
its other outcomes and cancellations are offered again, and a submission of
it in that turn is answered by what the log holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..core import events as ev
from ..core.envelope import ErrorInfo, Outcome
from ..core.errors import EventRefused, PayloadError
from ..core.flows import ROOT
from .messages import Abort, Submit, Turn


@dataclass(slots=True)
class Verdict:
    """What becomes of one run whose events the store refused."""

    run: str
    refused: list[Submit] = field(default_factory=list)
    """Submissions to answer with the refusal."""
    unsure: list[Submit] = field(default_factory=list)
    """Submissions whose ``run.submitted`` may have landed before the refusal: the log decides."""
    again: list[Any] = field(default_factory=list)
    """Outcomes (one of them turned into a failure) and cancellations to offer on the next turn."""
    abort: Abort | None = None


def judge(part: Turn, exc: EventRefused, converted: set[str]) -> list[Verdict]:
    """One verdict per run of ``part``; ``converted`` holds attempts already failed for a refusal."""
    refused = set(exc.events)
    verdicts = []
    for run, events in part.events.items():
        verdict = Verdict(run)
        guilty = next((event for event in events if event.id in refused), events[0] if events else None)
        submits = [submit for submit in part.submits if submit.run == run]
        if guilty is None or guilty.type in (ev.RUN_SUBMITTED, ev.RUN_FLOW_PART):
            verdict.refused = submits
            verdicts.append(verdict)
            continue
        verdict.unsure = submits
        outcomes = [outcome for outcome in part.outcomes if outcome.run == run]
        culprit = _reported_by(guilty, outcomes)
        if culprit is not None and culprit.attempt_id not in converted:
            converted.add(culprit.attempt_id)
            verdict.again = [refused_outcome(o, exc) if o is culprit else o for o in outcomes]
        else:
            verdict.abort = Abort(run, refusal_failure(exc))
            verdict.again = [o for o in outcomes if o is not culprit]
        verdict.again += [cancel for cancel in part.cancels if cancel.run == run]
        verdicts.append(verdict)
    return verdicts


def _reported_by(event: ev.Event | None, outcomes: list[Outcome]) -> Outcome | None:
    """The outcome whose recording gave ``event`` (its attempt's start, events, end), if any."""
    if event is None or event.type in (ev.COMMAND_DISPATCHED, ev.RETRY_SCHEDULED, ev.NODE_FAILED):
        return None
    return next((o for o in outcomes if (o.node, o.attempt) == (event.node, event.attempt)), None)


def refused_outcome(outcome: Outcome, exc: EventRefused) -> Outcome:
    """The attempt's outcome as a failure saying why the log could not take what it reported."""
    error = PayloadError(f"the log could not take what attempt {outcome.attempt_id} reported: {exc}")
    return Outcome(
        outcome.run,
        outcome.node,
        outcome.attempt,
        ok=False,
        error=ErrorInfo.from_exception(error),
        started_at=outcome.started_at,
        finished_at=outcome.finished_at,
        by=outcome.by,
    )


def refusal_failure(exc: EventRefused) -> dict[str, Any]:
    """A run's failure, as ``run.failed`` records it, when its own decisions cannot be logged."""
    info = ErrorInfo.from_exception(exc)
    return {"node": ROOT, "command": None, "attempt": None, **info.to_doc()}
