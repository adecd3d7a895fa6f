"""L10 under faults: each event triggers a listener's run exactly once, whatever dies or fails.

The chain of ``listener_crash_commands``: ``place_order`` emits ``order.placed``;
listener ``receipts`` answers with ``send_receipt``, which emits
``receipt.sent``; listener ``archive`` answers with ``archive_order``. After
every fault the whole log is read and, for every causing event and every
listener subscribed to its type, exactly one ``run.submitted`` must name it as
causation (counted over the whole log, whatever key or run id it carries), on
the run id keyed on (listener, event); every run must have finished (L4) and
pass L1, L5 and L9 against the external ledger where commands ran in a
subprocess (``tests.support.invariants.check``); logs snapshotted after a kill
must be prefixes of the final log (L2).

- SIGKILL at the crash point ``listener-after-trigger-before-checkpoint``
  (passes 1, 2 and 3) of an orchestrator subprocess on the embedded store,
  restarted with the same listeners; and a seeded random SIGKILL loop
  (``EVENFLOW_LISTENER_SEED`` replays one).
- Several orchestrators sharing one mongomock ``MongoStore`` in threads, with
  a listener on another; then a store that holds some appends after their
  events were stamped until the listener has read past that stamp, so they
  commit out of ``at`` order: the feed's overlap window must catch them (and,
  to prove the hold does what it says, a window shorter than it misses them).
- Store faults in a listener's turn: the triggered run's append refused,
  ambiguous, partial, retried or unconfirmed (``tests.support.faulty_store``),
  and the feed read, the checkpoint save and the trigger itself failing
  before or after doing their work, while another listener and the
  orchestrator go on.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pymongo.errors import InvalidOperation

from orchestrator import Orchestrator, call, on
from orchestrator.core import events as ev
from orchestrator.core.crashpoints import CRASH_ENV
from orchestrator.core.errors import StoreUnavailable
from orchestrator.core.events import Event
from orchestrator.core.evolve import fold
from orchestrator.core.listening import Trigger
from orchestrator.core.ports import Position
from orchestrator.store import open_store
from orchestrator.store.faithful_mock import client
from orchestrator.store.feed import FeedWindow
from orchestrator.store.mongo import MongoStore
from tests.commands import LEDGER_ENV, ledger_read
from tests.fault.listener_crash_commands import (
    ORDER_PLACED,
    ORDERS_LISTENER,
    RECEIPT_SENT,
    RECEIPTS_LISTENER,
    answer_order,
    listeners,
    make_registry,
    order_flow,
    order_key,
    triggered_run,
)
from tests.support.faulty_store import Docs, Kind, faulty_store
from tests.support.invariants import check, check_prefix
from tests.support.polling import wait_until

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
POINT = "listener-after-trigger-before-checkpoint"
CHILD = "import sys; from tests.fault.listener_crash_commands import main; main(sys.argv[1:])"
CHAIN: dict[str, tuple[str, ...]] = {ORDER_PLACED: (ORDERS_LISTENER,), RECEIPT_SENT: (RECEIPTS_LISTENER,)}
"""Causing event type -> the listeners that answer it."""
DEATH_S = 30.0
"""How long an armed process may take to reach its crash point."""
FINISH_S = 60.0
"""L4: how long the chain may take to finish after the last fault."""


# --- reading the whole log and checking the chain --------------------------------------------------


def whole_log(store: Any) -> list[Event]:
    events, _ = store.read_feed(None, ["*"], 100_000)
    return list(events)


def embedded_log(home: Path) -> list[Event]:
    """Every event of the embedded store in ``home`` (read-only; [] before the journal exists)."""
    try:
        reader = open_store(None, home=home, read_only=True)
    except StoreUnavailable:
        return []
    try:
        return whole_log(reader)
    finally:
        reader.close()


def by_run(events: Sequence[Event]) -> dict[str, list[Event]]:
    runs: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        runs[event.run].append(event)
    return {run: sorted(found, key=lambda e: e.seq) for run, found in runs.items()}


def chain_complete(
    events: Sequence[Event], orders: int, chain: Mapping[str, tuple[str, ...]] = CHAIN
) -> bool:
    """``orders`` orders placed, every causing event answered by each of its listeners, every run ended."""
    runs = by_run(events)
    placed = [e for e in events if e.type == ORDER_PLACED]
    if len(placed) < orders:
        return False
    for event in events:
        for listener in chain.get(event.type, ()):
            if triggered_run(listener, event.id) not in runs:
                return False
    return all(any(e.type in ev.RUN_TERMINAL for e in found) for found in runs.values())


def check_exactly_once(
    events: Sequence[Event], orders: int, chain: Mapping[str, tuple[str, ...]] = CHAIN
) -> int:
    """L10 over the whole log; returns the number of triggered runs."""
    causes = {e.id: e for e in events if e.type in chain}
    assert len([e for e in causes.values() if e.type == ORDER_PLACED]) == orders, "orders placed"
    submitted = [e for e in events if e.type == ev.RUN_SUBMITTED]
    by_causation = Counter(e.causation for e in submitted if e.causation is not None)
    triggered = [e for e in submitted if e.data.get("listener")]
    for cause in causes.values():
        wanted = len(chain[cause.type])
        assert by_causation[cause.id] == wanted, (
            f"L10: {cause.type} {cause.id} caused {by_causation[cause.id]} runs, not {wanted}"
        )
    pairs = Counter((e.causation, e.data["listener"]) for e in triggered)
    expected = {(cause.id, listener) for cause in causes.values() for listener in chain[cause.type]}
    assert set(pairs) == expected, (
        f"L10: triggered (event, listener) pairs differ: extra {sorted(set(pairs) - expected)[:3]}, "
        f"missing {sorted(expected - set(pairs))[:3]}"
    )
    assert all(n == 1 for n in pairs.values()), f"L10: {[p for p, n in pairs.items() if n > 1][:3]} twice"
    runs = by_run(events)
    for started in triggered:
        cause = causes[str(started.causation)]
        listener = started.data["listener"]
        assert started.run == triggered_run(listener, cause.id), f"{started.run} is not keyed on its cause"
        assert started.correlation == (cause.correlation or cause.run), f"{started.run} left its chain"
        depth = int(runs[cause.run][0].data.get("depth", 0)) + 1
        assert started.data.get("depth") == depth, f"{started.run} has depth {started.data.get('depth')}"
    return len(triggered)


def check_runs(events: Sequence[Event], ledger: str | None = None) -> int:
    """L1, L4, L5 (and L9 against ``ledger``) for every run in the log; each must have succeeded."""
    entries = ledger_read(ledger) if ledger else []
    runs = by_run(events)
    for run, found in runs.items():
        check(run, found, entries, ledgered_nodes=1 if ledger else 0)
        state = fold(run, found)
        assert state.status == "succeeded", f"{run} ended {state.status}: {state.failures[:1]}"
    if ledger:
        strays = {entry.run for entry in entries} - set(runs)
        assert not strays, f"the ledger names runs that are not in the log: {sorted(strays)[:3]}"
    return len(runs)


def check_results(events: Sequence[Event], orders: int) -> None:
    """L6 for this flat chain: order i returns i; its archive run returns i too."""
    runs = by_run(events)
    for i in range(orders):
        order = runs[orders_run(i)]
        assert fold(order[0].run, order).result == i
    for found in runs.values():
        if found[0].data.get("listener") == RECEIPTS_LISTENER:
            cause = next(e for e in events if e.id == found[0].causation)
            assert fold(found[0].run, found).result == cause.data["id"]


def orders_run(i: int) -> str:
    from orchestrator.core.keys import run_for_key

    return run_for_key(order_key(i))


# --- orchestrator subprocesses on one embedded home ------------------------------------------------


@dataclass
class Owners:
    """``listener_crash_commands`` owner processes, each in its own session; killed and reaped at the end."""

    tmp: Path
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    @property
    def home(self) -> Path:
        return self.tmp / "home"

    @property
    def ledger(self) -> str:
        return str(self.tmp / "ledger.jsonl")

    @property
    def stop(self) -> Path:
        return self.tmp / "stop"

    def start(
        self, orders: int, work_s: float, *, paced: bool, crash: str | None = None
    ) -> subprocess.Popen[bytes]:
        env = {key: value for key, value in os.environ.items() if key != CRASH_ENV}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        env[LEDGER_ENV] = self.ledger
        if crash is not None:
            env[CRASH_ENV] = crash
        log = self.tmp / f"owner-{len(self.started) + 1}.log"
        args = ["owner", str(self.home), str(orders), str(self.stop), str(work_s), "1" if paced else "0"]
        with log.open("wb") as sink:
            popen = subprocess.Popen(
                [sys.executable, "-c", CHILD, *args],
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=REPO,
                start_new_session=True,
            )
        self.started.append(popen)
        self.logs.append(log)
        return popen

    def output(self) -> str:
        return self.logs[-1].read_text(errors="replace")[-3000:] if self.logs else ""

    def kill(self, popen: subprocess.Popen[bytes]) -> int:
        if popen.poll() is None:
            popen.send_signal(signal.SIGKILL)
        return popen.wait(30)

    def working(self, popen: subprocess.Popen[bytes], baseline: int) -> None:
        """Until the owner is at work: the log holds more than ``baseline`` events, or (with nothing
        left to do) it has its listeners in place; or it ended (bounded)."""

        def busy() -> bool:
            if popen.poll() is not None or len(embedded_log(self.home)) > baseline:
                return True
            return "started" in self.logs[-1].read_text(errors="replace").split()

        wait_until(busy, timeout=DEATH_S, what="the owner at work, or ended")

    def finish(self, orders: int, work_s: float, what: str) -> list[Event]:
        """A clean owner (the same orders: the same keys and flows): until the chain is complete
        (L4, bounded), then stop it; the final log."""
        popen = self.start(orders, work_s, paced=False)
        wait_until(
            lambda: popen.poll() is not None or chain_complete(embedded_log(self.home), orders),
            timeout=FINISH_S,
            what=f"{what}: the chain complete under the clean owner, or the owner ended",
        )
        assert popen.poll() is None, f"{what}: the clean owner ended by itself:\n{self.output()}"
        self.stop.touch()
        code = popen.wait(30)
        assert code == 0, f"{what}: the clean owner exited {code}:\n{self.output()}"
        return embedded_log(self.home)

    def close(self) -> None:
        for popen in self.started:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(popen.pid, signal.SIGKILL)
            popen.kill()
            popen.wait(timeout=30)


@pytest.fixture
def owners(tmp_path: Path) -> Iterator[Owners]:
    made = Owners(tmp_path)
    try:
        yield made
    finally:
        made.close()


def replays_pending(home: Path) -> dict[str, list[str]]:
    """Per listener, the events past its saved checkpoint whose triggered run is already logged:
    what a crash between trigger and checkpoint leaves, and a restart must not trigger again."""
    reader = open_store(None, home=home, read_only=True)
    try:
        pending: dict[str, list[str]] = {}
        for pattern, (listener,) in CHAIN.items():
            position = reader.load_checkpoint(listener)
            after, _ = reader.read_feed(position, [pattern], 10_000)
            pending[listener] = [e.id for e in after if reader.read(triggered_run(listener, e.id))]
        return pending
    finally:
        reader.close()


def check_snapshots(final: Sequence[Event], snapshots: Sequence[Sequence[Event]], tag: str = "") -> None:
    runs = by_run(final)
    for k, taken in enumerate(snapshots, 1):
        for run, before in by_run(taken).items():
            try:
                check_prefix(run, before, runs.get(run, []))  # L2
            except AssertionError as exc:
                raise AssertionError(f"{tag} after kill {k}: {exc}") from exc


# --- 1. SIGKILL between trigger and checkpoint -----------------------------------------------------

CRASH_ORDERS = 5


@pytest.mark.parametrize("spec", [POINT, f"{POINT}@2", f"{POINT}@3"])
def test_a_crash_between_trigger_and_checkpoint_triggers_nothing_twice(spec: str, owners: Owners) -> None:
    first = owners.start(CRASH_ORDERS, 0.0, paced=True, crash=spec)
    wait_until(lambda: first.poll() is not None, timeout=DEATH_S, what=f"the owner armed with {spec} ended")
    assert first.returncode == -signal.SIGKILL, (
        f"the owner armed with {spec} ended {first.returncode}:\n{owners.output()}"
    )

    before = embedded_log(owners.home)
    pending = replays_pending(owners.home)
    assert any(pending.values()), (
        f"the crash at {spec} left no triggered run past its listener's checkpoint: {pending}"
    )
    assert not chain_complete(before, CRASH_ORDERS), "the crash came after the chain was complete"

    final = owners.finish(CRASH_ORDERS, 0.0, spec)
    replayed = sum(len(ids) for ids in pending.values())
    print(f"\n{spec}: {replayed} events past their checkpoint had their runs logged before the crash")
    check_exactly_once(final, CRASH_ORDERS)
    assert check_runs(final, owners.ledger) == 3 * CRASH_ORDERS
    check_results(final, CRASH_ORDERS)
    check_snapshots(final, [before], spec)


# --- 1b. seeded random SIGKILLs of the owner ------------------------------------------------------

RANDOM_ORDERS = 40
RANDOM_WORK_S = 0.02
KILLS = 5
MAX_KILL_DELAY_S = 0.3
"""After the log shows the owner at work, the kill comes a random 0..this later."""


def listener_seed() -> int:
    explicit = os.environ.get("EVENFLOW_LISTENER_SEED")
    return int(explicit) if explicit else random.SystemRandom().randrange(2**32)


def test_seeded_random_sigkills_of_a_listener_chain_trigger_each_event_once(owners: Owners) -> None:
    seed = listener_seed()
    print(f"\nlistener kill seed={seed} (replay with EVENFLOW_LISTENER_SEED={seed})")
    tag = f"[seed {seed}]"
    rng = random.Random(seed)
    snapshots: list[list[Event]] = []
    midstream = 0
    for kill in range(1, KILLS + 1):
        baseline = len(embedded_log(owners.home))
        popen = owners.start(RANDOM_ORDERS, RANDOM_WORK_S, paced=False)
        owners.working(popen, baseline)
        assert popen.poll() is None, f"{tag} owner {kill} ended by itself:\n{owners.output()}"
        threading.Event().wait(rng.uniform(0, MAX_KILL_DELAY_S))  # the kill moment: the fault schedule
        code = owners.kill(popen)
        assert code == -signal.SIGKILL, f"{tag} owner {kill} exited {code}:\n{owners.output()}"
        taken = embedded_log(owners.home)
        snapshots.append(taken)
        midstream += not chain_complete(taken, RANDOM_ORDERS)

    final = owners.finish(RANDOM_ORDERS, RANDOM_WORK_S, tag)
    try:
        triggered = check_exactly_once(final, RANDOM_ORDERS)
        runs = check_runs(final, owners.ledger)
        check_results(final, RANDOM_ORDERS)
    except AssertionError as exc:
        raise AssertionError(f"{tag} {exc}") from exc
    check_snapshots(final, snapshots, tag)
    assert midstream >= 1, f"{tag} every kill landed after the chain was complete: nothing was tested"
    print(f"{tag} {KILLS} kills ({midstream} mid-chain), {runs} runs, {triggered} triggered exactly once")


# --- 2. several writers sharing one MongoStore --------------------------------------------------

WRITERS = 3
PER_WRITER = 10


def shared_collection() -> Any:
    return client()["evenflow"]["events"]


def run_writers(store: MongoStore, work_s: float = 0.0) -> list[Orchestrator]:
    """``WRITERS`` orchestrators on ``store``, each placing ``PER_WRITER`` orders one after another
    in its own thread (order ids ``w * 100 + i``); returns them once all orders finished."""
    writers = [Orchestrator(make_registry(), store=store, executor="threads://2") for _ in range(WRITERS)]
    errors: list[BaseException] = []

    def place(w: int, orch: Orchestrator) -> None:
        try:
            for i in range(PER_WRITER):
                assert orch.run(order_flow(w * 100 + i, work_s), timeout=30) == w * 100 + i
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=place, args=(w, orch)) for w, orch in enumerate(writers)]
    try:
        for orch in writers:
            orch.start()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not any(thread.is_alive() for thread in threads), "a writer did not finish within 60s"
        assert not errors, f"a writer failed: {errors[0]!r}"
    except BaseException:
        for orch in writers:
            orch.close()
        raise
    return writers


def listening_orchestrator(store: MongoStore, poll_s: float = 0.5) -> Orchestrator:
    """An orchestrator with the chain's listeners; ``poll_s`` shortens their idle wait (other
    orchestrators' appends do not wake them: they find those by polling)."""
    orch = Orchestrator(make_registry(), store=store, executor="threads://2", listener_poll_s=poll_s).start()
    for listener in listeners():
        orch.listen(listener)
    return orch


def test_writers_sharing_one_store_trigger_each_event_once() -> None:
    store = MongoStore(shared_collection(), write_concern=None, feed_window_s=5.0, label="mongomock (shared)")
    listening = listening_orchestrator(store)
    writers: list[Orchestrator] = []
    try:
        writers = run_writers(store)
        orders = WRITERS * PER_WRITER
        wait_until(
            lambda: chain_complete(whole_log(store), orders), timeout=FINISH_S, what="the chain complete"
        )
        events = whole_log(store)
        assert check_exactly_once(events, orders) == 2 * orders
        assert check_runs(events) == 3 * orders
        writers_by = {orch.by for orch in writers}
        placed_by = {e.by for e in events if e.type == ORDER_PLACED}
        assert placed_by == writers_by, "every writer logged orders"
    finally:
        for orch in [*writers, listening]:
            orch.close()
        store.close()


class HoldingStore(MongoStore):
    """Holds each append carrying a held order's ``order.placed`` (stamped already, by the engine)
    until ``listener``'s saved checkpoint has moved past that stamp, or ``hold_s`` at most: the
    other writers commit newer events meanwhile, so the held ones land out of ``at`` order behind
    a reader that has moved on. ``overtaken`` lists the held events the listener had passed."""

    def __init__(self, collection: Any, *, held: set[int], listener: str, hold_s: float, **kw: Any) -> None:
        super().__init__(collection, write_concern=None, label="mongomock (holding)", **kw)
        self.held, self.listener, self.hold_s = held, listener, hold_s
        self.overtaken: list[str] = []
        self.timed_out: list[str] = []
        self._count = threading.Lock()

    def append(self, events: Sequence[Event]) -> None:
        events = list(events)
        placed = [e for e in events if e.type == ORDER_PLACED and e.data.get("id") in self.held]
        if placed:
            self._hold(placed)
        super().append(events)

    def _hold(self, placed: list[Event]) -> None:
        stamp = min(FeedWindow.millis(e.at) for e in placed)
        deadline = time.monotonic() + self.hold_s
        pause = threading.Event()
        while True:
            mark = (self.load_checkpoint(self.listener) or {}).get("at")
            if mark is not None and mark > stamp:
                with self._count:
                    self.overtaken.extend(e.id for e in placed)
                return
            if time.monotonic() >= deadline:
                with self._count:
                    self.timed_out.extend(e.id for e in placed)
                return
            pause.wait(0.005)


HOLD_S = 1.0
"""The longest an append is held: much longer than the listener's idle poll (``POLL_S``), shorter
than the feed window of the test."""
POLL_S = 0.05
HOLD_WORK_S = 0.03
"""Each order takes a while, so the other writers still commit newer events while one is held."""
HELD = {0, 1, 2}
"""Orders of writer 0 whose ``order.placed`` append is held: its first three, while the others are busy."""


WINDOW_S = 3.0
"""The feed window of the out-of-order test: longer than any hold."""


def test_appends_committed_out_of_order_still_trigger_exactly_once() -> None:
    store = HoldingStore(
        shared_collection(), held=HELD, listener=ORDERS_LISTENER, hold_s=HOLD_S, feed_window_s=WINDOW_S
    )
    listening = listening_orchestrator(store, poll_s=POLL_S)
    writers: list[Orchestrator] = []
    try:
        writers = run_writers(store, work_s=HOLD_WORK_S)
        orders = WRITERS * PER_WRITER
        wait_until(
            lambda: chain_complete(whole_log(store), orders), timeout=FINISH_S, what="the chain complete"
        )
        events = whole_log(store)
        assert store.overtaken, (
            f"no held append was overtaken by the listener within {HOLD_S}s ({len(store.timed_out)} timed "
            "out): the test did not create out-of-order commits"
        )
        assert check_exactly_once(events, orders) == 2 * orders
        assert check_runs(events) == 3 * orders
        print(f"\n{len(store.overtaken)} held events overtaken by the listener, {len(store.timed_out)} not")
    finally:
        for orch in [*writers, listening]:
            orch.close()
        store.close()


def test_the_hold_overtakes_the_listener_so_a_window_shorter_than_it_misses_events() -> None:
    """The harness itself: with no overlap window, every held event the listener moved past is never
    delivered. So the test above would catch a feed that forgot the window (or made it too short)."""
    store = HoldingStore(
        shared_collection(), held=HELD, listener=ORDERS_LISTENER, hold_s=HOLD_S, feed_window_s=0.0
    )
    listening = listening_orchestrator(store, poll_s=POLL_S)
    writers: list[Orchestrator] = []
    try:
        writers = run_writers(store, work_s=HOLD_WORK_S)

        def caught_up() -> bool:
            events = whole_log(store)
            newest = max(FeedWindow.millis(e.at) for e in events if e.type == ORDER_PLACED)
            mark = (store.load_checkpoint(ORDERS_LISTENER) or {}).get("at")
            return mark is not None and mark >= newest and not store.unfinished_runs()

        wait_until(caught_up, timeout=FINISH_S, what="the listener caught up with every order")
        events = whole_log(store)
        missed = {
            e.id
            for e in events
            if e.type == ORDER_PLACED and not store.read(triggered_run(ORDERS_LISTENER, e.id))
        }
        assert store.overtaken, "no held append was overtaken: the hold did not work"
        assert set(store.overtaken) <= missed, (
            f"held events the listener had passed were delivered with no window: "
            f"{sorted(set(store.overtaken) - missed)}"
        )
    finally:
        for orch in [*writers, listening]:
            orch.close()
        store.close()


class ClosingClient:
    """What ``MongoStore.close()`` closes, behaving as PyMongo 4's ``MongoClient``: unusable once closed."""

    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


class ClientCollection:
    """A mongomock collection reached through a ``ClosingClient``: every call fails once it is closed."""

    def __init__(self, inner: Any, client: ClosingClient) -> None:
        self.inner, self.client = inner, client

    @property
    def database(self) -> ClientDatabase:
        return ClientDatabase(self.inner.database, self.client)

    def __getattr__(self, name: str) -> Any:
        if name in ("inner", "client"):
            raise AttributeError(name)
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        def guarded(*args: Any, **kwargs: Any) -> Any:
            if self.client.closed:
                raise InvalidOperation("Cannot use MongoClient after close")
            return attr(*args, **kwargs)

        return guarded


class ClientDatabase:
    def __init__(self, inner: Any, client: ClosingClient) -> None:
        self.inner, self.client = inner, client

    def __getitem__(self, name: str) -> ClientCollection:
        return ClientCollection(self.inner[name], self.client)

    def __getattr__(self, name: str) -> Any:
        if name in ("inner", "client"):
            raise AttributeError(name)
        return getattr(self.inner, name)  # ``name``, ...


def test_closing_one_orchestrator_leaves_a_shared_store_open_for_the_others() -> None:
    client = ClosingClient()
    store = MongoStore(
        ClientCollection(shared_collection(), client), write_concern=None, client=client, label="shared"
    )
    first = Orchestrator(make_registry(), store=store, executor="inline").start()
    second = Orchestrator(make_registry(), store=store, executor="inline").start()
    try:
        assert first.run(order_flow(1), timeout=10) == 1
        first.close()
        assert second.run(order_flow(2), timeout=3) == 2
    finally:
        first.close()
        second.close()


# --- 3. store faults during a listener's turn ---------------------------------------------------

FAULT_ORDERS = 4


def triggered_by(listener: str) -> Callable[[Docs], bool]:
    """Batches that hold the ``run.submitted`` of a run ``listener`` triggered."""
    return lambda docs: any(
        doc.get("type") == ev.RUN_SUBMITTED and (doc.get("data") or {}).get("listener") == listener
        for doc in docs
    )


@pytest.mark.parametrize("kind", ["refuse", "ambiguous", "partial", "retried", "wtimeout"])
def test_a_failed_append_of_a_triggered_run_still_gives_one_run(kind: Kind) -> None:
    store, faulty = faulty_store()
    fault = faulty.arm(kind, when=triggered_by(ORDERS_LISTENER), keep=1 if kind == "partial" else None)
    orch = listening_orchestrator(store)
    try:
        for i in range(FAULT_ORDERS):
            assert orch.run(order_flow(i), timeout=30) == i
        with faulty.unfaulted():
            wait_until(
                lambda: chain_complete(whole_log(store), FAULT_ORDERS),
                timeout=FINISH_S,
                what="the chain complete",
            )
            events = whole_log(store)
            kept = [faulty.inner.find_one({"_id": doc["_id"]}) for doc in fault.snapshot]
        assert fault.hits == 1, f"the {kind} fault did not fire"
        assert kept == fault.snapshot, "L2: events logged before the fault changed"
        assert {str(i) for i in fault.landed} <= {e.id for e in events}
        assert check_exactly_once(events, FAULT_ORDERS) == 2 * FAULT_ORDERS
        assert check_runs(events) == 3 * FAULT_ORDERS
    finally:
        orch.close()


class FlakyFeed(MongoStore):
    """A ``MongoStore`` whose feed read or checkpoint save fails for one listener while ``active``."""

    def __init__(self, collection: Any, fault: str, listener: str, pattern: str) -> None:
        super().__init__(collection, write_concern=None, label="mongomock (flaky feed)")
        self.fault, self.listener, self.pattern = fault, listener, pattern
        self.active = threading.Event()
        self.failures = 0
        self._count = threading.Lock()

    def fail(self, what: str) -> None:
        with self._count:
            self.failures += 1
        raise StoreUnavailable(f"{what} failed (injected)")

    def read_feed(
        self, position: Position | None, patterns: Sequence[str], limit: int
    ) -> tuple[list[Event], Position]:
        if self.fault == "read_feed" and list(patterns) == [self.pattern] and self.active.is_set():
            self.fail("reading the feed")
        return super().read_feed(position, patterns, limit)

    def save_checkpoint(self, name: str, position: Position) -> None:
        if name == self.listener and self.fault.startswith("save") and self.active.is_set():
            if self.fault == "save_after":
                super().save_checkpoint(name, position)
            self.fail(f"saving the checkpoint of {name}")
        super().save_checkpoint(name, position)


AUDIT = "audit"
"""A third listener, on ``order.placed`` like ``receipts``, that no fault touches."""
WITH_AUDIT: dict[str, tuple[str, ...]] = {
    ORDER_PLACED: (ORDERS_LISTENER, AUDIT),
    RECEIPT_SENT: (RECEIPTS_LISTENER,),
}


def audit_order(event: Event) -> Any:
    return call("archive_order", event.data["id"])


TURN_FAULTS = ("read_feed", "save_before", "save_after", "trigger_before", "trigger_after")
"""Where a turn of ``receipts`` fails: before it could trigger (read_feed, trigger_before) or after
its triggers were logged (save_before, save_after, trigger_after: the host must replay them)."""


@pytest.mark.parametrize("fault", TURN_FAULTS)
def test_a_listener_whose_turn_fails_retries_and_the_others_go_on(
    fault: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FlakyFeed(shared_collection(), fault, ORDERS_LISTENER, ORDER_PLACED)
    orch = Orchestrator(make_registry(), store=store, executor="threads://2").start()
    keys: list[str] = []
    real = orch.trigger

    def trigger(triggers: Sequence[Trigger]) -> None:
        keys.extend(t.key for t in triggers)
        mine = any(t.listener == ORDERS_LISTENER for t in triggers) and store.active.is_set()
        if mine and fault == "trigger_before":
            store.fail("logging the triggers")
        real(triggers)
        if mine and fault == "trigger_after":
            store.fail("confirming the triggers")

    monkeypatch.setattr(orch, "trigger", trigger)  # before the first listen: the host calls this one
    orch.listen(on(ORDER_PLACED, answer_order, name=ORDERS_LISTENER, since="start"))
    orch.listen(on("order.*", audit_order, name=AUDIT, since="start"))
    orch.listen(listeners()[1])
    store.active.set()
    try:
        for i in range(FAULT_ORDERS):
            assert orch.run(order_flow(i), timeout=30) == i

        def audited() -> bool:
            placed = [e for e in whole_log(store) if e.type == ORDER_PLACED]
            runs = [store.read(triggered_run(AUDIT, e.id)) for e in placed]
            return all(run and run[-1].type in ev.RUN_TERMINAL for run in runs)

        wait_until(  # the other listeners went on
            lambda: audited() and store.failures >= 2,
            timeout=FINISH_S,
            what="every order audited, and two injected failures of receipts",
        )
        assert orch.run(call("archive_order", 99), timeout=30) == 99  # and so does the orchestrator
        placed = [e for e in whole_log(store) if e.type == ORDER_PLACED]
        if fault in ("read_feed", "trigger_before"):
            assert not any(store.read(triggered_run(ORDERS_LISTENER, e.id)) for e in placed), (
                "receipts got a run logged although each of its turns failed before logging it"
            )
        else:  # each turn logged its triggers, then failed: the host read again and replayed them

            def replayed() -> bool:
                mine = Counter(k for k in keys if k.startswith(f"listener:{ORDERS_LISTENER}:"))
                return any(n > 1 for n in mine.values())

            wait_until(replayed, timeout=FINISH_S, what="a trigger of receipts replayed")
        assert store.failures >= 2

        store.active.clear()

        def caught_up() -> bool:
            position = store.load_checkpoint(ORDERS_LISTENER)
            pending, _ = store.read_feed(position, [ORDER_PLACED], 100)
            return not pending and chain_complete(whole_log(store), FAULT_ORDERS, WITH_AUDIT)

        wait_until(caught_up, timeout=FINISH_S, what="receipts caught up, the chain complete")
        events = whole_log(store)
        assert check_exactly_once(events, FAULT_ORDERS, WITH_AUDIT) == 3 * FAULT_ORDERS
        assert check_runs(events) == 4 * FAULT_ORDERS + 1
    finally:
        orch.close()
