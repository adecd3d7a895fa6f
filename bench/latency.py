"""Where one W5 round trip's time goes: a single call, start to the caller waking, in µs.

    .venv/bin/python -m bench.latency [--executor processes://2|zmq] [--store embedded|mongomock]
                                      [--calls 1000] [--json FILE]

Each call is ``orch.run(call("noop", i))``. Wrappers on the store's ``append``,
the executor's ``dispatch`` and its report callback stamp the moments between;
the command's own ``started_at``/``finished_at`` (wall clock, shared with the
child on this host) place the execution. Medians per segment over ``--calls``
calls, after a warm-up; the segments add up to the median call only roughly
(a median of sums is not the sum of medians). Calls whose moments do not come in
the expected order (a timer fired between, say) are counted and left out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from orchestrator import Orchestrator, call

from .workloads import registry

READY_S = 60.0
"""How long the zmq workers may take to connect."""

SEGMENTS = (
    ("submit", "caller → the engine starts the first append", "t0", "append1_start"),
    ("append", "run.submitted + command.dispatched made durable", "append1_start", "append1_end"),
    ("dispatch", "durable → envelope handed to the executor", "append1_end", "dispatch_start"),
    ("send", "executor.dispatch() call", "dispatch_start", "dispatch_end"),
    ("transport", "handed over → the command starts in the worker", "dispatch_end", "started"),
    ("execute", "the command runs", "started", "finished"),
    ("outcome", "the command ends → its outcome reaches the engine's inbox", "finished", "reported"),
    ("fold", "inbox → the engine starts the second append", "reported", "append2_start"),
    ("append", "command.succeeded + run.succeeded made durable", "append2_start", "append2_end"),
    ("wake", "durable → the caller returns", "append2_end", "t1"),
)


class Stamps:
    """Moments of one call, from whichever thread reaches them."""

    def __init__(self) -> None:
        self.moments: dict[str, float] = {}
        self.appends: list[tuple[float, float]] = []

    def wrap_append(self, append: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.time()
            try:
                return append(*args, **kwargs)
            finally:
                self.appends.append((start, time.time()))

        return timed

    def wrap_dispatch(self, dispatch: Callable[..., Any]) -> Callable[..., Any]:
        def timed(envelopes: Any) -> Any:
            self.moments.setdefault("dispatch_start", time.time())
            try:
                return dispatch(envelopes)
            finally:
                self.moments.setdefault("dispatch_end", time.time())

        return timed

    def wrap_report(self, report: Callable[..., Any]) -> Callable[..., Any]:
        def timed(outcome: Any) -> Any:
            self.moments.setdefault("reported", time.time())
            if outcome.started_at is not None and outcome.finished_at is not None:
                self.moments.setdefault("started", outcome.started_at.timestamp())
                self.moments.setdefault("finished", outcome.finished_at.timestamp())
            return report(outcome)

        return timed

    def segments(self) -> dict[str, float] | None:
        """This call's segments in µs, or None when its moments are not the expected ones."""
        if len(self.appends) != 2:
            return None
        moments = dict(self.moments)
        (
            (moments["append1_start"], moments["append1_end"]),
            (
                moments["append2_start"],
                moments["append2_end"],
            ),
        ) = self.appends
        if any(name not in moments for _, _, a, b in SEGMENTS for name in (a, b)):
            return None
        found: dict[str, float] = {}
        for index, (name, _, a, b) in enumerate(SEGMENTS):
            found[f"{index}:{name}"] = (moments[b] - moments[a]) * 1e6
        return found


def measure(executor: str, store: str, calls: int) -> tuple[list[dict[str, float]], list[float], int]:
    with tempfile.TemporaryDirectory(prefix="evenflow-latency-") as home, ExitStack() as stack:
        url = None if store == "embedded" else f"{store}://"
        chosen: Any = _zmq(stack, home) if executor == "zmq" else executor
        with Orchestrator(registry(), executor=chosen, store=url, home=home) as orch:
            if executor == "zmq":
                from tests.support.zmq_cluster import wait_for_workers

                wait_for_workers(chosen, 2, READY_S)
            for i in range(50):
                orch.run(call("noop", i))
            return _calls(orch, calls)


def _zmq(stack: ExitStack, home: str) -> Any:
    """The zmq executor with two ``evenflow worker`` processes of one slot each, as ``bench.remote``."""
    from tests.support.zmq_cluster import worker
    from workers.zmq import ZmqExecutor

    executor = ZmqExecutor("tcp://127.0.0.1:0")
    for _ in range(2):
        stack.enter_context(worker(executor.endpoint, Path(home), registry="bench.workloads:registry"))
    return executor


def _calls(orch: Orchestrator, calls: int) -> tuple[list[dict[str, float]], list[float], int]:
    engine = orch.engine
    store, (worker,) = engine.store, list(engine.executors.values())
    append, dispatch, report = store.append, worker.dispatch, worker._report  # type: ignore[attr-defined]
    rows: list[dict[str, float]] = []
    totals: list[float] = []
    skipped = 0
    try:
        for i in range(calls):
            stamps = Stamps()
            store.append = stamps.wrap_append(append)  # type: ignore[method-assign]
            worker.dispatch = stamps.wrap_dispatch(dispatch)  # type: ignore[method-assign]
            worker._report = stamps.wrap_report(report)  # type: ignore[attr-defined]
            stamps.moments["t0"] = time.time()
            orch.run(call("noop", i))
            stamps.moments["t1"] = time.time()
            totals.append((stamps.moments["t1"] - stamps.moments["t0"]) * 1e6)
            found = stamps.segments()
            skipped += found is None
            if found is not None:
                rows.append(found)
    finally:
        store.append, worker.dispatch = append, dispatch  # type: ignore[method-assign]
        worker._report = report  # type: ignore[attr-defined]
    return rows, totals, skipped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument(
        "--executor", default="processes://2", help="an executor URL, or zmq: two `evenflow worker` processes"
    )
    parser.add_argument("--store", default="embedded", choices=("embedded", "mongomock"))
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    rows, totals, skipped = measure(args.executor, args.store, args.calls)
    medians = {key: statistics.median(row[key] for row in rows) for key in rows[0]} if rows else {}
    print(f"W5 round trip, {args.executor} on {args.store}: {len(rows)} calls ({skipped} left out)")
    for key, (name, what, _, _) in zip(medians, SEGMENTS, strict=True):
        print(f"  {name:10} {medians[key]:8.0f} µs  {what}")
    print(f"  {'call':10} {statistics.median(totals):8.0f} µs  median of whole calls (p50)")
    if args.json:
        figures = {"segments_us": medians, "call_p50_us": statistics.median(totals), "calls": len(rows)}
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump({"executor": args.executor, "store": args.store, **figures}, out, indent=2)


if __name__ == "__main__":
    main()
