"""Many rows in few statements, for the embedded store's writes.

``executemany`` steps SQLite once per row and lets go of the GIL around each
step. With another busy thread in the process (the zmq hub, a process pool's
reader), every step then waits its turn for the GIL: on this project's 2-core
machine a 6,000-row append took 188 ms instead of 34 ms alone. A statement of a
few hundred rows gives the GIL up once for all of them (31 ms either way).
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

MAX_VARIABLES = 999
"""Parameters a statement may bind in any SQLite build (3.32 raised its default to 32,766)."""


def insert_rows(
    db: sqlite3.Connection, insert: str, rows: Iterable[Sequence[Any]], conflict: str = ""
) -> None:
    """``{insert} VALUES (...), (...), ... {conflict}`` over ``rows``, in order; ``insert`` ends with
    its column list, whose length each row has.

    ``rows`` is read as it goes, so a long iterator is never held at once.
    """
    width = insert[insert.rindex("(") :].count(",") + 1
    per = MAX_VARIABLES // width
    values: list[Any] = []
    for row in rows:
        if len(row) != width:  # chunks would otherwise shift the values silently
            raise ValueError(f"a row of {len(row)} values for the {width} columns of {insert!r}")
        values.extend(row)
        if len(values) == per * width:
            db.execute(_statement(insert, width, per, conflict), values)
            values = []
    if values:
        db.execute(_statement(insert, width, len(values) // width, conflict), values)


@functools.lru_cache(maxsize=256)
def _statement(insert: str, width: int, count: int, conflict: str) -> str:
    """The same text for every chunk of a size (kept, as appends are hot), so SQLite's statement cache
    prepares it once."""
    row = "(" + ", ".join("?" * width) + ")"
    return f"{insert} VALUES {', '.join([row] * count)} {conflict}".rstrip()
