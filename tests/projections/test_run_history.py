"""Run history over the ``runs`` read model: filters, newest first, and a cursor that holds still."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from orchestrator import InvalidOption, RunFailed, call, parallel, sequence
from projections.indexes import INDEXES, ensure_indexes
from projections.run_history import Page, decode_cursor, encode_cursor, run_history, run_history_pipeline
from projections.run_status import NODE_STATES, RunStatus

from .runs_support import Backend, runs_backend

__all__ = ["runs_backend"]  # the fixture, imported to be found

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def status(run: str, minutes: float, **fields: Any) -> dict[str, Any]:
    """A read-model document submitted ``minutes`` after T0."""
    base = RunStatus(
        run=run,
        flow=fields.pop("flow", "billing"),
        state=fields.pop("state", "succeeded"),
        submitted_at=T0 + timedelta(minutes=minutes),
        ended_at=None,
        duration_s=None,
        nodes=dict.fromkeys(NODE_STATES, 0),
        last_seq=3,
    )
    return {**base.to_doc(), **fields}


@pytest.fixture
def runs(runs_backend: Backend) -> Any:
    collection = runs_backend.database["runs"]
    ensure_indexes({"runs": collection})
    collection.insert_many(
        [
            status("a", 0, commands=["charge"]),
            status("b", 1, state="failed", commands=["charge", "ship"], error_types=["builtins.ValueError"]),
            status("c", 2, flow="shipping", commands=["ship"]),
            status("d", 3, state="running", commands=["ship"]),
            status("e", 3, flow="shipping", state="failed", error_types=["x.Timeout"]),  # same ms as d
            status("f", 3, commands=["charge"]),  # same ms again
            status("g", 5, state="cancelled"),
        ]
    )
    return collection


def ids(page: Page) -> list[str]:
    return [row.run for row in page.rows]


def every_page(runs: Any, limit: int, **filters: Any) -> list[str]:
    seen: list[str] = []
    after = None
    while True:
        page = run_history(runs, limit=limit, after=after, **filters)
        seen += ids(page)
        if page.next is None:
            return seen
        after = page.next


def test_newest_first_with_ties_broken_by_id(runs: Any) -> None:
    assert ids(run_history(runs)) == ["g", "f", "e", "d", "c", "b", "a"]
    assert run_history(runs).next is None


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"state": "failed"}, ["e", "b"]),
        ({"state": "running"}, ["d"]),
        ({"flow": "shipping"}, ["e", "c"]),
        ({"command": "ship"}, ["d", "c", "b"]),
        ({"command": "charge", "state": "succeeded"}, ["f", "a"]),
        ({"error_type": "builtins.ValueError"}, ["b"]),
        ({"since": T0 + timedelta(minutes=2), "until": T0 + timedelta(minutes=5)}, ["f", "e", "d", "c"]),
        ({"since": T0 + timedelta(minutes=3, microseconds=500)}, ["g"]),  # d, e, f are 0.5 ms before it
        ({"until": T0 + timedelta(minutes=3, microseconds=500)}, ["f", "e", "d", "c", "b", "a"]),
        ({"until": T0 + timedelta(minutes=1)}, ["a"]),
        ({"flow": "nothing"}, []),
    ],
)
def test_filters(runs: Any, filters: dict[str, Any], expected: list[str]) -> None:
    assert ids(run_history(runs, **filters)) == expected
    assert every_page(runs, 1, **filters) == expected


@pytest.mark.parametrize("limit", [1, 2, 3, 6, 7, 50])
def test_pages_cover_every_row_once_in_order(runs: Any, limit: int) -> None:
    assert every_page(runs, limit) == ["g", "f", "e", "d", "c", "b", "a"]


def test_runs_arriving_between_pages_neither_shift_nor_repeat_rows(runs: Any) -> None:
    first = run_history(runs, limit=3)
    assert ids(first) == ["g", "f", "e"]
    runs.insert_many([status("h", 9), status("ea", 3)])  # newer; same millisecond as the cursor, before it
    second = run_history(runs, limit=3, after=first.next)
    assert ids(second) == ["d", "c", "b"]
    assert every_page(runs, 3) == ["h", "g", "f", "ea", "e", "d", "c", "b", "a"]
    rest = run_history(runs, limit=10, after=second.next)
    assert ids(rest) == ["a"]
    assert rest.next is None


def test_the_cursor_is_opaque_and_round_trips(runs: Any) -> None:
    page = run_history(runs, limit=2)
    assert page.next is not None and "f" not in page.next
    assert decode_cursor(page.next) == (T0 + timedelta(minutes=3), "f")
    row = page.rows[-1]
    assert encode_cursor(row) == page.next


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"state": "lost"}, "state must be one of"),
        ({"limit": 0}, "limit must be"),
        ({"limit": 10_000}, "limit must be"),
        ({"after": "not a cursor"}, "not a cursor"),
        ({"after": "W10"}, "not a cursor"),
        ({"since": "yesterday"}, "since must be a datetime"),
    ],
)
def test_bad_options_are_refused_with_the_fix(runs: Any, options: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidOption, match=message):
        run_history(runs, **options)


def test_history_of_real_runs(runs_backend: Backend) -> None:
    with runs_backend.orchestrator() as orch:
        ok = orch.submit(sequence(call("describe", 1), call("describe")), name="billing")
        ok.result(timeout=30)
        bad = orch.submit(parallel(call("describe", 2), call("raise_value_error", "x")), name="shipping")
        with pytest.raises(RunFailed):
            bad.result(timeout=30)
        first = run_history(orch.runs_collection, limit=1)
        later = orch.submit(call("flaky", 5, failures=1), name="billing")
        with pytest.raises(RunFailed):
            later.result(timeout=30)
        runs = orch.runs_collection
        assert ids(first) == [bad.id]
        assert ids(run_history(runs, after=first.next)) == [ok.id]
        assert ids(run_history(runs)) == [later.id, bad.id, ok.id]
        assert ids(run_history(runs, flow="billing", state="failed")) == [later.id]
        assert ids(run_history(runs, command="raise_value_error")) == [bad.id]
        assert ids(run_history(runs, error_type="builtins.ValueError")) == [later.id, bad.id]
        row = run_history(runs, flow="shipping").rows[0]
        assert (row.state, row.nodes["succeeded"], row.nodes["failed"]) == ("failed", 1, 1)


def test_history_pages_are_read_through_an_index_on_a_server(runs_backend: Backend, runs: Any) -> None:
    if runs_backend.kind != "mongodb":
        pytest.skip("explain needs a real server")
    from .runs_support import index_names_used

    names = {spec.name for spec in INDEXES["runs"]}
    cursor = run_history(runs, limit=2).next
    for filters in ({}, {"state": "failed"}, {"flow": "billing"}, {"command": "ship"}, {"error_type": "x"}):
        for after in (None, cursor):
            used = index_names_used(runs, run_history_pipeline(limit=2, after=after, **filters))
            assert used & names, (filters, after, used)
