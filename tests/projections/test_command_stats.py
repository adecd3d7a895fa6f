"""Command statistics: mean and max exact, p95 from a bounded histogram within its documented error.

Durations go through the pipeline (on the BSON-faithful mongomock), so the
server-side bucket expression is tested along with the Python reading of it.
"""

from __future__ import annotations

import math
import random
import sys
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.core import events as ev
from orchestrator.core.events import Event, to_doc
from orchestrator.store.faithful_mock import client
from projections.command_stats import (
    BUCKET_RATIO,
    BUCKETS_PER_DECADE,
    LOWEST_BUCKET,
    MAX_BUCKETS,
    SMALLEST_S,
    CommandStats,
    bucket_upper_s,
    command_stats,
    mean_of,
    p95_from_histogram,
)

from . import reference

T = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def stats_of(durations: list[float | None], *, others: int = 0) -> CommandStats:
    """The statistics of one command that succeeded once per duration (None: no ``duration_s``)."""
    log = [
        Event("r", seq, ev.COMMAND_SUCCEEDED, T, f"n{seq}", 1, "work", {} if d is None else {"duration_s": d})
        for seq, d in enumerate(durations, start=1)
    ]
    log += [Event("r", len(log) + i, ev.COMMAND_DISPATCHED, T, "x", 1, "work") for i in range(1, others + 1)]
    events = client()["stats"]["events"]
    if log:
        events.insert_many([to_doc(event) for event in log])
    (row,) = command_stats(events)
    return row


def nearest_rank(durations: list[float]) -> float:
    return sorted(durations)[math.ceil(0.95 * len(durations)) - 1]


durations = st.one_of(
    st.floats(0, 1e5, allow_nan=False, allow_infinity=False),
    st.integers(0, 10**7).map(lambda micros: micros / 1e6),  # the log's resolution
    st.integers(LOWEST_BUCKET - 100, 600).map(bucket_upper_s),  # right on a bucket's edge
)


@settings(max_examples=150, deadline=None)
@given(st.lists(durations, min_size=1, max_size=80))
def test_the_p95_is_within_one_bucket_above_the_exact_nearest_rank(taken: list[float]) -> None:
    row = stats_of(list(taken))
    assert row.max_duration_s == max(taken)
    assert row.mean_duration_s is not None
    assert math.isclose(row.mean_duration_s, round(math.fsum(taken) / len(taken), 6), abs_tol=2e-6)
    assert reference.p95_within_bound(row.p95_duration_s, nearest_rank(taken), max(taken))


def test_the_p95_of_a_hundred_durations_is_the_95th_within_a_bucket() -> None:
    row = stats_of([float(n) for n in range(100, 0, -1)])
    assert row.p95_duration_s is not None
    assert 95.0 <= row.p95_duration_s <= 95.0 * BUCKET_RATIO
    assert (row.mean_duration_s, row.max_duration_s) == (50.5, 100.0)


micros = st.integers(min_value=1, max_value=10**7).map(lambda us: us / 1e6)


@settings(max_examples=300, deadline=None)
@given(st.lists(micros, min_size=2, max_size=12), st.randoms(use_true_random=False))
def test_the_mean_is_the_same_whatever_order_the_durations_are_added_in(
    taken: list[float], order: random.Random
) -> None:
    """The embedded store adds per hour, a server in one ``$sum``: the mean's digits must not care."""
    shuffled = order.sample(taken, len(taken))
    assert mean_of(sum(taken), len(taken)) == mean_of(sum(shuffled), len(taken))
    assert mean_of(sum(taken), len(taken)) == stats_of(shuffled).mean_duration_s


def test_a_mean_on_a_half_microsecond_is_rounded_alike_from_either_sum() -> None:
    a, b, c = 0.000218, 0.000289, 0.000056  # (a + b) + c and a + (b + c) differ in the last bit
    assert (a + b) + c != a + (b + c)
    assert mean_of((a + b) + c, 2) == mean_of(a + (b + c), 2)


def test_under_twenty_durations_the_p95_is_the_maximum_exactly() -> None:
    assert stats_of([0.021, 0.036]).p95_duration_s == 0.036
    assert stats_of([0.5]).p95_duration_s == 0.5


def test_zero_durations_and_successes_without_one() -> None:
    assert stats_of([0.0, 0.0, 0.0]).p95_duration_s == 0.0
    row = stats_of([None, None], others=2)
    assert (row.calls, row.successes, row.mean_duration_s, row.p95_duration_s) == (2, 2, None, None)
    assert stats_of([None, 2.0]).p95_duration_s == 2.0


def test_reading_a_histogram() -> None:
    assert p95_from_histogram({}, None) is None
    assert p95_from_histogram({3: 19, 7: 1}, 50.0) == bucket_upper_s(3)  # rank 19 of 20 is in bucket 3
    assert p95_from_histogram({3: 18, 7: 2}, 50.0) == bucket_upper_s(7)
    assert p95_from_histogram({3: 18, 7: 2}, 1.1) == 1.1  # never above the exact maximum
    assert p95_from_histogram({LOWEST_BUCKET: 5}, 0.0) == 0.0
    assert bucket_upper_s(LOWEST_BUCKET) == SMALLEST_S
    assert bucket_upper_s(BUCKETS_PER_DECADE) == 10.0


def test_the_histogram_has_a_fixed_number_of_buckets_up_to_the_largest_float() -> None:
    highest = LOWEST_BUCKET + MAX_BUCKETS - 1
    assert bucket_upper_s(highest - 1) < sys.float_info.max <= bucket_upper_s(highest)
    assert stats_of([sys.float_info.max, 1.0]).p95_duration_s == sys.float_info.max
    assert bucket_upper_s(LOWEST_BUCKET + 1_100) >= timedelta(days=1).total_seconds()
