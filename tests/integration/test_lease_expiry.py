"""Lease documents do not pile up: each expires by a TTL index on ``at`` a day after its owner's last word.

An orchestrator's lease is renewed every few seconds while it runs; when it
stops it is marked released (so others take its runs at once: a missing
document would look like a paused owner, whose runs wait out a whole lease),
and a crashed owner's stays as it was. Either way the server's TTL monitor
removes it once ``at`` is ``LEASE_TTL_S`` old, far beyond any lease. mongomock
honours TTL indexes against ``mongomock.utcnow``, which these tests move on; on
a server (set EVENFLOW_TEST_MONGODB_URL) the index itself is checked.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import mongomock
import pytest

from orchestrator.store.faithful_mock import client
from orchestrator.store.index_specs import LEASE_TTL_S
from orchestrator.store.mongo import LEASES, MongoStore
from tests.support.stores import MONGODB_URL, open_kind

SERVER = pytest.param(
    "mongodb",
    marks=[pytest.mark.mongodb, pytest.mark.skipif(not MONGODB_URL, reason="no EVENFLOW_TEST_MONGODB_URL")],
)


@pytest.fixture(params=["mongomock", SERVER])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """An empty database: mongomock's, or a fresh one on the server, dropped after."""
    if request.param == "mongomock":
        yield client()["evenflow"]
        return
    name = f"evenflow_leases_{uuid.uuid4().hex[:10]}"
    owner = open_kind("mongodb", tmp_path, name)
    db = owner.events.database.client[name]
    db.drop_collection(LEASES)
    try:
        yield db
    finally:
        db.client.drop_database(name)
        owner.close()


def later(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Move mongomock's clock (naive UTC, as it stores times) ``seconds`` ahead of now."""
    moved = datetime.now(UTC).replace(tzinfo=None) + timedelta(seconds=seconds)
    monkeypatch.setattr(mongomock, "utcnow", lambda: moved)


def test_a_writable_store_makes_lease_documents_expire_a_day_after_at(database: Any) -> None:
    MongoStore(database["events"], write_concern=None)

    ttl = [
        spec
        for spec in database[LEASES].index_information().values()
        if spec["key"] == [("at", 1)] and "expireAfterSeconds" in spec
    ]

    assert [spec["expireAfterSeconds"] for spec in ttl] == [LEASE_TTL_S]
    assert LEASE_TTL_S >= 86_400


def test_a_read_only_store_makes_no_index(database: Any) -> None:
    MongoStore(database["events"], write_concern=None, read_only=True)

    assert LEASES not in database.list_collection_names()
    assert database[LEASES].index_information() == {}


def test_released_and_abandoned_leases_are_removed_a_day_on(monkeypatch: pytest.MonkeyPatch) -> None:
    store = MongoStore(client()["evenflow"]["events"], write_concern=None)
    store.renew_lease("stopped")
    store.release_lease("stopped")
    store.renew_lease("crashed")

    later(monkeypatch, LEASE_TTL_S - 60)
    assert store.read_leases() == {"stopped": (1, True), "crashed": (1, False)}  # a stop frees runs at once

    later(monkeypatch, LEASE_TTL_S + 1)
    assert store.read_leases() == {}
