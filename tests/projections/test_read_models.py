"""The ``runs`` read model: maintained as batches land, it equals a rebuild from the log (L8).

Also after a replayed batch, after a bulk write that dies half way (then
``catch_up``, or simply the next batches), and on the embedded store, where the
engine must not load the mongomock mirror of the journal. The ``run_status``
pipeline and the Python tally are held to the same answer on random logs.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymongo.errors import AutoReconnect, BulkWriteError, PyMongoError

from orchestrator import Orchestrator, call, parallel
from orchestrator.core import events as ev
from orchestrator.core.events import Event
from orchestrator.core.flows import encode_flow
from orchestrator.store import EmbeddedStore
from orchestrator.store.faithful_mock import client
from projections.documents import upsert_newer
from projections.indexes import INDEXES, ensure_indexes
from projections.read_models import RunsProjector, catch_up, rebuild_runs, stored_status
from projections.run_history import run_history
from projections.run_status import NODE_STATES, RunStatus, run_status, run_status_pipeline
from projections.run_tally import tally
from tests.commands import make_registry
from tests.simulation import Simulation
from tests.strategies import COMMANDS, flows
from tests.support.polling import wait_until

from .runs_support import Backend, mixed_batches, run_random_flows, runs_backend, statuses

__all__ = ["runs_backend"]  # the fixture, imported to be found

SEEDS = [3, 17, 2024]


def fresh_runs(backend: Backend, name: str = "runs") -> Any:
    runs = backend.database[name]
    ensure_indexes({"runs": runs})
    return runs


def logs_of(store: Any, runs: Sequence[str]) -> dict[str, list[Event]]:
    return {run: store.read(run) for run in runs}


# --- maintained == rebuilt ---------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_the_maintained_read_model_equals_a_rebuild_from_the_log(runs_backend: Backend, seed: int) -> None:
    with runs_backend.orchestrator() as orch:
        runs = run_random_flows(orch, seed, count=8)
        maintained = statuses(orch.runs_collection)
        events = orch.store.events

    rebuilt = fresh_runs(runs_backend, "rebuilt")
    assert rebuild_runs(events, rebuilt) == len(runs)
    assert statuses(rebuilt) == maintained
    assert sorted(maintained) == sorted(runs)
    store = runs_backend.store()
    assert maintained == {run: tally(run, store.read(run)) for run in runs}


def test_a_rebuild_in_place_replaces_wrong_documents_and_keeps_the_indexes(runs_backend: Backend) -> None:
    with runs_backend.orchestrator() as orch:
        run_random_flows(orch, 5, count=4)
        runs = orch.runs_collection
        assert runs is not None
        expected = statuses(runs)
        first = sorted(expected)[0]
        ahead = {**expected[first].to_doc(), "state": "bogus", "last_seq": 10_000}
        stray = {**ahead, "_id": "not-in-the-log"}
        assert upsert_newer(runs, [ahead, stray]) == set()
        assert statuses(runs) != expected

        assert rebuild_runs(orch.store.events, runs) == len(expected)
        assert statuses(runs) == expected
    names = set(runs_backend.database["runs"].index_information())
    assert {spec.name for spec in INDEXES["runs"]} <= names


def test_run_status_answers_from_the_log_and_none_for_an_unknown_run(runs_backend: Backend) -> None:
    with runs_backend.orchestrator() as orch:
        done = orch.submit(parallel(call("describe", 1), call("raise_value_error", "no")), name="billing")
        with pytest.raises(Exception, match="no"):
            done.result(timeout=30)
        status = run_status(orch.store.events, done.id)
        assert status == stored_status(orch.runs_collection, done.id)
    assert status is not None
    assert (status.flow, status.state, status.attempts) == ("billing", "failed", 2)
    assert status.nodes == {**dict.fromkeys(NODE_STATES, 0), "succeeded": 1, "failed": 1}
    assert status.commands == ("describe", "raise_value_error")
    assert status.error_types == ("builtins.ValueError",)
    assert status.error is not None and status.error[0]["node"] == "r.1"
    assert status.duration_s is not None and status.duration_s >= 0
    assert run_status(runs_backend.store().events, "no-such-run") is None


# --- idempotence ---------------------------------------------------------------------------


def test_applying_batches_again_changes_nothing(runs_backend: Backend) -> None:
    with runs_backend.orchestrator(read_models=False) as orch:
        runs = run_random_flows(orch, 11, count=6)
        logs = logs_of(orch.store, runs)
    batches = mixed_batches(logs, random.Random(11))
    target = fresh_runs(runs_backend)
    projector = RunsProjector(target)
    for batch in batches:
        projector.apply(batch)
    expected = statuses(target)
    assert expected == {run: tally(run, events) for run, events in logs.items()}

    written = projector.written
    for batch in batches:
        projector.apply(batch)  # from memory
    assert projector.written == written
    forgetful = RunsProjector(target)
    for batch in batches:
        forgetful.apply(batch)  # from the stored documents
    late = RunsProjector(target)
    late.apply(batches[0])  # an old prefix never replaces a newer document
    assert (forgetful.written, late.written) == (0, 0)
    assert statuses(target) == expected


def test_a_missed_batch_leaves_its_runs_behind_until_read_from_the_log_or_caught_up(
    runs_backend: Backend,
) -> None:
    with runs_backend.orchestrator(read_models=False) as orch:
        runs = run_random_flows(orch, 13, count=5)
        logs = logs_of(orch.store, runs)
        events = orch.store.events
        batches = mixed_batches(logs, random.Random(13))
        missed = len(batches) // 2
        blind, reading = fresh_runs(runs_backend, "blind"), fresh_runs(runs_backend, "reading")
        for projector in (RunsProjector(blind), RunsProjector(reading, read_log=orch.store.read)):
            for batch in batches[:missed] + batches[missed + 1 :]:
                projector.apply(batch)
        expected = {run: tally(run, log) for run, log in logs.items()}
        ended_there = {event.run for event in batches[missed] if event.seq == len(logs[event.run])}

        read = statuses(reading)  # later batches of a run fetch what it missed from the log
        assert {run for run in expected if read.get(run) != expected[run]} == ended_there
        stale = statuses(blind)  # without the log, a gap is left for catch_up
        behind = {run for run in expected if stale.get(run) != expected[run]}
        assert behind and behind <= {event.run for event in batches[missed]}
        assert set(catch_up(events, blind)) == behind
        assert statuses(blind) == expected


# --- a bulk write that dies half way -------------------------------------------------------


class DyingRuns:
    """A runs collection whose next ``bulk_write`` applies only its first ``k`` writes, then raises."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.crash: tuple[int, PyMongoError] | None = None
        self.writes_before_crash = 0

    def arm(self, k: int, error: PyMongoError, *, after: int = 0) -> None:
        """Let ``after`` bulk writes through whole, then cut the next one after ``k`` writes."""
        self.crash, self.writes_before_crash = (k, error), after

    def bulk_write(self, requests: Any, ordered: bool = True) -> Any:
        if self.crash is None or self.writes_before_crash > 0:
            self.writes_before_crash -= 1
            return self.inner.bulk_write(requests, ordered=ordered)
        k, error = self.crash
        self.crash = None
        if k:
            self.inner.bulk_write(list(requests)[:k], ordered=ordered)
        raise error

    def aggregate(self, pipeline: Any, *args: Any, **kwargs: Any) -> Any:
        return self.inner.aggregate(pipeline, *args, **kwargs)

    def find(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner.find(*args, **kwargs)

    def delete_many(self, filter: Any) -> Any:
        return self.inner.delete_many(filter)

    def create_index(self, keys: Any, **kwargs: Any) -> Any:
        return self.inner.create_index(keys, **kwargs)


class BrokenRuns(DyingRuns):
    """A runs collection that refuses every ``bulk_write``, as a server gone for good does."""

    refused = 0

    def bulk_write(self, requests: Any, ordered: bool = True) -> Any:
        self.refused += 1
        raise AutoReconnect("gone")


def died(k: int) -> PyMongoError:
    return BulkWriteError({"writeErrors": [{"index": k, "code": 91, "errmsg": "shutdown in progress"}]})


CRASHES = [
    (0, AutoReconnect("connection reset")),
    (1, died(1)),
    (2, AutoReconnect("timed out")),
    (3, died(3)),
]


@pytest.fixture
def mixed_log(runs_backend: Backend) -> Iterator[tuple[Any, dict[str, list[Event]], list[list[Event]]]]:
    """A log of 6 runs on the backend, and batches that each hold several of its runs."""
    with runs_backend.orchestrator(read_models=False) as orch:
        runs = run_random_flows(orch, 23, count=6)
        logs = logs_of(orch.store, runs)
        yield orch.store, logs, mixed_batches(logs, random.Random(23))


@pytest.mark.parametrize(("k", "error"), CRASHES)
def test_a_write_that_dies_half_way_then_catch_up_equals_a_rebuild(
    runs_backend: Backend, mixed_log: Any, k: int, error: PyMongoError
) -> None:
    store, _logs, batches = mixed_log
    target = fresh_runs(runs_backend)
    dying = DyingRuns(target)
    projector = RunsProjector(dying)
    at = next(i for i, batch in enumerate(batches) if len({e.run for e in batch}) > k)
    for batch in batches[:at]:
        projector.apply(batch)
    dying.arm(k, error)
    with pytest.raises(PyMongoError):
        projector.apply(batches[at])
    # the process dies here; the log holds everything, the read model what landed

    behind = catch_up(store.events, target)
    assert behind  # the crash left some runs behind
    rebuilt = fresh_runs(runs_backend, "rebuilt")
    rebuild_runs(store.events, rebuilt)
    assert statuses(target) == statuses(rebuilt)
    assert catch_up(store.events, target) == []


@pytest.mark.parametrize(("k", "error"), CRASHES)
def test_after_a_failed_write_later_batches_mend_the_read_model(
    runs_backend: Backend, mixed_log: Any, k: int, error: PyMongoError
) -> None:
    store, logs, batches = mixed_log
    target = fresh_runs(runs_backend)
    dying = DyingRuns(target)
    projector = RunsProjector(dying, read_log=store.read)  # as the engine wires it
    for i, batch in enumerate(batches):
        if i == len(batches) // 2:
            dying.arm(k, error)
            with pytest.raises(PyMongoError):
                projector.apply(batch)
        else:
            projector.apply(batch)
    rebuilt = fresh_runs(runs_backend, "rebuilt")
    rebuild_runs(store.events, rebuilt)
    lagging = {run for run in logs if statuses(target).get(run) != statuses(rebuilt)[run]}
    # a run whose last batch was the failed one has no later batch to mend it: catch_up does
    assert lagging <= {e.run for e in batches[len(batches) // 2]}
    catch_up(store.events, target)
    assert statuses(target) == statuses(rebuilt)


def test_the_engine_outlives_a_failing_read_model_and_catch_up_mends_it(runs_backend: Backend) -> None:
    with runs_backend.orchestrator() as orch:
        assert orch.read_models is not None
        real = orch.read_models.runs
        dying = BrokenRuns(real)
        orch.read_models.runs = dying  # every write of the run's events is lost
        flow = parallel(call("describe", 1), call("describe", 2))
        assert orch.run(flow) == [{"args": [1], "kwargs": {}}, {"args": [2], "kwargs": {}}]
        assert orch.runs_collection is dying  # read once the read model's thread has tried every batch
        lost = statuses(real)
        orch.read_models.runs = real
    assert dying.refused >= 1 and lost == {}
    with runs_backend.orchestrator() as again:  # its start catches up the runs kept beside the log
        rebuilt = fresh_runs(runs_backend, "rebuilt")
        rebuild_runs(again.store.events, rebuilt)
        assert statuses(again.runs_collection) == statuses(rebuilt)


# --- pipeline == tally ---------------------------------------------------------------------


@st.composite
def failing_plans(draw: st.DrawFn, flow: dict[str, Any]) -> dict[tuple[str, int], bool]:
    """For each call (and map item) how many of its first attempts fail: 0 to 3, so some never succeed."""
    paths = [spec["path"] for spec in flow["nodes"] if spec["kind"] == "call"]
    paths += [f"{spec['path']}.{i}" for spec in flow["nodes"] if spec["kind"] == "each" for i in range(6)]
    plan = {}
    for path in paths:
        for attempt in range(1, draw(st.integers(0, 3)) + 1):
            plan[(path, attempt)] = True
    return plan


@st.composite
def cut_histories(draw: st.DrawFn) -> list[tuple[dict[str, Any], dict[Any, bool], float]]:
    """Random flows with random outcome plans, about half the logs cut short (unfinished runs)."""
    drawn = []
    for _ in range(draw(st.integers(1, 4))):
        flow = encode_flow(draw(flows(max_leaves=8)))
        cut = draw(st.one_of(st.just(1.0), st.floats(0, 1)))
        drawn.append((flow, draw(failing_plans(flow)), cut))
    return drawn


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(cut_histories())
def test_the_pipeline_and_the_tally_agree_on_random_logs(
    runs_backend: Backend, histories: list[tuple[dict[str, Any], dict[Any, bool], float]]
) -> None:
    events = runs_backend.database["events_random"]
    events.delete_many({})
    logs: dict[str, list[Event]] = {}
    for i, (flow, plan, cut) in enumerate(histories):
        sim = Simulation(COMMANDS, plan, run=f"run-{i}")
        sim.go(flow)
        logs[sim.run] = sim.events[: max(1, round(cut * len(sim.events)))]
        events.insert_many([ev.to_doc(event) for event in logs[sim.run]])

    piped = {doc["_id"]: RunStatus.from_doc(doc) for doc in events.aggregate(run_status_pipeline())}
    assert piped == {run: tally(run, log) for run, log in logs.items()}
    assert list(piped) == sorted(piped)


AT = datetime(2026, 1, 1, tzinfo=UTC)


def crafted(run: str, *rows: tuple[str, str | None, int | None, dict[str, Any]]) -> list[Event]:
    flow = encode_flow(parallel(call("noop", 1), call("noop", 2), call("noop", 3)))
    head = Event(run, 1, ev.RUN_SUBMITTED, AT, data={"flow": flow, "name": "crafted"})
    body = [
        Event(
            run,
            seq,
            kind,
            AT + timedelta(milliseconds=seq),
            node,
            attempt,
            "noop" if node and kind not in (ev.NODE_FAILED, ev.OUTCOME_IGNORED) else None,
            data,
        )
        for seq, (kind, node, attempt, data) in enumerate(rows, start=2)
    ]
    return [head, *body]


def error(kind: str) -> dict[str, Any]:
    return {"error": {"type": kind, "message": "m", "mro": [kind], "traceback": "", "reason": "raised"}}


CRAFTED = {
    # a duplicate outcome, then a cancel while one node waits for a retry and one still runs
    "cancelled": crafted(
        "cancelled",
        (ev.COMMAND_DISPATCHED, "r.0", 1, {}),
        (ev.COMMAND_DISPATCHED, "r.1", 1, {}),
        (ev.COMMAND_DISPATCHED, "r.2", 1, {}),
        (ev.COMMAND_STARTED, "r.0", 1, {}),
        (ev.COMMAND_SUCCEEDED, "r.0", 1, {"result": 1}),
        (ev.COMMAND_STARTED, "r.1", 1, {}),
        (ev.COMMAND_FAILED, "r.1", 1, error("x.Boom")),
        (ev.RETRY_SCHEDULED, "r.1", 2, {"due": AT, "delay_s": 0.0}),
        (ev.OUTCOME_IGNORED, "r.0", 1, {"reason": "duplicate"}),
        (ev.RUN_CANCELLED, None, None, {}),
    ),
    # one node given up while waiting for its retry, one given up before any dispatch
    "given-up": crafted(
        "given-up",
        (ev.COMMAND_DISPATCHED, "r.0", 1, {}),
        (ev.COMMAND_FAILED, "r.0", 1, error("x.Boom")),
        (ev.RETRY_SCHEDULED, "r.0", 2, {"due": AT, "delay_s": 0.0}),
        (ev.NODE_FAILED, "r.0", 1, {"failures": [{"node": "r.0"}]}),
        (ev.NODE_FAILED, "r.1", None, {"failures": [{"node": "r.1"}]}),
        (ev.RUN_FAILED, None, None, {"failures": [{"node": "r.0"}, {"node": "r.1"}]}),
    ),
}


def test_the_pipeline_and_the_tally_agree_on_cancels_ignored_outcomes_and_early_failures(
    runs_backend: Backend,
) -> None:
    events = runs_backend.database["events_crafted"]
    for log in CRAFTED.values():
        events.insert_many([ev.to_doc(event) for event in log])
    piped = {doc["_id"]: RunStatus.from_doc(doc) for doc in events.aggregate(run_status_pipeline())}
    assert piped == {run: tally(run, log) for run, log in CRAFTED.items()}
    zero = dict.fromkeys(NODE_STATES, 0)
    assert piped["cancelled"].nodes == {**zero, "succeeded": 1, "cancelled": 2}
    assert (piped["cancelled"].state, piped["cancelled"].attempts, piped["cancelled"].last_seq) == (
        "cancelled",
        3,
        11,
    )
    assert piped["cancelled"].error_types == ("x.Boom",)
    assert piped["given-up"].nodes == {**zero, "failed": 1}
    assert piped["given-up"].error == [{"node": "r.0"}, {"node": "r.1"}]


# --- wiring --------------------------------------------------------------------------------


def test_the_embedded_engine_keeps_its_read_model_without_loading_the_journal_mirror(tmp_path: Path) -> None:
    home = tmp_path / "home"
    store = EmbeddedStore(home)  # an unfinished run left by an earlier orchestrator
    flow = encode_flow(call("noop", 7))
    dispatched = {"args": [7], "kwargs": {}, "deadline": None, "key": "left/r", "route": None}
    store.append(
        [
            Event("left", 1, ev.RUN_SUBMITTED, AT, data={"flow": flow, "name": "resumed"}),
            Event("left", 2, ev.COMMAND_DISPATCHED, AT, "r", 1, "noop", dispatched),
        ]
    )
    store.close()

    with Orchestrator(make_registry(), executor="inline", home=home) as orch:
        assert orch.result("left", timeout=30) == 7
        runs = run_random_flows(orch, 31, count=4)
        journal = orch.store
        assert isinstance(journal, EmbeddedStore)
        assert journal._mirror is None  # the engine never loaded the mongomock mirror
        maintained = statuses(orch.runs_collection)
        assert maintained == {run: tally(run, journal.read(run)) for run in ["left", *runs]}
        assert maintained["left"].state == "succeeded"

        rebuilt = client()["evenflow"]["runs"]
        rebuild_runs(journal.events, rebuilt)  # what a reader does
        assert statuses(rebuilt) == maintained


def test_a_runs_model_kept_in_memory_sleeps_until_asked_for_then_holds_every_run(tmp_path: Path) -> None:
    """On the embedded store nobody but this process reads ``runs``: no append pays for it until
    ``runs_collection`` is asked for; then it is the log's, and it follows the log from then on."""
    with Orchestrator(make_registry(), executor="inline", home=tmp_path / "home") as orch:
        earlier = run_random_flows(orch, 7, count=3)
        lag = orch.read_model_lag
        assert lag is not None and lag.batches == 0  # asleep: nothing was handed over
        journal = orch.store
        assert statuses(orch.runs_collection) == {run: tally(run, journal.read(run)) for run in earlier}
        later = orch.submit(call("noop", 3))
        assert later.result(30) == 3
        assert stored_status(orch.runs_collection, later.id) == tally(later.id, journal.read(later.id))
        assert orch.read_model_lag.batches > 1  # the rebuild, then the later run's batches


def test_the_read_model_can_be_queried_while_the_engine_writes_it(runs_backend: Backend) -> None:
    with Orchestrator(make_registry(), executor="threads://2", store=runs_backend.store()) as orch:
        runs = orch.runs_collection
        assert runs is not None
        wide = orch.submit(parallel([call("describe", i) for i in range(300)]), name="wide")
        states: list[str | None] = []

        def read_as_succeeded() -> bool:
            rows = run_history(runs, flow="wide").rows  # read while the engine thread writes
            states.append(rows[0].state if rows else None)
            return states[-1] == "succeeded"

        # every=0: read back to back, as often as possible while the engine writes
        wait_until(read_as_succeeded, timeout=60.0, what="the wide run read as succeeded", every=0)
        assert set(states) <= {None, "running", "succeeded"}
        assert stored_status(runs, wide.id) == tally(wide.id, orch.events(wide.id))


def test_without_read_models_nothing_is_maintained(runs_backend: Backend) -> None:
    with runs_backend.orchestrator(read_models=False) as orch:
        orch.run(call("describe", 1))
        assert orch.runs_collection is None
        assert orch.read_models is None
    assert runs_backend.database["runs"].count_documents({}) == 0


def test_start_catches_up_runs_kept_beside_the_log(runs_backend: Backend) -> None:
    events = runs_backend.database["events"]
    sim = Simulation(COMMANDS, {}, run="before")
    sim.go(encode_flow(parallel(call("wrap", 1), call("count", 2))))
    events.insert_many([ev.to_doc(event) for event in sim.events])

    with runs_backend.orchestrator() as orch:
        status = stored_status(orch.runs_collection, "before")
    assert status == tally("before", sim.events)
    assert status is not None and status.state == "succeeded"


def test_indexes_are_created_once_and_again_without_harm(runs_backend: Backend) -> None:
    first = ensure_indexes(runs_backend.database)
    assert ensure_indexes(runs_backend.database) == first
    assert "events.run_seq" in first
    for name, specs in INDEXES.items():
        info = runs_backend.database[name].index_information()
        for spec in specs:
            assert [tuple(key) for key in info[spec.name]["key"]] == list(spec.keys)


def test_run_status_uses_the_run_seq_index_on_a_server(runs_backend: Backend) -> None:
    if runs_backend.kind != "mongodb":
        pytest.skip("explain needs a real server")
    from .runs_support import index_names_used

    with runs_backend.orchestrator() as orch:
        run = orch.submit(call("describe", 1)).id
        orch.result(run, timeout=30)
        assert "run_seq" in index_names_used(orch.store.events, run_status_pipeline([run]))
