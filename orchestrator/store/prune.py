"""Retention on the embedded store: removing whole finished runs, in batches, each with its own record.

``prune`` removes runs that ended before a cutoff — never an unfinished one,
never part of a run (a run's events go in one transaction), never a run whose
events a listener's checkpoint has not passed yet. Each batch is one
transaction that also writes its record: a run of flow ``evenflow.prune``,
submitted and succeeded at once, whose result names the runs it removed; so a
kill between batches leaves whole runs, each batch done or not, and running
``prune`` again goes on. The hourly rollups are kept, so ``stats`` and
``failures`` still count the pruned runs' whole hours; a window that starts or
ends inside a pruned hour counts only that hour's remaining events.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime
from typing import Any

from orchestrator.core import events as ev
from orchestrator.core.crashpoints import crash_point
from orchestrator.core.events import Event
from orchestrator.core.retention import Pruned

from . import journal
from .batched_sql import insert_rows
from .rollups import millis

FLOW = "evenflow.prune"
"""The flow name of the runs that record a prune (``evenflow runs --flow evenflow.prune``)."""
BATCH = 500
LISTED = 1_000
"""Run ids a record lists; beyond, it gives the count."""


def prune(
    db: sqlite3.Connection,
    before: datetime,
    *,
    dry_run: bool = False,
    batch: int | None = None,
    recorded: Callable[[list[Event]], None] = lambda events: None,
    lock: AbstractContextManager[Any] | None = None,
    keep: Callable[[list[str]], None] | None = None,
) -> Pruned:
    """Remove the runs that ended before ``before``, ``batch`` runs a transaction; ``recorded`` is told
    of each record's events once committed (so the history tables take them in). ``lock`` is held for
    each batch alone, so a writer sharing ``db`` appends between batches."""
    held = lock if lock is not None else nullcontext()
    with held:
        cutoff, floor = millis(before), _listeners_floor(db)
    runs = events = kept = 0
    records: list[str] = []
    after: tuple[int, str] = (-(2**62), "")
    chosen: list[tuple[str, int]] = []
    while True:
        with held:
            found = _ended(db, cutoff, after, batch or BATCH)
            if not found:
                break
            after = found[-1][::-1]
            chosen, needed = _free(db, [run for run, _ in found], floor)
            kept += needed
            runs, events = runs + len(chosen), events + sum(count for _, count in chosen)
            if chosen and not dry_run:
                if keep is not None:  # archived before they go: a kill between leaves them archived twice
                    keep([run for run, _ in chosen])
                records.append(_remove(db, chosen, before, recorded))
        if chosen and not dry_run:
            crash_point("prune-batch")
    if records:
        _forget_moments(db, cutoff, held)
    return Pruned(runs, events, kept, tuple(records))


def _forget_moments(db: sqlite3.Connection, cutoff: int, held: AbstractContextManager[Any]) -> None:
    """Drop the partial hours' index of what went, ``BATCH`` rows at a time (the lock between)."""
    gone = "NOT EXISTS (SELECT 1 FROM events WHERE events.id = timeline.id)"
    chosen = f"SELECT rowid FROM timeline WHERE at < ? AND {gone} LIMIT ?"
    while True:
        with held:
            if not db.execute(
                f"DELETE FROM timeline WHERE rowid IN ({chosen})", (cutoff, BATCH * 20)
            ).rowcount:
                return


_LAST = "SELECT max(rowid), count(*) FROM events WHERE id > ? AND id < ? AND run = ?"


def _bounds(run: str) -> tuple[str, str, str]:
    return ev.event_id(run, 0), run + "/\uffff", run


def _ended(db: sqlite3.Connection, cutoff: int, after: tuple[int, str], batch: int) -> list[tuple[str, int]]:
    rows = db.execute(
        "SELECT run, ended_at FROM runs WHERE ended_at IS NOT NULL AND ended_at < ? AND state != 'running'"
        " AND (ended_at, run) > (?, ?) ORDER BY ended_at, run LIMIT ?",
        (cutoff, *after, batch),
    )
    return [(run, ended) for run, ended in rows]


def _free(db: sqlite3.Connection, found: list[str], floor: int | None) -> tuple[list[tuple[str, int]], int]:
    """The runs of ``found`` no listener still needs, with their event counts; and how many it needs."""
    chosen, needed = [], 0
    for run in found:
        last, count = db.execute(_LAST, _bounds(run)).fetchone()
        if floor is not None and last is not None and last > floor:
            needed += 1  # a listener has yet to read some of it
        else:
            chosen.append((run, count))
    return chosen, needed


def _listeners_floor(db: sqlite3.Connection) -> int | None:
    """The journal row the furthest-behind listener has read to; None when no listener has a checkpoint."""
    rows = [json.loads(text).get("row", 0) for (text,) in db.execute("SELECT position FROM checkpoints")]
    return min(rows, default=None)


def _remove(
    db: sqlite3.Connection,
    chosen: Sequence[tuple[str, int]],
    before: datetime,
    recorded: Callable[[list[Event]], None],
) -> str:
    """One batch in one transaction: the runs' events and history rows go, the record comes."""
    record = record_of([run for run, _ in chosen], sum(count for _, count in chosen), before)
    db.execute("BEGIN IMMEDIATE")
    try:
        for run, _ in chosen:
            db.execute("DELETE FROM events WHERE id > ? AND id < ? AND run = ?", _bounds(run))
            db.execute("DELETE FROM runs WHERE run = ?", (run,))
            db.execute("DELETE FROM run_names WHERE run = ?", (run,))
        insert_rows(db, journal.INSERT_INTO, journal.rows_of(record))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    recorded(record)
    return record[0].run


def record_of(runs: list[str], count: int, before: datetime) -> list[Event]:
    """The run that records one batch: submitted and succeeded, its result what went."""
    now = ev.utcnow()
    run = f"pruned-{now:%Y%m%dT%H%M%S}-{secrets.token_hex(4)}"
    flow = {"root": "r", "nodes": [_NODE]}
    result: dict[str, Any] = {
        "finished_before": before.astimezone(UTC),
        "runs": len(runs),
        "events": count,
        "removed": runs[:LISTED],
    }
    return [
        Event(run, 1, ev.RUN_SUBMITTED, now, data={"flow": flow, "name": FLOW}),
        Event(run, 2, ev.RUN_SUCCEEDED, now, data={"result": result}),
    ]


_NODE: dict[str, Any] = {
    "path": "r",
    "parent": None,
    "kind": "call",
    "command": FLOW,
    "args": [],
    "kwargs": {},
    "retry": None,
    "timeout_s": None,
    "route": None,
    "key": None,
    "immutable": False,
}
"""The one node of a record's flow (it is never run: the record is logged done)."""
