"""Run W1-W5 on evenflow's executors and stores, and on a raw process pool, and print a table.

.venv/bin/python bench/run.py [--executors inline,threads,processes] [--stores embedded,mongomock]
                              [--remote zmq,celery,evenflow-celery]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

if not __package__:  # `python bench/run.py`: import as the package it belongs to (PEP 366), as -m does
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    __package__ = "bench"

from orchestrator import Orchestrator

from .remote import measure
from .workloads import W1_N, W3_N, Results, evenflow, raw_pool, registry

EXECUTORS = {"inline": "inline", "threads": "threads://2", "processes": "processes://2"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--executors", default="inline,threads,processes")
    parser.add_argument("--stores", default="embedded,mongomock")
    parser.add_argument("--remote", default="zmq,celery,evenflow-celery", help="systems across processes")
    args = parser.parse_args()
    rows: list[tuple[str, Results]] = []
    with ProcessPoolExecutor(2) as pool:
        pool.submit(int).result()  # start the workers before timing
        rows.append(("raw ProcessPoolExecutor(2), no log", raw_pool(pool)))
    for store in args.stores.split(","):
        for name in args.executors.split(","):
            rows.append((f"evenflow {name} / {store}", _measure(EXECUTORS[name], store)))
    remote = measure([name for name in args.remote.split(",") if name])
    _print(rows + remote)
    _compare(remote)


def _measure(executor: str, store: str) -> Results:
    with tempfile.TemporaryDirectory(prefix="evenflow-bench-") as home:
        url = None if store == "embedded" else f"{store}://"
        with Orchestrator(registry(), executor=executor, store=url, home=home) as orch:
            orch.run(__import__("orchestrator").call("noop", 0))  # warm up pools and imports
            return evenflow(orch)


def _print(rows: list[tuple[str, Results]]) -> None:
    header = f"{'system':44} {'W1 s':>7} {'W1 cmd/s':>9} {'W2 s':>7} {'W3 s':>7} {'W3 cmd/s':>9} {'W4 s':>7} "
    print(header + f"{'W5 p50 ms':>10} {'W5 p99 ms':>10}")
    raw = rows[0][1]
    for name, r in rows:
        s = r.seconds
        print(
            f"{name:44} {s['W1']:7.3f} {W1_N / s['W1']:9.0f} {s['W2']:7.3f} {s['W3']:7.3f} "
            f"{(W3_N + 1) / s['W3']:9.0f} {s['W4']:7.3f} {r.p50:10.3f} {r.p99:10.3f}"
        )
    print()
    for name, r in rows[1:]:
        if "processes" in name:
            w1 = raw.seconds["W1"] / r.seconds["W1"] * 100
            w3 = raw.seconds["W3"] / r.seconds["W3"] * 100
            print(f"{name}: W1 {w1:.0f}% and W3 {w3:.0f}% of the raw pool's throughput, "
                  f"W5 p50 {r.p50 / raw.p50:.1f}x the raw pool's")  # fmt: skip


def _compare(rows: list[tuple[str, Results]]) -> None:
    """The issue's targets: zmq >= 5x Celery's throughput on W1 and W3, W5 p50 <= a third of Celery's."""
    found = dict(rows)
    zmq = next((r for name, r in found.items() if "zmq" in name), None)
    celery = next((r for name, r in found.items() if name.startswith("Celery")), None)
    if zmq is None or celery is None:
        return
    w1 = celery.seconds["W1"] / zmq.seconds["W1"]
    w3 = celery.seconds["W3"] / zmq.seconds["W3"]
    print(f"evenflow zmq vs Celery: W1 {w1:.1f}x and W3 {w3:.1f}x Celery's throughput, "
          f"W5 p50 {zmq.p50 / celery.p50:.2f} of Celery's")  # fmt: skip


if __name__ == "__main__":
    main()
