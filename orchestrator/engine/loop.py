"""The engine loop: one thread that folds, decides, appends, and only then acts.

Everything reaches it through one inbox: submissions, executor outcomes,
result watchers. Each turn takes all that is waiting, turns it into events
(``Intake``), asks ``decide`` what follows (``Journal``), appends the whole turn
in one batch and only then acts on it (``Committer``). An action never precedes
the event that records the decision behind it. The loop itself only moves
messages between these rooms; ARCHITECTURE.md maps them.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any

from ..core.codec import check_text
from ..core.envelope import Outcome
from ..core.errors import EvenflowError
from ..core.outcomes import CheckFlow
from ..core.ports import Clock, EventStore, Executor
from ..core.submitting import Submission
from .book import RunBook
from .commit import AppendHook, Committer
from .dispatch import Dispatcher
from .intake import Intake
from .journal import AppendTimes, Journal
from .messages import Abort, Cancel, Resume, Stop, Submit, Turn, Watch, answer_the_rest, refuse, settle
from .ownership import Leases, Ownership
from .recovery import Recovery, Unrunnable
from .takeover import Takeover
from .timers import Backoff, earliest, until_due

log = logging.getLogger("evenflow.engine")

MAX_TURN = 20_000
"""Inbox items taken in one turn: bounds the size of one append batch."""
MAX_REASON = 4_000
"""Characters of a cancel reason."""
STOPPING = "the orchestrator is stopping; submit to another or after restart"


class Engine:
    def __init__(
        self,
        store: EventStore,
        executors: Mapping[str, Executor],
        *,
        clock: Clock,
        by: str,
        check_flow: CheckFlow | None = None,
        on_append: AppendHook | None = None,
        leases: Leases | None = None,
        unrunnable: Unrunnable | None = None,
        adopt: bool = True,
    ) -> None:
        self.store = store
        self.clock = clock
        self.by = by
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        put = self._inbox.put
        self.book = RunBook()
        self.backoff = Backoff()
        self.ownership = Ownership(by, leases)
        self.dispatcher = Dispatcher(executors, self.book.inflight, put, by)
        journal = Journal(store, clock, by, self.dispatcher.isolated)
        self.recovery = Recovery(store, self.book, self.ownership, self.dispatcher, put, unrunnable)
        self.intake = Intake(self.book, journal, self.recovery, self.ownership, check_flow)
        self.committer = Committer(
            self.book, journal, self.recovery, self.dispatcher, self.backoff, put, on_append
        )
        self.takeover = Takeover(
            store, self.book, self.ownership, self.recovery, journal, self.committer.commit, adopt=adopt
        )
        self._journal = journal
        self._held: list[Any] = []
        """Inbox items that wait out a backoff (they need the store)."""
        self._stopping = False
        self._drain_until: float | None = None
        """While draining (a monotonic deadline): outcomes are logged, nothing new is decided."""
        self._thread = threading.Thread(target=self._loop, name="evenflow-engine", daemon=True)

    @property
    def executors(self) -> dict[str, Executor]:
        return self.dispatcher.executors

    @property
    def append_times(self) -> AppendTimes:
        """How long the store's appends took so far (read from any thread; a snapshot may tear)."""
        return self._journal.times

    # --- the outside world -----------------------------------------------------------------

    def start(self, registry: Any) -> None:
        self.dispatcher.start(registry)
        if self.ownership.leases is not None:
            self.ownership.leases.tick()
        self.takeover.at_start()
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def submit(self, submission: Submission, *, watcher: Future[Any] | None = None) -> Future[str]:
        """Append ``run.submitted``; the future resolves once it is durable.

        A ``watcher`` given here gets the run's result, as from ``watch``, without
        a second trip through the inbox (what ``Orchestrator.run`` wants). A keyed
        submission whose run already holds the same digest is answered with that
        run; another digest is an ``IdempotencyConflict``.
        """
        future: Future[str] = Future()
        self._inbox.put(Submit(submission, future, watcher))
        return future

    def cancel(self, run: str, reason: str) -> Future[None]:
        """Append ``run.cancelled``; from then on nothing of the run is dispatched."""
        check_text(reason, "a cancel reason", max_chars=MAX_REASON, empty=True)
        future: Future[None] = Future()
        self._inbox.put(Cancel(run, reason, future))
        return future

    def resume(self, run: str) -> Future[None]:
        """Drive ``run`` from now on (``Takeover.resume``); the future says whether it could."""
        future: Future[None] = Future()
        self._inbox.put(Resume(run, future))
        return future

    def watch(self, run: str) -> Future[Any]:
        """A future that resolves with the run's result, or raises RunFailed."""
        future: Future[Any] = Future()
        self._inbox.put(Watch(run, future))
        return future

    def close(self, timeout: float | None = 30.0, *, drain_s: float = 0.0) -> None:
        """Stop after logging what is waiting; with ``drain_s``, first wait that long at most for the
        outcomes of attempts in flight (dispatching nothing new), so a restart has less to send again."""
        if self._thread.is_alive():
            self._inbox.put(Stop(drain_s))
            self._thread.join(None if timeout is None else timeout + drain_s)
        leases = self.ownership.leases
        if leases is not None and not self._thread.is_alive():
            try:  # our runs are free for others at once, not after a lease period
                leases.release()
            except Exception:
                log.warning("could not release the lease; others take the runs over when it expires")
        self.dispatcher.close()

    # --- the loop --------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopping:
            turn = Turn()
            try:
                if self.backoff.left_s() > 0:
                    self._hold(self._take(self.backoff.left_s()))
                else:
                    self._round(turn)
            except Exception as exc:  # the engine must outlive any one bad turn
                log.exception("engine turn failed; its runs are reloaded from the log")
                self.recovery.abandon(turn, exc)
            if self._drain_until is not None and (
                not self.book.inflight or time.monotonic() >= self._drain_until
            ):
                self._stopping = True
        if self.book.inflight:
            log.info(
                "stopped with %d attempts in flight; a restart sends them again", len(self.book.inflight)
            )
        for item in self._held:
            self._inbox.put(item)
        answer_the_rest(self._inbox, self.book.waiters)

    def _round(self, turn: Turn) -> None:
        self.recovery.retry_stale()
        if self._drain_until is None:
            self.takeover.patrol()
        held, self._held = self._held, []
        self._turn([*held, *self._take(0.0 if held else self._wait_s())], turn)

    def _hold(self, items: list[Any]) -> None:
        """While the store gets its pause: serve from memory what needs no store, keep the rest in order."""
        for item in items:
            if isinstance(item, Watch) and self.book.known(item.run) is not None:
                self.intake.watch(item)
            else:
                self._held.append(item)

    def _take(self, wait_s: float | None) -> list[Any]:
        try:
            items = [self._inbox.get(timeout=wait_s)]
        except queue.Empty:
            return []
        while len(items) < MAX_TURN:
            try:
                items.append(self._inbox.get_nowait())
            except queue.Empty:
                break
        return items

    def _wait_s(self) -> float | None:
        """How long the inbox may keep us waiting: until the next timer, or not at all."""
        if self._drain_until is not None:
            return max(0.0, min(0.05, self._drain_until - time.monotonic()))
        if self.book.dirty:
            return 0.0
        leases = self.ownership.leases
        return earliest(
            until_due(self.book.next_due(), self.clock.now()),
            self.backoff.pause_s() if self.book.stale else None,
            leases.wait_s() if leases is not None else None,
        )

    def _turn(self, items: list[Any], turn: Turn) -> None:
        for item in items:
            self._take_in(item, turn)
        if self._drain_until is None:
            self._advance(turn)
        else:
            self.book.dirty.clear()
        self.committer.commit(turn)

    def _advance(self, turn: Turn) -> None:
        """Decide for the runs the turn touched, reloaded ones and those with a timer due. A run with
        more to decide than one turn takes (a wide fan-out) goes on next turn, which does not wait."""
        now, book = self.clock.now(), self.book
        more = []
        for state in list(book.live.values()):
            due = state.next_due()
            moved = state.run in turn.touched or state.run in book.dirty or (due is not None and due <= now)
            if moved and self._journal.advance(state, now, turn):
                more.append(state.run)
        book.dirty.clear()
        book.dirty.update(more)

    def _take_in(self, item: Any, turn: Turn) -> None:
        if isinstance(item, Outcome):
            self.intake.outcome(item, turn)
        elif isinstance(item, Submit):
            if self._drain_until is not None:
                refuse(item, EvenflowError(STOPPING))
            else:
                self.intake.submit(item, turn)
        elif isinstance(item, Watch):
            self.intake.watch(item)
        elif isinstance(item, Cancel):
            self.intake.cancel(item, turn)
        elif isinstance(item, Abort):
            self.intake.abort(item, turn)
        elif isinstance(item, Resume):
            try:
                if self._drain_until is not None:
                    raise EvenflowError(STOPPING)
                self.takeover.resume(item.run)
            except Exception as exc:
                settle(item.future, error=exc)
            else:
                settle(item.future)
        elif isinstance(item, Stop):
            self._stop(item)

    def _stop(self, item: Stop) -> None:
        inflight = self.book.inflight
        if item.drain_s > 0 and inflight:
            log.info("draining: waiting up to %gs for %d attempts in flight", item.drain_s, len(inflight))
            self._drain_until = time.monotonic() + item.drain_s
        else:
            self._stopping = True
