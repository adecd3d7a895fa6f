"""The homes ``bench/history.py`` measures are valid logs, in the shapes the engine writes.

One test runs flows through the real engine (retried failures, a call that
gives up, a listener's answer) and holds the generator's events for the same
runs to them; the other builds a small home and checks that every run folds to
what the builder meant and that the CLI's readers list and show them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from bench.history_build import RECEIPTS, build, listener_run
from bench.history_runs import Shape, run_events
from orchestrator import Orchestrator, Registry, RunFailed
from orchestrator.core.events import Event
from orchestrator.core.evolve import fold
from orchestrator.core.keys import run_for_key
from orchestrator.core.listening import trigger_key
from orchestrator.store.embedded import EmbeddedStore
from projections.run_tally import tally
from tests.support.polling import wait_until

COMMANDS = ("charge", "ship", "charge", "ship")
OK = Shape(COMMANDS, tuple((7, i) for i in range(4)), {1: 1, 3: 2})
FAILING = Shape(COMMANDS, tuple((8, i) for i in range(4)), {1: 1, 2: 3, 3: 2})
RECEIPT = Shape(("receipt", "email"), ((9, 0), (9, 1)), {1: 1})
VARYING = ("started_at", "due", "duration_s", "traceback")
"""Data fields holding times, durations or stack text: compared by kind, not value."""
ROOT = Path(__file__).resolve().parents[2]


def _registry(*shapes: Shape) -> Registry:
    """Commands that fail as ``shapes`` say: call ``(order, i)`` raises until its failures are spent."""
    failing = {args: shape.failures.get(i, 0) for shape in shapes for i, args in enumerate(shape.args)}
    tried: dict[tuple[int, int], int] = {}

    def command(order: int, i: int) -> int:
        tried[order, i] = tried.get((order, i), 0) + 1
        if tried[order, i] <= failing[order, i]:
            raise ValueError("declined")
        return order * 100 + i

    registry = Registry()
    for name in {c for shape in shapes for c in shape.commands}:
        registry.register(name, command)
    return registry


def _kind(value: Any, name: str = "") -> Any:
    """``value`` with what varies from run to run (times, durations, tracebacks, hosts) put as its kind."""
    if isinstance(value, Mapping):
        return {k: _kind(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_kind(v) for v in value]
    if name in VARYING or isinstance(value, datetime):
        return type(value).__name__
    if name == "by":
        return (
            "orchestrator" if str(value).startswith("orchestrator:") else "worker" if "/" in value else value
        )
    return value


def _shapes(events: list[Event]) -> list[tuple[Any, ...]]:
    return [(e.seq, e.type, e.node, e.attempt, e.command, _kind(e.data), _kind(e.by, "by"), e.causation,
             e.correlation) for e in events]  # fmt: skip


def _logged(home: Path) -> tuple[list[Event], list[Event], list[Event]]:
    """What the engine logs for ``OK``, ``FAILING`` and the listener's answer to ``OK``."""
    with Orchestrator(_registry(OK, FAILING, RECEIPT), executor="inline", home=home) as orch:
        orch.listen("run.succeeded", lambda event: RECEIPT.node(), name=RECEIPTS,
                    predicate=lambda event: event.run == event.correlation)  # fmt: skip
        ok = orch.submit(OK.node(), name="orders")
        failing = orch.submit(FAILING.node(), name="orders")
        ok.result(60)
        with pytest.raises(RunFailed):
            failing.result(60)
        answer = run_for_key(trigger_key(RECEIPTS, orch.events(ok.id)[-1].id, 0))
        wait_until(lambda: orch.events(answer), what="the listener's answer logged")
        orch.result(answer, 60)
        return orch.events(ok.id), orch.events(failing.id), orch.events(answer)


def test_generated_runs_are_what_the_engine_logs_for_the_same_flows(tmp_path: Path) -> None:
    ok, failing, answer = _logged(tmp_path / "home")
    for logged, shape in ((ok, OK), (failing, FAILING)):
        run, at = logged[0].run, logged[0].at
        made = run_events(run, {"flow": shape.flow(), "name": "orders"}, shape, at, None, run)
        assert _shapes(made) == _shapes(logged)
    made = listener_run(RECEIPTS, ok[-1], 1, RECEIPT, answer[0].at)
    assert made[0].data == answer[0].data  # the same key, digest, depth and flow: the same run id
    assert _shapes(made) == _shapes(answer)


def _cli(home: Path, *args: str) -> Any:
    argv = [sys.executable, "-m", "orchestrator.cli", *args, "--home", str(home), "--json"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=ROOT, check=True)
    return json.loads(done.stdout)


def test_a_built_home_folds_to_the_planned_runs_and_the_cli_reads_them(tmp_path: Path) -> None:
    home = tmp_path / "home"
    plan = build(home, 5_000)
    store = EmbeddedStore(home, read_only=True)
    try:
        assert sum(p.events for p in plan) == sum(1 for _ in store.scan()) >= 5_000
        for p in plan:
            events = store.read(p.run)
            status = tally(p.run, events)
            assert fold(p.run, events).status == p.state
            assert (status.state, status.flow, status.attempts, status.nodes["failed"]) == (
                p.state, p.flow, p.attempts, p.failed_nodes), p  # fmt: skip
            assert events[0].at == p.submitted_at and events[0].correlation == p.correlation
        assert store.unfinished_runs() == []
    finally:
        store.close()
    assert {p.state for p in plan} == {"succeeded", "failed"} and max(p.depth for p in plan) >= 1
    listed = _cli(home, "runs", "--limit", str(len(plan)))
    assert {row["run"]: row["state"] for row in listed["runs"]} == {p.run: p.state for p in plan}
    failed = next(p for p in plan if p.state == "failed")
    shown = _cli(home, "status", failed.run)
    assert (shown["state"], shown["nodes"]["failed"], shown["attempts"]) == ("failed", 1, failed.attempts)
    chained = next(p for p in plan if p.depth == max(q.depth for q in plan))
    chain = {p.run for p in plan if p.correlation == chained.correlation}
    assert {entry["run"] for entry in _cli(home, "audit", chained.correlation)} == chain
