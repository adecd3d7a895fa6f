"""Failures over a time window, grouped by error type and command, with the latest example of each.

A failure is a ``command.failed`` event: one failed attempt, whether it raised,
timed out or was lost, retried later or not. Groups come most frequent first;
equal counts order by error type, then command, so the answer never depends on
the engine. The latest example is the one with the greatest ``at``; events of
the same millisecond are told apart by run id, then ``seq`` (greatest first).
That order is a full ``$sort`` before the ``$group``, so ``$first`` is exact on
a server and on mongomock alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from orchestrator.core import events as ev

from .source import BY_TYPE_AND_TIME, EventsCollection, IndexKeys, Pipeline, aggregate, at_window, aware

INDEXES_NEEDED: tuple[IndexKeys, ...] = (BY_TYPE_AND_TIME,)


@dataclass(frozen=True, slots=True)
class FailureExample:
    run: str
    node: str | None
    attempt: int | None
    message: str | None
    at: datetime
    reason: str | None


@dataclass(frozen=True, slots=True)
class FailureGroup:
    error_type: str | None
    command: str | None
    count: int
    latest: FailureExample


def failures_pipeline(since: datetime | None, until: datetime | None) -> Pipeline:
    """One document per (error type, command): its count and its latest failure."""
    return [
        {"$match": {"type": ev.COMMAND_FAILED, **at_window(since, until)}},
        {"$sort": {"at": -1, "run": -1, "seq": -1}},
        {
            "$group": {
                "_id": {"type": "$data.error.type", "command": "$command"},
                "count": {"$sum": 1},
                "latest": {
                    "$first": {
                        "run": "$run",
                        "node": "$node",
                        "attempt": "$attempt",
                        "message": "$data.error.message",
                        "at": "$at",
                        "reason": "$data.error.reason",
                    }
                },
            }
        },
        {"$sort": {"count": -1, "_id.type": 1, "_id.command": 1}},
    ]


def failures(
    events: EventsCollection, since: datetime | None = None, until: datetime | None = None
) -> list[FailureGroup]:
    """Failures in [since, until) by error type and command, most frequent first."""
    return [_group(row) for row in aggregate(events, failures_pipeline(since, until))]


def failures_of_rows(rows: Iterable[Mapping[str, Any]]) -> list[FailureGroup]:
    """``failures`` of rows shaped as its pipeline's (``HistoryStore.failure_rows`` gives them)."""
    return [_group(row) for row in rows]


def _group(row: Mapping[str, Any]) -> FailureGroup:
    key = row["_id"]
    latest = row["latest"]
    return FailureGroup(
        error_type=key.get("type"),
        command=key.get("command"),
        count=int(row["count"]),
        latest=FailureExample(
            run=latest["run"],
            node=latest.get("node"),
            attempt=latest.get("attempt"),
            message=latest.get("message"),
            at=aware(latest["at"]),
            reason=latest.get("reason"),
        ),
    )
