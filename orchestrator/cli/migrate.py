"""``evenflow migrate --from HOME --to URL``: copy an embedded home's log into another store.

The copy itself is ``orchestrator.store.migrate.migrate`` (streaming,
idempotent, resumable, verified by folding); here it is given its stores:
the home, held with its owner lock so no orchestrator writes to it meanwhile,
and the target, opened as any orchestrator would open it. Exit 0 when every
run was copied and verified, ``EXIT_INCOMPLETE`` (1) when some runs of the
home could not be read (named on the summary); errors exit 2 in one line.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from ..core.errors import ConfigurationError
from . import logs
from .arguments import home, whole
from .render import table, to_json

EXIT_INCOMPLETE = 1
BATCH = 100
"""Runs per batch: one feed page, one append and one read-back of each run per batch."""
_IN_MEMORY = ("memory", "mongomock")


def add_parser(commands: Any) -> None:
    migrate = commands.add_parser(
        "migrate",
        help="copy an embedded home's log into MongoDB (or another home)",
        description="Copy every run of the embedded store in HOME into the store at URL, BATCH runs at a "
        "time, then fold each run in both to check they agree. Safe to run again, or after a kill: "
        "events already copied are skipped. A target holding other events for a run is refused. "
        "Exit 0 when every run was copied and verified, 1 when some runs of HOME could not be read.",
    )
    migrate.add_argument(
        "--from",
        dest="source",
        required=True,
        type=home,
        metavar="HOME",
        help="directory of the embedded store to copy (required; read, never changed)",
    )
    migrate.add_argument(
        "--to",
        dest="target",
        required=True,
        metavar="URL",
        help="the store to copy into: mongodb://... or embedded:///other/directory (required)",
    )
    migrate.add_argument(
        "--batch",
        type=whole,
        default=BATCH,
        metavar="N",
        help=f"runs read, copied and verified together [default {BATCH}]",
    )
    migrate.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    logs.add_options(migrate)
    migrate.set_defaults(handler=migrate_command)


def migrate_command(args: argparse.Namespace) -> int:
    from ..store import open_store
    from ..store.migrate import migrate, quiet_home
    from ..store.mongo import redact

    source_home = Path(args.source).expanduser().resolve()
    _check_target(args.target, source_home)
    with quiet_home(source_home):
        source = open_store(None, home=source_home, read_only=True)
        try:
            target = open_store(args.target)
            try:
                done = migrate(source, target, batch=args.batch)
            finally:
                target.close()
        finally:
            source.close()
    summary = {
        "from": str(source_home),
        "to": redact(args.target),
        "runs": done.runs,
        "copied": done.copied,
        "skipped": done.skipped,
        "verified": done.verified,
        "unreadable": done.unreadable,
        "complete": done.complete,
    }
    print(to_json(summary) if args.json else _table(summary))
    return 0 if done.complete else EXIT_INCOMPLETE


def _check_target(url: str, source: Path) -> None:
    """Refuse a target the copy would be lost in (memory) or that is the source itself."""
    scheme = urlsplit(url).scheme.lower()
    if scheme in _IN_MEMORY:
        raise ConfigurationError(
            f"--to {scheme}:// is this process's memory, gone when migrate exits; "
            "give mongodb://... or embedded:///directory"
        )
    if scheme != "embedded":
        return
    from ..store import default_home

    path = unquote(urlsplit(url).path)
    if (Path(path) if path else default_home()).expanduser().resolve() == source:
        raise ConfigurationError(f"--to names {source}, the home --from copies; give another store")


def _table(summary: dict[str, Any]) -> str:
    rows: list[tuple[str, Any]] = [
        ("from", summary["from"]),
        ("to", summary["to"]),
        ("runs", summary["runs"]),
        ("copied", f"{summary['copied']} events"),
        ("skipped", f"{summary['skipped']} events already there"),
        ("verified", f"{summary['verified']} of {summary['runs']} runs fold to the same state"),
    ]
    for run, why in summary["unreadable"].items():
        rows.append(("unreadable", f"{run}: {why}"))
    return table(("field", "value"), rows)
