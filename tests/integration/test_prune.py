"""Retention on the embedded store: whole finished runs go, everything else stays, readers stay exact.

For random logs (runs that end at random times or not at all), a prune at a
random cutoff, with or without a listener's checkpoint part-way through the
journal, must remove exactly the runs that ended before the cutoff and that
the listener has read to the end; leave every other run whole, as it was; log
one ``evenflow.prune`` run per batch naming what went; and leave the readers
answering what a fold of the remaining journal answers, with ``stats`` over
whole hours unchanged. A prune killed between batches leaves whole runs, the
records naming exactly what went, and a second prune finishes the job.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.core import events as ev
from orchestrator.core.events import Event
from orchestrator.store.embedded import EmbeddedStore
from orchestrator.store.faithful_mock import client
from orchestrator.store.feed import FeedWindow
from orchestrator.store.mongo import MongoStore
from projections import RunsProjector
from projections.command_stats import stats_of_rows
from projections.run_history import Page, indexed_history, run_history
from projections.run_tally import tally
from tests.acceptance.test_cli import evenflow
from tests.support.stores import SERVER, drop_database, open_kind

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SETTINGS = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@st.composite
def runs(draw: st.DrawFn) -> list[list[Event]]:
    """Runs of a few events each, on the hour marks of a day; most end, at random times."""
    made = []
    for index in range(draw(st.integers(1, 14))):
        run = f"run-{index:02d}"
        at = T0 + timedelta(hours=draw(st.integers(0, 20)))
        events = [Event(run, 1, ev.RUN_SUBMITTED, at, data={"name": "billing"})]
        for _ in range(draw(st.integers(0, 3))):
            events.append(
                Event(run, len(events) + 1, ev.COMMAND_DISPATCHED, at, node="n", attempt=1, command="c")
            )
            data = {"result": 1, "duration_s": 0.5}
            events.append(
                Event(
                    run,
                    len(events) + 1,
                    ev.COMMAND_SUCCEEDED,
                    at,
                    node="n",
                    attempt=1,
                    command="c",
                    data=data,
                )
            )
        end = draw(st.sampled_from([None, ev.RUN_SUCCEEDED, ev.RUN_FAILED, ev.RUN_CANCELLED]))
        if end is not None:
            events.append(Event(run, len(events) + 1, end, at + timedelta(minutes=draw(st.integers(0, 90)))))
        made.append(events)
    return made


def by_run(store: EmbeddedStore) -> dict[str, list[Event]]:
    found: dict[str, list[Event]] = {}
    for event in store.scan():
        found.setdefault(event.run, []).append(event)
    return found


def page_rows(store: EmbeddedStore) -> list[dict[str, Any]]:
    page = indexed_history(store.run_page, lambda run: tally(run, store.read(run)), limit=1000)
    assert isinstance(page, Page)
    return [row.to_doc() for row in page.rows]


def folded_rows(events: list[Event]) -> list[dict[str, Any]]:
    projector = RunsProjector.in_memory(client()["evenflow"]["runs"])
    projector.apply(events)
    return [row.to_doc() for row in run_history(projector.runs, limit=1000).rows]


@SETTINGS
@given(logged=runs(), cutoff_h=st.integers(0, 23), listener_at=st.one_of(st.none(), st.integers(0, 60)))
def test_a_prune_removes_exactly_the_whole_finished_runs_no_listener_needs(
    tmp_path_factory: Any, logged: list[list[Event]], cutoff_h: int, listener_at: int | None
) -> None:
    home = tmp_path_factory.mktemp("home")
    cutoff = T0 + timedelta(hours=cutoff_h)
    store = EmbeddedStore(home)
    try:
        for events in logged:
            store.append(events)
        if listener_at is not None:
            store.save_checkpoint("listener", {"row": listener_at})
        before = by_run(store)
        rows = {e.id: r for r, e in store.rows_after(0)}
        stats_before = stats_of_rows(store.command_rows(None, None) or [])
        done = store.prune(cutoff)
        after = by_run(store)
    finally:
        store.close()
    records = [run for run in after if run.startswith("pruned-")]
    gone = set(before) - set(after)
    for run, events in before.items():
        ended = [e for e in events if e.type in ev.RUN_TERMINAL]
        needed = listener_at is not None and max(rows[e.id] for e in events) > listener_at
        should_go = bool(ended) and ended[-1].at < cutoff and not needed
        assert (run in gone) == should_go, run
        if run in after:
            assert after[run] == events  # whole, as it was
    assert done.runs == len(gone) and done.events == sum(len(before[run]) for run in gone)
    assert len(records) == len(done.records) == (1 if gone else 0)
    listed = {run for record in records for run in after[record][-1].data["result"]["removed"]}
    assert listed == gone
    reader = EmbeddedStore(home, read_only=True)
    try:
        remaining = [e for events in by_run(reader).values() for e in events]
        assert page_rows(reader) == folded_rows(remaining)
        assert stats_of_rows(reader.command_rows(None, None) or []) == stats_before  # whole hours kept
        unfinished = [
            run for run, events in before.items() if not any(e.type in ev.RUN_TERMINAL for e in events)
        ]
        assert reader.unfinished_runs() == sorted(unfinished, key=lambda run: (before[run][0].at, run))
    finally:
        reader.close()


CHILD = textwrap.dedent(
    """
    import sys
    from datetime import UTC, datetime, timedelta
    from orchestrator.core import events as ev
    from orchestrator.core.crashpoints import arm
    from orchestrator.core.events import Event
    from orchestrator.store import prune
    from orchestrator.store.embedded import EmbeddedStore

    store = EmbeddedStore(sys.argv[1])
    at = datetime(2026, 3, 1, tzinfo=UTC)
    for i in range(10):
        run = f"old-{i}"
        store.append([Event(run, 1, ev.RUN_SUBMITTED, at), Event(run, 2, ev.RUN_SUCCEEDED, at)])
    store.append([Event("open", 1, ev.RUN_SUBMITTED, at)])
    prune.BATCH = 3
    arm("prune-batch@" + sys.argv[2])
    store.prune(at + timedelta(days=1))
    print("the crash point did not fire", flush=True)
    """
)


def test_a_prune_killed_between_batches_leaves_whole_runs_and_a_second_one_finishes(tmp_path: Path) -> None:
    home = tmp_path / "home"
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(home), "2"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == -signal.SIGKILL, done.stdout + done.stderr
    store = EmbeddedStore(home)
    try:
        found = by_run(store)
        records = [run for run in found if run.startswith("pruned-")]
        listed = {r for record in records for r in found[record][-1].data["result"]["removed"]}
        olds = {run for run in found if run.startswith("old-")}
        assert len(records) == 2 and len(listed) == 6 and olds == {f"old-{i}" for i in range(10)} - listed
        assert all([e.seq for e in found[run]] == [1, 2] for run in olds) and [
            e.seq for e in found["open"]
        ] == [1]
        second = store.prune(datetime(2026, 3, 2, tzinfo=UTC))
        assert second.runs == 4 and not any(run.startswith("old-") for run in by_run(store))
        assert store.unfinished_runs() == ["open"]
    finally:
        store.close()


def test_evenflow_prune_says_what_it_would_remove_then_removes_it_and_logs_a_run(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert evenflow("demo", "--executor", "inline", home=home).returncode == 0
    dry = evenflow("prune", "--finished-before", "2099-01-01T00:00:00+00:00", "--dry-run", home=home)
    assert dry.returncode == 0 and dry.stdout.startswith("would remove 1 run(s)"), dry.stdout + dry.stderr
    done = evenflow("prune", "--finished-before", "2099-01-01T00:00:00+00:00", home=home)
    assert done.returncode == 0 and done.stdout.startswith("removed 1 run(s)"), done.stdout + done.stderr
    listed = evenflow("runs", "--json", home=home)
    flows = [row["flow"] for row in json.loads(listed.stdout)["runs"]]
    assert flows == ["evenflow.prune"]
    bad = evenflow("prune", "--finished-before", "soon", home=home)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr


# --- MongoDB (mongomock here; the server lane runs it on a server) ----------------------------


@pytest.mark.parametrize("kind", ["mongomock", SERVER])
@SETTINGS
@given(logged=runs(), cutoff_h=st.integers(0, 23), read_to_h=st.one_of(st.none(), st.integers(0, 24)))
def test_on_mongodb_a_prune_removes_exactly_the_whole_finished_runs_no_listener_needs(
    tmp_path_factory: Any, kind: str, logged: list[list[Event]], cutoff_h: int, read_to_h: int | None
) -> None:
    database = f"evenflow_test_{uuid.uuid4().hex[:12]}"  # each example its own log
    store = open_kind(kind, tmp_path_factory.mktemp("home"), database)
    assert isinstance(store, MongoStore)
    cutoff = T0 + timedelta(hours=cutoff_h)
    try:
        for events in logged:
            store.append(events)
        floor = None
        if read_to_h is not None:  # a listener's mark: it may not have read what is newer, less the window
            mark = FeedWindow.millis(T0 + timedelta(hours=read_to_h))
            store.save_checkpoint("listener", {"at": mark, "floor": None, "seen": [], "spans": []})
            floor = T0 + timedelta(hours=read_to_h) - timedelta(milliseconds=store.feed.window_ms)
        before = {events[0].run: store.read(events[0].run) for events in logged}
        done = store.prune(cutoff, dry_run=False)
        after = {run: store.read(run) for run in before}
        records = [
            doc["run"] for doc in store.events.find({"type": ev.RUN_SUBMITTED, "data.name": "evenflow.prune"})
        ]
        for run, events in before.items():
            ended = [e for e in events if e.type in ev.RUN_TERMINAL]
            needed = floor is not None and max(e.at for e in events) > floor
            should_go = bool(ended) and ended[-1].at < cutoff and not needed
            assert (after[run] == []) == should_go, run
            if not should_go:
                assert after[run] == events
        gone = {run for run in before if not after[run]}
        assert done.runs == len(gone) and len(records) == len(done.records) == (1 if gone else 0)
        listed = {run for record in records for run in store.read(record)[-1].data["result"]["removed"]}
        assert listed == gone
    finally:
        if kind == "mongodb":
            drop_database(store.events.database.client, database)
        store.close()


def test_prune_with_archive_keeps_the_removed_runs_in_a_file_import_brings_back(tmp_path: Path) -> None:
    home, copy, archive = tmp_path / "home", tmp_path / "copy", tmp_path / "old.jsonl"
    assert evenflow("demo", "--executor", "inline", home=home).returncode == 0
    before = json.loads(evenflow("runs", "--json", home=home).stdout)["runs"]
    done = evenflow(
        "prune", "--finished-before", "2099-01-01T00:00:00+00:00", "--archive", str(archive), home=home
    )
    assert done.returncode == 0, done.stderr
    assert evenflow("import", str(archive), home=copy).returncode == 0
    assert json.loads(evenflow("runs", "--json", home=copy).stdout)["runs"] == before
