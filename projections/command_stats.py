"""Per-command statistics over a time window: calls, outcomes, retries and durations.

Each event counts in the window its own ``at`` falls in: a dispatch is a call,
``command.succeeded`` a success, ``command.expanded`` an expansion (a success
that returned a flow), ``command.failed`` a failed attempt (raised, timed out
or lost), ``retry.scheduled`` a retry. Durations are the ``duration_s`` that
successes carry (the worker's own measure of the call); mean and max come from
the pipeline (``$avg`` and ``$max`` skip the successes with no duration).

The 95th percentile is computed in Python, not in the pipeline: ``$percentile``
exists only from MongoDB 7.0 and mongomock does not implement it, so the
pipeline pushes each command's durations and ``p95`` takes the nearest-rank
percentile of them (the smallest duration that at least 95% of the durations
do not exceed; with one duration, that one).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from orchestrator.core import events as ev

from .source import BY_TYPE_AND_TIME, EventsCollection, IndexKeys, Pipeline, at_window

INDEXES_NEEDED: tuple[IndexKeys, ...] = (BY_TYPE_AND_TIME,)

COUNTED = (
    ev.COMMAND_DISPATCHED,
    ev.COMMAND_SUCCEEDED,
    ev.COMMAND_EXPANDED,
    ev.COMMAND_FAILED,
    ev.RETRY_SCHEDULED,
)
PERCENTILE = 0.95
MEAN_DIGITS = 6
"""Durations are logged to the microsecond; a mean finer than that is noise (and differs by engine)."""


@dataclass(frozen=True, slots=True)
class CommandStats:
    command: str | None
    calls: int
    successes: int
    expansions: int
    failures: int
    retries: int
    mean_duration_s: float | None
    max_duration_s: float | None
    p95_duration_s: float | None

    @property
    def failure_rate(self) -> float | None:
        """Failed attempts over ended attempts in the window; None when none ended."""
        ended = self.successes + self.expansions + self.failures
        return self.failures / ended if ended else None


def command_stats_pipeline(since: datetime | None, until: datetime | None) -> Pipeline:
    """One document per command with its counts, mean, max and the list of durations."""
    duration = {"$cond": [{"$eq": ["$type", ev.COMMAND_SUCCEEDED]}, "$data.duration_s", None]}
    return [
        {"$match": {"type": {"$in": list(COUNTED)}, **at_window(since, until)}},
        {
            "$group": {
                "_id": "$command",
                "calls": _count(ev.COMMAND_DISPATCHED),
                "successes": _count(ev.COMMAND_SUCCEEDED),
                "expansions": _count(ev.COMMAND_EXPANDED),
                "failures": _count(ev.COMMAND_FAILED),
                "retries": _count(ev.RETRY_SCHEDULED),
                "mean_duration_s": {"$avg": duration},
                "max_duration_s": {"$max": duration},
                "durations": {"$push": duration},
            }
        },
        {
            "$project": {
                "_id": 0,
                "command": "$_id",
                "calls": 1,
                "successes": 1,
                "expansions": 1,
                "failures": 1,
                "retries": 1,
                "mean_duration_s": 1,
                "max_duration_s": 1,
                # $push keeps a null where a server would drop a missing value; drop both alike
                "durations": {"$filter": {"input": "$durations", "as": "d", "cond": {"$ne": ["$$d", None]}}},
            }
        },
        {"$sort": {"command": 1}},
    ]


def command_stats(
    events: EventsCollection, since: datetime | None = None, until: datetime | None = None
) -> list[CommandStats]:
    """Statistics of every command with an event in [since, until), by command name."""
    return [_stats(row) for row in events.aggregate(command_stats_pipeline(since, until))]


def p95(durations: Sequence[float]) -> float | None:
    """The nearest-rank 95th percentile of ``durations``; None for none."""
    if not durations:
        return None
    ordered = sorted(durations)
    return ordered[math.ceil(PERCENTILE * len(ordered)) - 1]


def _count(kind: str) -> dict[str, Any]:
    return {"$sum": {"$cond": [{"$eq": ["$type", kind]}, 1, 0]}}


def _stats(row: Mapping[str, Any]) -> CommandStats:
    mean = row.get("mean_duration_s")
    top = row.get("max_duration_s")
    return CommandStats(
        command=row.get("command"),
        calls=int(row["calls"]),
        successes=int(row["successes"]),
        expansions=int(row["expansions"]),
        failures=int(row["failures"]),
        retries=int(row["retries"]),
        mean_duration_s=None if mean is None else round(float(mean), MEAN_DIGITS),
        max_duration_s=None if top is None else float(top),
        p95_duration_s=p95([float(d) for d in row.get("durations") or ()]),
    )
