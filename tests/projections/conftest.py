"""The ``events_collection`` fixture: where projection tests put their events.

By default a fresh mongomock collection from ``open_store("mongomock://")``,
so the indexes and codec options are the ones the store gives. When
``EVENFLOW_TEST_MONGODB_URL`` names a server, a collection in a database of
its own on that server instead (created through ``MongoStore``, so the same
indexes), dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from orchestrator.store import open_store
from orchestrator.store.mongo import MongoStore

MONGODB_URL_ENV = "EVENFLOW_TEST_MONGODB_URL"


def real_server_url() -> str | None:
    return os.environ.get(MONGODB_URL_ENV) or None


@pytest.fixture
def events_collection() -> Iterator[Any]:
    url = real_server_url()
    if url is None:
        store = open_store("mongomock://")
        assert isinstance(store, MongoStore)
        yield store.events
        store.close()
        return
    from pymongo import MongoClient

    client: MongoClient[dict[str, Any]] = MongoClient(url, serverSelectionTimeoutMS=5_000)
    database = f"evenflow_projections_{uuid.uuid4().hex[:12]}"
    try:
        yield MongoStore(client[database]["events"], write_concern=None).events
    finally:
        client.drop_database(database)
        client.close()
