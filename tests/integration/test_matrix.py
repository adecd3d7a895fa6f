"""Every executor kind on every store runs the same flows to the same results."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from orchestrator import Orchestrator, RetryPolicy, RunFailed, call, chord, each, parallel, sequence
from orchestrator.core import events as ev
from tests.commands import make_registry

EXECUTORS = ["inline", "asyncio", "threads://4", "processes://2"]
STORES = ["memory://", "mongomock://", "embedded"]
QUICK = RetryPolicy(max_attempts=3, initial_delay=timedelta(milliseconds=10), jitter=0)


@pytest.fixture(params=STORES)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"embedded://{tmp_path}" if request.param == "embedded" else str(request.param)


@pytest.fixture(params=EXECUTORS)
def orch(request: pytest.FixtureRequest, store_url: str) -> Iterator[Orchestrator]:
    with Orchestrator(make_registry(), executor=request.param, store=store_url) as orchestrator:
        yield orchestrator


def test_flows_compute_the_same_everywhere(orch: Orchestrator) -> None:
    assert (
        orch.run(
            sequence(call("inc", 1), parallel(call("square"), call("triple")), call("total")), timeout=60
        )
        == 10
    )
    run = orch.submit(chord([call("square", i) for i in range(10)], call("total")))
    assert run.result(timeout=60) == 285
    assert run.status() == "succeeded"
    assert orch.run(sequence(call("returns_flow", 3), call("inc")), timeout=60) == 6
    assert orch.run(sequence(call("noop", [1, 2, 3]), each("async_double")), timeout=60) == [2, 4, 6]
    assert orch.run(call("flaky", "ok").options(retry=QUICK), timeout=60) == "ok"
    assert orch.run(call("add_ten", 5), timeout=60) == 15


def test_failures_are_reported_the_same_everywhere(orch: Orchestrator) -> None:
    with pytest.raises(RunFailed) as caught:
        orch.run(
            chord(
                [call("raise_value_error", "a"), call("inc", 1), call("raise_value_error", "b")],
                call("total"),
            )
        )
    assert sorted(f.node for f in caught.value.failures) == ["r.0.0", "r.0.2"]
    assert {f.type for f in caught.value.failures} == {"builtins.ValueError"}


def test_a_worker_process_that_dies_is_an_attempt_lost_then_retried(tmp_path: Path, store_url: str) -> None:
    with Orchestrator(make_registry(), executor="processes://2", store=store_url) as orch:
        run = orch.submit(call("die_once", str(tmp_path / "marker")).options(retry=QUICK))
        assert run.result(timeout=60) == "survived"
        failed = [e for e in orch.events(run.id) if e.type == ev.COMMAND_FAILED]
        assert [e.data["error"]["reason"] for e in failed] == ["lost"]
        assert failed[0].data["error"]["type"] == "orchestrator.core.errors.WorkerLost"
