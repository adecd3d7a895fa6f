"""A MongoDB replica-set primary on the wire, answered from mongomock, that can stop answering.

Why: mongomock runs inside the client, so it cannot show which options a real
PyMongo client puts on the commands it sends (read concern, ``maxTimeMS``,
write concern), nor what the client does when a server stops answering. Here
the ``MongoClient`` is real and MockupDB (by the PyMongo authors) speaks the
protocol: ``hello`` advertises a replica-set primary at wire version 21 (PyMongo
4 refuses MockupDB's default, 6), every other command is recorded in ``sent``
and served from a mongomock database, and ``hang()`` makes the server take
commands without ever answering them (it still answers the handshake, as a
``mongod`` stuck on its disk does), until ``answer()``. Client calls are made
from the test's own threads, never through ``mockupdb.go()`` (which re-raises
errors without their labels).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

import mongomock
from mockupdb import MockupDB, Request

SET_NAME = "rs0"
WIRE_VERSION = 21
"""MongoDB 7.0."""
DUPLICATE_KEY = 11000

Doc = dict[str, Any]


class ScriptedPrimary:
    """A one-member replica set ``rs0`` on 127.0.0.1, as a context manager; ``url`` is for ``open_store``."""

    def __init__(self, database: str = "evenflow") -> None:
        self.database = database
        self.sent: list[Doc] = []
        """Every command but the handshake, as the client sent it."""
        self.problems: list[str] = []
        """Commands the backend could not serve; a test should end with none."""
        self._mock = MockupDB(port=0)
        self._data = mongomock.MongoClient()[database]
        self._lock = threading.Lock()
        self._answering = threading.Event()
        self._answering.set()

    def __enter__(self) -> ScriptedPrimary:
        self._mock.run()
        self._mock.autoresponds(self._respond)
        return self

    def __exit__(self, *exc: object) -> None:
        self._answering.set()
        self._mock.stop()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._mock.port}"

    @property
    def url(self) -> str:
        return f"mongodb://{self.address}/{self.database}?replicaSet={SET_NAME}"

    def hang(self) -> None:
        """From now on take every command but the handshake and answer none."""
        self._answering.clear()

    def answer(self) -> None:
        self._answering.set()

    def commands(self, name: str, collection: str | None = None) -> list[Doc]:
        """The commands ``name`` sent so far (on ``collection`` if given)."""
        with self._lock:
            return [
                doc
                for doc in self.sent
                if _name(doc) == name.lower() and (collection is None or doc.get(_verb(doc)) == collection)
            ]

    def documents(self, collection: str, query: Mapping[str, Any], sort: str = "_id") -> list[Doc]:
        """What the server holds, read behind the client's back (so even while it hangs)."""
        with self._lock:
            return list(self._data[collection].find(dict(query)).sort(sort, 1))

    def _respond(self, request: Request) -> bool:
        """True when answered; False leaves the command queued, unanswered, for ever."""
        name = _name(request.doc)
        if name in ("ismaster", "hello"):
            return bool(request.replies(self._hello()))
        if not self._answering.is_set():
            return False
        with self._lock:
            self.sent.append(dict(request.doc))
            answer = self._execute(name, request.doc)
        return bool(request.replies(answer))

    def _hello(self) -> Doc:
        return {
            "ismaster": True,
            "isWritablePrimary": True,
            "helloOk": True,
            "setName": SET_NAME,
            "hosts": [self.address],
            "me": self.address,
            "primary": self.address,
            "minWireVersion": 0,
            "maxWireVersion": WIRE_VERSION,
            "logicalSessionTimeoutMinutes": 30,
        }

    def _execute(self, name: str, doc: Mapping[str, Any]) -> Doc:
        try:
            serve = _SERVE.get(name)
            if serve is not None:
                return serve(self._data[doc[_verb(doc)]], doc)
            if name in ("ping", "createindexes", "endsessions", "killcursors"):
                return {}
        except Exception as exc:  # an unsupported query: the test must hear of it
            self.problems.append(f"{name}: {type(exc).__name__}: {exc}")
            return {"ok": 0, "code": 1, "errmsg": f"scripted primary: {exc}"}
        self.problems.append(f"unsupported command {name!r}")
        return {"ok": 0, "code": 59, "errmsg": f"scripted primary: no {name!r}"}


def _find(collection: Any, doc: Mapping[str, Any]) -> Doc:
    cursor = collection.find(doc.get("filter") or {}, doc.get("projection") or None)
    if doc.get("sort"):
        cursor = cursor.sort(list(doc["sort"].items()))
    cursor = cursor.skip(int(doc.get("skip") or 0)).limit(abs(int(doc.get("limit") or 0)))
    return {"cursor": {"id": 0, "ns": collection.full_name, "firstBatch": list(cursor)}}


def _aggregate(collection: Any, doc: Mapping[str, Any]) -> Doc:
    found = list(collection.aggregate(doc["pipeline"]))
    return {"cursor": {"id": 0, "ns": collection.full_name, "firstBatch": found}}


def _insert(collection: Any, doc: Mapping[str, Any]) -> Doc:
    inserted, errors = 0, []
    for index, item in enumerate(doc["documents"]):
        try:
            collection.insert_one(item)
            inserted += 1
        except mongomock.DuplicateKeyError as exc:
            errors.append({"index": index, "code": DUPLICATE_KEY, "errmsg": str(exc)})
            if doc.get("ordered", True):
                break
    return {"n": inserted, **({"writeErrors": errors} if errors else {})}


def _update(collection: Any, doc: Mapping[str, Any]) -> Doc:
    matched, modified, upserted = 0, 0, []
    for index, spec in enumerate(doc["updates"]):
        write = collection.update_many if spec.get("multi") else collection.update_one
        result = write(spec["q"], spec["u"], upsert=bool(spec.get("upsert")))
        matched, modified = matched + result.matched_count, modified + result.modified_count
        if result.upserted_id is not None:
            upserted.append({"index": index, "_id": result.upserted_id})
    return {
        "n": matched + len(upserted),
        "nModified": modified,
        **({"upserted": upserted} if upserted else {}),
    }


def _delete(collection: Any, doc: Mapping[str, Any]) -> Doc:
    removed = 0
    for spec in doc["deletes"]:
        write = collection.delete_one if spec.get("limit") == 1 else collection.delete_many
        removed += write(spec["q"]).deleted_count
    return {"n": removed}


_SERVE: dict[str, Callable[[Any, Mapping[str, Any]], Doc]] = {
    "find": _find,
    "aggregate": _aggregate,
    "insert": _insert,
    "update": _update,
    "delete": _delete,
}


def _verb(doc: Mapping[str, Any]) -> str:
    return next(iter(doc))


def _name(doc: Mapping[str, Any]) -> str:
    return _verb(doc).lower()
