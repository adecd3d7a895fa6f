"""The event store on MongoDB (PyMongo) or mongomock: one collection, ``events``.

The ``_id`` ``"<run>/<seq zero-padded>"`` makes ``(run, seq)`` unique for free,
so a second writer of a ``seq`` gets duplicate key 11000 instead of an
overwrite. Appends are ordered ``insert_many`` calls (the group commit); an
ordered insert keeps what it wrote before an error, so after a duplicate the
store reads the stored events back and goes on or raises
``ConcurrencyConflict``. Reads sort on ``seq``: a server keeps no natural order.

Reads that decide (a run's events, the read-back after a duplicate, unfinished
runs, the feed, checkpoints, leases) use read concern ``majority``: what they
act on is held by a majority and cannot be rolled back by a failover. Every
server call is bounded by PyMongo's ``timeoutMS`` (``DEFAULT_TIMEOUT_MS`` unless
the URL sets one): a hung server is ``StoreUnavailable``; the engine backs off.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from bson.raw_bson import RawBSONDocument
from pymongo import ASCENDING, MongoClient, WriteConcern
from pymongo import timeout as pymongo_timeout
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError, PyMongoError
from pymongo.read_concern import ReadConcern

from orchestrator.core import events as ev
from orchestrator.core.codec import is_text
from orchestrator.core.crashpoints import armed, crash_point
from orchestrator.core.errors import CorruptEvent, StoreUnavailable
from orchestrator.core.events import Event
from orchestrator.core.ports import Position
from orchestrator.core.retention import Pruned

from .encoding import CODEC_OPTIONS, TYPE_REGISTRY, decode, decode_doc, encode_events, refusal, round_trip
from .feed import STAMPS, FeedWindow, Window, type_filter, writer_stamps
from .index_specs import INDEXES as INDEXES
from .index_specs import LEASE_INDEXES as LEASE_INDEXES
from .memory import plan_append, read_only_error
from .mongo_prune import prune as prune_runs
from .open_runs import ENDED_BATCH, OpenRuns, mark
from .open_runs import oldest_first as oldest_first
from .redaction import redact, safe_cause, unavailable

log = logging.getLogger("evenflow.store")

LOG_WRITE_CONCERN = WriteConcern(w="majority", j=True, wtimeout=10_000)
"""Once an append returns, a majority has journaled it; never wait forever.

While ``timeoutMS`` is in effect (``connect`` sets it) PyMongo leaves ``wtimeout``
out of every command and sends ``maxTimeMS`` instead, so the operation timeout
alone bounds the wait; ``wtimeout`` bounds it for a client opened without one."""
MAJORITY_READS = ReadConcern("majority")
"""What reads see: only what a majority holds, so nothing a failover rolls back is acted on."""
DEFAULT_TIMEOUT_MS = 10_000
"""PyMongo's ``timeoutMS`` unless the URL sets one: the bound on every server call, retries included."""

DEFAULT_DATABASE = "evenflow"
LEASES = "leases"
"""One document per orchestrator sharing the log: ``{_id: owner, beat, released, at}``."""
CHECKPOINTS = "checkpoints"
"""One document per listener: ``{_id: name, position, at}``."""
FEED_WINDOW_S = 30.0
"""How late, after its ``at``, an event may become readable and still reach the listeners."""
DEFAULT_SERVER_SELECTION_TIMEOUT_MS = 5_000
DUPLICATE_KEY = 11000


_WRITE_CONCERN_KEYS = {"w", "journal", "wtimeoutms"}


class MongoStore:
    """An ``EventStore`` over a PyMongo or mongomock ``Collection``; exposes it as ``.events``.

    ``write_concern`` and ``read_concern`` apply to a real server only
    (mongomock has no replication); pass None to keep the collection's own.
    ``client``, when given, is closed with the store. Unfinished runs come
    from the submissions marked open (``orchestrator.store.open_runs``), unmarked as runs end.
    """

    def __init__(
        self,
        collection: Collection[dict[str, Any]],
        *,
        write_concern: WriteConcern | None = LOG_WRITE_CONCERN,
        read_concern: ReadConcern | None = MAJORITY_READS,
        read_only: bool = False,
        client: Any = None,
        label: str = "MongoDB",
        feed_window_s: float = FEED_WINDOW_S,
    ) -> None:
        self._server = isinstance(collection, Collection)
        concerns = {"write_concern": write_concern, "read_concern": read_concern}

        def tuned(other: Any) -> Any:  # whoever opened the client, values come back by our type mapping
            return other.with_options(codec_options=CODEC_OPTIONS, **concerns) if self._server else other

        self.events = tuned(collection)
        self.leases = tuned(collection.database[LEASES])
        self.checkpoints = tuned(collection.database[CHECKPOINTS])
        unmark_every = ENDED_BATCH if self._server else None  # mongomock: every update reads all
        self.open_runs = OpenRuns(
            self.checkpoints, self._guard, writable=not read_only, unmark_every=unmark_every
        )
        self._timeout_ms = _timeout_ms(collection)
        self.feed, self._writer = FeedWindow(feed_window_s), writer_stamps()
        self.read_only = read_only
        self._client = client
        self._label = label
        # mongomock is not thread-safe; a real server serialises for us.
        self._lock: AbstractContextManager[Any] = nullcontext() if self._server else threading.RLock()
        if not read_only:
            self._create_indexes()
            with self._lock:
                self.open_runs.ensure_marked(self.events)

    @property
    def database(self) -> Any:
        """The log's database, where leases, checkpoints and the read models live beside it."""
        return self.events.database

    def append(self, events: Sequence[Event]) -> None:
        if self.read_only:
            raise read_only_error(f"event store at {self._label}")
        batch = list(events)
        with self._lock:
            self._write_all(batch)
            self.open_runs.landed(self.events, batch)

    def read(self, run: str, after_seq: int = 0) -> list[Event]:
        if not is_text(run):  # no run has such an id, and BSON cannot carry it
            return []
        query = {"run": run, "_id": {"$gt": ev.event_id(run, after_seq), "$lt": run + "/\uffff"}}
        with self._lock, self._guard(f"reading run {run!r}"):
            docs = list(self.events.find(query).sort("seq", ASCENDING))
        return [decode(doc) for doc in docs]

    def unfinished_runs(self) -> list[str]:
        with self._lock:
            return self.open_runs.unfinished(self.events)

    # --- the feed listeners read (see orchestrator.store.feed) -------------------------------

    def read_feed(
        self, position: Position | None, patterns: Sequence[str], limit: int
    ) -> tuple[list[Event], Position]:
        window = self.feed.parse(position)
        query = {**type_filter(patterns), **self.feed.query(window)}
        with self._lock, self._guard("reading the feed"):
            docs = list(self.events.find(query).sort([("at", ASCENDING), ("_id", ASCENDING)]).limit(limit))
        found: list[Event] = []
        for doc in docs:
            try:
                found.append(decode(doc))
            except CorruptEvent as exc:
                log.error("the feed skips a damaged event: %s", exc)
        return found, self.feed.advance(window, docs, self.feed.millis(ev.utcnow()))

    def feed_head(self, patterns: Sequence[str]) -> Position:
        with self._lock, self._guard("finding the end of the feed"):
            latest = list(self.events.find({}, {"at": 1}).sort([("at", -1), ("_id", -1)]).limit(1))
            if not latest:
                return self.feed.start()
            window = Window(self.feed.millis(latest[0]["at"]), None)
            docs = list(self.events.find({**type_filter(patterns), **self.feed.query(window)}, STAMPS))
        return self.feed.advance(window, docs, self.feed.millis(ev.utcnow()))

    def prune(
        self, before: datetime, *, dry_run: bool = False, keep: Callable[[list[str]], None] | None = None
    ) -> Pruned:
        """Remove whole runs that ended before ``before`` (``mongo_prune.py``)."""
        if self.read_only:
            raise read_only_error(f"event store at {self._label}")
        window = self.feed.window_ms
        with self._lock, self._guard("pruning finished runs", "run prune again to go on"):
            return prune_runs(
                self.events,
                self.database,
                before,
                window_ms=window,
                append=self.append,
                dry_run=dry_run,
                keep=keep,
            )

    def load_checkpoint(self, name: str) -> Position | None:
        with self._lock, self._guard(f"reading the checkpoint of {name!r}"):
            doc = self.checkpoints.find_one({"_id": name})
        return dict(doc["position"]) if doc is not None else None

    def checkpoint_names(self) -> list[str]:
        """The names listeners saved places under, sorted."""
        with self._lock, self._guard("listing checkpoints"):
            found = self.checkpoints.find({"_id": {"$type": "string"}}, {"_id": 1})
            return sorted(doc["_id"] for doc in found)  # other ids are the store's own notes

    def save_checkpoint(self, name: str, position: Position) -> None:
        if self.read_only:
            raise read_only_error(f"event store at {self._label}")
        self.feed.parse(position)
        change = {"$set": {"position": position, "at": ev.utcnow()}}
        with self._lock, self._guard(f"saving the checkpoint of {name!r}"):
            self.checkpoints.update_one({"_id": name}, change, upsert=True)

    # --- leases (see orchestrator.engine.ownership) ---------------------------------------

    def renew_lease(self, owner: str) -> None:
        change = {"$inc": {"beat": 1}, "$set": {"released": False, "at": ev.utcnow()}}
        with self._lock, self._guard(f"renewing the lease of {owner}"):
            self.leases.update_one({"_id": owner}, change, upsert=True)

    def read_leases(self) -> dict[str, tuple[int, bool]]:
        with self._lock, self._guard("reading the leases"):
            docs = list(self.leases.find({}, {"beat": 1, "released": 1}))
        return {str(doc["_id"]): (int(doc.get("beat", 0)), bool(doc.get("released"))) for doc in docs}

    def release_lease(self, owner: str) -> None:
        with self._lock, self._guard(f"releasing the lease of {owner}"):
            self.leases.update_one({"_id": owner}, {"$set": {"released": True, "at": ev.utcnow()}})

    def close(self) -> None:
        self.open_runs.flush(self.events)  # the ended runs noted since the last unmarking (never raises)
        if self._client is not None:
            self._client.close()
            self._client = None

    def _insert(self, events: Sequence[Event]) -> int | None:
        """Insert in order; return the index of the first duplicate, or None when all were written.

        Every event is encoded (and checked) before anything is sent: a server gets the bytes as they
        are, mongomock their decoding (it takes no raw BSON).
        """
        blobs = encode_events(events, lambda event: {**self._writer(), **mark(event)})
        docs: list[Any] = [RawBSONDocument(blob) if self._server else decode_doc(blob) for blob in blobs]
        try:
            with self._guard(f"appending {len(docs)} events", "some may have landed: re-read the runs"):
                if armed("mid-batch") and len(docs) > 1:  # die with half of the batch written
                    self.events.insert_many(docs[: len(docs) // 2], ordered=True)
                    crash_point("mid-batch")
                self.events.insert_many(docs, ordered=True)
        except BulkWriteError as exc:
            return self._first_duplicate(exc, events)
        return None

    def _first_duplicate(self, exc: BulkWriteError, events: Sequence[Event]) -> int:
        details = exc.details or {}
        errors = sorted(details.get("writeErrors") or [], key=lambda error: error.get("index", 0))
        if details.get("writeConcernErrors") or not errors:
            raise StoreUnavailable(
                f"{self._label} did not confirm the write concern for an append of {len(events)} events "
                f"({details.get('nInserted', '?')} inserted); they may not be durable: re-read the runs"
            ) from exc
        first = errors[0]  # an ordered insert stops here, so its index is also nInserted
        index = int(first.get("index", details.get("nInserted", 0)))
        if first.get("code") != DUPLICATE_KEY:  # the events before it are written: callers re-read
            code, message = first.get("code"), first.get("errmsg", "no message")
            why = f"was refused by {self._label} (code {code}): {message}"
            raise refusal([(events[index], why)]) from exc
        return index

    def _skip_stored(self, rest: Sequence[Event]) -> list[Event]:
        """``rest[0]`` was a duplicate: drop events already stored alike, stop at a conflict."""
        ids = [event.id for event in rest]
        with self._guard(f"reading back {len(ids)} events after a duplicate"):
            stored = {doc["_id"]: decode(doc) for doc in self.events.find({"_id": {"$in": ids}})}
        if rest[0].id not in stored:  # on the primary alone (a wtimeout, a writer in flight): never loop
            raise StoreUnavailable(
                f"{self._label} holds event {rest[0].id} but not yet on a majority, so a failover may still "
                "roll it back; re-read the runs and try again"
            )
        fresh, conflict = plan_append(rest, stored, round_trip)
        if conflict is not None:
            self._write_all(fresh)
            raise conflict
        return fresh

    def _write_all(self, events: list[Event]) -> None:
        """Insert, skipping events stored alike, until done or a conflict stops the batch."""
        while events:
            duplicate = self._insert(events)
            if duplicate is None:
                return
            events = self._skip_stored(events[duplicate:])

    def _create_indexes(self) -> None:
        with self._lock, self._guard("creating the event indexes"):
            for index in INDEXES:
                self.events.create_index(list(index.keys), name=index.name, **index.options())
            for index in LEASE_INDEXES:
                self.leases.create_index(list(index.keys), name=index.name, **index.options())

    @contextmanager
    def _guard(
        self, doing: str, then: str = "try again when it is back", *, bound_ms: float | None = None
    ) -> Iterator[None]:
        """Turn the driver's errors (other than a bulk write's, handled above) into ``StoreUnavailable``.

        ``bound_ms`` is the operation timeout in force, when the call sets its own.
        """
        try:
            yield
        except BulkWriteError:
            raise
        except PyMongoError as exc:
            bound = bound_ms or self._timeout_ms
            if exc.timeout and bound:
                raise StoreUnavailable(
                    f"{self._label} timed out after {int(bound)} ms; the server is hung or unreachable "
                    f"(while {doing}); {then}"
                ) from safe_cause(exc)
            raise StoreUnavailable(
                f"{self._label} failed while {doing}: {redact(str(exc))}; {then}"
            ) from safe_cause(exc)


def connect(
    url: str,
    *,
    read_only: bool = False,
    write_concern: WriteConcern | None = None,
    **client_options: Any,
) -> MongoStore:
    """Open a real server, checked with a ping, failing fast with the credentials redacted.

    The log's write concern is ``LOG_WRITE_CONCERN`` unless ``write_concern`` is
    given or the URL sets ``w``, ``journal`` or ``wtimeoutMS``; reads are
    ``MAJORITY_READS`` unless the URL sets ``readConcernLevel``; every call is
    bounded by ``DEFAULT_TIMEOUT_MS`` unless the URL or ``client_options`` set ``timeoutMS``.
    """
    label = redact(url)
    query = {key.lower() for key, _ in parse_qsl(urlsplit(url).query)}
    if "serverselectiontimeoutms" not in query:
        client_options.setdefault("serverSelectionTimeoutMS", DEFAULT_SERVER_SELECTION_TIMEOUT_MS)
    if "timeoutms" not in query:
        client_options.setdefault("timeoutMS", DEFAULT_TIMEOUT_MS)
    client_options.update(tz_aware=True, tzinfo=UTC, type_registry=TYPE_REGISTRY)
    try:
        client: MongoClient[dict[str, Any]] = MongoClient(url, **client_options)
    except (PyMongoError, ValueError, TypeError) as exc:
        raise unavailable(f"bad MongoDB URL or option for {label}", exc) from safe_cause(exc)
    try:
        with _opening_bound(client):
            client.admin.command("ping")
        database = client.get_default_database(DEFAULT_DATABASE)
        if write_concern is None and not query & _WRITE_CONCERN_KEYS:
            write_concern = LOG_WRITE_CONCERN
        return MongoStore(
            database["events"],
            write_concern=write_concern,
            read_concern=None if "readconcernlevel" in query else MAJORITY_READS,
            read_only=read_only,
            client=client,
            label=label,
        )
    except PyMongoError as exc:
        client.close()
        raise unavailable(f"cannot reach MongoDB at {label}", exc) from safe_cause(exc)
    except BaseException:
        client.close()
        raise


def _opening_bound(client: Any) -> AbstractContextManager[Any]:
    """The opening ping under the shorter of ``serverSelectionTimeoutMS`` and ``timeoutMS``: under
    ``timeoutMS`` alone PyMongo's server selection would wait it out, and fail slower than asked."""
    options = getattr(client, "options", None)
    bounds = [getattr(options, name, None) for name in ("server_selection_timeout", "timeout")]
    numbers = [bound for bound in bounds if isinstance(bound, int | float) and bound > 0]
    return pymongo_timeout(min(numbers)) if numbers else nullcontext()


def open_mongomock(url: str = "mongomock://", *, read_only: bool = False) -> MongoStore:
    """A fresh in-memory mongomock server held to a server's BSON rules; the URL path names the database."""
    from .faithful_mock import client as mock_client

    database = unquote(urlsplit(url).path.strip("/")) or DEFAULT_DATABASE
    client: Any = mock_client()
    return MongoStore(
        client[database]["events"], write_concern=None, read_only=read_only, client=client, label=url
    )


def _timeout_ms(collection: Any) -> int | None:
    """The ``timeoutMS`` of the collection's client (None on mongomock, or when the client has none)."""
    if not isinstance(collection, Collection):
        return None
    seconds = collection.database.client.options.timeout
    return round(seconds * 1000) if seconds else None
