from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orchestrator import InvalidOption
from orchestrator.core.timespec import parse_moment

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", NOW - timedelta(seconds=90)),
        ("15m", NOW - timedelta(minutes=15)),
        ("1.5h", NOW - timedelta(hours=1.5)),
        ("2d", NOW - timedelta(days=2)),
        ("1w", NOW - timedelta(weeks=1)),
        ("2026-11-25T08:00", datetime(2026, 11, 25, 8, 0, tzinfo=UTC)),
        ("2026-11-25T08:00+02:00", datetime(2026, 11, 25, 6, 0, tzinfo=UTC)),
    ],
)
def test_durations_and_times(text: str, expected: datetime) -> None:
    assert parse_moment(text, now=NOW) == expected


@pytest.mark.parametrize("text", ["1y", "yesterday", "-5m", ""])
def test_anything_else_names_the_forms(text: str) -> None:
    with pytest.raises(InvalidOption, match="30s, 15m, 1h, 2d"):
        parse_moment(text, now=NOW)
