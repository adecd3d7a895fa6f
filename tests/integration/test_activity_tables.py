"""Throughput and worker activity from the embedded store's counts answer what the pipelines over the
whole journal answer.

For random logs — attempts over a few hours, most logged as the engine logs
them (a start and its ending in one append, under one time), others apart (a
start and its ending in different appends or hours, a start with no ending, an
ending with no start), with workers named or not — every window (open, on an
hour, on a minute, anywhere) and every bucket (less than a minute, minutes,
hours, neither) gives the rows the pipelines give over the full mirror, however
much the writer has not folded in yet. A few events fall before the epoch,
where a bucket's start follows ``$mod``'s sign.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from orchestrator.core import events as ev
from orchestrator.core.events import Event
from orchestrator.store.embedded import EmbeddedStore
from projections.source import to_millis
from projections.throughput import bucket_ms, buckets_of_rows, counted, throughput
from projections.worker_activity import activity_of_rows, worker_activity
from tests.integration.test_history_tables import FLUSHES, SETTINGS, T0, logged

MS = timedelta(milliseconds=1)
ENDINGS = [ev.COMMAND_SUCCEEDED, ev.COMMAND_EXPANDED, ev.COMMAND_FAILED]
WORKERS = ["host:1/processes", "host:2/processes", None]
BUCKETS = st.sampled_from(
    [MS * 7, timedelta(seconds=1), timedelta(seconds=45), timedelta(minutes=1), timedelta(minutes=5),
     timedelta(minutes=90), timedelta(hours=1), timedelta(hours=2), timedelta(days=1)]
)  # fmt: skip
BOUNDS = st.one_of(
    st.none(),
    st.integers(-1, 4).map(lambda h: T0 + timedelta(hours=h)),
    st.integers(-60, 240).map(lambda m: T0 + timedelta(minutes=m)),
    st.integers(0, 4 * 3600 * 1000).map(lambda ms: T0 + ms * MS),
)


@st.composite
def attempt_logs(draw: st.DrawFn) -> list[list[Event]]:
    """Runs of attempts, each appended as one or more batches."""
    batches: list[list[Event]] = []
    for index in range(draw(st.integers(1, 5))):
        run = f"run-{index:02d}"
        early = draw(st.integers(0, 9)) == 0  # before the epoch, where $mod keeps the sign
        at = datetime(1969, 12, 31, 23, 0, tzinfo=UTC) if early else T0
        at += draw(st.integers(0, 3 * 3600 * 1000)) * MS
        events = [Event(run, 1, ev.RUN_SUBMITTED, at)]
        for attempt in range(1, draw(st.integers(0, 12)) + 1):
            at += draw(st.integers(0, 20 * 60 * 1000)) * MS
            events += _attempt(draw, run, len(events), attempt, at)
        end = Event(run, len(events) + 1, ev.RUN_SUCCEEDED, at)
        cuts = draw(st.lists(st.integers(1, len(events)), max_size=3))
        for start, stop in zip([0, *sorted(cuts)], [*sorted(cuts), len(events)], strict=True):
            if start < stop:
                batches.append(events[start:stop])
        batches.append([end])
    return batches


def _attempt(draw: st.DrawFn, run: str, seq: int, attempt: int, at: datetime) -> list[Event]:
    """A dispatch, then a start and an ending as the engine logs them, or some of them, apart."""
    shape = draw(st.sampled_from(["engine"] * 3 + ["apart"] * 2 + ["no ending", "no start"]))
    started_at = draw(st.none() | st.integers(0, 5_000).map(lambda ms: at - ms * MS))
    by = draw(st.sampled_from(WORKERS))
    data = {"by": by} if by is not None else {}
    if started_at is not None:
        data["started_at"] = ev.to_millis(started_at)
    later = st.sampled_from([1, 59 * 60_000, 61 * 60_000]) | st.integers(0, 2 * 3600 * 1000)
    ended = at + draw(later) * MS if shape == "apart" else at

    def make(offset: int, type_: str, when: datetime, body: dict[str, Any]) -> Event:
        return Event(run, seq + offset, type_, when, node="n", attempt=attempt, command="c", data=body)

    dispatched = make(1, ev.COMMAND_DISPATCHED, at, {})
    start = make(2, ev.COMMAND_STARTED, at, data)
    ending = draw(st.sampled_from(ENDINGS))
    if shape == "no start":
        return [dispatched, make(2, ending, ended, {})]
    if shape == "no ending":
        return [dispatched, start]
    return [dispatched, start, make(3, ending, ended, {})]


@SETTINGS
@given(
    batches=attempt_logs(),
    windows=st.lists(st.tuples(BOUNDS, BOUNDS), min_size=1, max_size=3),
    bucket=BUCKETS,
    flush_every=FLUSHES,
)
def test_throughput_and_worker_activity_of_any_window_are_what_the_pipelines_give(
    tmp_path_factory: Any,
    batches: list[list[Event]],
    windows: list[tuple[Any, Any]],
    bucket: timedelta,
    flush_every: int,
) -> None:
    home = tmp_path_factory.mktemp("home")
    with logged(home, batches, flush_every):
        reader = EmbeddedStore(home, read_only=True)
        try:
            for since, until in [(None, None), *windows]:
                window = (to_millis(since), to_millis(until))
                for completions in (False, True):
                    rows = reader.throughput_rows(*window, bucket_ms(bucket), counted(completions))
                    piped = throughput(reader.events, since, until, bucket, completions=completions)
                    assert buckets_of_rows(rows or []) == piped
                rows = reader.worker_rows(*window)
                assert activity_of_rows(rows or []) == worker_activity(reader.events, since, until)
        finally:
            reader.close()


def test_a_day_of_whole_hours_reads_the_hour_counts_not_the_timeline(tmp_path: Path) -> None:
    batches = [
        [Event(f"r{i}", 1, ev.RUN_SUBMITTED, T0 + timedelta(minutes=7 * i))] for i in range(24 * 60 // 7)
    ]
    with logged(tmp_path / "home", batches, 1) as writer:
        traced: list[str] = []
        db = writer._open_db()
        db.set_trace_callback(traced.append)
        try:
            window = (to_millis(T0), to_millis(T0 + timedelta(days=1)))
            rows = writer.throughput_rows(*window, 3_600_000, counted(False))
        finally:
            db.set_trace_callback(None)
    assert [row["_id"] for row in rows or []] == [T0 + timedelta(hours=h) for h in range(24)]
    assert sum(row["count"] for row in rows or []) == len(batches)
    assert not any("FROM timeline" in statement for statement in traced)
    assert any("FROM event_counts" in statement for statement in traced)


def test_pairs_are_counted_by_hour_and_only_the_loose_events_are_marked(tmp_path: Path) -> None:
    at = T0 + timedelta(minutes=30)
    data = {"by": "w1", "started_at": ev.to_millis(at - timedelta(seconds=2))}
    paired = [
        Event("a", 1, ev.COMMAND_STARTED, at, node="n", attempt=1, data=data),
        Event("a", 2, ev.COMMAND_FAILED, at, node="n", attempt=1),
    ]
    loose = [Event("b", 1, ev.COMMAND_STARTED, at, node="n", attempt=1, data=data)]
    across = [  # one append, but the ending is in the next hour: not a pair
        Event("c", 1, ev.COMMAND_STARTED, at, node="n", attempt=1, data={"by": "w2", "started_at": at}),
        Event("c", 2, ev.COMMAND_SUCCEEDED, at + timedelta(hours=1), node="n", attempt=1),
    ]
    with logged(tmp_path / "home", [paired, loose, across], 1) as writer:
        db: sqlite3.Connection = writer._open_db()
        hours = db.execute("SELECT worker, calls, busy_ms, failures FROM worker_hours").fetchall()
        marked = db.execute("SELECT id FROM timeline WHERE loose = 1 ORDER BY id").fetchall()
        rows = writer.worker_rows(None, None)
        first_hour = writer.worker_rows(to_millis(T0), to_millis(T0 + timedelta(hours=1)))
    assert hours == [("w1", 1, 2_000, 1)]
    assert marked == [(e.id,) for e in (*loose, *across)]
    assert rows == [
        {"_id": "w1", "calls": 2, "busy_ms": 2_000, "failures": 1},
        {"_id": "w2", "calls": 1, "busy_ms": 3_600_000, "failures": 0},
    ]
    assert first_hour == [  # the pipeline's answer: c's start without its ending, so no busy time
        {"_id": "w1", "calls": 2, "busy_ms": 2_000, "failures": 1},
        {"_id": "w2", "calls": 1, "busy_ms": 0, "failures": 0},
    ]
