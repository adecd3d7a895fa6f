"""The ``events_collection`` fixture: where projection tests put their events.

Parametrised: ``mongomock``, a fresh collection from ``open_store("mongomock://")``
(so the indexes and codec options are the ones the store gives); and
``mongodb``, the server lane's case (``tests/support/stores.py``): an
``events`` collection made through ``MongoStore`` (the same indexes) in a
database of its own on the server, dropped afterwards; skipped without one.
A test marked ``mongodb`` itself needs a server, so it runs only in that case.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from orchestrator.store import open_store
from orchestrator.store.mongo import MongoStore
from tests.support.stores import MONGODB_URL, SERVER, server_database


def real_server_url() -> str | None:
    return MONGODB_URL or None


@pytest.fixture(params=["mongomock", SERVER])
def events_collection(request: pytest.FixtureRequest) -> Iterator[Any]:
    if request.param == "mongodb":
        with server_database("evenflow_projections") as database:
            yield MongoStore(database["events"], write_concern=None).events
        return
    if request.node.get_closest_marker("mongodb") is not None:
        pytest.skip("needs a real server: runs in its mongodb case")
    store = open_store("mongomock://")
    assert isinstance(store, MongoStore)
    yield store.events
    store.close()
