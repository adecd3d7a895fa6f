"""Golden logs -> what every projection answers; plus the facts a person checked by hand.

The logs are inserted in a shuffled order, so an answer that leaned on
insertion order (mongomock's natural order) would change and fail here.
"""

from __future__ import annotations

import importlib
import os
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import bson
import pytest
from bson import json_util

from orchestrator.core.events import Event, to_doc
from projections.audit import (
    audit_pipeline,
    audit_trail,
    chain_events_pipeline,
    chain_pipeline,
    correlation_pipeline,
)
from projections.command_stats import command_stats, command_stats_pipeline
from projections.failures import FailureExample, failures, failures_pipeline
from projections.indexes import ensure_indexes
from projections.throughput import ALL_EVENTS, Bucket, bucket_ms, throughput, throughput_pipeline
from projections.worker_activity import WorkerActivity, worker_activity, worker_activity_pipeline

from .conftest import real_server_url
from .goldens import UPDATE_ENV, load_expected, load_log, plain, save_expected

LOGS = ("checkout", "incidents")
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
HOUR = (START, START + timedelta(hours=1))
BUCKET = timedelta(milliseconds=50)
INLINE = "host-a:4242/inline"
THREADS = "host-a:4242/threads"
MODULES = tuple(  # by import_module: the package may re-export functions under these same names
    importlib.import_module(f"projections.{name}")
    for name in ("audit", "command_stats", "failures", "throughput", "worker_activity")
)


def fill(collection: Any, docs: list[dict[str, Any]], seed: str) -> Any:
    shuffled = [dict(doc) for doc in docs]
    random.Random(seed).shuffle(shuffled)
    collection.insert_many(shuffled)
    return collection


def answers(collection: Any, docs: list[dict[str, Any]]) -> dict[str, Any]:
    """Every projection over the log, as JSON values (audit entries without their documents)."""
    runs = sorted({doc["run"] for doc in docs})
    return {
        "audit": {
            run: [_without_event(plain(entry)) for entry in audit_trail(collection, run)] for run in runs
        },
        "command_stats": plain(command_stats(collection, *HOUR)),
        "failures": plain(failures(collection, *HOUR)),
        "throughput_50ms": plain(throughput(collection, *HOUR, BUCKET)),
        "completions_50ms": plain(throughput(collection, *HOUR, BUCKET, completions=True)),
        "worker_activity": plain(worker_activity(collection, *HOUR)),
    }


def _without_event(row: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in row.items() if key != "event"}


@pytest.mark.parametrize("name", LOGS)
def test_every_projection_answers_as_recorded(events_collection: Any, name: str) -> None:
    docs = load_log(name)
    got = answers(fill(events_collection, docs, name), docs)
    if os.environ.get(UPDATE_ENV):
        save_expected(name, got)
        pytest.skip(f"re-recorded expected_{name}.json; review the diff")
    assert got == load_expected(name)


@pytest.mark.parametrize("name", LOGS)
def test_audit_carries_each_stored_document_whole(events_collection: Any, name: str) -> None:
    docs = load_log(name)
    fill(events_collection, docs, name)
    for run in {doc["run"] for doc in docs}:
        mine = sorted((doc for doc in docs if doc["run"] == run), key=lambda doc: doc["seq"])
        assert [entry.event for entry in audit_trail(events_collection, run)] == mine


# --- facts checked by hand against the golden logs ----------------------------------------


@pytest.fixture
def checkout(events_collection: Any) -> Any:
    return fill(events_collection, load_log("checkout"), "checkout")


@pytest.fixture
def incidents(events_collection: Any) -> Any:
    return fill(events_collection, load_log("incidents"), "incidents")


def test_audit_names_the_worker_the_cause_and_the_change(checkout: Any) -> None:
    trail = audit_trail(checkout, "checkout-ok")
    assert [entry.seq for entry in trail] == list(range(1, 38))
    retry = trail[7]
    assert (retry.type, retry.worker, retry.summary) == (
        "retry.scheduled",
        None,
        "retry 2 scheduled in 0.05s",
    )
    assert retry.causation == "checkout-ok/0000000007"
    failed = trail[6]
    assert failed.summary == "failed: builtins.ValueError: attempt 1 fails on purpose (raised)"
    assert (failed.worker, failed.by, failed.causation) == (
        INLINE,
        "orchestrator:host-a:4242",
        "checkout-ok/r.1#1",
    )
    pooled = [entry for entry in trail if entry.node == "r.2.1"]
    assert [entry.worker for entry in pooled] == [THREADS] * 3
    assert pooled[0].summary == "dispatched attempt 1 of slow to route pool"
    assert trail[0].summary == "submitted flow 'checkout' of 8 nodes"
    assert trail[-1].summary == "run succeeded"


def test_audit_of_a_timeout_and_its_late_outcome(incidents: Any) -> None:
    trail = audit_trail(incidents, "incident-timeout")
    timed_out = next(entry for entry in trail if entry.type == "command.failed" and entry.node == "r.0")
    assert timed_out.worker is None  # it never started anywhere the log knows of
    assert timed_out.summary.endswith("(timeout)")
    late = trail[-1]
    assert late.summary == f"ignored a late result of attempt 1 from {THREADS}"
    assert late.worker == THREADS


def test_audit_of_an_unknown_run_is_empty(checkout: Any) -> None:
    assert audit_trail(checkout, "no-such-run") == []


def test_command_stats_count_calls_outcomes_retries_and_durations(checkout: Any) -> None:
    stats = {row.command: row for row in command_stats(checkout, *HOUR)}
    flaky = stats["flaky"]
    assert (flaky.calls, flaky.successes, flaky.failures, flaky.retries) == (6, 1, 5, 4)
    assert flaky.failure_rate == pytest.approx(5 / 6)
    slow = stats["slow"]
    assert (slow.calls, slow.successes, slow.max_duration_s, slow.p95_duration_s) == (2, 2, 0.036, 0.036)
    assert slow.mean_duration_s == pytest.approx(0.0285)
    assert stats["returns_flow"].expansions == 1 and stats["returns_flow"].mean_duration_s is None


def test_the_window_includes_since_and_excludes_until(checkout: Any) -> None:
    ok_submitted = START
    failed_submitted = datetime(2026, 3, 2, 9, 0, 0, 215000, tzinfo=UTC)
    before = {row.command: row.calls for row in command_stats(checkout, ok_submitted, failed_submitted)}
    after = {row.command: row.calls for row in command_stats(checkout, failed_submitted)}
    assert before == {"flaky": 3, "inc": 1, "returns_flow": 1, "slow": 2, "square": 3, "total": 1}
    assert after == {"flaky": 3, "inc": 1}
    naive = datetime(2026, 3, 2, 9, 0, 0, 215000)  # taken as UTC
    assert {row.command: row.calls for row in command_stats(checkout, naive)} == after
    just_after = failed_submitted + timedelta(microseconds=999)  # events at .215 are before it
    assert sum(row.calls for row in command_stats(checkout, just_after)) < sum(after.values())


def test_failures_come_most_frequent_first_with_the_latest_example(incidents: Any) -> None:
    groups = failures(incidents, *HOUR)
    assert [(g.error_type, g.command, g.count) for g in groups] == [
        ("builtins.ValueError", "raise_value_error", 2),
        ("orchestrator.core.errors.CommandTimeout", "slow", 1),
        ("orchestrator.core.errors.PayloadError", "returns_set", 1),
    ]
    assert groups[0].latest == FailureExample(
        run="incident-declined",
        node="r",
        attempt=1,
        message="card declined",
        at=datetime(2026, 3, 2, 9, 0, 0, 553000, tzinfo=UTC),
        reason="raised",
    )


def test_throughput_buckets_align_to_the_epoch(incidents: Any) -> None:
    since = datetime(2026, 3, 2, 9, 0, 0, 40000, tzinfo=UTC)  # not on a bucket boundary
    buckets = throughput(incidents, since, START + timedelta(seconds=1), timedelta(milliseconds=100))
    assert buckets == [
        Bucket(datetime(2026, 3, 2, 9, 0, 0, 0, tzinfo=UTC), 3),  # the 3 events at .051 only
        Bucket(datetime(2026, 3, 2, 9, 0, 0, 300000, tzinfo=UTC), 1),
        Bucket(datetime(2026, 3, 2, 9, 0, 0, 500000, tzinfo=UTC), 12),
    ]
    ended = throughput(incidents, *HOUR, timedelta(hours=1), completions=True)
    assert ended == [Bucket(START, 4)]


def test_worker_activity_measures_busy_time_from_start_to_end(checkout: Any) -> None:
    activity = worker_activity(checkout, *HOUR)
    assert activity[1] == WorkerActivity(THREADS, calls=1, busy_s=0.021, failures=0)
    assert (activity[0].worker, activity[0].calls, activity[0].failures) == (INLINE, 14, 5)


def test_attempts_that_never_started_belong_to_no_worker(incidents: Any) -> None:
    activity = worker_activity(incidents, *HOUR)
    assert [(row.worker, row.calls, row.failures) for row in activity] == [(INLINE, 3, 3)]


# --- edge cases the engine rarely writes, built by hand ---------------------------------------


def failed(
    run: str, seq: int, at: datetime, kind: str = "builtins.ValueError", command: str = "charge"
) -> Event:
    error = {"type": kind, "message": f"{run}#{seq}", "mro": [], "traceback": "", "reason": "raised"}
    return Event(run, seq, "command.failed", at, "r", seq, command, {"error": error}, by="orchestrator:o:1")


def test_failure_ties_are_broken_by_run_then_seq(events_collection: Any) -> None:
    same = START + timedelta(seconds=1)
    log = [failed("a", 1, same), failed("b", 1, same), failed("b", 2, same), failed("a", 2, START)]
    log += [failed("c", 1, START, "builtins.KeyError"), failed("c", 2, START, "builtins.KeyError", "alpha")]
    events_collection.insert_many([to_doc(event) for event in reversed(log)])
    groups = failures(events_collection)
    assert [(g.error_type, g.command, g.count, g.latest.message) for g in groups] == [
        ("builtins.ValueError", "charge", 4, "b#2"),
        ("builtins.KeyError", "alpha", 1, "c#2"),
        ("builtins.KeyError", "charge", 1, "c#1"),
    ]


def test_an_attempt_with_no_ending_or_no_start_time_adds_no_busy_time(events_collection: Any) -> None:
    started = {"by": "w", "started_at": START}
    log = [
        Event("a", 1, "command.started", START, "r.0", 1, "charge", started),  # its ending was never appended
        Event("a", 2, "command.started", START, "r.1", 1, "charge", {"by": "w", "started_at": None}),
        Event("a", 3, "command.failed", START + timedelta(seconds=2), "r.1", 1, "charge", {"error": {}}),
        Event("a", 4, "command.started", START, "r.2", 1, "charge", started),
        Event("a", 5, "command.succeeded", START + timedelta(seconds=3), "r.2", 1, "charge", {"result": 1}),
    ]
    events_collection.insert_many([to_doc(event) for event in log])
    assert worker_activity(events_collection) == [WorkerActivity("w", 3, 3.0, 1)]


# --- the pipelines themselves ----------------------------------------------------------------

PIPELINES: dict[str, Callable[[], list[dict[str, Any]]]] = {
    "audit": lambda: audit_pipeline("checkout-ok"),
    "audit_correlation": lambda: correlation_pipeline("checkout-ok"),
    "audit_chain": lambda: chain_pipeline("checkout-ok"),
    "audit_chain_events": lambda: chain_events_pipeline(["checkout-ok", "checkout-failed"]),
    "command_stats": lambda: command_stats_pipeline(*HOUR),
    "failures": lambda: failures_pipeline(*HOUR),
    "throughput": lambda: throughput_pipeline(*HOUR, BUCKET, ALL_EVENTS),
    "worker_activity": lambda: worker_activity_pipeline(*HOUR),
}


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_a_pipeline_is_plain_data_that_starts_on_an_index_and_sorts(name: str) -> None:
    pipeline = PIPELINES[name]()
    bson.encode({"pipeline": pipeline})  # plain BSON-able data, nothing to call
    first = pipeline[0]["$match"]
    assert (
        "run" in first or ("type" in first and "at" in first) or ("correlation" in first and "type" in first)
    )
    one_row = name == "audit_correlation"  # (run, seq) is unique: nothing to order
    assert one_row or any("$sort" in stage for stage in pipeline)
    assert not {"$merge", "$out"} & {key for stage in pipeline for key in stage}


@pytest.mark.parametrize("module", MODULES, ids=lambda module: module.__name__)
def test_the_store_and_init_create_every_index_a_projection_needs(
    events_collection: Any, module: Any
) -> None:
    ensure_indexes({"events": events_collection})  # what `evenflow init` adds to the store's own
    have = {
        tuple((key, int(order)) for key, order in spec["key"])
        for spec in events_collection.index_information().values()
    }
    for keys in module.INDEXES_NEEDED:
        assert tuple(keys) in have, f"{module.__name__} needs an index on {keys}"


@pytest.mark.skipif(real_server_url() is None, reason="needs EVENFLOW_TEST_MONGODB_URL")
@pytest.mark.mongodb
@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_on_a_server_each_pipeline_reads_through_an_index(checkout: Any, name: str) -> None:
    ensure_indexes({"events": checkout})
    plan = checkout.database.command("aggregate", checkout.name, pipeline=PIPELINES[name](), explain=True)
    text = json_util.dumps(plan)
    assert "IXSCAN" in text and "COLLSCAN" not in text, text


def test_a_bucket_is_a_positive_whole_number_of_milliseconds() -> None:
    assert bucket_ms(timedelta(minutes=1)) == 60_000
    for bad in (timedelta(0), timedelta(seconds=-1), timedelta(microseconds=1500)):
        with pytest.raises(ValueError, match="bucket"):
            bucket_ms(bad)
