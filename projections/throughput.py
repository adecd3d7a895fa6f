"""Throughput: how many events (or completions) fell in each bucket of time.

Buckets are aligned to the Unix epoch, not to ``since``: a bucket of one minute
always starts on a whole minute (UTC), so the same event lands in the same
bucket whatever window is asked for, and two answers can be laid side by side.
The first bucket may therefore start before ``since``; it counts only what is
inside the window. Empty buckets are left out (``$densify`` is MongoDB 5.1+ and
not in mongomock; a chart fills the gaps).

A bucket start is computed as ``at - (at - epoch) mod size`` with ``$subtract``
and ``$mod`` — ``$dateTrunc`` (MongoDB 5.0+) and ``$toLong`` on a date are not
in mongomock. Date arithmetic against the epoch needs the collection opened
tz-aware, as every evenflow store opens it (mongomock refuses to subtract an
aware date from the naive ones a plain ``mongomock.MongoClient()`` keeps).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from orchestrator.core import events as ev

from .source import BY_TYPE_AND_TIME, EventsCollection, IndexKeys, Pipeline, aggregate, at_window, aware

INDEXES_NEEDED: tuple[IndexKeys, ...] = (BY_TYPE_AND_TIME,)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
COMPLETIONS = (ev.COMMAND_SUCCEEDED, ev.COMMAND_FAILED)
ALL_EVENTS = tuple(sorted(ev.KNOWN_TYPES))
"""Every type, named: a ``$match`` on ``type`` lets the (type, at) index serve the window."""


@dataclass(frozen=True, slots=True)
class Bucket:
    start: datetime
    count: int


def throughput_pipeline(
    since: datetime | None, until: datetime | None, bucket: timedelta, types: Iterable[str]
) -> Pipeline:
    """One document per non-empty bucket: ``{_id: bucket start, count}``, oldest first."""
    size_ms = bucket_ms(bucket)
    since_epoch = {"$subtract": ["$at", EPOCH]}
    return [
        {"$match": {"type": {"$in": sorted(set(types))}, **at_window(since, until)}},
        {
            "$group": {
                "_id": {"$subtract": ["$at", {"$mod": [since_epoch, size_ms]}]},
                "count": {"$sum": 1},
            }
        },
        {"$sort": {"_id": 1}},
    ]


def throughput(
    events: EventsCollection,
    since: datetime | None,
    until: datetime | None,
    bucket: timedelta,
    *,
    completions: bool = False,
) -> list[Bucket]:
    """Events per ``bucket`` in [since, until); with ``completions``, only ended attempts
    (``command.succeeded`` and ``command.failed``)."""
    pipeline = throughput_pipeline(since, until, bucket, counted(completions))
    return buckets_of_rows(aggregate(events, pipeline))


def counted(completions: bool) -> tuple[str, ...]:
    """The event types ``throughput`` counts."""
    return COMPLETIONS if completions else ALL_EVENTS


def buckets_of_rows(rows: Iterable[Mapping[str, Any]]) -> list[Bucket]:
    """``throughput`` of rows shaped as its pipeline's (``HistoryStore.throughput_rows`` gives them)."""
    return [Bucket(start=aware(row["_id"]), count=int(row["count"])) for row in rows]


def bucket_ms(bucket: timedelta) -> int:
    """The bucket size in whole milliseconds, the resolution of a BSON date."""
    if not isinstance(bucket, timedelta) or bucket <= timedelta(0):
        raise ValueError(f"a throughput bucket must be a positive datetime.timedelta, got {bucket!r}")
    size_ms, rest = divmod(bucket, timedelta(milliseconds=1))
    if rest:
        raise ValueError(f"a throughput bucket must be a whole number of milliseconds, got {bucket!r}")
    return size_ms
