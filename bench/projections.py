"""Time every projection and the read-model rebuild on a log of about 100,000 events.

    .venv/bin/python -m bench.projections [--runs 1000] [--commands 30]

The log is made by really running 1,000 flows of 30 commands (one in ten fails
once and is retried) through the engine into the in-process ``mongomock://``
store, so the documents are exactly what evenflow writes.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from orchestrator import Orchestrator, Registry, RetryPolicy, call, parallel
from orchestrator.core.context import current_call
from projections import (
    audit_trail,
    command_stats,
    failures,
    rebuild_runs,
    run_history,
    run_status,
    throughput,
    worker_activity,
)
from projections.read_models import runs_beside

RETRY_AT_ONCE = RetryPolicy(max_attempts=2, initial_delay=timedelta(0), jitter=0)


def work(i: int) -> int:
    return i


def flaky(i: int) -> int:
    context = current_call()
    if context is not None and context.attempt == 1:
        raise ConnectionError(f"item {i} failed once")
    return i


def build_log(runs: int, commands: int) -> tuple[Orchestrator, list[str]]:
    registry = Registry()
    registry.register("work", work)
    registry.register("flaky", flaky)
    orch = Orchestrator(registry, executor="inline", store="mongomock://", read_models=False).start()
    flows = [
        parallel(
            [
                call("flaky" if i % 10 == 0 else "work", i).options(retry=RETRY_AT_ONCE)
                for i in range(commands)
            ]
        )
        for _ in range(runs)
    ]
    handles = [orch.submit(flow, name=f"batch-{n % 10}") for n, flow in enumerate(flows)]
    for handle in handles:
        handle.result(timeout=600)
    return orch, [handle.id for handle in handles]


def timed(label: str, work: Callable[[], Any], repeat: int = 1) -> tuple[str, float, Any]:
    seconds, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = work()
        seconds.append(time.perf_counter() - start)
    return label, statistics.median(seconds), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--commands", type=int, default=30)
    args = parser.parse_args()
    start = time.perf_counter()
    orch, ids = build_log(args.runs, args.commands)
    events = orch.store.events  # type: ignore[attr-defined]
    runs = runs_beside(events)
    built = time.perf_counter() - start
    print(f"log: {events.count_documents({}):,} events, {len(ids):,} runs, built in {built:.1f}s\n")
    rows = [
        timed("read-model rebuild (pipeline)", lambda: rebuild_runs(events, runs)),
        timed("read-model rebuild (log through reducer)", lambda: _replay(events)),
        timed("run status (one run, pipeline)", lambda: run_status(events, ids[len(ids) // 2]), repeat=5),
        timed("run history (first page of 50)", lambda: run_history(runs, limit=50), repeat=5),
        timed("run history (flow filter, page 2)", lambda: _second_page(runs), repeat=5),
        timed("audit trail (one run)", lambda: audit_trail(events, ids[len(ids) // 2]), repeat=5),
        timed("command stats (whole log)", lambda: command_stats(events)),
        timed("failures by type and command", lambda: failures(events)),
        timed("throughput (1 s buckets)", lambda: _throughput(events)),
        timed("worker activity", lambda: worker_activity(events)),
    ]
    print(f"{'projection':40} {'seconds':>9}")
    for label, seconds, _ in rows:
        print(f"{label:40} {seconds:9.3f}")
    orch.close()


def _replay(events: Any) -> Any:
    """What the CLI does on the embedded store: the log, in order, through the engine's reducer."""
    from orchestrator.store.encoding import decode
    from orchestrator.store.faithful_mock import client
    from projections import RunsProjector

    log = sorted((decode(doc) for doc in events.aggregate([{"$match": {}}])), key=lambda e: (e.run, e.seq))
    projector = RunsProjector.in_memory(client()["evenflow"]["runs"])
    projector.apply(log)
    return projector.runs


def _second_page(runs: Any) -> Any:
    first = run_history(runs, flow="batch-3", limit=20)
    return run_history(runs, flow="batch-3", limit=20, after=first.next)


def _throughput(events: Any) -> Any:
    from datetime import UTC, datetime

    return throughput(
        events, datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC), timedelta(seconds=1)
    )


if __name__ == "__main__":
    main()
