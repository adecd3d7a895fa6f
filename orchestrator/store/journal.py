"""The embedded journal's table of events: its schema, its statements, and a row as an event."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from orchestrator.core.events import Event

from .encoding import CORRUPT_FIELD, decode_doc, encode_events, encoded

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY,
    run TEXT NOT NULL,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    doc BLOB NOT NULL
)"""
CHECKPOINTS = "CREATE TABLE IF NOT EXISTS checkpoints (name TEXT PRIMARY KEY, position TEXT NOT NULL)"
COLUMNS = "id, run, seq, type, doc"
INSERT_INTO = f"INSERT INTO events ({COLUMNS})"
READ = f"SELECT {COLUMNS} FROM events WHERE id > ? AND id < ? AND run = ? ORDER BY seq"
ROWS_AFTER = f"SELECT rowid, {COLUMNS} FROM events WHERE rowid > ? ORDER BY rowid"
PAGE = 10_000
"""Rows a whole-journal scan reads at a time."""
UNFINISHED = (
    "SELECT run, doc FROM events WHERE type = ? AND run NOT IN (SELECT run FROM events WHERE type IN ({}))"
)
IN_CHUNK = 500
"""Ids per ``IN (...)`` lookup, well under SQLite's bound on query parameters."""

Row = tuple[str, str, int, str, bytes]


def rows_of(events: Sequence[Event]) -> list[Row]:
    return [
        (event.id, event.run, event.seq, event.type, blob)
        for event, blob in zip(events, encode_events(events), strict=True)
    ]


def row_stream(events: Sequence[Event], refused: list[tuple[Event, str]]) -> Iterator[Row]:
    """``rows_of`` one row at a time, for ``executemany`` to write as they are made: a submission of
    100,000 calls never holds its 18 MB of BSON at once. Refusals go to ``refused``."""
    return ((event.id, event.run, event.seq, event.type, blob) for event, blob in encoded(events, refused))


def loaded_doc(event_id: str, run: str, seq: int, type_: str, blob: bytes) -> dict[str, Any]:
    """The stored document of a journal row, or a placeholder that reads as ``CorruptEvent``."""
    try:
        doc = decode_doc(blob)
    except Exception as exc:  # whatever bson raises, the row is damaged
        reason = f"its journal row is not valid BSON ({type(exc).__name__}: {exc})"
    else:
        if doc.get("_id") == event_id:
            return doc
        reason = f"its journal row holds the document of {doc.get('_id')!r}"
    return {"_id": event_id, "run": run, "seq": seq, "type": type_, CORRUPT_FIELD: reason}


def submitted_at(blob: bytes) -> datetime | None:
    with contextlib.suppress(Exception):  # a damaged row sorts first; reading the run names the damage
        at = decode_doc(blob).get("at")
        return at if isinstance(at, datetime) else None
    return None
