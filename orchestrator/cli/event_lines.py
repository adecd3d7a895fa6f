"""One event as one line of JSON, and back: the export format (version 1), in one place.

A line is the event's stored document (``core.events.to_doc``) written with the
tagged JSON the wire and ``--input`` already use (``transport.wire``), so there
is one codec, not two. The format names fields, never a module or a class, and
changes only with the event schema's ``v``. Reading a line checks every field's
type and that ``data`` is a value the log takes, so a damaged or hand-edited line
is refused here, by its number, and never reaches a store.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..core import events as ev
from ..core.codec import check_payload
from ..core.errors import CorruptEvent, InvalidOption, PayloadError, ProtocolError
from ..core.events import Event
from ..transport import wire

FIELDS = ("_id", "v", "run", "seq", "type", "at", "node", "attempt", "command", "data", "by", "causation",
          "correlation")  # fmt: skip
"""Every field of a line, in the order export writes them."""
REQUIRED = ("run", "seq", "type", "at")
"""Fields a line must have; the others may be left out (null, or ``{}`` for ``data``)."""
TEXT_OR_NULL = ("_id", "node", "command", "by", "causation", "correlation")
MAX_LINE_BYTES = wire.MAX_MESSAGE_BYTES
"""The longest line read: room for the largest event the log holds, tagged."""


def line_bytes(event: Event) -> bytes:
    """``event`` as its line of the export format: compact UTF-8 JSON, no newline."""
    return wire.dumps(ev.to_doc(event))


def to_line(event: Event) -> str:
    """``line_bytes`` as text, for writers of text files (``prune --archive``)."""
    return line_bytes(event).decode()


def from_line(line: str | bytes, number: int) -> Event:
    """The event line ``number`` holds; ``InvalidOption`` naming the line, what is wrong and the fix."""
    try:
        doc = wire.loads(line.encode() if isinstance(line, str) else line, max_bytes=MAX_LINE_BYTES)
        return ev.from_doc(_checked(doc))
    except (ProtocolError, CorruptEvent, PayloadError) as exc:
        raise InvalidOption(
            f"line {number} is not an event of evenflow's export format: {exc}; give a file "
            "`evenflow export` wrote, whole and unedited"
        ) from None


def _checked(doc: Any) -> dict[str, Any]:
    """``doc`` if every field has the type the log gives it; else ``ProtocolError`` naming one."""
    if not isinstance(doc, dict):
        raise ProtocolError(f"a line holds one JSON object, not {type(doc).__name__}")
    unknown = sorted(set(doc) - set(FIELDS))
    missing = [name for name in REQUIRED if name not in doc]
    if unknown or missing:
        raise ProtocolError(f"unknown field(s) {unknown}" if unknown else f"missing field(s) {missing}")
    if not isinstance(doc["run"], str) or not doc["run"]:
        raise ProtocolError("field 'run' must be a non-empty string")
    if not _whole(doc["seq"]) or not 1 <= doc["seq"] < 10**ev.SEQ_DIGITS:
        raise ProtocolError(f"field 'seq' must be a whole number from 1 to {10**ev.SEQ_DIGITS - 1}")
    if not isinstance(doc["type"], str):
        raise ProtocolError("field 'type' must be a string")
    if not isinstance(doc["at"], datetime):
        raise ProtocolError("field 'at' must be a {\"$date\": ISO 8601} time")
    for name in TEXT_OR_NULL:
        if not isinstance(doc.get(name), str | None):
            raise ProtocolError(f"field {name!r} must be a string or null")
    if not (doc.get("attempt") is None or _whole(doc["attempt"])):
        raise ProtocolError("field 'attempt' must be a whole number or null")
    if not isinstance(doc.get("data", {}), dict):
        raise ProtocolError("field 'data' must be an object")
    check_payload(doc.get("data", {}), "data")
    return doc


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
