"""The wire server's primary: a MockupDB that a real PyMongo client takes for a replica set's primary,
answering every command from a mongomock database; tests/support/wire_server.py scripts faults on it.

Why: mongomock runs inside the client, so it cannot show what a real PyMongo client sends (read
concern, ``maxTimeMS``, write concern, retries, batches) nor what it does with a server's answer.
MockupDB (by the PyMongo authors) speaks the protocol; ``WirePrimary`` adds:

- a ``hello`` advertising a one-member replica set's primary at wire version 21 with sessions:
  PyMongo 4 refuses MockupDB's default (wire version 6), and retries writes only on a replica set;
- ``sent``: every command but the handshake, as the client sent it, in order (``commands`` gives
  their documents);
- a backend: every command is served from a mongomock database (insert, find, update, delete,
  aggregate, createIndexes), so the store's read-backs see what its writes landed, and a whole
  Orchestrator can run on it;
- retryable inserts as a server keeps them: a retry under the same session and ``txnNumber`` skips
  the statements that already ran, so a write that landed is not written twice;
- a majority snapshot: ids in ``_unreplicated`` (written on this primary alone) are unseen by reads
  with read concern ``majority`` until ``replicate()``, and gone after ``fail_over()``;
- ``hang()``: from then on the server takes every command but the handshake and answers none (as a
  ``mongod`` stuck on its disk does), until ``answer()``; what it took while hung stays unanswered.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import mongomock
from mockupdb import MockupDB, Request

SET_NAME = "rs0"
WIRE_VERSION = 21
"""MongoDB 7.0; PyMongo 4 needs at least 7 (4.0)."""
RECEIVE_S = 10.0
"""How long ``receive`` waits for a held command: a client retries within a second here."""
DUPLICATE_KEY = 11000
COMMAND_NOT_FOUND = 59
_HANDSHAKE = ("ismaster", "hello")
_NO_OPS = ("ping", "createindexes", "endsessions", "killcursors", "dropdatabase")

Doc = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Sent:
    """One command as the client sent it: what a test counts to see retries and batches."""

    name: str
    collection: str | None
    ids: tuple[Any, ...]
    """The ``_id``s an insert sends, or a find asks for with ``$in`` (a read-back); else ()."""
    txn: tuple[bytes, int] | None
    """(session id, ``txnNumber``): equal on a retry of the same write, new on a fresh one."""
    doc: Doc = field(default_factory=dict, compare=False, repr=False)
    """The whole command (read concern, ``maxTimeMS``, write concern...); not compared."""


class WirePrimary:
    """A MockupDB playing the primary of replica set ``rs0``, answering from a mongomock database.

    Use as a context manager; ``url`` is for ``open_store``. ``max_write_batch`` is the
    ``maxWriteBatchSize`` advertised: PyMongo splits a larger ``insert_many`` into several
    ``insert`` commands.
    """

    def __init__(self, *, database: str = "evenflow", max_write_batch: int = 100_000) -> None:
        self.database = database
        self.sent: list[Sent] = []
        """Every command but the handshake, as the client sent it (answered, held or hung alike)."""
        self.problems: list[str] = []
        """Commands the backend could not serve; a test should end with none."""
        self._max_write_batch = max_write_batch
        self._mock = MockupDB(port=0, request_timeout=RECEIVE_S)
        self._data: Any = mongomock.MongoClient()[database]
        self._lock = threading.Lock()
        self._hung = False
        self._ran: dict[tuple[bytes, int], set[int]] = {}
        """Per retryable write, the statements (document indexes) that ran."""
        self._unreplicated: dict[str, set[Any]] = {}
        """Per collection, the ``_id``s written to this primary alone."""

    def __enter__(self) -> WirePrimary:
        self._mock.run()  # binds "localhost" as IPv4, which is 127.0.0.1; the URL and hello say so
        self._mock.autoresponds(self._respond)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Close every connection: a client blocked on one gets an error at once."""
        self._mock.stop()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._mock.port}"

    @property
    def url(self) -> str:
        return f"mongodb://{self.address}/{self.database}?replicaSet={SET_NAME}"

    # --- a server that stops answering -----------------------------------------------------------

    def hang(self) -> None:
        """From now on take every command but the handshake and answer none (nor hold it for a test)."""
        with self._lock:
            self._hung = True

    def answer(self) -> None:
        """Answer the commands sent from now on again; those taken while hung stay unanswered."""
        with self._lock:
            self._hung = False

    # --- what was sent, what is stored -----------------------------------------------------------

    def commands(self, name: str | None = None, collection: str | None = None) -> list[Doc]:
        """The documents of the commands sent so far: all, or those ``name`` (on ``collection`` if given)."""
        with self._lock:
            return [
                sent.doc
                for sent in self.sent
                if (name is None or sent.name == name.lower())
                and (collection is None or sent.collection == collection)
            ]

    def inserts(self, collection: str = "events") -> list[Sent]:
        with self._lock:
            return [s for s in self.sent if s.name == "insert" and s.collection == collection]

    def stored(
        self, collection: str = "events", query: Mapping[str, Any] | None = None, *, sort: str = "_id"
    ) -> list[Doc]:
        """What the backend holds (matching ``query``), sorted by ``sort``; read behind the client's
        back, so even while the server hangs."""
        with self._lock:
            return list(self._data[collection].find(dict(query or {})).sort(sort, 1))

    def replicate(self) -> None:
        """A majority now holds every write: majority reads see them."""
        with self._lock:
            self._unreplicated.clear()

    def fail_over(self) -> None:
        """A new primary takes over without the writes only this one held: they are rolled back."""
        with self._lock:
            for name, ids in self._unreplicated.items():
                self._data[name].delete_many({"_id": {"$in": sorted(ids)}})
            self._unreplicated.clear()

    # --- serving ---------------------------------------------------------------------------------

    def _respond(self, request: Request) -> bool:
        """MockupDB's responder for every request: True when taken, False to queue it for the test."""
        if _name(request) in _HANDSHAKE:
            return bool(request.replies(self._hello()))
        with self._lock:
            sent = _sent(request)
            self.sent.append(sent)
            if self._hung:
                return True  # taken, and never answered
            respond = self._script(request, sent)
        return False if respond is None else bool(respond())

    def _script(self, request: Request, sent: Sent) -> Callable[[], object] | None:
        """Under the lock: how to answer ``request`` once the lock is let go, or None to queue it
        for the test. Here: serve it from the backend."""
        answer = self._execute(request)
        return lambda: request.replies(answer)

    def _hello(self) -> Doc:
        me = self.address
        return {
            **{"ismaster": True, "isWritablePrimary": True, "helloOk": True, "setName": SET_NAME},
            **{"hosts": [me], "me": me, "primary": me, "minWireVersion": 0, "maxWireVersion": WIRE_VERSION},
            **{"maxWriteBatchSize": self._max_write_batch, "logicalSessionTimeoutMinutes": 30},
        }

    def _execute(self, request: Request, *, keep: int | None = None, as_new: bool = False) -> Doc:
        name, doc = _name(request), request.doc
        try:
            if name == "insert":
                return self._insert(doc, _txn(doc) if not as_new else None, keep)
            if name in _READS:
                return _READS[name](self._data[doc[name]], self._snapshot(doc, doc[name]), doc)
            if name == "update":
                return _update(self._data[doc["update"]], doc)
            if name == "delete":
                return _delete(self._data[doc["delete"]], doc)
            if name in _NO_OPS:
                return {}
        except Exception as exc:  # a wrong script or an unsupported query: the test must hear of it
            self.problems.append(f"{name}: {type(exc).__name__}: {exc}")
            return command_error(1, f"wire harness: {exc}")
        self.problems.append(f"unsupported command {name!r}")
        return command_error(COMMAND_NOT_FOUND, f"wire harness: no {name!r}")

    def _snapshot(self, doc: Doc, collection: str) -> Doc:
        """The filter that hides what a majority does not hold yet, for a read concern that asks so."""
        level = (doc.get("readConcern") or {}).get("level", "local")
        hidden = self._unreplicated.get(collection, set())
        if level not in ("majority", "linearizable") or not hidden:
            return {}
        return {"_id": {"$nin": sorted(hidden)}}

    def _insert(self, doc: Doc, txn: tuple[bytes, int] | None, keep: int | None) -> Doc:
        """An ``insert`` as a server runs it: in order, stopping at the first error when ordered."""
        collection, docs = self._data[doc["insert"]], doc["documents"]
        ran = self._ran.setdefault(txn, set()) if txn else set()
        inserted, errors = 0, []
        for index, item in enumerate(docs[:keep]):
            if index not in ran:
                try:
                    collection.insert_one(item)
                except mongomock.DuplicateKeyError as exc:
                    errors.append({"index": index, "code": DUPLICATE_KEY, "errmsg": str(exc)})
                    if doc.get("ordered", True):
                        break
                    continue
                ran.add(index)
            inserted += 1
        return {"n": inserted, **({"writeErrors": errors} if errors else {})}


def command_error(code: int, message: str, *labels: str) -> Doc:
    """A command's error reply (``ok: 0``), with ``labels`` as its ``errorLabels``."""
    return {"ok": 0, "code": code, "errmsg": message, **({"errorLabels": list(labels)} if labels else {})}


def _find(collection: Any, snapshot: Doc, doc: Doc) -> Doc:
    cursor = collection.find({"$and": [doc.get("filter") or {}, snapshot]}, doc.get("projection") or None)
    if doc.get("sort"):
        cursor = cursor.sort(list(doc["sort"].items()))
    cursor = cursor.skip(int(doc.get("skip") or 0)).limit(abs(int(doc.get("limit") or 0)))
    return _cursor(collection, list(cursor))


def _aggregate(collection: Any, snapshot: Doc, doc: Doc) -> Doc:
    return _cursor(collection, list(collection.aggregate([{"$match": snapshot}, *doc["pipeline"]])))


def _cursor(collection: Any, docs: list[Doc]) -> Doc:
    """Everything in the first batch, cursor id 0: the client never sends a ``getMore``."""
    return {"cursor": {"id": 0, "ns": collection.full_name, "firstBatch": docs}}


_READS: dict[str, Callable[[Any, Doc, Doc], Doc]] = {"find": _find, "aggregate": _aggregate}


def _update(collection: Any, doc: Doc) -> Doc:
    matched, modified, upserted, errors = 0, 0, [], []
    for index, spec in enumerate(doc["updates"]):
        change, upsert = spec["u"], bool(spec.get("upsert"))
        try:
            if isinstance(change, Mapping) and all(key.startswith("$") for key in change):
                write = collection.update_many if spec.get("multi") else collection.update_one
                result = write(spec["q"], change, upsert=upsert)
            else:
                result = collection.replace_one(spec["q"], change, upsert=upsert)
        except mongomock.DuplicateKeyError as exc:
            errors.append({"index": index, "code": DUPLICATE_KEY, "errmsg": str(exc)})
            if doc.get("ordered", True):
                break
            continue
        matched += result.matched_count
        modified += result.modified_count
        if result.upserted_id is not None:
            upserted.append({"index": index, "_id": result.upserted_id})
    extra = {key: value for key, value in (("upserted", upserted), ("writeErrors", errors)) if value}
    return {"n": matched + len(upserted), "nModified": modified, **extra}


def _delete(collection: Any, doc: Doc) -> Doc:
    removed = 0
    for spec in doc["deletes"]:
        write = collection.delete_one if spec.get("limit") == 1 else collection.delete_many
        removed += write(spec["q"]).deleted_count
    return {"n": removed}


def _name(request: Request) -> str:
    return str(request.command_name or "").lower()


def _txn(doc: Mapping[str, Any]) -> tuple[bytes, int] | None:
    lsid, number = doc.get("lsid"), doc.get("txnNumber")
    return (bytes(lsid["id"]), int(number)) if lsid and number is not None else None


def _sent(request: Request) -> Sent:
    doc, name = request.doc, _name(request)
    collection = doc.get(request.command_name)
    ids: Sequence[Any] = ()
    if name == "insert":
        ids = [item.get("_id") for item in doc.get("documents", ())]
    elif name == "find" and isinstance((doc.get("filter") or {}).get("_id"), Mapping):
        ids = doc["filter"]["_id"].get("$in", ())
    return Sent(name, collection if isinstance(collection, str) else None, tuple(ids), _txn(doc), dict(doc))
