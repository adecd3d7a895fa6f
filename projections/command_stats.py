"""Per-command statistics over a time window: calls, outcomes, retries and durations.

Each event counts in the window its own ``at`` falls in: a dispatch is a call,
``command.succeeded`` a success, ``command.expanded`` an expansion (a success
that returned a flow), ``command.failed`` a failed attempt (raised, timed out
or lost), ``retry.scheduled`` a retry. Durations are the ``duration_s`` that
successes carry (the worker's own measure of the call); mean and max are exact
(a sum, a count and a ``$max``, skipping the successes with no duration).

The 95th percentile comes from a histogram, so no document grows with the
history: the pipeline counts each command's durations per log-spaced bucket
(``BUCKETS_PER_DECADE`` to a factor of ten; bucket ``k`` holds the durations in
``(10^((k-1)/B), 10^(k/B)]``, everything up to ``SMALLEST_S`` in the lowest),
and ``p95_from_histogram`` finds the bucket holding the nearest rank (the
ceil(0.95 n)-th smallest duration). It reports that bucket's upper bound,
lowered to the exact maximum when that is smaller. So, with p the exact
nearest-rank percentile, the reported value r keeps

    p <= r <= max(p * BUCKET_RATIO, SMALLEST_S)      (BUCKET_RATIO = 10^(1/100), 2.33 % over)

up to the float rounding of ``$log10`` at a bucket's edge (relative 1e-12): a
p95 is never understated, and is overstated by less than one bucket's relative
width (below a microsecond, the logging resolution, by less than 1 µs). Under
20 durations the nearest rank is the largest, so r is the exact maximum. Why
not exact: ``$percentile`` exists only from MongoDB 7.0 and mongomock lacks it,
and pushing every duration meets the 16 MiB and 100 MB limits on a big history.
A command's histogram has at most ``MAX_BUCKETS`` entries, whatever the history.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from orchestrator.core import events as ev
from orchestrator.core.histogram import BUCKET_RATIO as BUCKET_RATIO
from orchestrator.core.histogram import BUCKETS_PER_DECADE, LOWEST_BUCKET, SMALLEST_S

from .source import BY_TYPE_AND_TIME, EventsCollection, IndexKeys, Pipeline, aggregate, at_window

INDEXES_NEEDED: tuple[IndexKeys, ...] = (BY_TYPE_AND_TIME,)

COUNTED = (
    ev.COMMAND_DISPATCHED,
    ev.COMMAND_SUCCEEDED,
    ev.COMMAND_EXPANDED,
    ev.COMMAND_FAILED,
    ev.RETRY_SCHEDULED,
)
PERCENT = 95
MEAN_DIGITS = 6
"""Durations are logged to the microsecond; a mean finer than that is noise (and differs by engine).
The sum is taken to the microsecond too before it is divided: floats added in another order (per
hour in the embedded store's rollups, in one ``$sum`` on a server) differ in their last bits, which
moved a mean lying on a half microsecond to one side or the other, store by store."""

MAX_BUCKETS = math.ceil(BUCKETS_PER_DECADE * math.log10(sys.float_info.max)) - LOWEST_BUCKET + 1
"""Buckets a command can use (31,427, about 1 MB of ``{k, n}``); a microsecond to a day uses 1,100."""


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


_KINDS = {
    "calls": ev.COMMAND_DISPATCHED,
    "successes": ev.COMMAND_SUCCEEDED,
    "expansions": ev.COMMAND_EXPANDED,
    "failures": ev.COMMAND_FAILED,
    "retries": ev.RETRY_SCHEDULED,
}
_SUCCEEDED = {"$eq": ["$type", ev.COMMAND_SUCCEEDED]}
_DURATION = {"$cond": [_SUCCEEDED, {"$ifNull": ["$data.duration_s", None]}, None]}
"""A success's duration, else null (a missing ``duration_s`` too)."""
_BUCKET = {
    "$let": {
        "vars": {"d": _DURATION},
        "in": {
            "$switch": {  # evaluated lazily, so $log10 never sees null, 0 or a negative
                "branches": [
                    {"case": {"$eq": ["$$d", None]}, "then": None},
                    {"case": {"$lte": ["$$d", SMALLEST_S]}, "then": LOWEST_BUCKET},
                ],
                "default": {"$ceil": {"$multiply": [{"$log10": "$$d"}, BUCKETS_PER_DECADE]}},
            }
        },
    }
}
"""The histogram bucket of a success's duration: ceil(B * log10(d)); null for other events."""


def command_stats_pipeline(since: datetime | None, until: datetime | None) -> Pipeline:
    """One document per command: its counts, the sum, count and max of its durations, and its
    histogram ``[{k: bucket, n: durations in it}]`` (in no particular order)."""
    timed = {"$cond": [{"$eq": [_DURATION, None]}, 0, 1]}
    return [
        {"$match": {"type": {"$in": list(COUNTED)}, **at_window(since, until)}},
        {
            "$group": {  # one document per (command, bucket); the bucket is null for all but successes
                "_id": {"command": "$command", "bucket": _BUCKET},
                **{name: _count(kind) for name, kind in _KINDS.items()},
                "timed": {"$sum": timed},
                "total_s": {"$sum": _DURATION},
                "max_s": {"$max": _DURATION},
            }
        },
        {
            "$group": {
                "_id": "$_id.command",
                **{name: {"$sum": f"${name}"} for name in (*_KINDS, "timed", "total_s")},
                "max_duration_s": {"$max": "$max_s"},
                "histogram": {
                    "$push": {
                        "$cond": [{"$eq": ["$_id.bucket", None]}, None, {"k": "$_id.bucket", "n": "$timed"}]
                    }
                },
            }
        },
        {
            "$project": {
                "_id": 0,
                "command": "$_id",
                **dict.fromkeys((*_KINDS, "timed", "total_s", "max_duration_s"), 1),
                "histogram": {"$filter": {"input": "$histogram", "cond": {"$ne": ["$$this", None]}}},
            }
        },
        {"$sort": {"command": 1}},
    ]


def command_stats(
    events: EventsCollection, since: datetime | None = None, until: datetime | None = None
) -> list[CommandStats]:
    """Statistics of every command with an event in [since, until), by command name."""
    return [_stats(row) for row in aggregate(events, command_stats_pipeline(since, until))]


@dataclass(frozen=True, slots=True)
class DurationHistogram:
    """A command's timed successes by duration bucket (``orchestrator.core.histogram``): for
    exporting the distribution (Prometheus), where ``CommandStats`` keeps only its p95."""

    command: str | None
    count: int
    total_s: float
    buckets: dict[int, int]
    """Bucket ``k`` holds durations in (10^((k-1)/B), 10^(k/B)] seconds, B = ``BUCKETS_PER_DECADE``."""

    def at_most(self, seconds_bucket: int) -> int:
        """How many durations were at most bucket ``seconds_bucket``'s upper bound (exact)."""
        return sum(n for k, n in self.buckets.items() if k <= seconds_bucket)


def histograms_of_rows(rows: Iterable[Mapping[str, Any]]) -> list[DurationHistogram]:
    """Each command's duration histogram, from rows shaped as the stats pipeline's."""
    found = []
    for row in rows:
        buckets: dict[int, int] = {}
        for entry in row.get("histogram") or ():
            buckets[int(entry["k"])] = buckets.get(int(entry["k"]), 0) + int(entry["n"])
        found.append(
            DurationHistogram(
                row.get("command"), int(row.get("timed") or 0), float(row.get("total_s") or 0), buckets
            )
        )
    return found


def stats_of_rows(rows: Iterable[Mapping[str, Any]]) -> list[CommandStats]:
    """``command_stats`` of rows shaped as its pipeline's (``HistoryStore.command_rows`` gives them)."""
    return [_stats(row) for row in rows]


def p95_from_histogram(histogram: Mapping[int, int], top: float | None) -> float | None:
    """The upper bound of the bucket holding the nearest-rank 95th percentile, or ``top`` (the
    exact maximum) when smaller; None for an empty histogram. See the module for the error bound."""
    total = sum(histogram.values())
    if total <= 0:
        return None
    rank = (PERCENT * total + 99) // 100  # ceil(0.95 n), in integers
    seen = 0
    for bucket in sorted(histogram):
        seen += histogram[bucket]
        if seen >= rank:
            upper = bucket_upper_s(bucket)
            return upper if top is None else min(upper, top)
    raise AssertionError("unreachable: the ranks end at the total")  # pragma: no cover


def mean_of(total_s: float, count: int) -> float:
    """The mean of ``count`` durations summing to ``total_s``, the same in every store (``MEAN_DIGITS``)."""
    return round(round(total_s, MEAN_DIGITS) / count, MEAN_DIGITS)


def bucket_upper_s(bucket: int) -> float:
    """The largest duration bucket ``bucket`` holds: 10^(bucket / BUCKETS_PER_DECADE) seconds
    (infinity for the last, whose bound is past the largest float)."""
    try:
        return float(10 ** (bucket / BUCKETS_PER_DECADE))
    except OverflowError:
        return math.inf


def _count(kind: str) -> dict[str, Any]:
    return {"$sum": {"$cond": [{"$eq": ["$type", kind]}, 1, 0]}}


def _stats(row: Mapping[str, Any]) -> CommandStats:
    timed = int(row.get("timed") or 0)
    top = row.get("max_duration_s")
    top = None if top is None else float(top)
    histogram: dict[int, int] = {}
    for entry in row.get("histogram") or ():
        bucket = int(entry["k"])
        histogram[bucket] = histogram.get(bucket, 0) + int(entry["n"])
    return CommandStats(
        command=row.get("command"),
        **{name: int(row[name]) for name in _KINDS},
        mean_duration_s=mean_of(float(row["total_s"]), timed) if timed else None,
        max_duration_s=top,
        p95_duration_s=p95_from_histogram(histogram, top),
    )
