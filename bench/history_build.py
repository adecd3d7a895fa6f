"""Homes of N events for ``bench/history.py``, built through the store's own append path in bulk.

Each run is what the engine logs for a parallel group of ``CALLS`` calls
(submitted, every call dispatched, started and succeeded, ``run.succeeded``
with the results), with the shapes a real run has (``flow`` from
``encode_flow``, a worker in ``data.by``, causation and correlation). One run in
ten has a call that fails twice and succeeds on its third attempt (retries
logged); one in twenty fails (a call fails three times, ``node.failed``,
``run.failed``); one in ten starts a listener's run in answer to it (same
correlation, caused by its last event). Submission times spread over the last
``SPREAD_DAYS`` days, a fixed seed makes the same home every time, and ``plan``
says what each run must fold to, so a test can check the home is valid.
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from orchestrator import call, encode_flow, parallel
from orchestrator.core import events as ev
from orchestrator.core.events import Event
from orchestrator.store.embedded import EmbeddedStore

CALLS = 30
COMMANDS = ("charge", "ship", "notify", "invoice", "audit")
SPREAD_DAYS = 90
BATCH_EVENTS = 20_000
BY = "orchestrator:bench:1:000000"
WORKER = "bench:1/processes"


@dataclass(frozen=True, slots=True)
class Planned:
    run: str
    state: str
    flow: str
    correlation: str
    events: int


def build(home: Path, events: int, seed: int = 15) -> list[Planned]:
    """Fill ``home`` with runs until it holds at least ``events`` events; what each run must fold to."""
    store = EmbeddedStore(home)
    planned: list[Planned] = []
    batch: list[Event] = []
    count = 0
    try:
        for run_events, plan in _runs(random.Random(seed)):
            batch += run_events
            planned.append(plan)
            count += len(run_events)
            if len(batch) >= BATCH_EVENTS or count >= events:
                store.append(batch)
                batch = []
            if count >= events:
                break
    finally:
        store.close()
    return planned


def _runs(rng: random.Random) -> Iterator[tuple[list[Event], Planned]]:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=SPREAD_DAYS)
    step = timedelta(days=SPREAD_DAYS) / 200_000
    for index in range(10**8):  # bounded: far more runs than any home asks for
        run = f"run{index:08d}"
        at = start + step * index
        kind = rng.random()
        failing = kind < 0.05
        retried = not failing and kind < 0.15
        events, state = _run(run, at, run, None, failing=failing, retried=retried)
        yield events, Planned(run, state, "orders", run, len(events))
        if rng.random() < 0.1:  # a listener answers the run's end with a run of its own
            child = f"{run}-l"
            later, child_state = _run(child, at + timedelta(seconds=2), run, events[-1].id, failing=False)
            yield later, Planned(child, child_state, "receipts", run, len(later))


def _run(
    run: str, at: datetime, correlation: str, cause: str | None, *, failing: bool, retried: bool = False
) -> tuple[list[Event], str]:
    name = "receipts" if cause else "orders"
    flow = encode_flow(parallel(*(call(COMMANDS[i % len(COMMANDS)], i) for i in range(CALLS))))
    log = [Event(run, 1, ev.RUN_SUBMITTED, at, data={"flow": flow, "name": name}, by=BY,
                 causation=cause, correlation=correlation)]  # fmt: skip
    results = []
    for i in range(CALLS):
        node, command = f"r.{i}", COMMANDS[i % len(COMMANDS)]
        failures = 3 if failing and i == 7 else 2 if retried and i == 3 else 0
        for attempt in range(1, min(failures + 1, 3) + 1):
            moment = at + timedelta(milliseconds=10 * i + 40 * attempt)
            last = attempt > failures
            log += _attempt(run, len(log), node, attempt, command, moment, i, ok=last)
            if not last and attempt < 3:
                log.append(_event(run, len(log) + 1, ev.RETRY_SCHEDULED, moment, node, attempt + 1, command,
                                  {"due": moment, "delay_s": 0.0}))  # fmt: skip
        if failures == 3:
            log.append(_event(run, len(log) + 1, ev.NODE_FAILED, at, node, 3, command, {}))
        else:
            results.append(i)
    if correlation != run:  # a listener's run belongs to the chain of the run it answers
        log = [replace(event, correlation=correlation) for event in log]
    end = at + timedelta(seconds=1)
    if failing:
        failures = [{"node": "r.7", "error": {"type": "builtins.ValueError", "message": "declined"}}]
        ended = _event(run, len(log) + 1, ev.RUN_FAILED, end, None, None, None, {"failures": failures})
        return [*log, replace(ended, correlation=correlation)], "failed"
    ended = _event(run, len(log) + 1, ev.RUN_SUCCEEDED, end, None, None, None, {"result": results})
    return [*log, replace(ended, correlation=correlation)], "succeeded"


def _attempt(
    run: str, seq: int, node: str, attempt: int, command: str, at: datetime, arg: int, *, ok: bool
) -> list[Event]:
    dispatched = {"args": [arg], "kwargs": {}, "deadline": None, "key": f"{run}/{node}", "route": None}
    started = {"started_at": at, "by": WORKER}
    if ok:
        kind, outcome = ev.COMMAND_SUCCEEDED, {"result": arg, "duration_s": 0.0005 + arg / 10_000}
    else:
        error = {"type": "builtins.ValueError", "message": "declined", "reason": "raised"}
        kind, outcome = ev.COMMAND_FAILED, {"error": error}
    return [
        _event(run, seq + 1, ev.COMMAND_DISPATCHED, at, node, attempt, command, dispatched),
        _event(run, seq + 2, ev.COMMAND_STARTED, at, node, attempt, command, started),
        _event(run, seq + 3, kind, at, node, attempt, command, outcome),
    ]


def _event(
    run: str, seq: int, kind: str, at: datetime, node: str | None, attempt: int | None, command: str | None,
    data: dict[str, object],
) -> Event:  # fmt: skip
    return Event(run, seq, kind, at, node=node, attempt=attempt, command=command, data=data, by=BY,
                 causation=f"{run}/{seq - 1:010d}" if seq > 1 else None, correlation=run)  # fmt: skip


def summary(plan: list[Planned]) -> dict[str, object]:
    """What ``bench/history.py`` needs of a plan: its size, and runs to read (kept small: see ``timed``)."""
    chained = next((p.correlation for p in plan if p.run != p.correlation), plan[0].run)
    return {"events": sum(p.events for p in plan), "runs": len(plan), "middle": plan[len(plan) // 2].run,
            "chained": chained}  # fmt: skip


if __name__ == "__main__":  # python -m bench.history_build HOME EVENTS: build, and write HOME/plan.json
    target = Path(sys.argv[1])
    (target / "plan.json").write_text(json.dumps(summary(build(target, int(sys.argv[2])))))
