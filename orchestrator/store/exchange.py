"""Whole runs streamed out of a store, and runs from elsewhere appended back, checked, in batches.

Export never holds the log: the embedded journal is read a page of rows at a
time (``scan``), or a page of runs at a time from its history tables; MongoDB
from a cursor, or a run at a time behind a cursor of submissions. Each run comes
whole and in ``seq`` order, so an import can check every run's sequence.

Import leans on the append rule every store follows (``memory.plan_append``):
events stored alike are skipped, so importing twice changes nothing, and a
different event at a taken ``seq`` is a ``ConcurrencyConflict``, which this
module traces to the line that caused it. It remembers one number per run (the
last ``seq`` seen), and holds at most one batch of events.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import bson

from orchestrator.core import events as ev
from orchestrator.core.errors import ConcurrencyConflict, ConfigurationError, InvalidOption, RunNotFound
from orchestrator.core.events import Event
from orchestrator.core.ports import EventStore, HistoryStore, ScanStore
from orchestrator.core.run_query import RunQuery

from . import abilities
from .encoding import decode, round_trip
from .rollups import millis

PAGE_RUNS = 500
"""Runs asked for at a time (history pages, cursor batches of submissions)."""
PAGE_EVENTS = 1_000
"""Events a MongoDB cursor fetches at a time."""
BATCH_EVENTS = 1_000
"""Events an import appends at a time."""


@dataclass(frozen=True, slots=True)
class Selection:
    """Which runs to export: one run, the runs of a flow, or those submitted at or after ``since``."""

    run: str | None = None
    flow: str | None = None
    since: datetime | None = None

    @property
    def everything(self) -> bool:
        return self.run is None and self.flow is None and self.since is None

    def takes(self, submitted: Event) -> bool:
        """Whether the run that ``submitted`` (its ``run.submitted``) starts is chosen."""
        return (self.flow is None or submitted.data.get("name") == self.flow) and (
            self.since is None or submitted.at >= self.since
        )


def exported(store: EventStore, chosen: Selection) -> Iterator[Event]:
    """The events of the chosen runs, whole runs each in ``seq`` order, read as they are written out."""
    if chosen.run is not None:
        events = store.read(chosen.run)
        if not events:
            raise RunNotFound(f"no run {chosen.run!r} in this store; `evenflow runs` lists the runs it holds")
        yield from events
        return
    can = abilities(store)
    if can.scan is not None:
        yield from _from_journal(store, can.scan, can.history, chosen)
    elif can.read_models is not None:  # MongoDB or mongomock: ``events`` is the log itself
        yield from _from_collection(store, can.read_models.events, chosen)
    else:
        raise ConfigurationError(
            "this store cannot list its runs, so it cannot be exported; export an embedded home "
            "(--home) or a mongodb:// or mongomock:// --store"
        )


def _from_journal(
    store: EventStore, journal: ScanStore, history: HistoryStore | None, chosen: Selection
) -> Iterator[Event]:
    """The embedded store: every row in commit order, or the chosen runs a page at a time."""
    if chosen.everything:
        yield from journal.scan()
        return
    if history is not None and history.run_page(RunQuery(limit=1)) is not None:
        yield from _paged(store, history, chosen)
        return
    taken: set[str] = set()  # history tables not built yet (an older journal): one pass over the rows
    for event in journal.scan():
        if event.type == ev.RUN_SUBMITTED and event.seq == 1 and chosen.takes(event):
            taken.add(event.run)
        if event.run in taken:
            yield event


def _paged(store: EventStore, history: HistoryStore, chosen: Selection) -> Iterator[Event]:
    """The chosen runs, newest submission first, from the history tables: O(answer), a run at a time."""
    since = None if chosen.since is None else millis(chosen.since)
    after: tuple[int | None, str] | None = None
    while True:
        page = history.run_page(RunQuery(flow=chosen.flow, since=since, limit=PAGE_RUNS, after=after))
        for run in page or ():
            events = store.read(run)
            yield from events
            first = events[0] if events else None
            submitted = first is not None and first.type == ev.RUN_SUBMITTED
            after = (millis(first.at) if submitted and first else None, run)
        if not page or len(page) < PAGE_RUNS:
            return


def _from_collection(store: EventStore, events: Any, chosen: Selection) -> Iterator[Event]:
    """MongoDB: one cursor in ``(run, seq)`` order, or a run at a time behind a cursor of submissions."""
    if chosen.everything:
        for doc in events.find({}).sort([("run", 1), ("seq", 1)]).batch_size(PAGE_EVENTS):  # run_seq
            yield decode(doc)
        return
    query: dict[str, Any] = {"type": ev.RUN_SUBMITTED, "seq": 1}
    if chosen.since is not None:
        query["at"] = {"$gte": chosen.since}
    if chosen.flow is not None:
        query["data.name"] = chosen.flow
    submissions = events.find(query, {"run": 1, "at": 1}).sort([("type", -1), ("at", -1)])  # type_at
    for _, tied in itertools.groupby(submissions.batch_size(PAGE_RUNS), key=lambda doc: doc["at"]):
        for run in sorted((doc["run"] for doc in tied), reverse=True):  # as the embedded store breaks ties
            yield from store.read(run)


@dataclass
class Importer:
    """Appends events read from a file in batches, checking that each run's ``seq`` goes on by one.

    A run's first event in the file is seq 1, or follows the last the store
    holds (a file of a run's later events). ``add`` and ``flush`` raise
    ``InvalidOption`` for a gap and ``ConcurrencyConflict`` for an event the
    store holds otherwise, each naming the line, the run and the fix; every
    event of the lines before it is in the store by then.
    """

    store: EventStore
    batch_events: int = BATCH_EVENTS
    events: int = 0
    last: dict[str, int] = field(default_factory=dict)
    """The last seq read of each run: one number per run, the only thing kept beyond a batch."""
    _batch: list[tuple[Event, int]] = field(default_factory=list)

    @property
    def runs(self) -> int:
        return len(self.last)

    def add(self, event: Event, line: int) -> None:
        """Take the event of line ``line``; append the batch when it is full."""
        expected = self.last[event.run] + 1 if event.run in self.last else self._first(event, line)
        if event.seq != expected:
            self.flush()
            raise InvalidOption(
                f"line {line}: run {event.run} goes from seq {expected - 1} to {event.seq}; a file must "
                "hold whole runs, each in seq order, as `evenflow export` writes them: export the run "
                f"again (`evenflow export --run {event.run}`) and import that file"
            )
        self.last[event.run] = event.seq
        self._batch.append((event, line))
        self.events += 1
        if len(self._batch) >= self.batch_events:
            self.flush()

    def flush(self) -> None:
        """Append what is held; on a conflict, find the line it comes from (the lines before it stay)."""
        batch, self._batch = self._batch, []
        if not batch:
            return
        try:
            self.store.append([event for event, _ in batch])
        except ConcurrencyConflict:
            self._one_by_one(batch)

    def _first(self, event: Event, line: int) -> int:
        """The seq a run's first event in the file must have: 1, or the one after the store's."""
        if event.seq == 1:
            return 1
        held = self.store.read(event.run, after_seq=event.seq - 2)
        if held and held[0].seq == event.seq - 1:
            return event.seq
        self.flush()
        raise InvalidOption(
            f"line {line}: run {event.run} starts at seq {event.seq} in the file but the store holds "
            f"{'its events up to seq ' + str(held[-1].seq) if held else 'none of its events'}: a run's "
            "earlier events must come first; import the file that holds them, or export the run whole "
            f"(`evenflow export --run {event.run}`) and import that"
        )

    def _one_by_one(self, batch: list[tuple[Event, int]]) -> None:
        """After a batch met a conflict: append each event alone, to name the line that conflicts."""
        for event, line in batch:
            try:
                self.store.append([event])
            except ConcurrencyConflict:
                held = self.store.read(event.run, after_seq=event.seq - 1)[:1]
                if not (held and _alike(held[0], event)):
                    raise ConcurrencyConflict(
                        f"line {line}: run {event.run} already holds a different event at seq {event.seq} "
                        "in this store; the lines before it are imported. Import into a store that does "
                        "not hold this run, or leave the run out of the file"
                    ) from None


def _alike(held: Event, event: Event) -> bool:
    """Stored alike, as BSON: what the store drops does not count (microseconds), and NaN is NaN."""
    return bson.encode(ev.to_doc(held)) == bson.encode(ev.to_doc(round_trip(event)))
