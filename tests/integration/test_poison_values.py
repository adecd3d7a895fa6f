"""Ordinary values that once broke the log: each is stored by the type mapping or refused where it enters,
and whatever happens to it, the next unrelated run succeeds.

Found on landed main (issue 11): a file name that is not UTF-8 wedged the engine; ints beyond 32 bits
came back from the stores as ``Int64`` and broke retry, resume and listener checkpoints; a flow over
MongoDB's 16 MiB was accepted by mongomock; error types were stored under their module paths.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from bson.int64 import Int64

from orchestrator import Orchestrator, PayloadError, RetryPolicy, RunFailed, call, parallel, sequence
from orchestrator.core import events as ev
from orchestrator.core.codec import is_text
from orchestrator.core.envelope import MAX_MESSAGE, MAX_TRACEBACK, ErrorInfo
from orchestrator.core.errors import Interrupted
from orchestrator.core.events import Event
from orchestrator.core.flows import Node
from orchestrator.core.stored_names import INTERRUPTED
from orchestrator.store import open_store
from orchestrator.store.mongo import MongoStore
from tests.commands import make_registry
from tests.support.polling import wait_until
from tests.support.zmq_cluster import REPO

STORES = ["memory", "mongomock", "embedded"]
WAIT_S = 60.0
ONE_MB = 1024 * 1024


def store_url(kind: str, home: Path) -> str:
    return f"embedded://{home}" if kind == "embedded" else f"{kind}://"


@pytest.fixture(params=STORES)
def orch(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Orchestrator]:
    with Orchestrator(make_registry(), store=store_url(request.param, tmp_path / "home")) as started:
        yield started


def append_failures(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "append of a turn failed" in r.getMessage()]


# --- a lone surrogate ---------------------------------------------------------------------------


@pytest.mark.parametrize("executor", ["inline", "threads://2", "processes://1"])
@pytest.mark.parametrize("kind", STORES)
def test_a_file_name_that_is_not_utf8_fails_its_run_and_the_next_run_succeeds(
    bad_dir: str, tmp_path: Path, kind: str, executor: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = store_url(kind, tmp_path / "home")
    with Orchestrator(make_registry(), store=url, executor=executor) as orch:
        run = orch.submit(call("list_dir", bad_dir))
        with pytest.raises(RunFailed) as caught:
            run.result(timeout=WAIT_S)
        (failure,) = caught.value.failures
        assert failure.type.endswith("PayloadError")
        assert "result[0]" in failure.message and "surrogate" in failure.message
        assert "os.fsdecode" in failure.message or "errors=" in failure.message
        assert orch.run(call("inc", 41), timeout=WAIT_S) == 42
        failed = [e for e in orch.events(run.id) if e.type == ev.COMMAND_FAILED]
        assert len(failed) == 1, "a refused result is not retried"
    assert append_failures(caplog) == [], "the bad value reached an append"


def test_a_lone_surrogate_in_arguments_is_refused_at_submission(orch: Orchestrator) -> None:
    with pytest.raises(PayloadError) as caught:
        orch.submit(call("noop", {"names": ["ok", "bad\udcff"]}))
    assert "['names'][1]" in str(caught.value) and "surrogate" in str(caught.value)
    assert orch.run(call("inc", 1), timeout=WAIT_S) == 2


def test_a_lone_surrogate_in_a_cancel_reason_is_refused(orch: Orchestrator, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    run = orch.submit(call("wait_for_file", str(gate), None, WAIT_S))
    with pytest.raises(PayloadError, match="surrogate"):
        run.cancel("bad\udcff")
    run.cancel("fine")
    gate.touch()  # the attempt still running ends now, not at its deadline
    assert run.status() == "cancelled"


# --- ints beyond 32 bits ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["mongomock", "embedded"])
def test_big_ints_come_back_as_int_and_a_run_holding_them_can_be_retried(tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "ready"
    flow = sequence(call("big_numbers"), call("big_numbers", str(marker)).si())
    with Orchestrator(make_registry(), store=store_url(kind, tmp_path / "home")) as orch:
        failed = orch.submit(flow)
        with pytest.raises(RunFailed):
            failed.result(timeout=WAIT_S)
        kept = [e.data["result"] for e in orch.events(failed.id) if e.type == ev.COMMAND_SUCCEEDED]
        assert kept == [{"size": 2**40, "ms": 2**62, "low": -(2**63)}]
        assert all(type(value) is int for value in kept[0].values())
        marker.touch()
        retried = orch.retry(failed.id)
        result = retried.result(timeout=WAIT_S)
    assert result == {"size": 2**40, "ms": 2**62, "low": -(2**63)}
    assert all(type(value) is int for value in result.values())


def test_a_feed_checkpoint_holding_int64_reloads_and_advances() -> None:
    store = open_store("mongomock://")
    assert isinstance(store, MongoStore)
    try:
        store.append([_event("r1", 1)])
        _, position = store.read_feed(None, ["*"], 10)
        spans = [
            [writer, Int64(first), Int64(last), Int64(at)] for writer, first, last, at in position["spans"]
        ]
        stored = {"at": Int64(position["at"]), "floor": None, "seen": [], "spans": spans}
        store.checkpoints.insert_one({"_id": "listener", "position": stored})
        store.append([_event("r2", 1)])
        found, _ = store.read_feed(store.load_checkpoint("listener"), ["*"], 10)
        assert [event.run for event in found] == ["r2"]
    finally:
        store.close()


def _event(run: str, seq: int) -> Event:
    flow = {"root": "r", "nodes": [{"path": "r", "parent": None, "kind": "parallel", "children": []}]}
    return Event(run, seq, ev.RUN_SUBMITTED, ev.utcnow(), data={"flow": flow, "name": None})


# --- size ---------------------------------------------------------------------------------------


def twenty_megabyte_flow() -> Node:
    return parallel([call("noop", "x" * ONE_MB) for _ in range(20)])


def test_a_flow_over_the_event_limit_runs_and_one_over_the_submission_bound_is_refused(
    orch: Orchestrator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past one event the submission is logged in parts (tests/integration/test_large_submissions.py);
    past ``MAX_SUBMISSION_BYTES`` (256 MiB, 10 MB here) it is refused, naming the limit, and the
    orchestrator goes on."""
    from orchestrator.core import submitting

    assert orch.run(twenty_megabyte_flow(), timeout=WAIT_S) == ["x" * ONE_MB] * 20
    monkeypatch.setattr(submitting, "MAX_SUBMISSION_BYTES", 10_000_000)
    with pytest.raises(PayloadError) as caught:
        orch.submit(twenty_megabyte_flow())
    text = str(caught.value)
    assert "10,000,000-byte limit" in text and "bytes" in text, text
    assert orch.run(call("inc", 1), timeout=WAIT_S) == 2


def test_a_run_whose_result_outgrows_an_event_still_succeeds(orch: Orchestrator) -> None:
    """A group of big results: each fits in its event, their list in run.succeeded would not; the run's
    result is rebuilt from the nodes, which hold it, and a fresh fold gives it too."""
    many = parallel([call("blob", 3 * ONE_MB) for _ in range(7)])
    run = orch.submit(many)
    assert [len(item) for item in run.result(timeout=WAIT_S)] == [3 * ONE_MB] * 7
    (ended,) = [e for e in orch.events(run.id) if e.type == ev.RUN_SUCCEEDED]
    assert "result" not in ended.data and "bytes" in ended.data["result_omitted"]
    assert [len(item) for item in orch.state(run.id).result] == [3 * ONE_MB] * 7
    assert orch.run(call("inc", 1), timeout=WAIT_S) == 2


# --- stored names -------------------------------------------------------------------------------


def test_error_types_are_stored_under_declared_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Interrupted, "__module__", "orchestrator.core.moved_somewhere")
    info = ErrorInfo.from_exception(Interrupted("gone"))
    assert info.type == INTERRUPTED
    assert "orchestrator.core.moved_somewhere" not in " ".join(info.mro)


def test_a_retry_policy_names_evenflow_errors_by_their_stored_names() -> None:
    from orchestrator.core.errors import CommandTimeout

    policy = RetryPolicy(retry_on=(CommandTimeout,))
    assert policy.retry_on == ("orchestrator.core.errors.CommandTimeout",)


def test_no_append_failure_is_logged_for_refused_values(
    orch: Orchestrator, bad_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    with pytest.raises(RunFailed):
        orch.run(call("list_dir", bad_dir), timeout=WAIT_S)
    assert append_failures(caplog) == []


# --- errors that are hard to store --------------------------------------------------------------


@pytest.mark.parametrize("executor", ["inline", "processes://1"])
@pytest.mark.parametrize("store", STORES)
@pytest.mark.parametrize("kind", ["surrogate", "huge", "args", "unprintable"])
def test_an_error_is_stored_whatever_it_holds(tmp_path: Path, store: str, executor: str, kind: str) -> None:
    with Orchestrator(make_registry(), store=store_url(store, tmp_path / "home"), executor=executor) as orch:
        check_odd_error(orch, kind)


def check_odd_error(orch: Orchestrator, kind: str) -> None:
    run = orch.submit(call("raise_odd", kind).options(retry=RetryPolicy.no_retry()))
    with pytest.raises(RunFailed) as caught:
        run.result(timeout=WAIT_S)
    (failure,) = caught.value.failures
    assert is_text(failure.message) and is_text(failure.traceback)
    assert len(failure.message) <= MAX_MESSAGE and len(failure.traceback) <= MAX_TRACEBACK
    expected = {"surrogate": "\\udcff", "huge": "characters cut", "args": "\\xff", "unprintable": "could not"}
    assert expected[kind] in failure.message
    stored = [e.data["error"] for e in orch.events(run.id) if e.type == ev.COMMAND_FAILED]
    assert [error["message"] for error in stored] == [failure.message]
    assert orch.run(call("inc", 1), timeout=WAIT_S) == 2


def test_a_run_holding_big_ints_is_taken_over_and_finished_on_mongomock(tmp_path: Path) -> None:
    """The stand-in for a kill on a store that lives in one process: the first owner stops with an
    attempt in flight; the next reads the run back (ints through BSON) and finishes it."""
    store = open_store("mongomock://")
    gate = tmp_path / "gate"
    flow = sequence(
        call("big_numbers"), call("wait_for_file", str(gate), None, WAIT_S).si(), call("big_numbers").si()
    )
    first = Orchestrator(make_registry(), store=store, lease_s=1.0).start()
    try:
        run = first.submit(flow)
        wait_until(lambda: first.state(run.id).running(), what="the gate step to be dispatched")
    finally:
        stopping = threading.Thread(target=first.close)
        stopping.start()
    with Orchestrator(make_registry(), store=store, lease_s=1.0) as second:
        gate.touch()
        result = second.result(run.id, timeout=WAIT_S)
        events = second.events(run.id)
    stopping.join(WAIT_S)
    store.close()
    assert result == {"size": 2**40, "ms": 2**62, "low": -(2**63)}
    assert all(type(value) is int for value in result.values())
    assert any(e.type == ev.COMMAND_FAILED and e.data["error"]["type"] == INTERRUPTED for e in events)


def test_a_flow_over_the_event_limit_runs_from_evenflow_run(tmp_path: Path) -> None:
    (tmp_path / "bigflow.py").write_text(
        "from orchestrator import call, parallel\n"
        "from tests.commands import make_registry\n"
        "registry = make_registry()\n"
        "big = [call('noop', 'x' * 1_000_000) for _ in range(20)]\n"
        "flow = parallel([call('inc', i) for i in range(3)] + big)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "run", "bigflow:flow", "--registry", "bigflow:registry",
         "--home", str(tmp_path / "home"), "--json"],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=WAIT_S, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["result"][:3] == [1, 2, 3]
