"""Runs whose latest events the history tables do not hold yet, folded in Python by the tables' rules.

The writer folds its appends into the tables a batch of appends at a time
(``embedded_history.py``), so the journal may hold events past the tables'
watermark: those a writer has not flushed yet, or left behind when it died.
Every reader covers them: for each run they touch it continues the row the
tables hold with those events, exactly as ``history.py`` would index them, and
merges the result into what the tables answer.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field

from orchestrator.core import events as ev
from orchestrator.core.events import Event
from orchestrator.core.run_query import RunQuery

from .history import COMMAND, MAX_LISTED, RUNNING, STATE_OF
from .rollups import millis


@dataclass(slots=True)
class RunRow:
    """What the ``runs`` and ``run_names`` tables hold of one run."""

    run: str
    submitted_at: int | None = None
    flow: str | None = None
    state: str = RUNNING
    correlation: str | None = None
    commands: set[str] = field(default_factory=set)
    error_types: set[str] = field(default_factory=set)


def stored(db: sqlite3.Connection, run: str) -> RunRow | None:
    """The row the tables hold of ``run`` (its events up to the watermark); None if they hold none."""
    found = db.execute(
        "SELECT submitted_at, flow, state, correlation FROM runs WHERE run = ?", (run,)
    ).fetchone()
    if found is None:
        return None
    row = RunRow(run, *found)
    for kind, name in db.execute("SELECT kind, name FROM run_names WHERE run = ?", (run,)):
        (row.commands if kind == COMMAND else row.error_types).add(name)
    return row


def row_of(run: str, events: Iterable[Event], start: RunRow | None = None) -> RunRow | None:
    """The row ``history.index`` makes of ``run`` from ``events``, continuing ``start`` (the row of the
    events before them; None: they are all of its events); None if it makes none."""
    row = start
    for event in events:
        if row is None and (event.type == ev.RUN_SUBMITTED or event.seq == 1):
            row = RunRow(run)
        if row is None:
            continue
        if event.type == ev.RUN_SUBMITTED:
            name = event.data.get("name")
            row.submitted_at, row.flow = millis(event.at), name if isinstance(name, str) else None
            row.correlation = row.correlation if row.correlation is not None else event.correlation
        elif event.type == ev.COMMAND_DISPATCHED and event.command:
            row.commands.add(event.command)
        elif event.type == ev.COMMAND_FAILED:
            error_type = (event.data.get("error") or {}).get("type")
            if isinstance(error_type, str) and error_type:
                row.error_types.add(error_type)
        elif event.type in STATE_OF:
            row.state = STATE_OF[event.type]
    if row is not None:  # the first MAX_LISTED names of each kind, as the tables keep them
        row.commands = set(sorted(row.commands)[:MAX_LISTED])
        row.error_types = set(sorted(row.error_types)[:MAX_LISTED])
    return row


def matches(row: RunRow, query: RunQuery) -> bool:
    """Whether ``row`` belongs on the pages ``query`` asks for (its filters and cursor)."""
    at = row.submitted_at
    checks = (
        query.state is None or row.state == query.state,
        query.flow is None or row.flow == query.flow,
        query.command is None or query.command in row.commands,
        query.error_type is None or query.error_type in row.error_types,
        query.since is None or (at is not None and at >= query.since),
        query.until is None or (at is not None and at < query.until),
        query.after is None or newest_first(at, row.run) < newest_first(*query.after),
    )
    return all(checks)


def newest_first(submitted_at: int | None, run: str) -> tuple[bool, int, str]:
    """A key that sorts runs in reverse of the pages' order (sort with ``reverse=True`` for pages)."""
    return (submitted_at is not None, submitted_at or 0, run)
