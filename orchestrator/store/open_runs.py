"""The runs that may be open, marked in a MongoDB log so listing them costs O(open runs), not O(history).

Listing unfinished runs from the log alone reads every ``run.submitted`` and
terminal event ever written, and the engine lists them at start, at every
takeover patrol and after an outage. So each ``run.submitted`` a store appends
carries ``open: true`` in its own document (one write: no extra round trip,
and no crash can land the event without its mark), and the partial index
``open_run`` holds only the marked ones. Once a batch carrying a run's
terminal event has landed, the mark is removed, ``ENDED_BATCH`` runs at a
time. A listing reads the marked submissions through that index and checks
their runs in one query on the ``run_type`` index; a mark left on a run that
ended (its writer died before removing it) is removed then. The mark is not
part of the event: ``decode`` never reads it, and the event is never changed.

A log written before the marks has no ``MARKED`` note in ``checkpoints``: a
writable store marks its open runs once from the full scan, a read-only one
answers from the full scan. Every orchestrator sharing a database must mark:
stop older versions before starting this one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from typing import Any, Protocol

import pymongo

from orchestrator.core import events as ev
from orchestrator.core.errors import StoreUnavailable
from orchestrator.core.events import Event

log = logging.getLogger("evenflow.store")

OPEN = "open"
"""The field marking a ``run.submitted`` document while its run may be open."""
MARKED = 0
"""``_id`` of the note in ``checkpoints`` saying this log's open runs are marked (no listener's name
is an int)."""
SCAN_TIMEOUT_MS = 600_000
"""The operation timeout of a full scan of the log (marking once, or a read-only listing)."""
ENDED_BATCH = 64
"""Ended runs unmarked in one update, not one round trip per run: a mark left a while after its run
ended costs a listing only a check, and the listing removes it. mongomock has no indexes, so there
every update reads the whole log: it unmarks only when it lists (``unmark_every=None``)."""
RUNS_PER_UPDATE = 500
LIFECYCLE = sorted({ev.RUN_SUBMITTED, *ev.RUN_TERMINAL})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FIELDS = {"run": 1, "type": 1, "at": 1, "_id": 0}


class Guard(Protocol):
    """The store's translation of driver errors into ``StoreUnavailable``, naming what it was doing."""

    def __call__(self, doing: str, *, bound_ms: float | None = None) -> AbstractContextManager[None]: ...


def mark(event: Event) -> dict[str, Any]:
    """The field a store adds to ``event``'s document: the open mark on a submission."""
    return {OPEN: True} if event.type == ev.RUN_SUBMITTED else {}


class OpenRuns:
    """The open marks of one log; ``writable`` False never writes (no marking, no unmarking).

    Each method is given the log's ``events`` collection as the store holds it at the time.
    """

    def __init__(
        self, notes: Any, guard: Guard, *, writable: bool, unmark_every: int | None = ENDED_BATCH
    ) -> None:
        self.notes = notes
        self._guard = guard
        self.writable = writable
        self._unmark_every = unmark_every
        self._marked = False
        self._ended: set[str] = set()

    def ensure_marked(self, events: Any) -> None:
        """Mark the open runs from the full scan, once per database (what older versions left out)."""
        if self._kept():
            return
        with self._scanning("reading the whole log to mark its open runs"):
            started, ended = lifecycle(events)
        with self._guard("marking the open runs"):
            self._set(events, [run for run in started if run not in ended], {"$set": {OPEN: True}})
            self.notes.update_one({"_id": MARKED}, {"$set": {"at": ev.utcnow()}}, upsert=True)
        self._marked = True

    def landed(self, events: Any, batch: Sequence[Event]) -> None:
        """Unmark, ``unmark_every`` at a time, the runs that ``batch``, now durable, ends."""
        self._ended.update(event.run for event in batch if event.type in ev.RUN_TERMINAL)
        if self._unmark_every is not None and len(self._ended) >= self._unmark_every:
            self.flush(events)

    def flush(self, events: Any) -> None:
        """Unmark the ended runs noted so far; a failure leaves them for the next listing."""
        ended, self._ended = sorted(self._ended), set()
        if not ended:
            return
        try:
            with self._guard(f"unmarking {len(ended)} ended run(s)"):
                self._set(events, ended, {"$unset": {OPEN: ""}})
        except StoreUnavailable as exc:
            log.warning("ended runs stay marked open until the next listing unmarks them: %s", exc)

    def unfinished(self, events: Any) -> list[str]:
        """Submitted runs with no terminal event, oldest submission first."""
        if not self._kept():  # a read-only store on a log from before the marks
            with self._scanning("listing unfinished runs from the whole log"):
                started, ended = lifecycle(events)
            return oldest_first_runs(started, ended)
        self.flush(events)  # what this store saw end need not be checked
        with self._guard("listing unfinished runs"):
            marked = sorted({doc["run"] for doc in events.find({OPEN: True}, {"run": 1, "_id": 0})})
            if not marked:
                return []
            started, ended = lifecycle(events, marked)
            if self.writable and ended:
                self._set(events, sorted(ended), {"$unset": {OPEN: ""}})
        return oldest_first_runs(started, ended)

    def _set(self, events: Any, runs: Sequence[str], change: Mapping[str, Any]) -> None:
        """Apply ``change`` to the submissions of ``runs``, ``RUNS_PER_UPDATE`` runs an update."""
        for start in range(0, len(runs), RUNS_PER_UPDATE):
            chosen = {"run": {"$in": list(runs[start : start + RUNS_PER_UPDATE])}, "type": ev.RUN_SUBMITTED}
            events.update_many(chosen, change)

    @contextmanager
    def _scanning(self, doing: str) -> Iterator[None]:
        """A whole-log read, under a timeout of its own: it grows with history, unlike every other call."""
        with self._guard(doing, bound_ms=SCAN_TIMEOUT_MS), pymongo.timeout(SCAN_TIMEOUT_MS / 1000):
            yield

    def _kept(self) -> bool:
        if not self._marked:
            with self._guard("checking that open runs are marked"):
                self._marked = self.notes.find_one({"_id": MARKED}, {"_id": 1}) is not None
        return self._marked


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
