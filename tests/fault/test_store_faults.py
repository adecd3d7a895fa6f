"""Store faults at every append site of the engine, through the real ``MongoStore`` over a faulty mongomock.

Sites (each turn's append, orchestrator/engine/journal.py): the submission
(``run.submitted``); recording an outcome (``command.succeeded``); recording a failure with
its retry decision (``command.failed`` + ``retry.scheduled``); a retry timer firing
(``command.dispatched`` of attempt 2); the resume at start that ends a dead owner's attempts
as ``Interrupted``. Faults: tests/support/faulty_store.py.

After each fault the run finishes with the right result and its log keeps the invariants of
../shared/RELIABILITY.md: L1, L4, L5 and L9 (``tests.support.invariants.check``); L2 (what was
stored before the fault is unchanged, what the faulted write landed is kept); L3 (one
``run.submitted``, under the id the submit call returned); no decision logged twice; every
dispatched attempt has one accepted outcome; and no command starts before its dispatch is in the
log (checked by the command itself as it starts, not only at the end).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest

from orchestrator import Orchestrator, RetryPolicy, call, current_call, parallel, sequence
from orchestrator.core import events as ev
from orchestrator.core.errors import StoreUnavailable
from orchestrator.core.events import Event
from orchestrator.core.evolve import fold
from orchestrator.core.flows import Node
from orchestrator.core.registry import Registry
from orchestrator.core.stored_names import INTERRUPTED
from orchestrator.store.mongo import MongoStore
from tests.commands import ledger_append, ledger_read, make_registry, wait_for_file
from tests.support.faulty_store import Docs, Fault, FaultyCollection, Kind, Match, faulty_store, has_type
from tests.support.invariants import ACCEPTED, check
from tests.support.polling import wait_until

QUICK = RetryPolicy(max_attempts=3, initial_delay=timedelta(milliseconds=20), jitter=0)
OUTAGE_S = 0.4
SLOW_S = 0.2
RESULT_S = 10.0
SUBMIT_S = 3.0
"""A submission is logged within milliseconds, or within OUTAGE_S plus a backoff under an outage."""
LEASE_S = 1.0
"""Short leases: a run whose takeover append failed is taken again at the next renew (0.2 s)."""
ONCE = frozenset(
    {
        ev.RUN_SUBMITTED,
        ev.COMMAND_DISPATCHED,
        ev.COMMAND_SUCCEEDED,
        ev.COMMAND_FAILED,
        ev.RETRY_SCHEDULED,
        ev.NODE_FAILED,
        *ev.RUN_TERMINAL,
    }
)
"""Decisions and accepted outcomes: each (type, node, attempt) at most once in a run."""


# --- commands: each checks that its dispatch is logged, then writes the external ledger --------------


@dataclass
class Witness:
    """What the running commands saw of the log: an attempt executing before its dispatch is durable."""

    store: MongoStore | None = None
    faulty: FaultyCollection | None = None
    unlogged: list[tuple[str, str, int]] = field(default_factory=list)

    def executes(self, ledger: str) -> None:
        context = current_call()
        assert context is not None, "a test command runs outside an attempt"
        if self.store is not None and self.faulty is not None:
            with self.faulty.unfaulted():
                logged = self.store.read(context.run)
            if not any(
                e.type == ev.COMMAND_DISPATCHED and e.node == context.node and e.attempt == context.attempt
                for e in logged
            ):
                self.unlogged.append((context.run, context.node, context.attempt))
        ledger_append(ledger, context.run, context.node, context.attempt)


WITNESS = Witness()


def logged_value(value: int, ledger: str) -> int:
    WITNESS.executes(ledger)
    return value


def fails_first(value: int, ledger: str) -> int:
    """Fails its first attempt, so the node's retry policy schedules a second."""
    WITNESS.executes(ledger)
    context = current_call()
    if context is not None and context.attempt == 1:
        raise ValueError("the first attempt fails on purpose")
    return value


def blocks(value: int, ledger: str, gate: str) -> int:
    """Runs until ``gate`` exists: an attempt still in flight when its orchestrator stops."""
    WITNESS.executes(ledger)
    return int(wait_for_file(gate, value, seconds=RESULT_S))


def add_up(values: list[int], ledger: str) -> int:
    WITNESS.executes(ledger)
    return sum(values)


def registry() -> Registry:
    commands = make_registry()
    for fn in (logged_value, fails_first, blocks, add_up):
        commands.register(fn.__name__, fn)
    return commands


@pytest.fixture(autouse=True)
def _witness() -> Iterator[None]:
    WITNESS.store, WITNESS.faulty, WITNESS.unlogged = None, None, []
    yield
    WITNESS.store, WITNESS.faulty = None, None


# --- flows and sites ---------------------------------------------------------------------------------

EXPECTED = 5
NODES = 3
"""Every flow: two branches (2 and 3) in parallel, then ``add_up``; all three write the ledger."""


def fan(ledger: str, gate: str) -> Node:
    return sequence(
        parallel(call("logged_value", 2, ledger=ledger), call("logged_value", 3, ledger=ledger)),
        call("add_up", ledger=ledger),
    )


def retrying(ledger: str, gate: str) -> Node:
    return sequence(
        parallel(
            call("fails_first", 2, ledger=ledger).options(retry=QUICK),
            call("fails_first", 3, ledger=ledger).options(retry=QUICK),
        ),
        call("add_up", ledger=ledger),
    )


def blocking(ledger: str, gate: str) -> Node:
    return sequence(
        parallel(call("blocks", 2, ledger=ledger, gate=gate), call("blocks", 3, ledger=ledger, gate=gate)),
        call("add_up", ledger=ledger),
    )


def retry_dispatch(docs: Docs) -> bool:
    """The batch a retry timer appends when it fires: the dispatch of a later attempt."""
    return any(d.get("type") == ev.COMMAND_DISPATCHED and (d.get("attempt") or 1) >= 2 for d in docs)


def interrupted(docs: Docs) -> bool:
    """The batch the resume at start appends: attempts of a dead owner ended as ``Interrupted``."""
    return any(
        d.get("type") == ev.COMMAND_FAILED
        and (d.get("data") or {}).get("error", {}).get("type") == INTERRUPTED
        for d in docs
    )


@dataclass(frozen=True)
class Site:
    name: str
    flow: Callable[[str, str], Node]
    when: Match
    keep: int
    """Events of the site's batch a partial write lands (the batch holds more)."""
    executor: str = "inline"
    resume: bool = False


SITES = (
    # [run.submitted, dispatched a, dispatched b]: b's dispatch is lost
    Site("submission", fan, has_type(ev.RUN_SUBMITTED), keep=2),
    # [started a, succeeded a, started b, succeeded b, dispatched add_up] (inline: one turn has
    # both outcomes): b's outcome is lost
    Site("outcome", fan, has_type(ev.COMMAND_SUCCEEDED), keep=3),
    # [started a, failed a/1, started b, failed b/1, retry a, retry b]: b's retry decision is lost
    Site("failure", retrying, has_type(ev.COMMAND_FAILED), keep=5),
    # [dispatched a/2, dispatched b/2] (no jitter: both timers fire in one turn)
    Site("retry-timer", retrying, retry_dispatch, keep=1),
    # [owner.changed, failed a/1 Interrupted, failed b/1 Interrupted], by Engine._take_over at start:
    # a's attempt is ended, b's stays in flight
    Site("resume", blocking, interrupted, keep=2, executor="threads://2", resume=True),
)
FAULTS = ("refuse", "ambiguous", "wtimeout", "partial", "retried", "unavailable", "slow")
THEN_DOWN = ("ambiguous+down", "partial+down")
"""The write (or part of it) lands, then the server is unreachable for OUTAGE_S: the engine cannot
read back at once what landed."""


def arm(faulty: FaultyCollection, name: str, when: Match, keep: int) -> Fault:
    """Arm the fault ``name`` (a ``Kind``, or ``kind+down`` for an outage right after it) at ``when``."""
    kind, _, down = name.partition("+")
    seconds = {"unavailable": OUTAGE_S, "slow": SLOW_S}.get(kind, 0.0)
    return faulty.arm(
        cast(Kind, kind),
        when=when,
        keep=keep if kind in ("partial", "retried") else None,
        seconds=seconds,
        down_after_s=OUTAGE_S if down else 0.0,
    )


# --- helpers -----------------------------------------------------------------------------------------


def orchestrator(store: MongoStore, executor: str = "inline") -> Orchestrator:
    return Orchestrator(registry(), executor=executor, store=store, lease_s=LEASE_S)


def submit(orch: Orchestrator, flow: Node, key: str | None = None) -> str:
    """``Orchestrator.submit`` with a deadline: the run id, once its submission is logged."""
    run: str = orch.submit_future(flow, key=key).result(timeout=SUBMIT_S)
    return run


def crashed_owner(store: MongoStore, ledger: str, gate: str) -> str:
    """A run whose orchestrator stopped with both branches in flight, as if it had died there.

    The engine thread stops first; only then is ``gate`` created, so the commands finish after
    nothing listens: their outcomes are never logged, and the next orchestrator on ``store``
    finds both attempts dispatched without an outcome.
    """
    owner = orchestrator(store, "threads://2")

    def release_when_stopped() -> None:
        try:
            wait_until(lambda: not owner.engine.alive(), timeout=RESULT_S, what="the first engine stopped")
        finally:
            Path(gate).touch()  # always, or the owner's close would wait for its commands

    with owner:
        run = submit(owner, blocking(ledger, gate))
        wait_until(lambda: len(ledger_read(ledger)) == 2, timeout=RESULT_S, what="both branches started")
        releaser = threading.Thread(target=release_when_stopped, name="release-gate")
        releaser.start()
    releaser.join(RESULT_S)
    running = [e for e in store.read(run) if e.type in (ev.COMMAND_DISPATCHED, *ACCEPTED)]
    assert [e.type for e in running] == [ev.COMMAND_DISPATCHED] * 2, "the owner logged an outcome after all"
    return run


def run_events(store: MongoStore, faulty: FaultyCollection, run: str) -> list[Event]:
    with faulty.unfaulted():
        return store.read(run)


def verify(
    store: MongoStore,
    faulty: FaultyCollection,
    fault: Fault,
    runs: list[str],
    ledger: str,
    *,
    resent: bool = False,
) -> None:
    """Every invariant this file promises, for ``runs`` (the only runs in the store).

    Unless ``resent`` (a restart may send a dead owner's attempt again), each attempt also
    ran once: an outcome the engine holds is offered again, its attempt is not run again.
    """
    assert fault.hits == 1, f"the {fault.kind} fault never fired at its site (seen {fault.seen})"
    assert not WITNESS.unlogged, f"L9: attempts executed before their dispatch was logged: {WITNESS.unlogged}"
    with faulty.unfaulted():
        stored = {doc["_id"]: doc for doc in faulty.inner.find({})}
    submitted = sorted(doc["run"] for doc in stored.values() if doc["type"] == ev.RUN_SUBMITTED)
    assert submitted == sorted(runs), f"L3: the log's runs {submitted} are not the submitted {runs}"
    changed = [doc["_id"] for doc in fault.snapshot if stored.get(doc["_id"]) != doc]
    assert not changed, f"L2: events stored before the fault changed or vanished: {changed[:5]}"
    lost = sorted(set(fault.landed) - set(stored))
    assert not lost, f"events the faulted write landed are gone: {lost[:5]}"
    entries = ledger_read(ledger)
    if not resent:
        again = [key for key, n in Counter((e.run, e.node, e.attempt) for e in entries).items() if n > 1]
        assert not again, f"attempts executed more than once: {again}"
    for run in runs:
        events = run_events(store, faulty, run)
        check(run, events, entries, ledgered_nodes=NODES)
        state = fold(run, events)
        assert (state.status, state.result) == ("succeeded", EXPECTED), f"{run}: {state.status}"
        decisions = Counter((e.type, e.node, e.attempt) for e in events if e.type in ONCE)
        twice = [key for key, n in decisions.items() if n > 1]
        assert not twice, f"{run}: logged twice: {twice}"
        dispatched = Counter((e.node, e.attempt) for e in events if e.type == ev.COMMAND_DISPATCHED)
        outcomes = Counter((e.node, e.attempt) for e in events if e.type in ACCEPTED)
        assert outcomes == dispatched, f"{run}: attempts without exactly one accepted outcome"


# --- every append site x every fault ------------------------------------------------------------------


def site_faults() -> list[Any]:
    """Every site x every fault."""
    return [
        pytest.param(site, kind, id=f"{site.name}-{kind}") for site in SITES for kind in (*FAULTS, *THEN_DOWN)
    ]


@pytest.mark.parametrize(("site", "kind"), site_faults())
def test_a_store_fault_at_an_append_site_loses_and_duplicates_nothing(
    site: Site, kind: str, tmp_path: Path
) -> None:
    store, faulty = faulty_store()
    WITNESS.store, WITNESS.faulty = store, faulty
    ledger, gate = str(tmp_path / "ledger.jsonl"), str(tmp_path / "gate")
    run_id = crashed_owner(store, ledger, gate) if site.resume else ""
    fault = arm(faulty, kind, site.when, site.keep)
    with orchestrator(store, site.executor) as orch:
        if not site.resume:
            run_id = submit(orch, site.flow(ledger, gate))
        assert orch.result(run_id, timeout=RESULT_S) == EXPECTED
        assert orch.engine.alive(), "the engine thread died"
    verify(store, faulty, fault, [run_id], ledger, resent=site.resume)
    if kind.startswith("partial"):
        assert len(fault.landed) == site.keep, f"the partial write landed {fault.landed}"
    if kind == "unavailable":
        assert_backed_off(faulty)
    if site.resume and kind.partition("+")[0] in ("ambiguous", "wtimeout", "retried"):
        ends = [e for e in run_events(store, faulty, run_id) if e.type == ev.COMMAND_FAILED]
        assert [e.attempt for e in ends] == [1, 1], "the resume did not end both dead attempts once"


def assert_backed_off(faulty: FaultyCollection) -> None:
    """An outage of OUTAGE_S costs a handful of attempts, not a busy loop (one per 10 ms at most)."""
    assert not faulty.down
    inserts, total = faulty.refused["events.insert_many"], sum(faulty.refused.values())
    assert 1 <= inserts <= 10, f"{inserts} inserts tried during a {OUTAGE_S}s outage: {faulty.refused}"
    assert total <= OUTAGE_S * 1000 / 10, f"{total} operations tried during a {OUTAGE_S}s outage"


# --- more than one submission in the faulted batch ---------------------------------------------------


def batch_of_submissions(docs: Docs) -> bool:
    return sum(doc.get("type") == ev.RUN_SUBMITTED for doc in docs) >= 2


@pytest.mark.parametrize("kind", ["refuse", "ambiguous", "partial"])
def test_a_fault_in_a_group_commit_of_several_submissions_answers_each_with_its_own_run(
    kind: Kind, tmp_path: Path
) -> None:
    store, faulty = faulty_store()
    WITNESS.store, WITNESS.faulty = store, faulty
    ledger = str(tmp_path / "ledger.jsonl")
    # a partial write lands the first run of the batch whole and only the submission of the second;
    # should the first batch hold one submission, its append is slow, so the rest pile up for one turn
    fault = faulty.arm(kind, when=batch_of_submissions, keep=4 if kind == "partial" else None)
    faulty.arm("slow", when=has_type(ev.RUN_SUBMITTED), seconds=SLOW_S)
    with orchestrator(store) as orch:
        futures = [orch.submit_future(fan(ledger, "")) for _ in range(5)]
        runs = [future.result(timeout=SUBMIT_S) for future in futures]
        assert len(set(runs)) == 5
        assert [orch.result(run, timeout=RESULT_S) for run in runs] == [EXPECTED] * 5
    verify(store, faulty, fault, runs, ledger)


# --- an ambiguous keyed submission converges to one run (L3) ------------------------------------------


@pytest.mark.parametrize("kind", ["refuse", "ambiguous", "wtimeout", "partial", "unavailable"])
def test_a_keyed_submission_whose_append_failed_is_one_run_however_often_it_is_sent(
    kind: Kind, tmp_path: Path
) -> None:
    store, faulty = faulty_store()
    WITNESS.store, WITNESS.faulty = store, faulty
    ledger = str(tmp_path / "ledger.jsonl")
    fault = arm(faulty, kind, has_type(ev.RUN_SUBMITTED), keep=1)
    with orchestrator(store) as orch:
        first = submit(orch, fan(ledger, ""), key="order-17")
        assert submit(orch, fan(ledger, ""), key="order-17") == first
        assert orch.result(first, timeout=RESULT_S) == EXPECTED
    with orchestrator(store) as restarted:
        assert submit(restarted, fan(ledger, ""), key="order-17") == first
    verify(store, faulty, fault, [first], ledger)


# --- the store itself, under each fault --------------------------------------------------------------


def events_for(run: str, n: int) -> list[Event]:
    at = datetime(2024, 1, 1, tzinfo=UTC)
    return [
        Event(run, seq, ev.RUN_SUBMITTED if seq == 1 else ev.COMMAND_STARTED, at, node=str(seq))
        for seq in range(1, n + 1)
    ]


@pytest.mark.parametrize(
    ("kind", "raises", "landed"),
    [
        ("refuse", True, 0),
        ("ambiguous", True, 4),
        ("wtimeout", True, 4),
        ("partial", True, 2),
        ("retried", False, 4),
        ("unavailable", True, 0),
        ("slow", False, 4),
    ],
)
def test_the_store_reports_each_fault_as_unavailable_and_an_append_again_completes_it(
    kind: Kind, raises: bool, landed: int
) -> None:
    store, faulty = faulty_store()
    batch = events_for("r1", 4)
    fault = faulty.arm(kind, keep=2 if kind == "partial" else None, seconds=0.05)
    if raises:
        with pytest.raises(StoreUnavailable, match=r"re-read the runs|try again"):
            store.append(batch)
    else:
        store.append(batch)
    assert fault.hits == 1
    with faulty.unfaulted():
        assert [e.seq for e in store.read("r1")] == list(range(1, landed + 1))
    wait_until(lambda: not faulty.down, timeout=1.0, what="the outage ended")
    store.append(batch)  # idempotent by _id: what landed is skipped, the rest written
    assert [e.seq for e in store.read("r1")] == [1, 2, 3, 4]
    assert faulty.inner.count_documents({}) == 4


def test_an_outage_refuses_reads_too_until_its_deadline() -> None:
    store, faulty = faulty_store()
    store.append(events_for("r1", 1))
    faulty.down_for(0.1)
    with pytest.raises(StoreUnavailable, match="no server available"):
        store.read("r1")
    with pytest.raises(StoreUnavailable):
        store.unfinished_runs()
    wait_until(lambda: not faulty.down, timeout=1.0, what="the outage ended")
    assert [e.seq for e in store.read("r1")] == [1]
    assert faulty.refused == Counter({"events.find": 2})  # a run's events, then the marked submissions


def test_a_fault_aimed_at_the_nth_match_leaves_the_others_alone() -> None:
    store, faulty = faulty_store()
    fault = faulty.arm("refuse", when=has_type(ev.COMMAND_STARTED), nth=2)
    store.append(events_for("r1", 1))  # no match
    store.append(events_for("r2", 2))  # first match
    with pytest.raises(StoreUnavailable):
        store.append(events_for("r3", 2))
    store.append(events_for("r4", 2))
    assert (fault.seen, fault.hits, faulty.inserts) == (2, 1, 4)
    assert store.unfinished_runs() == ["r1", "r2", "r4"]
