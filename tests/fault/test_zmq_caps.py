"""Caps hit only the guilty: a command that kills every worker it runs on fails alone, at its cap.

Real ``evenflow worker`` processes on 127.0.0.1 (concurrency 1, a deep
prefetch) and an orchestrator on the embedded store behind a ``ZmqExecutor``.
The poison waits for a gate, then SIGKILLs its worker, with 50 innocent calls
queued behind it on that worker. Each time a worker dies another is started.
The innocents never started there, so they are handed to the next worker as
the same attempts: each succeeds, and none that never ran is logged lost. The
poison is logged lost once per attempt and fails at the lost-worker cap
(``LOST_REDISPATCHES``). On the old transport every innocent failed.

What the service knows of a worker's last moments can be cut short: a
worker killed with unread data in its socket resets the connection, and the
service loses what it had not read yet (a result). So an innocent that had
just finished there may be logged lost and run again (or, its start report
lost too, run again as the same attempt), and the poison may kill one more
worker than it has attempts (its start report lost, its attempt handed on
uncounted: ``MAX_REQUEUES`` bounds that). A worker started with
``--confirm-starts`` begins a call only once the service has answered its
``started`` with ``go``, so no start report is lost
(tests/fault/test_zmq_start_reports.py); it costs a round trip a call.
"""

from __future__ import annotations

import signal
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import pytest

from orchestrator import Client, Orchestrator, RunFailed, call
from orchestrator.core import events as ev
from orchestrator.core.planner import LOST_REDISPATCHES, RESTART_REDISPATCHES
from orchestrator.core.policy import RetryPolicy
from tests.commands import ledger_read
from tests.fault.cap_commands import FLAKY_POLICY
from tests.support.logs import read_log
from tests.support.polling import wait_until
from tests.support.zmq_cluster import READY_S, Proc, free_endpoint, service, wait_for_workers, worker
from workers.zmq import ZmqExecutor

pytestmark = pytest.mark.slow

HEARTBEAT_S = 0.2
INNOCENTS = 50
MAX_WORKERS = 3 * LOST_REDISPATCHES + 4
"""One worker per poison attempt, one for what is left, and slack for start reports lost with a
worker (see above); more means a crash loop."""
SETTLE_S = 120.0


def test_a_command_that_kills_its_worker_fails_at_its_cap_and_the_calls_queued_behind_it_succeed(
    tmp_path: Path,
) -> None:
    ledger, gate = str(tmp_path / "ledger.jsonl"), tmp_path / "gate"
    with ExitStack() as stack:
        executor = ZmqExecutor("tcp://127.0.0.1:0", heartbeat_s=HEARTBEAT_S, liveness=3)
        orch = stack.enter_context(
            Orchestrator(None, executor=executor, store=f"embedded://{tmp_path / 'home'}")
        )
        workers: list[Proc] = []

        def start_worker() -> None:
            extra = ("--prefetch", str(2 * INNOCENTS))
            registry = "tests.fault.cap_commands:registry"
            workers.append(
                stack.enter_context(worker(executor.endpoint, tmp_path, registry=registry, extra=extra))
            )

        start_worker()
        wait_for_workers(executor, 1)
        poison = orch.submit(call("poison", str(gate), ledger))
        wait_until(lambda: ledger_read(ledger), timeout=READY_S, what="the poison running")
        innocents = [orch.submit(call("innocent", i, ledger)) for i in range(INNOCENTS)]
        wait_until(
            lambda: [info.busy for info in executor.workers()] == [INNOCENTS + 1],
            timeout=READY_S,
            what="the innocent calls queued behind the poison on its worker",
        )
        gate.touch()

        def settled() -> bool:
            if workers[-1].popen.poll() is not None:  # the poison killed it: the next takes over
                assert len(workers) < MAX_WORKERS, f"{len(workers)} workers died: a crash loop"
                start_worker()
            return all(orch.state(run.id).finished for run in [poison, *innocents])

        wait_until(settled, timeout=SETTLE_S, what="every run ended")
        results = [run.result(READY_S) for run in innocents]
        with pytest.raises(RunFailed) as caught:
            poison.result(READY_S)
        poison_events = orch.events(poison.id)
        innocent_events = [event for run in innocents for event in orch.events(run.id)]
        handed_back = executor.hub.stats["handed_back"]

    assert results == list(range(INNOCENTS))
    [failure] = caught.value.failures
    assert failure.type.endswith("WorkerLost"), failure
    failed = [e for e in poison_events if e.type == ev.COMMAND_FAILED]
    assert [e.attempt for e in failed] == list(range(1, LOST_REDISPATCHES + 2))
    assert all(e.data["error"]["reason"] == "lost" for e in failed)
    executions = Counter((entry.run, entry.attempt) for entry in ledger_read(ledger))
    assert {a for (run, a) in executions if run == poison.id} == set(range(1, LOST_REDISPATCHES + 2))
    # An innocent is logged lost only if it ran on the worker that died: its result can go down with
    # the worker (a TCP reset drops what the service had not read yet). One that never started, never.
    lost = [(e.run, e.attempt) for e in innocent_events if e.type == ev.COMMAND_FAILED]
    assert all(e.data["error"]["reason"] == "lost" for e in innocent_events if e.type == ev.COMMAND_FAILED)
    assert [key for key in lost if not executions[key]] == [], "an innocent that never ran was counted lost"
    assert len(lost) < LOST_REDISPATCHES + 2, f"{lost}: more than one per poison attempt"
    succeeded = [(e.run, e.attempt) for e in innocent_events if e.type == ev.COMMAND_SUCCEEDED]
    assert len(succeeded) == INNOCENTS and all(executions[key] >= 1 for key in succeeded)
    assert LOST_REDISPATCHES + 2 <= len(workers) <= MAX_WORKERS  # a worker per poison attempt, one lives
    assert handed_back >= INNOCENTS
    print(f"\npoison killed {len(workers) - 1} workers; {handed_back} unstarted calls handed on, none lost")


# --- a crash-looping service fails nothing that never started ----------------------------------


def test_a_call_queued_at_a_crash_looping_service_is_never_failed_by_the_restart_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each restart ends the call's attempt as interrupted and sends it again; it never ran, and its
    command runs in a worker (it cannot be what kills the service), so no number of restarts fails it."""
    monkeypatch.setenv("EVENFLOW_LOG_LEVEL", "info")  # the service says when a worker joins
    endpoint, home, ledger = free_endpoint(), tmp_path / "home", str(tmp_path / "ledger.jsonl")
    restarts = RESTART_REDISPATCHES + 2
    with ExitStack() as stack:
        served = stack.enter_context(service(endpoint, home, tmp_path, heartbeat_s=HEARTBEAT_S))
        stalled = stack.enter_context(worker(endpoint, tmp_path, heartbeat_s=HEARTBEAT_S))
        client = stack.enter_context(Client(endpoint))
        wait_until(lambda: "joined" in served.output(), timeout=READY_S, what="the worker joined")
        stalled.signal(signal.SIGSTOP)  # it holds what it is sent and starts nothing
        run = client.submit(call("ledgered", "done", ledger=ledger))
        wait_until(lambda: _dispatches(home, run) == 1, timeout=READY_S, what="the call dispatched")
        stalled.kill()
        for restart in range(1, restarts + 1):
            served.kill()
            served = stack.enter_context(service(endpoint, home, tmp_path, heartbeat_s=HEARTBEAT_S))
            wait_until(
                lambda: _dispatches(home, run) == restart + 1,  # noqa: B023 (polled within the turn)
                timeout=READY_S,
                what=f"restart {restart} sent the call again",
            )
        assert ledger_read(ledger) == []
        stack.enter_context(worker(endpoint, tmp_path, heartbeat_s=HEARTBEAT_S))
        result = client.result(run, timeout=SETTLE_S)
    events = read_log(home, run)
    interrupted = [e for e in events if e.type == ev.COMMAND_FAILED]
    assert result == "done"
    assert len(interrupted) == restarts
    assert all(e.data["error"]["type"].endswith(".Interrupted") for e in interrupted)
    assert [(e.run, e.attempt) for e in ledger_read(ledger)] == [(run, restarts + 1)]


def _dispatches(home: Path, run: str) -> int:
    return sum(1 for event in read_log(home, run) if event.type == ev.COMMAND_DISPATCHED)


# --- options registered on a worker apply behind evenflow serve --------------------------------


def test_a_workers_registered_retry_and_timeout_apply_behind_serve_unless_the_node_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVENFLOW_LOG_LEVEL", "info")  # the service says when a worker joins
    endpoint, home = free_endpoint(), tmp_path / "home"
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    with ExitStack() as stack:
        served = stack.enter_context(service(endpoint, home, tmp_path, heartbeat_s=HEARTBEAT_S))
        registry = "tests.fault.cap_commands:options_registry"
        stack.enter_context(worker(endpoint, tmp_path, registry=registry, heartbeat_s=HEARTBEAT_S))
        client = stack.enter_context(Client(endpoint))
        wait_until(lambda: "joined" in served.output(), timeout=READY_S, what="the worker joined")
        retried = client.submit(call("flaky", str(first)))
        assert client.result(retried, timeout=SETTLE_S) == "third time"
        overridden = client.submit(call("flaky", str(second)).options(retry=RetryPolicy.no_retry()))
        with pytest.raises(RunFailed, match="flaky attempt 1"):
            client.result(overridden, timeout=SETTLE_S)

        other = "tests.fault.cap_commands:other_options_registry"
        stack.enter_context(worker(endpoint, tmp_path, registry=other, heartbeat_s=HEARTBEAT_S))
        wait_until(
            lambda: "registered 'flaky' with options" in served.output(),
            timeout=READY_S,
            what="the conflict logged",
        )
        after = client.submit(call("flaky", str(tmp_path)))  # fails: tmp_path holds files already
        client_result = client.result(after, timeout=SETTLE_S)
    [spec] = [e.data["flow"]["nodes"][0] for e in read_log(home, retried) if e.type == ev.RUN_SUBMITTED]
    assert spec["retry"] == FLAKY_POLICY.to_doc() and spec["timeout_s"] == 90.0
    attempts = [e.attempt for e in read_log(home, retried) if e.type == ev.COMMAND_DISPATCHED]
    assert attempts == [1, 2, 3]
    [spec] = [e.data["flow"]["nodes"][0] for e in read_log(home, overridden) if e.type == ev.RUN_SUBMITTED]
    assert spec["retry"] == RetryPolicy.no_retry().to_doc() and spec["timeout_s"] == 90.0
    [spec] = [e.data["flow"]["nodes"][0] for e in read_log(home, after) if e.type == ev.RUN_SUBMITTED]
    assert spec["retry"] == FLAKY_POLICY.to_doc() and spec["timeout_s"] == 90.0  # the first announced
    assert client_result == "third time"
