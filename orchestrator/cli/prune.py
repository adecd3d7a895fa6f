"""``evenflow prune``: removing whole runs that finished long ago (retention)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..core.errors import ConfigurationError
from ..core.timespec import parse_moment
from ..store import abilities, open_store
from .render import to_json


def add_parser(commands: Any, store_options: Any) -> None:
    prune = commands.add_parser(
        "prune",
        help="remove whole runs that finished before a time",
        description="Remove every run that finished (succeeded, failed or cancelled) before "
        "--finished-before, in batches of 500 runs, each batch one transaction that also logs a run of "
        "flow evenflow.prune naming what it removed. Unfinished runs and runs a listener has not read to "
        "the end are kept. Killed, it leaves whole runs; run it again to go on. On the embedded store "
        "stats and failures keep the pruned runs' whole hours, and prune needs the home to itself.",
    )
    prune.add_argument("--finished-before", required=True, metavar="WHEN",
                       help="30d, 12h or an ISO time: runs that ended before it go")  # fmt: skip
    prune.add_argument("--dry-run", action="store_true", help="count what would go, remove nothing")
    prune.add_argument("--archive", type=Path, metavar="FILE",
                       help="first append the runs to FILE in the export format (default: none)")  # fmt: skip
    store_options(prune)
    prune.set_defaults(handler=prune_command)


@contextmanager
def _archive(store: Any, path: Path | None) -> Iterator[Callable[[list[str]], None] | None]:
    """What keeps each batch's runs in ``path`` (export lines, appended, synced) before they go."""
    if path is None:
        yield None
        return
    from .exchange import to_line

    with path.open("a", encoding="utf-8") as out:

        def keep(runs: list[str]) -> None:
            out.writelines(to_line(event) + "\n" for run in runs for event in store.read(run))
            out.flush()
            os.fsync(out.fileno())

        yield keep


def prune_command(args: argparse.Namespace) -> int:
    before = parse_moment(args.finished_before, option="--finished-before")
    store = open_store(args.store, home=args.home)
    try:
        can = abilities(store).prune
        if can is None:
            raise ConfigurationError(
                "this store cannot prune: prune works on the embedded store and MongoDB, "
                "not on an in-memory one"
            )
        with _archive(store, args.archive) as keep:
            done = can.prune(before, dry_run=args.dry_run, keep=keep)
    finally:
        store.close()
    if args.json:
        print(to_json({"finished_before": before, "dry_run": args.dry_run, **asdict(done)}))
        return 0
    verb = "would remove" if args.dry_run else "removed"
    kept = f"; kept {done.kept_for_listeners} a listener has not read yet" if done.kept_for_listeners else ""
    records = f", recorded in {len(done.records)} run(s) of flow evenflow.prune" if done.records else ""
    what = f"{done.runs} run(s), {done.events} event(s)"
    print(f"{verb} {what} that finished before {before:%Y-%m-%d %H:%M:%S}{kept}{records}")
    return 0
