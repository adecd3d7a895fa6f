"""What the query commands and the HTTP API read from a store: ``Source``, and answering ``runs``
read-only.

``runs`` answers as the ``runs`` read model would once caught up with the log:
on MongoDB the stored collection, with the runs it lags (or all, when it is
missing) recomputed from the log in memory; on the embedded store from its
history tables (``orchestrator.store.history``), or, on a journal from before
them, rebuilt in memory from the journal. ``stats`` and ``failures`` read the
embedded store's hourly rollups, and pipelines elsewhere.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from .core.errors import ConfigurationError, CorruptEvent
from .core.events import Event
from .core.ports import EventStore
from .store import StoreAbilities, abilities, open_store


class Source:
    """What the query commands read: the log's ``events`` collection and the ``runs`` read model.

    On a store that keeps read models beside its log (MongoDB) both are stored
    collections, read as they stand. Elsewhere ``runs`` is rebuilt in memory by
    feeding the journal through the same reducer the engine uses, and
    ``events`` (the embedded store's in-process MongoDB mirror) is loaded only
    by the commands that aggregate over events.
    """

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.abilities = abilities(store)

    @property
    def events(self) -> Any:
        if self.abilities.history is not None:  # only the runs a pipeline names, where it names them
            return self.abilities.history.indexed_events
        if self.abilities.queries is None:
            raise ConfigurationError(
                "this store has no collection to query; use the embedded store or mongodb://"
            )
        return self.abilities.queries.events

    def history(self, **query: Any) -> Any:
        """A page of ``run_history`` over ``runs`` as if caught up with the log, writing nothing."""
        from projections import run_history
        from projections.run_history import indexed_history, keyed_page

        key = query.pop("key", None)
        if key is not None:
            return keyed_page(self._readable_status, key, **query)
        if self.abilities.history is not None:
            page = indexed_history(self.abilities.history.run_page, self._folded, **query)
            if page is not None:
                return page
        if self.abilities.read_models is None:
            return run_history(self._rebuilt_runs(), **query)
        return _history_beside(self.events, self.abilities.read_models.database["runs"], query)

    def command_stats(self, since: datetime | None, until: datetime | None = None) -> Any:
        """Per-command statistics (``projections.command_stats``)."""
        from projections.command_stats import stats_of_rows

        return stats_of_rows(self.command_rows(since, until))

    def command_rows(self, since: datetime | None, until: datetime | None = None) -> list[dict[str, Any]]:
        """The per-command rows both the statistics and the duration histograms are made of: from a
        store's rollups where it keeps them, else its pipeline."""
        from projections.command_stats import command_stats_pipeline
        from projections.source import aggregate, to_millis

        history = self.abilities.history
        found = history.command_rows(to_millis(since), to_millis(until)) if history is not None else None
        if found is not None:
            return list(found)
        return list(aggregate(self.events, command_stats_pipeline(since, until)))

    def run_states(self) -> dict[str, int] | None:
        """How many runs are in each state: from the history tables where kept, else from the log's
        events collection; None for a store with neither."""
        from projections.run_history import runs_by_state

        history = self.abilities.history
        found = history.run_states() if history is not None else None
        if found is not None:
            return found
        return runs_by_state(self.abilities.queries.events) if self.abilities.queries is not None else None

    def failures(self, since: datetime | None, until: datetime | None = None) -> Any:
        """Failures by error type and command: from rollups where the store keeps them, else its pipeline."""
        from projections import failures
        from projections.failures import failures_of_rows

        history = self.abilities.history
        rows = history.failure_rows if history is not None else None
        return self._window(rows, failures_of_rows, failures, since, until)

    def throughput(
        self, since: datetime | None, until: datetime | None, bucket: timedelta, *, completions: bool = False
    ) -> Any:
        """Events per bucket: from a store's counts where it keeps them, else its pipeline."""
        from projections import throughput
        from projections.source import to_millis
        from projections.throughput import bucket_ms, buckets_of_rows, counted

        history = self.abilities.history
        window = (to_millis(since), to_millis(until))
        found = history.throughput_rows(*window, bucket_ms(bucket), counted(completions)) if history else None
        if found is not None:
            return buckets_of_rows(found)
        return throughput(self.events, since, until, bucket, completions=completions)

    def worker_activity(self, since: datetime | None, until: datetime | None = None) -> Any:
        """What each worker did: from a store's worker hours where it keeps them, else its pipeline."""
        from projections import worker_activity
        from projections.worker_activity import activity_of_rows

        history = self.abilities.history
        rows = history.worker_rows if history is not None else None
        return self._window(rows, activity_of_rows, worker_activity, since, until)

    def _window(
        self,
        rows: Callable[[int | None, int | None], list[dict[str, Any]] | None] | None,
        of_rows: Callable[[Any], Any],
        pipeline: Callable[..., Any],
        since: datetime | None,
        until: datetime | None,
    ) -> Any:
        """``of_rows`` of the store's rollup ``rows`` for [since, until) where kept, else ``pipeline``."""
        from projections.source import to_millis

        found = rows(to_millis(since), to_millis(until)) if rows is not None else None
        return of_rows(found) if found is not None else pipeline(self.events, since=since, until=until)

    def _folded(self, run: str) -> Any:
        """The ``runs`` row of ``run`` folded from its own events; None (said once) for a damaged run."""
        from projections.run_tally import tally

        try:
            return tally(run, self.store.read(run))
        except CorruptEvent as exc:
            print(f"evenflow: skipping run {run}: {exc}", file=sys.stderr)
            return None

    def _readable_status(self, run: str) -> Any:
        """``status``, or None (said once) for a damaged run, as a page of runs leaves it out."""
        try:
            return self.status(run)
        except CorruptEvent as exc:
            print(f"evenflow: skipping run {run}: {exc}", file=sys.stderr)
            return None

    def _rebuilt_runs(self) -> Any:
        from projections import RunsProjector

        corrupt: dict[str, CorruptEvent] = {}
        events = list(_every_event(self.abilities, lambda run, exc: corrupt.setdefault(run, exc)))
        for run, exc in corrupt.items():
            print(f"evenflow: skipping run {run}: {exc}", file=sys.stderr)
        projector = RunsProjector.in_memory(_memory_collection())
        projector.apply([event for event in events if event.run not in corrupt])
        return projector.runs

    def status(self, run: str) -> Any:
        from projections import run_status
        from projections.run_tally import tally

        if self.abilities.read_models is not None:
            return run_status(self.events, run)
        events = self.store.read(run)
        return tally(run, events) if events else None


def _history_beside(events: Any, stored: Any, query: dict[str, Any]) -> Any:
    """``run_history(stored, **query)`` as it would answer once ``catch_up`` brought ``stored`` up to
    the log, read-only (a ``read`` user cannot catch it up, and a query should not).

    The runs whose stored document is behind the log, or missing, are recomputed
    from the log with the pipeline ``catch_up`` writes, into a private in-memory
    collection. The page is drawn from both and merged in the read model's order;
    the stored page is asked for one more row per stale document, and those are
    dropped.
    """
    from projections import run_history
    from projections.run_history import Page, encode_cursor, run_history_pipeline
    from projections.run_status import RunStatus

    behind, stale = _lagging(events, stored)
    if not behind:
        return run_history(stored, **query)
    pipeline = run_history_pipeline(**query)
    limit = int(pipeline[-1]["$limit"]) - 1
    wider = [*pipeline[:-1], {"$limit": limit + 1 + len(stale)}]
    docs = [doc for doc in stored.aggregate(wider) if doc["_id"] not in stale]
    docs += _recomputed(events, behind).aggregate(pipeline)
    docs.sort(key=_newest_first, reverse=True)
    rows = [RunStatus.from_doc(doc) for doc in docs[:limit]]
    return Page(rows, encode_cursor(rows[-1]) if len(docs) > limit and rows else None)


def _lagging(events: Any, stored: Any) -> tuple[list[str], set[str]]:
    """The runs whose stored document is behind the log or missing (``catch_up``'s test), and the
    subset that has a (stale) document."""
    from projections.read_models import LAST_SEQ_PIPELINE

    heads = {doc["_id"]: doc["last_seq"] for doc in events.aggregate(LAST_SEQ_PIPELINE, allowDiskUse=True)}
    held = {doc["_id"]: doc.get("last_seq", 0) for doc in stored.find({}, {"last_seq": 1})}
    behind = sorted(run for run, last_seq in heads.items() if held.get(run, 0) < last_seq)
    return behind, {run for run in behind if run in held}


def _recomputed(events: Any, runs: list[str]) -> Any:
    """A private in-memory ``runs`` holding the documents ``catch_up`` would write for ``runs``."""
    from projections.documents import chunks
    from projections.read_models import RUNS_PER_QUERY
    from projections.run_status import run_status_pipeline

    fresh = _memory_collection()
    for group in chunks(runs, RUNS_PER_QUERY):
        docs = list(events.aggregate(run_status_pipeline(group)))
        if docs:
            fresh.insert_many(docs)
    return fresh


def _newest_first(doc: dict[str, Any]) -> tuple[bool, datetime, str]:
    """``run_history``'s order, ``{submitted_at: -1, _id: -1}``, as a key to sort by with ``reverse``:
    a missing time sorts last, as BSON null does."""
    at = doc.get("submitted_at")
    if isinstance(at, datetime) and at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return (isinstance(at, datetime), at if isinstance(at, datetime) else _EPOCH, str(doc["_id"]))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _memory_collection() -> Any:
    from .store.faithful_mock import client

    return client()["evenflow"]["runs"]


def _every_event(can: StoreAbilities, on_corrupt: Callable[[str, CorruptEvent], Any]) -> Iterator[Event]:
    """The whole log in order: scanned where the store can, else read from its ``events`` collection."""
    if can.scan is not None:
        yield from can.scan.scan(on_corrupt)
    elif can.queries is not None:
        from .store.encoding import decode

        yield from (decode(doc) for doc in can.queries.events.find({}).sort([("run", 1), ("seq", 1)]))


@contextmanager
def source(store_url: str | None, home: str | None) -> Iterator[Source]:
    """A read-only ``Source`` on the store at ``store_url`` (or the embedded one in ``home``)."""
    store = open_store(store_url, home=home, read_only=True)
    try:
        yield Source(store)
    finally:
        store.close()
