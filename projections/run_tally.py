"""The run-status read model folded in Python, one event at a time: what the engine's hook runs.

Pure and cheap: the engine calls it with every durable batch, so it touches
only counters and small sets. It gives, field for field, what
``run_status_pipeline`` computes from the whole log (a property test holds them
together). Node counts move by the transition each event implies, so no
per-node memory is needed: a dispatch of attempt 1 adds a running node, a later
attempt moves one from retrying to running, and so on (see ``run_status.py``
for the states).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from orchestrator.core import events as ev
from orchestrator.core.events import Event

from .run_status import MAX_LISTED, NODE_STATES, RUN_ENDS, RUNNING, UNSETTLED, RunStatus

_MILLISECOND = timedelta(milliseconds=1)


@dataclass(slots=True)
class RunTally:
    """The mutable twin of ``RunStatus``, for folding events into."""

    run: str
    flow: str | None = None
    state: str = RUNNING
    submitted_at: datetime | None = None
    ended_at: datetime | None = None
    nodes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(NODE_STATES, 0))
    attempts: int = 0
    commands: set[str] = field(default_factory=set)
    error_types: set[str] = field(default_factory=set)
    result: Any = None
    error: list[dict[str, Any]] | None = None
    last_seq: int = 0

    def follows(self, events: list[Event]) -> bool:
        """True if ``events`` continue this tally with no gap (their seqs are last_seq+1, +2, ...)."""
        return all(event.seq == self.last_seq + offset for offset, event in enumerate(events, start=1))

    def add(self, event: Event) -> None:
        """Fold one event in; the caller checks with ``follows`` that it is the next one."""
        kind = event.type
        nodes = self.nodes
        if kind == ev.COMMAND_DISPATCHED:
            self.attempts += 1
            if event.command:
                _keep_first(self.commands, event.command)
            if event.attempt != 1:
                nodes["retrying"] -= 1
            nodes["running"] += 1
        elif kind == ev.COMMAND_SUCCEEDED:
            nodes["running"] -= 1
            nodes["succeeded"] += 1
        elif kind == ev.COMMAND_FAILED:
            nodes["running"] -= 1
            nodes["retrying"] += 1
            error_type = (event.data.get("error") or {}).get("type")
            if error_type:
                _keep_first(self.error_types, error_type)
        elif kind == ev.COMMAND_EXPANDED:
            nodes["running"] -= 1
            nodes["expanded"] += 1
        elif kind == ev.NODE_FAILED:
            if event.attempt:  # a node given up before any dispatch was never counted
                nodes["retrying"] -= 1
                nodes["failed"] += 1
        elif kind == ev.RUN_SUBMITTED:
            self.submitted_at = event.at
            self.flow = event.data.get("name")
        elif kind in RUN_ENDS:
            self._ended(event)
        self.last_seq = event.seq

    def _ended(self, event: Event) -> None:
        self.state = RUN_ENDS[event.type]
        self.ended_at = event.at
        if event.type == ev.RUN_SUCCEEDED:
            self.result = event.data.get("result")
        elif event.type == ev.RUN_FAILED:
            self.error = event.data.get("failures")
        for state in UNSETTLED:
            self.nodes["cancelled"] += self.nodes[state]
            self.nodes[state] = 0

    def status(self) -> RunStatus:
        duration = None
        if self.ended_at is not None and self.submitted_at is not None:
            duration = ((self.ended_at - self.submitted_at) // _MILLISECOND) / 1000
        return RunStatus(
            run=self.run,
            flow=self.flow,
            state=self.state,
            submitted_at=self.submitted_at,
            ended_at=self.ended_at,
            duration_s=duration,
            nodes=dict(self.nodes),
            attempts=self.attempts,
            commands=tuple(sorted(self.commands)),
            error_types=tuple(sorted(self.error_types)),
            result=self.result,
            error=self.error,
            last_seq=self.last_seq,
        )

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> RunTally:
        """Continue from a stored read-model document."""
        status = RunStatus.from_doc(doc)
        return cls(
            run=status.run,
            flow=status.flow,
            state=status.state,
            submitted_at=status.submitted_at,
            ended_at=status.ended_at,
            nodes=dict(status.nodes),
            attempts=status.attempts,
            commands=set(status.commands),
            error_types=set(status.error_types),
            result=status.result,
            error=status.error,
            last_seq=status.last_seq,
        )


def _keep_first(names: set[str], name: str) -> None:
    """Add ``name``, keeping only the ``MAX_LISTED`` first names in sorted order.

    The first k of a set and a name are the first k of the first k and the
    name, so a tally continued from a stored document (which lists only the
    first k) lists what a fold of the whole log would.
    """
    names.add(name)
    if len(names) > MAX_LISTED:
        names.remove(max(names))


def tally(run: str, events: Iterable[Event]) -> RunStatus:
    """The status of ``run`` folded from its events in seq order (what a fresh projector computes)."""
    folded = RunTally(run)
    for event in events:
        folded.add(event)
    return folded.status()
