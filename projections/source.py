"""What every projection reads: the ``events`` collection, and a window of time over it.

The query functions accept a PyMongo ``Collection`` or a mongomock one; both
answer ``aggregate``, which is all a projection asks of them, so the type here
is that one method rather than either class.

Every projection runs its pipeline through ``aggregate`` here, which passes
``allowDiskUse``: a ``$group`` or ``$sort`` over a big history may need more
than a server's 100 MB per stage, and may then spill rather than fail. No
pipeline gathers a document that grows with the history (``$push`` of whole
events or of one entry per event), so the 16 MiB limit on a document holds
whatever the history; ``tests/projections/test_server_limits.py`` checks both.

Times go to the server as BSON dates, which keep milliseconds; a bound with
microseconds would be cut on a real server but compared whole by mongomock, so
bounds are cut to milliseconds here and both engines see the same window. A
naive datetime is taken as UTC, as BSON takes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

Pipeline = list[dict[str, Any]]
IndexKeys = tuple[tuple[str, int], ...]

BY_RUN: IndexKeys = (("run", 1), ("seq", 1))
"""A run's events in ``seq`` order (the store's ``run_seq``)."""
BY_TYPE_AND_TIME: IndexKeys = (("type", 1), ("at", 1))
"""Events of some types in a time window (the store's ``type_at``)."""
BY_CORRELATION: IndexKeys = (("correlation", 1), ("type", 1))
"""The ``run.submitted`` events of one chain of runs (``correlation_type``, made by ``evenflow init``)."""


class EventsCollection(Protocol):
    """The one method of a (PyMongo or mongomock) collection that projections use."""

    def aggregate(
        self, pipeline: Sequence[Mapping[str, Any]], *args: Any, **kwargs: Any
    ) -> Iterable[Any]: ...


def aggregate(collection: EventsCollection, pipeline: Pipeline) -> Iterable[Any]:
    """``collection.aggregate(pipeline)``, its blocking stages allowed to spill to disk."""
    return collection.aggregate(pipeline, allowDiskUse=True)


def at_window(since: datetime | None, until: datetime | None) -> dict[str, Any]:
    """The ``$match`` clause on ``at`` for [since, until); an open end when a bound is None."""
    bounds: dict[str, datetime] = {}
    if since is not None:
        bounds["$gte"] = to_bson_time(since)
    if until is not None:
        bounds["$lt"] = to_bson_time(until)
    return {"at": bounds} if bounds else {}


def to_bson_time(moment: datetime) -> datetime:
    """``moment`` in UTC, rounded *up* to the milliseconds a BSON date keeps.

    Logged times are whole milliseconds, so for them ``at >= ceil(since)`` and
    ``at < ceil(until)`` are exactly ``since <= at < until``.
    """
    if not isinstance(moment, datetime):
        raise TypeError(f"a time bound must be a datetime, got {moment!r}")
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment + timedelta(microseconds=-moment.microsecond % 1000)


def to_millis(moment: datetime | None) -> int | None:
    """A time bound as the whole milliseconds since the epoch ``to_bson_time`` gives (None stays None)."""
    if moment is None:
        return None
    return (to_bson_time(moment) - _EPOCH) // timedelta(milliseconds=1)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def aware(moment: Any) -> Any:
    """A datetime read back from the store, made UTC-aware (a client may return naive UTC)."""
    if isinstance(moment, datetime):
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment
