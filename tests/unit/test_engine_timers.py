"""The engine's backoff is a deadline the loop honours, never a sleep; waits are bounded by what is due."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.engine.timers import BACKOFF_S, Backoff, earliest, until_due


class Ticks:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_failure_holds_appends_back_for_its_pause_then_lets_go() -> None:
    ticks = Ticks()
    backoff = Backoff(ticks)
    assert backoff.left_s() == 0.0
    backoff.failed()
    assert backoff.left_s() == pytest.approx(BACKOFF_S[0])
    ticks.now += BACKOFF_S[0] / 2
    assert backoff.left_s() == pytest.approx(BACKOFF_S[0] / 2)
    ticks.now += BACKOFF_S[0]
    assert backoff.left_s() == 0.0


@given(st.integers(min_value=1, max_value=20))
def test_pauses_grow_with_consecutive_failures_up_to_the_last_and_reset_on_success(failures: int) -> None:
    ticks = Ticks()
    backoff = Backoff(ticks)
    for _ in range(failures):
        backoff.failed()
    assert backoff.pause_s() == BACKOFF_S[min(failures, len(BACKOFF_S)) - 1]
    assert backoff.left_s() == pytest.approx(backoff.pause_s())
    backoff.succeeded()
    assert backoff.failures == 0 and backoff.pause_s() == BACKOFF_S[0]


def test_a_wait_is_the_earliest_thing_due_and_never_negative() -> None:
    now = datetime(2026, 12, 5, tzinfo=UTC)
    assert until_due(None, now) is None
    assert until_due(now - timedelta(seconds=3), now) == 0.0
    assert until_due(now + timedelta(seconds=2), now) == 2.0
    assert earliest(None, None) is None
    assert earliest(None, 3.0, 0.5) == 0.5
