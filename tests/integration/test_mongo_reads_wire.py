"""What the MongoDB store asks of a server, read off the commands a real PyMongo client sends.

Reads that decide (a run's events, the read-back after a duplicate, unfinished
runs, the feed, checkpoints, leases) must see only what a majority holds, so a
failover cannot roll back something the engine acted on: every ``find`` carries
``readConcern: majority``. Every command is bounded by one client-side
operation timeout (``timeoutMS``, sent as ``maxTimeMS``), which also bounds the
wait for the log's write concern: PyMongo leaves ``wtimeout`` out while
``timeoutMS`` is in effect, so the two cannot disagree. And an append that
meets as duplicates events a majority does not hold yet (left on the primary
by a write-concern timeout) neither takes them for written nor calls them a
conflict: the store is unavailable until a majority holds them.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from orchestrator.core import events as ev
from orchestrator.core.errors import StoreUnavailable
from orchestrator.core.events import Event
from orchestrator.store import open_store
from orchestrator.store.faithful_mock import client
from orchestrator.store.mongo import MongoStore
from tests.support.wire_server import WireServer

T0 = datetime(2026, 3, 1, 12, 0, 0, 123000, tzinfo=UTC)
DEFAULT_TIMEOUT_MS = 10_000
"""What the store promises when the URL sets no timeoutMS (orchestrator.store.mongo.DEFAULT_TIMEOUT_MS)."""
SCAN_TIMEOUT_MS = 600_000
"""The one exception: reading the whole log, once per database, to mark its open runs."""


@pytest.fixture
def primary() -> Iterator[WireServer]:
    with WireServer() as server:
        yield server
    assert not server.problems, f"the scripted primary could not serve: {server.problems}"


def opened(primary: WireServer, query: str = "", **options: Any) -> MongoStore:
    return cast(MongoStore, open_store(primary.url + query, **options))


def history(run: str, last: int) -> list[Event]:
    types = {1: ev.RUN_SUBMITTED, last: ev.RUN_SUCCEEDED}
    return [
        Event(run, seq, types.get(seq, ev.COMMAND_STARTED), T0 + timedelta(seconds=seq), data={"seq": seq})
        for seq in range(1, last + 1)
    ]


def exercise(store: MongoStore) -> None:
    """Every read the engine, the listeners and the leases make, the read-back after a duplicate too."""
    store.append(history("done", 3))
    store.append(history("open", 4)[:2])
    store.append(history("open", 4)[:3])  # seq 1-2 are stored alike: the duplicate is read back
    assert [e.seq for e in store.read("open")] == [1, 2, 3]
    assert store.unfinished_runs() == ["open"]
    found, position = store.read_feed(None, ["*"], 100)
    assert len(found) == 6
    store.feed_head(["run.*"])
    store.save_checkpoint("listener", position)
    assert store.load_checkpoint("listener") is not None
    store.renew_lease("me")
    assert "me" in store.read_leases()


def test_every_read_asks_for_what_a_majority_holds(primary: WireServer) -> None:
    store = opened(primary)
    try:
        exercise(store)
    finally:
        store.close()

    reads = primary.commands("find") + primary.commands("aggregate")
    read_back = [doc for doc in primary.commands("find", "events") if "$in" in str(doc.get("filter"))]
    assert read_back, "the duplicate was not read back"
    assert [doc for doc in reads if doc.get("readConcern") != {"level": "majority"}] == []
    assert {doc[next(iter(doc))] for doc in reads} >= {"events", "leases", "checkpoints"}


def test_a_read_concern_in_the_url_is_kept(primary: WireServer) -> None:
    store = opened(primary, "&readConcernLevel=local")
    try:
        store.read("any")
    finally:
        store.close()

    (read,) = [doc for doc in primary.commands("find", "events") if doc["filter"].get("run") == "any"]
    assert read["readConcern"] == {"level": "local"}


def test_every_command_is_bounded_by_the_default_operation_timeout(primary: WireServer) -> None:
    store = opened(primary)
    try:
        exercise(store)
    finally:
        store.close()

    assert unbounded(primary, DEFAULT_TIMEOUT_MS) == []


def test_a_timeout_in_the_url_is_the_bound(primary: WireServer) -> None:
    store = opened(primary, "&timeoutMS=1500")
    try:
        store.append(history("r", 2))
        store.read("r")
    finally:
        store.close()

    assert primary.sent and unbounded(primary, 1500) == []


def unbounded(primary: WireServer, bound_ms: int) -> list[dict[str, Any]]:
    """The commands sent without a ``maxTimeMS`` within ``bound_ms`` (the whole-log scan within its own).

    ``endSessions`` is the driver's own farewell when the client closes, sent once and not waited for.
    """
    return [
        doc
        for doc in primary.commands()
        if "endSessions" not in doc
        and not 0 < doc.get("maxTimeMS", 0) <= (SCAN_TIMEOUT_MS if whole_log(doc) else bound_ms)
    ]


def whole_log(doc: dict[str, Any]) -> bool:
    return doc.get("find") == "events" and list(doc.get("filter", {})) == ["type"]


def test_the_log_waits_for_a_majority_journal_within_the_operation_timeout(primary: WireServer) -> None:
    store = opened(primary)
    try:
        store.append(history("r", 2))
    finally:
        store.close()

    (insert,) = primary.commands("insert", "events")
    assert insert["writeConcern"] == {"w": "majority", "j": True}  # no wtimeout beside timeoutMS
    assert 0 < insert["maxTimeMS"] <= DEFAULT_TIMEOUT_MS
    assert all(doc["writeConcern"] == {"w": "majority", "j": True} for doc in primary.commands("insert"))


# --- the read-back after a duplicate, when a majority does not hold what the primary has --------------


class MajorityLags:
    """The log as read concern majority shows it after a wtimeout: ``unreplicated`` ids are on the
    primary alone, so an insert meets them as duplicate key 11000 but a read does not return them."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.unreplicated: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def find(self, *args: Any, **kwargs: Any) -> Any:
        if not self.unreplicated:
            return self.inner.find(*args, **kwargs)
        return [doc for doc in self.inner.find(*args, **kwargs) if doc.get("_id") not in self.unreplicated]


def test_a_duplicate_a_majority_does_not_hold_yet_is_unavailable_not_written() -> None:
    events = MajorityLags(client().db.events)
    store = MongoStore(events, write_concern=None)  # type: ignore[arg-type]
    batch = history("r", 3)
    store.append(batch)
    events.unreplicated = {event.id for event in batch}  # a wtimeout: on the primary alone

    with pytest.raises(StoreUnavailable, match=r"not yet on a majority.*try again"):
        store.append(batch)  # the append again must not take them for durable, nor for a conflict

    events.unreplicated.clear()  # a majority holds them now
    store.append(batch)
    assert store.read("r") == batch
