"""What a store is like, read without writing anything: the facts ``evenflow doctor`` judges.

Each probe asks one thing and gives back the answer, or ``Unknown`` saying why
it could not be had: a user without ``clusterMonitor`` cannot read
``serverStatus`` or the oplog, and the doctor must still report the rest.
Nothing here judges what is good; ``orchestrator.cli.checkup`` does, so these
stay plain readings a test can script (a wire-protocol server, a home on disk).
"""

from __future__ import annotations

import functools
import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from pymongo.errors import PyMongoError

from orchestrator.core import events as ev
from orchestrator.core.errors import StoreUnavailable

from .embedded import JOURNAL
from .mongo import redact
from .owner_lock import OWNER_LOCK
from .reader import open_to_read

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Unknown:
    """A fact that could not be read, and why (the server's words, credentials redacted)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Topology:
    """What ``hello`` says: a replica set's name, members and primary; a mongos; or a standalone."""

    set_name: str | None
    members: tuple[str, ...]
    primary: str | None
    mongos: bool


@dataclass(frozen=True, slots=True)
class Skew:
    """The server's clock minus ours, read at the middle of a ``hello`` round trip of ``rtt_s``."""

    seconds: float
    rtt_s: float


@dataclass(frozen=True, slots=True)
class Storage:
    engine: str
    persistent: bool


@dataclass(frozen=True, slots=True)
class Access:
    """Who this connection is and what it may do on the log's database (``connectionStatus``)."""

    users: tuple[str, ...]
    roles: tuple[str, ...]
    can_read: bool
    can_write: bool


@dataclass(frozen=True, slots=True)
class OplogWindow:
    first: datetime
    last: datetime

    @property
    def hours(self) -> float:
        return (self.last - self.first).total_seconds() / 3600


@dataclass(frozen=True, slots=True)
class ServerFacts:
    """A MongoDB server as the connected user sees it; concerns are those the store's log uses."""

    version: str | Unknown
    topology: Topology | Unknown
    skew: Skew | Unknown
    storage: Storage | Unknown
    access: Access | Unknown
    oplog: OplogWindow | Unknown
    write_concern: Mapping[str, Any]
    read_concern: str | None


@dataclass(frozen=True, slots=True)
class JournalFacts:
    """An embedded journal as read: its SQLite journal mode and integrity, and what it holds."""

    mode: str | Unknown
    integrity: str | Unknown
    events: int | Unknown
    runs: int | Unknown
    finished: int | Unknown


@dataclass(frozen=True, slots=True)
class HomeFacts:
    """An embedded home read from disk, never through a store that would lock or create it."""

    home: Path
    writable: bool
    owner: int | None
    """The pid of the live process that owns the home, if one does."""
    free_bytes: int | Unknown
    wal_bytes: int
    journal: JournalFacts | Unknown
    """What the journal holds, or why it could not be opened to read."""


def probe(read: Callable[[], T]) -> T | Unknown:
    """``read()``, or ``Unknown`` with the driver's reason when the server refuses or fails."""
    try:
        return read()
    except PyMongoError as exc:
        return Unknown(redact(str(exc)).splitlines()[0][:200])


def server_facts(events: Any) -> ServerFacts:
    """Ask the server behind the log's collection ``events`` everything the doctor reports."""
    database = events.database
    admin = database.client.admin
    return ServerFacts(
        version=probe(lambda: str(admin.command("buildInfo")["version"])),
        topology=probe(lambda: topology_of(admin.command("hello"))),
        skew=probe(lambda: skew_of(admin)),
        storage=probe(lambda: storage_of(admin.command("serverStatus"))),
        access=probe(
            lambda: access_of(admin.command("connectionStatus", showPrivileges=True), database.name)
        ),
        oplog=probe(lambda: oplog_of(database.client)),
        write_concern=dict(events.write_concern.document),
        read_concern=events.read_concern.level,
    )


def topology_of(hello: Mapping[str, Any]) -> Topology:
    members = (*hello.get("hosts", ()), *hello.get("passives", ()), *hello.get("arbiters", ()))
    return Topology(
        set_name=hello.get("setName"),
        members=tuple(str(member) for member in members),
        primary=hello.get("primary"),
        mongos=hello.get("msg") == "isdbgrid",
    )


def skew_of(admin: Any, clock: Callable[[], float] = time.time) -> Skew:
    """The server's ``localTime`` against our clock at the middle of the round trip."""
    sent = clock()
    hello = admin.command("hello")
    back = clock()
    local_time = hello.get("localTime")
    if not isinstance(local_time, datetime):
        raise _NoAnswer("the server's hello carries no localTime")
    server = local_time if local_time.tzinfo else local_time.replace(tzinfo=UTC)
    return Skew(seconds=server.timestamp() - (sent + back) / 2, rtt_s=back - sent)


def storage_of(status: Mapping[str, Any]) -> Storage:
    engine = status.get("storageEngine") or {}
    return Storage(engine=str(engine.get("name", "unknown")), persistent=bool(engine.get("persistent", True)))


_READ_ACTIONS = frozenset({"find"})
_WRITE_ACTIONS = frozenset({"insert", "update"})


def access_of(status: Mapping[str, Any], database: str) -> Access:
    """Whether the authenticated users may read and write ``database``, from ``connectionStatus``.

    With no user authenticated ``can_read``/``can_write`` say what the listed
    privileges grant, which is nothing: the caller tells "access control is
    off" from "not logged in" by whether reading worked.
    """
    info = status.get("authInfo") or {}
    actions: set[str] = set()
    for privilege in info.get("authenticatedUserPrivileges") or ():
        if _covers(privilege.get("resource") or {}, database):
            actions.update(privilege.get("actions") or ())
    return Access(
        users=tuple(f"{u.get('user')}@{u.get('db')}" for u in info.get("authenticatedUsers") or ()),
        roles=tuple(f"{r.get('role')}@{r.get('db')}" for r in info.get("authenticatedUserRoles") or ()),
        can_read=actions >= _READ_ACTIONS,
        can_write=actions >= _WRITE_ACTIONS,
    )


def _covers(resource: Mapping[str, Any], database: str) -> bool:
    """A privilege's resource includes the log's collections: any resource, the database, or ``events``."""
    if resource.get("anyResource"):
        return True
    return resource.get("db") in ("", database) and resource.get("collection") in ("", "events")


def oplog_of(client: Any) -> OplogWindow:
    """The times of the oplog's first and last entries (``local.oplog.rs``, in natural order)."""
    oplog = client.local["oplog.rs"]
    ends = [list(oplog.find({}, {"ts": 1}).sort("$natural", order).limit(1)) for order in (1, -1)]
    if not ends[0] or not ends[1]:
        raise _NoAnswer("local.oplog.rs is empty or absent: this server keeps no oplog (not a replica set)")
    first, last = (_when(found[0].get("ts")) for found in ends)
    return OplogWindow(first=first, last=last)


def _when(ts: Any) -> datetime:
    if hasattr(ts, "as_datetime"):
        moment: datetime = ts.as_datetime()
        return moment
    raise _NoAnswer(f"an oplog entry's ts is {type(ts).__name__}, not a BSON timestamp")


class _NoAnswer(PyMongoError):
    """The server answered without the fact asked for: reported as ``Unknown`` like a refusal."""


def indexes_of(database: Any, collections: Sequence[str]) -> dict[str, dict[str, Any] | Unknown]:
    """Each collection's indexes as ``index_information`` gives them (none for a missing collection)."""

    def info(name: str) -> dict[str, Any]:
        return dict(database[name].index_information())

    return {name: probe(functools.partial(info, name)) for name in collections}


def count_of(collection: Any) -> int | Unknown:
    """Documents in ``collection`` from its metadata (no scan), or why it could not be counted."""
    return probe(lambda: int(collection.estimated_document_count()))


def home_facts(home: Path) -> HomeFacts:
    """Read an embedded home's journal read-only (mode, integrity, counts), and its disk and owner."""
    wal = home / f"{JOURNAL}-wal"
    return HomeFacts(
        home=home,
        writable=_writable(home),
        owner=_owner(home),
        free_bytes=_free(home),
        wal_bytes=_size(wal),
        journal=journal_facts(home / JOURNAL),
    )


def journal_facts(journal: Path) -> JournalFacts | Unknown:
    try:
        db, _ = open_to_read(journal)
    except StoreUnavailable as exc:
        return Unknown(str(exc))
    terminal = sorted(ev.RUN_TERMINAL)
    marks = ", ".join("?" * len(terminal))
    try:
        return JournalFacts(
            mode=_sql(db, "PRAGMA journal_mode"),
            integrity=_integrity(db),
            events=_sql(db, "SELECT count(*) FROM events"),
            runs=_sql(db, "SELECT count(*) FROM events WHERE type = ?", ev.RUN_SUBMITTED),
            finished=_sql(db, f"SELECT count(DISTINCT run) FROM events WHERE type IN ({marks})", *terminal),
        )
    finally:
        db.close()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _sql(db: sqlite3.Connection, query: str, *params: Any) -> Any:
    try:
        return db.execute(query, params).fetchone()[0]
    except sqlite3.Error as exc:
        return Unknown(f"SQLite: {exc}")


def _integrity(db: sqlite3.Connection) -> str | Unknown:
    """``ok``, or the first problems SQLite's ``quick_check`` finds (it reads every page once)."""
    try:
        rows = db.execute("PRAGMA quick_check(5)").fetchall()
    except sqlite3.Error as exc:
        return Unknown(f"SQLite: {exc}")
    return "; ".join(" ".join(str(row[0]).split()) for row in rows)  # one line: the table keeps a row each


def _writable(home: Path) -> bool:
    """Whether this user could own the home: create files in it (or create it) and write its journal."""
    place = home if home.exists() else next((p for p in home.parents if p.exists()), home)
    journal = home / JOURNAL
    return os.access(place, os.W_OK | os.X_OK) and (not journal.exists() or os.access(journal, os.W_OK))


def _owner(home: Path) -> int | None:
    """The live process named in ``owner.lock`` (an owner empties it when it stops; a killed one cannot)."""
    try:
        text = (home / OWNER_LOCK).read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    if not text.isdigit():
        return None
    pid = int(text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # alive, another user's
        return pid
    return pid


def _free(home: Path) -> int | Unknown:
    place = next((p for p in (home, *home.parents) if p.exists()), home)
    try:
        return shutil.disk_usage(place).free
    except OSError as exc:
        return Unknown(str(exc))
