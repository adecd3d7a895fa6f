"""Copying an embedded log into MongoDB (mongomock here): every run, once, verified by folding both logs."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from orchestrator import call, parallel, sequence
from orchestrator.core import events as ev
from orchestrator.core.errors import ConcurrencyConflict, ConfigurationError, StoreLocked
from orchestrator.core.events import Event
from orchestrator.core.evolve import fold
from orchestrator.core.flows import encode_flow
from orchestrator.store import EmbeddedStore, open_store
from orchestrator.store.embedded import JOURNAL
from orchestrator.store.migrate import migrate, quiet_home
from tests.simulation import Simulation

COMMANDS: dict[str, Any] = {"inc": lambda x=0: x + 1, "nan": lambda *_: math.nan}
FLOW = encode_flow(sequence(call("inc", 1), parallel(call("inc"), call("inc"))))


def sample_logs(runs: int, *, prefix: str = "run") -> list[list[Event]]:
    """``runs`` real logs: most finished (one with a retry), one cut short (unfinished)."""
    logs = []
    for i in range(runs):
        sim = Simulation(COMMANDS, {("r.0", 1): i % 7 == 3}, run=f"{prefix}-{i:05d}")
        sim.go(FLOW)
        logs.append(sim.events[:3] if i % 10 == 9 else sim.events)
    return logs


def fill(home: Path, logs: Sequence[Sequence[Event]]) -> None:
    store = EmbeddedStore(home)
    try:
        store.append([event for log in logs for event in log])
    finally:
        store.close()


@pytest.fixture
def source(tmp_path: Path) -> Iterator[Any]:
    fill(tmp_path / "source", sample_logs(25))
    store = open_store(None, home=tmp_path / "source", read_only=True)
    yield store
    store.close()


@pytest.fixture
def target() -> Iterator[Any]:
    store = open_store("mongomock://")
    yield store
    store.close()


def runs_of(store: Any) -> list[str]:
    return sorted(store.events.distinct("run"))


def test_every_run_is_copied_and_folds_to_the_same_state(source: Any, target: Any) -> None:
    done = migrate(source, target, batch=4)
    runs = [f"run-{i:05d}" for i in range(25)]
    assert runs_of(target) == runs
    for run in runs:
        assert target.read(run) == source.read(run)
        assert fold(run, target.read(run)) == fold(run, source.read(run))
    assert target.unfinished_runs() == source.unfinished_runs() == ["run-00009", "run-00019"]
    total = sum(len(source.read(run)) for run in runs)
    assert (done.runs, done.copied, done.skipped, done.verified, done.complete) == (25, total, 0, 25, True)


def test_running_it_again_copies_nothing(source: Any, target: Any) -> None:
    first = migrate(source, target, batch=10)
    again = migrate(source, target, batch=3)
    assert (again.copied, again.skipped, again.verified) == (0, first.copied, 25)
    assert target.events.count_documents({}) == first.copied


def test_a_partial_copy_is_finished_from_where_it_stopped(source: Any, target: Any) -> None:
    """What a kill leaves: some runs whole, some a prefix, some absent; the rest is copied once."""
    held = source.read("run-00000") + source.read("run-00001")[:2]
    target.append(held)
    done = migrate(source, target, batch=7)
    assert done.skipped == len(held)
    assert done.copied + done.skipped == target.events.count_documents({})
    assert target.read("run-00001") == source.read("run-00001")


def test_memory_holds_one_batch_of_runs(source: Any, target: Any) -> None:
    appended: list[set[str]] = []
    real_append = target.append

    def append(events: Sequence[Event]) -> None:
        appended.append({event.run for event in events})
        real_append(events)

    target.append = append
    migrate(source, target, batch=4)
    assert [len(runs) for runs in appended] == [4, 4, 4, 4, 4, 4, 1]


def test_a_target_holding_other_events_for_a_run_is_refused_before_that_batch_is_written(
    source: Any, target: Any
) -> None:
    other = Simulation(COMMANDS, run="run-00002")
    other.go(encode_flow(call("inc", 41)))
    target.append(other.events[:2])
    with pytest.raises(ConcurrencyConflict, match=r"run-00002/0000000001 with other content"):
        migrate(source, target, batch=5)
    assert runs_of(target) == ["run-00002"]  # nothing of the batch holding it was written
    assert target.read("run-00002") == other.events[:2]


def test_a_target_holding_more_of_a_run_than_the_source_is_refused(source: Any, target: Any) -> None:
    log = source.read("run-00009")  # cut short in the source
    longer = Simulation(COMMANDS, run="run-00009")
    longer.go(FLOW)
    assert longer.events[: len(log)] == log
    target.append(longer.events)
    with pytest.raises(ConcurrencyConflict, match=r"holds \d+ events of run 'run-00009', the source only 3"):
        migrate(source, target, batch=25)


def test_a_run_that_does_not_decode_is_named_and_the_others_are_copied(tmp_path: Path, target: Any) -> None:
    home = tmp_path / "damaged"
    fill(home, sample_logs(5))
    with sqlite3.connect(home / JOURNAL) as db:
        db.execute("UPDATE events SET doc = x'00' WHERE id = ?", (ev.event_id("run-00003", 4),))
    db.close()
    source = open_store(None, home=home, read_only=True)
    try:
        done = migrate(source, target, batch=2)
    finally:
        source.close()
    assert list(done.unreadable) == ["run-00003"] and "not valid BSON" in done.unreadable["run-00003"]
    assert runs_of(target) == ["run-00000", "run-00001", "run-00002", "run-00004"]
    assert (done.runs, done.verified, done.complete) == (5, 4, False)


def test_a_nan_result_verifies(tmp_path: Path, target: Any) -> None:
    """A state holding NaN is never == itself; the check compares what the states say."""
    sim = Simulation(COMMANDS, run="nan-run")
    sim.go(encode_flow(call("nan")))
    assert math.isnan(fold(sim.run, sim.events).result)
    fill(tmp_path / "nan", [sim.events])
    source = open_store(None, home=tmp_path / "nan", read_only=True)
    try:
        done = migrate(source, target, batch=1)
    finally:
        source.close()
    assert (done.copied, done.verified, done.complete) == (len(sim.events), 1, True)


def test_a_home_in_use_is_refused_and_a_quiet_one_is_held_while_copying(tmp_path: Path) -> None:
    home = tmp_path / "busy"
    fill(home, sample_logs(1))
    owner = EmbeddedStore(home)
    try:
        refused = pytest.raises(
            ConfigurationError, match=r"process \d+ runs an orchestrator on .*busy; stop it"
        )
        with refused, quiet_home(home):
            pass
    finally:
        owner.close()
    with quiet_home(home), pytest.raises(StoreLocked):
        EmbeddedStore(home)
    EmbeddedStore(home).close()  # released after
