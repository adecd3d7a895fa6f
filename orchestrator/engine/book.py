"""The book of runs the engine holds in memory: which it drives, which just ended, who waits on what.

Every collection the engine keeps about runs lives here, so the other rooms
(intake, recovery, takeover, dispatch) share one picture and none keeps a
private copy that could drift from it.
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..core.envelope import Outcome
from ..core.errors import RunParked
from ..core.state import RunState
from .messages import Submit, resolve, settle

RECENT_RUNS = 1_000
"""Finished runs kept in memory, so late outcomes and watchers need no store read."""


@dataclass(slots=True)
class RunBook:
    live: dict[str, RunState] = field(default_factory=dict)
    """Unfinished runs this engine drives."""
    recent: OrderedDict[str, RunState] = field(default_factory=OrderedDict)
    """The last ``RECENT_RUNS`` runs that ended here."""
    waiters: defaultdict[str, list[Future[Any]]] = field(default_factory=lambda: defaultdict(list))
    """Futures to answer with a run's result when it ends."""
    inflight: set[str] = field(default_factory=set)
    """Attempts sent to an executor whose outcome has not arrived."""
    dirty: set[str] = field(default_factory=set)
    """Runs reloaded from the log, to be advanced on the next turn."""
    stale: dict[str, list[Outcome]] = field(default_factory=dict)
    """Runs whose log could not be read, with the outcomes that arrived meanwhile."""
    unsure: dict[str, Submit] = field(default_factory=dict)
    """Submissions whose append failed: offered again if the log turns out not to hold them."""
    completing: dict[str, RunState] = field(default_factory=dict)
    """Runs whose submission landed in part (an append failed midway), left undriven until their
    ``Submit``, offered again, logs the rest of its parts."""
    parked: dict[str, RunParked] = field(default_factory=dict)
    """Runs taken over but left untouched, with the reason: another orchestrator may drive them."""
    foreign: dict[str, str | None] = field(default_factory=dict)
    """Unfinished runs another orchestrator drives, with their owner."""
    converted: set[str] = field(default_factory=set)
    """Attempts whose outcome was turned into a failure because the log refused what they reported."""
    aborted: set[str] = field(default_factory=set)
    """Runs ended failed because the log refused their own decisions."""

    def known(self, run: str) -> RunState | None:
        """The run as held here (driven, or ended recently), without a store read."""
        return self.live.get(run) or self.recent.get(run)

    def drive(self, state: RunState) -> None:
        """Drive ``state`` from now on, advancing it on the next turn."""
        self.foreign.pop(state.run, None)
        self.live[state.run] = state
        self.dirty.add(state.run)

    def finish(self, state: RunState) -> None:
        """The run ended: keep it among the recent ones and answer whoever waits on it."""
        self.live.pop(state.run, None)
        self.recent[state.run] = state
        while len(self.recent) > RECENT_RUNS:
            self.recent.popitem(last=False)
        for future in self.waiters.pop(state.run, []):
            resolve(future, state)

    def watch(self, state: RunState, future: Future[Any]) -> None:
        if state.finished:
            resolve(future, state)
        else:
            self.waiters[state.run].append(future)

    def fail_waiters(self, run: str, exc: BaseException) -> None:
        for future in self.waiters.pop(run, []):
            settle(future, error=exc)

    def next_due(self) -> datetime | None:
        """The earliest timer (retry, timeout) of the runs driven here."""
        due = [when for state in self.live.values() if (when := state.next_due()) is not None]
        return min(due) if due else None
