"""Homes of N events for ``bench/history.py``, built through the store's own append path in bulk.

The runs (their events: ``history_runs.py``) are what an order service logs:
a parallel group of ``CALLS`` calls named ``orders``, where most calls succeed
at once and a few fail once or twice before they succeed (about three retried
attempts a run, so ~104 events, as in issue 15's measurement); one run in
twenty fails (a call fails all three attempts). A listener answers one
successful run in ten with a run of its own (``RECEIPTS``, keyed, caused by
that ``run.succeeded`` and in its chain), and a second listener answers one in
three of those (``LEDGER``): chains of two and three runs for ``audit``.
Submission times run over the last ``SPREAD_DAYS`` days in step with the
events. A fixed seed gives the same runs every time, and ``build`` says what
each run must fold to, so a test can check the home is valid.

    python -m bench.history_build HOME EVENTS   # build, and write HOME/plan.json
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from orchestrator import Registry
from orchestrator.core.events import Event, to_millis
from orchestrator.core.listening import trigger_key
from orchestrator.core.submitting import Submission
from orchestrator.store.embedded import EmbeddedStore

from .history_runs import POLICY, Shape, run_events

CALLS = 30
ORDER_COMMANDS = ("reserve", "charge", "pack", "ship", "invoice")
RECEIPT_COMMANDS = ("receipt", "email", "loyalty")
LEDGER_COMMANDS = ("ledger",)
RECEIPTS = "receipts on run.succeeded"
LEDGER = "ledger on run.succeeded"
SPREAD_DAYS = 90
BATCH_EVENTS = 10_000
SEED = 15


@dataclass(frozen=True, slots=True)
class Planned:
    """What a generated run must fold to."""

    run: str
    state: str
    flow: str | None
    correlation: str
    depth: int
    attempts: int
    failed_nodes: int
    events: int
    submitted_at: datetime


def build(home: Path, events: int, seed: int = SEED) -> list[Planned]:
    """Fill ``home`` with runs until it holds at least ``events`` events; what each run must fold to."""
    store = EmbeddedStore(home)
    planned: list[Planned] = []
    batch: list[Event] = []
    count = 0
    try:
        for run_log, plan in runs(random.Random(seed), events):
            batch += run_log
            planned.append(plan)
            count += len(run_log)
            if len(batch) >= BATCH_EVENTS or count >= events:
                store.append(batch)
                batch = []
            if count >= events:
                break
    finally:
        store.close()
    return planned


def runs(rng: random.Random, events: int) -> Iterator[tuple[list[Event], Planned]]:
    """Runs, each followed by the runs its chain's listeners answer it with, spread over time."""
    now = to_millis(datetime.now(UTC))
    start, spread = now - timedelta(days=SPREAD_DAYS), timedelta(days=SPREAD_DAYS, minutes=-5)
    count = 0
    for index in range(events):  # bounded: every run has more than one event
        order = _order_shape(rng, index)
        at = to_millis(start + spread * (count / events))
        run = f"{rng.getrandbits(128):032x}"
        log = run_events(run, {"flow": order.flow(), "name": "orders"}, order, at, None, run)
        count += len(log)
        yield log, _planned(log, order, "orders", 0)
        depth = 0
        while log[-1].type == "run.succeeded" and depth < 2 and rng.random() < (0.1 if depth == 0 else 0.34):
            depth += 1
            log, shape = _answer(rng, log[-1], depth, index)
            count += len(log)
            yield log, _planned(log, shape, None, depth)


def _order_shape(rng: random.Random, order: int) -> Shape:
    """``CALLS`` calls; a few fail once or twice (retried), and one run in twenty has a call that gives up."""
    flaky = rng.choices(range(7), weights=(20, 10, 10, 25, 15, 10, 10))[0]
    failures = {i: 1 if rng.random() < 0.8 else 2 for i in rng.sample(range(CALLS), flaky)}
    if rng.random() < 0.05:
        failures[rng.randrange(CALLS)] = 3
    commands = tuple(ORDER_COMMANDS[i % len(ORDER_COMMANDS)] for i in range(CALLS))
    return Shape(commands, tuple((order, i) for i in range(CALLS)), failures)


def _answer(rng: random.Random, cause: Event, depth: int, order: int) -> tuple[list[Event], Shape]:
    """The run a listener submits in answer to ``cause`` (a ``run.succeeded``), as ``Triggering`` logs it."""
    listener, commands = (RECEIPTS, RECEIPT_COMMANDS) if depth == 1 else (LEDGER, LEDGER_COMMANDS)
    failures = {0: 1} if rng.random() < 0.1 else {}
    shape = Shape(commands, tuple((order, i) for i in range(len(commands))), failures)
    at = cause.at + timedelta(milliseconds=rng.randrange(20, 400))
    return listener_run(listener, cause, depth, shape, at), shape


def listener_run(listener: str, cause: Event, depth: int, shape: Shape, at: datetime) -> list[Event]:
    """The run ``listener`` answers ``cause`` with (``depth`` hops from a run by hand), keyed and chained
    as ``listeners/triggers.py`` submits it."""
    submission = Submission.keyed(trigger_key(listener, cause.id, 0), shape.flow(), cause=cause.id,
                                  correlation=cause.correlation, listener=listener, depth=depth)  # fmt: skip
    return run_events(submission.run, submission.data(), shape, at, cause.id, str(cause.correlation))


def _planned(log: list[Event], shape: Shape, flow: str | None, depth: int) -> Planned:
    """What the run was meant to be, read off its shape (not its events)."""
    limit = POLICY.max_attempts
    attempts = sum(min(shape.failures.get(i, 0) + 1, limit) for i in range(len(shape.commands)))
    given_up = sum(1 for count in shape.failures.values() if count >= limit)
    first = log[0]
    state = "failed" if shape.fails else "succeeded"
    return Planned(
        first.run, state, flow, str(first.correlation), depth, attempts, given_up, len(log), first.at
    )


def summary(plan: list[Planned], seconds: float) -> dict[str, Any]:
    """What ``bench/history.py`` needs of a plan: its size, and the runs to read."""
    middle = plan[len(plan) // 2 :]
    typical = next(p for p in middle + plan if p.depth == 0 and p.state == "succeeded")
    deepest = max((p.depth for p in plan), default=0)
    chained = next(p.correlation for p in middle + plan if p.depth == deepest)
    return {
        "events": sum(p.events for p in plan),
        "runs": len(plan),
        "states": dict(Counter(p.state for p in plan)),
        "chains": sum(1 for p in plan if p.depth == 1),
        "build_s": round(seconds, 2),
        "middle": typical.run,
        "chained": chained,
        "commands": list(ORDER_COMMANDS + RECEIPT_COMMANDS + LEDGER_COMMANDS),
        "failed": next((p.run for p in middle + plan if p.state == "failed"), middle[0].run),
    }


def registry() -> Registry:
    """The commands the generated runs call (each returns its arguments' figure), for open + start."""
    registry = Registry()
    for name in ORDER_COMMANDS + RECEIPT_COMMANDS + LEDGER_COMMANDS:
        registry.register(name, _figure)
    return registry


def _figure(order: int, i: int) -> int:
    return order * 100 + i


def main(argv: list[str]) -> int:
    home, events = Path(argv[0]), int(argv[1])
    began = time.perf_counter()
    plan = build(home, events)
    (home / "plan.json").write_text(json.dumps(summary(plan, time.perf_counter() - began)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
