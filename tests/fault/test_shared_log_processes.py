"""Several orchestrator processes sharing one MongoDB database, SIGKILLed at random (issue 14, finding 11).

The thread-based versions (``test_leases.py``, ``test_soak.py``) share one
store object inside one process; here each orchestrator is its own process
with its own client, as in production. ``PROCESSES`` owners each submit the
same ``ROUNDS`` chords under the same keys (a race the log must settle: one
run per key), then serve until told to stop. The test SIGKILLs one owner at a
moment drawn from ``random.Random(seed)`` once the log shows progress, starts
it again at once (a new orchestrator id), and snapshots every run after each
kill; survivors take the dead owner's runs over when its lease runs out.

Then: one run per key and no other run (L3), each run's result equals a
direct evaluation (L6), L1, L4, L5 and L9 against the external ledger the
commands write (``check``), and every snapshot is a prefix of the final log
(L2). Replay a failure with ``EVENFLOW_SOAK_SEED=<seed>``.

It needs a real server, shared by the processes: it runs in the server lane
(``tests/support/stores.py``) and is skipped otherwise, with ``HOW_TO_RUN``.
"""

from __future__ import annotations

import functools
import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from orchestrator.core import events as ev
from orchestrator.core.events import Event
from orchestrator.core.evolve import fold
from orchestrator.core.keys import run_for_key
from orchestrator.store import open_store
from tests.commands import ledger_read
from tests.fault.soak_commands import Owners, count_and_sum
from tests.support.invariants import check, check_prefix
from tests.support.polling import wait_until
from tests.support.stores import MONGODB_URL, database_url, server_database

HOW_TO_RUN = (
    "needs one MongoDB server shared by several processes: set EVENFLOW_TEST_MONGODB_URL to its URL "
    "(a replica set for majority writes, e.g. mongodb://localhost:27017/?replicaSet=rs0 from "
    "ops/replica-set; its user may create and drop databases) and run "
    "`pytest -m mongodb tests/fault/test_shared_log_processes.py`"
)

pytestmark = [pytest.mark.slow, pytest.mark.mongodb, pytest.mark.skipif(not MONGODB_URL, reason=HOW_TO_RUN)]

PROCESSES = 3
ROUNDS = 12
CHILDREN = 50
WORK_S = 0.1
"""A child's work: ROUNDS * CHILDREN * WORK_S / (PROCESSES * 4 threads) is at least 5 s of work in all,
so the kills land while children run, however fast the server."""
KILLS = 8
"""Fewer than RESTART_REDISPATCHES: even a run whose owner every kill hits may not fail a node."""
LEASE_S = 1.0
"""Short, so a dead owner's runs are taken over within seconds; renewed every LEASE_S / 5."""
MAX_EXTRA_S = 0.3
"""After the log shows progress, the kill comes a random 0..MAX_EXTRA_S later."""
DEADLINE_S = 180.0

OWNER = """
import os, sys, threading
from orchestrator import Orchestrator, call, chord
from tests.fault.soak_commands import soak_registry

url, ledger, stop = sys.argv[1:4]
rounds, children, work, lease = int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6]), float(sys.argv[7])
orch = Orchestrator(soak_registry(), executor="threads://4", store=url, lease_s=lease).start()
for i in range(rounds):
    header = [call("ledgered_work", i * 1000 + j, work, ledger) for j in range(children)]
    run = orch.submit(chord(header, call("count_and_sum")), key=f"shared-{i}")
    print(i, run.id, flush=True)
pause = threading.Event()
while not os.path.exists(stop):
    pause.wait(0.05)  # serving: its engine drives and takes over runs meanwhile
orch.close()
print("stopped", flush=True)
"""


def seed() -> int:
    explicit = os.environ.get("EVENFLOW_SOAK_SEED")
    return int(explicit) if explicit else random.SystemRandom().randrange(2**32)


def round_run(i: int) -> str:
    return run_for_key(f"shared-{i}")


def expected(i: int) -> dict[str, int]:
    return count_and_sum([i * 1000 + j for j in range(CHILDREN)])


@dataclass
class Shared:
    """The database the owners share, read by the test through a read-only store of its own."""

    url: str
    database: Any
    reader: Any = field(init=False)

    def __post_init__(self) -> None:
        self.reader = open_store(self.url, read_only=True)

    def logs(self) -> dict[str, list[Event]]:
        return {round_run(i): self.reader.read(round_run(i)) for i in range(ROUNDS)}

    def progress(self) -> int:
        """Outcomes accepted so far: grows only when some owner does real work."""
        done = [ev.COMMAND_SUCCEEDED, *sorted(ev.RUN_TERMINAL)]
        return int(self.database["events"].count_documents({"type": {"$in": done}}))

    def progressed(self, since: int) -> bool:
        return self.progress() > since

    def submitted(self) -> int:
        return int(self.database["events"].count_documents({"type": ev.RUN_SUBMITTED}))

    def finished(self) -> int:
        return int(self.database["events"].count_documents({"type": {"$in": sorted(ev.RUN_TERMINAL)}}))


@pytest.fixture
def shared() -> Iterator[Shared]:
    with server_database("evenflow_processes") as database:
        made = Shared(database_url(database.name), database)
        try:
            yield made
        finally:
            made.reader.close()


@pytest.fixture
def owners(shared: Shared, tmp_path: Path) -> Iterator[list[Owners]]:
    ledger, stop = tmp_path / "ledger.jsonl", tmp_path / "stop"
    args = [shared.url, str(ledger), str(stop), str(ROUNDS), str(CHILDREN), str(WORK_S), str(LEASE_S)]
    made = [Owners(OWNER, args, tmp_path / f"owner-{slot}") for slot in range(PROCESSES)]
    try:
        yield made
    finally:
        for owner in made:
            owner.close()


def test_orchestrator_processes_sharing_one_database_survive_random_sigkills(
    shared: Shared, owners: list[Owners], tmp_path: Path
) -> None:
    chosen = seed()
    tag = f"[seed {chosen}]"
    print(f"\nshared-log seed={chosen} (replay with EVENFLOW_SOAK_SEED={chosen})")
    rng = random.Random(chosen)
    for owner in owners:
        owner.start()
    wait_until(lambda: shared.submitted() >= ROUNDS, timeout=60, what=f"{tag} the rounds submitted")

    snapshots: list[dict[str, list[Event]]] = []
    kills = 0
    began = time.monotonic()
    while kills < KILLS:
        assert shared.finished() < ROUNDS, f"{tag} every round ended after {kills} kills: make rounds longer"
        progressed = functools.partial(shared.progressed, shared.progress())
        wait_until(progressed, timeout=60, what=f"{tag} progress after {kills} kills")
        threading.Event().wait(rng.uniform(0, MAX_EXTRA_S))  # the kill moment: the fault schedule
        victim = owners[rng.randrange(PROCESSES)]
        status = victim.kill()
        assert status == -signal.SIGKILL, f"{tag} an owner exited {status} by itself:\n{victim.output()}"
        kills += 1
        snapshots.append(shared.logs())
        victim.start()  # a new orchestrator: the old one's lease is left to expire
    kill_phase = time.monotonic() - began

    wait_until(lambda: shared.finished() >= ROUNDS, timeout=DEADLINE_S, what=f"{tag} L4: every round ended")
    (tmp_path / "stop").touch()
    for slot, owner in enumerate(owners):
        status = owner.wait(60)
        assert status == 0, f"{tag} owner {slot} exited {status} when stopped:\n{owner.output()}"

    final = shared.logs()
    runs = set(shared.database["events"].distinct("run"))
    assert runs == set(final), f"{tag} L3: runs besides one per key: {sorted(runs - set(final))[:3]}"
    entries = ledger_read(str(tmp_path / "ledger.jsonl"))
    totals = {"executions": 0, "dispatches": 0, "ignored": 0}
    for i, (run, events) in enumerate(final.items()):
        submitted = [e for e in events if e.type == ev.RUN_SUBMITTED]
        assert len(submitted) == 1, f"{tag} L3: round {i} submitted {len(submitted)} times"
        try:
            tally = check(run, events, entries, ledgered_nodes=CHILDREN)  # L1, L4, L5, L9
        except AssertionError as exc:
            raise AssertionError(f"{tag} round {i}: {exc}") from exc
        state = fold(run, events)
        assert state.status == "succeeded", f"{tag} round {i} ended {state.status}: {state.failures[:2]}"
        assert state.result == expected(i), f"{tag} L6: round {i} gave {state.result}"
        for name in totals:
            totals[name] += getattr(tally, name)
    strays = {entry.run for entry in entries} - set(final)
    assert not strays, f"{tag} the ledger names runs that are not in the log: {sorted(strays)[:3]}"
    for k, taken in enumerate(snapshots, 1):
        for run, before in taken.items():
            try:
                check_prefix(run, before, final[run])  # L2
            except AssertionError as exc:
                raise AssertionError(f"{tag} after kill {k}: {exc}") from exc

    takeovers = sum(1 for events in final.values() for e in events if e.type == ev.OWNER_CHANGED)
    drivers = {e.by for events in final.values() for e in events if e.type == ev.COMMAND_DISPATCHED}
    print(
        f"shared-log seed={chosen}: {kills} kills of {PROCESSES} processes in {kill_phase:.1f}s, "
        f"{takeovers} takeovers, {len(drivers)} orchestrators dispatched; {ROUNDS} rounds of {CHILDREN}: "
        f"ledger executions {totals['executions']} vs logged dispatches {totals['dispatches']} "
        f"({totals['ignored']} outcomes ignored)"
    )
