"""No projection can exceed a server's limits on a big history: 16 MiB per document, 100 MB per stage.

Three checks, none needing a server: every pipeline a projection builds is
read as data (``growing_accumulators``) and may hold no ``$$ROOT`` and no
undeclared ``$push``/``$addToSet``; every query runs through ``ServerLimits``
with a stage memory limit far below its history, so it must allow the spill;
and no stage holds a document that grows with the history (the largest is the
same for n and 4n events), including for a run whose events pass 16 MiB.
"""

from __future__ import annotations

import importlib
import pkgutil
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import projections
from orchestrator.core import events as ev
from orchestrator.core.events import Event, to_doc
from orchestrator.store.faithful_mock import client
from projections.audit import (
    audit_chain,
    audit_pipeline,
    audit_trail,
    chain_events_pipeline,
    chain_pipeline,
    correlation_pipeline,
    trail_pipeline,
)
from projections.command_stats import command_stats, command_stats_pipeline
from projections.failures import failures, failures_pipeline
from projections.read_models import LAST_SEQ_PIPELINE
from projections.run_history import run_history, run_history_pipeline
from projections.run_status import MAX_LISTED, run_status, run_status_pipeline
from projections.run_tally import RunTally, tally
from projections.throughput import ALL_EVENTS, throughput, throughput_pipeline
from projections.worker_activity import worker_activity, worker_activity_pipeline

from .goldens import load_log
from .server_limits import ServerLimits, growing_accumulators

T = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
MS = timedelta(milliseconds=1)
WORKER = "host-a:4242/inline"

PIPELINES: dict[str, Callable[[], list[dict[str, Any]]]] = {
    "audit.audit_pipeline": lambda: audit_pipeline("a"),
    "audit.chain_events_pipeline": lambda: chain_events_pipeline(["a", "b"]),
    "audit.chain_pipeline": lambda: chain_pipeline("a"),
    "audit.correlation_pipeline": lambda: correlation_pipeline("a"),
    "audit.trail_pipeline": lambda: trail_pipeline({"run": "a"}),
    "command_stats.command_stats_pipeline": lambda: command_stats_pipeline(None, None),
    "failures.failures_pipeline": lambda: failures_pipeline(None, None),
    "read_models.LAST_SEQ_PIPELINE": lambda: LAST_SEQ_PIPELINE,
    "run_history.run_history_pipeline": lambda: run_history_pipeline(command="c", after=None),
    "run_status.run_status_pipeline": lambda: run_status_pipeline(),
    "throughput.throughput_pipeline": lambda: throughput_pipeline(None, None, MS, ALL_EVENTS),
    "worker_activity.worker_activity_pipeline": lambda: worker_activity_pipeline(None, None),
}

BOUNDED: dict[tuple[str, str], str] = {
    ("command_stats.command_stats_pipeline", "histogram"): (
        "per command, one entry per duration bucket it used: at most command_stats.MAX_BUCKETS"
    ),
    ("run_status.run_status_pipeline", "commands"): "per (run, node), a set: a node runs one command",
    ("run_status.run_status_pipeline", "errors"): (
        "per (run, node), a set of error type names: at most one per attempt (policy.MAX_ATTEMPTS = "
        "10,000 names of at most envelope.MAX_NAME = 1,000 characters)"
    ),
    ("run_status.run_status_pipeline", "tags"): (
        "per run, one entry per distinct command, error type and node state of the run, not per event; "
        "the stored lists keep run_status.MAX_LISTED names each"
    ),
}
"""Every ``$push``/``$addToSet`` a projection may use, with why its array stays small."""


def test_every_pipeline_a_projection_builds_is_linted_here() -> None:
    built = set()
    for info in pkgutil.iter_modules(projections.__path__):
        module = importlib.import_module(f"projections.{info.name}")
        built |= {
            f"{info.name}.{name}"
            for name, value in vars(module).items()
            if (name.endswith("_pipeline") and callable(value) and value.__module__ == module.__name__)
            or (name.endswith("_PIPELINE") and isinstance(value, list))
        }
    assert built == set(PIPELINES)


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_no_pipeline_gathers_whole_events_or_a_list_that_grows_with_them(name: str) -> None:
    problems = [
        f"{field}: {why}"
        for field, operator, fed_by_events in growing_accumulators(PIPELINES[name]())
        for why in (
            "whole documents" if "whole document" in operator else None,
            "one entry per event" if operator == "$push" and fed_by_events else None,
            f"{operator} not declared bounded" if (name, field) not in BOUNDED else None,
        )
        if why is not None
    ]
    assert problems == []


def test_every_declared_bound_is_still_used() -> None:
    used = {(name, field) for name, make in PIPELINES.items() for field, _, _ in growing_accumulators(make())}
    assert set(BOUNDED) <= used


# --- queries, on a server's limits -----------------------------------------------------------


def queries(events: Any, runs: Any) -> dict[str, Callable[[], Any]]:
    return {
        "audit": lambda: audit_trail(events, "checkout-ok"),
        "audit_chain": lambda: audit_chain(events, "checkout-ok"),
        "command_stats": lambda: command_stats(events),
        "failures": lambda: failures(events),
        "run_status": lambda: run_status(events, "checkout-ok"),
        "run_history": lambda: run_history(runs),
        "throughput": lambda: throughput(events, None, None, MS),
        "worker_activity": lambda: worker_activity(events),
    }


@pytest.fixture
def golden() -> tuple[Any, Any]:
    """The checkout log and its ``runs`` documents, each behind a 256-byte stage memory limit."""
    database = client()["limits"]
    database["events"].insert_many(load_log("checkout"))
    database["runs"].insert_many(list(database["events"].aggregate(run_status_pipeline())))
    return (
        ServerLimits(database["events"], stage_bytes=256),
        ServerLimits(database["runs"], stage_bytes=256),
    )


@pytest.mark.parametrize("name", sorted(queries(None, None)))
def test_every_query_lets_its_stages_spill_to_disk(golden: tuple[Any, Any], name: str) -> None:
    events, runs = golden
    assert queries(events, runs)[name]()  # an answer, not an OperationFailure for want of allowDiskUse


def attempts(count: int, *, fail_every: int = 3) -> list[dict[str, Any]]:
    """One run of ``count`` attempts of one command on one worker, names of one width, durations
    cycling through the same 20 values: n and 4n attempts differ only in how many there are."""
    docs = [to_doc(Event("big", 1, ev.RUN_SUBMITTED, T, data={"name": "big", "flow": {"nodes": []}}))]
    for i in range(count):
        node, at, seq = f"r.{i:06d}", T + (i % 50) * MS, 2 + 3 * i
        docs.append(to_doc(Event("big", seq, ev.COMMAND_DISPATCHED, at, node, 1, "charge", {"args": [i]})))
        started = {"by": WORKER, "started_at": at}
        docs.append(to_doc(Event("big", seq + 1, ev.COMMAND_STARTED, at, node, 1, "charge", started)))
        if i % fail_every == 0:
            error = {"type": "builtins.ValueError", "message": "no", "reason": "raised"}
            ending = Event("big", seq + 2, ev.COMMAND_FAILED, at, node, 1, "charge", {"error": error})
        else:
            took = {"result": i, "duration_s": 0.001 * (1 + (i // fail_every) % 20)}
            ending = Event("big", seq + 2, ev.COMMAND_SUCCEEDED, at, node, 1, "charge", took)
        docs.append(to_doc(ending))
    return docs


SCALED: dict[str, Callable[[Any], Any]] = {
    "audit": lambda events: audit_trail(events, "big"),
    "command_stats": command_stats,
    "failures": failures,
    "run_status": lambda events: run_status(events, "big"),
    "throughput": lambda events: throughput(events, None, None, timedelta(hours=1)),
    "worker_activity": worker_activity,
}


def largest_document(docs: list[dict[str, Any]], query: Callable[[Any], Any]) -> int:
    collection = client()["limits"]["events"]
    collection.insert_many(docs)
    limited = ServerLimits(collection)
    assert query(limited)
    return limited.largest


@pytest.mark.parametrize("name", sorted(SCALED))
def test_no_stage_holds_a_document_that_grows_with_the_history(name: str) -> None:
    small, big = (largest_document(attempts(count), SCALED[name]) for count in (60, 240))
    assert big == small


def test_a_run_whose_attempt_logged_more_than_16_mib_still_audits() -> None:
    """Each event within its limits (4 MiB of arguments, 4 MiB emitted, an expansion into three calls of
    4 MiB), together 20 MiB in one attempt: more than one document can hold, as a ``$push`` would."""
    payload = "x" * (4 * 1024 * 1024 - 1024)
    flow = {"nodes": [{"kind": "call", "command": "part", "args": [payload]} for _ in range(3)]}
    log = [
        Event("huge", 1, ev.RUN_SUBMITTED, T, data={"name": "huge", "flow": {"nodes": [{}]}}),
        Event("huge", 2, ev.COMMAND_DISPATCHED, T, "r", 1, "split", {"args": [payload]}),
        Event("huge", 3, ev.COMMAND_STARTED, T + MS, "r", 1, "split", {"by": WORKER, "started_at": T}),
        Event("huge", 4, "parts.planned", T + MS, "r", 1, "split", {"plan": payload}),
        Event("huge", 5, ev.COMMAND_EXPANDED, T + MS, "r", 1, "split", {"flow": flow, "duration_s": 0.5}),
        Event("huge", 6, ev.RUN_CANCELLED, T + 2 * MS, data={"reason": "enough"}),
    ]
    events = client()["limits"]["events"]
    events.insert_many([to_doc(event) for event in reversed(log)])
    trail = audit_trail(ServerLimits(events), "huge")
    workers = [None, WORKER, WORKER, WORKER, WORKER, None]
    assert [(entry.seq, entry.worker) for entry in trail] == list(enumerate(workers, start=1))
    emitted = 'emitted parts.planned {"plan": "' + "x" * 70 + "..."
    assert [entry.summary for entry in trail[3:5]] == [emitted, "expanded into 3 nodes"]
    assert trail[1].event["data"]["args"] == [payload]


def test_a_run_lists_its_first_names_in_order_however_many_it_uses() -> None:
    """A run of more distinct commands and error types than a status lists: the pipeline, a fold of
    the log, and a fold continued from a stored status all keep the same first ``MAX_LISTED``."""
    names = [f"c{i:05d}" for i in range(MAX_LISTED + 5)]
    random.Random(7).shuffle(names)
    log = [Event("wide", 1, ev.RUN_SUBMITTED, T, data={"name": "wide", "flow": {"nodes": []}})]
    for i, name in enumerate(names):
        error = {"type": f"errors.{name}", "message": "no", "reason": "raised"}
        log.append(Event("wide", len(log) + 1, ev.COMMAND_DISPATCHED, T, f"r.{i}", 1, name))
        log.append(Event("wide", len(log) + 1, ev.COMMAND_FAILED, T, f"r.{i}", 1, name, {"error": error}))
    events = client()["limits"]["events"]
    events.insert_many([to_doc(event) for event in log])

    status = run_status(ServerLimits(events), "wide")
    assert status is not None
    assert status.commands == tuple(sorted(names)[:MAX_LISTED])
    assert status.error_types == tuple(f"errors.{name}" for name in sorted(names)[:MAX_LISTED])
    assert tally("wide", log) == status
    continued = RunTally.from_doc(tally("wide", log[:1001]).to_doc())
    for event in log[1001:]:
        continued.add(event)
    assert continued.status() == status
