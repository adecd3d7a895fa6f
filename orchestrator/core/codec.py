"""What may go into the log: values that come back from BSON exactly as they went in.

Checked before anything is appended, so a bad argument is refused at submission
with the path of the offending value instead of turning into a silently changed
value (a tuple read back as a list) or a server error halfway through a run.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from .errors import PayloadError

MAX_DEPTH = 40
"""BSON allows 100 levels per document; an event wraps a payload in a few more."""

MAX_PAYLOAD_BYTES = 4 * 1024 * 1024
"""Well under MongoDB's 16 MB per document, leaving room for the event around it."""

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

_HINTS: dict[type, str] = {
    tuple: "use a list (BSON has no tuple and would return a list)",
    set: "use a sorted list",
    frozenset: "use a sorted list",
}


def check_payload(value: Any, path: str = "value", *, max_bytes: int = MAX_PAYLOAD_BYTES) -> int:
    """Raise PayloadError naming the first value that would not round-trip through BSON; else its size,
    roughly."""
    size = _check(value, path, 0)
    if size > max_bytes:
        raise PayloadError(
            f"is about {size:,} bytes, over the {max_bytes:,}-byte limit; "
            "store large data elsewhere and pass a reference",
            path=path,
        )
    return size


def is_storable(value: Any) -> bool:
    try:
        check_payload(value)
    except PayloadError:
        return False
    return True


def _check(value: Any, path: str, depth: int) -> int:
    """Validate recursively; return a rough encoded size so oversize values fail early."""
    if depth > MAX_DEPTH:
        raise PayloadError(f"nests deeper than {MAX_DEPTH} levels; flatten it", path=path)
    kind = type(value)
    if value is None or kind is bool or kind is float:
        return 9
    if kind is int:
        if not INT64_MIN <= value <= INT64_MAX:
            raise PayloadError(f"int {value} does not fit in 64 bits; pass it as a string", path=path)
        return 9
    if kind is str:
        return len(value) + 5
    if kind is bytes:
        return len(value) + 5
    if kind is datetime:
        _check_datetime(value, path)
        return 9
    if kind is list:
        return 5 + sum(_check(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value))
    if kind is dict:
        return 5 + sum(_check_item(key, item, path, depth) for key, item in value.items())
    hint = _HINTS.get(kind, "convert it to None, bool, int, float, str, bytes, list, dict or datetime")
    raise PayloadError(
        f"{kind.__module__}.{kind.__qualname__} cannot be stored in the log; {hint}", path=path
    )


def _check_item(key: Any, item: Any, path: str, depth: int) -> int:
    if type(key) is not str:
        raise PayloadError(f"dict key {key!r} is a {type(key).__name__}; BSON keys must be str", path=path)
    if key.startswith("$") or "\x00" in key:
        raise PayloadError(f"dict key {key!r} starts with '$' or holds NUL; rename it", path=path)
    return len(key) + _check(item, f"{path}[{key!r}]", depth + 1)


def _check_datetime(value: datetime, path: str) -> None:
    if value.tzinfo is None or value.utcoffset() != timedelta(0):
        raise PayloadError(
            "datetime must be timezone-aware UTC (BSON stores UTC and drops the zone); "
            "use datetime.now(timezone.utc)",
            path=path,
        )
    if value.microsecond % 1000:
        raise PayloadError(
            "datetime has sub-millisecond precision that BSON drops; round it to milliseconds",
            path=path,
        )
