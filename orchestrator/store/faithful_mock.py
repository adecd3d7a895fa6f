"""mongomock held to what a MongoDB server accepts and gives back: every document goes through BSON.

mongomock keeps Python objects as they are given, so it accepts what a server
refuses (a document over 16 MiB, invalid UTF-8 in a filter) and gives back
what a server never would (microseconds, a tuple, an int where the driver gives
``Int64``). Here every document written, every update and every filter is
encoded with the real ``bson`` codec and decoded with the client's codec
options before mongomock sees it, and every aggregation result on its way
out, so anything a server would refuse fails as it would through PyMongo, and
values come back typed as PyMongo returns them. mongomock:// stores, the
embedded store's mirror and every test on mongomock use this client.

Aggregations also run in linear time: mongomock 4.3 reads a collection
through a cursor that copies the results still to come at every step
(quadratic: 27 s for one run's status among 90,000 events), so a leading
``$match`` is applied as a ``find`` and the rest of the pipeline runs on the
list it gives.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import bson
import mongomock
from bson.codec_options import CodecOptions
from bson.errors import InvalidDocument
from mongomock import aggregate as mongomock_pipeline
from pymongo.errors import DocumentTooLarge

from orchestrator.core.codec import MAX_EVENT_BYTES

from .encoding import CODEC_OPTIONS

MAX_DOCUMENT_BYTES = MAX_EVENT_BYTES
"""A server's ``maxBsonObjectSize``: 16 MiB."""
_STORED: CodecOptions[Any] = CodecOptions()
"""How the server side holds what it is sent: naive UTC times (mongomock compares those), Int64."""


def client(codec_options: CodecOptions[Any] = CODEC_OPTIONS) -> BsonClient:
    """A fresh in-memory server; ``codec_options`` are what a PyMongo client would be opened with."""
    return BsonClient(codec_options)


_Client: Any = mongomock.MongoClient
_Database: Any = mongomock.Database
_Collection: Any = mongomock.Collection
"""mongomock's classes, typed loosely: its stubs claim PyMongo's signatures, which it does not keep."""


class BsonClient(_Client):
    def __init__(self, codec_options: CodecOptions[Any]) -> None:
        super().__init__(tz_aware=False)  # mongomock keeps naive UTC; reads are decoded with ``bson_options``
        self.bson_options = codec_options

    def get_database(self, name: str | None = None, **options: Any) -> Any:
        if name is not None and name not in self._database_accesses:
            self._database_accesses[name] = BsonDatabase(
                self, name, _store=self._store[name], codec_options=self._codec_options
            )
        return super().get_database(name, **options)


class BsonDatabase(_Database):
    def get_collection(self, name: str, **options: Any) -> Any:
        if name not in self._collection_accesses:
            self._ensure_valid_collection_name(name)
            self._collection_accesses[name] = BsonCollection(
                self, name=name, _db_store=self._store, codec_options=self._codec_options
            )
        return super().get_collection(name, **options)


class BsonCollection(_Collection):
    """A mongomock collection whose documents, updates and filters are BSON, as on a server."""

    @property
    def _client_options(self) -> CodecOptions[Any]:
        options: CodecOptions[Any] = self.database.client.bson_options
        return options

    def _insert(self, data: Any, session: Any = None, ordered: bool = True) -> Any:
        if isinstance(data, Mapping):
            data = dict(data)
            data.setdefault("_id", bson.ObjectId())
            data = self._through_bson(data, _STORED, document=True)
        return super()._insert(data, session, ordered)

    def _update(self, spec: Any, document: Any, *args: Any, **kwargs: Any) -> Any:
        spec, document = self._through_bson(spec, _STORED), self._through_bson(document, _STORED)
        return super()._update(spec, document, *args, **kwargs)

    def _iter_documents(self, filter: Any) -> Any:
        return super()._iter_documents(self._through_bson(filter, _STORED))

    def _get_dataset(self, spec: Any, sort: Any, fields: Any, as_class: Any) -> Any:
        for doc in super()._get_dataset(spec, sort, fields, as_class):
            yield self._through_bson(doc, self._client_options)

    def aggregate(self, pipeline: list[dict[str, Any]], session: Any = None, **kwargs: Any) -> Any:
        pipeline = self._through_bson(pipeline, self._client_options)
        first = pipeline[0] if pipeline else {}
        match, rest = (first["$match"], pipeline[1:]) if "$match" in first else ({}, pipeline)
        docs = self.find(match)._compute_results()
        results = mongomock_pipeline.process_pipeline(docs, self.database, rest, session)
        return iter([self._through_bson(doc, self._client_options, document=True) for doc in results])

    def with_options(self, **options: Any) -> Any:
        """The same collection: a server's codec options are the client's here."""
        return self

    @staticmethod
    def _through_bson(value: Any, options: CodecOptions[Any], *, document: bool = False) -> Any:
        """``value`` encoded, then decoded with ``options``; a server's refusals raised as PyMongo would."""
        if value is None:
            return None
        wrapped = not isinstance(value, Mapping)
        blob = bson.encode({"v": value} if wrapped else value)
        if document and len(blob) > MAX_DOCUMENT_BYTES:
            raise DocumentTooLarge(
                f"BSON document too large ({len(blob)} bytes) - the connected server supports BSON document "
                f"sizes up to {MAX_DOCUMENT_BYTES} bytes."
            )
        if document and any(key.startswith("$") for key in value):
            raise InvalidDocument("a stored document's top-level field names cannot start with '$'")
        decoded = bson.decode(blob, options)
        return decoded["v"] if wrapped else decoded
