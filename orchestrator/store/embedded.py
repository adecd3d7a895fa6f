"""The embedded default store: durable in a local directory, no server needed.

The log lives in an append-only SQLite journal (``events.sqlite3``, WAL, full
sync) holding each event as the BSON a MongoDB server would store, so values
come back exactly as they would from MongoDB. ``read`` and ``unfinished_runs``
answer from the journal through its primary key, so they stay fast however
long the log grows and always see the latest commit. Aggregation pipelines
run on ``.events``, an in-process mongomock mirror of the journal built on
first use: the engine never pays for it, projections get a real collection.

One writer per directory: it holds an exclusive ``flock`` on ``owner.lock``,
which the OS drops when the process dies, even by SIGKILL. Readers take no
lock, create nothing, open the journal read-only (also where they may not
write: ``reader.py``) and ``refresh()`` the mirror to follow a running writer.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from orchestrator.core import events as ev
from orchestrator.core.codec import is_text
from orchestrator.core.crashpoints import crash_point
from orchestrator.core.errors import ConcurrencyConflict, CorruptEvent, StoreUnavailable
from orchestrator.core.events import Event
from orchestrator.core.ports import Position
from orchestrator.core.retention import Pruned
from orchestrator.core.run_query import RunQuery

from . import journal, rollups
from .batched_sql import insert_rows
from .embedded_history import History
from .encoding import decode, decode_doc, encode_events, refusal, round_trip
from .feed import row_of
from .memory import plan_append, read_only_error
from .mongo import MongoStore, oldest_first
from .owner_lock import OwnerLock
from .prune import prune as prune_runs
from .reader import Snapshot, open_to_read
from .subset import SubsetEvents

CHECKPOINTS_KEPT = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'checkpoints'"
"""Whether the journal has its table of checkpoints yet (a read-only open never creates it)."""

log = logging.getLogger("evenflow.store")

JOURNAL = "events.sqlite3"


class EmbeddedStore:
    """An ``EventStore`` in ``home``: a SQLite journal, mirrored into mongomock as ``.events`` on demand."""

    def __init__(self, home: str | os.PathLike[str], read_only: bool = False) -> None:
        self.home = Path(home)
        self.path = self.home / JOURNAL
        self.read_only = read_only
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        self._mirror: MongoStore | None = None
        self._mirrored_rowid = 0
        self._seen_rowid = 0
        self._snapshot: Snapshot | None = None
        self._history = History(self, self._lock, writer=not read_only)
        self._owner = None if read_only else OwnerLock.acquire(self.home)
        if self._owner is not None:
            crash_point("after-lease-acquired")  # the owner lock is the embedded store's lease
        try:
            self._db = self._open_reader() if read_only else self._open_writer()
            self._seen_rowid = self._max_rowid()
            if not read_only:
                self._history.open(self._db)
        except BaseException:
            self.close()
            raise

    @property
    def events(self) -> Any:
        """The ``events`` collection (mongomock) for aggregation pipelines, loaded on first use."""
        with self._lock:
            if self._mirror is None:
                from .faithful_mock import client as mock_client

                client: Any = mock_client()
                self._mirror = MongoStore(client["evenflow"]["events"], client=client, label=str(self.home))
                self._mirror_new_rows()
            return self._mirror.events

    def append(self, events: Sequence[Event]) -> None:
        if self.read_only:
            raise read_only_error(f"embedded store in {self.home}")
        with self._lock:
            db = self._open_db()
            conflict, written = None, events
            try:  # the common case: nothing of this batch is stored yet, so no lookup first
                self._commit(db, events)
            except ConcurrencyConflict:
                stored = {event.id: event for event in self.stored([e.id for e in events])}
                written, conflict = plan_append(events, stored, round_trip)
                if written:
                    self._commit(db, written)
            if self._mirror is not None and written:  # the writer's mirror follows its own appends
                self._mirror.events.insert_many([decode_doc(blob) for blob in encode_events(written)])
        if conflict is not None:
            raise conflict

    def run_page(self, query: RunQuery) -> list[str] | None:
        with self._lock:
            return self._history.page(self._open_db(), query)

    @property
    def indexed_events(self) -> Any:
        """``events`` for pipelines, loading only the runs a first ``$match`` names (``subset.py``)."""
        with self._lock:
            return SubsetEvents(self) if self._history.built(self._open_db()) else self.events

    def command_rows(self, since: int | None, until: int | None) -> list[dict[str, Any]] | None:
        with self._lock:
            fold = self._history.window(self._open_db(), since, until)
        return None if fold is None else rollups.command_rows(fold)

    def failure_rows(self, since: int | None, until: int | None) -> list[dict[str, Any]] | None:
        with self._lock:
            fold = self._history.window(self._open_db(), since, until)
        return None if fold is None else rollups.failure_rows(fold, self.stored)

    def throughput_rows(
        self, since: int | None, until: int | None, bucket_ms: int, types: Sequence[str]
    ) -> list[dict[str, Any]] | None:
        with self._lock:
            return self._history.counts(self._open_db(), (since, until), bucket_ms, types)

    def worker_rows(self, since: int | None, until: int | None) -> list[dict[str, Any]] | None:
        with self._lock:
            return self._history.work(self._open_db(), (since, until))

    def run_states(self) -> dict[str, int] | None:
        with self._lock:
            return self._history.states(self._open_db())

    def chain(self, correlation: str) -> list[str]:
        """The runs submitted with ``correlation`` (from the history tables)."""
        with self._lock:
            return self._history.chain(self._open_db(), correlation)

    def prune(
        self, before: datetime, *, dry_run: bool = False, keep: Callable[[list[str]], None] | None = None
    ) -> Pruned:
        """Remove whole runs that ended before ``before`` (``prune.py``): the writer only."""
        if self.read_only:
            raise read_only_error(f"embedded store in {self.home}")
        with self._lock:
            db = self._open_db()
            self._history.flush(db)
        done = prune_runs(  # the lock is held a batch at a time: appends go on between
            db,
            before,
            dry_run=dry_run,
            recorded=lambda new: self._history.appended(db, new),
            lock=self._lock,
            keep=keep,
        )
        with self._lock:
            if done.records and self._mirror is not None:  # it still holds what went
                self._mirror.close()
                self._mirror = None
        return done

    def run_blobs(self, run: str) -> list[bytes]:
        """The stored BSON of ``run``'s events, in ``seq`` order (damaged ones too, as stored)."""
        if not is_text(run):
            return []
        rows = self._query(journal.READ, (ev.event_id(run, 0), run + "/\uffff", run), f"reading run {run!r}")
        return [row[4] for row in rows]

    def read(self, run: str, after_seq: int = 0) -> list[Event]:
        if not is_text(run):  # no run has such an id, and SQLite cannot take it
            return []
        bounds = (ev.event_id(run, after_seq), run + "/\uffff", run)
        rows = self._query(journal.READ, bounds, f"reading run {run!r}")
        return [decode(journal.loaded_doc(*row)) for row in rows]

    def unfinished_runs(self) -> list[str]:
        with self._lock:
            found = self._history.unfinished(self._open_db())
        if found is not None:
            return found
        terminal = sorted(ev.RUN_TERMINAL)  # a journal from before the history tables
        query = journal.UNFINISHED.format(", ".join("?" * len(terminal)))
        rows = self._query(query, (ev.RUN_SUBMITTED, *terminal), "listing unfinished runs")
        started = {run: journal.submitted_at(blob) for run, blob in rows}
        return sorted(started, key=lambda run: oldest_first(run, started[run]))

    def read_feed(
        self, position: Position | None, patterns: Sequence[str], limit: int
    ) -> tuple[list[Event], Position]:
        """Positions are journal rowids (``{"row": n}``): one process writes, so commit order is exact.

        A row that does not decode is skipped (and logged): reading its run names the damage.
        """
        after = row_of(position)
        ((top,),) = self._query("SELECT coalesce(max(rowid), 0) FROM events", (), "reading the feed")
        globs = " OR ".join("type GLOB ?" for _ in patterns) or "1"
        rows = self._query(
            f"SELECT rowid, {journal.COLUMNS} FROM events WHERE rowid > ? AND rowid <= ? AND ({globs}) "
            "ORDER BY rowid LIMIT ?",
            (after, top, *patterns, limit),
            "reading the feed",
        )
        found: list[Event] = []
        for row in rows:
            try:
                found.append(decode(journal.loaded_doc(*row[1:])))
            except CorruptEvent as exc:
                log.error("the feed skips a damaged event: %s", exc)
        end = rows[-1][0] if len(rows) >= limit else top
        return found, {"row": max(int(end), after)}

    def feed_head(self, patterns: Sequence[str]) -> Position:
        return {"row": self._max_rowid()}

    def load_checkpoint(self, name: str) -> Position | None:
        if not self._query(CHECKPOINTS_KEPT, (), "reading checkpoints"):
            return None
        rows = self._query("SELECT position FROM checkpoints WHERE name = ?", (name,), "reading a checkpoint")
        return json.loads(rows[0][0]) if rows else None

    def checkpoint_names(self) -> list[str]:
        """The names listeners saved places under, sorted."""
        if not self._query(CHECKPOINTS_KEPT, (), "listing checkpoints"):
            return []
        return [row[0] for row in self._query("SELECT name FROM checkpoints ORDER BY name", (), "listing")]

    def save_checkpoint(self, name: str, position: Position) -> None:
        if self.read_only:
            raise read_only_error(f"embedded store in {self.home}")
        row_of(position)
        self._query(
            "INSERT INTO checkpoints (name, position) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET position = excluded.position",
            (name, json.dumps(position)),
            "saving a checkpoint",
        )

    def scan(self, on_corrupt: Callable[[str, CorruptEvent], None] | None = None) -> Iterator[Event]:
        """Every event in the journal, in the order it was committed (for rebuilding read models).

        A row that does not decode raises ``CorruptEvent``, unless ``on_corrupt``
        is given: then it is told the run and the error, and the scan goes on.
        Rows are read ``journal.PAGE`` at a time, so a scan holds a page, not the log.
        """
        after = 0
        while rows := self._query(
            journal.ROWS_AFTER + " LIMIT ?", (after, journal.PAGE), "reading the journal"
        ):
            after = rows[-1][0]
            for row in rows:
                try:
                    yield decode(journal.loaded_doc(*row[1:]))
                except CorruptEvent as exc:
                    if on_corrupt is None:
                        raise
                    on_corrupt(row[2], exc)

    def refresh(self) -> int:
        """Count the events a running writer committed since the last refresh; bring ``.events`` up to date.

        ``read`` and ``unfinished_runs`` always see the latest commit; the
        mirror behind ``.events`` moves only here. A writer holds every event
        of its store already, so for it this returns 0.
        """
        if not self.read_only:
            return 0
        with self._lock:
            ((gained, latest),) = self._query(
                "SELECT count(*), coalesce(max(rowid), ?) FROM events WHERE rowid > ?",
                (self._seen_rowid, self._seen_rowid),
                "looking for new events",
            )
            self._seen_rowid = int(latest)
            if self._mirror is not None:
                self._mirror_new_rows()
            return int(gained)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                if not self.read_only:
                    with contextlib.suppress(sqlite3.Error):  # what is not folded in now, the next open is
                        self._history.flush(self._db)
                self._db.close()
                self._db = None
            if self._mirror is not None:
                self._mirror.close()
                self._mirror = None
            if self._owner is not None:
                self._owner.release()
                self._owner = None

    def _open_writer(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute(journal.SCHEMA)
            db.execute(journal.CHECKPOINTS)
        except sqlite3.Error as exc:
            raise StoreUnavailable(
                f"cannot open the embedded journal {self.path} to write: {exc}; check that this user may "
                f"write to {self.home}, or give another --home / EVENFLOW_HOME"
            ) from exc
        return db

    def _open_reader(self) -> sqlite3.Connection:
        db, self._snapshot = open_to_read(self.path)
        return db

    def _open_db(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreUnavailable(f"the embedded store in {self.home} is closed")
        if self._snapshot is not None and self._snapshot.stale():  # a writer has been at it: read afresh
            fresh = self._open_reader()
            self._db.close()
            self._db = fresh
        return self._db

    def _query(self, sql: str, params: Sequence[Any], doing: str) -> list[Any]:
        with self._lock:
            try:
                return self._open_db().execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"the embedded journal {self.path} failed {doing}: {exc}") from exc

    def _max_rowid(self) -> int:
        (row,) = self._query("SELECT coalesce(max(rowid), 0) FROM events", (), "finding its last event")
        return int(row[0])

    def _mirror_new_rows(self) -> None:
        assert self._mirror is not None
        rows = self._query(journal.ROWS_AFTER, (self._mirrored_rowid,), "loading events")
        if rows:
            self._mirror.events.insert_many([journal.loaded_doc(*row[1:]) for row in rows])
            self._mirrored_rowid = rows[-1][0]

    def rows_after(self, row: int) -> Iterator[tuple[int, Event]]:
        """The journal's rows after ``row`` and their events, in order (damaged ones left out)."""
        for found in self._query(journal.ROWS_AFTER, (row,), "reading the journal"):
            with contextlib.suppress(CorruptEvent):
                yield found[0], decode(journal.loaded_doc(*found[1:]))

    def last_row(self) -> int:
        return self._max_rowid()

    def stored(self, ids: list[str]) -> Iterator[Event]:
        """The stored events among ``ids``, looked up by primary key."""
        for start in range(0, len(ids), journal.IN_CHUNK):
            chunk = ids[start : start + journal.IN_CHUNK]
            marks = ", ".join("?" * len(chunk))
            for row in self._query(
                f"SELECT {journal.COLUMNS} FROM events WHERE id IN ({marks})", chunk, "reading"
            ):
                yield decode(journal.loaded_doc(*row))

    def _commit(self, db: sqlite3.Connection, events: Sequence[Event]) -> None:
        """One transaction per append: the group commit that makes batching pay. The history tables
        take its events afterwards (``embedded_history.py``). An event the log refuses refuses the
        whole append (each refused one named), as on MongoDB, where they are checked before sending."""
        refused: list[tuple[Event, str]] = []
        try:
            db.execute("BEGIN IMMEDIATE")
            insert_rows(db, journal.INSERT_INTO, journal.row_stream(events, refused))
            if refused:
                raise refusal(refused)
            crash_point("mid-batch")  # the transaction is not committed: the whole batch is lost
            db.execute("COMMIT")
        except BaseException as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            if not isinstance(exc, sqlite3.Error):
                raise
            if isinstance(exc, sqlite3.IntegrityError):
                raise ConcurrencyConflict(
                    f"the embedded journal {self.path} already holds an event of this append, written "
                    "by a process that does not own the store; re-read the runs"
                ) from exc
            raise StoreUnavailable(f"the embedded journal {self.path} refused an append: {exc}") from exc
        self._history.appended(db, events)
