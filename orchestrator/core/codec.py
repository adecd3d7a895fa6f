"""The type mapping: what the log takes, and what it gives back, the same on every store.

| Python value                         | comes back as                                       |
| ------------------------------------ | --------------------------------------------------- |
| None, bool                           | the same                                            |
| int in [-2**63, 2**63 - 1]           | int (never bson's Int64); wider ints are refused    |
| float, NaN, inf, -inf, -0.0          | the same float                                      |
| str of valid Unicode                 | the same; a lone surrogate is refused               |
| bytes                                | bytes                                               |
| list                                 | list (a tuple is refused: it would come back a list) |
| dict with str keys                   | dict; keys may not start with "$" or hold NUL        |
| datetime, aware, UTC, whole ms       | the same (tzinfo UTC); naive or finer is refused     |

Anything else (sets, Decimal, subclasses such as IntEnum or OrderedDict, custom
objects) is refused with ``PayloadError`` naming where it sits and the fix,
where it enters: submission, the end of an attempt, a listener's answer. The
check measures what it walks exactly as BSON encodes it, so size limits are
the same on every store and match what MongoDB would accept.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from .errors import PayloadError

MAX_DEPTH = 40
"""Levels of containers in a payload. BSON allows 100 per document; an event wraps a payload in at
most eight more (event, data, flow, nodes, node, args, ...), so a whole event is held to ``EVENT_DEPTH``."""
EVENT_DEPTH = 90

MAX_PAYLOAD_BYTES = 4 * 1024 * 1024
"""Args, a result, the data one attempt emits: each at most this, as BSON."""

MAX_EVENT_BYTES = 16 * 1024 * 1024
"""One stored event, as BSON: MongoDB's limit for a document, enforced by every store."""

MAX_TEXT = 1_000
"""Characters in a name the log stores: a key, a listener or flow name, a cancel reason."""

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

_HINTS: dict[type, str] = {
    tuple: "use a list (BSON has no tuple and would return a list)",
    set: "use a sorted list",
    frozenset: "use a sorted list",
}
_PLAIN = "convert it to None, bool, int, float, str, bytes, list, dict or a UTC datetime"


class _Refused(Exception):
    """Raised at the offending value; each container on the way out adds its step to the path."""

    def __init__(self, message: str) -> None:
        self.message = message
        self.steps: list[str] = []


def check_payload(
    value: Any, path: str = "value", *, max_bytes: int = MAX_PAYLOAD_BYTES, max_depth: int = MAX_DEPTH
) -> int:
    """The size ``value`` takes as BSON (a document's full size); PayloadError if the log cannot hold it."""
    try:
        size = _size(value, MAX_DEPTH - max_depth)  # the walk refuses containers from MAX_DEPTH down
    except _Refused as refused:
        raise PayloadError(refused.message, path=path + "".join(reversed(refused.steps))) from None
    if size > max_bytes:
        raise PayloadError(
            f"is {size:,} bytes as stored, over the {max_bytes:,}-byte limit; "
            "store large data elsewhere and pass a reference",
            path=path,
        )
    return size


EVENT_ROOM_BYTES = 64 * 1024
"""What an event's own fields (ids, type, times, who) may take beside its data."""


def check_event_data(data: Any, what: str) -> int:
    """The size of the data of one event (a submission, a returned flow); PayloadError if the event
    would pass ``MAX_EVENT_BYTES``."""
    size = check_payload(data, what, max_bytes=MAX_EVENT_BYTES, max_depth=EVENT_DEPTH)
    if size > MAX_EVENT_BYTES - EVENT_ROOM_BYTES:
        raise PayloadError(
            f"{what} is {size:,} bytes as stored; one event holds at most {MAX_EVENT_BYTES:,} bytes, "
            f"{EVENT_ROOM_BYTES:,} of them kept for the event's own fields. Pass large data by reference "
            "(a path, a URL, a key), or split the work into several runs"
        )
    return size


def check_text(value: Any, what: str, *, max_chars: int = MAX_TEXT, empty: bool = False) -> str:
    """``value`` if it is a str the log can store as a name; PayloadError naming ``what`` otherwise."""
    if not isinstance(value, str):
        raise PayloadError(f"{what} must be a string, got {type(value).__name__}")
    if not (empty or value) or len(value) > max_chars:
        raise PayloadError(f"{what} must be 1 to {max_chars:,} characters, got {len(value):,}")
    try:
        _text_bytes(value)
    except _Refused as refused:
        raise PayloadError(f"{what}: {refused.message}") from None
    return value


def is_text(value: str) -> bool:
    """Whether a str is valid Unicode (holds no lone surrogate), as the log needs every str to be."""
    try:
        _text_bytes(value)
    except _Refused:
        return False
    return True


def storable_text(text: str, max_chars: int) -> str:
    """``text`` as the log can always store it: lone surrogates escaped (``\\udcff``), at most
    ``max_chars`` characters (the head and the tail kept, the cut said in the middle)."""
    if not text.isascii():
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(text) <= max_chars:
        return text
    note = f"\n... [{len(text) - max_chars:,} characters cut] ...\n"
    head = (max_chars - len(note)) // 2
    tail = max_chars - len(note) - head
    return text[:head] + note + text[len(text) - tail :]


# --- the walk ---------------------------------------------------------------------------------


def _size(value: Any, depth: int) -> int:
    """The BSON size of ``value`` as an element's value (without its type byte and key)."""
    kind = type(value)
    if kind is str:
        return _text_bytes(value) + 5
    if kind is int:
        if INT32_MIN <= value <= INT32_MAX:
            return 4
        if INT64_MIN <= value <= INT64_MAX:
            return 8
        raise _Refused(f"int {value} does not fit in 64 bits; pass it as a string")
    if kind is float or kind is datetime:
        if kind is datetime:
            _check_datetime(value)
        return 8
    if value is None:
        return 0
    if kind is bool:
        return 1
    if kind is bytes:
        return len(value) + 5
    if depth >= MAX_DEPTH:
        raise _Refused(f"nests deeper than {MAX_DEPTH} levels; flatten it")
    if kind is list:
        return _list_size(value, depth + 1)
    if kind is dict:
        return _dict_size(value, depth + 1)
    raise _Refused(f"{kind.__module__}.{kind.__qualname__} cannot be stored in the log; {_hint(value)}")


def _list_size(items: list[Any], depth: int) -> int:
    total = 5 + 2 * len(items) + _index_digits(len(items))
    for index, item in enumerate(items):
        try:
            total += _size(item, depth)
        except _Refused as refused:
            refused.steps.append(f"[{index}]")
            raise
    return total


def _dict_size(doc: dict[Any, Any], depth: int) -> int:
    total = 5
    for key, item in doc.items():
        total += 2 + _key_bytes(key)
        try:
            total += _size(item, depth)
        except _Refused as refused:
            refused.steps.append(f"[{key!r}]")
            raise
    return total


def _key_bytes(key: Any) -> int:
    if type(key) is not str:
        raise _Refused(f"dict key {key!r:.80} is a {type(key).__name__}; BSON keys must be str")
    if key.startswith("$") or "\x00" in key:
        raise _Refused(f"dict key {key!r:.80} starts with '$' or holds NUL; rename it")
    return _text_bytes(key)


def _text_bytes(text: str) -> int:
    """Length in UTF-8; a lone surrogate (what ``os.fsdecode`` makes of a non-UTF-8 name) is refused."""
    if text.isascii():
        return len(text)
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        bad = text[exc.start]
        raise _Refused(
            f"lone surrogate {bad!r} at index {exc.start} (text that is not valid Unicode, such as a "
            "non-UTF-8 file name from os.listdir or Path.glob); pass the name as bytes (os.fsencode), "
            "or clean the text with .encode('utf-8', errors='replace').decode()"
        ) from None


def _index_digits(count: int) -> int:
    """Total digits of the array keys "0" .. str(count - 1)."""
    total, width, low = 0, 1, 0
    while low < count:
        high = min(count, 10**width)
        total += (high - low) * width
        low, width = high, width + 1
    return total


def _check_datetime(value: datetime) -> None:
    if value.tzinfo is None or value.utcoffset() != timedelta(0):
        raise _Refused(
            "datetime must be timezone-aware UTC (BSON stores UTC and drops the zone); "
            "use datetime.now(timezone.utc)"
        )
    if value.microsecond % 1000:
        raise _Refused("datetime has sub-millisecond precision that BSON drops; round it to milliseconds")


def _hint(value: Any) -> str:
    kind = type(value)
    if kind in _HINTS:
        return _HINTS[kind]
    for base, name in ((bool, "bool"), (int, "int"), (float, "float"), (str, "str"), (dict, "dict")):
        if isinstance(value, base):
            return f"it would come back as a plain {name}: convert it with {name}(...)"
    if hasattr(value, "tolist"):
        return "a NumPy value: convert it with .tolist() (or .item() for one number)"
    return _PLAIN
