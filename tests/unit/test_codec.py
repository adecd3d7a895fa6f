"""Payloads are checked before logging: what BSON would change or refuse is named with its path, and
what passes is measured exactly as BSON encodes it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from enum import IntEnum
from typing import Any

import bson
import pytest
from hypothesis import given, settings

from orchestrator import PayloadError
from orchestrator.core.codec import MAX_DEPTH, check_payload, check_text, is_text, storable_text
from tests.strategies import nested, values

GOOD = [
    None,
    True,
    1,
    -(2**63),
    2**63 - 1,
    1.5,
    float("nan"),
    float("-inf"),
    "text",
    "astral 𝄞 and combining é",
    b"bytes",
    [1, [2, {"a": None}]],
    {"nested": {"list": [1, 2.0, "x"]}, "dotted.key": 1, "": 2},
    datetime(2026, 1, 1, 12, 0, 0, 123000, tzinfo=UTC),
    nested(MAX_DEPTH),
]


@pytest.mark.parametrize("value", GOOD, ids=repr)
def test_values_that_survive_bson_pass(value: object) -> None:
    check_payload(value)


class Level(IntEnum):
    LOW = 1


@pytest.mark.parametrize(
    ("value", "path", "words"),
    [
        ((1, 2), "value", "use a list"),
        ({"tags": {1, 2}}, "value['tags']", "sorted list"),
        ([1, Decimal("1.5")], "value[1]", "decimal.Decimal"),
        ({1: "a"}, "value", "keys must be str"),
        ({"$set": 1}, "value", "starts with '$'"),
        ({"a\x00b": 1}, "value", "holds NUL"),
        (2**64, "value", "64 bits"),
        (2**63, "value", "64 bits"),
        (datetime(2026, 1, 1), "value", "timezone-aware"),
        (datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=2))), "value", "timezone-aware UTC"),
        (datetime(2026, 1, 1, 0, 0, 0, 1, tzinfo=UTC), "value", "sub-millisecond"),
        (object(), "value", "cannot be stored"),
        ({"files": ["ok", "bad\udcff"]}, "value['files'][1]", "lone surrogate '\\udcff' at index 3"),
        ({"bad\udcffkey": 1}, "value", "lone surrogate"),
        ([Level.LOW], "value[0]", "convert it with int(...)"),
        (nested(MAX_DEPTH + 1), "value" + "[0]" * MAX_DEPTH, "deeper than 40"),
    ],
)
def test_values_bson_would_change_or_refuse_are_named(value: object, path: str, words: str) -> None:
    with pytest.raises(PayloadError) as caught:
        check_payload(value)
    assert caught.value.path == path
    assert words in str(caught.value)


def test_a_lone_surrogate_gets_the_fix_for_file_names() -> None:
    with pytest.raises(PayloadError) as caught:
        check_payload({"files": ["a", "b", "c", "bad\udcff"]}, "result")
    text = str(caught.value)
    assert text.startswith("result['files'][3]: lone surrogate '\\udcff' at index 3")
    assert "os.fsencode" in text and "errors='replace'" in text


def test_large_values_are_refused_with_their_size_and_the_limit() -> None:
    with pytest.raises(PayloadError, match="2,005 bytes as stored, over the 1,000-byte limit"):
        check_payload("x" * 2000, max_bytes=1000)


@settings(max_examples=300)
@given(values)
def test_the_size_is_exactly_what_bson_encodes(value: Any) -> None:
    """Limits mean the same on every store: the check measures the bytes a server would get."""
    try:
        size = check_payload({"v": value}, max_bytes=2**40)
    except PayloadError:
        return
    assert size == len(bson.encode({"v": value}))


def test_names_must_be_text() -> None:
    assert check_text("order-42", "a key") == "order-42"
    for bad, words in [
        ("x\udcff", "lone surrogate"),
        ("", "1 to"),
        (7, "must be a string"),
        ("x" * 1001, "1 to"),
    ]:
        with pytest.raises(PayloadError, match=words):
            check_text(bad, "a key")
    assert is_text("ok 𝄞") and not is_text("\ud800")


def test_storable_text_escapes_and_cuts_but_keeps_both_ends() -> None:
    assert storable_text("bad\udcffname", 100) == "bad\\udcffname"
    cut = storable_text("head" + "x" * 10_000 + "tail", 200)
    assert len(cut) == 200 and cut.startswith("head") and cut.endswith("tail") and "characters cut" in cut
    assert storable_text("short", 200) == "short"
