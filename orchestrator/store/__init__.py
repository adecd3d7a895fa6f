"""Event stores, chosen by URL.

    (no URL) or ""                    the embedded store in ``home`` (default: ``default_home()``)
    embedded:///abs/path              the embedded store in that directory
    memory://                         in memory, gone with the process
    mongomock:// or mongomock://h/db  in-process mongomock, gone with the process
    mongodb://... / mongodb+srv://... a MongoDB server; database from the URL path, default "evenflow"

PyMongo (its ``bson`` too) and mongomock are imported only when a store needs
them, so importing this package (and ``evenflow --help``) stays cheap.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from orchestrator.core.errors import ConfigurationError
from orchestrator.core.ports import EventStore

if TYPE_CHECKING:
    from .embedded import EmbeddedStore
    from .memory import MemoryStore
    from .mongo import MongoStore

__all__ = ["EmbeddedStore", "EventStore", "MemoryStore", "MongoStore", "default_home", "open_store"]

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
