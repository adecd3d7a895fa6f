"""Cancel and retry through the log alone, for when no orchestrator here drives the run.

An orchestrator that owns the run notices on its next append to it: that
append conflicts with the event written here, it folds the run again and finds
it cancelled (or finds the new run to take). So a cancellation written here
stops all dispatching of the run, however the owner was paused, because the
owner dispatches nothing it has not appended first.
"""

from __future__ import annotations

import os
import socket

from .core import events as ev
from .core.errors import ConcurrencyConflict, IdempotencyConflict, InvalidRunState, RunNotFound
from .core.events import Event, utcnow
from .core.evolve import fold
from .core.ports import EventStore
from .core.retry_run import retry_submission

TRIES = 20
"""Appends tried while the owner keeps appending to the same run."""


def by() -> str:
    return f"cli:{socket.gethostname()}:{os.getpid()}"


def cancel_run(store: EventStore, run: str, reason: str = "cancelled by request") -> bool:
    """Append ``run.cancelled``; False if the run was cancelled already. ``InvalidRunState`` if it ended."""
    for _ in range(TRIES):
        events = store.read(run)
        if not events:
            raise RunNotFound(run)
        state = fold(run, events)
        if state.status == "cancelled":
            return False
        if state.finished:
            raise InvalidRunState(f"run {run} already {state.status}; only a running run can be cancelled")
        event = Event(run, state.seq + 1, ev.RUN_CANCELLED, utcnow(), data={"reason": reason}, by=by())
        try:
            store.append([event])
            return True
        except ConcurrencyConflict:
            continue  # the owner appended meanwhile: judge again on the newer log
    raise ConcurrencyConflict(f"run {run} kept changing over {TRIES} tries to cancel it; try again")


def retry_run(store: EventStore, run: str) -> str:
    """Log the run that continues ``run`` (see ``core.retry_run``) and return its id; idempotent.

    The new run has no owner: the next orchestrator to start (``evenflow resume``,
    ``evenflow serve``) or to scan for runs without a live owner drives it.
    """
    events = store.read(run)
    if not events:
        raise RunNotFound(run)
    retry = retry_submission(run, events)
    new = retry.run
    for _ in range(TRIES):
        existing = store.read(new)
        if existing:
            if fold(new, existing).digest != retry.digest:
                raise IdempotencyConflict(retry.key or "", new)
            return new
        try:
            at = utcnow()
            logged = retry.logged()
            store.append(
                [
                    Event(new, seq, kind, at, data=data, by=None, correlation=new)
                    for seq, (kind, data) in enumerate(logged, 1)
                ]
            )
            return new
        except ConcurrencyConflict:
            continue
    raise ConcurrencyConflict(f"run {new} could not be logged over {TRIES} tries; try again")
