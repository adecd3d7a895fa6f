"""``evenflow export`` and ``evenflow import``: whole runs as JSON Lines, one event per line, and back.

The line format is ``event_lines``; reading runs out of a store and appending
them back, checked and in batches, is ``store.exchange``. This module joins the
two to files: export writes through a ``.partial`` file renamed when whole, so a
file that exists under its name is complete; import reads a line at a time, each
at most ``MAX_LINE_BYTES``, so neither command holds more than a batch.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from ..core.errors import EvenflowError, InvalidOption
from ..core.ports import EventStore
from ..core.timespec import parse_moment
from ..store import open_store
from ..store.exchange import Importer, Selection
from ..store.exchange import exported as _exported
from .event_lines import MAX_LINE_BYTES, from_line, line_bytes, to_line
from .render import to_json

__all__ = ["FORMAT_HELP", "add_parsers", "exported", "from_line", "imported", "to_line"]

FORMAT_HELP = """\
format (version 1, stable): JSON Lines, UTF-8, one event per line, each run whole
and in seq order (runs may come in any order, even interleaved). Each line is one
JSON object with these fields, and no others:
  _id          "<run>/<seq, 10 digits>"
  v            1, the event schema; a reader refuses a version it does not know
  run          the run's id                    seq      1, 2, ... with no gaps
  type         run.submitted, command.failed, ... or a command's own event type
  at           when it was logged (UTC)        node     the node's path, or null
  attempt      the attempt number, or null     command  the command's name, or null
  data         an object: arguments, result, error, ...
  by           the orchestrator or worker that logged it, or null
  causation    the event that caused it, or null
  correlation  the run that started its chain, or null
Values JSON lacks are tagged: {"$date": "2026-03-01T12:00:00.123000+00:00"},
{"$bytes": "<base64>"}, {"$float": "NaN" | "Infinity" | "-Infinity"}. Nothing
names a Python module or class. export | import | export gives the same bytes."""


def exported(
    store: EventStore, *, run: str | None = None, flow: str | None = None, since: datetime | None = None
) -> Iterator[Any]:
    """The events of the runs chosen (every run when none is), whole runs, each in ``seq`` order."""
    return _exported(store, Selection(run=run, flow=flow, since=since))


def imported(store: EventStore, lines: Iterable[str | bytes]) -> tuple[int, int]:
    """Append the events ``lines`` hold (numbered from 1); (events, runs) read.

    On a bad line, every event of the lines before it is appended before the
    error is raised: nothing read before it is lost.
    """
    importer = Importer(store)
    try:
        for number, line in enumerate(lines, start=1):
            if line.strip():
                importer.add(from_line(line, number), number)
    except EvenflowError:
        importer.flush()
        raise
    importer.flush()
    return importer.events, importer.runs


def add_parsers(commands: Any, store_options: Any) -> None:
    """Register ``export`` and ``import`` (from ``cli._parser``)."""
    export = commands.add_parser(
        "export",
        help="write runs as JSON Lines, one event per line",
        description="Write whole runs as JSON Lines in evenflow's stable export format. The store is "
        "opened read-only and read as it is written out (a page of the journal, or a run, at a time); "
        "--out is written as FILE.partial and renamed when whole.",
        epilog=FORMAT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    chosen = export.add_mutually_exclusive_group()
    chosen.add_argument("--run", metavar="RUN", help="only this run (default: every run)")
    chosen.add_argument("--flow", metavar="NAME", help="only the runs of this flow (default: every flow)")
    chosen.add_argument(
        "--since",
        metavar="WHEN",
        help="only runs submitted at or after 1h, 2d or an ISO time (default: ever)",
    )
    export.add_argument("--out", type=Path, metavar="FILE", help="write here (default: standard output)")
    store_options(export, prints_data=False)
    export.set_defaults(handler=export_command)
    load = commands.add_parser(
        "import",
        help="append the runs of an export file to a store",
        description="Append the events of a file `evenflow export` wrote, a batch at a time. Importing "
        "a file again changes nothing; each run's seqs must go on by one from 1 (or from the last the "
        "store holds); a gap, an event the store holds otherwise, or a damaged line is refused by its "
        "line number, and the lines before it stay imported.",
    )
    load.add_argument("file", type=Path, metavar="FILE", help="an export file ('-' for standard input)")
    store_options(load)
    load.set_defaults(handler=import_command)


def export_command(args: argparse.Namespace) -> int:
    chosen = Selection(run=args.run, flow=args.flow, since=parse_moment(args.since) if args.since else None)
    store = open_store(args.store, home=args.home, read_only=True)
    try:
        with _output(args.out) as out:
            for event in _exported(store, chosen):
                out.write(line_bytes(event) + b"\n")
    finally:
        store.close()
    return 0


def import_command(args: argparse.Namespace) -> int:
    store = open_store(args.store, home=args.home)
    try:
        with _input(args.file) as source:
            events, runs = imported(store, _bounded(source))
    finally:
        store.close()
    if args.json:
        print(to_json({"file": str(args.file), "events": events, "runs": runs}))
    else:
        print(f"imported {events} event(s) of {runs} run(s); events the store held already were kept")
    return 0


@contextmanager
def _output(path: Path | None) -> Iterator[IO[bytes]]:
    """Standard output, or ``path`` written as ``path.partial`` and renamed once it is whole and synced."""
    if path is None:
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    partial = path.with_name(path.name + ".partial")
    try:
        out = partial.open("wb")
    except OSError as exc:
        raise InvalidOption(
            f"cannot write {partial}: {exc.strerror}; give --out a file in a writable directory"
        ) from None
    try:
        with out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


@contextmanager
def _input(path: Path) -> Iterator[IO[bytes]]:
    if str(path) == "-":
        yield sys.stdin.buffer
        return
    try:
        source = path.open("rb")
    except OSError as exc:
        raise InvalidOption(
            f"cannot read {path}: {exc.strerror}; give a file `evenflow export` wrote"
        ) from None
    with source:
        yield source


def _bounded(source: IO[bytes]) -> Iterator[bytes]:
    """The lines of ``source``, each read only up to ``MAX_LINE_BYTES`` (no line is held whole past that)."""
    number = 0
    while line := source.readline(MAX_LINE_BYTES + 1):
        number += 1
        if len(line) > MAX_LINE_BYTES:
            raise InvalidOption(
                f"line {number} is longer than {MAX_LINE_BYTES:,} bytes, more than any event takes; "
                "give a file `evenflow export` wrote"
            )
        yield line
