"""The audit trail of one run: every event in ``seq`` order, who did it, why, and what changed.

Who: ``by`` is the orchestrator that appended the event. ``worker`` is who ran
the attempt an event belongs to: for an attempt's own events (dispatched,
started, succeeded, expanded, failed) the worker named by that attempt's
``command.started``; for an ``outcome.ignored``, the worker whose outcome was
refused. Why: ``causation`` (an event id, or the attempt id ``run/node#n`` for
what a worker reported). When: ``at``. What changed: a one-line ``summary`` for
people and the stored document itself for machines.

The pipeline finds each attempt's worker by grouping the run's events by
(node, attempt) and unwinding them again: no ``$lookup`` (a join on two fields
needs its pipeline form) and no ``$setWindowFields`` (not in mongomock). The
final ``$sort`` on ``seq`` restores log order, whatever order the group left. The
summary is rendered in Python: number formatting differs between the server's
``$toString`` and mongomock's, and a sentence is presentation, not a query.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from orchestrator.core import events as ev

from .documents import aggregate
from .source import BY_RUN, EventsCollection, IndexKeys, Pipeline, aware

INDEXES_NEEDED: tuple[IndexKeys, ...] = (BY_RUN,)

ATTEMPT_TYPES = (
    ev.COMMAND_DISPATCHED,
    ev.COMMAND_STARTED,
    ev.COMMAND_SUCCEEDED,
    ev.COMMAND_EXPANDED,
    ev.COMMAND_FAILED,
)
"""Events about one attempt, attributed to the worker that ran it."""

MAX_MESSAGE = 120
"""Error messages are cut to this many characters in a summary (the document keeps them whole)."""


@dataclass(frozen=True, slots=True)
class AuditEntry:
    seq: int
    at: datetime
    type: str
    node: str | None
    attempt: int | None
    command: str | None
    by: str | None
    """The orchestrator that appended the event."""
    worker: str | None
    """The worker that ran the attempt (or sent the ignored outcome); None for decisions."""
    causation: str | None
    summary: str
    event: dict[str, Any]
    """The stored document, whole."""


def audit_pipeline(run: str) -> Pipeline:
    """Every event of ``run`` as ``{event, worker}``, in ``seq`` order."""
    started = {"$eq": ["$type", ev.COMMAND_STARTED]}
    return [
        {"$match": {"run": run}},
        {
            "$group": {
                "_id": {"node": "$node", "attempt": "$attempt"},
                "events": {"$push": "$$ROOT"},
                "worker": {"$max": {"$cond": [started, "$data.by", None]}},
            }
        },
        {"$unwind": "$events"},
        {
            "$project": {
                "_id": 0,
                "event": "$events",
                "worker": {
                    "$switch": {
                        "branches": [
                            {
                                "case": {"$eq": ["$events.type", ev.OUTCOME_IGNORED]},
                                "then": "$events.data.by",
                            },
                            {"case": {"$in": ["$events.type", list(ATTEMPT_TYPES)]}, "then": "$worker"},
                        ],
                        "default": None,
                    }
                },
            }
        },
        {"$sort": {"event.seq": 1}},
    ]


def audit_trail(events: EventsCollection, run: str) -> list[AuditEntry]:
    """The audit trail of ``run``; empty when the log holds no such run."""
    return [entry(row["event"], row.get("worker")) for row in aggregate(events, audit_pipeline(run))]


def entry(doc: Mapping[str, Any], worker: str | None) -> AuditEntry:
    """One audit line from a stored event and the worker of its attempt."""
    event = {**doc, "at": aware(doc.get("at"))}
    return AuditEntry(
        seq=doc["seq"],
        at=event["at"],
        type=doc["type"],
        node=doc.get("node"),
        attempt=doc.get("attempt"),
        command=doc.get("command"),
        by=doc.get("by"),
        worker=worker,
        causation=doc.get("causation"),
        summary=summarize(doc, worker),
        event=event,
    )


def summarize(doc: Mapping[str, Any], worker: str | None = None) -> str:
    """What this event changed, in one line a person can scan."""
    kind = doc.get("type")
    data: Mapping[str, Any] = doc.get("data") or {}
    if kind == ev.RUN_SUBMITTED:
        name = f"flow {data['name']!r}" if data.get("name") else "a flow"
        return f"submitted {name} of {nodes(data.get('flow'))}" + (" with input" if "input" in data else "")
    if kind == ev.COMMAND_DISPATCHED:
        return f"dispatched attempt {doc.get('attempt')} of {doc.get('command') or '?'}" + (
            f" to route {data['route']}" if data.get("route") else ""
        )
    if kind == ev.COMMAND_STARTED:
        return f"started on {worker or data.get('by') or 'an unknown worker'}"
    if kind == ev.COMMAND_SUCCEEDED:
        took = data.get("duration_s")
        return "succeeded" + (f" in {seconds(took)}" if took is not None else "")
    if kind == ev.COMMAND_EXPANDED:
        return f"expanded into {nodes(data.get('flow'))}"
    if kind == ev.COMMAND_FAILED:
        return f"failed: {error_line(data.get('error') or {})}"
    if kind == ev.OUTCOME_IGNORED:
        what = "result" if data.get("ok") else "failure"
        sender = data.get("by") or "?"
        return f"ignored a {data.get('reason', '?')} {what} of attempt {doc.get('attempt')} from {sender}"
    if kind == ev.RETRY_SCHEDULED:
        return f"retry {doc.get('attempt')} scheduled in {seconds(data.get('delay_s') or 0)}"
    if kind == ev.NODE_FAILED:
        return f"node {doc.get('node')} failed: {failures_line(data.get('failures') or [], node=False)}"
    if kind == ev.RUN_SUCCEEDED:
        return "run succeeded"
    if kind == ev.RUN_FAILED:
        return f"run failed: {failures_line(data.get('failures') or [], node=True)}"
    if kind == ev.RUN_CANCELLED:
        return "run cancelled" + (f": {data['reason']}" if data.get("reason") else "")
    return str(kind)


def error_line(error: Mapping[str, Any]) -> str:
    """``type: message (reason)``, the message's first line cut to ``MAX_MESSAGE`` characters."""
    message = str(error.get("message") or "").strip().splitlines()
    text = message[0] if message else ""
    if len(text) > MAX_MESSAGE or len(message) > 1:
        text = text[:MAX_MESSAGE].rstrip() + "..."
    return f"{error.get('type', '?')}: {text} ({error.get('reason', 'raised')})"


def failures_line(failures: list[Mapping[str, Any]], *, node: bool) -> str:
    """The first failure (with its node when ``node``), and how many more there are."""
    if not failures:
        return "no failure recorded"
    first = failures[0]
    where = f"{first.get('node')} ({first.get('command') or '?'}): " if node else ""
    more = f" and {len(failures) - 1} more" if len(failures) > 1 else ""
    return f"{where}{error_line(first)}{more}"


def nodes(flow: Mapping[str, Any] | None) -> str:
    count = len((flow or {}).get("nodes") or ())
    return f"{count} node" if count == 1 else f"{count} nodes"


def seconds(value: float) -> str:
    """A duration as the shortest exact decimal down to microseconds: ``0.2s``, ``0s``, ``0.000123s``."""
    return f"{value:.6f}".rstrip("0").rstrip(".") + "s"
