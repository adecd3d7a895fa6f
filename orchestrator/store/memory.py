"""The in-memory twin of the event store, and the append rule every store follows.

``MemoryStore`` keeps each event as the BSON every store writes
(``encoding.encode_events``) and decodes it on read, exactly as the MongoDB
store does, so tests written against it mean the same thing on a server: what
a server would refuse is refused here, and values come back typed as a server
gives them. Nothing survives the process.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import bson

from orchestrator.core import events as ev
from orchestrator.core.errors import ConcurrencyConflict, ConfigurationError
from orchestrator.core.events import Event
from orchestrator.core.listening import matches
from orchestrator.core.ports import Position

from .encoding import decode_doc, encode_events
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
        self._docs: dict[str, bytes] = {}
        """Each event's stored BSON, by ``_id``."""
        self._types: dict[str, str] = {}
        self._seqs: dict[str, list[int]] = {}
        self._submitted: dict[str, datetime] = {}
        self._finished: set[str] = set()
        self._order: list[str] = []
        """Every ``_id`` in the order it was appended: the feed's positions index it."""
        self._checkpoints: dict[str, bytes] = {}

    def append(self, events: Sequence[Event]) -> None:
        if self.read_only:
            raise read_only_error("memory store")
        blobs: dict[str, bytes] = {}
        for event, blob in zip(events, encode_events(events), strict=True):
            blobs.setdefault(event.id, blob)  # the first of several events with one id may be written
        with self._lock:
            stored = {e.id: self._decode(e.id) for e in events if e.id in self._docs}
            fresh, conflict = plan_append(events, stored)
            for event in fresh:
                self._put(event.id, event.run, event.seq, event.type, event.at, blobs[event.id])
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
                event_id = self._order[row]
                row += 1
                if matches(patterns, self._types[event_id]):
                    found.append(self._decode(event_id))
        return found, {"row": row}

    def feed_head(self, patterns: Sequence[str]) -> Position:
        with self._lock:
            return {"row": len(self._order)}

    def load_checkpoint(self, name: str) -> Position | None:
        with self._lock:
            stored = self._checkpoints.get(name)
        return None if stored is None else dict(decode_doc(stored)["position"])

    def checkpoint_names(self) -> list[str]:
        """The names listeners saved places under, sorted."""
        with self._lock:
            return sorted(self._checkpoints)

    def save_checkpoint(self, name: str, position: Position) -> None:
        if self.read_only:
            raise read_only_error("memory store")
        row_of(position)
        stored = bson.encode({"position": position})  # what a server would refuse is refused here
        with self._lock:
            self._checkpoints[name] = stored

    def close(self) -> None:
        """Nothing to release; the events stay readable until the store is dropped."""

    def _insert_raw(self, doc: Mapping[str, Any]) -> None:
        """Store a document as is, bypassing every check but BSON's: for tests of corrupt logs only."""
        with self._lock:
            at = doc.get("at")
            when = at if isinstance(at, datetime) else None
            self._put(doc["_id"], doc["run"], doc["seq"], doc.get("type", ""), when, bson.encode(doc))

    def _put(self, event_id: str, run: str, seq: int, type_: str, at: datetime | None, blob: bytes) -> None:
        if event_id not in self._docs:
            bisect.insort(self._seqs.setdefault(run, []), seq)
            self._order.append(event_id)
        self._docs[event_id] = blob
        self._types[event_id] = type_
        if type_ == ev.RUN_SUBMITTED and at is not None:
            self._submitted.setdefault(run, at)
        elif type_ in ev.RUN_TERMINAL:
            self._finished.add(run)

    def _decode(self, event_id: str) -> Event:
        return ev.from_doc(decode_doc(self._docs[event_id]))
