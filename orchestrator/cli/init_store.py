"""``evenflow init``: create every collection and index the store and the query commands rely on.

The one query command that writes, so it needs a MongoDB user allowed to (the
``readWrite`` role); the reading commands (``runs``, ``status``, ``audit``,
``stats``, ``failures``) then need only ``read``, and never create anything.
It creates the collections and indexes ``declared_indexes`` lists (the
ones ``evenflow doctor`` checks), then opens the store for writing once, so
whatever else the store makes when it opens is made too. One line per
collection and index: ``created`` or ``already present``. The embedded and
memory stores build their read models in memory: nothing to do.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from ..core.errors import ConfigurationError, StoreUnavailable
from ..store import abilities, open_store

_MONGODB = ("mongodb", "mongodb+srv", "mongomock")
_UNAUTHORIZED = 13
"""The server's code for a write the user's roles do not allow."""
_IN_MEMORY = "needs no collections or indexes: its read models are built in memory"


def init_command(args: argparse.Namespace) -> int:
    scheme = urlsplit(args.store or "").scheme.lower()
    if scheme not in _MONGODB:
        open_store(args.store, home=args.home).close()
        print(f"the {'memory' if scheme == 'memory' else 'embedded'} store {_IN_MEMORY}")
        return 0
    reader = open_store(args.store, home=args.home, read_only=True)  # creates nothing by opening
    try:
        beside = abilities(reader).read_models
        if beside is None:
            print(f"this store {_IN_MEMORY}")
            return 0
        database = beside.database
        before = _present(database)
        declared = _create(database)
        if scheme != "mongomock":  # a mongomock:// URL opens a fresh server each time
            open_store(args.store, home=args.home).close()  # what the store makes when it opens
        after = _present(database)
    finally:
        reader.close()
    extra = sorted(after - before - set(declared))
    for thing in [*declared, *extra]:
        print(f"{thing}: {'already present' if thing in before else 'created'}")
    return 0


def _create(database: Any) -> list[str]:
    """Create the declared collections and indexes that are missing; every one's name, in order."""
    from .declared_indexes import collections, expected_indexes

    names: list[str] = []
    with _refused("the collections"):
        present = set(database.list_collection_names())
        for name in collections():
            if name not in present:
                database.create_collection(name)
            names.append(f"collection {name}")
    for collection, indexes in expected_indexes().items():
        for name, doc in indexes.items():
            options = {option: value for option, value in doc.items() if option != "key"}
            with _refused(f"the index {collection}.{name}"):
                database[collection].create_index(doc["key"], name=name, **options)
            names.append(f"index {collection}.{name}")
    return names


def _present(database: Any) -> set[str]:
    """Every collection and index of ``database`` (``_id`` aside), named as ``init`` prints them."""
    collections = [name for name in database.list_collection_names() if not name.startswith("system.")]
    found = {f"collection {name}" for name in collections}
    for collection in collections:
        indexes = database[collection].index_information()
        found.update(f"index {collection}.{name}" for name in indexes if name != "_id_")
    return found


@contextmanager
def _refused(what: str) -> Iterator[None]:
    """A driver error while creating ``what`` as our one-line error naming the fix."""
    from pymongo.errors import PyMongoError  # the driver's error tree, to word its refusal

    from ..store.mongo import redact

    try:
        yield
    except PyMongoError as exc:
        reason = redact(str(exc)).split(", full error")[0]
        cause = exc if reason == str(exc) else None  # never chain a message that carries credentials
        if getattr(exc, "code", None) == _UNAUTHORIZED:
            raise ConfigurationError(
                f"evenflow init could not create {what}: {reason}; run it as a user allowed to create "
                "collections and indexes (the readWrite role on the database); the reading commands "
                "then need only the read role"
            ) from cause
        raise StoreUnavailable(
            f"evenflow init could not create {what}: {reason}; check that the server is reachable and "
            "run it again (what it created is kept)"
        ) from cause


def add_parser(commands: Any, common: Any) -> None:
    init = commands.add_parser(
        "init",
        help="create the collections and indexes of a MongoDB store",
        description="Create every collection and index the store and the query commands need on a "
        "MongoDB store, and print what was created and what was already present, one line each. Run it "
        "as a user allowed to write (readWrite); the query commands then need only the read role. Safe "
        "to run again. The embedded store needs none.",
    )
    common(init, prints_data=False)
    init.set_defaults(handler=init_command)
