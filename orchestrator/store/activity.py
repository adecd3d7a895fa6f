"""Event counts by minute and hour, worker figures by hour, and the timeline of every event, which an
embedded journal keeps so throughput and worker activity cost O(buckets), not O(history).

Each flush folds its events into:

- ``event_counts``: per type, the events of each minute and of each hour
  (since the epoch). A throughput bucket that is a whole number of hours (or
  minutes) is summed from those; only the parts of a window that do not cover
  whole units, and buckets of less than a minute, read the timeline;
- ``worker_hours``: per worker and hour, the attempts it started, their busy
  time and how many failed. The engine appends an attempt's
  ``command.started`` and its ending in one batch under one time; such a pair
  is counted here. Any other attempt event (one without its partner in the
  batch) is marked ``loose`` in the timeline and grouped at read time with
  whatever else of its attempt falls in the window, as the pipeline would;
- ``timeline``: each event's time, type and id (``rollups.py`` reads the
  command events of its partial hours from it too).

Answers come in the shape ``projections.throughput`` and
``projections.worker_activity``'s pipelines give, with bucket starts computed
as they compute them (``$mod`` keeps the dividend's sign, so a bucket before the
epoch starts later than floor division would say). A worker is a ``data.by``
that is a string, else None. After a prune the tables keep their figures and
the timeline loses the pruned events, so a window's partial edges count only
what is still stored, as for ``stats``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from orchestrator.core import events as ev
from orchestrator.core.events import Event

from .batched_sql import insert_rows
from .rollups import EPOCH, HOUR_MS, Name, as_name, ascending, millis, name_value

MINUTE_MS = 60_000
LEVELS = (HOUR_MS, MINUTE_MS)
"""The units events are counted in, coarsest first."""
WORK = (ev.COMMAND_STARTED, ev.COMMAND_SUCCEEDED, ev.COMMAND_EXPANDED, ev.COMMAND_FAILED)
"""What ``worker_activity`` reads: a start and the endings."""
_FAR = 2**62
"""Beyond any stored time, in ms, and inside SQLite's integers."""
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS timeline (at INTEGER NOT NULL, type TEXT NOT NULL, id TEXT NOT NULL,"
    " loose INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS timeline_at ON timeline (at, type)",
    "CREATE INDEX IF NOT EXISTS timeline_loose ON timeline (at) WHERE loose = 1",
    "CREATE TABLE IF NOT EXISTS event_counts (size INTEGER NOT NULL, unit INTEGER NOT NULL,"
    " type TEXT NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (size, unit, type)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS worker_hours (hour INTEGER NOT NULL, named INTEGER NOT NULL,"
    " worker TEXT NOT NULL, calls INTEGER NOT NULL, busy_ms INTEGER NOT NULL, failures INTEGER NOT NULL,"
    " PRIMARY KEY (hour, named, worker)) WITHOUT ROWID",
)
TABLES = ("timeline", "event_counts", "worker_hours")


@dataclass(slots=True)
class Work:
    """One worker's figures, summed over attempts."""

    calls: int = 0
    busy_ms: int = 0
    failures: int = 0

    def add(self, calls: int, busy_ms: int, failures: int) -> None:
        self.calls += calls
        self.busy_ms += busy_ms
        self.failures += failures


# --- folding a flush ------------------------------------------------------------------------------


def index(db: sqlite3.Connection, events: Sequence[Event]) -> None:
    """Fold a flush's events into the tables and the timeline, in the caller's transaction.

    On the append path (every few hundred events): each event's time is computed once, and
    attempts are grouped by position, not by event id."""
    stamps = [millis(event.at) for event in events]
    counts: dict[tuple[int, int, str], int] = {}
    attempts: dict[tuple[Any, ...], list[int]] = {}
    for i, event in enumerate(events):
        at = stamps[i]
        if at >= 0:
            for size in LEVELS:
                key = (size, at // size, event.type)
                counts[key] = counts.get(key, 0) + 1
        if event.type in WORK:
            attempts.setdefault(_attempt(event), []).append(i)
    workers: dict[tuple[int, Name], Work] = {}
    paired: set[int] = set()
    for found in attempts.values():
        if _a_pair([events[i] for i in found], [stamps[i] for i in found]):
            name, busy, failed = _figures(events[i] for i in found)
            workers.setdefault((stamps[found[0]] // HOUR_MS, name), Work()).add(1, busy, failed)
            paired.update(found)
    insert_rows(
        db,
        "INSERT INTO timeline (at, type, id, loose)",
        ((stamps[i], e.type, e.id, int(e.type in WORK and i not in paired)) for i, e in enumerate(events)),
    )
    insert_rows(
        db,
        "INSERT INTO event_counts (size, unit, type, n)",
        [(*key, n) for key, n in counts.items()],
        "ON CONFLICT (size, unit, type) DO UPDATE SET n = n + excluded.n",
    )
    insert_rows(
        db,
        "INSERT INTO worker_hours (hour, named, worker, calls, busy_ms, failures)",
        [(hour, *name, w.calls, w.busy_ms, w.failures) for (hour, name), w in workers.items()],
        "ON CONFLICT (hour, named, worker) DO UPDATE SET calls = calls + excluded.calls,"
        " busy_ms = busy_ms + excluded.busy_ms, failures = failures + excluded.failures",
    )


def _attempt(event: Event) -> tuple[Any, ...]:
    return (event.run, event.node, event.attempt)


def _a_pair(found: list[Event], stamps: list[int]) -> bool:
    """A start and one ending of the same hour: all the pipeline would group for this attempt."""
    starts = sum(event.type == ev.COMMAND_STARTED for event in found)
    return len(found) == 2 and starts == 1 and stamps[0] // HOUR_MS == stamps[1] // HOUR_MS


def _figures(found: Iterable[Event]) -> tuple[Name, int, int]:
    """One attempt's worker, busy ms and failure (0 or 1), by ``worker_activity``'s pipeline rules."""
    workers, starts, ends, failed = [], [], [], 0
    for event in found:
        if event.type == ev.COMMAND_STARTED:
            by, started_at = event.data.get("by"), event.data.get("started_at")
            workers += [by] if isinstance(by, str) else []
            starts += [millis(started_at)] if isinstance(started_at, datetime) else []
        else:
            ends.append(millis(event.at))
            failed |= event.type == ev.COMMAND_FAILED
    busy = max(ends) - max(starts) if starts and ends else 0
    return as_name(max(workers) if workers else None), busy, int(failed)


# --- reading a window -----------------------------------------------------------------------------


def counts(
    db: sqlite3.Connection,
    since: int | None,
    until: int | None,
    bucket_ms: int,
    types: Sequence[str],
    tail: Iterable[Event],
) -> list[dict[str, Any]]:
    """``throughput``'s rows for ``[since, until)`` (ms; None is open) in buckets of ``bucket_ms``."""
    wanted = sorted(set(types))
    marks = ", ".join("?" * len(wanted))
    found: dict[int, int] = {}

    def add(at: int, n: int) -> None:
        start = at - _mod(at, bucket_ms)
        found[start] = found.get(start, 0) + n

    whole, rest = _cover(_low(since), _high(until), [s for s in LEVELS if bucket_ms % s == 0])
    for size, first, last in whole:
        for unit, n in db.execute(
            f"SELECT unit, sum(n) FROM event_counts WHERE size = ? AND unit >= ? AND unit < ?"
            f" AND type IN ({marks}) GROUP BY unit",
            (size, first, last, *wanted),
        ):
            add(unit * size, n)
    for low, high in rest:
        for (at,) in db.execute(
            f"SELECT at FROM timeline WHERE at >= ? AND at < ? AND type IN ({marks})", (low, high, *wanted)
        ):
            add(at, 1)
    for event in tail:
        if event.type in wanted and _inside(millis(event.at), since, until):
            add(millis(event.at), 1)
    return [{"_id": EPOCH + timedelta(milliseconds=start), "count": found[start]} for start in sorted(found)]


def work(
    db: sqlite3.Connection,
    since: int | None,
    until: int | None,
    load: Callable[[list[str]], Iterable[Event]],
    tail: Iterable[Event],
) -> list[dict[str, Any]]:
    """``worker_activity``'s rows for ``[since, until)``: whole hours from ``worker_hours``, the rest
    (partial hours, loose events, the tail) grouped by attempt from the events themselves."""
    figures: dict[Name, Work] = {}
    whole, rest = _cover(_low(since), _high(until), [HOUR_MS])
    marks = ", ".join("?" * len(WORK))
    ids: list[str] = []
    for _, first, last in whole:
        for named, worker, calls, busy, failed in db.execute(
            "SELECT named, worker, sum(calls), sum(busy_ms), sum(failures) FROM worker_hours"
            " WHERE hour >= ? AND hour < ? GROUP BY named, worker",
            (first, last),
        ):
            figures.setdefault((named, worker), Work()).add(calls, busy, failed)
        ids += _ids(db, "loose = 1 AND at >= ? AND at < ?", (first * HOUR_MS, last * HOUR_MS))
    for low, high in rest:
        ids += _ids(db, f"at >= ? AND at < ? AND type IN ({marks})", (low, high, *WORK))
    events = [*load(ids), *(e for e in tail if e.type in WORK and _inside(millis(e.at), since, until))]
    attempts: dict[tuple[Any, ...], list[Event]] = {}
    for event in events:
        attempts.setdefault(_attempt(event), []).append(event)
    for found in attempts.values():
        if any(event.type == ev.COMMAND_STARTED for event in found):
            name, busy, failed = _figures(found)
            figures.setdefault(name, Work()).add(1, busy, failed)
    rows = [
        {"_id": name_value(name), "calls": w.calls, "busy_ms": w.busy_ms, "failures": w.failures}
        for name, w in figures.items()
    ]
    return sorted(rows, key=lambda row: ascending(row["_id"]))


def _ids(db: sqlite3.Connection, where: str, params: tuple[Any, ...]) -> list[str]:
    return [id_ for (id_,) in db.execute(f"SELECT id FROM timeline WHERE {where}", params)]


def _cover(
    low: int, high: int, sizes: Sequence[int]
) -> tuple[list[tuple[int, int, int]], list[tuple[int, int]]]:
    """``[low, high)`` as whole units of each size in turn (coarsest first, never before the epoch)
    and the ranges of ms no unit covers."""
    whole: list[tuple[int, int, int]] = []
    rest = [(low, high)]
    for size in sizes:
        left = []
        for a, b in rest:
            first, last = max(0, -(-a // size)), b // size
            if first >= last:
                left.append((a, b))
                continue
            whole.append((size, first, last))
            left += [(lo, hi) for lo, hi in ((a, first * size), (last * size, b)) if lo < hi]
        rest = left
    return whole, rest


def _mod(at: int, size: int) -> int:
    """MongoDB's ``$mod``: the remainder takes the dividend's sign."""
    remainder = abs(at) % size
    return remainder if at >= 0 else -remainder


def _low(since: int | None) -> int:
    return -_FAR if since is None else since


def _high(until: int | None) -> int:
    return _FAR if until is None else until


def _inside(at: int, since: int | None, until: int | None) -> bool:
    return (since is None or at >= since) and (until is None or at < until)
