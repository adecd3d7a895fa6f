"""Event stores, chosen by URL.

    (no URL) or ""                    the embedded store in ``home`` (default: ``default_home()``)
    embedded:///abs/path              the embedded store in that directory
    memory://                         in memory, gone with the process
    mongomock:// or mongomock://h/db  in-process mongomock, gone with the process
    mongodb://... / mongodb+srv://... a MongoDB server; database from the URL path, default "evenflow"

PyMongo (its ``bson`` too) and mongomock are imported only when a store needs
them, so importing this package (and ``evenflow --help``) stays cheap.

What a store can do beyond its log is asked once, when it is opened, with
``abilities(store)``; call sites use the ``StoreAbilities`` it gives.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast
from urllib.parse import unquote, urlsplit

from orchestrator.core.errors import ConfigurationError
from orchestrator.core.ports import (
    EventStore,
    FeedStore,
    HistoryStore,
    LeaseStore,
    PruneStore,
    QueryStore,
    ReadModelStore,
    ReadOnlyFlag,
    ScanStore,
)

if TYPE_CHECKING:
    from .embedded import EmbeddedStore
    from .memory import MemoryStore
    from .mongo import MongoStore

__all__ = [
    "EmbeddedStore",
    "EventStore",
    "MemoryStore",
    "MongoStore",
    "StoreAbilities",
    "abilities",
    "default_home",
    "open_store",
]

URL_FORMS = (
    "no URL (the embedded store in --home / EVENFLOW_HOME)",
    "embedded:///absolute/path",
    "memory://",
    "mongomock://[host/database]",
    "mongodb://[user:password@]host[:port][/database][?options]",
    "mongodb+srv://...",
)


def default_home() -> Path:
    """Where the embedded store lives: $EVENFLOW_HOME, else $XDG_DATA_HOME/evenflow, else ~/.local/share."""
    explicit = os.environ.get("EVENFLOW_HOME")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    if xdg and Path(xdg).is_absolute():  # the XDG spec says to ignore a relative value
        return Path(xdg) / "evenflow"
    return Path.home() / ".local" / "share" / "evenflow"


def open_store(
    url: str | None = None,
    *,
    home: str | os.PathLike[str] | None = None,
    read_only: bool = False,
    **options: Any,
) -> EventStore:
    """Open the event store a URL names; ``options`` go to the MongoDB client (and ``write_concern``).

    Raises ``ConfigurationError`` for a URL of no known form, ``StoreUnavailable``
    when the store cannot be reached, ``StoreLocked`` when another process owns
    the embedded store.
    """
    scheme = urlsplit(url).scheme.lower() if url else ""
    if scheme in ("mongodb", "mongodb+srv"):
        from .mongo import connect

        return connect(url or "", read_only=read_only, **options)
    _no_options(scheme or "embedded", options)
    if not url or scheme == "embedded":
        from .embedded import EmbeddedStore

        return EmbeddedStore(_embedded_home(url, home), read_only=read_only)
    if scheme == "memory":
        from .memory import MemoryStore

        return MemoryStore(read_only=read_only)
    if scheme == "mongomock":
        from .mongo import open_mongomock

        return open_mongomock(url, read_only=read_only)
    raise ConfigurationError(
        f"unknown event store URL scheme {scheme or url!r}; use one of: {'; '.join(URL_FORMS)}"
    )


@dataclass(frozen=True, slots=True)
class StoreAbilities:
    """What an opened store can do beyond its log: each ability is the store, typed by its protocol, or None.

    ``leases`` is None also for a store opened read-only: it cannot renew a lease.
    """

    writable: bool
    feed: FeedStore | None = None
    leases: LeaseStore | None = None
    queries: QueryStore | None = None
    """Its log as the ``events`` collection that projections aggregate over."""
    read_models: ReadModelStore | None = None
    """Read models stored beside the log and caught up with it; else they are rebuilt in memory."""
    scan: ScanStore | None = None
    prune: PruneStore | None = None
    """Removing whole finished runs (retention)."""
    history: HistoryStore | None = None
    """History tables kept beside the log, for readers that cost O(answer)."""


def abilities(store: EventStore) -> StoreAbilities:
    """Check once, when a store is opened, which ability protocols it implements.

    Raises ``ConfigurationError`` for an object that is no ``EventStore``.
    Members are looked up without being run, so the embedded store's ``events``
    (a mirror loaded on first use) is not loaded by asking.
    """
    if not _offers(store, EventStore):
        raise ConfigurationError(
            f"{store!r:.80} is not an event store (it needs append, read, unfinished_runs and close); "
            "pass a store URL or an object with those methods"
        )
    writable = not (_offers(store, ReadOnlyFlag) and cast(ReadOnlyFlag, store).read_only)
    return StoreAbilities(
        writable=writable,
        feed=cast(FeedStore, store) if _offers(store, FeedStore) else None,
        leases=cast(LeaseStore, store) if writable and _offers(store, LeaseStore) else None,
        queries=cast(QueryStore, store) if _offers(store, QueryStore) else None,
        read_models=cast(ReadModelStore, store) if _offers(store, ReadModelStore) else None,
        scan=cast(ScanStore, store) if _offers(store, ScanStore) else None,
        history=cast(HistoryStore, store) if _offers(store, HistoryStore) else None,
        prune=cast(PruneStore, store) if writable and _offers(store, PruneStore) else None,
    )


def _offers(store: object, protocol: type) -> bool:
    """Whether ``store`` has every public member of ``protocol`` (and its bases).

    A member is looked up statically first, so a property is not run; only one
    a proxy's ``__getattr__`` provides is asked for by ``hasattr``.
    """
    members = {
        name
        for base in protocol.__mro__
        if base not in (object, Protocol) and getattr(base, "_is_protocol", False)
        for name in (*vars(base), *getattr(base, "__annotations__", {}))
        if not name.startswith("_")
    }
    return all(_has(store, name) for name in members)


def _has(store: object, name: str) -> bool:
    return inspect.getattr_static(store, name, _MISSING) is not _MISSING or hasattr(store, name)


_MISSING = object()


def _embedded_home(url: str | None, home: str | os.PathLike[str] | None) -> Path:
    if not url:
        return Path(home) if home is not None else default_home()
    parts = urlsplit(url)
    path = unquote(parts.path)
    if parts.netloc or (path and not Path(path).is_absolute()):
        raise ConfigurationError(
            f"embedded store URL {url!r} must name an absolute directory, after three slashes: "
            "embedded:///absolute/path"
        )
    if path:
        return Path(path)
    return Path(home) if home is not None else default_home()


def _no_options(kind: str, options: dict[str, Any]) -> None:
    if options:
        raise ConfigurationError(
            f"option(s) {', '.join(sorted(options))} do not apply to a {kind} store; "
            "only mongodb:// stores take client options"
        )


def __getattr__(name: str) -> Any:
    """Import the stores, which encode with PyMongo's ``bson``, on first use only."""
    if name == "MemoryStore":
        from .memory import MemoryStore

        return MemoryStore
    if name == "EmbeddedStore":
        from .embedded import EmbeddedStore

        return EmbeddedStore
    if name == "MongoStore":
        from .mongo import MongoStore

        return MongoStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
