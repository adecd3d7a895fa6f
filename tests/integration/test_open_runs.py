"""Unfinished runs on MongoDB come from the submissions marked open, and answer as the whole log does.

The reference is the full-history scan, written here independently: a run is
unfinished when the log holds a ``run.submitted`` of it and no terminal event,
oldest submission first, then by id. Whatever batches land, whole or in part,
and wherever a writer dies (in the middle of a batch, after it before the
ended runs are unmarked), the listing must equal that scan, from the same
store and from one opened afresh. A log written before the marks is answered
right too: marked once by a writable store, scanned by a read-only one, which
writes nothing.

mongomock here; set EVENFLOW_TEST_MONGODB_URL to run every case on a server too.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymongo.errors import AutoReconnect

from orchestrator.core import events as ev
from orchestrator.core.errors import StoreUnavailable
from orchestrator.core.events import Event
from orchestrator.store.faithful_mock import client
from orchestrator.store.mongo import MongoStore
from orchestrator.store.open_runs import ENDED_BATCH, MARKED, OPEN, OpenRuns
from tests.support.stores import MONGODB_URL, open_kind

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
RUNS = ["a", "b", "c", "d"]
TYPES = [ev.COMMAND_STARTED, ev.RUN_SUCCEEDED, ev.RUN_FAILED, ev.RUN_CANCELLED]
FAULTS = ["none", "before", "prefix", "after", "died", "reopen"]
"""How one batch's append goes: landed; nothing written; a prefix written; all written but reported
failed; landed, then its writer died before unmarking the runs it ended; landed, then a clean restart."""

KINDS = [
    "mongomock",
    pytest.param(
        "mongodb",
        marks=[
            pytest.mark.mongodb,
            pytest.mark.skipif(not MONGODB_URL, reason="no EVENFLOW_TEST_MONGODB_URL"),
        ],
    ),
]


class Log:
    """One database under test: stores opened on it as a restarted process would, and its raw collections."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        self.name = f"evenflow_open_runs_{uuid.uuid4().hex[:10]}"
        if kind == "mongodb":
            self._owner: Any = open_kind(kind, tmp_path, self.name)
            self.database = self._owner.events.database.client[self.name]
        else:
            self._owner = client()
            self.database = self._owner[self.name]
        self.wipe()

    def open(self, *, read_only: bool = False) -> MongoStore:
        """A store on this database, as another process opening it would make (sharing the client)."""
        return MongoStore(self.database["events"], write_concern=None, read_only=read_only)

    def wipe(self) -> None:
        for name in self.database.list_collection_names():
            self.database.drop_collection(name)

    def close(self) -> None:
        if self.kind == "mongodb":
            self.database.client.drop_database(self.name)
        self._owner.close()


@pytest.fixture(params=KINDS)
def log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Log]:
    opened = Log(request.param, tmp_path)
    try:
        yield opened
    finally:
        opened.close()


def scan(database: Any) -> list[str]:
    """The reference: unfinished runs by reading the whole log."""
    submitted: dict[str, datetime] = {}
    ended: set[str] = set()
    for doc in database["events"].find({}, {"run": 1, "type": 1, "at": 1}):
        if doc["type"] in ev.RUN_TERMINAL:
            ended.add(doc["run"])
        elif doc["type"] == ev.RUN_SUBMITTED:
            at = doc["at"].replace(tzinfo=UTC)
            submitted[doc["run"]] = min(at, submitted.get(doc["run"], at))
    return sorted((run for run in submitted if run not in ended), key=lambda run: (submitted[run], run))


def marked(database: Any) -> set[str]:
    return {doc["run"] for doc in database["events"].find({OPEN: True})}


class FaultyEvents:
    """The store's ``events`` collection, whose next ``insert_many`` may write a prefix and then fail."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.keep: int | None = None
        """None: no fault; k: write the first k documents (all of them if k is large), then raise."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def insert_many(self, docs: list[Any], ordered: bool = True) -> Any:
        keep, self.keep = self.keep, None
        if keep is None:
            return self.inner.insert_many(docs, ordered=ordered)
        if keep:
            self.inner.insert_many(docs[:keep], ordered=True)
        raise AutoReconnect("connection reset by peer")


@st.composite
def batches(draw: st.DrawFn) -> list[tuple[dict[str, list[str]], str, int]]:
    """Batches of events as (types per run, fault, prefix length); seqs are given when appending."""
    batch = st.dictionaries(
        st.sampled_from(RUNS),
        st.lists(st.sampled_from(TYPES), min_size=1, max_size=3),
        min_size=1,
        max_size=3,
    )
    return draw(
        st.lists(st.tuples(batch, st.sampled_from(FAULTS), st.integers(0, 6)), min_size=1, max_size=8)
    )


def events_of(store: MongoStore, plan: dict[str, list[str]], clock: list[int]) -> list[Event]:
    """The events a batch plan means, after what each run already holds; seq 1 is mostly a submission."""
    made: list[Event] = []
    for run, types in plan.items():
        seq = len(store.read(run))
        for index, type_ in enumerate(types):
            seq += 1
            clock[0] += 1
            first = seq == 1 and (index == 0 and run != "d")  # run d is never submitted
            made.append(
                Event(run, seq, ev.RUN_SUBMITTED if first else type_, T0 + timedelta(seconds=clock[0]))
            )
    return made


def append(log: Log, store: MongoStore, events: list[Event], fault: str, keep: int) -> MongoStore:
    """Append with ``fault``; returns the store to go on with (a fresh one after a restart)."""
    faulty = FaultyEvents(store.events)
    store.events = faulty  # type: ignore[assignment]
    faulty.keep = {"before": 0, "prefix": min(keep, len(events) - 1), "after": len(events)}.get(fault)
    try:
        store.append(events)
    except StoreUnavailable:
        assert fault in ("before", "prefix", "after")
    store.events = faulty.inner
    if fault == "reopen":
        store.close()
    return log.open() if fault in ("died", "reopen") else store


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=batches())
def test_unfinished_runs_answer_what_the_whole_log_answers(log: Log, plan: Any) -> None:
    log.wipe()
    store, clock = log.open(), [0]
    for types, fault, keep in plan:
        store = append(log, store, events_of(store, types, clock), fault, keep)
        expected = scan(log.database)
        assert store.unfinished_runs() == expected
        assert log.open().unfinished_runs() == expected
        assert log.open(read_only=True).unfinished_runs() == expected


def test_listing_reads_the_marked_runs_not_the_history(log: Log) -> None:
    store = log.open()
    for i in range(60):
        run = f"done-{i:02d}"
        store.append([Event(run, 1, ev.RUN_SUBMITTED, T0), Event(run, 2, ev.RUN_SUCCEEDED, T0)])
    store.append([Event(run, 1, ev.RUN_SUBMITTED, T0 + timedelta(minutes=m)) for m, run in enumerate("xyz")])
    counting = CountingEvents(store.events)
    store.events = counting  # type: ignore[assignment]

    assert store.unfinished_runs() == ["x", "y", "z"]

    assert counting.read <= 6  # a mark and a submission each, not the 120 events of finished runs
    assert marked(log.database) == {"x", "y", "z"}


class CountingEvents:
    """The store's ``events``, counting the documents its reads return."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.read = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def find(self, *args: Any, **kwargs: Any) -> Any:
        for doc in self.inner.find(*args, **kwargs):
            self.read += 1
            yield doc


def test_a_mark_left_on_an_ended_run_is_removed_by_a_writers_listing_not_a_readers(log: Log) -> None:
    writer = log.open()
    writer.append([Event("ended", 1, ev.RUN_SUBMITTED, T0), Event("open", 1, ev.RUN_SUBMITTED, T0)])
    writer.append([Event("ended", 2, ev.RUN_FAILED, T0)])  # its writer dies before unmarking it
    assert marked(log.database) == {"open", "ended"}

    assert log.open(read_only=True).unfinished_runs() == ["open"]
    assert marked(log.database) == {"open", "ended"}  # a reader writes nothing

    assert log.open().unfinished_runs() == ["open"]
    assert marked(log.database) == {"open"}


def test_the_mark_is_in_the_submissions_own_document_and_not_in_the_event(log: Log) -> None:
    store = log.open()
    submitted = Event("r", 1, ev.RUN_SUBMITTED, T0)
    store.append([submitted, Event("r", 2, ev.COMMAND_STARTED, T0)])
    assert [doc.get(OPEN) for doc in log.database["events"].find({}).sort("seq", 1)] == [True, None]
    assert store.read("r")[0] == submitted
    store.append([Event("r", 3, ev.RUN_SUCCEEDED, T0)])
    store.close()  # unmarks what it saw end
    assert marked(log.database) == set()


def test_a_log_from_before_the_marks_is_marked_once_by_a_writer(log: Log) -> None:
    old = [
        Event("finished", 1, ev.RUN_SUBMITTED, T0),
        Event("finished", 2, ev.RUN_SUCCEEDED, T0),
        Event("newer", 1, ev.RUN_SUBMITTED, T0 + timedelta(minutes=2)),
        Event("older", 1, ev.RUN_SUBMITTED, T0 + timedelta(minutes=1)),
        Event("older", 2, ev.COMMAND_STARTED, T0 + timedelta(minutes=3)),
        Event("unsubmitted", 1, ev.COMMAND_STARTED, T0),
    ]
    log.database["events"].insert_many([ev.to_doc(event) for event in old])

    assert log.open().unfinished_runs() == ["older", "newer"]

    assert marked(log.database) == {"older", "newer"}
    assert log.database["checkpoints"].find_one({"_id": MARKED}) is not None


def test_a_reader_of_a_log_from_before_the_marks_scans_it_and_writes_nothing(log: Log) -> None:
    old = [Event("open", 1, ev.RUN_SUBMITTED, T0), Event("done", 1, ev.RUN_SUBMITTED, T0)]
    log.database["events"].insert_many([ev.to_doc(e) for e in [*old, Event("done", 2, ev.RUN_CANCELLED, T0)]])
    before = layout(log.database)

    reader = log.open(read_only=True)

    assert reader.unfinished_runs() == ["open"]
    assert layout(log.database) == before
    assert marked(log.database) == set()


def layout(database: Any) -> dict[str, list[str]]:
    """Every collection and the names of its indexes: what a store that writes nothing leaves alone."""
    return {
        name: sorted(database[name].index_information())
        for name in sorted(database.list_collection_names())
        if not name.startswith("system.")
    }


def test_a_server_store_unmarks_ended_runs_in_batches_mongomock_only_when_it_lists(log: Log) -> None:
    """On a server 64 ended runs cost one update; mongomock, where an update reads the whole log, waits."""
    store = log.open()
    store.open_runs = OpenRuns(store.checkpoints, store._guard, writable=True, unmark_every=ENDED_BATCH)
    for i in range(ENDED_BATCH):
        run = f"r{i:02d}"
        store.append([Event(run, 1, ev.RUN_SUBMITTED, T0)])
        store.append([Event(run, 2, ev.RUN_SUCCEEDED, T0)])
        assert len(marked(log.database)) == (0 if i == ENDED_BATCH - 1 else i + 1)
    mock = log.open()
    if log.kind == "mongomock":
        mock.append([Event("m", 1, ev.RUN_SUBMITTED, T0)])
        mock.append([Event("m", 2, ev.RUN_SUCCEEDED, T0)])
        assert marked(log.database) == {"m"}
        assert mock.unfinished_runs() == [] and marked(log.database) == set()
