"""The collection face projections use, and writing read-model documents in bulk.

``Documents`` is what projections need of a collection: PyMongo's,
mongomock's and ``MemoryRuns`` all fit. ``upsert_newer`` is the one way read
models are written: one unordered ``bulk_write`` of ``ReplaceOne(upsert=True)``
guarded by ``last_seq``, so a write never replaces a document with an older
one. Replaying a batch, a rebuild racing the engine, or two writers after a
lease takeover all leave the newest version in place. A ``MemoryRuns`` takes
the same rule through a dict instead (see ``memory_runs.py`` for why).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from pymongo import ReplaceOne
from pymongo.errors import BulkWriteError

from .memory_runs import MemoryRuns

DUPLICATE_KEY = 11000


class Documents(Protocol):
    """The part of a PyMongo (or mongomock) ``Collection`` that projections use."""

    def aggregate(self, pipeline: Any, *args: Any, **kwargs: Any) -> Any: ...

    def find(self, *args: Any, **kwargs: Any) -> Any: ...

    def bulk_write(self, requests: Any, ordered: bool = ...) -> Any: ...

    def delete_many(self, filter: Any) -> Any: ...

    def create_index(self, keys: Any, **kwargs: Any) -> Any: ...


def upsert_newer(collection: Documents, docs: Sequence[Mapping[str, Any]]) -> set[Any]:
    """Write each document unless the stored one has the same or a later ``last_seq``.

    One unordered ``bulk_write``. A stored document at least as new makes the
    upsert's insert collide on ``_id`` (duplicate key 11000): that is the skip,
    not an error. Returns the ``_id``s skipped so.
    """
    if isinstance(collection, MemoryRuns):
        return collection.replace_newer(docs)
    requests = [
        _Replace({"_id": doc["_id"], "last_seq": {"$lt": doc["last_seq"]}}, dict(doc), upsert=True)
        for doc in docs
    ]
    if not requests:
        return set()
    try:
        collection.bulk_write(requests, ordered=False)
    except BulkWriteError as exc:
        details = exc.details or {}
        errors = details.get("writeErrors") or []
        if details.get("writeConcernErrors") or any(e.get("code") != DUPLICATE_KEY for e in errors):
            raise
        return {docs[error["index"]]["_id"] for error in errors}
    return set()


def stored_docs(collection: Documents, ids: Sequence[Any]) -> list[dict[str, Any]]:
    """The stored documents with these ``_id``s (a ``MemoryRuns`` answers from its dict)."""
    if isinstance(collection, MemoryRuns):
        return collection.get(ids)
    return list(collection.find({"_id": {"$in": list(ids)}}))


def chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class _Replace(ReplaceOne[Any]):
    """PyMongo's ``ReplaceOne``, also accepted by mongomock 4's ``bulk_write``.

    PyMongo 4.11 passes ``sort=`` to the bulk builder; mongomock 4.3's builder
    predates it and raises TypeError, so the argument is left out where the
    builder does not take it (it is never set here).
    """

    def _add_to_bulk(self, bulkobj: Any) -> None:
        if _takes_sort(type(bulkobj)):
            super()._add_to_bulk(bulkobj)
        else:
            bulkobj.add_replace(self._filter, self._doc, self._upsert, hint=self._hint)


_TAKES_SORT: dict[Any, bool] = {}


def _takes_sort(builder: Any) -> bool:
    if builder not in _TAKES_SORT:
        _TAKES_SORT[builder] = "sort" in inspect.signature(builder.add_replace).parameters
    return _TAKES_SORT[builder]
