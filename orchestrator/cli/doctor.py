"""``evenflow doctor``: is this store fit to hold the log? A table of checks, each ok, warn or fail.

Facts are read without writing (``orchestrator.store.facts``), judged into
rows (``checkup``), and printed here. The store is opened read-only, so the
doctor works for a user holding only ``read``; an embedded home is read as
the query commands read it, never created nor locked. Rows that do not apply
to the kind of store say ``n/a``. Exit 0 when no row fails, ``EXIT_BLOCKER`` (1) when one does;
a store that cannot be reached at all is an error (one line, exit 2).

The expected collections and indexes are ``declared_indexes``', the same
list ``evenflow init`` creates from.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

from ..core.errors import ConfigurationError
from .render import table, to_json

if TYPE_CHECKING:
    from .checkup import Check

EXIT_BLOCKER = 1
DOCTOR_TIMEOUT_MS = 10_000
"""PyMongo's ``timeoutMS`` for each call unless the URL sets one: a hung server is a row, not a hang."""
ORDER = ("store", "server version", "topology", "write concern", "read concern", "journaling",
         "journal integrity", "access", "owner", "clock skew", "oplog window", "indexes", "events", "runs",
         "unfinished runs", "free disk")  # fmt: skip


def add_parser(commands: Any, store_options: Any) -> None:
    doctor = commands.add_parser(
        "doctor",
        help="check a store: server, concerns, access, indexes, clock, oplog, counts",
        description="Connect to the store read-only and print one row per check, each ok, warn or fail "
        "with the fix. Exit 0 when nothing fails, 1 when a row fails (a blocker), 2 when the store "
        "cannot be reached at all.",
    )
    store_options(doctor)
    doctor.set_defaults(handler=doctor_command)


def doctor_command(args: argparse.Namespace) -> int:
    label, checks = diagnose(args.store, args.home)
    blockers = sum(check.status == "fail" for check in checks)
    if args.json:
        print(to_json({"store": label, "blockers": blockers, "checks": [asdict(check) for check in checks]}))
    else:
        rows = [(c.check, c.status, c.value, c.fix or "-") for c in checks]
        print(table(("check", "status", "value", "fix"), rows))
    return EXIT_BLOCKER if blockers else 0


def diagnose(url: str | None, home: str | None) -> tuple[str, list[Check]]:
    """The store's label and its rows in ``ORDER``: the store ``url`` names, or the embedded ``home``."""
    scheme = urlsplit(url).scheme.lower() if url else "embedded"
    if scheme == "embedded":
        return _embedded(home_of(url, home))
    if scheme in ("mongodb", "mongodb+srv", "mongomock"):
        return _mongo(url or "", server=scheme != "mongomock")
    if scheme == "memory":
        return _memory()
    from ..store import open_store

    open_store(url)  # raises the store's own error, naming the URL forms
    raise ConfigurationError(f"evenflow doctor cannot check a store at {url!r}")


def _embedded(home: Path) -> tuple[str, list[Check]]:
    from ..store.facts import home_facts
    from . import checkup

    rows = checkup.home_checks(home_facts(home))
    rows += checkup.not_applicable(checkup.SERVER_ROWS, "embedded store: no server")
    rows += checkup.not_applicable(("indexes",), "none needed: read models are built in memory")
    return str(home), _ordered(rows)


def _memory() -> tuple[str, list[Check]]:
    from . import checkup

    fix = "name a store that outlives the process"
    rows = [checkup.Check("store", checkup.WARN, "memory:// (this process only, always empty)", fix)]
    rows += checkup.not_applicable((*checkup.SERVER_ROWS, *checkup.HOME_ROWS), "memory store")
    return "memory://", _ordered(rows)


def _mongo(url: str, *, server: bool) -> tuple[str, list[Check]]:
    from ..store import abilities, open_store
    from ..store.facts import count_of, indexes_of, server_facts
    from ..store.mongo import redact
    from . import checkup
    from .declared_indexes import expected_indexes

    options: dict[str, Any] = {"timeoutMS": DOCTOR_TIMEOUT_MS} if server and not _sets_timeout(url) else {}
    store = open_store(url, read_only=True, **options)
    try:
        beside = abilities(store).read_models
        assert beside is not None, "a MongoDB store keeps its collections in a database"
        events, database = beside.events, beside.database
        logged = count_of(events)
        expected = expected_indexes()
        rows = [checkup.Check("store", checkup.OK, f"{redact(url)} (database {database.name})")]
        if server:
            rows += checkup.server_checks(server_facts(events), read_works=isinstance(logged, int))
        else:
            gone = "mongomock: in memory, gone with the process"
            rows.append(
                checkup.Check("journaling", checkup.WARN, gone, "use mongodb:// or the embedded store")
            )
            rows += checkup.not_applicable(checkup.SERVER_ROWS, "mongomock: no server")
        rows += checkup.index_checks(expected, indexes_of(database, list(expected)))
        rows += [
            checkup.count_check("events", logged),
            checkup.count_check("runs", count_of(database["runs"])),
        ]
        rows += checkup.not_applicable(checkup.HOME_ROWS, "embedded store only")
    finally:
        store.close()
    return redact(url), _ordered(rows)


def _sets_timeout(url: str) -> bool:
    return any(key.lower() == "timeoutms" for key, _ in parse_qsl(urlsplit(url).query))


def _ordered(rows: list[Check]) -> list[Check]:
    """Rows in ``ORDER`` (index rows where ``indexes`` stands); a stable sort keeps collections in order."""

    def rank(check: Check) -> int:
        name = "indexes" if check.check.startswith("indexes") else check.check
        return ORDER.index(name) if name in ORDER else len(ORDER)

    return sorted(rows, key=rank)


def home_of(url: str | None, home: str | None) -> Path:
    """The embedded home ``embedded:///abs/path`` or ``--home`` names, else the default one."""
    from ..store import default_home

    path = unquote(urlsplit(url).path) if url else ""
    if path and not Path(path).is_absolute():
        raise ConfigurationError(
            f"embedded store URL {url!r} must name an absolute directory: embedded:///path"
        )
    if path:
        return Path(path)
    return Path(home) if home else default_home()
