"""Golden logs: what an earlier evenflow wrote must fold to the same states forever.

Each ``logs/NAME.jsonl`` holds the stored documents of real runs as a day's
evenflow wrote them (``record.py``), and ``NAME.states.json`` the state each
run folded to then. A refactor that moves a class, renames a field or changes
the fold of any event type fails here, before any user's log breaks.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bson
import pytest
from bson import json_util
from bson.json_util import CANONICAL_JSON_OPTIONS, JSONOptions

from orchestrator.core.events import Event
from orchestrator.core.evolve import fold
from orchestrator.core.planner import decide
from orchestrator.store.encoding import CODEC_OPTIONS, decode
from tests.golden.snapshot import snapshot
from tests.support.stores import open_kind

LOGS = Path(__file__).parent / "logs"
NAMES = sorted(path.name.removesuffix(".jsonl") for path in LOGS.glob("*.jsonl"))
READ = JSONOptions(json_mode=CANONICAL_JSON_OPTIONS.json_mode, tz_aware=True, tzinfo=UTC)


def stored_docs(name: str) -> list[dict[str, Any]]:
    """The documents as a server hands them back through evenflow's codec (BSON both ways)."""
    lines = (LOGS / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
    return [
        bson.decode(bson.encode(json_util.loads(line, json_options=READ)), CODEC_OPTIONS) for line in lines
    ]


def runs_of(events: list[Event]) -> Iterator[tuple[str, list[Event]]]:
    runs: dict[str, list[Event]] = {}
    for event in events:
        runs.setdefault(event.run, []).append(event)
    yield from runs.items()


def expected_states(name: str) -> dict[str, Any]:
    states: dict[str, Any] = json.loads((LOGS / f"{name}.states.json").read_text(encoding="utf-8"))
    return states


def test_there_is_a_golden_log() -> None:
    assert "landed-2026-12-05" in NAMES


@pytest.mark.parametrize("name", NAMES)
def test_every_run_folds_to_its_recorded_state(name: str) -> None:
    expected = expected_states(name)
    events = [decode(doc) for doc in stored_docs(name)]
    folded = {run: snapshot(fold(run, run_events)) for run, run_events in runs_of(events)}
    assert sorted(folded) == sorted(expected)
    for run, state in folded.items():
        assert state == expected[run], f"run {run} of {name} folds differently"


@pytest.mark.parametrize("name", NAMES)
def test_nothing_is_left_to_decide_in_a_golden_run(name: str) -> None:
    later = datetime(2100, 1, 1, tzinfo=UTC)
    for run, run_events in runs_of([decode(doc) for doc in stored_docs(name)]):
        state = fold(run, run_events)
        assert state.finished, run
        assert decide(state, later) == [], run


@pytest.mark.parametrize("kind", ["memory", "mongomock", "embedded"])
@pytest.mark.parametrize("name", NAMES)
def test_every_store_reads_a_golden_log_back_to_the_same_states(name: str, kind: str, tmp_path: Path) -> None:
    expected = expected_states(name)
    events = [decode(doc) for doc in stored_docs(name)]
    store = open_kind(kind, tmp_path / "home", "golden")
    try:
        store.append(events)
        for run in expected:
            assert snapshot(fold(run, store.read(run))) == expected[run], f"run {run} on {kind}"
    finally:
        store.close()
