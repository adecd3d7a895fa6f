"""A read model held in process: documents in a dict, queried through a mongomock collection.

mongomock finds a document by scanning them all, so replacing one costs time
in proportion to the collection: on the engine's thread, after every batch,
that grows with every run this process has seen. Here a write is a dict
assignment; readers copy the documents written since the last read into the
mongomock collection (``inner``) and query that, so the cost of a query lands
on the reader. One lock serialises everything, since mongomock is not
thread-safe and readers run beside the engine thread.

Answers are lists read under the lock (there is no cursor to chain ``.sort()``
on: sort in the query or the pipeline).
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


class MemoryRuns:
    """A ``Documents`` collection over a mongomock one, with dict-speed ``replace_newer`` for the engine."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self._lock = threading.RLock()
        self._docs: dict[Any, dict[str, Any]] = {doc["_id"]: doc for doc in inner.find({})}
        self._dirty: set[Any] = set()

    # --- the engine's side -----------------------------------------------------------------

    def replace_newer(self, docs: Iterable[Mapping[str, Any]]) -> set[Any]:
        """Keep each document unless the one held is as new (``last_seq``); returns the ``_id``s skipped."""
        skipped: set[Any] = set()
        with self._lock:
            for doc in docs:
                held = self._docs.get(doc["_id"])
                if held is not None and held.get("last_seq", 0) >= doc["last_seq"]:
                    skipped.add(doc["_id"])
                    continue
                self._docs[doc["_id"]] = dict(doc)
                self._dirty.add(doc["_id"])
        return skipped

    def get(self, ids: Iterable[Any]) -> list[dict[str, Any]]:
        """The documents held under ``ids`` (copies), without touching mongomock."""
        with self._lock:
            return [copy.deepcopy(self._docs[i]) for i in ids if i in self._docs]

    # --- the readers' side -----------------------------------------------------------------

    def aggregate(self, pipeline: Any, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        with self._lock:
            self._sync()
            return list(self.inner.aggregate(pipeline, **kwargs))

    def find(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        with self._lock:
            self._sync()
            return list(self.inner.find(*args, **kwargs))

    def find_one(self, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        found = self.find(*args, **kwargs)
        return found[0] if found else None

    def count_documents(self, filter: Any, **kwargs: Any) -> int:
        with self._lock:
            self._sync()
            return int(self.inner.count_documents(filter, **kwargs))

    def bulk_write(self, requests: Sequence[Any], ordered: bool = True) -> Any:
        """Written through to mongomock, then the dict reloaded from it (rare: the engine never does)."""
        with self._lock:
            self._sync()
            try:
                return self.inner.bulk_write(requests, ordered=ordered)
            finally:
                self._docs = {doc["_id"]: doc for doc in self.inner.find({})}

    def delete_many(self, filter: Any) -> Any:
        with self._lock:
            self._sync()
            ids = [doc["_id"] for doc in self.inner.find(filter, {"_id": 1})]
            for i in ids:
                self._docs.pop(i, None)
            return self.inner.delete_many({"_id": {"$in": ids}})

    def create_index(self, keys: Any, **kwargs: Any) -> Any:
        with self._lock:
            return self.inner.create_index(keys, **kwargs)

    def index_information(self) -> dict[str, Any]:
        with self._lock:
            info: dict[str, Any] = self.inner.index_information()
            return info

    def _sync(self) -> None:
        """Copy the documents written since the last read into mongomock (one scan to drop the old ones)."""
        if not self._dirty:
            return
        ids = list(self._dirty)
        self.inner.delete_many({"_id": {"$in": ids}})
        fresh = [copy.deepcopy(self._docs[i]) for i in ids if i in self._docs]
        if fresh:
            self.inner.insert_many(fresh)
        self._dirty.clear()
