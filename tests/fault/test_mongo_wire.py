"""Server faults on the wire, answered to a real PyMongo client: what the driver retries, what the store does.

tests/fault/test_store_faults.py raises PyMongo's errors from inside a mongomock collection, so it
shows what the store does with an error, not which errors the driver lets through. Here the
``MongoStore`` and its ``MongoClient`` are real and a scripted server (tests/support/wire_server.py)
answers with the faults of a replica set: (a) a primary stepping down in the middle of an insert
(``NotWritablePrimary`` labelled ``RetryableWriteError``), (b) a ``writeConcernError`` (``wtimeout``),
(c) the connection closed in the middle of ``insert_many``, (d) duplicate key 11000 to a retried
insert whose documents are already stored alike.

In each, nothing is lost or doubled: the run reads back exactly the events appended, each stored
once, and a write is sent again only where it did not land (checked on the commands received). An
error reaches the caller only once the driver gives up, as our ``StoreUnavailable`` saying what to do;
an append again completes the batch. Through a whole Orchestrator the run finishes with its result,
its log keeping RELIABILITY.md's L1, L4, L5, L9. The driver retries once without ``timeoutMS``, as
often as fits with it: a fault that must outlast its retries fails every attempt of one write
(``WireServer.fail_write``) on a client with a short ``timeoutMS``, and holds in either mode.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from mockupdb import Request

from orchestrator import Orchestrator, call, parallel, sequence
from orchestrator.core import events as ev
from orchestrator.core.errors import ConcurrencyConflict, StoreUnavailable
from orchestrator.core.events import Event
from orchestrator.core.flows import Node
from orchestrator.store import open_store
from orchestrator.store.encoding import round_trip
from orchestrator.store.mongo import MongoStore
from tests.commands import ledger_read, make_registry
from tests.support.invariants import check
from tests.support.wire_server import (
    NOT_WRITABLE_PRIMARY,
    RETRYABLE_WRITE_ERROR,
    SHUTDOWN_IN_PROGRESS,
    WRITE_CONCERN_FAILED,
    Sent,
    WireServer,
    WriteFault,
    command_error,
)

pytestmark = pytest.mark.slow

CALL_S = 15.0
"""A client call's deadline: a driver retry waits ~0.5 s for its next look at the server."""
SOCKET_TIMEOUT_MS = 10_000
"""No client read waits on the scripted server longer than this, whatever a test forgets."""
GIVE_UP_MS = 2_000
"""The ``timeoutMS`` of a client facing a fault that outlasts it: time for two attempts or more."""
BATCH = 2
"""``maxWriteBatchSize`` where a test cuts ``insert_many`` in the middle: 5 events, 3 inserts."""
T0 = datetime(2026, 3, 1, 12, 0, 0, 123000, tzinfo=UTC)
WTIMEOUT = {"code": WRITE_CONCERN_FAILED, "errmsg": "replication timed out", "errInfo": {"wtimeout": True}}
MAX_TIME_EXPIRED = {"code": 50, "codeName": "MaxTimeMSExpired", "errmsg": "operation exceeded time limit"}
"""The write concern error of a client with ``timeoutMS``, which sends ``maxTimeMS``, not ``wtimeout``."""
STEPDOWN = command_error(NOT_WRITABLE_PRIMARY, "not primary", RETRYABLE_WRITE_ERROR)


@pytest.fixture
def wire(request: pytest.FixtureRequest) -> Iterator[WireServer]:
    """A scripted primary; ``indirect`` parametrisation sets its ``maxWriteBatchSize``."""
    with WireServer(max_write_batch=getattr(request, "param", 100_000)) as server:
        yield server
    assert not server.problems, f"the wire server could not serve: {server.problems}"


def opened(wire: WireServer, **options: Any) -> closing[MongoStore]:
    return closing(cast(MongoStore, open_store(wire.url, socketTimeoutMS=SOCKET_TIMEOUT_MS, **options)))


@pytest.fixture
def store(wire: WireServer) -> Iterator[MongoStore]:
    """The store as ``open_store`` makes it for this URL."""
    with opened(wire) as store:
        yield store


@pytest.fixture
def hurried(wire: WireServer) -> Iterator[MongoStore]:
    """The store on a client whose ``timeoutMS`` a lasting fault outlasts within the test."""
    with opened(wire, timeoutMS=GIVE_UP_MS) as store:
        yield store


def events_for(run: str, n: int) -> list[Event]:
    """Events 1..n of a run; ``data`` holds a tuple, which the store gives back as a list."""
    types = [ev.RUN_SUBMITTED] + [ev.COMMAND_STARTED] * (n - 1)
    at = [T0 + timedelta(seconds=seq) for seq in range(n + 1)]
    return [Event(run, s, types[s - 1], at[s], data={"seq": s, "pair": (s, "x")}) for s in range(1, n + 1)]


def holding(*seqs: int) -> Callable[[Request], bool]:
    """Matches an insert whose documents include the events ``seqs`` (of any run)."""
    return lambda request: {d["seq"] for d in request.doc["documents"]} >= set(seqs)


def seqs_of(sent: Sent) -> list[int]:
    return [int(str(event_id).rsplit("/", 1)[1]) for event_id in sent.ids]


def read_backs(wire: WireServer, since: int = 0) -> list[list[int]]:
    """The seqs each read-back by ``_id`` asked for, in order, among the commands from ``since`` on."""
    return [seqs_of(s) for s in wire.sent[since:] if s.name == "find" and s.ids]


def assert_stored_once(wire: WireServer, store: MongoStore, events: list[Event]) -> None:
    """Nothing lost, nothing doubled, nothing changed: the log reads back as appended, each event once."""
    run = events[0].run
    assert store.read(run) == [round_trip(event) for event in events]
    assert [doc["_id"] for doc in wire.stored() if doc["run"] == run] == [event.id for event in events]


# --- (a) a primary stepdown in the middle of an append ----------------------------------------------


AWAITING_MAJORITY = {
    "n": 4,
    "writeConcernError": {"code": SHUTDOWN_IN_PROGRESS, "errmsg": "stepping down"},
    "errorLabels": [RETRYABLE_WRITE_ERROR],
}
"""The reply to an insert of 4 that ran, then met a stepdown while waiting for the majority."""
RETRIED = {
    "before-it-ran": (False, STEPDOWN),
    "after-it-ran": (True, STEPDOWN),
    "awaiting-majority": (True, AWAITING_MAJORITY),
}


@pytest.mark.parametrize("fault", sorted(RETRIED))
def test_a_stepdown_during_an_append_is_retried_by_the_driver_and_the_append_returns(
    wire: WireServer, store: MongoStore, fault: str
) -> None:
    """A server knows the retry by its session and txnNumber: one that already ran is not run again."""
    landed, reply = RETRIED[fault]
    batch = events_for("r1", 4)
    wire.hold("insert")
    appending = wire.in_background(store.append, batch)
    held = wire.receive("insert")
    if landed:
        wire.serve(held)
    wire.reply(held, reply)

    assert appending.result(timeout=CALL_S) is None
    first, retry = wire.inserts()
    assert retry == first, "the retry is not the same write (documents, session, txnNumber)"
    assert not read_backs(wire), "the store read back although the driver reported success"
    assert_stored_once(wire, store, batch)


@pytest.mark.parametrize("landed", [4, 2], ids=["all-landed", "two-landed"])
def test_a_retried_insert_answered_duplicate_key_over_identical_events_is_taken_as_written(
    wire: WireServer, store: MongoStore, landed: int
) -> None:
    """(a)+(d): the insert ran (whole, or its first ``landed`` events) before the stepdown, and the
    retry meets them as duplicate key 11000 (a server without its record): the store reads them
    back, finds them identical, and writes only what is missing; no conflict."""
    batch = events_for("r1", 4)
    wire.hold("insert", times=2)
    appending = wire.in_background(store.append, batch)
    first = wire.receive("insert")
    wire.serve(first, keep=landed)
    wire.reply(first, STEPDOWN)
    retry = wire.receive("insert")
    answer = wire.serve(retry, as_new=True)
    assert answer["n"] == 0 and answer["writeErrors"][0]["index"] == 0
    wire.reply(retry, answer)

    assert appending.result(timeout=CALL_S) is None
    rest = [[3, 4]] if landed == 2 else []
    assert [seqs_of(s) for s in wire.inserts()] == [[1, 2, 3, 4]] * 2 + rest, "sent again beyond the rest"
    assert read_backs(wire) == [[1, 2, 3, 4]], "one read-back, of the batch from the duplicate on"
    assert_stored_once(wire, store, batch)


def test_a_retry_that_meets_another_writers_event_is_a_conflict_and_overwrites_nothing(
    wire: WireServer, store: MongoStore
) -> None:
    """(d)'s other half: while the primary stepped down another writer took seq 1 with other content;
    the retry's duplicate key is then a ``ConcurrencyConflict``, and the other writer's event stays."""
    theirs = Event("r1", 1, ev.RUN_SUBMITTED, T0, data={"by": "the other writer"})
    wire.hold("insert")
    appending = wire.in_background(store.append, events_for("r1", 2))
    held = wire.receive("insert")
    with opened(wire) as rival:
        rival.append([theirs])
    wire.reply(held, STEPDOWN)
    with pytest.raises(ConcurrencyConflict, match=r"seq 1 .*another writer appended it first"):
        appending.result(timeout=CALL_S)
    assert store.read("r1") == [round_trip(theirs)]


# --- (b) a write concern error in an insert's reply ----------------------------------------------------


@pytest.mark.parametrize("error", [WTIMEOUT, MAX_TIME_EXPIRED], ids=["wtimeout", "maxTimeMS"])
def test_a_write_concern_timeout_is_store_unavailable_and_an_append_again_writes_nothing_twice(
    wire: WireServer, store: MongoStore, error: dict[str, Any]
) -> None:
    """The primary wrote the batch but a majority did not confirm it in time: the driver does not
    retry (not a retryable code), the store says the events may not be durable; the engine's append
    again finds them stored alike and sends nothing more."""
    batch = events_for("r1", 4)
    wire.hold("insert")
    appending = wire.in_background(store.append, batch)
    held = wire.receive("insert")
    wire.reply(held, wire.serve(held), writeConcernError=error)
    with pytest.raises(StoreUnavailable, match=r"did not confirm the write concern .* re-read the runs"):
        appending.result(timeout=CALL_S)
    assert len(wire.inserts()) == 1, "the driver retried a write concern timeout"

    before = len(wire.sent)
    store.append(batch)
    assert [seqs_of(s) for s in wire.inserts()] == [[1, 2, 3, 4]] * 2, "sent again beyond one probe"
    assert read_backs(wire, before) == [[1, 2, 3, 4]]
    assert_stored_once(wire, store, batch)


def test_an_append_again_after_a_write_concern_timeout_does_not_take_unreplicated_events_for_written(
    wire: WireServer, store: MongoStore
) -> None:
    """After a wtimeout the batch is on the primary alone. The append again meets it as duplicate key;
    its read-back must read what a majority holds, where the batch is not yet, and so must not return
    as if the events were durable (RELIABILITY.md promise 1), nor call it a conflict: it is
    ``StoreUnavailable``, to try again; once a majority holds the batch, the append returns."""
    batch = events_for("r1", 3)
    wire.hold("insert")
    appending = wire.in_background(store.append, batch)
    held = wire.receive("insert")
    wire.reply(held, wire.serve(held, replicated=False), writeConcernError=WTIMEOUT)
    with pytest.raises(StoreUnavailable):
        appending.result(timeout=CALL_S)

    with pytest.raises(StoreUnavailable, match=r"re-read the runs|try again"):
        store.append(batch)
    wire.replicate()
    store.append(batch)
    assert_stored_once(wire, store, batch)


# --- (c) the connection closed in the middle of insert_many -------------------------------------------


@pytest.mark.parametrize("wire", [BATCH], indirect=True)
@pytest.mark.parametrize("cut", ["before-it-ran", "after-it-ran", "after-it-ran-then-duplicate"])
def test_a_connection_closed_in_the_middle_of_insert_many_is_retried_from_the_cut_command(
    wire: WireServer, store: MongoStore, cut: str
) -> None:
    """Five events go as three inserts; the second one's connection closes. The driver retries that
    command alone, with its txnNumber, and goes on with the third. Should the retry meet the landed
    events as duplicate key, the driver reports it at their index in the whole batch (2, not 0), and
    the store reads back from there and writes the rest."""
    batch = events_for("r1", 5)
    wire.hold("insert", when=holding(3), times=2 if cut.endswith("duplicate") else 1)
    appending = wire.in_background(store.append, batch)
    held = wire.receive("insert")
    if cut != "before-it-ran":
        wire.serve(held)
    wire.hang_up(held)
    if cut.endswith("duplicate"):
        retry = wire.receive("insert")
        wire.reply(retry, wire.serve(retry, as_new=True))

    assert appending.result(timeout=CALL_S) is None
    inserts = wire.inserts()
    assert [seqs_of(s) for s in inserts] == [[1, 2], [3, 4], [3, 4], [5]]
    assert inserts[2] == inserts[1], "the retry is not the same write"
    expected = [[3, 4, 5]] if cut.endswith("duplicate") else []
    assert read_backs(wire) == expected, "a read-back only after a duplicate, from its index on"
    assert_stored_once(wire, store, batch)


@pytest.mark.parametrize("wire", [BATCH], indirect=True)
def test_a_connection_closed_mid_insert_many_until_the_driver_gives_up_is_store_unavailable_then_completes(
    wire: WireServer, hurried: MongoStore
) -> None:
    """Every attempt of the second insert lands and loses its connection, until the driver gives up
    with events 1-4 stored: the caller hears ``StoreUnavailable``; an append again writes event 5 only."""
    batch = events_for("r1", 5)
    fault = wire.fail_write(when=holding(3), land=True)
    with pytest.raises(StoreUnavailable, match=r"appending 5 events.*some may have landed: re-read the runs"):
        hurried.append(batch)
    assert fault.attempts >= 2, "the driver did not retry a write cut by a closed connection"
    assert [doc["seq"] for doc in wire.stored()] == [1, 2, 3, 4]

    before = len(wire.inserts())
    hurried.append(batch)
    assert [seqs_of(s) for s in wire.inserts()[before:]] == [[1, 2], [5]], "not only what was missing"
    assert read_backs(wire) == [[1, 2, 3, 4, 5]]
    assert_stored_once(wire, hurried, batch)


# --- a whole Orchestrator on the wire: the engine resumes ---------------------------------------------


def outcome_batch(request: Request) -> bool:
    return any(d.get("type") == ev.COMMAND_SUCCEEDED for d in request.doc["documents"])


def fan(ledger: str) -> Node:
    """2 and 3 in parallel (each writing the ledger), then their total: 5."""
    return sequence(
        parallel(call("ledgered", 2, ledger=ledger), call("ledgered", 3, ledger=ledger)), call("total")
    )


def land_then(wire: WireServer, fault: str) -> None:
    """The held insert lands, then meets ``fault``: a stepdown (retried) or a wtimeout (not retried)."""
    held = wire.receive("insert")
    answer = wire.serve(held)
    wire.reply(held, STEPDOWN if fault == "stepdown" else {**answer, "writeConcernError": WTIMEOUT})


LASTING: dict[str, tuple[dict[str, Any] | None, bool]] = {
    "stepdown-until-given-up": (STEPDOWN, False),
    "closed-until-given-up": (None, True),
}
"""Faults on every attempt of that append (error, or a hang-up; whether each lands)."""


def finish_through(orch: Orchestrator, wire: WireServer, ledger: str, script: Callable[[], Any]) -> None:
    """Run ``fan`` while ``script`` answers its fault; assert the run's result and its log."""
    run = orch.submit(fan(ledger)).id
    script()
    assert orch.result(run, timeout=CALL_S) == 5
    assert orch.engine.alive(), "the engine thread died"
    events = orch.store.read(run)
    entries = ledger_read(ledger)
    check(run, events, entries, ledgered_nodes=2)
    assert len(entries) == 2, f"a command ran again: {entries}"
    outcomes = [(e.node, e.attempt) for e in events if e.type == ev.COMMAND_SUCCEEDED]
    assert len(outcomes) == len(set(outcomes)) == 3, f"an outcome logged twice or lost: {outcomes}"
    assert [doc["seq"] for doc in wire.stored() if doc["run"] == run] == [e.seq for e in events]


@pytest.mark.parametrize("fault", ["stepdown", "wtimeout"])
def test_an_orchestrator_run_finishes_once_through_a_fault_at_its_outcome_append(
    wire: WireServer, store: MongoStore, fault: str, tmp_path: Path
) -> None:
    wire.hold("insert", when=outcome_batch)
    with Orchestrator(make_registry(), executor="inline", store=store, lease_s=1.0) as orch:
        finish_through(orch, wire, str(tmp_path / "ledger.jsonl"), lambda: land_then(wire, fault))


@pytest.mark.parametrize("fault", sorted(LASTING))
def test_an_orchestrator_run_finishes_once_when_its_outcome_append_outlasts_the_drivers_retries(
    wire: WireServer, hurried: MongoStore, fault: str, tmp_path: Path
) -> None:
    """The driver gives up and the engine hears ``StoreUnavailable``; it backs off, reads the run again
    and appends again (a new write, which passes)."""
    error, land = LASTING[fault]
    failing: WriteFault = wire.fail_write(when=outcome_batch, error=error, land=land)
    with Orchestrator(make_registry(), executor="inline", store=hurried, lease_s=1.0) as orch:
        finish_through(orch, wire, str(tmp_path / "ledger.jsonl"), lambda: None)
    assert failing.attempts >= 2, f"the fault met {failing.attempts} attempt(s): the driver did not retry"


def test_a_run_whose_outcome_append_timed_out_and_was_rolled_back_keeps_seq_1_to_n(
    wire: WireServer, store: MongoStore, tmp_path: Path
) -> None:
    """wtimeout at the outcome append (the batch is on the old primary alone); the engine reads the run
    again; then a failover rolls the batch back. The engine must not build on events the log no
    longer has (L1: seq 1..N, no gap)."""
    ledger = str(tmp_path / "ledger.jsonl")
    wire.hold("insert", when=outcome_batch)

    def wtimeout_then_fail_over() -> None:
        held = wire.receive("insert")
        run = held.doc["documents"][0]["run"]
        wire.hold("find", when=lambda request: (request.doc.get("filter") or {}).get("run") == run)
        wire.reply(held, wire.serve(held, replicated=False), writeConcernError=WTIMEOUT)
        read = wire.receive("find")
        answer = wire.serve(read)
        wire.fail_over()
        wire.reply(read, answer)

    with Orchestrator(make_registry(), executor="inline", store=store, lease_s=1.0) as orch:
        finish_through(orch, wire, ledger, wtimeout_then_fail_over)
