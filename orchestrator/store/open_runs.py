"""The runs that may be open, kept beside a MongoDB log so listing them costs O(open runs), not O(history).

Listing unfinished runs from the log alone reads every ``run.submitted`` and
terminal event ever written, and the engine lists them at start, at every
takeover patrol and after an outage. So the store keeps ``open_runs``: one
entry ``{_id: run, at: submitted, since: written}`` per run that may be open,
written *before* the batch carrying the run's ``run.submitted`` (a crash can
leave an entry too many, never one too few) and deleted once a batch carrying
its terminal event has landed. A listing reads the entries and checks them in
one query on the log's ``run_type`` index: an entry whose run ended, or whose
``run.submitted`` never landed although it was written ``GHOST_S`` ago, is
stale and pruned; the rest is the answer.

A log written before the entries were kept has no ``BUILT`` marker: a writable
store builds the entries once from the full scan, a read-only one answers from
the full scan. Every orchestrator sharing a database must keep the entries:
stop older versions before starting this one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import pymongo
from pymongo.errors import BulkWriteError

from orchestrator.core import events as ev
from orchestrator.core.errors import StoreUnavailable
from orchestrator.core.events import Event

log = logging.getLogger("evenflow.store")

OPEN_RUNS = "open_runs"
"""The collection of entries, beside ``events``; its ``_id`` index is the only one it needs."""
BUILT = 0
"""``_id`` of the marker saying the entries are kept (an int: no run id can be one)."""
GHOST_S = 86_400.0
"""How old an entry whose ``run.submitted`` never landed must be to be pruned: far beyond any append."""
SCAN_TIMEOUT_MS = 600_000
"""The operation timeout of a full scan of the log (building the entries once, or a read-only listing)."""
LIFECYCLE = sorted({ev.RUN_SUBMITTED, *ev.RUN_TERMINAL})
DUPLICATE_KEY = 11000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FIELDS = {"run": 1, "type": 1, "at": 1, "_id": 0}


class Guard(Protocol):
    """The store's translation of driver errors into ``StoreUnavailable``, naming what it was doing."""

    def __call__(self, doing: str, *, bound_ms: float | None = None) -> AbstractContextManager[None]: ...


ENDED_BATCH = 64
"""Ended runs whose entries are dropped in one delete, not one round trip per run: an entry left a
while after its run ended costs a listing only a check, and the listing prunes it."""


class OpenRuns:
    """The ``open_runs`` entries of one log; ``writable`` False never writes (no build, no pruning).

    Each method is given the log's ``events`` collection as the store holds it at the time.
    """

    def __init__(self, entries: Any, guard: Guard, *, writable: bool) -> None:
        self.entries = entries
        self._guard = guard
        self.writable = writable
        self._built = False
        self._ended: set[str] = set()

    def ensure_built(self, events: Any) -> None:
        """Build the entries from the full scan, once per database (what older versions left out)."""
        if self._kept():
            return
        with self._scanning("reading the whole log to build the open runs"):
            started, ended = lifecycle(events)
        with self._guard("building the open runs"):
            self._put({run: at for run, at in started.items() if run not in ended})
            self.entries.update_one({"_id": BUILT}, {"$set": {"built": ev.utcnow()}}, upsert=True)
        self._built = True

    def write_ahead(self, events: Sequence[Event]) -> None:
        """Note as open every run whose ``run.submitted`` is in ``events``, before they are written."""
        submitted = {event.run: event.at for event in events if event.type == ev.RUN_SUBMITTED}
        if submitted:
            with self._guard(f"noting {len(submitted)} submitted run(s) as open"):
                self._put(submitted)

    def landed(self, events: Sequence[Event]) -> None:
        """Drop, ``ENDED_BATCH`` at a time, the entries of runs that ``events``, now durable, end."""
        self._ended.update(event.run for event in events if event.type in ev.RUN_TERMINAL)
        if len(self._ended) >= ENDED_BATCH:
            self.flush()

    def flush(self) -> None:
        """Drop the entries of the ended runs noted so far; a failure leaves them for pruning."""
        ended, self._ended = sorted(self._ended), set()
        if not ended:
            return
        try:
            with self._guard(f"noting {len(ended)} run(s) as ended"):
                self.entries.delete_many({"_id": {"$in": ended}})
        except StoreUnavailable as exc:
            log.warning("ended runs stay listed as open until the next listing prunes them: %s", exc)

    def unfinished(self, events: Any) -> list[str]:
        """Submitted runs with no terminal event, oldest submission first."""
        if not self._kept():  # a read-only store on a log from before the entries
            with self._scanning("listing unfinished runs from the whole log"):
                started, ended = lifecycle(events)
            return oldest_first_runs(started, ended)
        self.flush()  # what this store saw end need not be checked
        with self._guard("listing unfinished runs"):
            since = {
                doc["_id"]: doc.get("since")
                for doc in self.entries.find({"_id": {"$type": "string"}}, {"since": 1})
            }
            if not since:
                return []
            started, ended = lifecycle(events, sorted(since))
        if self.writable:
            self._prune(sorted(ended), [run for run in since if run not in started and _old(since[run])])
        return oldest_first_runs(started, ended)

    def _prune(self, ended: list[str], ghosts: list[str]) -> None:
        """Delete entries proven stale: their run ended, or never got its ``run.submitted``."""
        if not (ended or ghosts):
            return
        cutoff = ev.utcnow() - timedelta(seconds=GHOST_S)
        with self._guard(f"pruning {len(ended) + len(ghosts)} stale open run(s)"):
            if ended:
                self.entries.delete_many({"_id": {"$in": ended}})
            if ghosts:  # unless a writer has just noted the run again (``since`` renewed)
                self.entries.delete_many({"_id": {"$in": ghosts}, "since": {"$lt": cutoff}})

    @contextmanager
    def _scanning(self, doing: str) -> Iterator[None]:
        """A whole-log read, under a timeout of its own: it grows with history, unlike every other call."""
        with self._guard(doing, bound_ms=SCAN_TIMEOUT_MS), pymongo.timeout(SCAN_TIMEOUT_MS / 1000):
            yield

    def _kept(self) -> bool:
        if not self._built:
            with self._guard("checking that open runs are kept"):
                self._built = self.entries.find_one({"_id": BUILT}, {"_id": 1}) is not None
        return self._built

    def _put(self, runs: Mapping[str, Any]) -> None:
        """Insert an entry per run; one already there gets its ``since`` renewed (a submission retried)."""
        if not runs:
            return
        now = ev.utcnow()
        try:
            self.entries.insert_many(
                [{"_id": run, "at": at, "since": now} for run, at in runs.items()], ordered=False
            )
        except BulkWriteError as exc:
            details = exc.details or {}
            errors = details.get("writeErrors") or []
            if details.get("writeConcernErrors") or any(e.get("code") != DUPLICATE_KEY for e in errors):
                raise StoreUnavailable(
                    f"the open runs were not noted before an append ({_first_reason(details)}); "
                    "nothing of the append was written: try again"
                ) from exc
            order = list(runs)
            for run in (order[int(error["index"])] for error in errors):
                change = {"$set": {"since": now}, "$setOnInsert": {"at": runs[run]}}
                self.entries.update_one({"_id": run}, change, upsert=True)


def lifecycle(events: Any, runs: list[str] | None = None) -> tuple[dict[str, Any], set[str]]:
    """Of ``runs`` (every run if None), those submitted (earliest submission time) and those ended.

    The whole log is read in two queries, submissions then ends: mongomock's cursors cost the square
    of what they return, so one query over both would be four times slower there.
    """
    started: dict[str, Any] = {}
    ended: set[str] = set()
    which = {} if runs is None else {"run": {"$in": runs}}
    kinds = [LIFECYCLE] if runs is not None else [[ev.RUN_SUBMITTED], sorted(ev.RUN_TERMINAL)]
    found = (events.find({**which, "type": {"$in": types}}, _FIELDS) for types in kinds)
    for doc in (doc for docs in found for doc in docs):
        run = doc["run"]
        if doc.get("type") in ev.RUN_TERMINAL:
            ended.add(run)
        elif run not in started or oldest_first(run, doc.get("at")) < oldest_first(run, started[run]):
            started[run] = doc.get("at")
    return started, ended


def oldest_first_runs(started: Mapping[str, Any], ended: Iterable[str]) -> list[str]:
    done = set(ended)
    return sorted(
        (run for run in started if run not in done), key=lambda run: oldest_first(run, started[run])
    )


def oldest_first(run: str, at: Any) -> tuple[datetime, str]:
    """Sort key of ``unfinished_runs``: submission time, then run id; a damaged time sorts first."""
    return (at if isinstance(at, datetime) else _EPOCH, run)


def _old(since: Any) -> bool:
    return isinstance(since, datetime) and since < ev.utcnow() - timedelta(seconds=GHOST_S)


def _first_reason(details: Mapping[str, Any]) -> str:
    errors = [*(details.get("writeErrors") or []), *(details.get("writeConcernErrors") or [])]
    first = errors[0] if errors else {}
    return f"code {first.get('code')}: {first.get('errmsg', 'no message')}"
