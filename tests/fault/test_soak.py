"""Seeded random SIGKILL of an orchestrator on the embedded store, restarted on the same home each time.

An owner subprocess runs rounds of a chord (100 ``ledgered_work`` children and a callback that counts
and sums them), each round submitted under its own key so that every restart finds the same runs.
The test kills the owner at moments drawn from ``random.Random(seed)`` once the log shows work done
since the restart, snapshots every run read-only between kill and restart, and finally lets an owner
finish. Then: each round's result equals a direct evaluation (L6), L1, L4, L5, L9 (``check``), and
every snapshot is a prefix of the final log (L2).

Replay a failure with ``EVENFLOW_SOAK_SEED=<seed>`` (the seed is printed and in every message).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from orchestrator.core import events as ev
from orchestrator.core.errors import StoreUnavailable
from orchestrator.core.events import Event
from orchestrator.core.evolve import fold
from orchestrator.core.keys import run_for_key
from orchestrator.core.planner import RESTART_REDISPATCHES
from orchestrator.core.stored_names import INTERRUPTED
from orchestrator.store import open_store
from tests.commands import ledger_read
from tests.fault.soak_commands import Owners, count_and_sum
from tests.support.invariants import check
from tests.support.polling import wait_until

pytestmark = pytest.mark.slow

CHILDREN = 100
WORK_S = 0.01
"""Each child works a few ms, so a round lasts long enough for kills to land while children run."""
MIN_KILLS = 20
MAX_ROUNDS = 100
SOAK_S = 40.0
"""The kill phase must reach MIN_KILLS within this; the whole test stays well under a minute."""
MAX_EXTRA_S = 0.08
"""After the log shows progress, the kill comes a random 0..MAX_EXTRA_S later."""

OWNER = """
import os, sys
from orchestrator import Orchestrator, call, chord
from orchestrator.core.keys import run_for_key
from tests.fault.soak_commands import soak_registry

home, ledger, stop, executor = sys.argv[1:5]
children, rounds, work = int(sys.argv[5]), int(sys.argv[6]), float(sys.argv[7])
orch = Orchestrator(soak_registry(), executor=executor, home=home).start()
for i in range(rounds):
    key = f"soak-{i}"
    if os.path.exists(stop) and not orch.events(run_for_key(key)):
        break
    header = [call("ledgered_work", i * 1000 + j, work, ledger) for j in range(children)]
    run = orch.submit(chord(header, call("count_and_sum")), key=key)
    print(i, run.id, run.result(timeout=120), flush=True)
orch.close()
"""


def soak_seed() -> int:
    explicit = os.environ.get("EVENFLOW_SOAK_SEED")
    return int(explicit) if explicit else random.SystemRandom().randrange(2**32)


def round_run(i: int) -> str:
    return run_for_key(f"soak-{i}")


def expected(i: int, children: int = CHILDREN) -> dict[str, int]:
    """The pure reference: the callback applied to the values the children return."""
    return count_and_sum([i * 1000 + j for j in range(children)])


@dataclass
class Rounds:
    """The rounds' logs as the journal holds them, followed incrementally for cheap polling."""

    home: Path
    logs: dict[str, list[Event]] = field(default_factory=dict)

    def refresh(self) -> None:
        try:
            reader = open_store(None, home=self.home, read_only=True)
        except StoreUnavailable:  # no journal before the first owner creates it
            return
        try:
            for i in range(MAX_ROUNDS):
                run = round_run(i)
                known = self.logs.get(run, [])
                if known and any(e.type in ev.RUN_TERMINAL for e in known[-3:]):
                    continue
                new = reader.read(run, after_seq=len(known))
                if not known and not new:
                    return
                self.logs[run] = known + new
        finally:
            reader.close()

    def progress(self) -> int:
        """Outcomes accepted so far, over every round: grows only when the owner does real work."""
        self.refresh()
        done = (ev.COMMAND_SUCCEEDED, *ev.RUN_TERMINAL)
        return sum(1 for events in self.logs.values() for e in events if e.type in done)

    def wait_for_progress(self, process: subprocess.Popen[bytes], baseline: int, what: str) -> None:
        """Until an outcome beyond ``baseline`` is logged, or the owner ends."""
        wait_until(
            lambda: process.poll() is not None or self.progress() > baseline,
            timeout=20.0,
            what=what,
            every=0.005,
        )


def snapshot(home: Path, runs: list[str]) -> dict[str, list[Event]]:
    """Every run's log read afresh, read-only, while no owner runs."""
    reader = open_store(None, home=home, read_only=True)
    try:
        return {run: reader.read(run) for run in runs}
    finally:
        reader.close()


@pytest.fixture
def owners(tmp_path: Path) -> Iterator[Owners]:
    home, ledger, stop = tmp_path / "home", tmp_path / "ledger.jsonl", tmp_path / "stop"
    args = [str(home), str(ledger), str(stop), "threads://4", str(CHILDREN), str(MAX_ROUNDS), str(WORK_S)]
    made = Owners(OWNER, args, tmp_path / "logs")
    try:
        yield made
    finally:
        made.close()


def test_orchestrator_survives_seeded_random_sigkills(owners: Owners, tmp_path: Path) -> None:
    seed = soak_seed()
    print(f"\nsoak seed={seed} (replay with EVENFLOW_SOAK_SEED={seed})")
    rng = random.Random(seed)
    home, ledger, stop = tmp_path / "home", tmp_path / "ledger.jsonl", tmp_path / "stop"
    tag = f"[seed {seed}]"
    rounds = Rounds(home)
    target = rng.randint(MIN_KILLS, MIN_KILLS + 5)
    snapshots: list[dict[str, list[Event]]] = []
    kills = midflight = 0
    began = time.monotonic()

    while kills < target:
        elapsed = time.monotonic() - began
        assert elapsed < SOAK_S, f"{tag} only {kills} of {target} kills within {SOAK_S}s"
        baseline = rounds.progress()
        process = owners.start()
        what = f"{tag} restart {owners.started}: no outcome logged after the restart (kills so far: {kills})"
        rounds.wait_for_progress(process, baseline, what)
        assert process.poll() is None, f"{tag} owner {owners.started} ended by itself:\n{owners.output()}"
        threading.Event().wait(rng.uniform(0, MAX_EXTRA_S))  # the kill moment: the fault schedule
        status = owners.kill()
        assert status == -signal.SIGKILL, f"{tag} owner {owners.started} exited {status}:\n{owners.output()}"
        kills += 1
        rounds.refresh()
        taken = snapshot(home, list(rounds.logs))
        snapshots.append(taken)
        midflight += any(fold(run, events).running() for run, events in taken.items())
    kill_phase = time.monotonic() - began

    stop.touch()
    owners.start()
    status = owners.wait(60)
    assert status == 0, f"{tag} the last owner exited {status}:\n{owners.output()}"

    rounds = Rounds(home)
    rounds.refresh()
    final = snapshot(home, list(rounds.logs))
    entries = ledger_read(str(ledger))
    executions = dispatches = ignored = interrupted = 0
    for i, (run, events) in enumerate(final.items()):
        assert run == round_run(i), f"{tag} round {i} is missing from the log"
        try:
            tally = check(run, events, entries, ledgered_nodes=CHILDREN)
        except AssertionError as exc:
            raise AssertionError(f"{tag} round {i}: {exc}") from exc
        state = fold(run, events)
        assert state.status == "succeeded", f"{tag} round {i} ended {state.status}: {state.failures[:2]}"
        assert state.result == expected(i), f"{tag} L6: round {i} gave {state.result}, not {expected(i)}"
        executions += tally.executions
        dispatches += tally.dispatches
        ignored += tally.ignored
        interrupted += sum(1 for e in events if _interrupted(e))
    strays = {entry.run for entry in entries} - set(final)
    assert not strays, f"{tag} the ledger names runs that are not in the log: {sorted(strays)[:3]}"
    for k, taken in enumerate(snapshots, 1):
        for run, before in taken.items():
            after = final.get(run, [])[: len(before)]
            assert after == before, f"{tag} L2: the log of {run} before kill {k} is not a prefix of it after"
    assert midflight >= kills // 2, f"{tag} only {midflight} of {kills} kills landed with attempts in flight"

    print(
        f"soak seed={seed}: {kills} kills survived ({midflight} with attempts in flight), "
        f"{len(final)} rounds of {CHILDREN} children; "
        f"ledger executions {executions} vs logged dispatches {dispatches} "
        f"({interrupted} interrupted, {ignored} outcomes ignored); kill phase {kill_phase:.1f}s, "
        f"total {time.monotonic() - began:.1f}s"
    )


def _interrupted(event: Event) -> bool:
    return event.type == ev.COMMAND_FAILED and event.data.get("error", {}).get("type") == INTERRUPTED


# --- restarts that let the run progress never use up the interruption bound ---------------------

QUEUED_CHILDREN = 60
QUEUED_WORK_S = 0.02


@pytest.fixture
def queued_owners(tmp_path: Path) -> Iterator[Owners]:
    """One round (no more) on a single thread: most children wait in the executor's queue at any moment."""
    home, ledger, stop = tmp_path / "home", tmp_path / "ledger.jsonl", tmp_path / "stop"
    args = [str(home), str(ledger), str(stop), "threads://1", str(QUEUED_CHILDREN), "1", str(QUEUED_WORK_S)]
    made = Owners(OWNER, args, tmp_path / "logs")
    try:
        yield made
    finally:
        made.close()


def test_restarts_that_make_progress_do_not_fail_queued_nodes(queued_owners: Owners, tmp_path: Path) -> None:
    """RESTART_REDISPATCHES + 2 kills, each after the run made progress: the run must still succeed.

    Every restart ends *every* attempt the log shows in flight as Interrupted, also attempts that sat
    in the executor's queue and never started. Only restarts in a row without progress of the run
    count against a node; otherwise a wide group whose orchestrator restarts often, for reasons that
    have nothing to do with its commands, would fail nodes that never ran.
    """
    seed = soak_seed()
    print(f"\nseed={seed} (replay with EVENFLOW_SOAK_SEED={seed})")
    rng = random.Random(seed)
    tag = f"[seed {seed}]"
    home, ledger = tmp_path / "home", tmp_path / "ledger.jsonl"
    run = round_run(0)
    rounds = Rounds(home)
    kills = 0
    began = time.monotonic()
    for _ in range(RESTART_REDISPATCHES + 2):
        baseline = rounds.progress()
        process = queued_owners.start()
        what = f"{tag} no outcome logged after restart {queued_owners.started}"
        rounds.wait_for_progress(process, baseline, what)
        if process.poll() is not None or fold(run, rounds.logs[run]).finished:
            break
        threading.Event().wait(rng.uniform(0, 0.02))
        queued_owners.kill()
        kills += 1
    queued_owners.close()
    queued_owners.start()
    queued_owners.wait(60)  # it exits 1 if the run failed: the log says why, below

    events = snapshot(home, [run])[run]
    entries = ledger_read(str(ledger))
    state = fold(run, events)
    assert state.finished, f"{tag} L4: the run did not finish:\n{queued_owners.output()}"
    try:
        check(run, events, entries)  # L1, L4, L5 (one accepted outcome each), L9
    except AssertionError as exc:
        raise AssertionError(f"{tag} {exc}") from exc
    ran = {entry.node for entry in entries}
    never_ran = [f["node"] for f in state.failures if f["node"] not in ran]
    succeeded = sum(1 for e in events if e.type == ev.COMMAND_SUCCEEDED)
    print(
        f"seed={seed}: {kills} kills in {time.monotonic() - began:.1f}s; run {state.status}; "
        f"{len(state.failures)} nodes failed, {len(never_ran)} of them never executed; "
        f"{succeeded} children succeeded; {len(entries)} executions"
    )
    assert state.status == "succeeded", (
        f"{tag} after {kills} kills, each once the run made progress, the run {state.status}: "
        f"{len(state.failures)} nodes failed as Interrupted, {len(never_ran)} of which never executed "
        f"(e.g. {never_ran[:3]}): every restart charges every queued attempt (Engine._resume)"
    )
    assert state.result == expected(0, QUEUED_CHILDREN), f"{tag} L6: {state.result}"
    assert kills == RESTART_REDISPATCHES + 2, f"{tag} the run finished after {kills} kills; make it longer"
