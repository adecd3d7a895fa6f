"""The embedded store's history tables answer what the whole journal answers.

The reference is the fold of every event: the ``runs`` read model rebuilt from
the journal (what ``evenflow runs`` read before the tables existed) and the
audit pipelines over the full mirror. For random logs — runs submitted at
random times under a few flow names, dispatching a few commands, failing with
a few error types, ending in any state or not at all, some chained to others
by correlation, appended in random batches — every page of every filter, read
to the end through its cursor, must list the same rows as ``run_history`` over
the rebuilt read model, and each run's audit and chain the same entries as the
pipelines over the whole mirror. Also: a journal from before the tables is
indexed once by a writer and read as before by a reader until then; and a
writer killed inside an append leaves the tables agreeing with the journal.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.core import events as ev
from orchestrator.core.events import Event
from orchestrator.store import embedded_history, history
from orchestrator.store.embedded import EmbeddedStore
from orchestrator.store.faithful_mock import client
from projections import RunsProjector
from projections.audit import audit_chain, audit_trail
from projections.command_stats import command_stats, stats_of_rows
from projections.failures import failures, failures_of_rows
from projections.run_history import Page, indexed_history, run_history
from projections.run_status import RUN_ENDS, RUN_STATES
from projections.run_tally import tally
from projections.source import to_millis

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
FLOWS = ["billing", "shipping", None]
COMMANDS = ["charge", "ship", "notify"]
ERRORS = ["builtins.ValueError", "x.Timeout"]
ENDS = [None, ev.RUN_SUCCEEDED, ev.RUN_FAILED, ev.RUN_CANCELLED]
SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@st.composite
def logs(draw: st.DrawFn) -> list[list[Event]]:
    """Runs as event lists, then cut into batches that interleave the runs as engines append them."""
    count = draw(st.integers(1, 12))
    runs: list[list[Event]] = []
    for index in range(count):
        run = f"run-{index:02d}"
        at = T0 + timedelta(milliseconds=draw(st.integers(0, 5)) * 1000)  # ties on purpose
        parent = draw(st.sampled_from([None, *(f"run-{i:02d}" for i in range(index))]))
        submitted = Event(
            run, 1, ev.RUN_SUBMITTED, at, data={"name": draw(st.sampled_from(FLOWS))}, correlation=parent
        )
        events = [submitted]
        for _ in range(draw(st.integers(0, 4))):
            command = draw(st.sampled_from(COMMANDS))
            events.append(
                Event(run, len(events) + 1, ev.COMMAND_DISPATCHED, at, node="n", attempt=1, command=command)
            )
            if draw(st.booleans()):
                error = {"type": draw(st.sampled_from(ERRORS)), "message": "no"}
                events.append(
                    Event(
                        run,
                        len(events) + 1,
                        ev.COMMAND_FAILED,
                        at,
                        node="n",
                        attempt=1,
                        command=command,
                        data={"error": error},
                    )
                )
        end = draw(st.sampled_from(ENDS))
        if end is not None:
            events.append(Event(run, len(events) + 1, end, at + timedelta(seconds=1)))
            if draw(st.booleans()):  # a late outcome, logged after the run ended
                late = at + timedelta(seconds=2)
                events.append(Event(run, len(events) + 1, ev.OUTCOME_IGNORED, late, node="n", attempt=1))
        runs.append(events)
    cuts = draw(st.lists(st.integers(1, 6), min_size=1, max_size=30))
    batches: list[list[Event]] = []
    pending = [list(events) for events in runs]
    for size in cuts * 20:
        live = [events for events in pending if events]
        if not live:
            break
        chosen = live[size % len(live)]
        batches.append([chosen.pop(0) for _ in range(min(size, len(chosen)))])
    return batches


def build(home: Path, batches: list[list[Event]]) -> list[Event]:
    with logged(home, batches, FLUSHED):
        pass
    return [event for batch in batches for event in batch]


FLUSHED = 1
NEVER = 10**9
FLUSHES = st.sampled_from([FLUSHED, 3, NEVER])
"""How many appended events the writer holds before folding them in: every append, a few, none while open."""


@contextmanager
def logged(home: Path, batches: list[list[Event]], flush_every: int) -> Iterator[EmbeddedStore]:
    """The batches appended by a writer that folds them into its tables every ``flush_every`` events,
    still open (so what it has not folded in yet is the readers' tail); closed afterwards."""
    with (
        mock.patch.object(embedded_history, "FLUSH_EVENTS", flush_every),
        mock.patch.object(embedded_history, "FLUSH_S", 3600.0),
    ):
        writer = EmbeddedStore(home)
        try:
            for batch in batches:
                writer.append(batch)
            yield writer
        finally:
            writer.close()


def rebuilt_runs(events: list[Event]) -> Any:
    projector = RunsProjector.in_memory(client()["evenflow"]["runs"])
    projector.apply(events)
    return projector.runs


def pages(ask: Any, limit: int, **filters: Any) -> list[list[Any]]:
    """Every page of a query, read through its cursors (bounded)."""
    seen: list[list[Any]] = []
    after = None
    for _ in range(100):
        page: Page = ask(limit=limit, after=after, **filters)
        seen.append([row.to_doc() for row in page.rows])
        if page.next is None:
            return seen
        after = page.next
    raise AssertionError("the pages did not end")


def indexed_pages(store: EmbeddedStore, limit: int, query: dict[str, Any]) -> list[list[Any]]:
    def fold(run: str) -> Any:
        return tally(run, store.read(run))

    return pages(lambda **q: indexed_history(store.run_page, fold, **q), limit, **query)


QUERIES = st.fixed_dictionaries(
    {},
    optional={
        "state": st.sampled_from(RUN_STATES),
        "flow": st.sampled_from([f for f in FLOWS if f]),
        "command": st.sampled_from(COMMANDS),
        "error_type": st.sampled_from(ERRORS),
        "since": st.integers(0, 5).map(lambda s: T0 + timedelta(seconds=s)),
        "until": st.integers(0, 6).map(lambda s: T0 + timedelta(seconds=s)),
    },
)


@SETTINGS
@given(
    batches=logs(),
    queries=st.lists(QUERIES, min_size=1, max_size=4),
    limit=st.integers(1, 5),
    flush_every=FLUSHES,
)
def test_every_page_of_every_filter_is_what_the_whole_journal_gives(
    tmp_path_factory: Any,
    batches: list[list[Event]],
    queries: list[dict[str, Any]],
    limit: int,
    flush_every: int,
) -> None:
    home = tmp_path_factory.mktemp("home")
    model = rebuilt_runs([event for batch in batches for event in batch])
    with logged(home, batches, flush_every) as writer:
        reader = EmbeddedStore(home, read_only=True)
        try:
            for store in (reader, writer):
                for query in [{}, *queries]:
                    assert indexed_pages(store, limit, query) == pages(
                        lambda **q: run_history(model, **q), limit, **query
                    ), query
        finally:
            reader.close()


@SETTINGS
@given(batches=logs(), flush_every=FLUSHES)
def test_each_runs_audit_and_chain_are_what_the_whole_mirror_gives(
    tmp_path_factory: Any, batches: list[list[Event]], flush_every: int
) -> None:
    home = tmp_path_factory.mktemp("home")
    runs = sorted({event.run for batch in batches for event in batch})
    with logged(home, batches, flush_every):
        reader = EmbeddedStore(home, read_only=True)
        try:
            for run in [*runs, "no-such-run"]:
                assert audit_trail(reader.indexed_events, run) == audit_trail(reader.events, run)
                assert audit_chain(reader.indexed_events, run) == audit_chain(reader.events, run)
        finally:
            reader.close()


def test_the_state_names_are_the_read_models() -> None:
    from orchestrator.store import history
    from projections.run_status import MAX_LISTED

    assert {**history.STATE_OF} == {**RUN_ENDS} and history.MAX_LISTED == MAX_LISTED


def test_a_journal_from_before_the_tables_is_indexed_once_by_a_writer_and_read_as_before_until_then(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    events = build(
        home,
        [
            [Event("a", 1, ev.RUN_SUBMITTED, T0, data={"name": "billing"})],
            [Event("b", 1, ev.RUN_SUBMITTED, T0), Event("b", 2, ev.RUN_FAILED, T0)],
        ],
    )
    with sqlite3.connect(home / "events.sqlite3") as db:  # what an older evenflow left: the journal alone
        for table in ("meta", "runs", "run_names"):
            db.execute(f"DROP TABLE {table}")
    reader = EmbeddedStore(home, read_only=True)
    try:
        assert indexed_history(reader.run_page, lambda run: tally(run, reader.read(run))) is None
    finally:
        reader.close()
    EmbeddedStore(home).close()  # the first writer indexes it
    reader = EmbeddedStore(home, read_only=True)
    try:
        page = indexed_history(reader.run_page, lambda run: tally(run, reader.read(run)))
        assert page is not None
        assert [row.to_doc() for row in page.rows] == [
            row.to_doc() for row in run_history(rebuilt_runs(events)).rows
        ]
    finally:
        reader.close()


CHILD = textwrap.dedent(
    """
    import sys
    from datetime import UTC, datetime
    from orchestrator.core import events as ev
    from orchestrator.core.crashpoints import arm
    from orchestrator.core.events import Event
    from orchestrator.store.embedded import EmbeddedStore

    store = EmbeddedStore(sys.argv[1])
    at = datetime(2026, 3, 1, tzinfo=UTC)
    store.append([Event("kept", 1, ev.RUN_SUBMITTED, at), Event("kept", 2, ev.RUN_SUCCEEDED, at)])
    arm("mid-batch")
    lost = [Event("lost", 1, ev.RUN_SUBMITTED, at), Event("lost", 2, ev.COMMAND_DISPATCHED, at, command="c")]
    store.append(lost)
    print("the crash point did not fire", flush=True)
    """
)


def test_a_writer_killed_inside_an_append_leaves_the_tables_agreeing_with_the_journal(tmp_path: Path) -> None:
    home = tmp_path / "home"
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(home)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == -signal.SIGKILL, done.stdout + done.stderr
    for read_only in (True, False):  # a reader folds what the dead writer left unindexed; a writer, in
        store = EmbeddedStore(home, read_only=read_only)
        try:
            journal = sorted({event.run for event in store.scan()})
            page = indexed_history(store.run_page, lambda run, store=store: tally(run, store.read(run)))
            assert page is not None and [row.run for row in page.rows] == journal == ["kept"]
            assert store.unfinished_runs() == []
        finally:
            store.close()
    with sqlite3.connect(home / "events.sqlite3") as db:
        assert history.watermark(db) == db.execute("SELECT max(rowid) FROM events").fetchone()[0]


# --- stats and failures from the hourly rollups ---------------------------------------------------

HOUR = timedelta(hours=1)
DURATIONS = st.one_of(
    st.none(),
    st.sampled_from([0, 1e-7, 1e-6, 0.5, 1.0, 3.7]),
    st.floats(0, 5_000, allow_nan=False, allow_infinity=False),
)


@st.composite
def command_logs(draw: st.DrawFn) -> list[list[Event]]:
    """Runs whose command events fall over a few hours, with durations, failures, retries, expansions."""
    batches: list[list[Event]] = []
    for index in range(draw(st.integers(1, 6))):
        run = f"run-{index:02d}"
        at = T0 + draw(st.integers(0, 3 * 3600 * 1000)) * timedelta(milliseconds=1)
        events = [Event(run, 1, ev.RUN_SUBMITTED, at)]
        for _ in range(draw(st.integers(0, 40))):  # enough successes of a command for its p95's bucket
            at += draw(st.integers(0, 10 * 60 * 1000)) * timedelta(milliseconds=1)
            kind = draw(st.sampled_from([*sorted(COUNTED_TYPES), *[ev.COMMAND_SUCCEEDED] * 4]))
            command = draw(st.sampled_from(["charge", "ship", None]))
            data: dict[str, Any] = {}
            if kind == ev.COMMAND_SUCCEEDED and (duration := draw(DURATIONS)) is not None:
                data["duration_s"] = duration
            if kind == ev.COMMAND_FAILED:
                data["error"] = {
                    "type": draw(st.sampled_from([*ERRORS, None])),
                    "message": "m",
                    "reason": "raised",
                }
            events.append(
                Event(run, len(events) + 1, kind, at, node="n", attempt=1, command=command, data=data)
            )
        batches += [events[i : i + 3] for i in range(0, len(events), 3)]
    return batches


COUNTED_TYPES = {
    ev.COMMAND_DISPATCHED,
    ev.COMMAND_SUCCEEDED,
    ev.COMMAND_EXPANDED,
    ev.COMMAND_FAILED,
    ev.RETRY_SCHEDULED,
}
BOUNDS = st.one_of(
    st.none(),
    st.integers(0, 4).map(lambda h: T0 + h * HOUR),  # on an hour
    st.integers(0, 4 * 3600 * 1000).map(lambda ms: T0 + ms * timedelta(milliseconds=1)),
)


def same_stats(indexed: list[Any], piped: list[Any]) -> None:
    assert [s.command for s in indexed] == [s.command for s in piped]
    for mine, theirs in zip(indexed, piped, strict=True):
        exact = (
            "calls",
            "successes",
            "expansions",
            "failures",
            "retries",
            "max_duration_s",
            "p95_duration_s",
        )
        assert {f: getattr(mine, f) for f in exact} == {f: getattr(theirs, f) for f in exact}
        if theirs.mean_duration_s is None:
            assert mine.mean_duration_s is None
        else:  # a sum of floats in another order: equal to the last rounded digit
            assert mine.mean_duration_s == pytest.approx(theirs.mean_duration_s, rel=1e-9, abs=2e-6)


@SETTINGS
@given(
    batches=command_logs(),
    windows=st.lists(st.tuples(BOUNDS, BOUNDS), min_size=1, max_size=4),
    flush_every=FLUSHES,
)
def test_stats_and_failures_of_any_window_are_what_the_whole_journal_gives(
    tmp_path_factory: Any, batches: list[list[Event]], windows: list[tuple[Any, Any]], flush_every: int
) -> None:
    home = tmp_path_factory.mktemp("home")
    with logged(home, batches, flush_every):
        reader = EmbeddedStore(home, read_only=True)
        try:
            for since, until in [(None, None), *windows]:
                piped = command_stats(reader.events, since, until)
                rows = reader.command_rows(to_millis(since), to_millis(until))
                same_stats(stats_of_rows(rows or []), piped)
                rows = reader.failure_rows(to_millis(since), to_millis(until))
                assert failures_of_rows(rows or []) == failures(reader.events, since, until)
        finally:
            reader.close()


@SETTINGS
@given(batches=logs(), flush_every=FLUSHES)
def test_unfinished_runs_from_the_runs_table_are_what_the_whole_journal_gives(
    tmp_path_factory: Any, batches: list[list[Event]], flush_every: int
) -> None:
    home = tmp_path_factory.mktemp("home")
    events = [event for batch in batches for event in batch]
    submitted = {e.run: e.at for e in events if e.type == ev.RUN_SUBMITTED}
    ended = {e.run for e in events if e.type in ev.RUN_TERMINAL}
    expected = sorted((run for run in submitted if run not in ended), key=lambda run: (submitted[run], run))
    with logged(home, batches, flush_every) as writer:
        reader = EmbeddedStore(home, read_only=True)
        try:
            assert writer.unfinished_runs() == expected
            assert reader.unfinished_runs() == expected
        finally:
            reader.close()
    writer = EmbeddedStore(home)  # reopened after a close that folded everything in
    try:
        assert writer.unfinished_runs() == expected
    finally:
        writer.close()
