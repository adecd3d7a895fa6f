"""Hourly rollups of command events an embedded journal keeps, so ``stats`` and ``failures`` cost
O(commands x hours), not O(history).

Each append folds its command events, in its own transaction, into:

- ``command_hours``: per command and hour, the counts ``evenflow stats`` shows
  (calls, successes, expansions, failures, retries) and the count, sum and
  maximum of the successes' durations;
- ``duration_buckets``: per command and hour, durations counted by histogram
  bucket (``orchestrator.core.histogram``), for the p95;
- ``failure_hours``: per error type, command and hour, the count of failed
  attempts and the latest one (greatest ``(at, run, seq)``);
and reads the command events of a window's partial hours from the timeline
``activity.py`` keeps.

A window's answer adds the whole hours' rollups to the events of its partial
hours, folded here by the same rules, and comes out in the shape the MongoDB
pipelines give (``projections.command_stats`` and ``projections.failures``
turn either into their rows). A duration that is not a finite number is not
timed. An event without a command or error type counts under None.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from orchestrator.core import events as ev
from orchestrator.core.events import Event
from orchestrator.core.histogram import bucket_of

from .batched_sql import insert_rows

HOUR_MS = 3_600_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
COUNTED = {
    ev.COMMAND_DISPATCHED: "calls",
    ev.COMMAND_SUCCEEDED: "successes",
    ev.COMMAND_EXPANDED: "expansions",
    ev.COMMAND_FAILED: "failures",
    ev.RETRY_SCHEDULED: "retries",
}
KINDS = tuple(COUNTED.values())
_KEY = "named INTEGER NOT NULL, command TEXT NOT NULL, hour INTEGER NOT NULL"
SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS command_hours ({_KEY}, {', '.join(f'{k} INTEGER NOT NULL' for k in KINDS)},"
    " timed INTEGER NOT NULL, total_s REAL NOT NULL, max_s REAL, PRIMARY KEY (hour, named, command))"
    " WITHOUT ROWID",
    f"CREATE TABLE IF NOT EXISTS duration_buckets ({_KEY}, bucket INTEGER NOT NULL, n INTEGER NOT NULL,"
    " PRIMARY KEY (hour, named, command, bucket)) WITHOUT ROWID",
    f"CREATE TABLE IF NOT EXISTS failure_hours (typed INTEGER NOT NULL, error_type TEXT NOT NULL, {_KEY},"
    " count INTEGER NOT NULL, at INTEGER NOT NULL, run TEXT NOT NULL, seq INTEGER NOT NULL,"
    " PRIMARY KEY (hour, typed, error_type, named, command)) WITHOUT ROWID",
)
_TOP = "max_s = max(coalesce(max_s, excluded.max_s), coalesce(excluded.max_s, max_s))"
"""The greater maximum, where either may be null (SQLite's ``max`` of a null is null)."""
_NEWER = "(excluded.at, excluded.run, excluded.seq) > (at, run, seq)"
_LATER = ", ".join(f"{c} = CASE WHEN {_NEWER} THEN excluded.{c} ELSE {c} END" for c in ("at", "run", "seq"))
"""Keep the latest failure of a group: the greatest (at, run, seq), as ``failures`` sorts them."""
TABLES = ("command_hours", "duration_buckets", "failure_hours")
_EDGE = f"SELECT id FROM timeline WHERE at >= ? AND at < ? AND type IN ({', '.join('?' * len(COUNTED))})"
"""The command events of a partial hour, from ``activity.py``'s timeline."""


def millis(moment: datetime) -> int:
    """A logged time as whole milliseconds since the epoch (what BSON keeps)."""
    return (moment - EPOCH) // timedelta(milliseconds=1)


Name = tuple[int, str]
"""A name as stored: (1, name), or (0, "") for None."""


def as_name(value: Any) -> Name:
    return (1, value) if isinstance(value, str) else (0, "")


def name_value(name: Name) -> str | None:
    return name[1] if name[0] else None


@dataclass(slots=True)
class Counts:
    """One command's figures over some hours, summed as rows and events are added."""

    kinds: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    timed: int = 0
    total_s: float = 0.0
    max_s: float | None = None
    buckets: dict[int, int] = field(default_factory=dict)

    def add_duration(self, duration: float, count: int = 1, total: float | None = None) -> None:
        self.timed += count
        self.total_s += duration if total is None else total
        self.max_s = duration if self.max_s is None else max(self.max_s, duration)


@dataclass(slots=True)
class Failures:
    count: int = 0
    latest: tuple[int, str, int] = (-1, "", 0)


@dataclass(slots=True)
class Fold:
    """Command events folded by hour (at index time) or over a window's partial hours (at read time)."""

    commands: dict[tuple[Name, int], Counts] = field(default_factory=dict)
    failures: dict[tuple[Name, Name, int], Failures] = field(default_factory=dict)

    def add(self, event: Event, hour: int) -> None:
        kind = COUNTED[event.type]
        counts = self.commands.setdefault((as_name(event.command), hour), Counts())
        counts.kinds[kind] += 1
        duration = event.data.get("duration_s") if event.type == ev.COMMAND_SUCCEEDED else None
        if isinstance(duration, int | float) and not isinstance(duration, bool) and math.isfinite(duration):
            counts.add_duration(float(duration))
            bucket = bucket_of(duration)
            counts.buckets[bucket] = counts.buckets.get(bucket, 0) + 1
        if event.type == ev.COMMAND_FAILED:
            error = event.data.get("error")
            error_type = error.get("type") if isinstance(error, dict) else None
            failed = self.failures.setdefault((as_name(error_type), as_name(event.command), hour), Failures())
            failed.count += 1
            failed.latest = max(failed.latest, (millis(event.at), event.run, event.seq))


def index(db: sqlite3.Connection, events: Sequence[Event]) -> None:
    """Fold a batch's command events into the rollups, inside the transaction that appends it."""
    fold = Fold()
    for event in events:
        if event.type in COUNTED:
            fold.add(event, millis(event.at) // HOUR_MS)
    if not fold.commands:
        return
    kinds = ", ".join(KINDS)
    summed = ", ".join(f"{k} = {k} + excluded.{k}" for k in (*KINDS, "timed", "total_s"))
    insert_rows(
        db,
        f"INSERT INTO command_hours (named, command, hour, {kinds}, timed, total_s, max_s)",
        [
            (*name, hour, *c.kinds.values(), c.timed, c.total_s, c.max_s)
            for (name, hour), c in fold.commands.items()
        ],
        f"ON CONFLICT (hour, named, command) DO UPDATE SET {summed}, {_TOP}",
    )
    insert_rows(
        db,
        "INSERT INTO duration_buckets (named, command, hour, bucket, n)",
        [(*name, hour, b, n) for (name, hour), c in fold.commands.items() for b, n in c.buckets.items()],
        "ON CONFLICT (hour, named, command, bucket) DO UPDATE SET n = n + excluded.n",
    )
    insert_rows(
        db,
        "INSERT INTO failure_hours (typed, error_type, named, command, hour, count, at, run, seq)",
        [(*t, *c, hour, f.count, *f.latest) for (t, c, hour), f in fold.failures.items()],
        "ON CONFLICT (hour, typed, error_type, named, command)"
        f" DO UPDATE SET count = count + excluded.count, {_LATER}",
    )


# --- reading a window -----------------------------------------------------------------------------


def window(
    db: sqlite3.Connection, since: int | None, until: int | None, load: Callable[[list[str]], Iterable[Event]]
) -> Fold:
    """The rollups of ``[since, until)`` (ms; None is open): whole hours summed from the tables, the
    partial ones folded from their events (``load`` reads events by id)."""
    first, last, edges = _split(since, until)
    fold = Fold()
    hours = (first, last)
    kinds = ", ".join(f"sum({k})" for k in KINDS)
    for named, command, *sums, timed, total, top in db.execute(
        f"SELECT named, command, {kinds}, sum(timed), sum(total_s), max(max_s) FROM command_hours"
        " WHERE hour >= ? AND hour < ? GROUP BY named, command",
        hours,
    ):
        counts = fold.commands.setdefault(((named, command), 0), Counts())
        counts.kinds = dict(zip(KINDS, sums, strict=True))
        if timed:
            counts.add_duration(top, timed, total)
    for named, command, bucket, n in db.execute(
        "SELECT named, command, bucket, sum(n) FROM duration_buckets WHERE hour >= ? AND hour < ?"
        " GROUP BY named, command, bucket",
        hours,
    ):
        fold.commands.setdefault(((named, command), 0), Counts()).buckets[bucket] = n
    for typed, error_type, named, command, count, *latest in db.execute(
        "SELECT typed, error_type, named, command, count, at, run, seq FROM failure_hours"
        " WHERE hour >= ? AND hour < ?",
        hours,
    ):
        failed = fold.failures.setdefault(((typed, error_type), (named, command), 0), Failures())
        failed.count += count
        failed.latest = max(failed.latest, (latest[0], latest[1], latest[2]))
    for low, high in edges:
        ids = [id_ for (id_,) in db.execute(_EDGE, (low, high, *COUNTED))]
        for event in load(ids):
            fold.add(event, 0)
    return fold


def _split(since: int | None, until: int | None) -> tuple[int, int, list[tuple[int, int]]]:
    """The whole hours ``[first, last)`` inside ``[since, until)`` and the partial ranges around them."""
    first = -(-since // HOUR_MS) if since is not None else -(2**62)
    last = until // HOUR_MS if until is not None else 2**62
    if since is not None and until is not None and first > last:  # both ends inside one hour
        return 0, 0, [(since, until)]
    edges = []
    if since is not None and since < first * HOUR_MS:
        edges.append((since, first * HOUR_MS))
    if until is not None and last * HOUR_MS < until:
        edges.append((last * HOUR_MS, until))
    return first, last, edges


def command_rows(fold: Fold) -> list[dict[str, Any]]:
    """What ``projections.command_stats``' pipeline gives, one row per command, by command name."""
    rows = [
        {
            "command": name_value(name),
            **counts.kinds,
            "timed": counts.timed,
            "total_s": counts.total_s,
            "max_duration_s": counts.max_s,
            "histogram": [{"k": bucket, "n": n} for bucket, n in sorted(counts.buckets.items())],
        }
        for (name, _), counts in fold.commands.items()
    ]
    return sorted(rows, key=lambda row: ascending(row["command"]))


def failure_rows(fold: Fold, load: Callable[[list[str]], Iterable[Event]]) -> list[dict[str, Any]]:
    """What ``projections.failures``' pipeline gives: per (error type, command) a count and the latest."""
    ids = sorted({ev.event_id(failed.latest[1], failed.latest[2]) for failed in fold.failures.values()})
    events = {event.id: event for event in load(ids)}
    rows: list[dict[str, Any]] = []
    for (error_type, command, _), failed in fold.failures.items():
        at, run, seq = failed.latest
        event = events.get(ev.event_id(run, seq))  # None once pruned: its run and time remain
        found = event.data.get("error") if event is not None else None
        error: dict[str, Any] = found if isinstance(found, dict) else {}
        latest: dict[str, Any] = {
            "run": run,
            "node": event.node if event is not None else None,
            "attempt": event.attempt if event is not None else None,
            "message": error.get("message"),
            "at": event.at if event is not None else EPOCH + timedelta(milliseconds=at),
            "reason": error.get("reason"),
        }
        group = {"type": name_value(error_type), "command": name_value(command)}
        rows.append({"_id": group, "count": failed.count, "latest": latest})
    return sorted(rows, key=_most_first)


def _most_first(row: dict[str, Any]) -> tuple[int, tuple[bool, str], tuple[bool, str]]:
    """``failures``' order: most frequent first, then by error type and command (null first)."""
    return (-row["count"], ascending(row["_id"]["type"]), ascending(row["_id"]["command"]))


def ascending(value: str | None) -> tuple[bool, str]:
    """BSON's ascending order for a name or null: null first."""
    return (value is not None, value or "")
