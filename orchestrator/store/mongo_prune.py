"""Retention on MongoDB: removing whole finished runs, a batch of runs at a time, each batch logged.

As on the embedded store (``prune.py``): only runs that ended before the
cutoff, never an unfinished one, never one a listener may not have read yet
(any of its events stamped after the furthest-behind checkpoint's mark less the
feed's window; a listener that has not read yet keeps every run). Each batch
first logs its record (a run of flow ``evenflow.prune`` naming the runs), then
deletes their events with one ``delete_many`` on ``run`` and their ``runs``
documents: without a transaction, a kill between the two leaves a record of
runs still there, which the next prune removes and records again. MongoDB
keeps no rollups: ``stats`` and ``failures`` count only what remains.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from orchestrator.core import events as ev
from orchestrator.core.events import Event
from orchestrator.core.retention import Pruned

from .feed import FeedWindow
from .prune import BATCH, record_of

READ_MODELS = ("runs",)
"""Collections beside the log keyed by run id, whose documents go with the run."""


def prune(
    events: Any,
    database: Any,
    before: datetime,
    *,
    window_ms: int,
    append: Callable[[Sequence[Event]], None],
    dry_run: bool = False,
    batch: int | None = None,
    keep: Callable[[list[str]], None] | None = None,
) -> Pruned:
    """Remove the runs of ``events`` that ended before ``before`` (see the module)."""
    floor = _listeners_floor(database, window_ms)
    ended = events.find(
        {"type": {"$in": sorted(ev.RUN_TERMINAL)}, "at": {"$lt": before}}, {"run": 1, "_id": 0}
    )
    candidates = sorted({doc["run"] for doc in ended})
    runs = removed = kept = 0
    records: list[str] = []
    for start in range(0, len(candidates), batch or BATCH):
        group = candidates[start : start + (batch or BATCH)]
        counts, newest = _sizes(events, group)
        chosen = [run for run in group if floor is None or newest[run] <= floor]
        kept += len(group) - len(chosen)
        runs, removed = runs + len(chosen), removed + sum(counts[run] for run in chosen)
        if chosen and not dry_run:
            if keep is not None:
                keep(chosen)
            record = record_of(chosen, sum(counts[run] for run in chosen), before)
            append(record)
            events.delete_many({"run": {"$in": chosen}})
            for name in READ_MODELS:
                database[name].delete_many({"_id": {"$in": chosen}})
            records.append(record[0].run)
    return Pruned(runs, removed, kept, tuple(records))


def _sizes(events: Any, runs: list[str]) -> tuple[dict[str, int], dict[str, datetime]]:
    """Each run's event count and newest stamp, in one pass over its events (``run_seq`` index)."""
    counts: dict[str, int] = dict.fromkeys(runs, 0)
    newest: dict[str, datetime] = {}
    for doc in events.find({"run": {"$in": runs}}, {"run": 1, "at": 1, "_id": 0}):
        counts[doc["run"]] += 1
        at = doc["at"]
        newest[doc["run"]] = max(newest.get(doc["run"], at), at)
    return counts, newest


def _listeners_floor(database: Any, window_ms: int) -> Any:
    """The newest stamp every listener has surely read past; None when no listener has a checkpoint."""
    marks = [
        (doc.get("position") or {}).get("at")
        for doc in database["checkpoints"].find({"_id": {"$type": "string"}})
    ]
    if not marks:
        return None
    read = [int(mark) for mark in marks if mark is not None]
    if len(read) < len(marks):  # one has read nothing yet: keep everything
        return FeedWindow.moment(-(2**40))
    return FeedWindow.moment(min(read) - window_ms)
