"""``evenflow export`` and ``evenflow import``: a log as JSON Lines, one event per line, and back.

The format, version 1 and stable: each line is one event's stored document
(``orchestrator.core.events.to_doc``: ``_id``, ``v`` (the event schema),
``run``, ``seq``, ``type``, ``at``, ``node``, ``attempt``, ``command``,
``data``, ``by``, ``causation``, ``correlation``) as compact UTF-8 JSON, with
the values JSON lacks tagged as on the wire: ``{"$date": ISO 8601}``,
``{"$bytes": base64}``, ``{"$float": "NaN" | "Infinity" | "-Infinity"}``.
Nothing in it names a module or a class. A file holds whole runs, each run's
events in ``seq`` order; export streams (one run's events at a time on MongoDB,
the journal in order on the embedded store) and opens the store read-only.

Import appends a file's events in batches: it is idempotent (events stored
alike are skipped; a different event at a taken ``seq`` is refused), checks
that each run's events come in order from 1, and refuses a line that does not
decode with its number; what was imported before it stays.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from ..core import events as ev
from ..core.errors import CorruptEvent, InvalidOption, ProtocolError
from ..core.events import Event
from ..store import abilities, open_store
from ..transport import wire
from .timespec import parse_moment

FORMAT = 1
BATCH_EVENTS = 1_000


def to_line(event: Event) -> str:
    """One event as its line of the export format (no newline)."""
    return wire.dumps(ev.to_doc(event)).decode()


def from_line(text: str, number: int) -> Event:
    """The event a line holds; ``InvalidOption`` naming the line and the fix if it holds none."""
    try:
        return ev.from_doc(wire.loads(text.encode()))
    except (ProtocolError, CorruptEvent, AttributeError, TypeError) as exc:
        raise InvalidOption(
            f"line {number} is not an event of evenflow's export format ({exc}); give a file "
            "`evenflow export` wrote, whole"
        ) from None


def exported(store: Any, *, run: str | None, flow: str | None, since: datetime | None) -> Iterator[Event]:
    """The events of the runs chosen (all when no filter), whole runs, each in ``seq`` order."""
    if run is not None:
        yield from store.read(run)
        return
    can = abilities(store)
    if can.scan is not None:  # the embedded journal, in commit order: a run's submission comes first
        everything, chosen = flow is None and since is None, set[str]()
        for event in can.scan.scan():
            if everything:
                yield event
            elif event.type == ev.RUN_SUBMITTED and _chosen(event, flow, since):
                chosen.add(event.run)
            if not everything and event.run in chosen:
                yield event
        return
    if can.queries is None:
        raise InvalidOption("this store cannot be exported: give --home or a mongodb:// --store")
    events = can.queries.events
    match: dict[str, Any] = {}
    if flow is not None or since is not None:
        window = {"at": {"$gte": since}} if since else {}
        submissions = events.find({"type": ev.RUN_SUBMITTED, **window})  # the type_at index
        runs = {doc["run"] for doc in submissions if _chosen(ev.from_doc(doc), flow, since)}
        match = {"run": {"$in": sorted(runs)}}
    for doc in events.find(match).sort([("run", 1), ("seq", 1)]):  # the run_seq index, streamed
        yield ev.from_doc(doc)


def _chosen(submitted: Event, flow: str | None, since: datetime | None) -> bool:
    return (flow is None or submitted.data.get("name") == flow) and (since is None or submitted.at >= since)


def imported(store: Any, lines: Iterable[str]) -> tuple[int, int]:
    """Append the events of ``lines``; (events read, runs) once all are in. On a bad line, what came
    before it is appended before the error is raised (each run's events so far, in order)."""
    last: dict[str, int] = {}
    batch: list[Event] = []
    count = 0
    try:
        for number, text in enumerate(lines, start=1):
            if text.strip():
                batch.append(_next(from_line(text, number), last, number))
                count += 1
            if len(batch) >= BATCH_EVENTS:
                store.append(batch)
                batch = []
    finally:
        if batch:
            store.append(batch)
    return count, len(last)


def _next(event: Event, last: dict[str, int], number: int) -> Event:
    """``event`` if it is the next of its run in the file; else ``InvalidOption`` naming the line."""
    expected = last.get(event.run, 0) + 1
    if event.seq != expected:
        raise InvalidOption(
            f"line {number}: run {event.run} goes from seq {expected - 1} to {event.seq}; a file must "
            "hold whole runs, each in seq order, as `evenflow export` writes them"
        )
    last[event.run] = event.seq
    return event


def add_parsers(commands: Any, store_options: Any) -> None:
    export = commands.add_parser(
        "export",
        help="write runs as JSON Lines, one event per line",
        description="Write whole runs as JSON Lines, one event per line, each run in seq order, in "
        "evenflow's stable export format (see the README). Reads the store, never writes it.",
    )
    chosen = export.add_mutually_exclusive_group()
    chosen.add_argument("--run", metavar="RUN", help="only this run (default: every run)")
    chosen.add_argument("--flow", metavar="NAME", help="only the runs of this flow (default: every flow)")
    chosen.add_argument("--since", metavar="WHEN", help="only runs submitted since 1h, 2d or an ISO time")
    export.add_argument("--out", type=Path, metavar="FILE", help="write here (default: standard output)")
    store_options(export, prints_data=False)
    export.set_defaults(handler=export_command)
    load = commands.add_parser(
        "import",
        help="append the runs of an export file to a store",
        description="Append the events of a file `evenflow export` wrote. Importing a file again changes "
        "nothing; a run whose events differ from the store's is refused; a bad line is named.",
    )
    load.add_argument("file", type=Path, metavar="FILE", help="an export file ('-' for standard input)")
    store_options(load, prints_data=False)
    load.set_defaults(handler=import_command)


def export_command(args: argparse.Namespace) -> int:
    since = parse_moment(args.since) if args.since else None
    store = open_store(args.store, home=args.home, read_only=True)
    out: IO[str] = args.out.open("w", encoding="utf-8") if args.out else sys.stdout
    try:
        for event in exported(store, run=args.run, flow=args.flow, since=since):
            out.write(to_line(event) + "\n")
    finally:
        store.close()
        if args.out:
            out.close()
    return 0


def import_command(args: argparse.Namespace) -> int:
    store = open_store(args.store, home=args.home)
    try:
        source: IO[str] = sys.stdin if str(args.file) == "-" else args.file.open(encoding="utf-8")
        with source:
            events, runs = imported(store, source)
    finally:
        store.close()
    print(f"imported {events} event(s) of {runs} run(s) (events already there were skipped)")
    return 0
