"""Each store, once opened, says what it can do beyond its log, and call sites trust that answer."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from orchestrator.core import events as ev
from orchestrator.core.errors import ConfigurationError
from orchestrator.core.events import Event, utcnow
from orchestrator.store import StoreAbilities, abilities, open_store
from tests.support.stores import SERVER, drop_database, open_kind

ABILITIES = ("feed", "leases", "queries", "read_models", "scan")
EXPECTED = {
    "memory": {"feed"},
    "mongomock": {"feed", "leases", "queries", "read_models"},
    "embedded": {"feed", "queries", "scan"},
    "mongodb": {"feed", "leases", "queries", "read_models"},
}
KINDS = ["memory", "mongomock", "embedded", SERVER]


def offered(can: StoreAbilities, store: Any) -> set[str]:
    """The abilities given; each one given is the store itself."""
    given = {name for name in ABILITIES if getattr(can, name) is not None}
    assert all(getattr(can, name) is store for name in given)
    return given


@pytest.mark.parametrize("kind", KINDS)
def test_opening_each_store_yields_its_abilities(kind: str, tmp_path: Path) -> None:
    store = open_kind(kind, tmp_path / "home", f"evenflow_test_{uuid.uuid4().hex[:12]}")
    try:
        can = abilities(store)
        assert can.writable
        assert offered(can, store) == EXPECTED[kind]
        if kind == "embedded":
            assert store._mirror is None, "asking must not load the embedded store's mongomock mirror"
    finally:
        if kind == "mongodb":
            drop_database(store.database.client, store.database.name)
        store.close()


@pytest.mark.parametrize("kind", ["memory", "mongomock", "embedded"])
def test_a_store_opened_read_only_is_not_writable_and_leases_nothing(kind: str, tmp_path: Path) -> None:
    url = f"embedded://{tmp_path}" if kind == "embedded" else f"{kind}://"
    if kind == "embedded":
        open_store(url).close()  # a reader needs a journal to open
    store = open_store(url, read_only=True)
    try:
        can = abilities(store)
        assert not can.writable
        assert offered(can, store) == EXPECTED[kind] - {"leases"}
    finally:
        store.close()


def test_the_abilities_given_work_on_what_was_appended(tmp_path: Path) -> None:
    store = open_store(f"embedded://{tmp_path}")
    try:
        store.append([Event(run="a", seq=1, type=ev.RUN_SUBMITTED, at=utcnow(), data={"flow": {}})])
        can = abilities(store)
        assert can.scan is not None and can.queries is not None and can.feed is not None
        assert [e.run for e in can.scan.scan()] == ["a"]
        assert can.queries.events.count_documents({}) == 1
        assert [e.run for e in can.feed.read_feed(None, ["run.*"], 10)[0]] == ["a"]
    finally:
        store.close()


def test_an_object_that_is_no_event_store_is_refused_by_name() -> None:
    class Half:
        def append(self, events: Any) -> None: ...

    with pytest.raises(ConfigurationError, match="is not an event store"):
        abilities(Half())  # type: ignore[arg-type]


def test_a_proxy_offers_what_its_target_does() -> None:
    """A proxy forwarding through ``__getattr__`` (as tests' shared views do) offers what its target does."""

    class View:
        def __init__(self, store: Any) -> None:
            self._store = store

        def __getattr__(self, name: str) -> Any:
            return getattr(self._store, name)

    store = open_store("memory://", read_only=True)
    can = abilities(View(store))  # type: ignore[arg-type]
    assert can.feed is not None and not can.writable and can.queries is None
