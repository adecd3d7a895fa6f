"""Turning decisions into events of a turn, and appending a turn as one batch.

``apply`` folds each new event into the run at once, so the next decision of
the same turn sees it; nothing is acted on until ``append`` has made the whole
turn durable. A store that refuses some events for what they hold (not an
outage) names the runs they belong to; those are split off, so the other runs
of the turn are appended and go on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from ..core import events as ev
from ..core.errors import EvenflowError, EventRefused, PayloadError
from ..core.events import Event
from ..core.evolve import evolve
from ..core.planner import Draft, decide, envelope_for
from ..core.ports import Clock, EventStore
from ..core.state import RunState
from .messages import Turn

MAX_DECISIONS = 10_000
"""Rounds of ``decide`` for one run in one turn before the engine calls it a bug."""
MAX_DRAFTS = 2_000
"""Drafts one run applies in one turn; a run with more to decide goes on next turn. A fan-out of
100,000 calls is sent out in slices, so what a turn holds (events, envelopes, outcomes coming back)
stays bounded however wide a group is, and other runs' turns are not held up behind it."""
OnRefused = Callable[[Turn, EventRefused], None]
"""Told of the runs split off a turn because the store refused some of their events."""


Isolated = Callable[[str | None], bool]
"""Whether a route's executor runs commands outside the orchestrator's process."""


@dataclass
class AppendTimes:
    """How long the store's appends took (the durable write each turn waits for): for ``/metrics``."""

    count: int = 0
    total_s: float = 0.0
    max_s: float = 0.0

    def add(self, seconds: float) -> None:
        self.count += 1
        self.total_s += seconds
        self.max_s = max(self.max_s, seconds)


class Journal:
    def __init__(self, store: EventStore, clock: Clock, by: str, isolated: Isolated) -> None:
        self.store = store
        self.clock = clock
        self.by = by
        self._isolated = isolated
        self.times = AppendTimes()

    def apply(self, state: RunState, draft: Draft, turn: Turn, *, causation: str | None) -> None:
        """Make ``draft`` the run's next event, in memory and in ``turn``."""
        data = draft.data
        if draft.type == ev.COMMAND_DISPATCHED and self._isolated(
            state.nodes[draft.node or ""].spec.get("route")
        ):
            data = {**data, "isolated": True}  # its command cannot be what stops this process
        event = Event(
            run=state.run,
            seq=state.seq + 1,
            type=draft.type,
            at=self.clock.now(),
            node=draft.node,
            attempt=draft.attempt,
            command=draft.command,
            data=data,
            by=self.by,
            causation=causation,
            correlation=state.correlation or state.run,
        )
        evolve(state, event)
        turn.events[state.run].append(event)
        turn.touched[state.run] = state
        if event.type == ev.COMMAND_DISPATCHED:
            envelope = envelope_for(state, state.nodes[draft.node or ""])
            turn.dispatches[envelope.route or "default"].append(envelope)
        elif event.type in ev.RUN_TERMINAL:
            turn.finished.append(state)

    def advance(self, state: RunState, now: datetime, turn: Turn) -> bool:
        """Decide and apply until the run has nothing more to decide right now, or ``MAX_DRAFTS``
        are applied; True in that case: the run may have more, to advance again next turn."""
        budget = MAX_DRAFTS
        for _ in range(MAX_DECISIONS):
            drafts = decide(state, now, budget)
            if not drafts:
                return False
            cause = ev.event_id(state.run, state.seq)
            for draft in drafts:
                self.apply(state, draft, turn, causation=cause)
            budget -= len(drafts)
            if budget <= 0:
                return True
        raise EvenflowError(f"run {state.run} keeps deciding without end; this is a bug in evenflow")

    def append(self, turn: Turn, on_refused: OnRefused) -> None:
        """Append the turn; runs whose events the store refuses go to ``on_refused``, the rest land."""
        while batch := turn.batch():
            try:
                began = time.perf_counter()
                self.store.append(batch)
                self.times.add(time.perf_counter() - began)
                return
            except EventRefused as exc:
                guilty = {ev.run_of(event_id) for event_id in exc.events} & set(turn.events)
                if not guilty:
                    raise
                on_refused(turn.split(guilty), exc)
            except PayloadError as exc:  # a store that cannot say which events: find them one by one
                refused = [bad for events in turn.events.values() if (bad := self._first_refused(events))]
                if refused:
                    guilty = {ev.run_of(event_id) for event_id in refused}
                    on_refused(turn.split(guilty), EventRefused(str(exc), events=refused))
                return

    def _first_refused(self, events: list[Event]) -> str | None:
        """Append one run's events one at a time; the id of the first the store refuses, if one is.

        The events before it stay written, as any prefix of a turn may: reloading the run finds them.
        """
        for event in events:
            try:
                self.store.append([event])
            except PayloadError:
                return event.id
        return None
