"""``evenflow runs | status | audit | stats | failures | throughput | activity``: the log answering
questions.

Each opens the store read-only and writes nothing, so a MongoDB user holding
only the ``read`` role may run them (and the embedded store may be read while
an orchestrator runs); it runs one projection and prints an aligned table, or
exact JSON with ``--json``; what they read is ``orchestrator.query_source.Source``. ``audit`` shows a
run's whole chain (the run first submitted and every run listeners started in
answer to the chain's events), with a ``run`` column when it holds more than
one run; ``--run-only`` shows the run alone. ``init`` (``init_store.py``)
creates what they read.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import datetime
from typing import Any

from ..core.errors import ConfigurationError, RunNotFound
from ..core.events import KNOWN_TYPES
from ..core.timespec import parse_moment, parse_span
from ..json_text import plain
from ..query_source import source
from .arguments import run_id
from .render import table, to_json

# --- the commands ----------------------------------------------------------------------------


def runs_command(args: argparse.Namespace) -> int:
    with source(args.store, args.home) as src:
        page = src.history(**_run_filters(args), limit=args.limit, after=args.after)
    if args.follow:
        return _follow_runs(args, page.rows)
    if args.json:
        _print_json({"runs": [plain(row) for row in page.rows], "next": page.next})
        return 0
    print(table(RUN_HEADERS, [_run_row(r) for r in page.rows]))
    if page.next:
        print(f"\nmore: evenflow runs --after {page.next}")
    return 0


def _run_filters(args: argparse.Namespace) -> dict[str, Any]:
    until = parse_moment(args.until, option="--until") if args.until else None
    return {"state": args.state, "flow": args.flow, "since": _since(args), "until": until,
            "command": args.command, "error_type": args.error_type, "key": args.key}  # fmt: skip


RUN_HEADERS = ("run", "flow", "state", "submitted", "duration_s", "nodes", "attempts")


def _run_row(r: Any) -> tuple[Any, ...]:
    return (r.run, r.flow, r.state, _time(r.submitted_at), r.duration_s, _nodes(r.nodes), r.attempts)


def _follow_runs(args: argparse.Namespace, first: list[Any]) -> int:
    """Print the newest runs, then each run that starts or changes state, as a line (a JSON object a
    line with ``--json``), until stopped (Ctrl-C or SIGTERM).

    Each look reads every run submitted since following began (page by page, so a burst is not cut
    to one page) and the runs already shown that had not ended; a run seen ended is not read again.
    """
    import threading

    from ..core.events import utcnow

    began, pause = utcnow(), threading.Event()
    seen: dict[str, str] = {}
    rows = list(reversed(first))
    while True:
        for row in rows:
            if seen.get(row.run) != row.state:
                seen[row.run] = row.state
                print(_follow_line(row, as_json=args.json), flush=True)
        pause.wait(FOLLOW_S)
        with source(args.store, args.home) as src:
            going = [src.status(run) for run, state in seen.items() if state == "running"]
            rows = [row for row in going if row is not None] + _since_following(src, args, began)


def _since_following(src: Any, args: argparse.Namespace, began: datetime) -> list[Any]:
    """Every run submitted since ``began`` that matches the filters, oldest first."""
    filters = {**_run_filters(args), "since": began}
    found, after = [], None
    for _ in range(FOLLOW_PAGES):
        page = src.history(**filters, limit=200, after=after)
        found += page.rows
        if page.next is None:
            break
        after = page.next
    return list(reversed(found))


def _follow_line(row: Any, *, as_json: bool) -> str:
    if as_json:
        return to_json(plain(row), indent=None)
    return "  ".join(str(cell if cell is not None else "-") for cell in _run_row(row))


FOLLOW_PAGES = 50
"""At most this many pages of 200 new runs a look (10,000 runs a second is more than a log takes)."""
FOLLOW_S = 1.0
"""How often ``runs --follow`` reads the newest runs again."""


def status_command(args: argparse.Namespace) -> int:
    with source(args.store, args.home) as src:
        if args.follow:
            _follow(src, args.run, quiet=args.json)
        status = src.status(args.run)
    if status is None:
        raise RunNotFound(args.run)
    if args.json:
        _print_json(plain(status))
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


def _follow(src: Any, run: str, *, quiet: bool) -> None:
    """Until ``run`` ends: its progress on stdout (nothing with ``--json``, which prints the end)."""
    import io
    import sys
    import threading

    from .progress import Progress, watch

    if not src.store.read(run):
        raise RunNotFound(run)
    out = io.StringIO() if quiet else sys.stdout
    watch(lambda: src.store.read(run), Progress(run, out), threading.Event())


def audit_command(args: argparse.Namespace) -> int:
    from projections import audit_chain, audit_trail

    with source(args.store, args.home) as src:
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
    with source(args.store, args.home) as src:
        stats = src.command_stats(_since(args))
    headers = ("command", "calls", "ok", "failed", "retries", "mean_s", "p95_s", "max_s")
    return _emit(args, stats, headers, _stats_row)


def failures_command(args: argparse.Namespace) -> int:
    with source(args.store, args.home) as src:
        groups = src.failures(_since(args))
    headers = ("error", "command", "count", "latest", "where", "message")
    return _emit(args, groups, headers, _failure_row)


def throughput_command(args: argparse.Namespace) -> int:
    bucket = parse_span(args.bucket, option="--bucket")
    with source(args.store, args.home) as src:
        buckets = src.throughput(_since(args), None, bucket, completions=args.completions)
    return _emit(args, buckets, ("start", "events"), lambda b: (_time(b.start), b.count))


def activity_command(args: argparse.Namespace) -> int:
    with source(args.store, args.home) as src:
        workers = src.worker_activity(_since(args))
    headers = ("worker", "calls", "busy_s", "failed")
    return _emit(args, workers, headers, lambda w: (w.worker, w.calls, w.busy_s, w.failures))


def listeners_command(args: argparse.Namespace) -> int:
    from ..store.checkpoints import lags

    with source(args.store, args.home) as src:
        found = lags(src.store)
    if found is None:
        raise ConfigurationError("this store keeps no listener places; listeners need a feed store")
    headers = ("listener", "behind", "oldest_unread")

    def row(lag: Any) -> tuple[Any, ...]:
        return (lag.name, f"{lag.behind}+" if lag.at_least else lag.behind, _time(lag.oldest_unread_at))

    return _emit(args, found, headers, row)


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
        _print_json([plain(item) for item in items])
    else:
        print(table(headers, [row(item) for item in items]))
    return 0


def _since(args: argparse.Namespace) -> datetime | None:
    return parse_moment(args.since) if args.since else None


# --- helpers ---------------------------------------------------------------------------------


def add_parsers(commands: Any, common: Any) -> None:
    """Register the query subcommands on the CLI's parser."""
    _add_runs(commands, common)
    for name, handler, one_run, what in (
        ("status", status_command, True, "one run at a glance"),
        ("audit", audit_command, True, "every event of a run and its chain of listeners, with who and why"),
        ("stats", stats_command, False, "per-command calls, failures, retries and durations"),
        ("failures", failures_command, False, "failures grouped by error type and command"),
        ("throughput", throughput_command, False, "events logged per bucket of time, oldest first"),
        ("activity", activity_command, False, "per worker: the attempts it started, busy time, failures"),
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
        _own_options(name, parser)
        common(parser)
        parser.set_defaults(handler=handler)
    lag = "each listener: how many events were logged after its place, and when the first was"
    listeners = commands.add_parser("listeners", help=lag, description=lag[0].upper() + lag[1:] + ".")
    common(listeners)
    listeners.set_defaults(handler=listeners_command)
    from .init_store import add_parser

    add_parser(commands, common)


def _own_options(name: str, parser: argparse.ArgumentParser) -> None:
    """A command's options beyond RUN or --since."""
    if name == "throughput":
        parser.add_argument(
            "--bucket",
            default="1h",
            metavar="SPAN",
            help="the length of each bucket, aligned to the epoch: 30s, 15m, 1h, 1d [default 1h]",
        )
        parser.add_argument(
            "--completions",
            action="store_true",
            help="count only ended attempts (succeeded or failed), not every event",
        )
    elif name == "status":
        parser.add_argument(
            "--follow", action="store_true", help="show the run's progress until it ends, then its status"
        )
    elif name == "audit":
        parser.add_argument(
            "--run-only",
            action="store_true",
            help="only RUN's events, not those of the runs its chain of listeners started",
        )


def _add_runs(commands: Any, common: Any) -> None:
    runs = commands.add_parser("runs", help="list runs, newest first", description="List runs, newest first.")
    runs.add_argument("--state", choices=("running", "succeeded", "failed", "cancelled"),
                      help="only runs in this state (default: any)")  # fmt: skip
    runs.add_argument("--flow", help="only runs of this flow name (default: any)")
    runs.add_argument(
        "--since", metavar="WHEN", help="submitted after: 15m, 1h, 2d or an ISO time (default: ever)"
    )
    runs.add_argument(
        "--until", metavar="WHEN", help="submitted before: 15m, 1h, 2d or an ISO time (default: now)"
    )
    runs.add_argument("--command", metavar="NAME", help="only runs that called this command (default: any)")
    runs.add_argument("--error-type", metavar="TYPE",
                      help="only runs that failed an attempt with this error, e.g. builtins.ValueError "
                      "(default: any)")  # fmt: skip
    runs.add_argument("--key", help="only the run submitted with this idempotency key (default: any)")
    runs.add_argument("--limit", type=int, default=20, help="rows per page [default 20]")
    runs.add_argument(
        "--follow",
        action="store_true",
        help="then print each run that starts or changes state, until stopped",
    )
    runs.add_argument(
        "--after",
        metavar="CURSOR",
        help="the next page, as printed at the end of the last one (default: first)",
    )
    common(runs)
    runs.set_defaults(handler=runs_command)


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
