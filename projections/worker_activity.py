"""Worker activity: per worker, the attempts it ran, how long it was busy, and how many failed.

A worker is the ``data.by`` of a ``command.started`` (``host:pid/kind``); an
attempt is counted for the worker that started it. Its busy time is the ``at``
of the event that ended it (succeeded, expanded or failed) minus the
``started_at`` the worker reported, so it spans the call and the trip back to
the orchestrator. An attempt with no ``started_at`` (its command was unknown
at the worker, or the executor refused it and the orchestrator recorded it as
lost, under its own name) counts as a call with no busy time.

Attempts that never started (timed out before any outcome) belong to no
worker and are left out. The engine appends an attempt's ``command.started``
and its ending together, under one ``at``, so a time window takes both or
neither.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from orchestrator.core import events as ev

from .source import BY_TYPE_AND_TIME, EventsCollection, IndexKeys, Pipeline, aggregate, at_window

INDEXES_NEEDED: tuple[IndexKeys, ...] = (BY_TYPE_AND_TIME,)

ENDINGS = (ev.COMMAND_SUCCEEDED, ev.COMMAND_EXPANDED, ev.COMMAND_FAILED)


@dataclass(frozen=True, slots=True)
class WorkerActivity:
    worker: str | None
    calls: int
    busy_s: float
    failures: int


def worker_activity_pipeline(since: datetime | None, until: datetime | None) -> Pipeline:
    """One document per worker: ``{_id: worker, calls, busy_ms, failures}``, by worker id."""
    started = {"$eq": ["$type", ev.COMMAND_STARTED]}
    both_known = {"$and": [{"$ne": ["$started_at", None]}, {"$ne": ["$ended_at", None]}]}
    return [
        {"$match": {"type": {"$in": [ev.COMMAND_STARTED, *ENDINGS]}, **at_window(since, until)}},
        {
            "$group": {  # one document per attempt
                "_id": {"run": "$run", "node": "$node", "attempt": "$attempt"},
                "starts": {"$sum": {"$cond": [started, 1, 0]}},
                "worker": {"$max": {"$cond": [started, "$data.by", None]}},
                "started_at": {"$max": {"$cond": [started, "$data.started_at", None]}},
                "ended_at": {"$max": {"$cond": [started, None, "$at"]}},
                "failed": {"$max": {"$cond": [{"$eq": ["$type", ev.COMMAND_FAILED]}, 1, 0]}},
            }
        },
        {"$match": {"starts": {"$gt": 0}}},
        {
            "$project": {
                "worker": 1,
                "failed": 1,
                "busy_ms": {"$cond": [both_known, {"$subtract": ["$ended_at", "$started_at"]}, 0]},
            }
        },
        {
            "$group": {
                "_id": "$worker",
                "calls": {"$sum": 1},
                "busy_ms": {"$sum": "$busy_ms"},
                "failures": {"$sum": "$failed"},
            }
        },
        {"$sort": {"_id": 1}},
    ]


def worker_activity(
    events: EventsCollection, since: datetime | None = None, until: datetime | None = None
) -> list[WorkerActivity]:
    """What each worker did with the attempts it started in [since, until), by worker id."""
    return activity_of_rows(aggregate(events, worker_activity_pipeline(since, until)))


def activity_of_rows(rows: Iterable[Mapping[str, Any]]) -> list[WorkerActivity]:
    """``worker_activity`` of rows shaped as its pipeline's (``HistoryStore.worker_rows`` gives them)."""
    return [_activity(row) for row in rows]


def _activity(row: Mapping[str, Any]) -> WorkerActivity:
    return WorkerActivity(
        worker=row.get("_id"),
        calls=int(row["calls"]),
        busy_s=int(row["busy_ms"]) / 1000,
        failures=int(row["failures"]),
    )
