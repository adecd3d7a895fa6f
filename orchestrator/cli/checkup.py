"""Judging a store's facts (``orchestrator.store.facts``): one row each, ``ok``, ``warn`` or ``fail``.

A ``fail`` is a blocker: evenflow cannot keep its promises there (a server
older than 6.0, no primary, a log no one can read, a damaged journal, a
clock far enough off to lose feed events). A ``warn`` works but weakens a
promise or a query. ``n/a`` marks a row that does not apply to this kind of
store. The thresholds are here, beside the words that explain them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..store.facts import HomeFacts, ServerFacts, Unknown
from ..store.mongo import FEED_WINDOW_S

OK, WARN, FAIL, NA = "ok", "warn", "fail", "n/a"

MIN_SERVER = (6, 0)
SKEW_WARN_S = 1.0
"""Leases are judged on each host's own clock, but ``at`` stamps and time queries are not."""
SKEW_FAIL_S = FEED_WINDOW_S / 2
"""Past this, a listener's overlap window (``FEED_WINDOW_S``) may skip events another host stamped."""
OPLOG_WARN_H = 24.0
"""A member down longer than the oplog window needs a full resync; a day is the usual floor."""
DISK_WARN = 1 << 30
DISK_FAIL = 64 << 20
"""Below this, the next appends to an embedded journal may fail."""
SERVER_ROWS = ("server version", "topology", "write concern", "read concern", "access", "clock skew",
               "oplog window")  # fmt: skip
HOME_ROWS = ("journal integrity", "owner", "free disk")


@dataclass(frozen=True, slots=True)
class Check:
    """One row of the doctor's table: what was checked, its status, what was found, and the fix."""

    check: str
    status: str
    value: str
    fix: str = ""


def not_applicable(names: Sequence[str], why: str) -> list[Check]:
    return [Check(name, NA, why) for name in names]


def server_checks(facts: ServerFacts, *, read_works: bool) -> list[Check]:
    """The rows only a MongoDB server has; ``read_works`` says whether counting the log succeeded."""
    return [
        _version(facts.version),
        _topology(facts.topology),
        _write_concern(facts.write_concern),
        _read_concern(facts.read_concern),
        _storage(facts.storage, facts.write_concern),
        _access(facts.access, read_works),
        _skew(facts.skew),
        _oplog(facts.oplog, facts.topology),
    ]


def _version(version: str | Unknown) -> Check:
    if isinstance(version, Unknown):
        return Check("server version", WARN, f"unknown ({version.reason})", "check the server is MongoDB 6+")
    parts = tuple(int(p) if p.isdigit() else 0 for p in version.split(".")[:2])
    if parts < MIN_SERVER:
        return Check("server version", FAIL, version, "upgrade to MongoDB 6.0 or later")
    return Check("server version", OK, version)


def _topology(topology: Any) -> Check:
    if isinstance(topology, Unknown):
        return Check("topology", FAIL, f"unknown ({topology.reason})", "check the URL reaches a mongod")
    if topology.mongos:
        return Check("topology", OK, "sharded cluster, through mongos")
    if topology.set_name is None:
        return Check("topology", WARN, "standalone: no majority, no failover",
                     "run a replica set (ops/ has a 3-member recipe)")  # fmt: skip
    members = len(topology.members)
    value = f"replica set {topology.set_name}, {members} member(s), primary {topology.primary or 'none'}"
    if topology.primary is None:
        return Check("topology", FAIL, value, "no primary, so no writes: check rs.status()")
    if members < 3:
        return Check("topology", WARN, value, "add members: surviving a failover takes 3")
    return Check("topology", OK, value)


def _write_concern(document: Mapping[str, Any]) -> Check:
    shown = {key: str(value).lower() if isinstance(value, bool) else value for key, value in document.items()}
    value = ", ".join(f"{key}={value}" for key, value in sorted(shown.items())) or "server default"
    if document.get("w") == "majority" and document.get("j") is True:
        return Check("write concern", OK, value)
    return Check("write concern", WARN, value, "drop w=/journal= from the URL (default w=majority, j=true)")


def _read_concern(level: str | None) -> Check:
    if level == "majority":
        return Check("read concern", OK, level)
    return Check("read concern", WARN, level or "server default (local)",
                 "reads may act on writes a failover rolls back: readConcernLevel=majority")  # fmt: skip


def _storage(storage: Any, write_concern: Mapping[str, Any]) -> Check:
    if isinstance(storage, Unknown):
        return Check("journaling", WARN, f"unknown ({storage.reason})", "grant clusterMonitor to see it")
    if not storage.persistent:
        return Check("journaling", FAIL, f"{storage.engine}: in memory",
                     "use wiredTiger: the log must survive a restart")  # fmt: skip
    if write_concern.get("j") is not True:
        return Check("journaling", WARN, f"{storage.engine}, but appends do not wait for the journal",
                     "drop journal=false from the URL")  # fmt: skip
    return Check("journaling", OK, f"{storage.engine}, appends wait for the journal (j=true)")


def _access(access: Any, read_works: bool) -> Check:
    if isinstance(access, Unknown):
        return Check("access", WARN, f"unknown ({access.reason})", "")
    if not access.users:
        if read_works:
            return Check("access", WARN, "access control is off: anyone who reaches it may write",
                         "enable authorization (ops/ has the roles)")  # fmt: skip
        return Check("access", FAIL, "not authenticated", "put user:password@ in the URL")
    who = f"{', '.join(access.users)} ({', '.join(access.roles) or 'no roles'})"
    if access.can_write:
        return Check("access", OK, f"{who}: read and write")
    if access.can_read:
        return Check("access", WARN, f"{who}: read only",
                     "fine for queries; the service needs readWrite")  # fmt: skip
    return Check("access", FAIL, f"{who}: cannot read the log", "grant read (queries) or readWrite (service)")


def _skew(skew: Any) -> Check:
    if isinstance(skew, Unknown):
        return Check("clock skew", WARN, f"unknown ({skew.reason})", "")
    off = max(abs(skew.seconds) - skew.rtt_s / 2, 0.0)
    value = f"{skew.seconds:+.3f} s (round trip {skew.rtt_s * 1000:.0f} ms)"
    if off >= SKEW_FAIL_S:
        return Check("clock skew", FAIL, value, "sync both clocks (NTP): listeners may skip events")
    if off >= SKEW_WARN_S:
        return Check("clock skew", WARN, value, "sync both clocks (NTP)")
    return Check("clock skew", OK, value)


def _oplog(oplog: Any, topology: Any) -> Check:
    if isinstance(oplog, Unknown):
        standalone = not isinstance(topology, Unknown) and topology.set_name is None
        if standalone or topology_is_mongos(topology):
            return Check("oplog window", NA, "no oplog here (standalone or mongos)")
        return Check("oplog window", WARN, f"unknown ({oplog.reason})", "grant clusterMonitor to see it")
    value = f"{oplog.hours:.1f} h ({oplog.first:%Y-%m-%d %H:%M} to {oplog.last:%Y-%m-%d %H:%M} UTC)"
    if oplog.hours < OPLOG_WARN_H:
        return Check("oplog window", WARN, value, "grow the oplog (replSetResizeOplog) to a day or more")
    return Check("oplog window", OK, value)


def topology_is_mongos(topology: Any) -> bool:
    return not isinstance(topology, Unknown) and bool(topology.mongos)


def index_checks(
    expected: Mapping[str, Mapping[str, Any]], present: Mapping[str, Mapping[str, Any] | Unknown]
) -> list[Check]:
    """A row per collection: every expected index present with its keys (and TTL, if it has one)."""
    rows = []
    for collection, specs in expected.items():
        name = f"indexes on {collection}"
        found = present.get(collection, Unknown("not asked"))
        if isinstance(found, Unknown):
            rows.append(Check(name, WARN, f"unknown ({found.reason})", "grant read to list them"))
            continue
        missing = [index for index in specs if index not in found]
        differ = [index for index, want in specs.items() if index in found and not _same(want, found[index])]
        value = f"{len(specs) - len(missing) - len(differ)} of {len(specs)} as expected"
        if missing or differ:
            wrong = [
                f"{what}: {', '.join(names)}"
                for what, names in (("missing", missing), ("differ", differ))
                if names
            ]
            fix = "evenflow init --store URL" + (" (drop those that differ first)" if differ else "")
            rows.append(Check(name, WARN, f"{value}: {'; '.join(wrong)}", fix))
        else:
            rows.append(Check(name, OK, value))
    return rows


def _same(want: Mapping[str, Any], info: Mapping[str, Any]) -> bool:
    keys = [(str(field), _direction(order)) for field, order in info.get("key", ())]
    if keys != [(field, _direction(order)) for field, order in want["key"]]:
        return False
    return all(info.get(option) == value for option, value in want.items() if option != "key")


def _direction(order: Any) -> Any:
    return int(order) if isinstance(order, int | float) else order


def count_check(name: str, count: int | Unknown, fix: str = "grant read on the database") -> Check:
    if isinstance(count, Unknown):
        return Check(name, WARN, f"unknown ({count.reason})", fix)
    return Check(name, OK, f"{count:,}")


def home_checks(facts: HomeFacts) -> list[Check]:
    """The rows of an embedded home: where, who may write, journal mode and integrity, counts, disk."""
    journal = facts.journal
    if isinstance(journal, Unknown):
        return [Check("store", FAIL, str(facts.home), journal.reason), _disk(facts.free_bytes)]
    writable = "this user may write" if facts.writable else "read only for this user"
    rows = [
        Check("store", OK, f"{facts.home} (embedded; {writable})"),
        _journal_mode(journal.mode, facts.wal_bytes),
        _integrity(journal.integrity),
        Check("owner", OK, f"process {facts.owner} runs an orchestrator here" if facts.owner else "none"),
        count_check("events", journal.events, ""),
        count_check("runs", journal.runs, ""),
    ]
    if isinstance(journal.runs, int) and isinstance(journal.finished, int):
        rows.append(Check("unfinished runs", OK, f"{journal.runs - journal.finished:,}"))
    rows.append(_disk(facts.free_bytes))
    return rows


def _journal_mode(mode: str | Unknown, wal_bytes: int) -> Check:
    if isinstance(mode, Unknown):
        return Check("journaling", FAIL, mode.reason, "check the journal file")
    if mode.lower() != "wal":
        return Check(
            "journaling", WARN, f"SQLite journal mode {mode}", "start an orchestrator here (sets WAL)"
        )
    return Check("journaling", OK, f"SQLite WAL, synchronous=full ({wal_bytes:,} bytes in the WAL)")


def _integrity(result: str | Unknown) -> Check:
    if isinstance(result, Unknown) or result != "ok":
        reason = result.reason if isinstance(result, Unknown) else result
        return Check("journal integrity", FAIL, reason[:160], "restore the home from a backup")
    return Check("journal integrity", OK, "quick_check ok")


def _disk(free: int | Unknown) -> Check:
    if isinstance(free, Unknown):
        return Check("free disk", WARN, f"unknown ({free.reason})", "")
    value = f"{free / (1 << 30):.1f} GiB free"
    if free < DISK_FAIL:
        return Check("free disk", FAIL, value, "free space: appends will fail")
    if free < DISK_WARN:
        return Check("free disk", WARN, value, "free space, or move the home")
    return Check("free disk", OK, value)
