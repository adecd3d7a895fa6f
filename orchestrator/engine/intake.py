"""What arrives in the inbox, turned into events of the turn: submissions, cancellations, outcomes.

Each handler judges its item against the run as the book holds it (reading
the log only for a run not held here) and applies the events that follow; the
turn's append then makes them durable before anyone is answered.
"""

from __future__ import annotations

import logging

from ..core import events as ev
from ..core.crashpoints import crash_point
from ..core.envelope import Outcome
from ..core.errors import EvenflowError, IdempotencyConflict, InvalidRunState, RunNotFound, RunParked
from ..core.logfields import fields
from ..core.outcomes import CheckFlow, record_outcome
from ..core.planner import Draft
from ..core.state import RunState
from .book import RunBook
from .journal import Journal
from .messages import Abort, Cancel, Submit, Turn, Watch, refuse, settle
from .ownership import Ownership
from .recovery import Recovery

log = logging.getLogger("evenflow.engine")


class Intake:
    def __init__(
        self,
        book: RunBook,
        journal: Journal,
        recovery: Recovery,
        ownership: Ownership,
        check_flow: CheckFlow | None,
    ) -> None:
        self.book = book
        self.journal = journal
        self.recovery = recovery
        self.ownership = ownership
        self._check_flow = check_flow

    def submit(self, item: Submit, turn: Turn) -> None:
        partial = self.book.completing.pop(item.run, None)
        if partial is not None:
            self._complete(item, partial, turn)
            return
        existing = self.book.known(item.run)
        if existing is None and item.submission.key is not None:
            try:
                existing = self.recovery.load(item.run)
            except RunNotFound:
                pass
            except Exception as exc:
                refuse(item, exc)
                return
        if existing is not None:
            self._answer_existing(item, existing)
            return
        submission = item.submission
        state = RunState(item.run, correlation=submission.correlation)
        self.book.live[item.run] = state
        if item.watcher is not None:
            self.book.waiters[item.run].append(item.watcher)
        for kind, data in submission.logged():  # all in this turn's append: one transaction
            self.journal.apply(state, Draft(kind, data=data), turn, causation=submission.cause)
        turn.submits.append(item)

    def _complete(self, item: Submit, state: RunState, turn: Turn) -> None:
        """Log the parts of a submission whose append landed only in part (``Recovery.settle_unsure``)."""
        self.book.live[item.run] = state
        if item.watcher is not None:
            self.book.waiters[item.run].append(item.watcher)
        for kind, data in item.submission.logged()[state.seq :]:
            self.journal.apply(state, Draft(kind, data=data), turn, causation=item.submission.cause)
        turn.submits.append(item)

    def _answer_existing(self, item: Submit, state: RunState) -> None:
        """A run with this id is logged: the same keyed submission gets it, anything else an error."""
        key = item.submission.key
        if key is None:
            refuse(item, EvenflowError(f"run {item.run} already exists"))
        elif state.digest != item.submission.digest:
            refuse(item, IdempotencyConflict(key, item.run))
        else:
            settle(item.future, result=item.run)
            if item.watcher is not None:
                self.book.watch(state, item.watcher)

    def cancel(self, item: Cancel, turn: Turn) -> None:
        state = self.book.known(item.run)
        if state is None:
            try:
                state = self.recovery.load(item.run)
            except Exception as exc:
                settle(item.future, error=exc)
                return
        if state.status == "cancelled":  # cancelling twice (or again after an unsure append) is fine
            settle(item.future)
            return
        if state.finished:
            error = InvalidRunState(
                f"run {item.run} already {state.status}; only a running run can be cancelled"
            )
            settle(item.future, error=error)
            return
        draft = Draft(ev.RUN_CANCELLED, data={"reason": item.reason})
        self.journal.apply(state, draft, turn, causation=None)
        self.book.parked.pop(item.run, None)
        turn.cancels.append(item)

    def abort(self, item: Abort, turn: Turn) -> None:
        """End a run failed because the log refused one of its decisions (see refusals.py)."""
        state = self.book.live.get(item.run)
        if state is None or state.finished or not self.ownership.owns(state.owner):
            return
        if item.run in self.book.aborted:  # even its failure was refused: leave the run as the log has it
            log.error(
                "run %s is parked: the log refuses even the record of its failure",
                item.run,
                extra=fields(item.run),
            )
            self.book.live.pop(item.run, None)
            parked = RunParked(f"run {item.run} is parked: the log refuses its events")
            self.book.fail_waiters(item.run, parked)
            return
        self.book.aborted.add(item.run)
        draft = Draft(ev.RUN_FAILED, data={"failures": [item.failure]})
        self.journal.apply(state, draft, turn, causation=None)

    def outcome(self, outcome: Outcome, turn: Turn) -> None:
        if outcome.run in self.book.stale:
            self.book.stale[outcome.run].append(outcome)
            return
        self.book.inflight.discard(outcome.attempt_id)
        state = self.book.known(outcome.run)
        turn.outcomes.append(outcome)  # acknowledged even if ignored, so its worker stops resending
        if state is None or not self.ownership.owns(state.owner):  # only a run's owner writes to it
            log.info(
                "outcome of %s arrived for a run not driven here; ignored",
                outcome.attempt_id,
                extra=fields(outcome.run, outcome.node, outcome.attempt, outcome.by),
            )
            return
        crash_point("after-outcome-before-append")
        for draft in record_outcome(state, outcome, self._check_flow):
            self.journal.apply(state, draft, turn, causation=outcome.attempt_id)

    def watch(self, item: Watch) -> None:
        if item.run in self.book.parked:
            settle(item.future, error=self.book.parked[item.run])
            return
        state = self.book.known(item.run)
        if state is None and item.run not in self.book.stale:
            try:
                state = self.recovery.load(item.run)
            except Exception as exc:
                settle(item.future, error=exc)
                return
        if state is not None:
            self.book.watch(state, item.future)
        else:
            self.book.waiters[item.run].append(item.future)
