"""Taking runs over: at start, and when another orchestrator's lease lapses.

Ownership is logged first (``owner.changed``, with leases), fencing out a
former owner that is only paused. Then each attempt the log shows in flight is
ended as ``Interrupted`` (reason ``lost``): its process is gone, or it answers
an orchestrator that no longer drives the run. The planner sends it again as a
new attempt, and a late result of the old one is recognised as late. Retry
timers keep their logged due times.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..core import events as ev
from ..core.envelope import ErrorInfo
from ..core.errors import Interrupted, InvalidRunState, StoreUnavailable
from ..core.planner import Draft
from ..core.ports import EventStore
from ..core.state import RunState
from .book import RunBook
from .journal import Journal
from .messages import Turn
from .ownership import Ownership
from .recovery import Recovery

log = logging.getLogger("evenflow.engine")


class Takeover:
    def __init__(
        self,
        store: EventStore,
        book: RunBook,
        ownership: Ownership,
        recovery: Recovery,
        journal: Journal,
        commit: Callable[[Turn], None],
        *,
        adopt: bool = True,
    ) -> None:
        self.store = store
        self.book = book
        self.ownership = ownership
        self.recovery = recovery
        self.journal = journal
        self._commit = commit
        self.adopt = adopt
        """Whether to drive runs this engine did not submit (resume, serve), or only its own (``run``)."""

    def at_start(self) -> None:
        """Take up the unfinished runs in the store, unless this engine drives only its own."""
        if self.adopt:
            self.take_over(self.store.unfinished_runs())

    def take_over(self, runs: list[str]) -> None:
        """Drive these runs from now on: log ownership, end the attempts they show in flight."""
        turn = Turn()
        for state in self.recovery.reload(runs, resend=False, adopt=True):
            if not self.ownership.owns(state.owner):
                data = {"owner": self.ownership.by, "previous": state.owner}
                self.journal.apply(state, Draft(ev.OWNER_CHANGED, data=data), turn, causation=None)
            self._interrupt(state, turn)
        if turn.events:
            log.info("took over runs: %d events of ownership and interrupted attempts", len(turn.batch()))
        self._commit(turn)

    def resume(self, run: str) -> None:
        """Drive ``run`` from now on, if it can be: ``RunParked`` while its commands are still missing
        here, ``InvalidRunState`` if it ended or a live orchestrator drives it, ``RunNotFound``."""
        book = self.book
        if run in book.live:
            return
        if run in book.stale or run in book.completing:
            raise StoreUnavailable(
                f"run {run} cannot be read now; this orchestrator goes on with it by itself"
            )
        book.parked.pop(run, None)  # look again: a worker with its commands may have come since
        self.take_over([run])
        if run in book.live:
            return
        if run in book.parked:
            raise book.parked[run]
        if run in book.foreign:
            raise InvalidRunState(
                f"run {run} is driven by {book.foreign[run]}, whose lease is live; it goes on there, "
                "or here once that lease lapses"
            )
        state = self.recovery.load(run)  # RunNotFound for no such run
        raise InvalidRunState(
            f"run {run} already {state.status}; nothing to resume (`evenflow retry` runs it again)"
        )

    def _interrupt(self, state: RunState, turn: Turn) -> None:
        for node in state.running():
            exc = Interrupted(f"the orchestrator stopped while attempt {node.attempt} was in flight")
            error = ErrorInfo.from_exception(exc, reason="lost")
            draft = Draft(
                ev.COMMAND_FAILED, node.path, node.attempt, node.spec["command"], {"error": error.to_doc()}
            )
            self.journal.apply(state, draft, turn, causation=None)

    def patrol(self) -> None:
        """Every renew period: renew our lease, take runs whose owner's lapsed, follow watched runs."""
        leases = self.ownership.leases
        if leases is None or not leases.due():
            return
        book = self.book
        try:
            leases.tick()
            if not leases.scan_due(set(book.foreign.values())) and not book.waiters:
                return
            unfinished = [run for run in self.store.unfinished_runs() if run not in book.live]
        except Exception as exc:
            log.warning("could not renew the lease or list unfinished runs (%r); will try again", exc)
            return
        known = set(unfinished)
        book.foreign = {run: owner for run, owner in book.foreign.items() if run in known}
        free = [
            run
            for run in unfinished
            if run not in book.stale
            and run not in book.parked
            and (run not in book.foreign or leases.takeable(book.foreign[run]))
        ]
        if free and self.adopt:
            self.take_over(free)
        followed = [run for run in book.waiters if run not in book.live and run not in book.recent]
        for run in [run for run in followed if run not in known and run not in book.unsure]:
            self.recovery.reload([run])  # another orchestrator finished it: answer its watchers from the log
