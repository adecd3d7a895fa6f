"""Each projection computed the plain way, in Python, over a list of stored event documents.

The differential test holds every pipeline to these. They are written for the
reader, not for speed: filter, group in a dict, sort. Only the audit's
one-line summary is shared with the projection (``audit.summarize``): it is
rendering, not a query, and the golden files pin its text.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from orchestrator.core import events as ev
from projections.audit import AuditEntry, summarize
from projections.command_stats import BUCKET_RATIO, SMALLEST_S, CommandStats
from projections.failures import FailureExample, FailureGroup
from projections.throughput import Bucket
from projections.worker_activity import WorkerActivity

Doc = Mapping[str, Any]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def audit(docs: Iterable[Doc], run: str) -> list[AuditEntry]:
    mine = sorted((doc for doc in docs if doc["run"] == run), key=lambda doc: doc["seq"])
    workers = {
        (d["node"], d["attempt"]): d["data"].get("by") for d in mine if d["type"] == ev.COMMAND_STARTED
    }
    own = {
        ev.COMMAND_DISPATCHED,
        ev.COMMAND_STARTED,
        ev.COMMAND_SUCCEEDED,
        ev.COMMAND_EXPANDED,
        ev.COMMAND_FAILED,
    }
    entries = []
    for doc in mine:
        if doc["type"] == ev.OUTCOME_IGNORED:
            worker = doc["data"].get("by")
        elif doc["type"] in own or doc["type"] not in ev.KNOWN_TYPES:  # or emitted by the attempt's command
            worker = workers.get((doc["node"], doc["attempt"]))
        else:
            worker = None
        entries.append(
            AuditEntry(
                run=doc["run"],
                seq=doc["seq"],
                at=(doc["type"] == ev.COMMAND_STARTED and doc["data"].get("started_at")) or doc["at"],
                type=doc["type"],
                node=doc["node"],
                attempt=doc["attempt"],
                command=doc["command"],
                by=doc["by"],
                worker=worker,
                causation=doc["causation"],
                summary=summarize(doc, worker),
                event={name: doc[name] for name in ev.DOC_FIELDS if name in doc},  # not the store's own
            )
        )
    return entries


def audit_chain(docs: Iterable[Doc], run: str) -> list[AuditEntry]:
    """The runs submitted with ``run``'s correlation (``run`` first if it has none), one after another."""
    docs = list(docs)
    first = [doc for doc in docs if doc["run"] == run and doc["seq"] == 1]
    if not first:
        return []
    correlation = first[0].get("correlation") or run
    submitted = [
        doc for doc in docs if doc["type"] == ev.RUN_SUBMITTED and doc.get("correlation") == correlation
    ]
    submitted.sort(key=lambda doc: (doc["at"], doc["data"].get("depth") or 0, doc["run"]))
    runs = [doc["run"] for doc in submitted]
    return [entry for name in (runs if run in runs else [run, *runs]) for entry in audit(docs, name)]


def command_stats(docs: Iterable[Doc], since: datetime | None, until: datetime | None) -> list[CommandStats]:
    counts: dict[Any, Counter[str]] = defaultdict(Counter)
    durations: dict[Any, list[float]] = defaultdict(list)
    kinds = {
        ev.COMMAND_DISPATCHED: "calls",
        ev.COMMAND_SUCCEEDED: "successes",
        ev.COMMAND_EXPANDED: "expansions",
        ev.COMMAND_FAILED: "failures",
        ev.RETRY_SCHEDULED: "retries",
    }
    for doc in within(docs, since, until):
        if doc["type"] in kinds:
            counts[doc["command"]][kinds[doc["type"]]] += 1
            if doc["type"] == ev.COMMAND_SUCCEEDED and doc["data"].get("duration_s") is not None:
                durations[doc["command"]].append(doc["data"]["duration_s"])
    answer = []
    for command in sorted(counts, key=null_first):
        took = durations[command]
        answer.append(
            CommandStats(
                command=command,
                **{name: counts[command][name] for name in kinds.values()},
                mean_duration_s=round(round(sum(took), 6) / len(took), 6) if took else None,
                max_duration_s=max(took) if took else None,
                p95_duration_s=sorted(took)[math.ceil(0.95 * len(took)) - 1] if took else None,
            )
        )
    return answer


def p95_within_bound(got: float | None, exact: float | None, top: float | None) -> bool:
    """``got`` is the histogram p95 of durations whose exact nearest-rank p95 is ``exact`` and maximum
    ``top``: never below it, never above the maximum, at most a bucket over (command_stats' bound),
    up to float rounding at a bucket's edge."""
    if exact is None or got is None or top is None:
        return got is None and exact is None
    slack = 1 + 1e-12
    ceiling = max(exact * BUCKET_RATIO, SMALLEST_S)
    return exact <= got * slack and got <= top and got <= ceiling * slack


def failures(docs: Iterable[Doc], since: datetime | None, until: datetime | None) -> list[FailureGroup]:
    groups: dict[tuple[Any, Any], list[Doc]] = defaultdict(list)
    for doc in within(docs, since, until):
        if doc["type"] == ev.COMMAND_FAILED:
            groups[(doc["data"]["error"].get("type"), doc["command"])].append(doc)
    answer = []
    for (error_type, command), found in groups.items():
        latest = max(found, key=lambda doc: (doc["at"], doc["run"], doc["seq"]))
        error = latest["data"]["error"]
        example = FailureExample(
            run=latest["run"],
            node=latest["node"],
            attempt=latest["attempt"],
            message=error.get("message"),
            at=latest["at"],
            reason=error.get("reason"),
        )
        answer.append(FailureGroup(error_type, command, len(found), example))
    return sorted(answer, key=lambda g: (-g.count, null_first(g.error_type), null_first(g.command)))


def throughput(
    docs: Iterable[Doc],
    since: datetime | None,
    until: datetime | None,
    bucket: timedelta,
    *,
    completions: bool,
) -> list[Bucket]:
    types = {ev.COMMAND_SUCCEEDED, ev.COMMAND_FAILED} if completions else ev.KNOWN_TYPES
    starts = Counter(
        EPOCH + (doc["at"] - EPOCH) // bucket * bucket
        for doc in within(docs, since, until)
        if doc["type"] in types
    )
    return [Bucket(start, starts[start]) for start in sorted(starts)]


def worker_activity(
    docs: Iterable[Doc], since: datetime | None, until: datetime | None
) -> list[WorkerActivity]:
    endings = {ev.COMMAND_SUCCEEDED, ev.COMMAND_EXPANDED, ev.COMMAND_FAILED}
    attempts: dict[tuple[Any, ...], list[Doc]] = defaultdict(list)
    for doc in within(docs, since, until):
        if doc["type"] == ev.COMMAND_STARTED or doc["type"] in endings:
            attempts[(doc["run"], doc["node"], doc["attempt"])].append(doc)
    calls: Counter[Any] = Counter()
    busy_ms: Counter[Any] = Counter()
    failed: Counter[Any] = Counter()
    for found in attempts.values():
        starts = [doc for doc in found if doc["type"] == ev.COMMAND_STARTED]
        if not starts:
            continue
        worker = starts[0]["data"].get("by")
        started_at = starts[0]["data"].get("started_at")
        ends = [doc["at"] for doc in found if doc["type"] in endings]
        calls[worker] += 1
        if started_at is not None and ends:
            busy_ms[worker] += (max(ends) - started_at) // timedelta(milliseconds=1)
        failed[worker] += any(doc["type"] == ev.COMMAND_FAILED for doc in found)
    return [
        WorkerActivity(worker, calls[worker], busy_ms[worker] / 1000, failed[worker])
        for worker in sorted(calls, key=null_first)
    ]


def within(docs: Iterable[Doc], since: datetime | None, until: datetime | None) -> list[Doc]:
    """The documents with ``since <= at < until``, bounds cut to milliseconds as BSON cuts them."""
    low = millis(since) if since is not None else None
    high = millis(until) if until is not None else None
    return [doc for doc in docs if (low is None or doc["at"] >= low) and (high is None or doc["at"] < high)]


def millis(moment: datetime) -> datetime:
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def null_first(value: Any) -> tuple[bool, Any]:
    """How MongoDB sorts: null before any string."""
    return (value is not None, value if value is not None else "")
