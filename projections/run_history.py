"""Run history: runs from the ``runs`` read model, filtered, newest first, a page at a time.

Pages follow a *keyset* cursor, not an offset: the cursor is the last row's
``(submitted_at, _id)`` and the next page is what sorts strictly after it in
``(submitted_at desc, _id desc)`` order. Runs submitted meanwhile sort before
the cursor, so they neither shift nor repeat the rows of later pages. The
cursor is an opaque string; ``_id`` breaks ties between runs submitted in the
same millisecond. ``indexes.py`` has an index for each filter plus this sort.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from orchestrator.core import events as ev
from orchestrator.core.errors import InvalidOption
from orchestrator.core.keys import run_for_key
from orchestrator.core.run_query import RunQuery

from .documents import Documents
from .run_status import RUN_STATES, RunStatus
from .source import EventsCollection, aggregate, to_bson_time

MAX_LIMIT: Final = 1_000
NEWEST_FIRST: Final = {"submitted_at": -1, "_id": -1}
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND: Final = timedelta(milliseconds=1)


@dataclass(frozen=True, slots=True)
class Page:
    """One page of runs, newest first; ``next`` continues after its last row (None: no more)."""

    rows: list[RunStatus]
    next: str | None


def run_history(
    runs: Documents,
    *,
    state: str | None = None,
    flow: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    command: str | None = None,
    error_type: str | None = None,
    limit: int = 50,
    after: str | None = None,
) -> Page:
    """Runs submitted in ``[since, until)`` matching every filter given, ``limit`` per page.

    ``command``: the run dispatched it at least once; ``error_type``: an attempt
    failed with it (the qualified name, e.g. ``builtins.ValueError``); each among
    the first ``run_status.MAX_LISTED`` names of its kind the run used.
    ``after`` is the ``next`` of the previous page. Raises ``InvalidOption`` for
    a bad state, limit or cursor.
    """
    pipeline = run_history_pipeline(
        state=state,
        flow=flow,
        since=since,
        until=until,
        command=command,
        error_type=error_type,
        limit=limit,
        after=after,
    )
    docs = list(aggregate(runs, pipeline))
    rows = [RunStatus.from_doc(doc) for doc in docs[:limit]]
    more = len(docs) > limit
    return Page(rows, encode_cursor(rows[-1]) if more and rows else None)


def indexed_history(
    run_page: Callable[[RunQuery], list[str] | None],
    fold: Callable[[str], RunStatus | None],
    **query: Any,
) -> Page | None:
    """``run_history(runs, **query)`` answered by a store's history tables (``HistoryStore.run_page``):
    the page's run ids from their indexes, each row folded from that run's own events by ``fold``
    (None skips a run that cannot be read). None when the store's tables are not built."""
    run_history_pipeline(**query)  # the same checks, so the same errors
    limit = int(query.get("limit", 50))
    after = query.get("after")
    at, run = decode_cursor(after) if after is not None else (None, None)
    ids = run_page(
        RunQuery(
            state=query.get("state"),
            flow=query.get("flow"),
            since=_millis(_utc(query.get("since"), "since")),
            until=_millis(_utc(query.get("until"), "until")),
            command=query.get("command"),
            error_type=query.get("error_type"),
            limit=limit + 1,
            after=None if run is None else (_millis(at), run),
        )
    )
    if ids is None:
        return None
    rows = [row for row in map(fold, ids[:limit]) if row is not None]
    return Page(rows, encode_cursor(rows[-1]) if len(ids) > limit and rows else None)


def keyed_page(status: Callable[[str], RunStatus | None], key: str, **query: Any) -> Page:
    """The page ``runs?key=KEY`` asks for: the one run a submission key names (its id derives from
    the key, so no index is read), if it exists and matches every other filter given."""
    run_history_pipeline(**query)  # the same checks, so the same errors
    row = status(run_for_key(key))
    if row is None or query.get("after") is not None:  # a one-row answer has no second page
        return Page([], None)
    since, until = _utc(query.get("since"), "since"), _utc(query.get("until"), "until")
    at = row.submitted_at
    takes = (
        all(query.get(name) in (None, getattr(row, name)) for name in ("state", "flow"))
        and query.get("command") in (None, *row.commands)
        and query.get("error_type") in (None, *row.error_types)
        and (since is None or (at is not None and at >= since))
        and (until is None or (at is not None and at < until))
    )
    return Page([row] if takes else [], None)


def _millis(moment: datetime | None) -> int | None:
    return None if moment is None else (moment - _EPOCH) // _MILLISECOND


def run_history_pipeline(
    *,
    state: str | None = None,
    flow: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    command: str | None = None,
    error_type: str | None = None,
    limit: int = 50,
    after: str | None = None,
) -> list[dict[str, Any]]:
    """The page query as data: ``$match`` (filters and cursor), ``$sort`` newest first, ``$limit``.

    One row more than ``limit`` is asked for, to know whether a next page exists.
    """
    if state is not None and state not in RUN_STATES:
        raise InvalidOption(f"run_history: state must be one of {', '.join(RUN_STATES)}, got {state!r}")
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidOption(f"run_history: limit must be an integer from 1 to {MAX_LIMIT}, got {limit!r}")
    match: dict[str, Any] = {
        key: value
        for key, value in (
            ("state", state),
            ("flow", flow),
            ("commands", command),
            ("error_types", error_type),
        )
        if value is not None
    }
    window = {
        op: _utc(moment, name) for op, moment, name in (("$gte", since, "since"), ("$lt", until, "until"))
    }
    window = {op: moment for op, moment in window.items() if moment is not None}
    if window:
        match["submitted_at"] = window
    if after is not None:
        match = {"$and": [match, _after(*decode_cursor(after))]} if match else _after(*decode_cursor(after))
    return [{"$match": match}, {"$sort": dict(NEWEST_FIRST)}, {"$limit": limit + 1}]


def encode_cursor(row: RunStatus) -> str:
    """An opaque cursor for the position just after ``row``."""
    millis = None if row.submitted_at is None else (row.submitted_at - _EPOCH) // _MILLISECOND
    raw = json.dumps([millis, row.run], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime | None, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        millis, run = json.loads(raw)
        if not isinstance(run, str) or not (millis is None or isinstance(millis, int)):
            raise ValueError("unexpected fields")
    except (ValueError, TypeError) as exc:
        raise InvalidOption(
            f"run_history: {cursor!r} is not a cursor this evenflow made; pass the 'next' of a previous "
            "page, or nothing for the first page"
        ) from exc
    return (None if millis is None else _EPOCH + millis * _MILLISECOND), run


def _after(submitted_at: datetime | None, run: str) -> dict[str, Any]:
    """Rows strictly after (submitted_at, run) in newest-first order."""
    if submitted_at is None:  # null sorts last: only nulls with a smaller id remain
        return {"submitted_at": None, "_id": {"$lt": run}}
    return {
        "$or": [
            {"submitted_at": {"$lt": submitted_at}},
            {"submitted_at": submitted_at, "_id": {"$lt": run}},
            {"submitted_at": None},
        ]
    }


def _utc(moment: datetime | None, name: str) -> datetime | None:
    if moment is None:
        return None
    if not isinstance(moment, datetime):
        raise InvalidOption(f"run_history: {name} must be a datetime, got {moment!r}")
    return to_bson_time(moment)


def runs_by_state(events: EventsCollection) -> dict[str, int]:
    """How many runs are in each state, from the log's run.submitted and terminal events (an index on
    type serves the match): running is what was submitted and has not ended."""
    ends = {ev.RUN_SUCCEEDED: "succeeded", ev.RUN_FAILED: "failed", ev.RUN_CANCELLED: "cancelled"}
    pipeline: list[dict[str, Any]] = [
        {"$match": {"type": {"$in": [ev.RUN_SUBMITTED, *ends]}}},
        {"$group": {"_id": "$type", "n": {"$sum": 1}}},
    ]
    found = {row["_id"]: int(row["n"]) for row in aggregate(events, pipeline)}
    counts = {state: found.get(kind, 0) for kind, state in ends.items()}
    counts["running"] = found.get(ev.RUN_SUBMITTED, 0) - sum(counts.values())
    return {state: n for state, n in sorted(counts.items()) if n}
