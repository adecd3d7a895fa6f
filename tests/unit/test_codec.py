"""Payloads are checked before logging: what BSON would change or refuse is named with its path."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from orchestrator import PayloadError
from orchestrator.core.codec import check_payload, is_storable

GOOD = [
    None,
    True,
    1,
    -(2**63),
    2**63 - 1,
    1.5,
    "text",
    b"bytes",
    [1, [2, {"a": None}]],
    {"nested": {"list": [1, 2.0, "x"]}},
    datetime(2026, 1, 1, 12, 0, 0, 123000, tzinfo=UTC),
]


@pytest.mark.parametrize("value", GOOD, ids=repr)
def test_values_that_survive_bson_pass(value: object) -> None:
    check_payload(value)
    assert is_storable(value)


@pytest.mark.parametrize(
    ("value", "path", "words"),
    [
        ((1, 2), "value", "use a list"),
        ({"tags": {1, 2}}, "value['tags']", "sorted list"),
        ([1, Decimal("1.5")], "value[1]", "decimal.Decimal"),
        ({1: "a"}, "value", "keys must be str"),
        ({"$set": 1}, "value", "starts with '$'"),
        (2**64, "value", "64 bits"),
        (datetime(2026, 1, 1), "value", "timezone-aware"),
        (datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=2))), "value", "timezone-aware UTC"),
        (datetime(2026, 1, 1, 0, 0, 0, 1, tzinfo=UTC), "value", "sub-millisecond"),
        (object(), "value", "cannot be stored"),
    ],
)
def test_values_bson_would_change_or_refuse_are_named(value: object, path: str, words: str) -> None:
    with pytest.raises(PayloadError) as caught:
        check_payload(value)
    assert caught.value.path == path
    assert words in str(caught.value)


def test_deep_and_large_values_are_refused() -> None:
    deep: list[object] = []
    for _ in range(60):
        deep = [deep]
    with pytest.raises(PayloadError, match="deeper"):
        check_payload(deep)
    with pytest.raises(PayloadError, match="limit"):
        check_payload("x" * 2000, max_bytes=1000)
