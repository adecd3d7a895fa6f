"""bench/kill_soak.py: SIGKILLs of ``processes://2`` children amid a fan-out re-execute only what had started.

A small soak through the real orchestrator and pool: each kill may cost the one attempt running in
the killed child (a child runs one command at a time), never its queue. The counting itself is
checked apart on made-up ledgers.
"""

from __future__ import annotations

import pytest

from bench.kill_soak import figures_of, soak
from tests.commands import LedgerEntry


def _entry(node: str, pid: int) -> LedgerEntry:
    return LedgerEntry(run="r", node=node, attempt=1, pid=pid)


def test_a_second_execution_is_a_re_execution_and_is_traced_to_its_first_child() -> None:
    entries = [_entry("0", 10), _entry("1", 11), _entry("1", 12), _entry("2", 12), _entry("2", 13)]
    figures = figures_of(entries, calls=3, killed=[11, 99], seconds=1.0)
    assert (figures.executions, figures.re_executions, figures.run_again, figures.kills) == (5, 2, 2, 2)
    assert figures.per_kill == 1.0
    assert figures.started_in_a_killed_child == 1  # node 1 first ran in 11, killed; node 2 in 12, not


def test_no_kill_reports_no_rate() -> None:
    assert figures_of([_entry("0", 10)], calls=1, killed=[], seconds=0.5).per_kill == 0.0


@pytest.mark.slow
def test_each_killed_child_costs_at_most_the_attempt_it_had_started() -> None:
    figures = soak(calls=600, kills=6, work_s=0.002, seed=16)
    assert figures.kills >= 1, "the killer found no child to kill while the fan-out ran"
    assert figures.re_executions <= figures.kills
    assert figures.started_in_a_killed_child == figures.run_again
