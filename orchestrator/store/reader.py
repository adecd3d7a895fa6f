"""Opening the embedded journal to read, also in a home this process may not write to.

SQLite reads a WAL journal through its ``-shm`` index, which a reader has to
create when no writer has the journal open. In a home another user's service
owns, or on a read-only mount, it cannot, and ``mode=ro`` fails. There the
reader falls back to SQLite's ``immutable`` mode (the main file alone: no
index, no locks) when that file is the whole log, i.e. the ``-wal`` is absent
or empty. A ``-wal`` with commits in it is refused in one line instead, since
an immutable read would silently miss them.

A writer killed by SIGKILL needs no writer to reopen the home before readers
see its log: the first connection to open the journal after all have closed,
``mode=ro`` included, rebuilds the ``-shm`` index from the ``-wal`` (in its own
memory where it may not write the ``-shm``), so it reads every commit whose
append returned (``tests/fault/test_reader_after_kill.py``).

An immutable read is a snapshot: SQLite trusts the file never to change. So
the store asks ``Snapshot.stale`` before each read and opens the journal
afresh once a writer has been at it (the journal or its ``-wal`` changed).
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from orchestrator.core.errors import StoreUnavailable

Signature = tuple[int, int, int, int]
"""The journal's inode, size and modification time (ns), and its ``-wal``'s size (0 when absent)."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The journal at ``path`` as it stood when opened immutable."""

    path: Path
    signature: Signature

    def stale(self) -> bool:
        """Whether a writer changed the journal since: the snapshot would read torn or old pages."""
        try:
            return _signature(self.path) != self.signature
        except OSError:  # gone or unreadable: opening it again says which
            return True


def open_to_read(path: Path) -> tuple[sqlite3.Connection, Snapshot | None]:
    """A read-only connection to the journal at ``path``, and its ``Snapshot`` when opened immutable.

    Raises ``StoreUnavailable`` naming the fix when no way of opening it reads the whole log.
    """
    if not path.is_file():
        raise StoreUnavailable(
            f"no embedded store in {path.parent} ({path.name} is missing); start an orchestrator with this "
            "home first, or give the right --home / EVENFLOW_HOME"
        )
    uri = f"{path.resolve().as_uri()}?mode=ro"
    try:
        return _connect(uri), None
    except sqlite3.Error as exc:
        if os.access(path.parent, os.W_OK):  # not a matter of rights: SQLite's own reason says what
            raise StoreUnavailable(f"cannot open the embedded journal {path} to read: {exc}") from exc
    signature = _signature(path)  # taken first: a writer that comes after it makes the snapshot stale
    if signature[3] > 0:
        raise StoreUnavailable(
            f"cannot read the embedded store in {path.parent}: {_wal(path).name} holds events not yet in "
            f"{path.name}, which SQLite reads only where it may write, and this user may not; run as the "
            "user that owns it, or let an orchestrator there start and stop cleanly first (folding them in)"
        )
    try:
        return _connect(f"{uri}&immutable=1"), Snapshot(path, signature)
    except sqlite3.Error as exc:
        raise StoreUnavailable(f"cannot open the embedded journal {path} to read: {exc}") from exc


def _connect(uri: str) -> sqlite3.Connection:
    """A connection proven by a first read: SQLite opens the ``-wal`` and its index only then."""
    db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    try:
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except BaseException:
        db.close()
        raise
    return db


def _signature(path: Path) -> Signature:
    journal = path.stat()
    try:
        wal = _wal(path).stat().st_size
    except FileNotFoundError:
        wal = 0
    return (journal.st_ino, journal.st_size, journal.st_mtime_ns, wal)


def _wal(path: Path) -> Path:
    return path.with_name(f"{path.name}-wal")
