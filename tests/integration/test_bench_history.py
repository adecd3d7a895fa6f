"""The homes ``bench/history.py`` measures are valid logs: each run folds to what the builder meant."""

from __future__ import annotations

from pathlib import Path

from bench.history_build import build
from orchestrator.store.embedded import EmbeddedStore
from projections.audit import audit_chain
from projections.run_history import indexed_history
from projections.run_tally import tally


def test_a_built_home_folds_to_the_planned_runs_and_the_readers_list_them(tmp_path: Path) -> None:
    plan = build(tmp_path / "home", 5_000)
    store = EmbeddedStore(tmp_path / "home", read_only=True)
    try:
        assert sum(p.events for p in plan) == sum(1 for _ in store.scan())
        for planned in plan:
            status = tally(planned.run, store.read(planned.run))
            assert (status.state, status.flow) == (planned.state, planned.flow), planned
        assert {"succeeded", "failed"} <= {p.state for p in plan}
        page = indexed_history(store.run_page, lambda run: tally(run, store.read(run)), limit=1000)
        assert page is not None and {row.run for row in page.rows} == {p.run for p in plan}
        child = next(p for p in plan if p.run != p.correlation)
        assert {entry.run for entry in audit_chain(store.indexed_events, child.correlation)} == {
            child.correlation,
            child.run,
        }
        assert store.unfinished_runs() == []
    finally:
        store.close()
