"""What happened in a run, one row per command node, folded from its events."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from ..core import events as ev
from ..core.events import Event


@dataclass(slots=True)
class NodeRow:
    node: str
    command: str
    attempts: int = 0
    first_dispatch: datetime | None = None
    ended: datetime | None = None
    outcome: str = "running"

    @property
    def duration_s(self) -> float | None:
        if self.first_dispatch is None or self.ended is None:
            return None
        return (self.ended - self.first_dispatch).total_seconds()

    def to_json(self) -> dict[str, object]:
        return {
            "node": self.node,
            "command": self.command,
            "attempts": self.attempts,
            "duration_s": self.duration_s,
            "outcome": self.outcome,
        }


def node_rows(events: Iterable[Event]) -> list[NodeRow]:
    rows: dict[str, NodeRow] = {}
    for event in events:
        if event.node is None or event.type == ev.OUTCOME_IGNORED:
            continue
        if event.type == ev.COMMAND_DISPATCHED:
            row = rows.setdefault(event.node, NodeRow(event.node, event.command or "?"))
            row.attempts = max(row.attempts, event.attempt or 0)
            row.first_dispatch = row.first_dispatch or event.at
            row.outcome = "running"
        elif event.node in rows:
            _ended(rows[event.node], event)
    return sorted(rows.values(), key=lambda row: _path_key(row.node))


def _ended(row: NodeRow, event: Event) -> None:
    if event.type in (ev.COMMAND_SUCCEEDED, ev.COMMAND_EXPANDED):
        row.ended, row.outcome = event.at, "succeeded" if event.type == ev.COMMAND_SUCCEEDED else "expanded"
    elif event.type == ev.COMMAND_FAILED:
        row.ended, row.outcome = event.at, f"failed ({event.data['error'].get('reason', 'raised')})"
    elif event.type == ev.RETRY_SCHEDULED:
        row.outcome = "retrying"
    elif event.type == ev.NODE_FAILED:
        row.outcome = "failed"


def _path_key(path: str) -> list[object]:
    return [int(part) if part.isdigit() else part for part in path.split(".")]
