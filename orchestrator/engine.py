"""The engine: one thread that folds, decides, appends, and only then acts.

Everything reaches it through one inbox: submissions, executor outcomes,
result watchers. Each turn takes all that is waiting, turns it into events,
asks ``decide`` what follows, appends the whole turn in one batch (group
commit), and then dispatches envelopes and answers waiters. An action never
precedes the event that records the decision behind it.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .core import events as ev
from .core.envelope import Envelope, Outcome
from .core.errors import EvenflowError, Failure, RunCancelled, RunFailed, RunNotFound
from .core.events import Event
from .core.evolve import evolve, fold
from .core.outcomes import CheckFlow, record_outcome
from .core.planner import Draft, decide, envelope_for
from .core.ports import Clock, EventStore, Executor
from .core.state import NO_INPUT, RunState

log = logging.getLogger("evenflow.engine")

RECENT_RUNS = 1_000
"""Finished runs kept in memory, so late outcomes and watchers need no store read."""
MAX_TURN = 20_000
"""Inbox items taken in one turn: bounds the size of one append batch."""
STORE_BACKOFF_S = (0.05, 0.2, 1.0, 2.0)


@dataclass(slots=True)
class _Submit:
    run: str
    flow: dict[str, Any]
    input: Any
    name: str | None
    future: Future[str]
    watcher: Future[Any] | None = None


@dataclass(slots=True)
class _Watch:
    run: str
    future: Future[Any]


class _Stop:
    pass


@dataclass(slots=True)
class _Turn:
    """What one turn appends, and what it does once the append is durable."""

    events: dict[str, list[Event]] = field(default_factory=lambda: defaultdict(list))
    dispatches: dict[str, list[Envelope]] = field(default_factory=lambda: defaultdict(list))
    after: list[Callable[[], None]] = field(default_factory=list)
    touched: dict[str, RunState] = field(default_factory=dict)
    outcomes: list[Outcome] = field(default_factory=list)
    submits: list[_Submit] = field(default_factory=list)


class Engine:
    def __init__(
        self,
        store: EventStore,
        executors: Mapping[str, Executor],
        *,
        clock: Clock,
        by: str,
        check_flow: CheckFlow | None = None,
    ) -> None:
        self.store = store
        self.executors = dict(executors)
        self.clock = clock
        self.by = by
        self._check_flow = check_flow
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._live: dict[str, RunState] = {}
        self._recent: OrderedDict[str, RunState] = OrderedDict()
        self._waiters: dict[str, list[Future[Any]]] = defaultdict(list)
        self._inflight: set[str] = set()
        self._thread = threading.Thread(target=self._loop, name="evenflow-engine", daemon=True)
        self._stopping = False
        self._failures = 0
        self._dirty: set[str] = set()
        """Runs reloaded from the log, to be advanced on the next turn."""

    # --- the outside world -----------------------------------------------------------------

    def start(self, registry: Any) -> None:
        for executor in self.executors.values():
            executor.start(registry, self._inbox.put)
        self._reload(self.store.unfinished_runs())
        self._thread.start()

    def submit(
        self,
        run: str,
        flow: dict[str, Any],
        *,
        input: Any = NO_INPUT,
        name: str | None = None,
        watcher: Future[Any] | None = None,
    ) -> Future[str]:
        """Append ``run.submitted``; the future resolves once it is durable.

        A ``watcher`` given here gets the run's result, as from ``watch``, without
        a second trip through the inbox (what ``Orchestrator.run`` wants).
        """
        future: Future[str] = Future()
        self._inbox.put(_Submit(run, flow, input, name, future, watcher))
        return future

    def watch(self, run: str) -> Future[Any]:
        """A future that resolves with the run's result, or raises RunFailed."""
        future: Future[Any] = Future()
        self._inbox.put(_Watch(run, future))
        return future

    def close(self, timeout: float | None = 30.0) -> None:
        if self._thread.is_alive():
            self._inbox.put(_Stop())
            self._thread.join(timeout)
        for executor in self.executors.values():
            executor.close()

    # --- the loop --------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopping:
            items = self._take()
            try:
                self._turn(items)
            except Exception:  # the engine must outlive any one bad turn
                log.exception("engine turn failed; runs will be reloaded from the log")
                self._reload(list(self._live))

    def _take(self) -> list[Any]:
        try:
            items = [self._inbox.get(timeout=self._seconds_to_next_timer())]
        except queue.Empty:
            return []
        while len(items) < MAX_TURN:
            try:
                items.append(self._inbox.get_nowait())
            except queue.Empty:
                break
        return items

    def _seconds_to_next_timer(self) -> float | None:
        due = [when for state in self._live.values() if (when := state.next_due()) is not None]
        if not due:
            return None
        return max(0.0, (min(due) - self.clock.now()).total_seconds())

    def _turn(self, items: list[Any]) -> None:
        turn = _Turn()
        for item in items:
            if isinstance(item, Outcome):
                self._on_outcome(item, turn)
            elif isinstance(item, _Submit):
                self._on_submit(item, turn)
            elif isinstance(item, _Watch):
                self._on_watch(item)
            elif isinstance(item, _Stop):
                self._stopping = True
        now = self.clock.now()
        for state in list(self._live.values()):
            due = state.next_due()
            if state.run in turn.touched or state.run in self._dirty or (due is not None and due <= now):
                self._advance(state, now, turn)
        self._dirty.clear()
        self._commit(turn)

    def _on_submit(self, item: _Submit, turn: _Turn) -> None:
        if item.run in self._live:
            item.future.set_exception(EvenflowError(f"run {item.run} is already live"))
            return
        state = RunState(item.run)
        data: dict[str, Any] = {"flow": item.flow, "name": item.name}
        if item.input is not NO_INPUT:
            data["input"] = item.input
        self._live[item.run] = state
        if item.watcher is not None:
            self._waiters[item.run].append(item.watcher)
        self._apply(state, Draft(ev.RUN_SUBMITTED, data=data), turn, causation=None)
        turn.submits.append(item)

    def _on_outcome(self, outcome: Outcome, turn: _Turn) -> None:
        self._inflight.discard(outcome.attempt_id)
        state = self._live.get(outcome.run) or self._recent.get(outcome.run)
        if state is None:
            log.info("outcome of %s arrived for a run not in memory; ignored", outcome.attempt_id)
            return
        turn.outcomes.append(outcome)
        for draft in record_outcome(state, outcome, self._check_flow):
            self._apply(state, draft, turn, causation=outcome.attempt_id)

    def _on_watch(self, item: _Watch) -> None:
        state = self._live.get(item.run) or self._recent.get(item.run)
        if state is None:
            try:
                state = self._load(item.run)
            except EvenflowError as exc:
                item.future.set_exception(exc)
                return
        if state.finished:
            _resolve(item.future, state)
        else:
            self._waiters[item.run].append(item.future)

    def _advance(self, state: RunState, now: datetime, turn: _Turn) -> None:
        """Decide and apply until the run has nothing more to decide right now."""
        for _ in range(10_000):
            drafts = decide(state, now)
            if not drafts:
                return
            cause = ev.event_id(state.run, state.seq)
            for draft in drafts:
                self._apply(state, draft, turn, causation=cause)
        raise EvenflowError(f"run {state.run} keeps deciding without end; this is a bug in evenflow")

    def _apply(self, state: RunState, draft: Draft, turn: _Turn, *, causation: str | None) -> None:
        event = Event(
            run=state.run,
            seq=state.seq + 1,
            type=draft.type,
            at=self.clock.now(),
            node=draft.node,
            attempt=draft.attempt,
            command=draft.command,
            data=draft.data,
            by=self.by,
            causation=causation,
            correlation=state.run,
        )
        evolve(state, event)
        turn.events[state.run].append(event)
        turn.touched[state.run] = state
        if event.type == ev.COMMAND_DISPATCHED:
            envelope = envelope_for(state, state.nodes[draft.node or ""])
            turn.dispatches[envelope.route or "default"].append(envelope)
        elif event.type in ev.RUN_TERMINAL:
            turn.after.append(lambda: self._finished(state))

    # --- after the append ------------------------------------------------------------------

    def _commit(self, turn: _Turn) -> None:
        batch = [event for events in turn.events.values() for event in events]
        if batch:
            try:
                self.store.append(batch)
            except Exception as exc:
                self._append_failed(turn, exc)
                return
            self._failures = 0
        for route, envelopes in turn.dispatches.items():
            self._send(route, envelopes)
        for submit in turn.submits:
            submit.future.set_result(submit.run)
        for action in turn.after:
            action()

    def _send(self, route: str, envelopes: list[Envelope]) -> None:
        self._inflight.update(envelope.attempt_id for envelope in envelopes)
        self.executors[route].dispatch(envelopes)

    def _finished(self, state: RunState) -> None:
        self._live.pop(state.run, None)
        self._recent[state.run] = state
        while len(self._recent) > RECENT_RUNS:
            self._recent.popitem(last=False)
        for future in self._waiters.pop(state.run, []):
            _resolve(future, state)

    def _append_failed(self, turn: _Turn, exc: Exception) -> None:
        """The log is the truth: reload what landed, offer the rest again after a pause."""
        self._failures += 1
        delay = STORE_BACKOFF_S[min(self._failures, len(STORE_BACKOFF_S)) - 1]
        log.warning("append of a turn failed (%r); reloading from the log, next try in %.2fs", exc, delay)
        self._reload(list(turn.touched))
        for submit in turn.submits:
            if submit.run in self._live or self.store.read(submit.run):
                submit.future.set_result(submit.run)
            else:
                submit.future.set_exception(exc)
                for watcher in self._waiters.pop(submit.run, []):
                    watcher.set_exception(exc)
        for outcome in turn.outcomes:
            self._inbox.put(outcome)
        threading.Event().wait(delay)

    def _reload(self, runs: list[str]) -> None:
        """Rebuild runs from the log; resend attempts that are logged but not in flight here."""
        for run in runs:
            try:
                state = self._load(run)
            except EvenflowError as exc:
                log.error("run %s is parked: %s", run, exc)
                self._live.pop(run, None)
                continue
            if state.finished:
                self._finished(state)
                continue
            self._live[run] = state
            self._dirty.add(run)
            for node in state.running():
                envelope = envelope_for(state, node)
                if envelope.attempt_id not in self._inflight:
                    self._send(envelope.route or "default", [envelope])

    def _load(self, run: str) -> RunState:
        events = self.store.read(run)
        if not events:
            raise RunNotFound(run)
        return fold(run, events)


def _resolve(future: Future[Any], state: RunState) -> None:
    if future.done():
        return
    if state.status == "succeeded":
        future.set_result(state.result)
        return
    failures = [Failure.from_doc(doc) for doc in state.failures]
    kind = RunCancelled if state.status == "cancelled" else RunFailed
    future.set_exception(kind(state.run, failures))
