"""processes://: each envelope is reported exactly once, whichever path its outcome takes.

An outcome can arrive on the child's stream, in the chunk's acknowledgement (when
streaming failed), or be decided by the reaper of a broken pool; the ticket
each envelope holds until it is reported lets only the first of these through.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator

import pytest

from tests.contract.executor_suite import Harness, envelope, started
from workers import executor_from_url
from workers.execution import failed
from workers.process_child import NONE
from workers.processes import ProcessExecutor, _Ticket

TICKET = 10**9


@pytest.fixture
def processes() -> Iterator[Harness]:
    executor, outcomes = started(executor_from_url("processes://2"))
    try:
        yield Harness("processes", executor, outcomes)
    finally:
        executor.close()
    outcomes.assert_unique()


def test_thousands_of_streamed_outcomes_racing_their_acknowledgements_are_each_reported_once(
    processes: Harness,
) -> None:
    for _ in range(3):
        batch = [envelope("noop", i) for i in range(2_000)]
        assert [outcome.result for outcome in processes.run(*batch)] == list(range(2_000))
    processes.outcomes.assert_unique()
    assert isinstance(processes.executor, ProcessExecutor)
    assert processes.executor._tickets == {}


def test_an_outcome_both_streamed_and_acknowledged_is_reported_once(processes: Harness) -> None:
    executor = processes.executor
    assert isinstance(executor, ProcessExecutor)
    item = envelope("inc", 1)
    outcome = failed(item, ValueError("made up"), by="test")
    slot = next(iter(executor._pools))
    executor._tickets[TICKET] = _Ticket(item, slot)
    message = pickle.dumps((TICKET, outcome, NONE))
    executor._on_message(message)  # streamed
    executor._end(TICKET, outcome)  # and in the acknowledgement
    executor._on_message(message)  # and streamed again
    assert [o.attempt_id for o in processes.outcomes.items] == [item.attempt_id]
