"""ZeroMQ workers under faults: real ``evenflow worker``/``serve`` processes on 127.0.0.1.

Workers are SIGKILLed, SIGSTOPped past their liveness window and SIGTERMed;
the service is SIGKILLed while a worker holds an unacknowledged result; raw
peers send junk, forged outcomes and bad hellos, with and without CURVE; one
slow worker gets a 10,000-call burst. After each, the run's log and the
external ledger must satisfy RELIABILITY.md's L1, L4, L5 and L9
(``tests.support.invariants``). Figures (how fast a dead worker is noticed,
how many outcomes were ignored) are printed; ``pytest -s`` shows them.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from orchestrator import Client, Orchestrator, RunFailed, call, parallel
from orchestrator.core import events as ev
from orchestrator.core.events import Event
from orchestrator.transport.scheduler import WorkerInfo
from orchestrator.transport.security import ServerKeys
from tests.commands import LedgerEntry, ledger_read
from tests.fault.zmq_peers import FORGER, RawPeer, bad_hellos, forged_done, junk_frames, oversize_frame
from tests.support.invariants import ACCEPTED, Tally, check
from tests.support.logs import read_log
from tests.support.polling import wait_until
from tests.support.zmq_cluster import READY_S, Proc, free_endpoint, service, worker
from workers.zmq import ZmqExecutor, make_keypair

pytestmark = pytest.mark.slow

HEARTBEAT_S = 0.2
LIVENESS = 3
SILENT_S = HEARTBEAT_S * LIVENESS
"""How long the hub waits for a silent worker before its calls end as lost."""
TERMINAL_S = 60.0
"""L4: how long a run may take to reach its terminal event once faults stop."""
REGISTRIES = "tests.support.zmq_cluster"


@dataclass
class Cluster:
    """An orchestrator on the embedded store, its ``ZmqExecutor``, and the worker processes it serves."""

    orch: Orchestrator
    executor: ZmqExecutor
    tmp: Path
    ledger: str
    stack: ExitStack

    def worker(
        self, registry: str = "everything", *, concurrency: int = 1, extra: tuple[str, ...] = ()
    ) -> Proc:
        """Start an ``evenflow worker`` process; it is killed when the test ends."""
        return self.stack.enter_context(
            worker(
                self.executor.endpoint,
                self.tmp,
                registry=f"{REGISTRIES}:{registry}",
                concurrency=concurrency,
                heartbeat_s=HEARTBEAT_S,
                extra=extra,
            )
        )

    def live(self, count: int) -> list[WorkerInfo]:
        """Until the hub sees exactly ``count`` live workers."""
        return wait_until(
            lambda: found if len(found := self.executor.workers()) == count else None,
            timeout=READY_S,
            what=f"exactly {count} live workers",
        )

    def pids(self) -> set[int]:
        """The pids of the live workers (their default name is ``host:pid``)."""
        return {int(info.name.rsplit(":", 1)[1]) for info in self.executor.workers()}

    def executions(self, run: str) -> list[LedgerEntry]:
        return [entry for entry in ledger_read(self.ledger) if entry.run == run]

    def check(self, run: str, nodes: int = 0) -> Tally:
        """L1, L4, L5, L9 for ``run``, ``nodes`` of whose nodes write the ledger."""
        return check(run, self.orch.events(run), ledger_read(self.ledger), ledgered_nodes=nodes)


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    """``make_cluster(**executor_options)``: everything it starts is stopped when the test ends."""
    with ExitStack() as stack:

        def make(**options: Any) -> Cluster:
            executor = ZmqExecutor("tcp://127.0.0.1:0", heartbeat_s=HEARTBEAT_S, liveness=LIVENESS, **options)
            orch = Orchestrator(None, executor=executor, store=f"embedded://{tmp_path / 'home'}")
            stack.enter_context(orch)
            return Cluster(orch, executor, tmp_path, str(tmp_path / "ledger.jsonl"), stack)

        yield make


def wait_call(cluster: Cluster, gate: Path, value: Any) -> Any:
    """A ledgered call that runs until ``gate`` exists, then returns ``value``."""
    return call("ledgered_wait", cluster.ledger, str(gate), value)


def failure_type(caught: pytest.ExceptionInfo[RunFailed]) -> str:
    [failure] = caught.value.failures
    return failure.type.rpartition(".")[2]


def text_of(events: list[Event]) -> str:
    return repr([(event.type, event.data) for event in events])


# --- 1. routing by command and queue ------------------------------------------------------


def test_calls_go_only_to_workers_with_their_command_and_queue(make_cluster: Callable[..., Cluster]) -> None:
    """Hosts with different code: a call must never reach a worker that lacks its name or queue."""
    cluster = make_cluster(schedule_timeout_s=1.0)
    billing, mail = cluster.worker("billing"), cluster.worker("mail")
    gpu = cluster.worker("billing", extra=("--queue", "gpu"))
    cluster.live(3)
    ledger = cluster.ledger

    pair = cluster.orch.submit(parallel(call("billing.charge", 42, ledger), call("mail.send", "x@y", ledger)))
    assert pair.result(TERMINAL_S) == [{"charged": 42}, "sent to x@y"]
    charges = [call("billing.charge", i, ledger) for i in range(4)]
    mixed = cluster.orch.submit(parallel(charges + [call("mail.send", f"{i}@y", ledger) for i in range(4)]))
    expected = [{"charged": i} for i in range(4)] + [f"sent to {i}@y" for i in range(4)]
    assert mixed.result(TERMINAL_S) == expected
    routed = cluster.orch.submit(
        parallel([call("billing.charge", i, ledger).options(route="gpu") for i in range(6)])
    )
    assert routed.result(TERMINAL_S) == [{"charged": i} for i in range(6)]

    for run, nodes in ((pair, 2), (mixed, 8), (routed, 6)):
        cluster.check(run.id, nodes)
        commands = {e.node: e.command for e in cluster.orch.events(run.id) if e.type == ev.COMMAND_DISPATCHED}
        for entry in cluster.executions(run.id):
            allowed = {
                "mail.send": {mail.pid},
                "billing.charge": {gpu.pid} if run is routed else {billing.pid, gpu.pid},
            }[commands[entry.node] or ""]
            assert entry.pid in allowed, f"{commands[entry.node]} at {entry.node} ran on pid {entry.pid}"

    unknown = cluster.orch.submit(call("nobody.has.this", 1))
    with pytest.raises(RunFailed) as caught:
        unknown.result(TERMINAL_S)
    assert failure_type(caught) == "UnknownCommand"
    elsewhere = cluster.orch.submit(call("mail.send", "x@y", ledger).options(route="gpu"))
    with pytest.raises(RunFailed) as caught:
        elsewhere.result(TERMINAL_S)
    assert failure_type(caught) == "NoWorker"
    for run in (unknown, elsewhere):
        assert cluster.check(run.id).executions == 0
    assert cluster.executor.hub.stats["unscheduled"] == 2


# --- 2. a worker SIGKILLed mid-command -----------------------------------------------------


def test_a_worker_killed_mid_command_has_its_attempt_rerun_elsewhere(
    make_cluster: Callable[..., Cluster], tmp_path: Path
) -> None:
    """SIGKILL leaves no outcome: the attempt must end ``lost`` and run again as a new attempt."""
    cluster = make_cluster()
    procs = {proc.pid: proc for proc in (cluster.worker(), cluster.worker())}
    cluster.live(2)
    gate = tmp_path / "gate"
    run = cluster.orch.submit(wait_call(cluster, gate, "survived"))
    [first] = wait_until(
        lambda: cluster.executions(run.id), timeout=READY_S, what="the first attempt running"
    )
    killed_at = time.monotonic()
    procs[first.pid].kill()
    [second] = wait_until(
        lambda: [e for e in cluster.executions(run.id) if e.attempt == 2],
        timeout=READY_S,
        what="attempt 2 running",
    )
    rerun_s = time.monotonic() - killed_at
    gate.touch()

    assert run.result(TERMINAL_S) == "survived"
    assert second.pid != first.pid and second.pid in procs
    tally = cluster.check(run.id, nodes=1)
    events = cluster.orch.events(run.id)
    lost = [e.attempt for e in events if e.type == ev.COMMAND_FAILED and e.data["error"]["reason"] == "lost"]
    assert lost == [1]
    assert Counter(e.attempt for e in cluster.executions(run.id)) == {1: 1, 2: 1}
    assert tally.dispatches == 2 and tally.ignored == 0
    assert rerun_s < SILENT_S + 2.0, f"a killed worker's attempt ran again only after {rerun_s:.2f}s"
    print(f"\nSIGKILLed worker: attempt 2 running elsewhere {rerun_s:.2f}s after the kill")


# --- 3. a worker SIGSTOPped past its liveness window ---------------------------------------


def test_a_frozen_worker_is_declared_dead_then_its_late_result_ignored_and_it_rejoins(
    make_cluster: Callable[..., Cluster], tmp_path: Path
) -> None:
    """TCP never notices a frozen peer; heartbeats must, and its result after SIGCONT must change nothing."""
    cluster = make_cluster()
    procs = {proc.pid: proc for proc in (cluster.worker(), cluster.worker())}
    cluster.live(2)
    hub, gate = cluster.executor.hub, tmp_path / "gate"
    run = cluster.orch.submit(wait_call(cluster, gate, "first answer"))
    [first] = wait_until(
        lambda: cluster.executions(run.id), timeout=READY_S, what="the first attempt running"
    )
    frozen = procs.pop(first.pid)
    [other] = procs.values()

    frozen.signal(signal.SIGSTOP)
    stopped_at = time.monotonic()
    wait_until(lambda: hub.stats["forgotten"] >= 1, timeout=READY_S, what="the frozen worker declared dead")
    declared_s = time.monotonic() - stopped_at
    [second] = wait_until(
        lambda: [e for e in cluster.executions(run.id) if e.attempt == 2],
        timeout=READY_S,
        what="attempt 2 running",
    )
    assert second.pid == other.pid
    gate.touch()  # both attempts may finish now; only the running one can, until SIGCONT
    assert run.result(TERMINAL_S) == "first answer"

    frozen.signal(signal.SIGCONT)
    late = wait_until(
        lambda: [e for e in cluster.orch.events(run.id) if e.type == ev.OUTCOME_IGNORED],
        timeout=READY_S,
        what="the late outcome recorded and ignored",
    )
    assert [(e.attempt, e.data["reason"]) for e in late] == [(1, "late")], hub.stats
    assert cluster.orch.result(run.id, TERMINAL_S) == "first answer"
    assert cluster.orch.state(run.id).status == "succeeded"
    tally = cluster.check(run.id, nodes=1)
    assert tally.dispatches == 2 and tally.ignored == 1

    wait_until(  # it said hello again
        lambda: cluster.pids() == {frozen.pid, other.pid}, timeout=READY_S, what="the thawed worker back"
    )
    assert hub.stats["hello"] == 3 and hub.stats["forgotten"] == 1
    other.kill()
    wait_until(lambda: cluster.pids() == {frozen.pid}, timeout=READY_S, what="only the thawed worker live")
    again = cluster.orch.submit(call("ledgered", "again", ledger=cluster.ledger))
    assert again.result(TERMINAL_S) == "again"
    assert {e.pid for e in cluster.executions(again.id)} == {frozen.pid}
    cluster.check(again.id, nodes=1)
    # its last heartbeat left up to one interval before the stop; the hub looks every half interval
    assert SILENT_S - HEARTBEAT_S <= declared_s < SILENT_S + 1.0, f"declared dead after {declared_s:.2f}s"
    print(f"\nSIGSTOPped worker declared dead after {declared_s:.2f}s (window {SILENT_S:g}s)")


def test_a_long_command_on_a_healthy_worker_is_not_declared_dead(
    make_cluster: Callable[..., Cluster],
) -> None:
    """A worker heartbeats while its command runs: four liveness windows of work must not look like death."""
    cluster = make_cluster()
    cluster.worker()
    cluster.live(1)
    run = cluster.orch.submit(call("ledgered_slow", cluster.ledger, "slow", 4 * SILENT_S))
    assert run.result(TERMINAL_S) == "slow"
    assert cluster.executor.hub.stats["forgotten"] == 0
    tally = cluster.check(run.id, nodes=1)
    assert (tally.executions, tally.dispatches, tally.ignored) == (1, 1, 0)


# --- 4. the service SIGKILLed while a worker holds an unacknowledged result ----------------


def test_a_result_held_while_the_service_is_down_is_stored_once_after_restart(tmp_path: Path) -> None:
    """The worker keeps its outcome until acked and resends it; the restarted service logs it once (late)."""
    endpoint, home, ledger = free_endpoint(), tmp_path / "home", str(tmp_path / "ledger.jsonl")
    gate, finished = tmp_path / "gate", tmp_path / "finished"
    with ExitStack() as stack:
        first = stack.enter_context(service(endpoint, home, tmp_path, heartbeat_s=HEARTBEAT_S))
        working = stack.enter_context(worker(endpoint, tmp_path, heartbeat_s=HEARTBEAT_S))
        client = stack.enter_context(Client(endpoint))
        run = client.submit(
            call("ledgered_wait", ledger, str(gate), "kept", str(finished)), wait_for_worker=READY_S
        )
        wait_until(
            lambda: [e for e in ledger_read(ledger) if e.run == run],
            timeout=READY_S,
            what="the command started",
        )

        first.kill()
        gate.touch()
        wait_until(  # the command is over while no service can take its outcome
            finished.exists, timeout=READY_S, what="the command finished"
        )
        wait_until(
            lambda: "went silent" in working.output(),
            timeout=READY_S,
            what="the worker saw the service go silent",
        )
        restarted_at = time.monotonic()
        stack.enter_context(service(endpoint, home, tmp_path, heartbeat_s=HEARTBEAT_S))
        assert client.result(run, timeout=TERMINAL_S) == "kept"
        finish_s = time.monotonic() - restarted_at
        events = read_log(home, run)

    tally = check(run, events, ledger_read(ledger), ledgered_nodes=1)
    # The restarted service ended attempt 1 as interrupted and sent attempt 2; the result the worker
    # held for attempt 1 arrives after that, so it is logged as late, acknowledged and not used.
    outcomes = [(e.attempt, e.type) for e in events if e.type in ACCEPTED]
    assert outcomes == [(1, ev.COMMAND_FAILED), (2, ev.COMMAND_SUCCEEDED)], text_of(events)
    assert events[2].data["error"]["type"].endswith(".Interrupted")
    assert tally.dispatches == 2
    ignored = [e for e in events if e.type == ev.OUTCOME_IGNORED]
    assert [(e.attempt, e.data["reason"]) for e in ignored] == [(1, "late")], text_of(ignored)
    assert tally.executions == 2
    print(f"\nservice restart: run done {finish_s:.2f}s after it; duplicates ignored: {len(ignored)}")


# --- 5. junk, forgeries and unauthenticated peers ------------------------------------------


def assert_untouched(events: list[Event], result: Any) -> None:
    """Only the legitimate worker's outcome is in the log: one success with ``result``, nothing forged."""
    results = [e.data["result"] for e in events if e.type == ev.COMMAND_SUCCEEDED]
    assert results == [result], text_of(events)
    forged = [e for e in events if e.data.get("by") == FORGER or e.type == ev.OUTCOME_IGNORED]
    assert not forged, text_of(forged)


def test_junk_and_forged_frames_never_reach_the_log(
    make_cluster: Callable[..., Cluster], tmp_path: Path
) -> None:
    """Every frame is hostile until a valid hello: drop it, count it, answer a forged outcome with reset."""
    seed = int(os.environ.get("EVENFLOW_FUZZ_SEED", random.randrange(2**32)))
    cluster = make_cluster()
    cluster.worker()
    cluster.live(1)
    hub, gate = cluster.executor.hub, tmp_path / "gate"
    run = cluster.orch.submit(wait_call(cluster, gate, "legit"))
    wait_until(lambda: cluster.executions(run.id), timeout=READY_S, what="the command running")

    junk = [*junk_frames(seed), *bad_hellos()]
    forged = forged_done(run.id, "r", 1)
    several = [(b"a", b"b"), (b"", forged), (forged, forged), (b"",) * 3]
    with RawPeer(cluster.executor.endpoint) as peer:
        assert peer.connected()
        for frame in junk:
            peer.send(frame)
        for frames in several:
            peer.send(*frames)
        for attempt in (1, 2):
            peer.send(forged_done(run.id, "r", attempt))
        replies = peer.replies(TERMINAL_S, until=1)
    expected = len(junk) + len(several)
    wait_until(
        lambda: hub.stats["malformed"] >= expected and hub.stats["unknown"] >= 2,
        timeout=READY_S,
        what=f"{expected} malformed messages and 2 unknown ones counted",
    )
    with RawPeer(cluster.executor.endpoint) as big:
        assert big.connected()
        big.send(oversize_frame())
        assert big.hung_up(), "the service kept a connection that sent an oversize frame"

    assert [reply["t"] for reply in replies] == ["reset"], f"seed {seed}"
    assert hub.stats["malformed"] == expected, f"seed {seed}: {hub.stats}"
    counts = [hub.stats[kind] for kind in ("unknown", "reset", "hello", "outcomes")]
    assert counts == [2, 1, 1, 0], f"seed {seed}: {hub.stats}"  # one reset per liveness window
    assert len(cluster.executor.workers()) == 1, f"seed {seed}: a bad hello made a worker"
    gate.touch()
    assert run.result(TERMINAL_S) == "legit"
    cluster.check(run.id, nodes=1)
    assert_untouched(cluster.orch.events(run.id), "legit")
    print(f"\nfuzz seed {seed}: {expected} frames dropped as malformed, 2 forged outcomes dropped, 1 reset")


def test_with_curve_peers_without_an_authorized_key_get_nothing_in(
    make_cluster: Callable[..., Cluster], tmp_path: Path
) -> None:
    """No key, an unknown key, the wrong server key: the handshake fails, so nothing they send is read."""
    keys, authorized = tmp_path / "keys", tmp_path / "authorized"
    server_public, server_secret = make_keypair(keys / "server", "server")
    worker_public, worker_secret = make_keypair(keys / "worker", "worker")
    _, intruder_secret = make_keypair(keys / "intruder", "intruder")
    impostor_public, _ = make_keypair(keys / "impostor", "impostor")
    authorized.mkdir()
    shutil.copy(worker_public, authorized)
    cluster = make_cluster(keys=ServerKeys(server_secret, authorized))
    cluster.worker(extra=("--secret-key", str(worker_secret), "--server-key", str(server_public)))
    cluster.live(1)
    hub, gate = cluster.executor.hub, tmp_path / "gate"
    run = cluster.orch.submit(wait_call(cluster, gate, "legit"))
    wait_until(lambda: cluster.executions(run.id), timeout=READY_S, what="the command running")

    intruders: dict[str, dict[str, Path]] = {
        "no keys": {},
        "unknown key": {"secret_file": intruder_secret, "server_file": server_public},
        "wrong server key": {"secret_file": worker_secret, "server_file": impostor_public},
    }
    for name, peer_keys in intruders.items():
        refused = hub.stats["refused_handshake"]
        with RawPeer(cluster.executor.endpoint, **peer_keys) as peer:
            peer.send(next(bad_hellos()))
            peer.send(forged_done(run.id, "r", 1))
            wait_until(
                lambda: hub.stats["refused_handshake"] > refused,  # noqa: B023 (used at once)
                timeout=READY_S,
                what=f"the handshake of {name!r} refused",
            )
            assert peer.replies(3 * HEARTBEAT_S) == [], name

    assert hub.stats["refused_handshake"] >= len(intruders)
    counts = [hub.stats[kind] for kind in ("malformed", "unknown", "hello", "outcomes")]
    assert counts == [0, 0, 1, 0], hub.stats
    gate.touch()
    assert run.result(TERMINAL_S) == "legit"
    cluster.check(run.id, nodes=1)
    assert_untouched(cluster.orch.events(run.id), "legit")
    print(f"\nCURVE: {hub.stats['refused_handshake']} refused handshakes from {len(intruders)} intruders")


# --- 6. a burst against one slow worker -----------------------------------------------------

BURST = 10_000


def test_a_burst_of_10000_calls_never_overruns_one_slow_worker(make_cluster: Callable[..., Cluster]) -> None:
    """Credit flow control: the burst waits at the hub, the worker holds at most its slots, nothing drops."""
    cluster = make_cluster()
    cluster.worker(concurrency=2)
    [info] = cluster.live(1)
    busy: list[int] = []
    done = threading.Event()

    def sample() -> None:
        for _ in range(100_000):  # bounded; ends long before this with the run
            if done.wait(0.01):
                return
            busy.extend(found.busy for found in cluster.executor.workers())

    sampler = threading.Thread(target=sample, daemon=True)
    started = time.monotonic()
    run = cluster.orch.submit(
        parallel([call("ledgered_slow", cluster.ledger, i, 0.0005) for i in range(BURST)])
    )
    sampler.start()
    try:
        assert run.result(TERMINAL_S) == list(range(BURST))
    finally:
        done.set()
        sampler.join(10)
    took_s = time.monotonic() - started

    assert max(busy) == info.slots, f"busy ranged up to {max(busy)} with {info.slots} slots"
    tally = cluster.check(run.id, nodes=BURST)
    assert tally.executions == BURST and tally.dispatches == BURST and tally.ignored == 0
    stats = cluster.executor.hub.stats
    assert (stats["outcomes"], stats["forgotten"], stats["unscheduled"]) == (BURST, 0, 0), stats
    print(f"\nburst: {BURST} calls in {took_s:.1f}s; busy at most {max(busy)} of {info.slots} slots")


# --- SIGTERM drains -------------------------------------------------------------------------


def test_a_worker_stopping_with_its_service_gone_does_not_wait_out_its_grace(
    make_cluster: Callable[..., Cluster], tmp_path: Path
) -> None:
    """Service and worker stopped together: once its command ends and the service no longer answers,
    the worker leaves (the run's log shows the attempt in flight; a resume sends it again)."""
    cluster = make_cluster()
    leaving = cluster.worker(extra=("--grace", "600"))
    cluster.live(1)
    gate = tmp_path / "gate"
    run = cluster.orch.submit(wait_call(cluster, gate, "late"))
    wait_until(lambda: cluster.executions(run.id), timeout=READY_S, what="the command running")
    cluster.executor.close()  # the service's socket is gone, as when it is stopped at the same moment
    leaving.signal(signal.SIGTERM)
    gate.touch()  # its outcome has nobody to acknowledge it
    assert leaving.popen.wait(TERMINAL_S) == 143, leaving.output()  # far sooner than its 600 s grace


def test_sigterm_drains_a_worker(
    make_cluster: Callable[..., Cluster], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A stopping worker takes no new calls, finishes what it runs, waits for the ack, and exits 0."""
    caplog.set_level(logging.INFO, logger="evenflow.zmq.hub")
    cluster = make_cluster()
    leaving = cluster.worker()
    cluster.live(1)
    gate = tmp_path / "gate"
    run = cluster.orch.submit(wait_call(cluster, gate, "drained"))
    wait_until(lambda: cluster.executions(run.id), timeout=READY_S, what="the command running")

    leaving.signal(signal.SIGTERM)
    wait_until(
        lambda: "is draining" in caplog.text, timeout=READY_S, what="the service logged the worker draining"
    )
    later = cluster.orch.submit(call("ledgered", "later", ledger=cluster.ledger))
    gate.touch()
    assert run.result(TERMINAL_S) == "drained"
    assert leaving.popen.wait(TERMINAL_S) == 143, leaving.output()  # 128 + SIGTERM, after its drain
    assert cluster.executions(later.id) == []  # it had a free slot, yet took nothing new

    arriving = cluster.worker()
    assert later.result(TERMINAL_S) == "later"
    assert {e.pid for e in cluster.executions(later.id)} == {arriving.pid}
    tally = cluster.check(run.id, nodes=1)
    assert (tally.executions, tally.dispatches) == (1, 1)
    cluster.check(later.id, nodes=1)


def test_a_named_worker_signs_its_attempts_with_its_name(make_cluster: Callable[..., Cluster]) -> None:
    """``evenflow worker --name`` is how the log, and so ``evenflow audit``, names who ran an attempt."""
    cluster = make_cluster()
    cluster.worker(extra=("--name", "billing-1"))
    cluster.live(1)
    run = cluster.orch.submit(call("ledgered", "named", ledger=cluster.ledger))
    assert run.result(TERMINAL_S) == "named"
    started = [e for e in cluster.orch.events(run.id) if e.type == ev.COMMAND_STARTED]
    assert [e.data["by"] for e in started] == ["billing-1/zmq"]
