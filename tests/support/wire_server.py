"""A scripted MongoDB on the wire: a real PyMongo client talks to it as to a replica set's primary.

Why: mongomock, and tests/support/faulty_store.py over it, raise PyMongo's errors from inside the
client, so they cannot show what the driver itself does with a server's answer: its retries of a
write labelled ``RetryableWriteError`` or cut by a dropped connection, how it splits ``insert_many``
into commands, and what it reports when one of them fails. Here the client is real; only the server
is scripted. MockupDB (by the PyMongo authors) speaks the protocol; ``WireServer`` adds:

- a ``hello`` advertising a one-member replica set's primary at wire version 21 with sessions:
  PyMongo 4 refuses MockupDB's default (wire version 6), and retries writes only on a replica set;
- a backend: every command the test does not hold is served from a mongomock database (insert,
  find, update, delete, aggregate, createIndexes), so the store's read-backs see what its writes
  landed, and a whole Orchestrator can run on it;
- retryable inserts as a server keeps them: a retry under the same session and ``txnNumber`` skips
  the statements that already ran, so a write that landed is not written twice;
- a majority snapshot: a write served with ``replicated=False`` is on this primary alone, unseen by
  reads with read concern ``majority`` until ``replicate()``, and gone after ``fail_over()``;
- holds: ``hold("insert", when=...)`` queues the next matching commands for the test, which takes
  each with ``receive`` (a bounded wait) and answers it: ``serve`` (it lands, and may be answered),
  ``reply``, ``reply_error`` (with labels), or ``hang_up`` (the connection closes);
- ``fail_write``: a fault the server applies itself to every attempt of one write, however many
  retries the driver makes (one, or as many as fit in ``timeoutMS``), and not to the next write.

Client calls that a held command blocks go through ``in_background``, a thread pool of the
server's own; not ``mockupdb.go()``, which re-raises a copy of the error built from its text,
without the ``errorLabels`` or ``details``. Every wait is bounded: ``receive`` by ``RECEIVE_S``;
``stop`` closes every connection, so a blocked client call fails at once (or after its server
selection timeout, when it tries again) and the pool ends.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import mongomock
from mockupdb import MockupDB, Request

SET_NAME = "rs0"
WIRE_VERSION = 21
"""MongoDB 7.0; PyMongo 4 needs at least 7 (4.0)."""
RECEIVE_S = 10.0
"""How long ``receive`` waits for a held command: a client retries within a second here."""
NOT_WRITABLE_PRIMARY = 10107
WRITE_CONCERN_FAILED = 64
SHUTDOWN_IN_PROGRESS = 91
DUPLICATE_KEY = 11000
COMMAND_NOT_FOUND = 59
RETRYABLE_WRITE_ERROR = "RetryableWriteError"

P = ParamSpec("P")
T = TypeVar("T")
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


@dataclass(slots=True)
class _Hold:
    name: str
    collection: str
    when: Callable[[Request], bool]
    left: int


@dataclass(slots=True)
class WriteFault:
    """What ``fail_write`` does to every attempt of one insert; ``attempts`` counts those it met."""

    when: Callable[[Request], bool]
    error: Doc | None
    """The command error each attempt gets; None closes the connection instead."""
    land: bool
    write: tuple[bytes, int] | None = None
    """The (session, txnNumber) of the write it fails, once it met the first attempt."""
    attempts: int = 0


class WireServer:
    """A MockupDB playing the primary of replica set ``rs0``, answering from a mongomock database.

    Use as a context manager; ``url`` is for ``open_store``. ``max_write_batch`` is the
    ``maxWriteBatchSize`` advertised: PyMongo splits a larger ``insert_many`` into several
    ``insert`` commands, so a fault can hit the middle of one.
    """

    def __init__(self, *, database: str = "evenflow", max_write_batch: int = 100_000) -> None:
        self.database = database
        self.sent: list[Sent] = []
        self.problems: list[str] = []
        """Commands the backend could not serve; a test should end with none."""
        self._max_write_batch = max_write_batch
        self._mock = MockupDB(port=0, request_timeout=RECEIVE_S)
        self._data: Any = mongomock.MongoClient()[database]
        self._lock = threading.Lock()
        self._holds: list[_Hold] = []
        self._faults: list[WriteFault] = []
        self._ran: dict[tuple[bytes, int], set[int]] = {}
        """Per retryable write, the statements (document indexes) that ran."""
        self._unreplicated: dict[str, set[Any]] = {}
        """Per collection, the ``_id``s written to this primary alone."""
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="wire-client")

    def __enter__(self) -> WireServer:
        self._mock.run()  # binds "localhost" as IPv4, which is 127.0.0.1; the URL and hello say so
        self._mock.autoresponds(self._respond)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Close every connection (a client blocked on one gets an error at once), then the pool."""
        self._mock.stop()
        self._pool.shutdown(wait=True, cancel_futures=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._mock.port}"

    @property
    def url(self) -> str:
        return f"mongodb://{self.address}/{self.database}?replicaSet={SET_NAME}"

    def in_background(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Run a client call that a held command will block, so the test can answer it."""
        return self._pool.submit(fn, *args, **kwargs)

    # --- scripting -------------------------------------------------------------------------------

    def hold(
        self,
        name: str,
        *,
        collection: str = "events",
        when: Callable[[Request], bool] = lambda _: True,
        times: int = 1,
    ) -> None:
        """Queue the next ``times`` commands ``name`` on ``collection`` matching ``when`` for ``receive``."""
        with self._lock:
            self._holds.append(_Hold(name.lower(), collection, when, times))

    def fail_write(
        self, *, when: Callable[[Request], bool], error: Doc | None = None, land: bool = False
    ) -> WriteFault:
        """Fail every attempt of the next insert into ``events`` matching ``when``: the driver's retries
        of it (same session and txnNumber) fail alike, a new write passes. Each attempt lands first if
        ``land``; it is answered with ``error`` (a command error document) or, without, a hang-up."""
        fault = WriteFault(when, dict(error) if error else None, land)
        with self._lock:
            self._faults.append(fault)
        return fault

    def receive(self, name: str, *, timeout: float = RECEIVE_S) -> Request:
        """The next held command, which must be a ``name``; AssertionError after ``timeout``."""
        request = self._mock.receives(timeout=timeout)
        if request is None:
            raise AssertionError(f"the wire server stopped while a test waited for {name!r}")
        assert _name(request) == name.lower(), f"expected a held {name!r}, got {request!r}"
        return request

    def serve(
        self, request: Request, *, keep: int | None = None, as_new: bool = False, replicated: bool = True
    ) -> Doc:
        """Run a held command on the backend, as the server would, and return its answer unsent.

        ``keep`` runs only the first ``keep`` documents of an insert (the server stopped there);
        ``as_new`` runs it as a write the server has no record of (so a retry of one that landed
        meets duplicate key 11000), as after a failover or with retryable writes off;
        ``replicated=False`` leaves what an insert wrote on this primary alone (see ``fail_over``).
        """
        with self._lock:
            answer = self._execute(request, keep=keep, as_new=as_new)
            if not replicated and _name(request) == "insert":
                landed = [item["_id"] for item in request.doc["documents"][: answer.get("n", 0)]]
                self._unreplicated.setdefault(request.doc["insert"], set()).update(landed)
            return answer

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

    def reply(self, request: Request, answer: Mapping[str, Any] | None = None, **fields: Any) -> None:
        """Answer a held command with ``answer`` (``serve``'s, or a ``command_error``) and ``fields``."""
        request.replies({**(answer or {}), **fields})

    def reply_error(self, request: Request, code: int, message: str, *labels: str) -> None:
        """Answer with ``command_error(code, message, *labels)``."""
        request.replies(command_error(code, message, *labels))

    def hang_up(self, request: Request) -> None:
        """Close the connection the command came on, unanswered."""
        request.hangup()

    def stored(self, collection: str = "events") -> list[Doc]:
        """What the backend holds, sorted by ``_id``."""
        with self._lock:
            return list(self._data[collection].find({}).sort("_id", 1))

    def inserts(self, collection: str = "events") -> list[Sent]:
        with self._lock:
            return [s for s in self.sent if s.name == "insert" and s.collection == collection]

    # --- serving ---------------------------------------------------------------------------------

    def _respond(self, request: Request) -> bool:
        """MockupDB's responder for every request: True when answered, False to queue it for the test."""
        name = _name(request)
        if name in ("ismaster", "hello"):
            return bool(request.replies(self._hello()))
        with self._lock:
            sent = _sent(request)
            self.sent.append(sent)
            if self._held(request, name, sent.collection):
                return False
            fault = self._fault_for(sent, request)
            answer = self._execute(request) if fault is None or fault.land else {}
        if fault is None:
            return bool(request.replies(answer))
        return bool(request.replies(fault.error) if fault.error else request.hangup())

    def _hello(self) -> Doc:
        me = self.address
        return {
            **{"ismaster": True, "isWritablePrimary": True, "helloOk": True, "setName": SET_NAME},
            **{"hosts": [me], "me": me, "primary": me, "minWireVersion": 0, "maxWireVersion": WIRE_VERSION},
            **{"maxWriteBatchSize": self._max_write_batch, "logicalSessionTimeoutMinutes": 30},
        }

    def _held(self, request: Request, name: str, collection: str | None) -> bool:
        for hold in self._holds:
            if (
                hold.left
                and (hold.name, hold.collection) == (name, collection)
                and self._match(hold.when, request)
            ):
                hold.left -= 1
                return True
        return False

    def _fault_for(self, sent: Sent, request: Request) -> WriteFault | None:
        if (sent.name, sent.collection) != ("insert", "events"):
            return None
        for fault in self._faults:
            if fault.write is None and self._match(fault.when, request):
                fault.write = sent.txn
            if fault.write is not None and fault.write == sent.txn:
                fault.attempts += 1
                return fault
        return None

    def _match(self, when: Callable[[Request], bool], request: Request) -> bool:
        """A test's predicate, run on a server thread: its error is a problem to report, not a crash."""
        try:
            return bool(when(request))
        except Exception as exc:
            self.problems.append(f"a predicate failed on {request!r}: {type(exc).__name__}: {exc}")
            return False

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
            if name in ("ping", "createindexes", "endsessions", "dropdatabase"):
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
    return Sent(name, collection if isinstance(collection, str) else None, tuple(ids), _txn(doc))
