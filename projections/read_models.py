"""The ``runs`` read model: kept up to date as batches land, rebuilt or caught up from the log.

``RunsProjector.apply`` is the engine's after-append hook. For the runs in a
batch it folds the new events into each run's tally (``run_tally.py``) and
writes the changed documents with one unordered bulk upsert. It is idempotent
through ``last_seq``: events at or below the stored ``last_seq`` are skipped,
and a write never replaces a newer document (``documents.upsert_newer``), so a
replayed batch changes nothing.

Tallies of unfinished runs (and a few recently finished ones) stay in memory,
so a turn costs no read. A run not in memory is read back from ``runs`` by
``_id``; if its stored document is behind the batch (a lost write, a run
resumed after a restart) the missing events are read from the event store
through ``read_log`` (``EventStore.read``, which on the embedded store is a
primary-key lookup in SQLite, never the mongomock mirror).

Where ``runs`` lives: beside the log on a server (a PyMongo collection, bulk
upserts); on mongomock or in memory, a ``MemoryRuns`` whose writes are dict
assignments (mongomock would scan every document per write).

``rebuild_runs`` recomputes every document with the ``run_status`` pipeline;
``catch_up`` recomputes only the runs whose document is behind the log (after a
crash). Both give what the projector maintains, field for field.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from orchestrator.core.events import Event

from .documents import Documents, chunks, stored_docs, upsert_newer
from .indexes import ensure_indexes
from .memory_runs import MemoryRuns
from .run_status import RUNNING, RunStatus, run_status_pipeline
from .run_tally import RunTally

log = logging.getLogger("evenflow.projections")

ReadLog = Callable[[str, int], Sequence[Event]]
"""``EventStore.read``: a run's events after a seq, in order."""

RECENT_RUNS = 256
"""Finished runs whose tallies stay in memory, for the late outcomes they still receive."""
RUNS_PER_QUERY = 500
"""Runs per ``$in`` when recomputing documents; bounds each query and each bulk write."""


class RunsProjector:
    """Keeps ``runs`` up to date from batches of durable events (the engine's ``on_append``)."""

    def __init__(self, runs: Documents, *, read_log: ReadLog | None = None) -> None:
        self.runs = runs
        self._read_log = read_log
        self._live: dict[str, RunTally] = {}
        self._recent: OrderedDict[str, RunTally] = OrderedDict()
        self.written = 0
        """Documents written so far (a replayed batch writes none)."""

    @classmethod
    def beside(cls, events: Any, *, read_log: ReadLog | None = None) -> RunsProjector:
        """A projector writing ``runs`` in the database of the ``events`` collection (``runs_beside``)."""
        return cls(runs_beside(events), read_log=read_log)

    @classmethod
    def in_memory(cls, collection: Any, *, read_log: ReadLog | None = None) -> RunsProjector:
        """A projector writing a private in-process ``runs``: a ``MemoryRuns`` over ``collection``
        (an empty mongomock one, as ``orchestrator.store.faithful_mock`` makes)."""
        runs = MemoryRuns(collection)
        ensure_indexes({"runs": runs})
        return cls(runs, read_log=read_log)

    def apply(self, events: Sequence[Event]) -> None:
        """Fold a durable batch into the read model (``written`` counts the documents written).

        On any failure the batch's runs are forgotten in memory (what landed is
        not known) and the error is raised; the next batch of those runs starts
        from the stored documents and the log.
        """
        batch: dict[str, list[Event]] = {}
        for event in events:
            batch.setdefault(event.run, []).append(event)
        try:
            tallies = self._tallies(batch)
            changed = [
                folded
                for run, run_events in batch.items()
                if (folded := self._fold(tallies.get(run) or RunTally(run), run_events)) is not None
            ]
            skipped = upsert_newer(self.runs, [tally.status().to_doc() for tally in changed])
        except Exception:
            for run in batch:
                self._forget(run)
            raise
        for tally in changed:
            if tally.run in skipped:  # the stored document is newer than this tally
                self._forget(tally.run)
            else:
                self._remember(tally)
        self.written += len(changed) - len(skipped)

    def _fold(self, tally: RunTally, events: list[Event]) -> RunTally | None:
        """The tally with ``events`` folded in; None if nothing is new or the gap cannot be filled."""
        fresh = [event for event in events if event.seq > tally.last_seq]
        if not fresh:
            return None
        if not tally.follows(fresh) and self._read_log is not None:
            fresh = list(self._read_log(tally.run, tally.last_seq))  # the events it missed, and these
        if not tally.follows(fresh):
            log.warning(
                "read model of run %s lags the log (seq %d); catch_up fills it", tally.run, tally.last_seq
            )
            self._forget(tally.run)
            return None
        for event in fresh:
            tally.add(event)
        return tally

    def _tallies(self, batch: dict[str, list[Event]]) -> dict[str, RunTally]:
        """Tallies of the batch's runs: from memory, else stored; a run starting in the batch has none."""
        found = {run: tally for run in batch if (tally := self._live.get(run) or self._recent.get(run))}
        missing = [run for run, events in batch.items() if run not in found and events[0].seq > 1]
        if missing:
            for doc in stored_docs(self.runs, missing):
                found[doc["_id"]] = RunTally.from_doc(doc)
        return found

    def _remember(self, tally: RunTally) -> None:
        if tally.state == RUNNING:
            self._live[tally.run] = tally
            return
        self._live.pop(tally.run, None)
        self._recent[tally.run] = tally
        self._recent.move_to_end(tally.run)
        while len(self._recent) > RECENT_RUNS:
            self._recent.popitem(last=False)

    def _forget(self, run: str) -> None:
        self._live.pop(run, None)
        self._recent.pop(run, None)


def runs_beside(events: Any) -> Documents:
    """The ``runs`` collection in the database of ``events``, indexed, as projections should write it.

    On a server, the PyMongo collection. On mongomock, a ``MemoryRuns`` over
    it: one ``MemoryRuns`` per process and collection, so query it through the
    object returned here (a rebuild into the bare mongomock collection would
    scan it once per document written).
    """
    runs = events.database["runs"]
    if not _is_pymongo(runs):
        key = (id(runs.database.client), runs.database.name)  # the MemoryRuns keeps the client alive
        runs = _MEMORY_RUNS.get(key) or _MEMORY_RUNS.setdefault(key, MemoryRuns(runs))
    ensure_indexes({"runs": runs})
    return runs


_MEMORY_RUNS: dict[tuple[int, str], MemoryRuns] = {}
"""One ``MemoryRuns`` per mongomock database in this process, so every handle sees the same documents."""


def rebuild_runs(events: Documents, runs: Documents) -> int:
    """Drop every document of ``runs`` and recompute them all from the log; returns how many.

    The documents are deleted rather than the collection dropped, so its
    indexes stay. Writes go through ``upsert_newer``: an engine writing a newer
    version meanwhile keeps it.
    """
    runs.delete_many({})
    written = 0
    for docs in chunks(events.aggregate(run_status_pipeline(), allowDiskUse=True), RUNS_PER_QUERY):
        written += len(docs) - len(upsert_newer(runs, docs))
    return written


def catch_up(events: Documents, runs: Documents) -> list[str]:
    """Recompute the documents of runs whose ``last_seq`` is behind the log; returns those runs.

    The log's last seq per run comes from ``LAST_SEQ_PIPELINE``, which the
    ``run_seq`` index answers on a server without reading events.
    """
    heads = {doc["_id"]: doc["last_seq"] for doc in events.aggregate(LAST_SEQ_PIPELINE, allowDiskUse=True)}
    stored = {doc["_id"]: doc.get("last_seq", 0) for doc in runs.find({}, {"last_seq": 1})}
    behind = sorted(run for run, last_seq in heads.items() if stored.get(run, 0) < last_seq)
    for group in chunks(behind, RUNS_PER_QUERY):
        upsert_newer(runs, list(events.aggregate(run_status_pipeline(group), allowDiskUse=True)))
    return behind


def stored_status(runs: Documents, run: str) -> RunStatus | None:
    """The read model's status of ``run``, or None if it has none (yet)."""
    for doc in runs.find({"_id": run}):
        return RunStatus.from_doc(doc)
    return None


LAST_SEQ_PIPELINE: list[dict[str, Any]] = [
    {"$sort": {"run": -1, "seq": -1}},
    {"$group": {"_id": "$run", "last_seq": {"$first": "$seq"}}},
    {"$sort": {"_id": 1}},
]
"""Each run's last seq in the log: sorted along ``run_seq`` backwards, so a server can read the
first key of each run from the index alone (a DISTINCT_SCAN)."""


def _is_pymongo(collection: Any) -> bool:
    from pymongo.collection import Collection

    return isinstance(collection, Collection)
