"""Prometheus buckets from the log's duration histogram: each count exact (issue 17, /metrics)."""

from __future__ import annotations

import itertools
import math

from hypothesis import given
from hypothesis import strategies as st

from orchestrator.core.histogram import BUCKETS_PER_DECADE, bucket_of
from orchestrator.web.metrics import QUARTER_DECADES
from projections.command_stats import DurationHistogram

STEP = BUCKETS_PER_DECADE // 4


@given(
    durations=st.lists(st.floats(min_value=0, max_value=1_000, allow_nan=False), max_size=50),
    j=st.sampled_from(list(QUARTER_DECADES)),
)
def test_a_bucket_counts_exactly_the_durations_at_most_its_bound(durations: list[float], j: int) -> None:
    bound = 10 ** (j / 4)
    clear = [d for d in durations if not math.isclose(d, bound, rel_tol=1e-9)]  # float ties at the edge
    buckets: dict[int, int] = {}
    for d in clear:
        buckets[bucket_of(d)] = buckets.get(bucket_of(d), 0) + 1
    histogram = DurationHistogram("c", len(clear), sum(clear), buckets)
    assert histogram.at_most(j * STEP) == sum(1 for d in clear if d <= bound)


def test_the_bounds_run_from_a_microsecond_to_a_hundred_seconds_in_quarter_decades() -> None:
    bounds = [10 ** (j / 4) for j in QUARTER_DECADES]
    assert math.isclose(bounds[0], 1e-6) and math.isclose(bounds[-1], 100.0)
    assert all(math.isclose(b / a, 10**0.25) for a, b in itertools.pairwise(bounds))
