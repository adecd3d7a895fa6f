"""Edge cases of the projections and the query commands: time bounds, non-finite results, odd messages."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from orchestrator import Orchestrator, call
from orchestrator.cli import main
from orchestrator.core import events as ev
from orchestrator.core.events import Event, to_doc
from orchestrator.core.registry import Registry
from orchestrator.store.faithful_mock import client
from projections import failures, run_history, stored_status
from projections.read_models import RunsProjector, rebuild_runs, runs_beside
from projections.run_status import NODE_STATES, RunStatus

T = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)  # a whole millisecond, as every logged `at` is
HALF_MS = timedelta(microseconds=500)


# --- commands for the CLI runs


def not_a_number() -> float:
    return float("nan")


def zero() -> int:
    return 0


def two_line_failure() -> None:
    raise ValueError("first line\nsecond line")


def _registry() -> Registry:
    registry = Registry()
    for fn in (not_a_number, zero, two_line_failure):
        registry.register(fn.__name__, fn)
    return registry


def _run_on_embedded(home: Path, command: str) -> str:
    with Orchestrator(_registry(), executor="inline", home=home) as orch:
        run = orch.submit(call(command), name=command)
        with contextlib.suppress(Exception):
            run.result(timeout=30)
        return run.id


# --- time windows are [since, until) even for bounds finer than a millisecond


def _failed_event(at: datetime) -> Event:
    return Event(
        run="r1",
        seq=1,
        type=ev.COMMAND_FAILED,
        at=at,
        node="r",
        attempt=1,
        command="c",
        data={"error": {"type": "builtins.ValueError", "message": "x", "reason": "raised"}},
    )


def test_event_window_since_with_microseconds_includes_an_earlier_event(events_collection: Any) -> None:
    events_collection.insert_one(to_doc(_failed_event(T)))
    # the event is at T, before since = T + 0.5 ms: [since, until) must leave it out
    assert failures(events_collection, since=T + HALF_MS) == []


def test_event_window_until_with_microseconds_excludes_an_earlier_event(events_collection: Any) -> None:
    events_collection.insert_one(to_doc(_failed_event(T)))
    # the event is at T, before until = T + 0.5 ms: [since, until) must keep it
    assert len(failures(events_collection, until=T + HALF_MS)) == 1


def _runs_with_one_submitted_at_t() -> Any:
    runs = RunsProjector.in_memory(client()["evenflow"]["runs"]).runs
    doc = RunStatus(
        run="a",
        flow="f",
        state="succeeded",
        submitted_at=T,
        ended_at=None,
        duration_s=None,
        nodes=dict.fromkeys(NODE_STATES, 0),
        last_seq=3,
    ).to_doc()
    runs.replace_newer([doc])
    return runs


def test_run_history_since_with_microseconds_includes_a_run_submitted_before_it() -> None:
    runs = _runs_with_one_submitted_at_t()
    assert run_history(runs, since=T + HALF_MS).rows == []


def test_run_history_until_with_microseconds_excludes_a_run_submitted_before_it() -> None:
    runs = _runs_with_one_submitted_at_t()
    assert [row.run for row in run_history(runs, until=T + HALF_MS).rows] == ["a"]


# --- --json prints only JSON: NaN and infinities become strings


def _strict_json(text: str) -> Any:
    def refuse(token: str) -> Any:
        raise ValueError(f"{token} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_status_json_of_a_run_that_returned_nan_is_valid_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _run_on_embedded(tmp_path, "not_a_number")
    assert main(["status", run, "--home", str(tmp_path), "--json"]) == 0
    _strict_json(capsys.readouterr().out)


# --- the status table shows a falsy result


def test_status_table_shows_a_result_of_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _run_on_embedded(tmp_path, "zero")
    assert main(["status", run, "--home", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    result_line = next(line for line in lines if line.startswith("result"))
    assert result_line.split()[-1] == "0", result_line


# --- a multi-line error message keeps the failures table one line per group


def test_failures_table_keeps_one_line_per_group(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _run_on_embedded(tmp_path, "two_line_failure")
    assert main(["failures", "--home", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2, lines  # a header and one group


# --- every runs_beside handle over one mongomock collection shares its documents


def test_rebuild_through_another_runs_beside_handle_keeps_the_orchestrators_documents() -> None:
    registry = Registry()
    registry.register("zero", zero)
    with Orchestrator(registry, executor="inline", store="mongomock://") as orch:
        run = orch.submit(call("zero")).id
        orch.result(run, timeout=30)
        mine = orch.runs_collection
        assert stored_status(mine, run) is not None  # synced into the mongomock collection
        # a second handle over the same collection must share the orchestrator's documents
        assert rebuild_runs(orch.store.events, runs_beside(orch.store.events)) == 1
        assert stored_status(mine, run) is not None


# --- a --since too far back is one line and exit 2


@pytest.mark.parametrize("since", ["1000000d", "99999999999w"])
def test_runs_with_a_since_out_of_range_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], since: str
) -> None:
    assert main(["runs", "--since", since, "--home", str(tmp_path)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
