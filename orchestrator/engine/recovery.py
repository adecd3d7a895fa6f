"""Finding runs again in the log: after a failed append, a bad turn, an outage, or at takeover.

The log is the truth. A run is folded again from what landed; attempts it
shows in flight but not sent from here are sent; outcomes and cancellations
that were not logged are offered again. A run whose log cannot be read for
now is *stale* (retried with backoff); one whose log does not fold is parked.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ..core.errors import CorruptEvent, IdempotencyConflict, RunNotFound, RunParked, StoreUnavailable
from ..core.evolve import fold
from ..core.logfields import fields
from ..core.planner import envelope_for
from ..core.ports import EventStore
from ..core.state import RunState
from .book import RunBook
from .dispatch import Dispatcher
from .messages import Submit, Turn, refuse, settle
from .ownership import Ownership

log = logging.getLogger("evenflow.engine")

SUBMIT_TRIES = 8
"""Appends of one submission before its caller is told the store is unavailable."""
Unrunnable = Callable[[RunState], str | None]
"""Why a run taken over cannot be driven here (a command the registry lacks), or None."""


class Recovery:
    def __init__(
        self,
        store: EventStore,
        book: RunBook,
        ownership: Ownership,
        dispatcher: Dispatcher,
        put: Callable[[Any], None],
        unrunnable: Unrunnable | None,
    ) -> None:
        self.store = store
        self.book = book
        self.ownership = ownership
        self.dispatcher = dispatcher
        self._put = put
        self._unrunnable = unrunnable

    def load(self, run: str) -> RunState:
        events = self.store.read(run)
        if not events:
            raise RunNotFound(run)
        return fold(run, events)

    def peek(self, run: str) -> RunState | None:
        """A run another orchestrator drives, as the log has it now (None if it cannot be read)."""
        if run not in self.book.foreign:
            return None
        try:
            return self.load(run)
        except Exception:
            return None

    def reload(self, runs: list[str], *, resend: bool = True, adopt: bool = False) -> list[RunState]:
        """Fold runs again from the log; resend attempts that are logged but not in flight here.

        Runs another orchestrator drives are left to it, unless ``adopt`` and its
        lease has lapsed. Returns the runs this engine now drives.
        """
        driven = [state for run in runs if (state := self._reload_one(run, adopt)) is not None]
        for state in driven if resend else ():
            for node in state.running():
                envelope = envelope_for(state, node)
                if envelope.attempt_id not in self.book.inflight:
                    self.dispatcher.send(envelope.route or "default", [envelope])
        return driven

    def _reload_one(self, run: str, adopt: bool) -> RunState | None:
        book = self.book
        book.live.pop(run, None)
        try:
            state = self.load(run)
        except RunNotFound as exc:
            self.not_in_log(run, exc)
            return None
        except CorruptEvent as exc:
            log.error("run %s is parked: %s", run, exc, extra=fields(run))
            book.fail_waiters(run, exc)
            return None
        except Exception as exc:
            log.warning("run %s cannot be read now (%r); will try again", run, exc, extra=fields(run))
            book.stale.setdefault(run, [])
            return None
        if not self.settle_unsure(state):  # read back at last, after a failed append and an outage
            return None
        if state.finished:
            book.foreign.pop(run, None)
            book.finish(state)
            return None
        if not self.ownership.owns(state.owner) and not (adopt and self.ownership.takeable(state.owner)):
            book.foreign[run] = state.owner
            return None
        if adopt and self._park(state):
            return None
        book.drive(state)
        return state

    def _park(self, state: RunState) -> bool:
        """Leave a run alone, logging why, when this orchestrator cannot run what it still needs."""
        reason = self._unrunnable(state) if self._unrunnable is not None else None
        if reason is None:
            self.book.parked.pop(state.run, None)
            return False
        if state.run not in self.book.parked:
            log.error("run %s is parked: %s", state.run, reason, extra=fields(state.run))
        self.book.parked[state.run] = RunParked(f"run {state.run} is parked: {reason}")
        self.book.fail_waiters(state.run, self.book.parked[state.run])
        return True

    def settle_unsure(self, state: RunState) -> bool:
        """A submission whose append failed is in the log after all: answer it from what landed. If
        only its head and some parts landed, offer it again to log the rest, and say so (False)."""
        submit = self.book.unsure.pop(state.run, None)
        if submit is None:
            return True
        if state.digest != submit.submission.digest:
            refuse(submit, IdempotencyConflict(submit.submission.key or "", submit.run))
        elif state.parts_due and _a_prefix_of(state, submit) and submit.tries < SUBMIT_TRIES:
            submit.tries += 1
            self.book.completing[state.run] = state
            self._put(submit)
            return False
        else:
            settle(submit.future, result=submit.run)
        return True

    def not_in_log(self, run: str, exc: RunNotFound) -> None:
        """A submission whose append failed without landing is offered again, a few times."""
        submit = self.book.unsure.pop(run, None)
        if submit is not None and submit.refusal is None and submit.tries < SUBMIT_TRIES:
            self.book.waiters.pop(run, None)
            submit.tries += 1
            self._put(submit)
            return
        error: BaseException = exc
        if submit is not None:
            error = submit.refusal or StoreUnavailable(
                f"run {run} could not be logged after {SUBMIT_TRIES} tries"
            )
        self.book.fail_waiters(run, error)
        if submit is not None:
            settle(submit.future, error=error)

    def retry_stale(self) -> None:
        """Read again the runs whose log could not be read; offer the outcomes they held back."""
        if not self.book.stale:
            return
        held = self.book.stale
        self.book.stale = {}
        self.reload(list(held))
        for run, outcomes in held.items():
            if run in self.book.stale:
                self.book.stale[run].extend(outcomes)
                continue
            for outcome in outcomes:
                self._put(outcome)

    def append_failed(self, turn: Turn, exc: Exception) -> None:
        """Reload what landed; offer the turn's outcomes again; answer submits by what the log holds."""
        log.warning("append of a turn failed (%r); reloading its runs from the log", exc)
        self.book.inflight.update(outcome.attempt_id for outcome in turn.outcomes)
        self.book.unsure.update((submit.run, submit) for submit in turn.submits)
        self.reload(list(turn.touched))
        for item in [*turn.outcomes, *turn.cancels]:
            self._put(item)
        for submit in turn.submits:
            landed = self.book.known(submit.run) or self.peek(submit.run)
            if landed is not None:  # it landed after all, or another writer's run holds the id
                self.settle_unsure(landed)

    def abandon(self, turn: Turn, exc: Exception) -> None:
        """A turn raised before its append: forget its tentative events and start from the log."""
        self.reload(list(turn.touched))
        for submit in turn.submits:
            if submit.run not in self.book.live:
                self.book.fail_waiters(submit.run, exc)
                settle(submit.future, error=exc)
        for cancel in turn.cancels:
            settle(cancel.future, error=exc)


def _a_prefix_of(state: RunState, submit: Submit) -> bool:
    """Whether the run's log is the head and first parts of this very submission, nothing else."""
    return state.seq == 1 + len(submit.submission.parts) - state.parts_due
