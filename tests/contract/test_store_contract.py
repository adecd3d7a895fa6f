"""The one contract every event store passes: memory, mongomock, embedded and (when given) a real MongoDB.

Set ``EVENFLOW_TEST_MONGODB_URL`` to run it on a server too (the server lane,
``tests/support/stores.py``); each test then gets its own database, dropped after.
"""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bson
import pytest
from pymongo.errors import AutoReconnect, BulkWriteError, OperationFailure

from orchestrator.core import events as ev
from orchestrator.core.errors import ConcurrencyConflict, CorruptEvent, PayloadError, StoreUnavailable
from orchestrator.core.events import Event
from orchestrator.core.ports import EventStore
from orchestrator.store.faithful_mock import client
from orchestrator.store.mongo import MongoStore
from tests.support.stores import SERVER, drop_database, open_kind

T0 = datetime(2026, 3, 1, 12, 0, 0, 123000, tzinfo=UTC)


def event(run: str, seq: int, type_: str = ev.COMMAND_STARTED, **fields: Any) -> Event:
    """An event at a millisecond-precise time derived from ``seq`` unless ``at`` is given."""
    fields.setdefault("at", T0 + timedelta(seconds=seq, milliseconds=seq))
    return Event(run=run, seq=seq, type=type_, **fields)


def history(run: str, last: int, first: int = 1) -> list[Event]:
    """Events ``first``..``last`` of a run, starting with its submission when ``first`` is 1."""
    return [
        event(run, seq, ev.RUN_SUBMITTED if seq == 1 else ev.COMMAND_STARTED, data={"seq": seq})
        for seq in range(first, last + 1)
    ]


class Harness:
    """A store under test, plus a way to plant a raw document that skips every check."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        self._home = tmp_path / "home"
        self._database = f"evenflow_test_{uuid.uuid4().hex[:12]}"
        self.store: Any = self._open()

    def _open(self) -> EventStore:
        return open_kind(self.kind, self._home, self._database)

    def put_raw(self, doc: dict[str, Any]) -> None:
        if self.kind == "memory":
            self.store._insert_raw(doc)
        elif self.kind == "embedded":
            self.store.close()
            with sqlite3.connect(self._home / "events.sqlite3") as db:
                row = (doc["_id"], doc["run"], doc["seq"], doc["type"], bson.encode(doc))
                db.execute("INSERT INTO events (id, run, seq, type, doc) VALUES (?, ?, ?, ?, ?)", row)
            db.close()
            self.store = self._open()
        else:
            self.store.events.insert_one(doc)

    def close(self) -> None:
        if self.kind == "mongodb":
            drop_database(self.store.events.database.client, self._database)
        self.store.close()


@pytest.fixture(params=["memory", "mongomock", "embedded", SERVER])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(request.param, tmp_path)
    try:
        yield harness
    finally:
        harness.close()


@pytest.fixture
def store(harness: Harness) -> Any:
    return harness.store


def seqs(events: list[Event]) -> list[int]:
    return [e.seq for e in events]


def test_every_store_is_an_event_store(store: Any) -> None:
    assert isinstance(store, EventStore)


def test_events_come_back_exactly_as_written(store: Any) -> None:
    when = datetime(2025, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)
    full = event(
        "r",
        1,
        ev.RUN_SUBMITTED,
        node="0.1",
        attempt=2,
        command="billing.charge",
        data={
            "args": [1, "two", {"deep": [None, True, 2.5, {"deeper": []}]}],
            "blob": b"\x00\xffbinary",
            "when": when,
            "big": 2**62,
            "negative": -(2**40),
            "empty": {},
            "none": None,
            "unicode": "zoë ✓",
        },
        by="orchestrator-1",
        causation="r/0000000000",
        correlation="corr-7",
    )
    bare = event("r", 2, ev.COMMAND_DISPATCHED)
    store.append([full, bare])

    back = store.read("r")

    assert back == [full, bare]
    assert back[0].at == full.at and back[0].at.utcoffset() == timedelta(0)
    assert back[0].data["when"] == when and back[0].data["when"].utcoffset() == timedelta(0)
    assert type(back[0].data["blob"]) is bytes
    assert back[1].node is None and back[1].attempt is None and back[1].data == {}


def test_read_is_in_seq_order_whatever_the_append_order(store: Any) -> None:
    events = history("r", 7)
    store.append(events[4:6])
    store.append([events[2], events[0], events[1]])
    store.append([events[6], events[3]])

    assert seqs(store.read("r")) == [1, 2, 3, 4, 5, 6, 7]
    assert store.read("r") == events


def test_read_after_seq_returns_only_the_tail(store: Any) -> None:
    store.append(history("r", 5))

    assert seqs(store.read("r", after_seq=2)) == [3, 4, 5]
    assert seqs(store.read("r", 0)) == [1, 2, 3, 4, 5]
    assert store.read("r", after_seq=5) == []
    assert store.read("no-such-run") == []


def test_runs_are_kept_apart_even_when_one_id_prefixes_another(store: Any) -> None:
    runs = ["a", "a1", "a/b", "a-", "b"]
    for seq in range(1, 4):  # interleaved appends, one run after another
        store.append([event(run, seq, data={"run": run}) for run in runs])

    for run in runs:
        got = store.read(run)
        assert seqs(got) == [1, 2, 3]
        assert {e.run for e in got} == {run}
        assert all(e.data == {"run": run} for e in got)
    assert seqs(store.read("a", after_seq=1)) == [2, 3]


def test_a_large_batch_is_written_whole_and_in_order(store: Any) -> None:
    store.append(history("big", 1_200))

    assert seqs(store.read("big")) == list(range(1, 1_201))


def test_appending_nothing_is_a_no_op(store: Any) -> None:
    store.append([])

    assert store.read("r") == []
    assert store.unfinished_runs() == []


def test_a_conflicting_append_raises_and_keeps_what_came_before(store: Any) -> None:
    store.append(history("r", 2))
    rival = event("r", 2, ev.COMMAND_FAILED, data={"someone": "else"})

    with pytest.raises(ConcurrencyConflict) as caught:
        store.append([event("r", 3), rival, event("r", 4)])

    assert "'r'" in str(caught.value) and "seq 2" in str(caught.value)
    assert store.read("r") == [*history("r", 2), event("r", 3)]


def test_a_conflict_on_the_first_event_writes_nothing_of_the_batch(store: Any) -> None:
    store.append(history("r", 3))

    with pytest.raises(ConcurrencyConflict):
        store.append([event("r", 3, ev.COMMAND_SUCCEEDED), event("r", 4), event("r", 5)])

    assert store.read("r") == history("r", 3)


def test_re_appending_identical_events_is_a_no_op(store: Any) -> None:
    events = history("r", 4)
    store.append(events)

    store.append(events)
    store.append(events[1:3])

    assert store.read("r") == events


def test_an_overlapping_append_writes_only_what_is_new(store: Any) -> None:
    store.append(history("r", 4))

    store.append(history("r", 7, first=3))  # 3 and 4 are already there, alike
    store.append([event("r", 8), event("r", 8)])  # the same event twice in one batch

    assert store.read("r") == [*history("r", 7), event("r", 8)]


def test_one_event_twice_in_a_batch_with_other_content_is_a_conflict(store: Any) -> None:
    with pytest.raises(ConcurrencyConflict):
        store.append([event("r", 1), event("r", 2), event("r", 2, ev.COMMAND_FAILED), event("r", 3)])

    assert store.read("r") == [event("r", 1), event("r", 2)]


def test_a_value_that_cannot_be_stored_is_a_payload_error_naming_the_event(store: Any) -> None:
    with pytest.raises(PayloadError) as caught:
        store.append([event("r", 1, data={"tags": {"a", "b"}})])

    assert "r/0000000001" in str(caught.value)
    assert store.read("r") == []


def test_unfinished_runs_are_submitted_and_not_ended_oldest_first(store: Any) -> None:
    def submitted(run: str, minute: int) -> Event:
        return event(run, 1, ev.RUN_SUBMITTED, at=T0 + timedelta(minutes=minute))

    store.append([submitted("newer", 5), submitted("older", 1), submitted("oldest", 0)])
    for terminal, minute in [(ev.RUN_SUCCEEDED, 2), (ev.RUN_FAILED, 3), (ev.RUN_CANCELLED, 4)]:
        run = terminal.replace(".", "-")
        store.append([submitted(run, minute), event(run, 2), event(run, 3, terminal)])
    store.append([event("never-submitted", 1, ev.COMMAND_STARTED)])
    store.append([event("newer", 2)])

    assert store.unfinished_runs() == ["oldest", "older", "newer"]

    store.append([event("older", 2, ev.RUN_SUCCEEDED)])

    assert store.unfinished_runs() == ["oldest", "newer"]


def test_runs_submitted_at_the_same_moment_come_in_id_order(store: Any) -> None:
    store.append([event(run, 1, ev.RUN_SUBMITTED, at=T0) for run in ["c", "a", "b"]])

    assert store.unfinished_runs() == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ({"type": "run.no_such_type"}, "unknown type"),
        ({"v": 99}, "schema version 99"),
        ({"at": None}, "r/0000000002"),
    ],
)
def test_a_damaged_stored_event_is_refused_by_name(
    harness: Harness, damage: dict[str, Any], expected: str
) -> None:
    harness.store.append([event("r", 1, ev.RUN_SUBMITTED), event("other", 1, ev.RUN_SUBMITTED)])
    harness.put_raw({**ev.to_doc(event("r", 2)), **damage})

    with pytest.raises(CorruptEvent, match=expected):
        harness.store.read("r")
    assert harness.store.read("r", after_seq=2) == []
    assert harness.store.read("other") == [event("other", 1, ev.RUN_SUBMITTED)]


def test_appends_and_reads_from_several_threads_lose_nothing(store: Any) -> None:
    errors: list[BaseException] = []

    def write(run: str) -> None:
        try:
            for seq in range(1, 41, 4):
                store.append(history(run, seq + 3, first=seq))
                assert seqs(store.read(run)) == list(range(1, seq + 4))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(f"run-{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert all(seqs(store.read(f"run-{i}")) == list(range(1, 41)) for i in range(6))
    assert sorted(store.unfinished_runs()) == [f"run-{i}" for i in range(6)]


# --- the MongoDB adapter under PyMongo's own errors (a wrapped mongomock collection raises them) ---


class FaultyCollection:
    """Passes everything to a real collection, except that ``insert_many`` may write a prefix and raise."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.fault: Any = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def insert_many(self, docs: list[dict[str, Any]], ordered: bool = True) -> Any:
        fault, self.fault = self.fault, None
        if fault is None:
            return self.inner.insert_many(docs, ordered=ordered)
        written, error = fault
        if written:
            self.inner.insert_many(docs[:written], ordered=True)
        raise error


@pytest.fixture
def faulty() -> Iterator[tuple[Any, FaultyCollection]]:
    collection = FaultyCollection(client().db.events)
    store = MongoStore(collection, write_concern=None)  # type: ignore[arg-type]
    try:
        yield store, collection
    finally:
        store.close()


def test_a_lost_connection_is_store_unavailable_and_a_retry_converges(
    faulty: tuple[Any, FaultyCollection],
) -> None:

    store, collection = faulty
    collection.fault = (2, AutoReconnect("connection reset by peer"))

    with pytest.raises(StoreUnavailable) as caught:
        store.append(history("r", 4))
    assert isinstance(caught.value.__cause__, AutoReconnect)
    assert seqs(store.read("r")) == [1, 2]  # the ambiguous outcome: a prefix landed

    store.append(history("r", 4))  # the caller's retry of the same batch

    assert store.read("r") == history("r", 4)


def test_an_unconfirmed_write_concern_is_store_unavailable(faulty: tuple[Any, FaultyCollection]) -> None:

    store, collection = faulty
    details = {"writeErrors": [], "writeConcernErrors": [{"code": 64, "errmsg": "waiting"}], "nInserted": 3}
    collection.fault = (3, BulkWriteError(details))

    with pytest.raises(StoreUnavailable, match="write concern"):
        store.append(history("r", 3))


def test_a_refused_document_is_a_payload_error_naming_it(faulty: tuple[Any, FaultyCollection]) -> None:

    store, collection = faulty
    details = {"writeErrors": [{"index": 1, "code": 10334, "errmsg": "too large"}], "nInserted": 1}
    collection.fault = (1, BulkWriteError(details))

    with pytest.raises(PayloadError, match=r"r/0000000002.*too large"):
        store.append(history("r", 3))


def test_credentials_in_a_driver_error_are_redacted(faulty: tuple[Any, FaultyCollection]) -> None:

    store, collection = faulty
    collection.fault = (0, OperationFailure("auth failed for mongodb://admin:topsecret@db.example:27017"))

    with pytest.raises(StoreUnavailable) as caught:
        store.append(history("r", 1))

    assert "topsecret" not in str(caught.value) and "***@db.example" in str(caught.value)
    assert caught.value.__cause__ is None
