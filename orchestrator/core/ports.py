"""The ports the engine drives: an event store, executors and a clock.

Each has an in-memory twin (``orchestrator.store.memory``, ``workers.inline``,
``orchestrator.core.clock.FakeClock``) and a contract suite in ``tests/contract``
that every implementation passes.

Beyond ``EventStore``, what a store can do is one small protocol per ability
(feed, leases, queries, read models, scans). ``orchestrator.store.abilities``
checks them once when a store is opened; call sites ask its answer, never the
store's class or attributes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from .envelope import Envelope, Outcome
from .errors import CorruptEvent
from .events import Event
from .registry import Registry
from .retention import Pruned
from .run_query import RunQuery

Report = Callable[[Outcome], None]


@runtime_checkable
class EventStore(Protocol):
    """An append-only log of events, ordered per run by ``seq``.

    ``append`` writes in order and raises ``ConcurrencyConflict`` when an event's
    ``(run, seq)`` already exists; the events before the conflicting one stay
    written (as with MongoDB's ordered ``insert_many``), so callers re-read.
    Once ``append`` returns, the events are as durable as the store promises.
    """

    def append(self, events: Sequence[Event]) -> None: ...

    def read(self, run: str, after_seq: int = 0) -> list[Event]:
        """The run's events with ``seq > after_seq``, in ``seq`` order."""

    def unfinished_runs(self) -> list[str]:
        """Ids of submitted runs with no terminal event, oldest first."""

    def close(self) -> None: ...


@runtime_checkable
class Executor(Protocol):
    """Runs envelopes and reports exactly one outcome for each, from any thread.

    ``requires_pickle`` tells the engine to refuse, at submission, commands that
    cannot be sent to another process. An optional ``isolated`` (default False)
    says commands run in other processes or hosts: an attempt in flight when the
    orchestrator stopped is then never blamed for the stop (see ``RESTART_REDISPATCHES``).

    Executors whose commands run on other hosts may also be an
    ``AcknowledgedExecutor`` (told which outcomes the log holds, so remote
    workers stop holding them) or a ``GroupRoutingExecutor`` (a default that
    maps route names onto groups of its own workers).
    """

    requires_pickle: bool

    def start(self, registry: Registry, report: Report) -> None: ...

    def dispatch(self, envelopes: Sequence[Envelope]) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class AcknowledgedExecutor(Protocol):
    """An executor whose workers hold outcomes until told they are in the log (remote workers)."""

    def recorded(self, attempt_ids: Sequence[str]) -> None: ...


@runtime_checkable
class GroupRoutingExecutor(Protocol):
    """A default executor that maps route names onto groups of its own workers."""

    takes_any_route: bool


def takes_any_route(executor: Executor) -> bool:
    """Whether ``executor``, as the default route, takes routes no other executor is named for."""
    return isinstance(executor, GroupRoutingExecutor) and bool(executor.takes_any_route)


@runtime_checkable
class LeaseStore(Protocol):
    """Where orchestrators sharing a store say they are alive (MongoDB); a store without it has one owner.

    ``renew_lease`` bumps the owner's beat; ``read_leases`` gives every owner's
    ``(beat, released)``; ``release_lease`` frees the owner's runs at once.
    """

    def renew_lease(self, owner: str) -> None: ...

    def read_leases(self) -> dict[str, tuple[int, bool]]: ...

    def release_lease(self, owner: str) -> None: ...


Position = dict[str, Any]
"""Where a reader of the whole log stands: plain data, in a form each store chooses."""


@runtime_checkable
class FeedStore(Protocol):
    """The whole log as one feed, for listeners, and where each listener keeps its place.

    ``read_feed`` gives the events after ``position`` (from the first if None)
    whose type matches one of ``patterns``, at most ``limit``, and the position
    after them. A reader that carries the positions forward gets every event
    once: exactly, where one process writes (rows in commit order); on MongoDB,
    with several writers committing out of order, every event that became
    readable within the store's overlap window of its stamp. ``feed_head`` is
    the position after every event logged so far.
    """

    def read_feed(
        self, position: Position | None, patterns: Sequence[str], limit: int
    ) -> tuple[list[Event], Position]: ...

    def feed_head(self, patterns: Sequence[str]) -> Position: ...

    def load_checkpoint(self, name: str) -> Position | None: ...

    def save_checkpoint(self, name: str, position: Position) -> None: ...


class ReadOnlyFlag(Protocol):
    """A store that says whether it was opened read-only (it then refuses appends and checkpoints).

    A store without the flag is writable.
    """

    read_only: bool


class QueryStore(Protocol):
    """A store whose log the aggregation pipelines of ``projections`` can read as a collection, ``events``.

    On MongoDB and mongomock it is the log itself; the embedded store's is an
    in-process mirror loaded on first use. Not runtime-checkable on purpose:
    before Python 3.12 ``isinstance`` reads ``events`` and so loads that mirror.
    """

    @property
    def events(self) -> Any: ...


class ReadModelStore(QueryStore, Protocol):
    """A store whose ``events`` is the log itself, in a ``database`` that keeps read models beside it.

    The ``runs`` read model is written there as batches land and caught up with
    the log when an orchestrator starts; the query commands read it as stored.
    Elsewhere read models live in memory and are rebuilt from the log.
    """

    @property
    def database(self) -> Any: ...


class HistoryStore(Protocol):
    """A store that keeps history tables beside its log (embedded), so readers cost O(answer).

    Each answer is None while the tables are not built (a journal from an older
    version, until a writer opens it): callers then read the whole log.
    """

    def run_states(self) -> dict[str, int] | None:
        """How many runs are in each state (running, succeeded, failed, cancelled); None if not built."""

    def run_page(self, query: RunQuery) -> list[str] | None:
        """The ids of the runs on the page ``query`` asks for, newest first."""

    def command_rows(self, since: int | None, until: int | None) -> list[dict[str, Any]] | None:
        """``projections.command_stats``' rows for ``[since, until)`` (ms; None is open), from rollups."""

    def failure_rows(self, since: int | None, until: int | None) -> list[dict[str, Any]] | None:
        """``projections.failures``' rows for ``[since, until)``, from rollups."""

    def throughput_rows(
        self, since: int | None, until: int | None, bucket_ms: int, types: Sequence[str]
    ) -> list[dict[str, Any]] | None:
        """``projections.throughput``'s rows: events of ``types`` per bucket of ``bucket_ms``."""

    def worker_rows(self, since: int | None, until: int | None) -> list[dict[str, Any]] | None:
        """``projections.worker_activity``'s rows for ``[since, until)``."""

    @property
    def indexed_events(self) -> Any:
        """An ``events`` collection for pipelines that loads only the runs their first ``$match`` names."""


class PruneStore(Protocol):
    """A store that can remove whole finished runs (retention): the embedded store."""

    def prune(
        self, before: datetime, *, dry_run: bool = False, keep: Callable[[list[str]], None] | None = None
    ) -> Pruned:
        """Remove every run that ended before ``before`` and that no listener still needs; ``keep`` is
        given each batch's runs before they go (to archive them: it may read them)."""


@runtime_checkable
class ScanStore(Protocol):
    """A store that reads its whole log in commit order, to rebuild read models in memory (embedded).

    An event that does not decode raises ``CorruptEvent``, or with ``on_corrupt``
    is reported with its run and the scan goes on.
    """

    def scan(self, on_corrupt: Callable[[str, CorruptEvent], None] | None = None) -> Iterator[Event]: ...


class Clock(Protocol):
    def now(self) -> datetime:
        """Wall-clock time in UTC, millisecond precision (what the log records)."""
