"""What an orchestrator's start costs as the history grows: open + start, and ``unfinished_runs``.

    .venv/bin/python -m bench.startup [--store mongomock] [--finished 2000] [--open 10] [--rounds 5]

The history is made by really running ``--finished`` one-call flows through the
engine (so the documents are what evenflow writes), plus ``--open`` runs left
unfinished by an orchestrator that stops while their command waits for a gate.
Then a new orchestrator is opened and started on the same store ``--rounds``
times (each takes the open runs over and is closed before they finish); the
medians are printed. Start-up should cost O(open runs), not O(history).
Building is slow on mongomock (no indexes: 2,000 runs take minutes here).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from typing import Any

from orchestrator import Orchestrator, Registry, call
from orchestrator.store import open_store

GATE = threading.Event()
"""Never set: the open runs' command waits on it until its orchestrator closes."""


def noop(i: int) -> int:
    return i


def held() -> None:
    GATE.wait(1.0)  # bounded: an orchestrator closing waits for it at most this long


def registry() -> Registry:
    registry = Registry()
    registry.register("noop", noop)
    registry.register("held", held)
    return registry


def build(store: Any, finished: int, unfinished: int) -> None:
    with Orchestrator(registry(), executor="threads://2", store=store, read_models=False) as orch:
        runs = [orch.submit(call("noop", i)) for i in range(finished)]
        for run in runs:
            run.result(600)
        for _ in range(unfinished):
            orch.submit(call("held"))


def measure(store: Any, rounds: int) -> dict[str, float]:
    starts, scans = [], []
    for _ in range(rounds):
        began = time.perf_counter()
        scan = store.unfinished_runs()
        scans.append(time.perf_counter() - began)
        began = time.perf_counter()
        orch = Orchestrator(registry(), executor="threads://2", store=store, read_models=False).start()
        starts.append(time.perf_counter() - began)
        orch.close()
        assert scan, "the open runs are unfinished"
    return {"unfinished_runs_s": statistics.median(scans), "open_start_s": statistics.median(starts)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", default="mongomock", choices=("mongomock", "embedded"))
    parser.add_argument("--finished", type=int, default=2_000)
    parser.add_argument("--open", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="evenflow-startup-") as home:
        url = "mongomock://" if args.store == "mongomock" else f"embedded://{home}"
        store = open_store(url)
        try:
            began = time.perf_counter()
            build(store, args.finished, args.open)
            built_s = time.perf_counter() - began
            figures = measure(store, args.rounds)
        finally:
            store.close()
    print(
        f"{args.store}: {args.finished} finished + {args.open} open runs (built in {built_s:.1f} s): "
        f"unfinished_runs {figures['unfinished_runs_s'] * 1000:.1f} ms, "
        f"open+start {figures['open_start_s'] * 1000:.1f} ms (median of {args.rounds})"
    )


if __name__ == "__main__":
    main()
