"""Workloads W1-W5 (DESIGN.md), the same semantics for every system measured."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future, as_completed
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

from orchestrator import Registry, RetryPolicy, call, chord, parallel, sequence

from . import commands

W1_N, W2_N, W3_N, W4_N, W5_N = 2000, 200, 500, 200, 200
COMMANDS = {"W1": W1_N, "W3": W3_N + 1}  # commands per run of the throughput workloads
CHUNKSIZE = 64
IMMEDIATE_RETRY = RetryPolicy(max_attempts=3, initial_delay=timedelta(0), jitter=0)


class Runs(Protocol):
    """What the workloads drive: an ``Orchestrator``, or a ``Client`` of ``evenflow serve``."""

    def run(self, flow: Any) -> Any: ...


@dataclass
class Results:
    seconds: dict[str, float] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies_ms)

    @property
    def p99(self) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]

    def figures(self) -> dict[str, float]:
        """Seconds per workload and W5 in milliseconds, flat, as ``bench.report`` keeps them."""
        latency = {"W5 p50": self.p50, "W5 p99": self.p99} if self.latencies_ms else {}
        return {**self.seconds, **latency}


def registry() -> Registry:
    commands_ = Registry()
    for fn in (
        commands.noop,
        commands.inc,
        commands.square,
        commands.total,
        commands.fail_twice,
        commands.pid,
    ):
        commands_.register(fn.__name__, fn)
    return commands_


def timed(results: Results, name: str, work: Callable[[], Any], expected: Any) -> None:
    start = time.perf_counter()
    got = work()
    results.seconds[name] = time.perf_counter() - start
    if got != expected:
        raise AssertionError(f"{name} returned {str(got)[:80]}, expected {str(expected)[:80]}")


def evenflow(orch: Runs) -> Results:
    results = Results()
    timed(
        results, "W1", lambda: orch.run(parallel([call("noop", i) for i in range(W1_N)])), list(range(W1_N))
    )
    chain = sequence(call("inc", 0), *[call("inc") for _ in range(W2_N - 1)])
    timed(results, "W2", lambda: orch.run(chain), W2_N)
    squares = chord([call("square", i) for i in range(W3_N)], call("total"))
    timed(results, "W3", lambda: orch.run(squares), sum(i * i for i in range(W3_N)))
    retries = parallel([call("fail_twice", i).options(retry=IMMEDIATE_RETRY) for i in range(W4_N)])
    timed(results, "W4", lambda: orch.run(retries), list(range(W4_N)))
    for i in range(W5_N):
        start = time.perf_counter()
        orch.run(call("noop", i))
        results.latencies_ms.append((time.perf_counter() - start) * 1000)
    return results


def raw_pool(pool: Executor) -> Results:
    """The same workloads on a bare concurrent.futures pool, one ``submit`` per item: no log, no retries."""
    results = Results()
    timed(results, "W1", lambda: [f.result() for f in [pool.submit(commands.noop, i) for i in range(W1_N)]],
          list(range(W1_N)))  # fmt: skip
    timed(results, "W2", lambda: _chain(pool), W2_N)
    timed(results, "W3", lambda: _chord(pool), sum(i * i for i in range(W3_N)))
    timed(results, "W4", lambda: _retries(pool), list(range(W4_N)))
    for i in range(W5_N):
        start = time.perf_counter()
        pool.submit(commands.noop, i).result()
        results.latencies_ms.append((time.perf_counter() - start) * 1000)
    return results


def raw_pool_chunked(pool: Executor) -> Results:
    """W1 and W3 as a pool user batches a fan-out: ``map`` in chunks of 64, one message per chunk.

    W2 (a chain), W4 (retries decided per attempt) and W5 (one round trip at a time) have
    nothing to batch, so this row leaves them out; the per-item row has them.
    """
    results = Results()
    timed(results, "W1", lambda: list(pool.map(commands.noop, range(W1_N), chunksize=CHUNKSIZE)),
          list(range(W1_N)))  # fmt: skip
    timed(results, "W3", lambda: _chord_chunked(pool), sum(i * i for i in range(W3_N)))
    return results


def _chord_chunked(pool: Executor) -> int:
    squares = list(pool.map(commands.square, range(W3_N), chunksize=CHUNKSIZE))
    return pool.submit(commands.total, squares).result()


def _chain(pool: Executor) -> int:
    value = 0
    for _ in range(W2_N):
        value = pool.submit(commands.inc, value).result()
    return value


def _chord(pool: Executor) -> int:
    squares = [f.result() for f in [pool.submit(commands.square, i) for i in range(W3_N)]]
    return pool.submit(commands.total, squares).result()


def _retries(pool: Executor) -> list[int]:
    attempts: dict[Future[int], tuple[int, int]] = {
        pool.submit(commands.fail_twice_raw, i, 1): (i, 1) for i in range(W4_N)
    }
    done: dict[int, int] = {}
    while attempts:
        for future in as_completed(list(attempts)):
            i, attempt = attempts.pop(future)
            if future.exception() is None:
                done[i] = future.result()
            else:
                attempts[pool.submit(commands.fail_twice_raw, i, attempt + 1)] = (i, attempt + 1)
    return [done[i] for i in range(W4_N)]
