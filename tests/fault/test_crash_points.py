"""Every named crash point, with every executor: SIGKILL the orchestrator there, restart it, lose nothing.

For each point of ``orchestrator.core.crashpoints.POINTS`` and each executor
(``inline``, ``processes://2``, remote ``zmq`` workers), a real orchestrator
process on the embedded store runs ``crash_flow`` (a chord of four ledgered
calls, one failing once and retried after a timer, one behind a gate file,
then a ledgered callback) with ``EVENFLOW_CRASH_AT`` naming the point, and must
die by SIGKILL there. An orchestrator restarted on the same home (in this test
process) must finish the run, and then RELIABILITY.md's L1, L2, L4, L5, L6, L7
and L9 must hold (``tests.support.invariants``), the attempts in flight at the
crash must have ended as ``Interrupted``, and a retry timer pending at the crash
must not fire before its logged due time.

Each point is armed early (``point@N`` with N small, where what the log holds
after the crash is known exactly) and, where a run passes it more than once,
late (still before the run's end however turns batch); see ``WHERES``. For
zmq the orchestrator is ``evenflow serve`` with an ``evenflow worker``; the
restart binds the same endpoint in this process, and the worker reconnects.

``after-lease-acquired`` fires when an orchestrator takes its store over, at
start-up: the test SIGKILLs a first orchestrator while a command waits on a
gate, a second one armed with the point dies as it takes the store over
(appending nothing), and a third finishes the run. The same test also kills
the second orchestrator right after its take-over turn is logged
(``after-append-before-dispatch@1``): a crash during recovery.

What this matrix cannot reach: it runs on the embedded store only (a
kill-and-restart test needs a store that outlives the process; mongomock does
not), so ``mid-batch`` fires in ``EmbeddedStore._commit`` (a SQLite transaction:
all of the batch or none) and not in ``MongoStore``'s half-written
``insert_many``, and ``after-lease-acquired`` fires at the embedded owner lock,
not in ``Leases.tick`` (MongoDB leases). Those need a real server.

Figures (executions from the external ledger vs logged dispatches, outcomes
ignored as late or duplicate) are printed per case and summed at the end;
``pytest -s`` shows them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from orchestrator import Orchestrator
from orchestrator.core import events as ev
from orchestrator.core.crashpoints import CRASH_ENV, POINTS
from orchestrator.core.events import Event
from orchestrator.core.evolve import fold
from orchestrator.core.flows import encode_flow
from orchestrator.core.state import RunState
from orchestrator.store import open_store
from orchestrator.transport.connection import Connection
from tests.commands import LedgerEntry, ledger_read
from tests.fault.crash_commands import (
    EXPECTED,
    GATE_NODE,
    LEDGERED_NODES,
    PLAN,
    REFERENCE,
    crash_flow,
    make_registry,
)
from tests.support.invariants import Tally, check, check_prefix, check_replay, check_result
from tests.support.logs import read_log
from tests.support.polling import wait_until
from tests.support.zmq_cluster import READY_S, free_endpoint
from workers.zmq import ZmqExecutor

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
EXECUTORS = ("inline", "processes://2", "zmq")
LEASE = "after-lease-acquired"
LISTENER = "listener-after-trigger-before-checkpoint"
"""Fires only where a listener triggers: tests/fault/test_listener_faults.py crashes there."""
HEARTBEAT_S = 0.2
LIVENESS = 3
DEATH_S = 30.0
"""How long an armed process may take to reach its crash point."""
TERMINAL_S = 60.0
"""L4: how long the restarted orchestrator may take to finish the run."""
REGISTRY = "tests.fault.crash_commands:make_registry"
CHILD = "import sys; from tests.fault.crash_commands import main; main(sys.argv[1:])"


@dataclass(frozen=True)
class Where:
    """Where a point is armed to fire in the run, and what must be true once it fired."""

    spec: str
    """The value of ``EVENFLOW_CRASH_AT``: ``point@N`` fires on the N-th pass."""
    why: str
    answered: bool | None = None
    """Whether the submitter learns the run id before the crash (None: it may or may not)."""
    outcomes_logged: bool | None = None
    """Whether the log left behind holds an outcome (None: depends on how outcomes batch)."""
    executed: bool | None = None
    """Whether some command ran before the crash (None: depends on the executor's timing)."""
    log: tuple[str, ...] | None = None
    """The event types the log must hold exactly after the crash (None: depends on batching)."""

    @property
    def point(self) -> str:
        return self.spec.partition("@")[0]


SUBMISSION = (ev.RUN_SUBMITTED, *[ev.COMMAND_DISPATCHED] * 4)
"""The submission's batch: the run and the dispatches of the chord's four header calls."""

# Each point fires early, where what the log holds is known exactly, and (where the point is passed
# more than once per run) late. A late pass is still before the run's end, however turns batch:
# the run needs at least 6 turns (submission, the flaky node's failure, its retry timer, its retry's
# outcome with the callback's dispatch, the callback's outcome with run.succeeded), 5 appends, 3
# turns with outcomes and 6 outcomes; extra turns only bring a pass earlier.
WHERES = (
    Where(
        "after-append-before-dispatch@2",
        "pass 1 is the empty take-over turn at start-up; pass 2 is the submission's turn: run.submitted "
        "and the four dispatches are durable, nothing has been sent",
        answered=False,
        outcomes_logged=False,
        executed=False,
        log=SUBMISSION,
    ),
    Where(
        "after-append-before-dispatch@5",
        "a later turn, the retry's or the callback's dispatch logged and not sent",
        outcomes_logged=True,
        executed=True,
    ),
    Where(
        "after-outcome-before-append@1",
        "the first outcome is taken from the inbox and dies with the process before it is logged",
        outcomes_logged=False,
        executed=True,
        log=SUBMISSION,
    ),
    Where(
        "after-outcome-before-append@3",
        "the third outcome received dies unlogged (with its turn's others)",
        executed=True,
    ),
    Where(
        "mid-batch@2",
        "append 1 is the submission's batch; append 2 (the first outcomes) dies inside its SQLite "
        "transaction before COMMIT: none of that batch may survive",
        outcomes_logged=False,
        executed=True,
        log=SUBMISSION,
    ),
    Where(
        "mid-batch@4",
        "the fourth append, at the latest the flaky node's retry outcome, dies before COMMIT",
        outcomes_logged=True,
        executed=True,
    ),
    Where(
        "after-append-before-ack@1",
        "the first outcomes are logged (with inline the flaky node's failure among them, so its retry "
        "timer is pending), nothing is acknowledged to the executor",
        outcomes_logged=True,
        executed=True,
    ),
    Where(
        "after-append-before-ack@2",
        "the second turn with outcomes is logged and not acknowledged",
        outcomes_logged=True,
        executed=True,
    ),
    Where(
        "after-submit-append-before-answer@1",
        "run.submitted and the dispatches are durable and sent; the submitter never hears the id "
        "(the only pass: one submission per run)",
        answered=False,
        outcomes_logged=False,
        log=SUBMISSION,
    ),
)


# --- processes ----------------------------------------------------------------------------------


@dataclass
class Procs:
    """Every process a test starts, each in its own session: killed with its group and reaped at the end."""

    tmp: Path
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, argv: list[str], name: str, crash: str | None = None) -> Proc:
        env = {key: value for key, value in os.environ.items() if key != CRASH_ENV}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        if crash is not None:
            env[CRASH_ENV] = crash
        log = self.tmp / f"{name}-{time.monotonic_ns()}.log"
        with log.open("wb") as sink:
            popen = subprocess.Popen(
                [sys.executable, *argv],
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=REPO,
                start_new_session=True,
            )
        self.started.append(popen)
        return Proc(popen, log, name)

    def close(self) -> None:
        for popen in self.started:
            # the group: a process pool's children and its forkserver outlive a SIGKILLed parent
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(popen.pid, signal.SIGKILL)
            popen.kill()
            popen.wait(timeout=30)


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    log: Path
    name: str

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def lines(self) -> list[str]:
        return [line.strip() for line in self.output().splitlines() if line.strip()]

    def alive(self) -> bool:
        return self.popen.poll() is None

    def sigkill(self) -> None:
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=30)

    def died_by_sigkill(self, why: str) -> None:
        """Until the process is gone (bounded); it must have died by SIGKILL, not exited."""
        wait_until(lambda: not self.alive(), timeout=DEATH_S, what=f"{self.name} gone ({why})")
        code = self.popen.returncode
        assert code == -signal.SIGKILL, (
            f"{self.name} should have died by SIGKILL ({why}) but ended with {code}:\n{self.output()[-3000:]}"
        )


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    started = Procs(tmp_path)
    try:
        yield started
    finally:
        started.close()


@dataclass(frozen=True)
class Tallied:
    where: str
    executor: str
    tally: Tally
    before: int
    """Executions in the ledger when the restarted orchestrator took over."""
    resumed: Resumed

    def __str__(self) -> str:
        t, r = self.tally, self.resumed
        ignored = ", ".join(f"{n} {reason}" for reason, n in sorted(r.ignored.items())) or "0"
        return (
            f"{self.where:41} {self.executor:13} {t.executions:2} executions ({self.before} before the "
            f"restart) vs {t.dispatches:2} dispatches; {r.interrupted} interrupted, {r.retries} retry "
            f"pending; ignored: {ignored}"
        )


FIGURES: list[Tallied] = []


@pytest.fixture(scope="module", autouse=True)
def figures() -> Iterator[None]:
    """Print the whole matrix's figures once the module is done (``pytest -s`` shows them)."""
    yield
    if not FIGURES:
        return
    print("\ncrash points: where / executor: executions vs logged dispatches")
    for row in FIGURES:
        print(f"  {row}")
    executions = sum(row.tally.executions for row in FIGURES)
    dispatches = sum(row.tally.dispatches for row in FIGURES)
    ignored = sum(row.tally.ignored for row in FIGURES)
    print(
        f"  total over {len(FIGURES)} cases: {executions} executions vs {dispatches} dispatches, "
        f"{ignored} outcomes ignored"
    )


# --- one case: a home, a ledger, a gate and (for zmq) an endpoint with its worker -----------------


@dataclass
class Case:
    executor: str
    tmp: Path
    procs: Procs
    endpoint: str = field(default_factory=free_endpoint)
    worker: Proc | None = None

    @property
    def home(self) -> Path:
        return self.tmp / "home"

    @property
    def ledger(self) -> str:
        return str(self.tmp / "ledger.jsonl")

    @property
    def gate(self) -> Path:
        return self.tmp / "gate"

    @property
    def zmq(self) -> bool:
        return self.executor == "zmq"

    def executions(self) -> list[LedgerEntry]:
        return ledger_read(self.ledger)

    def orchestrator(self, crash: str | None = None) -> Proc:
        """Start an orchestrator process that submits ``crash_flow``: ``evenflow serve`` plus a worker
        for zmq (the flow is submitted by ``submit_remote``), else a Python child that submits it."""
        if not self.zmq:
            args = ["first", str(self.home), self.executor, self.ledger, str(self.gate)]
            return self.procs.start(["-c", CHILD, *args], "first", crash)
        serve = self.serve("serve", crash)
        if self.worker is None:
            args = ["worker", "--connect", self.endpoint, "--registry", REGISTRY, "--concurrency", "4"]
            self.worker = self.procs.start(
                ["-m", "orchestrator.cli", *args, "--heartbeat", str(HEARTBEAT_S)], "worker"
            )
        return serve

    def serve(self, name: str, crash: str | None) -> Proc:
        args = ["serve", "--bind", self.endpoint, "--home", str(self.home), "--heartbeat", str(HEARTBEAT_S)]
        serve = self.procs.start(["-m", "orchestrator.cli", *args], name, crash)
        wait_until(
            lambda: "serving on" in serve.output() or not serve.alive(),
            timeout=DEATH_S,
            what=f"{name} serving, or gone",
        )
        return serve

    def resume(self, crash: str) -> Proc:
        """A process that takes the store over and finishes what is unfinished (for zmq: ``serve``)."""
        if self.zmq:
            return self.procs.start(
                ["-m", "orchestrator.cli", "serve", "--bind", self.endpoint, "--home", str(self.home)],
                "resume",
                crash,
            )
        return self.procs.start(["-c", CHILD, "resume", str(self.home), self.executor], "resume", crash)

    def submitted(self, first: Proc) -> str | None:
        """The run id the first process printed, if it got that far."""
        lines = [line for line in first.lines() if len(line) == 32 and line.isalnum()]
        return lines[0] if lines else None

    def restarted(self) -> Orchestrator:
        """An orchestrator on the same home in this process (with its own hub on the same endpoint)."""
        if self.zmq:
            executor = ZmqExecutor(self.endpoint, heartbeat_s=HEARTBEAT_S, liveness=LIVENESS)
            return Orchestrator(None, executor=executor, home=self.home)
        return Orchestrator(make_registry(), executor=self.executor, home=self.home)


def submit_remote(case: Case, serve: Proc) -> str | None:
    """Submit ``crash_flow`` as ``Client.submit`` does; the run id, or None if the service died first.

    The answer is awaited only while the service lives: a service killed before it
    answers leaves a client nothing to wait for.
    """
    connection = Connection(case.endpoint)
    try:
        flow = encode_flow(crash_flow(case.ledger, str(case.gate)))
        req = connection.send("submit", flow=flow, name=None, wait=False, wait_for_worker=READY_S)

        def answer_or_death() -> dict[str, Any] | str | None:
            return connection.wait(req, 0.02) or (None if serve.alive() else "dead")

        reply = wait_until(
            answer_or_death, timeout=DEATH_S, what="the submission answered, or the service gone"
        )
        if reply == "dead":  # take a reply it sent just before it died, if one is on its way
            reply = connection.wait(req, 0.2)
    finally:
        connection.close()
    if reply is None:
        return None
    assert isinstance(reply, dict) and reply.get("ok"), f"the service refused the submission: {reply}"
    return str(reply["run"])


def unfinished(home: Path) -> list[str]:
    reader = open_store(None, home=home, read_only=True)
    try:
        return reader.unfinished_runs()
    finally:
        reader.close()


OUTCOMES = (ev.COMMAND_SUCCEEDED, ev.COMMAND_FAILED, ev.COMMAND_EXPANDED)


def types(events: list[Event]) -> list[str]:
    return [event.type for event in events]


# --- restart, finish, check -----------------------------------------------------------------------


@dataclass(frozen=True)
class Resumed:
    """What the restart found and did."""

    interrupted: int
    """Attempts in flight at the crash, ended as ``Interrupted`` by the restart."""
    retries: int
    """Retry timers pending at the crash, fired no earlier than their logged due time."""
    ignored: dict[str, int]
    """Outcomes logged as ``outcome.ignored``, by reason (late, duplicate)."""


def finish_and_check(
    case: Case, run: str, before: list[Event], crashed: list[Event] | None = None
) -> tuple[Tally, Resumed]:
    """Restart on the same home, wait for ``run`` (bounded), then check L1 L2 L4 L5 L6 L7 L9.

    ``before`` is the log as the last crash left it; ``crashed`` (default: the same) the log
    when the run's orchestrator died, whose attempts in flight must end interrupted once.
    """
    orch = case.restarted()
    live: RunState | None = None
    try:
        orch.start()
        result = orch.result(run, timeout=TERMINAL_S)  # L4
        live = orch.engine.book.recent.get(run) or orch.engine.book.live.get(run)
    finally:
        orch.close()  # no append after this: the live state is final
    assert result == EXPECTED
    assert live is not None and live.finished, f"the restarted engine does not hold {run} as finished"
    events = read_log(case.home, run)
    check_result(run, events[0].data["flow"], result, REFERENCE, PLAN)  # L6
    check_prefix(run, before, events)  # L2
    tally = check(run, events, case.executions(), ledgered_nodes=LEDGERED_NODES)  # L1 L4 L5 L9
    check_replay(case.home, {run: live})  # L7
    return tally, check_resumed(run, before if crashed is None else crashed, events)


def check_resumed(run: str, before: list[Event], events: list[Event]) -> Resumed:
    """The restart ended each attempt in flight as ``Interrupted`` and kept each retry's logged due time."""
    crashed = fold(run, before)
    after = events[len(before) :]
    in_flight = crashed.running()
    for node in in_flight:
        ended = [
            e
            for e in after
            if e.type == ev.COMMAND_FAILED and e.node == node.path and e.attempt == node.attempt
        ]
        assert len(ended) == 1, (
            f"attempt {node.attempt} of {node.path}, in flight at the crash, did not end once"
        )
        assert ended[0].data["error"]["type"].endswith(".Interrupted"), ended[0].data
    pending = {path: due for path, due in crashed.timers.items() if crashed.nodes[path].status == "waiting"}
    for path, due in pending.items():
        again = [e for e in after if e.type == ev.COMMAND_DISPATCHED and e.node == path]
        assert again, f"the retry of {path} pending at the crash was never sent"
        assert again[0].at >= due, (
            f"the retry of {path} was sent at {again[0].at}, before it was due at {due}"
        )
    reasons = Counter(str(e.data.get("reason")) for e in events if e.type == ev.OUTCOME_IGNORED)
    return Resumed(len(in_flight), len(pending), dict(reasons))


def record(where: str, case: Case, tally: Tally, before: int, resumed: Resumed) -> None:
    row = Tallied(where, case.executor, tally, before, resumed)
    FIGURES.append(row)
    print(f"\n{row}")


# --- the tests ------------------------------------------------------------------------------------


def test_every_crash_point_has_a_case() -> None:
    """A new crash point must get a place in this matrix, not slip past it."""
    prune = "prune-batch"  # killed between a prune's batches: tests/integration/test_prune.py
    assert set(POINTS) == {where.point for where in WHERES} | {LEASE, LISTENER, prune}


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("where", WHERES, ids=[where.spec for where in WHERES])
def test_a_crash_at_a_named_point_loses_nothing(
    where: Where, executor: str, tmp_path: Path, procs: Procs
) -> None:
    case = Case(executor, tmp_path, procs)
    case.gate.touch()  # nothing waits here: the gate is for the lease test

    first = case.orchestrator(crash=where.spec)
    answered = submit_remote(case, first) if case.zmq else None
    first.died_by_sigkill(where.why)
    answered = answered or case.submitted(first)

    runs = unfinished(case.home)
    assert len(runs) == 1, f"expected the one submitted run unfinished in the store, found {runs}"
    [run] = runs
    if where.answered is False:
        assert answered is None, f"the submitter learned {answered} although the crash came before the answer"
    elif answered is not None:
        assert answered == run
    before = read_log(case.home, run)
    executed = case.executions()
    logged = [e for e in before if e.type in OUTCOMES]
    assert types(before)[:1] == [ev.RUN_SUBMITTED] and ev.COMMAND_DISPATCHED in types(before), types(before)
    assert not any(e.type in ev.RUN_TERMINAL for e in before), "the crash came after the run finished"
    if where.outcomes_logged is not None:
        assert bool(logged) == where.outcomes_logged, f"{where.why}; the log holds {types(before)}"
    if where.executed is not None:
        assert bool(executed) == where.executed, f"{where.why}; the ledger holds {executed}"
    if where.log is not None:
        assert tuple(types(before)) == where.log, f"{where.why}; the log holds {types(before)}"

    tally, resumed = finish_and_check(case, run, before)
    record(where.spec, case, tally, len(executed), resumed)


SECOND = {
    LEASE: "the owner lock of the embedded store is its lease; the point fires once it is held, before "
    "anything is read or appended",
    "after-append-before-dispatch@1": "pass 1 is the take-over turn: the attempts in flight are logged as "
    "interrupted, their new attempts are neither decided nor sent",
}
"""How the second, restarting orchestrator dies, and why there."""


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("second_at", list(SECOND))
def test_a_crash_while_taking_the_store_over_loses_nothing(
    second_at: str, executor: str, tmp_path: Path, procs: Procs
) -> None:
    """Kill a first orchestrator mid-run; a second dies as it takes the store over; a third finishes."""
    case = Case(executor, tmp_path, procs)
    first = case.orchestrator()
    answered = submit_remote(case, first) if case.zmq else None
    wait_until(
        lambda: any(entry.node == GATE_NODE for entry in case.executions()),
        timeout=DEATH_S,
        what=f"{GATE_NODE} executing",
    )
    [run] = unfinished(case.home)
    if executor != "inline":  # inline runs the gated command inside the submission's turn: no answer yet
        printed = answered or wait_until(
            lambda: case.submitted(first), timeout=DEATH_S, what="the first process printed its run id"
        )
        assert printed == run
    first.sigkill()
    assert first.popen.returncode == -signal.SIGKILL
    crashed = read_log(case.home, run)
    executed = case.executions()
    in_flight = fold(run, crashed).running()
    assert any(node.path == GATE_NODE for node in in_flight), types(crashed)

    second = case.resume(crash=second_at)
    second.died_by_sigkill(SECOND[second_at])
    assert "started" not in second.lines(), second.output()
    before = read_log(case.home, run)
    check_prefix(run, crashed, before)  # L2 across the second crash
    added = before[len(crashed) :]
    if second_at == LEASE:
        assert "serving on" not in second.output()
        assert added == [], f"the process that died taking the store over appended {types(added)}"
    else:
        ended = [(e.type, e.node, e.attempt) for e in added]
        assert ended == [(ev.COMMAND_FAILED, node.path, node.attempt) for node in in_flight], ended
        assert all(e.data["error"]["type"].endswith(".Interrupted") for e in added)
    assert unfinished(case.home) == [run]

    case.gate.touch()
    tally, resumed = finish_and_check(case, run, before, crashed)
    record(f"{second_at} (restart)", case, tally, len(executed), resumed)


def test_the_checks_catch_what_they_are_for(tmp_path: Path) -> None:
    """L2, L6 and L7 as checked here fail on a changed prefix, a wrong result and a differing state."""
    home, ledger, gate = tmp_path / "home", str(tmp_path / "ledger.jsonl"), tmp_path / "gate"
    gate.touch()
    with Orchestrator(make_registry(), executor="inline", home=home) as orch:
        run = orch.submit(crash_flow(ledger, str(gate))).id
        assert orch.result(run, timeout=TERMINAL_S) == EXPECTED
        live = orch.engine.book.recent[run]
    events = read_log(home, run)

    check_prefix(run, events[:-1], events)
    changed = dataclasses.replace(events[2], data={**events[2].data, "args": [0]})
    with pytest.raises(AssertionError, match="L2"):
        check_prefix(run, [*events[:2], changed, *events[3:]], events)
    with pytest.raises(AssertionError, match="L2"):
        check_prefix(run, events, events[:-1])

    flow = events[0].data["flow"]
    assert check_result(run, flow, EXPECTED, REFERENCE, PLAN) == EXPECTED
    with pytest.raises(AssertionError, match="L6"):
        check_result(run, flow, EXPECTED + 1, REFERENCE, PLAN)

    check_replay(home, {run: live})
    with pytest.raises(AssertionError, match=r"L7.*\['result'\]"):
        check_replay(home, {run: dataclasses.replace(live, result=EXPECTED + 1)})
    unfinished_state = fold(run, events[:-1])
    with pytest.raises(AssertionError, match="L7"):
        check_replay(home, {run: unfinished_state})
