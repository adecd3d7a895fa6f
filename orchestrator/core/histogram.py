"""The log-spaced buckets durations are counted in, so a p95 comes from a bounded histogram.

Bucket ``k`` holds the durations in ``(10^((k-1)/B), 10^(k/B)]`` seconds
(``B = BUCKETS_PER_DECADE``), and the lowest holds everything up to
``SMALLEST_S``, 0 included. One definition for the MongoDB pipeline
(``projections.command_stats``) and the embedded journal's rollups, so both
count a duration in the same bucket.
"""

from __future__ import annotations

import math

BUCKETS_PER_DECADE = 100
BUCKET_RATIO = 10 ** (1 / BUCKETS_PER_DECADE)
"""A bucket's upper bound over its lower bound: a reported p95 is at most this times the exact one."""
SMALLEST_S = 1e-6
"""The upper bound of the lowest bucket, which holds every duration up to it (0 included)."""
LOWEST_BUCKET = round(BUCKETS_PER_DECADE * math.log10(SMALLEST_S))


def bucket_of(duration_s: float) -> int:
    """The bucket of a duration, computed as the pipeline's ``$ceil($log10(d) * B)`` is."""
    if duration_s <= SMALLEST_S:
        return LOWEST_BUCKET
    return math.ceil(math.log10(duration_s) * BUCKETS_PER_DECADE)
