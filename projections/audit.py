"""The audit trail of one run: every event in ``seq`` order, who did it, why, and what changed.

Who: ``by`` is the orchestrator that appended the event. ``worker`` is who ran
the attempt an event belongs to: for an attempt's own events (dispatched,
started, succeeded, expanded, failed) and the events its command emitted, the
worker named by that attempt's ``command.started``; for an ``outcome.ignored``,
the worker whose outcome was refused. Why: ``causation`` (an event id, or the attempt id ``run/node#n`` for
what a worker reported). When: ``at``. What changed: a one-line ``summary`` for
people and the stored document itself for machines.

The pipeline only selects and sorts: a run's events in ``seq`` order, served
by the ``run_seq`` index, each one whole. Who ran each attempt is then read off
that same list in Python (``attributed``): its ``command.started`` events are
in it. Nothing is grouped on the server, so no document there holds more than
one event, however many or large a run's events are (a ``$push`` of an
attempt's events into one document fails on a server past 16 MiB), and worker
and events come from one read, consistent with each other. The summary is
rendered in Python too: number formatting differs between the server's
``$toString`` and mongomock's, and a sentence is presentation, not a query.

``audit_chain`` is the trail of every run of one chain: a run and the runs
listeners started in answer to its events, and theirs in turn. They share the
``correlation`` of the first run's ``run.submitted`` (its own id), so three
pipelines, each starting on an index, find them: the run's ``run.submitted``
(``run_seq``), the ``run.submitted`` events with its correlation
(``correlation_type``), then every event of those runs (``run_seq``). Runs come
in causal order: a triggered run is submitted after the event that caused it,
and its ``depth`` breaks a tie within the same millisecond.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from orchestrator.core import events as ev

from .source import BY_CORRELATION, BY_RUN, EventsCollection, IndexKeys, Pipeline, aggregate, aware

INDEXES_NEEDED: tuple[IndexKeys, ...] = (BY_RUN, BY_CORRELATION)

ATTEMPT_TYPES = (
    ev.COMMAND_DISPATCHED,
    ev.COMMAND_STARTED,
    ev.COMMAND_SUCCEEDED,
    ev.COMMAND_EXPANDED,
    ev.COMMAND_FAILED,
)
"""Events about one attempt, attributed to the worker that ran it (as are the events its command emitted)."""

MAX_MESSAGE = 120
"""Error messages are cut to this many characters in a summary (the document keeps them whole)."""
MAX_DATA = 80
"""An emitted event's data is shown as JSON cut to this many characters in a summary."""


@dataclass(frozen=True, slots=True)
class AuditEntry:
    run: str
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
    """Every event of ``run``, whole, in ``seq`` order."""
    return trail_pipeline({"run": run})


def chain_events_pipeline(runs: Sequence[str]) -> Pipeline:
    """Every event of ``runs``, whole, by run id then ``seq``."""
    return trail_pipeline({"run": {"$in": list(runs)}})


def trail_pipeline(match: dict[str, Any]) -> Pipeline:
    """The events ``match`` selects, by run then ``seq`` (the order of the ``run_seq`` index)."""
    return [{"$match": match}, {"$sort": {"run": 1, "seq": 1}}]


def attributed(docs: Iterable[Mapping[str, Any]]) -> list[tuple[Mapping[str, Any], str | None]]:
    """Each event with the worker it is attributed to (see the module), from the events alone.

    An attempt's worker is the ``data.by`` of its ``command.started`` (the
    greatest, should an attempt have started twice); its own events and the
    events its command emitted take it. An ``outcome.ignored`` names its own
    sender; any other decision has none.
    """
    trail = list(docs)
    workers: dict[tuple[Any, ...], str] = {}
    for doc in trail:
        by, key = (doc.get("data") or {}).get("by"), _attempt(doc)
        if doc.get("type") == ev.COMMAND_STARTED and isinstance(by, str):
            workers[key] = max(by, workers.get(key, by))
    return [(doc, _worker(doc, workers)) for doc in trail]


def _attempt(doc: Mapping[str, Any]) -> tuple[Any, ...]:
    return (doc.get("run"), doc.get("node"), doc.get("attempt"))


def _worker(doc: Mapping[str, Any], workers: Mapping[tuple[Any, ...], str]) -> str | None:
    kind = doc.get("type")
    if kind == ev.OUTCOME_IGNORED:
        by = (doc.get("data") or {}).get("by")
        return by if isinstance(by, str) else None
    if kind in ATTEMPT_TYPES or kind not in ev.KNOWN_TYPES:  # or an event the attempt's command emitted
        return workers.get(_attempt(doc))
    return None


def correlation_pipeline(run: str) -> Pipeline:
    """``{correlation}`` of ``run``: its ``run.submitted``'s, or its own id where that has none."""
    return [
        {"$match": {"run": run, "seq": 1, "type": ev.RUN_SUBMITTED}},
        {"$project": {"_id": 0, "correlation": {"$ifNull": ["$correlation", "$run"]}}},
    ]


def chain_pipeline(correlation: str) -> Pipeline:
    """``{run, at, depth}`` of every run submitted with ``correlation``, in causal order."""
    return [
        {"$match": {"correlation": correlation, "type": ev.RUN_SUBMITTED}},
        {"$project": {"_id": 0, "run": 1, "at": 1, "depth": {"$ifNull": ["$data.depth", 0]}}},
        {"$sort": {"at": 1, "depth": 1, "run": 1}},
    ]


def audit_trail(events: EventsCollection, run: str) -> list[AuditEntry]:
    """The audit trail of ``run``; empty when the log holds no such run."""
    return [entry(doc, worker) for doc, worker in attributed(aggregate(events, audit_pipeline(run)))]


def audit_chain(events: EventsCollection, run: str) -> list[AuditEntry]:
    """The trail of every run in ``run``'s chain, run after run in causal order; [] for no such run."""
    runs = chain_runs(events, run)
    rank = {name: index for index, name in enumerate(runs)}
    rows = attributed(aggregate(events, chain_events_pipeline(runs)))
    entries = [entry(doc, worker) for doc, worker in rows]
    return sorted(entries, key=lambda item: (rank[item.run], item.seq))


def chain_runs(events: EventsCollection, run: str) -> list[str]:
    """The runs of ``run``'s chain in causal order (``run`` alone if none other); empty for no such run."""
    found = list(aggregate(events, correlation_pipeline(run)))
    if not found:
        return []
    chain = [row["run"] for row in aggregate(events, chain_pipeline(found[0]["correlation"]))]
    return chain if run in chain else [run, *chain]


def entry(doc: Mapping[str, Any], worker: str | None) -> AuditEntry:
    """One audit line from a stored event and the worker of its attempt.

    A ``command.started`` is appended with the attempt's outcome, when the
    command has ended (a local pool reports once); its line shows when the
    attempt began, the ``started_at`` its worker clocked, not that append.
    """
    event = {name: doc[name] for name in ev.DOC_FIELDS if name in doc} | {"at": aware(doc.get("at"))}
    began = (doc.get("data") or {}).get("started_at") if doc.get("type") == ev.COMMAND_STARTED else None
    return AuditEntry(
        run=doc["run"],
        seq=doc["seq"],
        at=aware(began) if isinstance(began, datetime) else event["at"],
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
        return submitted(doc, data)
    if kind == ev.RUN_FLOW_PART:
        return "submission continued: " + (
            count(len(data["kept"]), "kept result") if data.get("kept") else nodes(data)
        )
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
        return ignored(doc, data)
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
    if isinstance(kind, str) and ev.is_domain_type(kind):
        return f"emitted {kind}" + (f" {compact(data)}" if data else "")
    return str(kind)


def submitted(doc: Mapping[str, Any], data: Mapping[str, Any]) -> str:
    """A submission, and the listener and event that caused it when one did."""
    name = f"flow {data['name']!r}" if data.get("name") else "a flow"
    size = f"{count(data['parts'], 'part')} that follow" if data.get("parts") else nodes(data.get("flow"))
    what = f"submitted {name} of {size}" + (" with input" if "input" in data else "")
    if data.get("listener") is None:
        return what
    return f"triggered by listener {data['listener']!r} on {doc.get('causation') or '?'}: {what}"


def ignored(doc: Mapping[str, Any], data: Mapping[str, Any]) -> str:
    """A refused outcome, and how many events it had emitted (not logged with it)."""
    what = "result" if data.get("ok") else "failure"
    sender = data.get("by") or "?"
    line = f"ignored a {data.get('reason', '?')} {what} of attempt {doc.get('attempt')} from {sender}"
    discarded = len(data.get("discarded_events") or ())
    return line + (f"; discarded {count(discarded, 'emitted event')}" if discarded else "")


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


def compact(data: Mapping[str, Any]) -> str:
    """``data`` as one line of JSON, cut to ``MAX_DATA`` characters."""
    text = json.dumps(data, ensure_ascii=False, default=str)
    return text if len(text) <= MAX_DATA else text[:MAX_DATA].rstrip() + "..."


def nodes(flow: Mapping[str, Any] | None) -> str:
    return count(len((flow or {}).get("nodes") or ()), "node")


def count(number: int, noun: str) -> str:
    """``1 node``, ``3 nodes``."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def seconds(value: float) -> str:
    """A duration as the shortest exact decimal down to microseconds: ``0.2s``, ``0s``, ``0.000123s``."""
    return f"{value:.6f}".rstrip("0").rstrip(".") + "s"
