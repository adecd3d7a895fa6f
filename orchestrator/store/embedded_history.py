"""The embedded store's history tables as its readers and its writer use them.

The writer folds its appends into the tables (``history.py``, ``rollups.py``) a
batch of appends at a time, not inside each append: an append's own
transaction then writes only its events, and the tables' pages are written once
for many appends (``FLUSH_EVENTS`` events, or ``FLUSH_S`` after the first one
waiting, or at close). A flush moves the tables' watermark, the last journal
row they hold, in its own transaction; so does the one-off indexing of a
journal from before the tables, and a writer that opens a journal another left
behind its watermark (it died before flushing) folds the rest in at once.

Readers are exact whatever the lag: the rows past the watermark (the writer's
pending events, or the journal's rows for a reader) are the tail, and each
answer merges the tables' with the tail's, folded by the same rules
(``tail.py``). The lag is bounded by ``FLUSH_EVENTS`` appended events while a
writer appends, and costs a reader only the tail's runs.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from orchestrator.core.events import Event
from orchestrator.core.run_query import RunQuery

from . import activity, history, rollups
from .tail import RunRow, matches, newest_first, row_of, stored

log = logging.getLogger("evenflow.store")

Window = tuple[int | None, int | None]
"""``[since, until)`` in ms since the epoch; None is an open end."""
FLUSH_EVENTS = 2048
"""Appended events a writer holds before folding them into the tables: the most a reader folds apart.
Fewer, larger folds cost less per event, and keep the appends that carry one (the callers that wait on
them) rarer than one in a hundred at a thousand calls a second (W5's p99); ~1,250 events took ~13 ms."""
FLUSH_S = 0.25
"""How long the first of them waits at most, as long as the writer appends."""


class Journal(Protocol):
    """What of the embedded store the tables are kept from."""

    path: Any

    def stored(self, ids: list[str]) -> Iterator[Event]: ...

    def rows_after(self, row: int) -> Iterator[tuple[int, Event]]:
        """The journal's rows after ``row`` and their events, in order (damaged ones left out)."""

    def last_row(self) -> int: ...


class History:
    """The tables of one open journal (``db``, used under ``lock``); ``writer`` if this process appends."""

    def __init__(self, journal: Journal, lock: threading.RLock, writer: bool) -> None:
        self._journal = journal
        self._lock = lock
        self._writer = writer
        self._pending: list[Event] | None = []
        """The events appended past the watermark, in order; None if one append's were not noted."""
        self._since = 0.0

    # --- the writer --------------------------------------------------------------------------------

    def open(self, db: sqlite3.Connection) -> None:
        """Index a journal from before the tables, or fold in what a dead writer left past the watermark."""
        if not history.built(db):
            history.create(db, afresh=True)
            through = self._journal.last_row()
            if through:
                log.info("indexing the events of %s once, for reading history", self._journal.path)
            events = (event for _, event in self._journal.rows_after(0))
            self._in_transaction(db, lambda: history.rebuild(db, events, through))
            return
        history.create(db)
        behind = list(self._journal.rows_after(history.watermark(db)))
        if behind:
            self._in_transaction(db, lambda: history.flush(db, [e for _, e in behind], behind[-1][0]))

    def appended(self, db: sqlite3.Connection, events: Sequence[Event]) -> None:
        """Note a committed append's events; fold the pending ones in when it is time. Never raises:
        the events are durable, and the tables catch up from the journal if they cannot be noted."""
        try:
            if self._pending is not None:
                if not self._pending:
                    self._since = time.monotonic()
                self._pending.extend(events)
            if self._pending is None or len(self._pending) >= FLUSH_EVENTS or self._due():
                self.flush(db)
        except Exception as exc:
            log.warning(
                "the history tables of %s stay behind the journal for now: %s", self._journal.path, exc
            )
            self._pending = None

    def flush(self, db: sqlite3.Connection) -> None:
        """Fold the events past the watermark in, in one transaction with the watermark."""
        if self._pending == []:
            return
        if self._pending is None:  # read them back
            rows = list(self._journal.rows_after(history.watermark(db)))
            pending = [event for _, event in rows]
        else:  # every append since the watermark noted: they are the rows up to the last
            pending = self._pending
        through = self._journal.last_row()
        self._in_transaction(db, lambda: history.flush(db, pending, through))
        self._pending = []

    def _due(self) -> bool:
        return time.monotonic() - self._since >= FLUSH_S

    # --- the readers ---------------------------------------------------------------------------------

    def page(self, db: sqlite3.Connection, query: RunQuery) -> list[str] | None:
        """The ids of a page of ``evenflow runs``: the tables' rows and the tail's, merged in page order."""
        if not history.built(db):
            return None
        rows = self._tail_rows(db)
        found = history.page(db, query, without=sorted(rows))
        found += [(row.run, row.submitted_at) for row in rows.values() if matches(row, query)]
        found.sort(key=lambda pair: newest_first(pair[1], pair[0]), reverse=True)
        return [run for run, _ in found[: query.limit]]

    def unfinished(self, db: sqlite3.Connection) -> list[str] | None:
        if not history.built(db):
            return None
        rows = self._tail_rows(db)
        found = [(run, at) for run, at in history.unfinished(db) if run not in rows]
        found += [
            (r.run, r.submitted_at)
            for r in rows.values()
            if r.state == history.RUNNING and r.submitted_at is not None
        ]
        return [run for run, _ in sorted(found, key=lambda pair: (pair[1], pair[0]))]

    def chain(self, db: sqlite3.Connection, correlation: str) -> list[str]:
        rows = self._tail_rows(db)
        tail = {row.run for row in rows.values() if row.correlation == correlation}
        return sorted(set(history.chain(db, correlation)) | tail)

    def window(self, db: sqlite3.Connection, since: int | None, until: int | None) -> rollups.Fold | None:
        """``stats`` and ``failures`` of ``[since, until)``: the rollups, and the tail's events in it."""
        if not history.built(db):
            return None
        fold = rollups.window(db, since, until, self._journal.stored)
        for event in self._tail(db):
            at = rollups.millis(event.at)
            if (
                event.type in rollups.COUNTED
                and (since is None or at >= since)
                and (until is None or at < until)
            ):
                fold.add(event, 0)
        return fold

    def counts(
        self, db: sqlite3.Connection, window: Window, bucket_ms: int, types: Sequence[str]
    ) -> list[dict[str, Any]] | None:
        """Throughput of ``window`` (ms; None is open): the counts, and the tail's events in it."""
        if not history.built(db):
            return None
        return activity.counts(db, *window, bucket_ms, types, self._tail(db))

    def work(self, db: sqlite3.Connection, window: Window) -> list[dict[str, Any]] | None:
        """Worker activity of ``[since, until)``: the worker hours, and the events they leave out."""
        if not history.built(db):
            return None
        return activity.work(db, *window, self._journal.stored, self._tail(db))

    def built(self, db: sqlite3.Connection) -> bool:
        return history.built(db)

    def states(self, db: sqlite3.Connection) -> dict[str, int] | None:
        """How many runs are in each state, exact: the table's counts, the tail's runs moved on."""
        if not history.built(db):
            return None
        counts: dict[str, int] = dict(
            db.execute("SELECT state, count(*) FROM runs GROUP BY state").fetchall()
        )
        for run, row in self._tail_rows(db).items():
            before = stored(db, run)
            if before is not None:
                counts[before.state] -= 1
            counts[row.state] = counts.get(row.state, 0) + 1
        return {state: n for state, n in sorted(counts.items()) if n}

    def _tail(self, db: sqlite3.Connection) -> list[Event]:
        if self._writer and self._pending is not None:
            return list(self._pending)
        return [event for _, event in self._journal.rows_after(history.watermark(db))]

    def _tail_rows(self, db: sqlite3.Connection) -> dict[str, RunRow]:
        """The rows of the runs the tail touches: each table row continued with the run's tail events."""
        by_run: dict[str, list[Event]] = {}
        for event in self._tail(db):
            by_run.setdefault(event.run, []).append(event)
        rows = ((run, row_of(run, events, stored(db, run))) for run, events in by_run.items())
        return {run: row for run, row in rows if row is not None}

    def _in_transaction(self, db: sqlite3.Connection, work: Callable[[], None]) -> None:
        """``work`` in one transaction, committed without waiting for the disk: the tables are made
        from the journal, and a fold lost to a power cut is done again from the watermark it moved (in
        WAL mode a later durable commit of the journal makes this one durable too, as frames are
        written in order)."""
        with self._lock:
            db.execute("PRAGMA synchronous=NORMAL")
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    work()
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
            finally:
                if db.in_transaction:  # a ROLLBACK that failed: try once more, or FULL cannot be set
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                if not db.in_transaction:
                    db.execute("PRAGMA synchronous=FULL")
