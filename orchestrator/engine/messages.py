"""What travels through the engine's inbox, what one turn gathers, and how futures are answered."""

from __future__ import annotations

import queue
from collections import defaultdict
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from ..core.envelope import Envelope, Outcome
from ..core.errors import EvenflowError, Failure, RunCancelled, RunFailed
from ..core.events import Event
from ..core.state import RunState
from ..core.submitting import Submission


@dataclass(slots=True)
class Submit:
    """A submission on its way into the log, and who is told once it is there."""

    submission: Submission
    future: Future[str]
    watcher: Future[Any] | None = None
    tries: int = 1
    refusal: BaseException | None = None
    """Why the store refused an append holding this submission; it is not offered again."""

    @property
    def run(self) -> str:
        return self.submission.run


@dataclass(slots=True)
class Cancel:
    run: str
    reason: str
    future: Future[None]


@dataclass(slots=True)
class Resume:
    """Drive a run now: one parked (its commands were missing), or one whose owner is gone."""

    run: str
    future: Future[None]


@dataclass(slots=True)
class Watch:
    run: str
    future: Future[Any]


@dataclass(slots=True)
class Abort:
    """End a run failed: the store refused one of its own decisions, so it cannot go on as it was."""

    run: str
    failure: dict[str, Any]


@dataclass(slots=True)
class Stop:
    drain_s: float = 0.0
    """How long to keep logging the outcomes of attempts in flight, dispatching nothing new."""


@dataclass(slots=True)
class Turn:
    """What one turn appends, and what it does once the append is durable."""

    events: dict[str, list[Event]] = field(default_factory=lambda: defaultdict(list))
    dispatches: dict[str, list[Envelope]] = field(default_factory=lambda: defaultdict(list))
    finished: list[RunState] = field(default_factory=list)
    touched: dict[str, RunState] = field(default_factory=dict)
    outcomes: list[Outcome] = field(default_factory=list)
    submits: list[Submit] = field(default_factory=list)
    cancels: list[Cancel] = field(default_factory=list)

    def batch(self) -> list[Event]:
        return [event for events in self.events.values() for event in events]

    def split(self, runs: set[str]) -> Turn:
        """Move everything of ``runs`` out of this turn into a new one."""
        part = Turn()
        for run in runs:
            part.events[run] = self.events.pop(run, [])
            if run in self.touched:
                part.touched[run] = self.touched.pop(run)
        for route, envelopes in list(self.dispatches.items()):
            part.dispatches[route] = [e for e in envelopes if e.run in runs]
            self.dispatches[route] = [e for e in envelopes if e.run not in runs]
        for name in ("finished", "outcomes", "submits", "cancels"):
            items = getattr(self, name)
            setattr(part, name, [item for item in items if _run_of(item) in runs])
            setattr(self, name, [item for item in items if _run_of(item) not in runs])
        return part


def _run_of(item: RunState | Outcome | Submit | Cancel) -> str:
    return item.run


def refuse(item: Submit, error: BaseException) -> None:
    """Answer a submission, and the caller waiting on its result, with ``error``."""
    settle(item.future, error=error)
    if item.watcher is not None:
        settle(item.watcher, error=error)


def settle(future: Future[Any], *, result: Any = None, error: BaseException | None = None) -> None:
    """Answer a future unless its caller already gave up on it (a cancelled async wait)."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def resolve(future: Future[Any], state: RunState) -> None:
    """Answer a watcher from a finished run: its result, or the failure naming every failed node."""
    if state.status == "succeeded":
        settle(future, result=state.result)
        return
    failures = [Failure.from_doc(doc) for doc in state.failures]
    kind = RunCancelled if state.status == "cancelled" else RunFailed
    settle(future, error=kind(state.run, failures))


def answer_the_rest(inbox: queue.SimpleQueue[Any], waiters: dict[str, list[Future[Any]]]) -> None:
    """On close: nobody may wait forever on an engine that stopped."""
    closed = EvenflowError("the orchestrator was closed before this run finished")
    while True:
        try:
            item = inbox.get_nowait()
        except queue.Empty:
            break
        if isinstance(item, Submit | Watch | Cancel | Resume):
            settle(item.future, error=closed)
        if isinstance(item, Submit) and item.watcher is not None:
            settle(item.watcher, error=closed)
    for futures in waiters.values():
        for future in futures:
            settle(future, error=closed)
    waiters.clear()
