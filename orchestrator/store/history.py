"""Tables an embedded journal keeps beside its events, so reading history costs O(answer), not O(history).

They hold the journal up to a watermark, the last row folded in, which moves in
the same transaction as what it covers (``flush``); the rows after it are
folded apart by readers (``embedded_history.py``, ``tail.py``):

- ``runs``: one row per run, from its first event: when it was submitted, its
  flow's name, its state (``running`` until a terminal event names the end)
  and its correlation (the chain of listener runs it belongs to);
- ``run_names``: the commands a run dispatched and the error types its
  attempts failed with, the first ``MAX_LISTED`` of each in sorted order, as
  the ``runs`` read model lists them;
- the hourly rollups of ``stats`` and ``failures`` (``rollups.py``).

``page`` answers ``evenflow runs`` with any filter and cursor from those
indexes, newest first; the rows shown are then folded from each run's own
events. A journal written before these tables is indexed once, in one
transaction, by the first writer that opens it; until then a reader says so
(``built`` is False) and callers read the whole journal as before.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from orchestrator.core import events as ev
from orchestrator.core.events import Event
from orchestrator.core.run_query import RunQuery

from . import activity, rollups
from .rollups import millis

VERSION = 3
"""Of the tables below; a journal indexed by another version is indexed again."""
MAX_LISTED = 1_000
"""Names of each kind a run lists (``projections.run_status.MAX_LISTED``; a test keeps them equal)."""
STATE_OF = {ev.RUN_SUCCEEDED: "succeeded", ev.RUN_FAILED: "failed", ev.RUN_CANCELLED: "cancelled"}
RUNNING = "running"
COMMAND, ERROR_TYPE = "command", "error_type"

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS runs (run TEXT PRIMARY KEY, submitted_at INTEGER, flow TEXT,"
    " state TEXT NOT NULL, correlation TEXT, ended_at INTEGER)",
    "CREATE INDEX IF NOT EXISTS runs_ended ON runs (ended_at, run) WHERE ended_at IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS runs_newest ON runs (submitted_at DESC, run DESC)",
    "CREATE INDEX IF NOT EXISTS runs_state ON runs (state, submitted_at DESC, run DESC)",
    "CREATE INDEX IF NOT EXISTS runs_flow ON runs (flow, submitted_at DESC, run DESC)",
    "CREATE INDEX IF NOT EXISTS runs_correlation ON runs (correlation)",
    "CREATE TABLE IF NOT EXISTS run_names (run TEXT NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL,"
    " submitted_at INTEGER, PRIMARY KEY (run, kind, name)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS run_names_newest ON run_names (kind, name, submitted_at DESC, run DESC)",
)


def create(db: sqlite3.Connection, *, afresh: bool = False) -> None:
    """Create the tables; ``afresh`` drops them first (another version's, to be indexed again)."""
    if afresh:
        for table in ("runs", "run_names", *rollups.TABLES, *activity.TABLES):
            db.execute(f"DROP TABLE IF EXISTS {table}")
    for statement in (*SCHEMA, *rollups.SCHEMA, *activity.SCHEMA):
        db.execute(statement)


def built(db: sqlite3.Connection) -> bool:
    """Whether the tables hold the whole journal (indexed by this version)."""
    try:
        row = db.execute("SELECT value FROM meta WHERE key = 'history'").fetchone()
    except sqlite3.OperationalError:  # no such table: a journal from before
        return False
    return row is not None and row[0] == VERSION


def watermark(db: sqlite3.Connection) -> int:
    """The last journal row the tables hold; rows after it are the tail (``tail.py``)."""
    row = db.execute("SELECT value FROM meta WHERE key = 'watermark'").fetchone()
    return int(row[0]) if row is not None else 0


def flush(db: sqlite3.Connection, events: Sequence[Event], through: int) -> None:
    """Fold ``events`` (the journal rows after the watermark, through row ``through``) into the tables,
    moving the watermark with them: in the caller's transaction, so a crash loses neither or both."""
    index(db, events)
    db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('watermark', ?)", (through,))


def rebuild(db: sqlite3.Connection, events: Iterable[Event], through: int) -> None:
    """Index a whole journal (inside the caller's transaction): what a journal from before lacks."""
    for table in ("runs", "run_names", *rollups.TABLES, *activity.TABLES):
        db.execute(f"DELETE FROM {table}")
    batch: list[Event] = []
    for event in events:
        batch.append(event)
        if len(batch) >= 10_000:
            index(db, batch)
            batch.clear()
    flush(db, batch, through)
    db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('history', ?)", (VERSION,))


def index(db: sqlite3.Connection, events: Sequence[Event]) -> None:
    """Fold a batch into the tables and the rollups, inside the transaction that appends it."""
    _index_runs(db, events)
    rollups.index(db, events)
    activity.index(db, events)


def _index_runs(db: sqlite3.Connection, events: Sequence[Event]) -> None:
    noted: set[tuple[str, str, str]] = set()  # a fan-out names one command thousands of times
    for event in events:
        if event.type == ev.RUN_SUBMITTED:
            _submitted(db, event)
        elif event.seq == 1:  # a run's first event, without a submission: listed as the read model does
            db.execute("INSERT OR IGNORE INTO runs (run, state) VALUES (?, ?)", (event.run, RUNNING))
        name: tuple[str, str, str] | None = None
        if event.type == ev.COMMAND_DISPATCHED and event.command:
            name = (event.run, COMMAND, event.command)
        elif event.type == ev.COMMAND_FAILED:
            error_type = (event.data.get("error") or {}).get("type")
            if isinstance(error_type, str) and error_type:
                name = (event.run, ERROR_TYPE, error_type)
        if name is not None and name not in noted:
            noted.add(name)
            _name(db, *name)
        if event.type in STATE_OF:
            change = (STATE_OF[event.type], millis(event.at), event.run)
            db.execute("UPDATE runs SET state = ?, ended_at = ? WHERE run = ?", change)


def _submitted(db: sqlite3.Connection, event: Event) -> None:
    at, flow = millis(event.at), event.data.get("name")
    db.execute(
        "INSERT INTO runs (run, submitted_at, flow, state, correlation) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (run) DO UPDATE SET submitted_at = excluded.submitted_at, flow = excluded.flow,"
        " correlation = coalesce(runs.correlation, excluded.correlation)",
        (event.run, at, flow if isinstance(flow, str) else None, RUNNING, event.correlation),
    )
    if event.seq != 1:  # names noted before a late submission take its time
        db.execute("UPDATE run_names SET submitted_at = ? WHERE run = ?", (at, event.run))


def _name(db: sqlite3.Connection, run: str, kind: str, name: str) -> None:
    """Note a name of ``run``, keeping only the first ``MAX_LISTED`` of its kind in sorted order."""
    added = db.execute(
        "INSERT OR IGNORE INTO run_names (run, kind, name, submitted_at)"
        " SELECT ?, ?, ?, (SELECT submitted_at FROM runs WHERE run = ?)",
        (run, kind, name, run),
    ).rowcount
    if not added:
        return
    (count,) = db.execute("SELECT count(*) FROM run_names WHERE run = ? AND kind = ?", (run, kind)).fetchone()
    if count > MAX_LISTED:
        db.execute(
            "DELETE FROM run_names WHERE run = ? AND kind = ? AND name ="
            " (SELECT max(name) FROM run_names WHERE run = ? AND kind = ?)",
            (run, kind, run, kind),
        )


def page(
    db: sqlite3.Connection, query: RunQuery, without: Sequence[str] = ()
) -> list[tuple[str, int | None]]:
    """``(run, submitted_at)`` of up to ``query.limit`` runs matching it, newest first (``submitted_at``,
    then id), leaving out the runs ``without`` names (the tail's, folded apart)."""
    source, row, where, params = _source(query)
    if without:
        where.append(f"r.run NOT IN ({', '.join('?' * len(without))})")
        params += without
    for column, value in (("state", query.state), ("flow", query.flow)):
        if value is not None:
            where.append(f"r.{column} = ?")
            params.append(value)
    for op, bound in ((">=", query.since), ("<", query.until)):
        if bound is not None:
            where.append(f"{row}.submitted_at {op} ?")
            params.append(bound)
    if query.after is not None:
        clause, values = _after(row, *query.after)
        where.append(clause)
        params += values
    sql = (
        f"SELECT r.run, r.submitted_at FROM {source} {'WHERE ' + ' AND '.join(where) if where else ''}"
        f" ORDER BY {row}.submitted_at DESC, {row}.run DESC LIMIT ?"
    )
    return [(run, at) for run, at in db.execute(sql, (*params, query.limit))]


def _source(query: RunQuery) -> tuple[str, str, list[str], list[Any]]:
    """What to read: ``runs`` in order, or, with a name filter, that name's index in the same order."""
    names = [
        (kind, name)
        for kind, name in ((COMMAND, query.command), (ERROR_TYPE, query.error_type))
        if name is not None
    ]
    if not names:
        return "runs r", "r", [], []
    where, params = ["n.kind = ?", "n.name = ?"], list(names[0])
    for kind, name in names[1:]:
        where.append(
            "r.run IN (SELECT m.run FROM run_names m WHERE m.kind = ? AND m.name = ? AND m.run = r.run)"
        )
        params += (kind, name)
    return "run_names n JOIN runs r ON r.run = n.run", "n", where, params


def _after(row: str, submitted_at: int | None, run: str) -> tuple[str, list[Any]]:
    """Rows strictly after ``(submitted_at, run)`` newest first; a run never submitted sorts last."""
    at, name = f"{row}.submitted_at", f"{row}.run"
    if submitted_at is None:
        return f"({at} IS NULL AND {name} < ?)", [run]
    return f"({at} < ? OR ({at} = ? AND {name} < ?) OR {at} IS NULL)", [submitted_at, submitted_at, run]


def unfinished(db: sqlite3.Connection) -> list[tuple[str, int]]:
    """``(run, submitted_at)`` of submitted runs with no terminal event: O(open runs)."""
    rows = db.execute(
        "SELECT run, submitted_at FROM runs WHERE state = ? AND submitted_at IS NOT NULL", (RUNNING,)
    )
    return [(run, at) for run, at in rows]


def chain(db: sqlite3.Connection, correlation: str) -> list[str]:
    """The runs submitted with ``correlation`` (the listener runs of one chain), in no order."""
    return [run for (run,) in db.execute("SELECT run FROM runs WHERE correlation = ?", (correlation,))]
