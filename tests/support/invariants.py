"""The "nothing lost" invariants of ../shared/RELIABILITY.md, checked on a run's log and an external ledger.

    L1  seq is exactly 1..N and the events fold
    L4  the run reached one terminal event; only late outcomes (outcome.ignored) may follow it
    L5  every ledgered node ran at least once; at most one outcome accepted per attempt
        and per node; every other outcome of an attempt is recorded as outcome.ignored
    L9  every execution in the ledger belongs to an attempt whose dispatch is logged

``check`` returns the numbers a note reports: executions, dispatches, ignored outcomes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from orchestrator.core import events as ev
from orchestrator.core.events import Event
from orchestrator.core.evolve import fold
from tests.commands import LedgerEntry

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
