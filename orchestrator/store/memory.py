"""The in-memory twin of the event store, and the append rule every store follows.

``MemoryStore`` keeps the stored documents (``events.to_doc``) in dicts and
decodes them on read, exactly as the MongoDB store does, so tests written
against it mean the same thing on a server. It refuses what BSON would refuse
(through ``codec.check_payload``) so a payload that only works in memory fails
here too. Nothing survives the process.
"""

from __future__ import annotations

import bisect
import copy
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from orchestrator.core import events as ev
from orchestrator.core.codec import check_payload
from orchestrator.core.errors import ConcurrencyConflict, ConfigurationError
from orchestrator.core.events import Event
from orchestrator.core.listening import matches
from orchestrator.core.ports import Position

from .feed import row_of


def conflict_error(event: Event) -> ConcurrencyConflict:
    return ConcurrencyConflict(
        f"run {event.run!r} already has an event with seq {event.seq} ({event.id}) and different "
        "content: another writer appended it first; re-read the run before writing again"
    )


def read_only_error(store: str) -> ConfigurationError:
    return ConfigurationError(f"the {store} was opened read-only; open it without read_only to append")


def plan_append(
    events: Sequence[Event],
    stored: Mapping[str, Event],
    normalise: Callable[[Event], Event] = lambda event: event,
) -> tuple[list[Event], ConcurrencyConflict | None]:
    """Apply the idempotent-append rule to one batch, given the stored events it collides with.

    Returns the events still to write, in order, and the conflict that stops the
    batch (or None). An event whose ``_id`` is stored with equal content is
    already written and skipped; one stored with other content stops the batch
    there, and only the events before it are written. ``normalise`` turns a new
    event into what the store would give back, so equal means equal after the
    store's round trip (BSON turns tuples into lists, for one).
    """
    fresh: list[Event] = []
    batch: dict[str, Event] = {}
    for event in events:
        if event.id in batch:
            same = batch[event.id] == event
        elif event.id in stored:
            same = stored[event.id] == normalise(event)
        else:
            fresh.append(event)
            batch[event.id] = event
            continue
        if not same:
            return fresh, conflict_error(event)
    return fresh, None


class MemoryStore:
    """Thread-safe in-process event store; the reference the contract suite holds every store to."""

    def __init__(self, *, read_only: bool = False) -> None:
        self.read_only = read_only
        self._lock = threading.Lock()
        self._docs: dict[str, dict[str, Any]] = {}
        self._seqs: dict[str, list[int]] = {}
        self._submitted: dict[str, datetime] = {}
        self._finished: set[str] = set()
        self._order: list[str] = []
        """Every ``_id`` in the order it was appended: the feed's positions index it."""
        self._checkpoints: dict[str, Position] = {}

    def append(self, events: Sequence[Event]) -> None:
        if self.read_only:
            raise read_only_error("memory store")
        docs: dict[str, dict[str, Any]] = {}
        for event in events:  # the first of several events with one id is the one that may be written
            docs.setdefault(event.id, self._checked_doc(event))
        with self._lock:
            stored = {e.id: self._decode(e.id) for e in events if e.id in self._docs}
            fresh, conflict = plan_append(events, stored)
            for event in fresh:
                self._put(docs[event.id])
        if conflict is not None:
            raise conflict

    def read(self, run: str, after_seq: int = 0) -> list[Event]:
        with self._lock:
            seqs = self._seqs.get(run, [])
            tail = seqs[bisect.bisect_right(seqs, after_seq) :]
            return [self._decode(ev.event_id(run, seq)) for seq in tail]

    def unfinished_runs(self) -> list[str]:
        with self._lock:
            open_runs = [(at, run) for run, at in self._submitted.items() if run not in self._finished]
        return [run for _, run in sorted(open_runs)]

    def read_feed(
        self, position: Position | None, patterns: Sequence[str], limit: int
    ) -> tuple[list[Event], Position]:
        """Positions count appends (``{"row": n}``): one process appends, so that order is exact."""
        row = row_of(position)
        found: list[Event] = []
        with self._lock:
            while row < len(self._order) and len(found) < limit:
                doc = self._docs[self._order[row]]
                row += 1
                if matches(patterns, doc["type"]):
                    found.append(self._decode(doc["_id"]))
        return found, {"row": row}

    def feed_head(self, patterns: Sequence[str]) -> Position:
        with self._lock:
            return {"row": len(self._order)}

    def load_checkpoint(self, name: str) -> Position | None:
        with self._lock:
            return copy.deepcopy(self._checkpoints.get(name))

    def save_checkpoint(self, name: str, position: Position) -> None:
        if self.read_only:
            raise read_only_error("memory store")
        row_of(position)
        with self._lock:
            self._checkpoints[name] = copy.deepcopy(position)

    def close(self) -> None:
        """Nothing to release; the events stay readable until the store is dropped."""

    def _insert_raw(self, doc: Mapping[str, Any]) -> None:
        """Store a document as is, bypassing every check: for tests of corrupt logs only."""
        with self._lock:
            self._put(copy.deepcopy(dict(doc)))

    @staticmethod
    def _checked_doc(event: Event) -> dict[str, Any]:
        doc = ev.to_doc(event)
        check_payload(doc, f"event {event.id}")
        return copy.deepcopy(doc)

    def _put(self, doc: dict[str, Any]) -> None:
        run, seq = doc["run"], doc["seq"]
        if doc["_id"] not in self._docs:
            bisect.insort(self._seqs.setdefault(run, []), seq)
            self._order.append(doc["_id"])
        self._docs[doc["_id"]] = doc
        if doc.get("type") == ev.RUN_SUBMITTED and isinstance(doc.get("at"), datetime):
            self._submitted.setdefault(run, doc["at"])
        elif doc.get("type") in ev.RUN_TERMINAL:
            self._finished.add(run)

    def _decode(self, event_id: str) -> Event:
        return ev.from_doc(copy.deepcopy(self._docs[event_id]))
