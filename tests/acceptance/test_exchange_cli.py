"""``evenflow export`` and ``import``: a home written out and read back answers every reader the same.

The home is the benchmark's kind (retried and failed attempts, failed runs,
listener chains). Export → import into an empty home → every reader
(``runs``, ``status``, ``audit`` of a chain, ``stats``, ``failures``) prints the
same JSON; export of the copy is byte for byte the first file; importing again
changes nothing; a damaged line is refused in one line naming it, and what came
before it stays. Every value the log takes survives the line format
(Hypothesis), and a MongoDB store exports the same lines.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from bench.history_build import build
from orchestrator.cli.exchange import exported, from_line, imported, to_line
from orchestrator.core import events as ev
from orchestrator.core.errors import InvalidOption
from orchestrator.core.events import Event
from orchestrator.store import open_store
from tests.acceptance.test_cli import evenflow
from tests.integration.test_value_mapping import same, taken
from tests.strategies import values

READERS = (("runs", "--limit", "1000"), ("stats",), ("failures",))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    home = tmp_path_factory.mktemp("source") / "home"
    return home, build(home, 3_000)


def answers(home: Path, plan: Any) -> list[Any]:
    chained = next(p.correlation for p in plan if p.run != p.correlation)
    calls = [*READERS, ("status", plan[3].run), ("audit", chained)]
    found = []
    for args in calls:
        done = evenflow(*args, "--json", home=home)
        assert done.returncode == 0, done.stderr
        found.append(json.loads(done.stdout))
    return found


def test_export_then_import_into_an_empty_home_answers_every_reader_the_same(
    built: tuple[Path, Any], tmp_path: Path
) -> None:
    home, plan = built
    first, again, copy = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "copy"
    assert evenflow("export", "--out", str(first), home=home).returncode == 0
    assert len(first.read_text().splitlines()) == sum(p.events for p in plan)
    loaded = evenflow("import", str(first), home=copy)
    assert loaded.returncode == 0 and loaded.stdout.startswith(
        f"imported {sum(p.events for p in plan)} event"
    )
    assert answers(copy, plan) == answers(home, plan)
    assert evenflow("export", "--out", str(again), home=copy).returncode == 0
    assert again.read_bytes() == first.read_bytes()
    assert evenflow("import", str(first), home=copy).returncode == 0  # again: nothing changes
    assert answers(copy, plan) == answers(home, plan)


def test_export_of_one_run_or_one_flow_holds_exactly_those_runs(
    built: tuple[Path, Any], tmp_path: Path
) -> None:
    home, plan = built
    one = evenflow("export", "--run", plan[5].run, home=home)
    assert {json.loads(line)["run"] for line in one.stdout.splitlines()} == {plan[5].run}
    flow = evenflow("export", "--flow", "receipts", home=home)
    assert {json.loads(line)["run"] for line in flow.stdout.splitlines()} == {
        p.run for p in plan if p.flow == "receipts"
    }


def test_a_damaged_line_is_refused_by_number_and_what_came_before_stays(
    built: tuple[Path, Any], tmp_path: Path
) -> None:
    home, plan = built
    lines = evenflow("export", "--run", plan[0].run, home=home).stdout.splitlines()
    second = evenflow("export", "--run", plan[1].run, home=home).stdout.splitlines()
    damaged = tmp_path / "damaged.jsonl"
    damaged.write_text("\n".join([*lines, second[0][: len(second[0]) // 2], *second[1:]]) + "\n")
    done = evenflow("import", str(damaged), home=tmp_path / "copy")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert f"line {len(lines) + 1} is not an event" in done.stderr
    listed = json.loads(evenflow("runs", "--json", home=tmp_path / "copy").stdout)["runs"]
    assert [row["run"] for row in listed] == [plan[0].run]


def test_a_run_out_of_order_is_refused() -> None:
    at = datetime(2026, 3, 1, tzinfo=UTC)
    lines = [to_line(Event("r", seq, ev.RUN_SUBMITTED if seq == 1 else "order.placed", at)) for seq in (1, 3)]
    store = open_store("memory://")
    with pytest.raises(InvalidOption, match="goes from seq 1 to 3"):
        imported(store, lines)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=values)
def test_every_value_the_log_takes_survives_a_line(value: Any) -> None:
    if not taken(value):
        return  # refused where it enters; the log never holds it
    event = Event("r", 2, "order.placed", datetime(2026, 3, 1, tzinfo=UTC), data={"value": value})
    back = from_line(to_line(event), 1)
    assert same(back.data["value"], value) and back.run == event.run and back.at == event.at


def test_a_mongodb_store_exports_the_lines_the_embedded_store_does(built: tuple[Path, Any]) -> None:
    home = built[0]
    embedded = open_store(f"embedded://{home}", read_only=True)
    mongo = open_store("mongomock://")
    try:
        events = list(exported(embedded, run=None, flow=None, since=None))
        mongo.append(events)
        mine = sorted(to_line(e) for e in exported(mongo, run=None, flow="receipts", since=None))
        theirs = sorted(to_line(e) for e in exported(embedded, run=None, flow="receipts", since=None))
        assert mine == theirs and mine
    finally:
        embedded.close()
        mongo.close()
