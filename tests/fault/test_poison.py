"""A poison command, one that SIGKILLs whatever process runs it, every time.

(a) In a worker process (``processes://2``): each attempt ends ``WorkerLost`` and is sent again at once,
    LOST_REDISPATCHES times; then the node fails, the run fails, and the orchestrator runs on.
(b) Inline, in the orchestrator itself: the poison kills the orchestrator. Each restart ends the attempt
    in flight as ``Interrupted`` and sends it again, RESTART_REDISPATCHES times; the restart after that
    fails the node and the run, so a crash loop ends by itself.

Both check L1, L4, L5 and L9 against the external ledger the poison writes before it kills.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator import Orchestrator, RunFailed, call, chord
from orchestrator.core import events as ev
from orchestrator.core.events import Event
from orchestrator.core.evolve import fold
from orchestrator.core.keys import run_for_key
from orchestrator.core.planner import LOST_REDISPATCHES, RESTART_REDISPATCHES
from orchestrator.core.stored_names import INTERRUPTED
from tests.commands import ledger_read
from tests.fault.soak_commands import Owners, count_and_sum, soak_registry
from tests.support.invariants import check
from tests.support.logs import read_log

pytestmark = pytest.mark.slow

WORKER_LOST = "orchestrator.core.errors.WorkerLost"


def failures_of(events: list[Event], node: str) -> list[str]:
    """The error type of every failed attempt of ``node``, in order."""
    return [e.data["error"]["type"] for e in events if e.type == ev.COMMAND_FAILED and e.node == node]


def dispatches_of(events: list[Event], node: str) -> list[int]:
    return [e.attempt or 0 for e in events if e.type == ev.COMMAND_DISPATCHED and e.node == node]


# --- (a) the poison in a worker process ---------------------------------------------------------


@pytest.fixture
def orchestrator(tmp_path: Path) -> Iterator[Orchestrator]:
    orch = Orchestrator(soak_registry(), executor="processes://2", home=tmp_path / "home")
    try:
        yield orch.start()
    finally:
        orch.close()


def test_poison_in_a_worker_process_fails_its_node_after_bounded_attempts(
    orchestrator: Orchestrator, tmp_path: Path
) -> None:
    ledger = str(tmp_path / "ledger.jsonl")
    run = orchestrator.submit(call("ledgered_kill_self", ledger))
    with pytest.raises(RunFailed) as caught:
        run.result(timeout=60)
    assert [f.type for f in caught.value.failures] == [WORKER_LOST], str(caught.value)

    events = orchestrator.events(run.id)
    tally = check(run.id, events, ledger_read(ledger), ledgered_nodes=1)
    attempts = LOST_REDISPATCHES + 1
    assert dispatches_of(events, "r") == list(range(1, attempts + 1)), "attempts are not bounded"
    assert failures_of(events, "r") == [WORKER_LOST] * attempts
    assert tally.executions == attempts, f"{tally.executions} executions of {attempts} dispatches"
    state = fold(run.id, events)
    assert (state.status, state.failures[0]["type"]) == ("failed", WORKER_LOST)

    # the orchestrator (and a fresh pool) go on: another flow runs to its right result
    header = [call("ledgered_work", i, 0.0, ledger) for i in range(10)]
    after = orchestrator.submit(chord(header, call("count_and_sum")))
    assert after.result(timeout=60) == count_and_sum(list(range(10)))
    check(after.id, orchestrator.events(after.id), ledger_read(ledger), ledgered_nodes=10)
    print(
        f"\npoison in a worker: {tally.dispatches} dispatches, {tally.executions} executions, "
        f"then the next run succeeded"
    )


# --- (b) the poison inline: it kills the orchestrator ---------------------------------------------

OWNER = """
import sys
from orchestrator import Orchestrator, RunFailed, call
from tests.fault.soak_commands import soak_registry

home, ledger = sys.argv[1:3]
orch = Orchestrator(soak_registry(), executor="inline", home=home).start()
run = orch.submit(call("ledgered_kill_self", ledger), key="poison")
try:
    run.result(timeout=60)
    print("succeeded", flush=True)
except RunFailed as exc:
    print("failed", [f.type for f in exc.failures], flush=True)
print("after", orch.run(call("inc", 41), timeout=60), flush=True)
orch.close()
"""

MAX_LAUNCHES = RESTART_REDISPATCHES + 4
"""The crash loop must end by itself well before this many starts."""


@pytest.fixture
def owners(tmp_path: Path) -> Iterator[Owners]:
    made = Owners(OWNER, [str(tmp_path / "home"), str(tmp_path / "ledger.jsonl")], tmp_path / "logs")
    try:
        yield made
    finally:
        made.close()


def test_poison_inline_crash_loop_of_the_orchestrator_ends_with_a_failed_run(
    owners: Owners, tmp_path: Path
) -> None:
    deaths = 0
    for _ in range(MAX_LAUNCHES):
        owners.start()
        status = owners.wait(60)
        if status != -signal.SIGKILL:
            break
        deaths += 1
    assert status == 0, f"the owner ended {status} after {deaths} crashes:\n{owners.output()}"
    out = owners.output("out")
    assert f"failed ['{INTERRUPTED}']" in out, f"the run did not fail as Interrupted:\n{out}"
    assert "after 42" in out, f"the orchestrator did not run the next flow:\n{out}"

    run = run_for_key("poison")
    events = read_log(tmp_path / "home", run)
    ledger = ledger_read(str(tmp_path / "ledger.jsonl"))
    tally = check(run, events, ledger, ledgered_nodes=1)
    attempts = RESTART_REDISPATCHES + 1
    assert deaths == attempts, f"{deaths} orchestrator deaths, not {attempts}: the crash loop is unbounded"
    assert dispatches_of(events, "r") == list(range(1, attempts + 1))
    assert failures_of(events, "r") == [INTERRUPTED] * attempts, "each restart logs the attempt Interrupted"
    assert sorted(entry.attempt for entry in ledger) == list(range(1, attempts + 1)), "one execution each"
    state = fold(run, events)
    assert (state.status, state.failures[0]["type"]) == ("failed", INTERRUPTED)
    print(
        f"\npoison inline: {deaths} orchestrator deaths, {owners.started} starts, "
        f"{tally.dispatches} dispatches, {tally.executions} executions, run {state.status}"
    )
