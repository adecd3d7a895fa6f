"""Retry policies: validated values, decisions from their stored form, deterministic jitter."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator import InvalidOption, RetryPolicy, UnknownCommand
from orchestrator.core.envelope import ErrorInfo
from orchestrator.core.policy import retry_delay, should_retry


class Flaky(ConnectionError):
    pass


def error(exc: BaseException) -> ErrorInfo:
    return ErrorInfo.from_exception(exc)


def test_policy_stores_exception_names_and_round_trips() -> None:
    policy = RetryPolicy(max_attempts=4, retry_on=(ConnectionError,), never_retry=(Flaky,))
    assert policy.retry_on == ("builtins.ConnectionError",)
    assert RetryPolicy.from_doc(policy.to_doc()) == policy


def test_subclasses_match_and_never_retry_wins() -> None:
    doc = RetryPolicy(max_attempts=3, retry_on=(OSError,), never_retry=(Flaky,)).to_doc()
    assert should_retry(doc, error(ConnectionResetError()), attempt=1)
    assert not should_retry(doc, error(Flaky()), attempt=1)
    assert not should_retry(doc, error(ValueError()), attempt=1)
    assert not should_retry(doc, error(ConnectionResetError()), attempt=3)


def test_errors_no_retry_can_heal_are_never_retried() -> None:
    doc = RetryPolicy(max_attempts=5, retry_on=(Exception,)).to_doc()
    assert not should_retry(doc, error(UnknownCommand("x")), attempt=1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"initial_delay": 5},
        {"max_delay": timedelta(seconds=-1)},
        {"backoff": 0.5},
        {"jitter": 2},
        {"retry_on": (42,)},
    ],
)
def test_bad_policies_are_refused_with_the_field_named(kwargs: dict) -> None:
    with pytest.raises(InvalidOption) as caught:
        RetryPolicy(**kwargs)
    assert next(iter(kwargs)) in str(caught.value)


@given(st.integers(1, 30), st.floats(0, 1), st.text(max_size=10))
def test_delay_grows_is_capped_and_replays_identically(attempt: int, jitter: float, salt: str) -> None:
    doc = RetryPolicy(
        initial_delay=timedelta(seconds=1), backoff=2.0, max_delay=timedelta(seconds=60), jitter=jitter
    ).to_doc()
    delay = retry_delay(doc, attempt, salt)
    assert delay == retry_delay(doc, attempt, salt)
    base = min(2.0 ** (attempt - 1), 60.0)
    assert base * (1 - jitter) - 1e-6 <= delay.total_seconds() <= base * (1 + jitter) + 1e-6
