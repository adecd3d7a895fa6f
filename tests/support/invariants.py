"""The "nothing lost" invariants of ../shared/RELIABILITY.md, checked on a run's log and an external ledger.

    L1  seq is exactly 1..N and the events fold
    L4  the run reached one terminal event; only late outcomes (outcome.ignored) may follow it
    L5  every ledgered node ran at least once; at most one outcome accepted per attempt
        and per node; every other outcome of an attempt is recorded as outcome.ignored
    L9  every execution in the ledger belongs to an attempt whose dispatch is logged
    L2  the log after a fault starts with the log before it, unchanged (``check_prefix``)
    L6  the run's result equals a pure reference evaluation of its flow (``check_result``)
    L7  fold(log) in a fresh process equals the live state; ``decide`` on a finished run
        yields nothing (``check_replay``)

``check`` returns the numbers a note reports: executions, dispatches, ignored outcomes.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import subprocess
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from orchestrator.core import events as ev
from orchestrator.core.events import Event, utcnow
from orchestrator.core.evolve import fold
from orchestrator.core.planner import decide
from orchestrator.core.state import NO_INPUT, RunState
from tests.commands import LedgerEntry
from tests.simulation import Commands, Plan, ReferenceFailed, evaluate

REPO = Path(__file__).resolve().parents[2]
FRESH_FOLD_S = 60.0
"""How long the fresh process of ``check_replay`` may take."""

ACCEPTED = (ev.COMMAND_SUCCEEDED, ev.COMMAND_FAILED, ev.COMMAND_EXPANDED)


@dataclass(frozen=True, slots=True)
class Tally:
    executions: int
    dispatches: int
    ignored: int


def check(
    run: str, events: Sequence[Event], ledger: Sequence[LedgerEntry], *, ledgered_nodes: int = 0
) -> Tally:
    """Assert L1, L4, L5 and L9 for ``run``; ``ledgered_nodes`` is how many of its nodes write the ledger."""
    seqs = [event.seq for event in events]
    assert seqs == list(range(1, len(events) + 1)), f"L1: seq of {run} is not 1..N: {seqs[:20]}"
    state = fold(run, list(events))
    ends = [i for i, event in enumerate(events) if event.type in ev.RUN_TERMINAL]
    assert len(ends) == 1, f"L4: {run} has {len(ends)} terminal events, not one"
    after = {event.type for event in events[ends[0] + 1 :]}
    assert after <= {ev.OUTCOME_IGNORED}, f"L4: {run} goes on after its terminal event: {sorted(after)}"
    assert state.finished, f"L4: {run} folds to an unfinished state"

    accepted = Counter((e.node, e.attempt) for e in events if e.type in ACCEPTED)
    assert all(n == 1 for n in accepted.values()), f"L5: an attempt of {run} has two accepted outcomes"
    succeeded = Counter(e.node for e in events if e.type in (ev.COMMAND_SUCCEEDED, ev.COMMAND_EXPANDED))
    assert all(n == 1 for n in succeeded.values()), f"L5: a node of {run} succeeded twice"

    dispatched = {(e.node, e.attempt) for e in events if e.type == ev.COMMAND_DISPATCHED}
    mine = [entry for entry in ledger if entry.run == run]
    executed = {(entry.node, entry.attempt) for entry in mine}
    assert executed <= dispatched, (
        f"L9: executions without a logged dispatch: {sorted(executed - dispatched)[:5]}"
    )
    if ledgered_nodes:
        ran = {entry.node for entry in mine}
        assert len(ran) == ledgered_nodes, (
            f"L5: {ledgered_nodes - len(ran)} ledgered nodes of {run} never ran"
        )
    ignored = sum(1 for e in events if e.type == ev.OUTCOME_IGNORED)
    return Tally(executions=len(mine), dispatches=len(dispatched), ignored=ignored)


def check_prefix(run: str, before: Sequence[Event], after: Sequence[Event]) -> None:
    """L2: ``after`` (the log once the fault is over) starts with ``before``, event for event, unchanged."""
    assert len(after) >= len(before), f"L2: {run} lost events: {len(before)} before, {len(after)} after"
    changed = [b.seq for b, a in zip(before, after, strict=False) if a != b]
    assert not changed, f"L2: events of {run} changed after the fault, seq {changed[:5]}"


def check_result(
    run: str,
    flow: Mapping[str, Any],
    result: Any,
    commands: Commands,
    plan: Plan,
    *,
    input: Any = NO_INPUT,
) -> Any:
    """L6: ``result`` of ``run`` equals a pure evaluation of ``flow`` (its flat form) under ``plan``.

    ``commands`` are pure twins of the real ones; ``plan`` says which (node, attempt)
    fail. Returns the reference value.
    """
    try:
        expected = evaluate(dict(flow), commands, plan, input)
    except ReferenceFailed as failure:
        raise AssertionError(f"L6: the reference evaluation of {run} fails at {failure.nodes}") from None
    assert result == expected, f"L6: {run} returned {result!r}, the reference evaluation {expected!r}"
    return expected


_FRESH_FOLD = """
import pickle, sys
from orchestrator.core.evolve import fold
from orchestrator.store import open_store

runs, home = pickle.load(sys.stdin.buffer)
store = open_store(None, home=home, read_only=True)
try:
    states = {run: fold(run, store.read(run)) for run in runs}
finally:
    store.close()
sys.stdout.buffer.write(pickle.dumps(states))
"""


def fold_in_fresh_process(home: str | os.PathLike[str], runs: Sequence[str]) -> dict[str, RunState]:
    """Fold ``runs`` from the embedded store in ``home`` in a new interpreter that reads the log itself."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {key: value for key, value in os.environ.items() if not key.startswith("EVENFLOW_")}
    done = subprocess.run(
        [sys.executable, "-c", _FRESH_FOLD],
        input=pickle.dumps((list(runs), str(home))),
        capture_output=True,
        timeout=FRESH_FOLD_S,
        env={**env, "PYTHONPATH": path},
        cwd=REPO,
        check=False,
    )
    assert done.returncode == 0, f"L7: the fresh fold failed:\n{done.stderr.decode(errors='replace')}"
    states: dict[str, RunState] = pickle.loads(done.stdout)
    return states


def check_replay(home: str | os.PathLike[str], live: Mapping[str, RunState]) -> None:
    """L7: each finished run of ``live`` (run -> the engine's in-memory state) folds, in a fresh
    process reading the embedded store in ``home``, to an equal state; neither decides anything more."""
    fresh = fold_in_fresh_process(home, list(live))
    later = utcnow() + timedelta(days=365)
    for run, state in live.items():
        assert state.finished, f"L7: {run} is not finished in the live state ({state.status})"
        again = fresh[run]
        if again != state:
            fields = [  # what equality compares (the timers' heap is a cache of ``timers``)
                f.name
                for f in dataclasses.fields(RunState)
                if f.compare and getattr(again, f.name) != getattr(state, f.name)
            ]
            raise AssertionError(
                f"L7: fold of {run} in a fresh process differs from the live state in {fields}"
            )
        assert decide(state, later) == [], f"L7: the finished run {run} still decides {decide(state, later)}"
        assert decide(again, later) == [], f"L7: the refolded run {run} still decides {decide(again, later)}"
