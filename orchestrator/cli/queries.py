"""``evenflow runs | status | audit | stats | failures``: the log answering questions.

Each opens the store read-only and writes nothing, so a MongoDB user holding
only the ``read`` role may run them (and the embedded store may be read while
an orchestrator runs); it runs one projection and prints an aligned table, or
exact JSON with ``--json``. ``runs`` answers as the ``runs`` read model would
once caught up with the log: on MongoDB the stored collection, with the runs it
lags (or all, when it is missing) recomputed from the log in memory; on the
embedded store it is rebuilt in memory from the journal. ``audit`` shows a
run's whole chain (the run first submitted and every run listeners started in
answer to the chain's events), with a ``run`` column when it holds more than
one run; ``--run-only`` shows the run alone. ``init`` (``init_store.py``)
creates what they read.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from datetime import UTC, datetime
from typing import Any

from ..core.errors import ConfigurationError, CorruptEvent, RunNotFound
from ..core.events import KNOWN_TYPES, Event
from ..core.ports import EventStore
from ..store import StoreAbilities, abilities, open_store
from .arguments import run_id
from .render import table, to_json
from .timespec import parse_moment


class Source:
    """What the query commands read: the log's ``events`` collection and the ``runs`` read model.

    On a store that keeps read models beside its log (MongoDB) both are stored
    collections, read as they stand. Elsewhere ``runs`` is rebuilt in memory by
    feeding the journal through the same reducer the engine uses, and
    ``events`` (the embedded store's in-process MongoDB mirror) is loaded only
    by the commands that aggregate over events.
    """

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.abilities = abilities(store)

    @property
    def events(self) -> Any:
        if self.abilities.history is not None:  # only the runs a pipeline names, where it names them
            return self.abilities.history.indexed_events
        if self.abilities.queries is None:
            raise ConfigurationError(
                "this store has no collection to query; use the embedded store or mongodb://"
            )
        return self.abilities.queries.events

    def history(self, **query: Any) -> Any:
        """A page of ``run_history`` over ``runs`` as if caught up with the log, writing nothing."""
        from projections import run_history
        from projections.run_history import indexed_history

        if self.abilities.history is not None:
            page = indexed_history(self.abilities.history.run_page, self._folded, **query)
            if page is not None:
                return page
        if self.abilities.read_models is None:
            return run_history(self._rebuilt_runs(), **query)
        return _history_beside(self.events, self.abilities.read_models.database["runs"], query)

    def _folded(self, run: str) -> Any:
        """The ``runs`` row of ``run`` folded from its own events; None (said once) for a damaged run."""
        from projections.run_tally import tally

        try:
            return tally(run, self.store.read(run))
        except CorruptEvent as exc:
            print(f"evenflow: skipping run {run}: {exc}", file=sys.stderr)
            return None

    def _rebuilt_runs(self) -> Any:
        from projections import RunsProjector

        corrupt: dict[str, CorruptEvent] = {}
        events = list(_every_event(self.abilities, lambda run, exc: corrupt.setdefault(run, exc)))
        for run, exc in corrupt.items():
            print(f"evenflow: skipping run {run}: {exc}", file=sys.stderr)
        projector = RunsProjector.in_memory(_memory_collection())
        projector.apply([event for event in events if event.run not in corrupt])
        return projector.runs

    def status(self, run: str) -> Any:
        from projections import run_status
        from projections.run_tally import tally

        if self.abilities.read_models is not None:
            return run_status(self.events, run)
        events = self.store.read(run)
        return tally(run, events) if events else None


def _history_beside(events: Any, stored: Any, query: dict[str, Any]) -> Any:
    """``run_history(stored, **query)`` as it would answer once ``catch_up`` brought ``stored`` up to
    the log, read-only (a ``read`` user cannot catch it up, and a query should not).

    The runs whose stored document is behind the log, or missing, are recomputed
    from the log with the pipeline ``catch_up`` writes, into a private in-memory
    collection. The page is drawn from both and merged in the read model's order;
    the stored page is asked for one more row per stale document, and those are
    dropped.
    """
    from projections import run_history
    from projections.run_history import Page, encode_cursor, run_history_pipeline
    from projections.run_status import RunStatus

    behind, stale = _lagging(events, stored)
    if not behind:
        return run_history(stored, **query)
    pipeline = run_history_pipeline(**query)
    limit = int(pipeline[-1]["$limit"]) - 1
    wider = [*pipeline[:-1], {"$limit": limit + 1 + len(stale)}]
    docs = [doc for doc in stored.aggregate(wider) if doc["_id"] not in stale]
    docs += _recomputed(events, behind).aggregate(pipeline)
    docs.sort(key=_newest_first, reverse=True)
    rows = [RunStatus.from_doc(doc) for doc in docs[:limit]]
    return Page(rows, encode_cursor(rows[-1]) if len(docs) > limit and rows else None)


def _lagging(events: Any, stored: Any) -> tuple[list[str], set[str]]:
    """The runs whose stored document is behind the log or missing (``catch_up``'s test), and the
    subset that has a (stale) document."""
    from projections.read_models import LAST_SEQ_PIPELINE

    heads = {doc["_id"]: doc["last_seq"] for doc in events.aggregate(LAST_SEQ_PIPELINE, allowDiskUse=True)}
    held = {doc["_id"]: doc.get("last_seq", 0) for doc in stored.find({}, {"last_seq": 1})}
    behind = sorted(run for run, last_seq in heads.items() if held.get(run, 0) < last_seq)
    return behind, {run for run in behind if run in held}


def _recomputed(events: Any, runs: list[str]) -> Any:
    """A private in-memory ``runs`` holding the documents ``catch_up`` would write for ``runs``."""
    from projections.documents import chunks
    from projections.read_models import RUNS_PER_QUERY
    from projections.run_status import run_status_pipeline

    fresh = _memory_collection()
    for group in chunks(runs, RUNS_PER_QUERY):
        docs = list(events.aggregate(run_status_pipeline(group)))
        if docs:
            fresh.insert_many(docs)
    return fresh


def _newest_first(doc: dict[str, Any]) -> tuple[bool, datetime, str]:
    """``run_history``'s order, ``{submitted_at: -1, _id: -1}``, as a key to sort by with ``reverse``:
    a missing time sorts last, as BSON null does."""
    at = doc.get("submitted_at")
    if isinstance(at, datetime) and at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return (isinstance(at, datetime), at if isinstance(at, datetime) else _EPOCH, str(doc["_id"]))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _memory_collection() -> Any:
    from ..store.faithful_mock import client

    return client()["evenflow"]["runs"]


def _every_event(can: StoreAbilities, on_corrupt: Callable[[str, CorruptEvent], Any]) -> Iterator[Event]:
    """The whole log in order: scanned where the store can, else read from its ``events`` collection."""
    if can.scan is not None:
        yield from can.scan.scan(on_corrupt)
    elif can.queries is not None:
        from ..store.encoding import decode

        yield from (decode(doc) for doc in can.queries.events.find({}).sort([("run", 1), ("seq", 1)]))


@contextmanager
def source(args: argparse.Namespace) -> Iterator[Source]:
    store = open_store(args.store, home=args.home, read_only=True)
    try:
        yield Source(store)
    finally:
        store.close()


# --- the commands ----------------------------------------------------------------------------


def runs_command(args: argparse.Namespace) -> int:
    with source(args) as src:
        page = src.history(
            state=args.state, flow=args.flow, since=_since(args), limit=args.limit, after=args.after
        )
    if args.json:
        _print_json({"runs": [_plain(row) for row in page.rows], "next": page.next})
        return 0
    rows = [
        (r.run, r.flow, r.state, _time(r.submitted_at), r.duration_s, _nodes(r.nodes), r.attempts)
        for r in page.rows
    ]
    print(table(("run", "flow", "state", "submitted", "duration_s", "nodes", "attempts"), rows))
    if page.next:
        print(f"\nmore: evenflow runs --after {page.next}")
    return 0


def status_command(args: argparse.Namespace) -> int:
    with source(args) as src:
        status = src.status(args.run)
    if status is None:
        raise RunNotFound(args.run)
    if args.json:
        _print_json(_plain(status))
        return 0
    fields = [
        ("run", status.run),
        ("flow", status.flow),
        ("state", status.state),
        ("submitted", _time(status.submitted_at)),
        ("ended", _time(status.ended_at)),
        ("duration_s", status.duration_s),
        ("nodes", _nodes(status.nodes)),
        ("attempts", status.attempts),
        ("result", status.result) if status.state == "succeeded" else ("error", status.error),
    ]
    print(table(("field", "value"), [(name, _short(value)) for name, value in fields]))
    return 0


def audit_command(args: argparse.Namespace) -> int:
    from projections import audit_chain, audit_trail

    with source(args) as src:
        trail = (audit_trail if args.run_only else audit_chain)(src.events, args.run)
    if not trail:
        raise RunNotFound(args.run)
    headers: tuple[str, ...] = ("seq", "at", "node", "by", "caused by", "what happened")
    chain = len({e.run for e in trail}) > 1

    def row(e: Any) -> tuple[Any, ...]:
        cells = (e.seq, _time(e.at), e.node, _who(e), _cause(e.causation, e.run), e.summary)
        return (e.run, *cells) if chain else cells

    return _emit(args, trail, ("run", *headers) if chain else headers, row)


def stats_command(args: argparse.Namespace) -> int:
    from projections import command_stats

    with source(args) as src:
        stats = command_stats(src.events, since=_since(args), until=None)
    headers = ("command", "calls", "ok", "failed", "retries", "mean_s", "p95_s", "max_s")
    return _emit(args, stats, headers, _stats_row)


def failures_command(args: argparse.Namespace) -> int:
    from projections import failures

    with source(args) as src:
        groups = failures(src.events, since=_since(args), until=None)
    headers = ("error", "command", "count", "latest", "where", "message")
    return _emit(args, groups, headers, _failure_row)


def _stats_row(s: Any) -> tuple[Any, ...]:
    durations = (s.mean_duration_s, s.p95_duration_s, s.max_duration_s)
    return (s.command, s.calls, s.successes, s.failures, s.retries, *durations)


def _failure_row(g: Any) -> tuple[Any, ...]:
    latest = g.latest
    return (
        g.error_type,
        g.command,
        g.count,
        _time(latest.at),
        f"{latest.run}/{latest.node}",
        _line(latest.message),
    )


def _emit(
    args: argparse.Namespace,
    items: list[Any],
    headers: tuple[str, ...],
    row: Callable[[Any], tuple[Any, ...]],
) -> int:
    """Exact JSON with ``--json``, else an aligned table of one row per item."""
    if args.json:
        _print_json([_plain(item) for item in items])
    else:
        print(table(headers, [row(item) for item in items]))
    return 0


def _since(args: argparse.Namespace) -> datetime | None:
    return parse_moment(args.since) if args.since else None


# --- helpers ---------------------------------------------------------------------------------


def add_parsers(commands: Any, common: Any) -> None:
    """Register the query subcommands on the CLI's parser."""
    runs = commands.add_parser("runs", help="list runs, newest first", description="List runs, newest first.")
    runs.add_argument("--state", choices=("running", "succeeded", "failed", "cancelled"),
                      help="only runs in this state (default: any)")  # fmt: skip
    runs.add_argument("--flow", help="only runs of this flow name (default: any)")
    runs.add_argument(
        "--since", metavar="WHEN", help="submitted after: 15m, 1h, 2d or an ISO time (default: ever)"
    )
    runs.add_argument("--limit", type=int, default=20, help="rows per page [default 20]")
    runs.add_argument(
        "--after",
        metavar="CURSOR",
        help="the next page, as printed at the end of the last one (default: first)",
    )
    common(runs)
    runs.set_defaults(handler=runs_command)
    for name, handler, one_run, what in (
        ("status", status_command, True, "one run at a glance"),
        ("audit", audit_command, True, "every event of a run and its chain of listeners, with who and why"),
        ("stats", stats_command, False, "per-command calls, failures, retries and durations"),
        ("failures", failures_command, False, "failures grouped by error type and command"),
    ):
        parser = commands.add_parser(name, help=what, description=what[0].upper() + what[1:] + ".")
        if one_run:
            parser.add_argument(
                "run", metavar="RUN", type=run_id, help="the run id, as `evenflow runs` shows it"
            )
        else:
            parser.add_argument(
                "--since",
                metavar="WHEN",
                help="only events after: 15m, 1h, 2d or an ISO time (default: ever)",
            )
        if name == "audit":
            parser.add_argument(
                "--run-only",
                action="store_true",
                help="only RUN's events, not those of the runs its chain of listeners started",
            )
        common(parser)
        parser.set_defaults(handler=handler)
    from .init_store import add_parser

    add_parser(commands, common)


_WORKER_EVENTS = frozenset({"command.started", "command.succeeded", "command.expanded", "command.failed"})


def _who(entry: Any) -> str | None:
    """The worker for what an attempt did or its command emitted, the orchestrator for what it decided."""
    did = entry.type in _WORKER_EVENTS or entry.type not in KNOWN_TYPES
    return str(entry.worker or entry.by) if did else entry.by


def _cause(causation: str | None, run: str) -> str | None:
    """``<run>/0000000004`` reads as ``seq 4``, ``<run>/r.1#2`` as ``r.1#2``."""
    if not causation or not causation.startswith(f"{run}/"):
        return causation
    local = causation[len(run) + 1 :]
    return f"seq {int(local)}" if local.isdigit() else local


def _plain(value: Any) -> Any:
    return asdict(value) if is_dataclass(value) and not isinstance(value, type) else value


def _print_json(value: Any) -> None:
    print(to_json(value))


def _line(text: str | None, width: int = 120) -> str | None:
    """The first line of a message, for a table that keeps one line per row."""
    if text is None:
        return None
    return _short(text.splitlines()[0] if text else "", width)


def _time(moment: datetime | None) -> str | None:
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if moment else None


def _nodes(counts: Any) -> str:
    return " ".join(f"{state}={n}" for state, n in sorted(dict(counts).items()) if n) or "-"


def _short(value: Any, width: int = 80) -> str:
    text = value if isinstance(value, str) else to_json(value, indent=None)
    return text if len(text) <= width else text[: width - 1] + "…"
