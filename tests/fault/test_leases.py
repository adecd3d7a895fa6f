"""Several orchestrators on one MongoDB log: takeover by lease, fencing of a paused owner, clock skew,
and duplicate submissions racing under one key.

Threads sharing one store: mongomock, and in the server lane (``tests/support/stores.py``: set
EVENFLOW_TEST_MONGODB_URL) the same tests on a real server, in a database of their own. A "paused"
owner is one whose every store call blocks: its engine cannot renew its lease nor append, exactly
what a SIGSTOP or a long GC pause does to it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from orchestrator import Orchestrator, call, sequence
from orchestrator.core import events as ev
from orchestrator.core.events import Event, to_millis
from orchestrator.store.mongo import MongoStore, connect, open_mongomock
from tests.commands import ledger_read, make_registry
from tests.support.invariants import check
from tests.support.polling import wait_until
from tests.support.stores import SERVER, database_url, server_database

pytestmark = pytest.mark.slow

LEASE_S = 0.5
DEADLINE_S = 30.0


@pytest.fixture(params=["mongomock", SERVER])
def store(request: pytest.FixtureRequest) -> Iterator[MongoStore]:
    if request.param == "mongomock":
        shared = open_mongomock()
        yield shared
        shared.close()
        return
    with server_database("evenflow_leases") as database:
        shared = connect(database_url(database.name))
        try:
            yield shared
        finally:
            shared.close()


class Shared:
    """One orchestrator's view of the shared store: closing it leaves the store open; ``pause`` freezes it."""

    def __init__(self, store: MongoStore) -> None:
        self._store = store
        self._running = threading.Event()
        self._running.set()

    def pause(self) -> None:
        self._running.clear()

    def wake(self) -> None:
        self._running.set()

    def close(self) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._store, name)
        if not callable(attribute):
            return attribute

        def gated(*args: Any, **kwargs: Any) -> Any:
            self._running.wait(DEADLINE_S)
            return attribute(*args, **kwargs)

        return gated

    # The engine looks these up as attributes; spell them out so isinstance(…, Protocol) sees them.
    def append(self, events: Any) -> None:
        self.__getattr__("append")(events)

    def read(self, run: str, after_seq: int = 0) -> list[Event]:
        result: list[Event] = self.__getattr__("read")(run, after_seq)
        return result

    def unfinished_runs(self) -> list[str]:
        result: list[str] = self.__getattr__("unfinished_runs")()
        return result

    def renew_lease(self, owner: str) -> None:
        self.__getattr__("renew_lease")(owner)

    def read_leases(self) -> dict[str, tuple[int, bool]]:
        result: dict[str, tuple[int, bool]] = self.__getattr__("read_leases")()
        return result

    def release_lease(self, owner: str) -> None:
        self.__getattr__("release_lease")(owner)


class SkewedClock:
    def __init__(self, offset: timedelta) -> None:
        self.offset = offset

    def now(self) -> datetime:
        return to_millis(datetime.now().astimezone() + self.offset)


def orchestrator(view: Shared, clock: Any = None, lease_s: float = LEASE_S) -> Orchestrator:
    return Orchestrator(
        make_registry(), executor="threads://4", store=view, read_models=False, lease_s=lease_s, clock=clock
    )


def owner_changes(store: MongoStore, run: str) -> list[Event]:
    return [e for e in store.read(run) if e.type == ev.OWNER_CHANGED]


def test_a_paused_owner_is_taken_over_and_fenced_out(store: MongoStore, tmp_path: Path) -> None:
    ledger, gate = str(tmp_path / "ledger.jsonl"), tmp_path / "gate"
    a_view, b_view = Shared(store), Shared(store)
    a, b = orchestrator(a_view).start(), orchestrator(b_view).start()
    try:
        flow = sequence(call("ledgered", 1, ledger=ledger), call("wait_for_file", str(gate), 5).si())
        run = a.submit(flow).id
        wait_until(
            lambda: any(e.type == ev.COMMAND_DISPATCHED and e.node == "r.1" for e in store.read(run)),
            timeout=DEADLINE_S,
            what="r.1 dispatched",
        )

        a_view.pause()
        paused_at = time.monotonic()
        change = wait_until(
            lambda: owner_changes(store, run), timeout=DEADLINE_S, what="B took the run over"
        )[0]
        takeover_s = time.monotonic() - paused_at
        gate.touch()  # both attempts of the waiting step may now finish
        assert b.result(run, timeout=DEADLINE_S) == 5

        a_view.wake()  # A's engine goes on: its outcome for attempt 1 must not be used
        wait_until(
            lambda: any(e.type == ev.OUTCOME_IGNORED for e in store.read(run)) or a_done(a, run),
            timeout=DEADLINE_S,
            what="A's late outcome ignored or the run dropped by A",
        )
    finally:
        a_view.wake()
        a.close()
        b.close()

    events = store.read(run)
    check(run, events, ledger_read(ledger), ledgered_nodes=1)
    assert change.data == {"owner": b.by, "previous": a.by}
    fenced = events[change.seq :]
    assert all(e.by != a.by for e in fenced), [(e.type, e.by) for e in fenced]  # A wrote nothing after
    dispatches = [e for e in fenced if e.type == ev.COMMAND_DISPATCHED]
    assert [(e.node, e.attempt) for e in dispatches] == [("r.1", 2)]
    # A's last renewal may precede the pause by a renew period; B then needs one lease plus its own patrol.
    renew_s = LEASE_S / 5
    assert LEASE_S - renew_s <= takeover_s <= LEASE_S + renew_s + 1.0
    print(f"\ntakeover of a paused owner: {takeover_s:.2f}s with a {LEASE_S}s lease")


def a_done(a: Orchestrator, run: str) -> bool:
    """A's engine has folded the run again and found it no longer its own."""
    return run not in a.engine.book.live


@pytest.mark.parametrize("skew", [timedelta(hours=1), timedelta(hours=-1)], ids=["ahead", "behind"])
def test_clock_skew_does_not_take_over_a_live_owner(
    store: MongoStore, tmp_path: Path, skew: timedelta
) -> None:
    gate = tmp_path / "gate"
    a = orchestrator(Shared(store)).start()
    b = orchestrator(Shared(store), clock=SkewedClock(skew)).start()
    try:
        run = a.submit(call("wait_for_file", str(gate), 3)).id
        beats = store.read_leases()[b.by][0]
        wait_until(  # B judged A's lease for 3 lease periods
            lambda: store.read_leases()[b.by][0] >= beats + 15, timeout=DEADLINE_S, what="15 more beats of B"
        )
        assert owner_changes(store, run) == []
        gate.touch()
        assert a.result(run, timeout=DEADLINE_S) == 3
    finally:
        a.close()
        b.close()
    assert {e.by for e in store.read(run)} == {a.by}


def test_a_clean_stop_frees_its_runs_at_once(store: MongoStore, tmp_path: Path) -> None:
    gate, lease_s = tmp_path / "gate", 5.0
    a = orchestrator(Shared(store), lease_s=lease_s).start()
    b = orchestrator(Shared(store), lease_s=lease_s).start()
    try:
        run = a.submit(call("wait_for_file", str(gate), 7)).id
        wait_until(
            lambda: any(e.type == ev.COMMAND_DISPATCHED for e in store.read(run)),
            timeout=DEADLINE_S,
            what="the command dispatched",
        )
        stopped_at = time.monotonic()
        gate.touch()
        a.close()  # released: B need not wait for the lease to run out
        wait_until(
            lambda: owner_changes(store, run) or a_finished(store, run),
            timeout=DEADLINE_S,
            what="the run taken over or finished",
        )
        freed_s = time.monotonic() - stopped_at
        assert b.result(run, timeout=DEADLINE_S) == 7
    finally:
        b.close()
    assert freed_s < lease_s / 2, freed_s


def a_finished(store: MongoStore, run: str) -> bool:
    return any(e.type in ev.RUN_TERMINAL for e in store.read(run))


def test_duplicate_submissions_race_to_one_run(store: MongoStore) -> None:
    """200 rounds: four callers on two orchestrators submit under one key at once; one run each round."""
    a, b = orchestrator(Shared(store)).start(), orchestrator(Shared(store)).start()
    rounds, callers = 200, 4
    try:
        with ThreadPoolExecutor(callers) as pool:
            for round in range(rounds):
                start = threading.Barrier(callers)

                def submit(index: int, n: int = round, start: threading.Barrier = start) -> str:
                    start.wait(DEADLINE_S)
                    return (a if index % 2 else b).submit(call("inc", n), key=f"order-{n}").id

                ids = set(pool.map(submit, range(callers)))
                assert len(ids) == 1, f"round {round}: {ids}"
                (run,) = ids
                submitted = [e for e in store.read(run) if e.type == ev.RUN_SUBMITTED]
                assert len(submitted) == 1, f"round {round}"
        for round in (0, rounds - 1):
            run = a.submit(call("inc", round), key=f"order-{round}").id
            assert a.result(run, timeout=DEADLINE_S) == round + 1
    finally:
        a.close()
        b.close()
