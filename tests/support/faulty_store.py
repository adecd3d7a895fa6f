"""A mongomock collection that fails the way a MongoDB server does, on cue.

``MongoStore(FaultyCollection(collection), write_concern=None)`` runs the real
store code (its ``_guard``, duplicate-key read-back and batch handling) over a
collection that raises PyMongo's own errors where a test arms them. Faults hit
``insert_many`` (the store's only write), chosen by a predicate on the batch's
documents and a count, so a test can aim at one append site of the engine:

    refuse       raise before writing (``AutoReconnect``): nothing landed
    ambiguous    write, then raise ``NetworkTimeout``: it landed, the client saw an error
    wtimeout     write, then raise ``BulkWriteError`` with a write concern error
    partial      write the first ``keep`` documents, then raise ``AutoReconnect``
    retried      write the first ``keep`` (all by default), then answer as a driver retry
                 of the same batch does: duplicate key 11000 at index 0, nothing more inserted
    unavailable  from that insert on, every operation (reads too) raises
                 ``ServerSelectionTimeoutError`` for ``seconds`` (on ``time.monotonic``)
    slow         wait ``seconds``, then write

With ``down_after_s`` any of them also leaves the server unreachable that long after
it (the write landed, then the network went): the client cannot read back at once.
``faulty_store()`` builds the store and its wrapper in one call.

``down_for`` and ``slow_down`` do the same to every operation from now on,
whatever it is. Everything else is delegated to the wrapped collection; the
other collections of its ``database`` (the store's ``leases``, the ``runs``
read model) come wrapped too and share its outage and speed, not its faults.
Counters (``inserts``, ``refused``, each fault's ``seen`` and ``hits``) let a
test check that its fault fired and that the engine backed off.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from pymongo.errors import AutoReconnect, BulkWriteError, NetworkTimeout, ServerSelectionTimeoutError

from orchestrator.store.mongo import DUPLICATE_KEY, MongoStore

Kind = Literal["refuse", "ambiguous", "wtimeout", "partial", "retried", "unavailable", "slow"]
Docs = Sequence[Mapping[str, Any]]
Match = Callable[[Docs], bool]
WRITE_CONCERN_FAILED = 64


def anything(docs: Docs) -> bool:
    return True


def has_type(*types: str) -> Match:
    """Batches holding an event of one of ``types`` (``"run.submitted"``, ...)."""
    return lambda docs: any(doc.get("type") in types for doc in docs)


@dataclass(slots=True)
class Fault:
    """One armed fault: the ``nth`` matching insert since arming (and the ``times - 1`` after) hit it."""

    kind: Kind
    when: Match = anything
    nth: int = 1
    times: int = 1
    keep: int | None = None
    """``partial``: documents written before the error (default 1); ``retried``: default all."""
    seconds: float = 0.0
    down_after_s: float = 0.0
    """After the fault, the server stays unreachable this long (the network failed mid-reply)."""
    seen: int = 0
    """Matching inserts seen since arming."""
    hits: int = 0
    """Inserts this fault fired on."""
    landed: list[Any] = field(default_factory=list)
    """``_id``s the faulted inserts wrote although they raised: the client could not know."""
    snapshot: list[dict[str, Any]] = field(default_factory=list)
    """The whole collection just before the first hit (sorted by ``_id``): the log must keep it (L2)."""

    def due(self, docs: Docs) -> bool:
        if self.hits >= self.times or not self.when(docs):
            return False
        self.seen += 1
        return self.seen >= self.nth


class Server:
    """What the collections of one faulty database share: its outage, its speed, who may pass."""

    def __init__(self) -> None:
        self.down_until = 0.0
        self.delay_s = 0.0
        self.refused: Counter[str] = Counter()
        """Operations refused during an outage, as ``collection.method``."""
        self.lock = threading.Lock()
        self.local = threading.local()

    def gate(self, op: str) -> None:
        """The faults every operation meets: a slow server, then one that cannot be reached."""
        if self.quiet():
            return
        if self.delay_s > 0:
            threading.Event().wait(self.delay_s)
        if time.monotonic() < self.down_until:
            self.unreachable(op)

    def unreachable(self, op: str) -> None:
        with self.lock:
            self.refused[op] += 1
        raise ServerSelectionTimeoutError(f"{op}: no server available (injected outage), Timeout: 0.0s")

    def quiet(self) -> bool:
        return bool(getattr(self.local, "quiet", False))


class FaultyCollection:
    """Delegates to ``inner`` (a mongomock collection), raising PyMongo errors where a test armed them.

    Its ``database`` hands out collections (``leases``, ``runs``) that share this one's
    outage and speed, so an outage stops everything the orchestrator does with the server.
    """

    def __init__(self, inner: Any, server: Server | None = None) -> None:
        self.inner = inner
        self.server = server or Server()
        self.faults: list[Fault] = []
        self.inserts = 0
        """``insert_many`` calls attempted, refused or not."""

    # --- arming --------------------------------------------------------------------------

    def arm(
        self,
        kind: Kind,
        *,
        when: Match = anything,
        nth: int = 1,
        times: int = 1,
        keep: int | None = None,
        seconds: float = 0.0,
        down_after_s: float = 0.0,
    ) -> Fault:
        """Fire ``kind`` at the ``nth`` insert_many matching ``when`` (and at ``times - 1`` more)."""
        fault = Fault(kind, when, nth, times, keep, seconds, down_after_s)
        with self.server.lock:
            self.faults.append(fault)
        return fault

    def down_for(self, seconds: float) -> None:
        """Every operation raises ``ServerSelectionTimeoutError`` for ``seconds`` from now."""
        self.server.down_until = time.monotonic() + seconds

    def slow_down(self, seconds: float) -> None:
        """Every operation first waits ``seconds`` (0 restores full speed)."""
        self.server.delay_s = seconds

    @property
    def down(self) -> bool:
        return time.monotonic() < self.server.down_until

    @property
    def refused(self) -> Counter[str]:
        return self.server.refused

    @contextmanager
    def unfaulted(self) -> Iterator[None]:
        """Operations of this thread inside pass every fault: a test's own look at the log."""
        self.server.local.quiet = True
        try:
            yield
        finally:
            self.server.local.quiet = False

    # --- the collection ------------------------------------------------------------------

    @property
    def database(self) -> FaultyDatabase:
        return FaultyDatabase(self.inner.database, self.server)

    def insert_many(self, documents: Iterable[Mapping[str, Any]], ordered: bool = True, **kwargs: Any) -> Any:
        docs = list(documents)
        if self.server.quiet():
            return self.inner.insert_many(docs, ordered=ordered, **kwargs)
        self.server.gate(self._op("insert_many"))
        with self.server.lock:
            self.inserts += 1
            fault = next((fault for fault in self.faults if fault.due(docs)), None)
        if fault is None:
            return self.inner.insert_many(docs, ordered=ordered, **kwargs)
        return self._fire(fault, docs, ordered, kwargs)

    def __getattr__(self, name: str) -> Any:
        if name in ("inner", "server"):  # not set yet (copying, unpickling): never recurse
            raise AttributeError(name)
        attr = getattr(self.inner, name)
        if not callable(attr) or not hasattr(attr, "__self__"):
            return attr  # ``name``, ``full_name``, ...
        op = self._op(name)

        def gated(*args: Any, **kwargs: Any) -> Any:
            self.server.gate(op)
            return attr(*args, **kwargs)

        return gated

    def _op(self, method: str) -> str:
        return f"{self.inner.name}.{method}"

    # --- faults --------------------------------------------------------------------------

    def _fire(
        self, fault: Fault, docs: list[Mapping[str, Any]], ordered: bool, kwargs: dict[str, Any]
    ) -> Any:
        try:
            return self._inject(fault, docs, ordered, kwargs)
        finally:
            if fault.down_after_s > 0:
                self.down_for(fault.down_after_s)

    def _inject(
        self, fault: Fault, docs: list[Mapping[str, Any]], ordered: bool, kwargs: dict[str, Any]
    ) -> Any:
        if fault.hits == 0:
            fault.snapshot = list(self.inner.find({}).sort("_id", 1))
        fault.hits += 1
        n = len(docs)
        if fault.kind == "refuse":
            raise AutoReconnect(f"connection refused before the write of {n} documents (injected)")
        if fault.kind == "unavailable":
            self.down_for(fault.seconds)
            self.server.unreachable(self._op("insert_many"))
        if fault.kind == "slow":
            threading.Event().wait(fault.seconds)
            return self.inner.insert_many(docs, ordered=ordered, **kwargs)
        keep = n if fault.kind != "partial" else 1
        keep = keep if fault.keep is None else min(n, fault.keep)
        if keep:
            self.inner.insert_many(docs[:keep], ordered=ordered, **kwargs)
            fault.landed.extend(doc["_id"] for doc in docs[:keep])
        if fault.kind == "ambiguous":
            raise NetworkTimeout(f"timed out reading the reply to an insert of {n} documents (injected)")
        if fault.kind == "partial":
            raise AutoReconnect(f"connection reset after {keep} of {n} documents (injected)")
        if fault.kind == "wtimeout":
            raise BulkWriteError(_write_concern_failed(keep))
        assert fault.kind == "retried", fault.kind
        raise BulkWriteError(_duplicate_at_start(docs[0]))


class FaultyDatabase:
    """A mongomock database whose collections share one ``Server``'s outage and speed."""

    def __init__(self, inner: Any, server: Server) -> None:
        self.inner = inner
        self.server = server

    def __getitem__(self, name: str) -> FaultyCollection:
        return FaultyCollection(self.inner[name], self.server)

    def __getattr__(self, name: str) -> Any:
        if name in ("inner", "server"):
            raise AttributeError(name)
        return getattr(self.inner, name)  # ``name``, ``client``, ...


def faulty_store(database: str = "evenflow") -> tuple[MongoStore, FaultyCollection]:
    """A ``MongoStore`` over a fresh mongomock database through a ``FaultyCollection``.

    The store owns no client, so ``Orchestrator.close()`` leaves the data for the next
    orchestrator a test builds on the same store (a restart).
    """
    from orchestrator.store.faithful_mock import client

    faulty = FaultyCollection(client()[database]["events"])
    return MongoStore(cast(Any, faulty), write_concern=None, label="mongomock (faulty)"), faulty


def _write_concern_failed(inserted: int) -> dict[str, Any]:
    """What ``insert_many`` raises when ``wtimeout`` passes: written on the primary, not confirmed."""
    return {
        "writeErrors": [],
        "writeConcernErrors": [
            {
                "code": WRITE_CONCERN_FAILED,
                "codeName": "WriteConcernFailed",
                "errmsg": "waiting for replication timed out (injected)",
                "errInfo": {"wtimeout": True},
            }
        ],
        "nInserted": inserted,
        "nUpserted": 0,
        "nMatched": 0,
        "nModified": 0,
        "nRemoved": 0,
        "upserted": [],
    }


def _duplicate_at_start(first: Mapping[str, Any]) -> dict[str, Any]:
    """What a retried ordered insert meets when its first attempt landed: 11000 at once, nothing written."""
    return {
        "writeErrors": [
            {
                "index": 0,
                "code": DUPLICATE_KEY,
                "errmsg": f"E11000 duplicate key error index: _id_ dup key: {{ _id: {first['_id']!r} }}",
                "op": dict(first),
            }
        ],
        "writeConcernErrors": [],
        "nInserted": 0,
        "nUpserted": 0,
        "nMatched": 0,
        "nModified": 0,
        "nRemoved": 0,
        "upserted": [],
    }
