"""The ``runs`` read model follows the log on a thread of its own: the engine never waits for it.

A runs collection whose writes block (as a slow or stalled server's would)
must not hold back runs: they finish while every write waits. Once writes go
through, the read model holds every run, the same as a rebuild from the log.
"""

from __future__ import annotations

import threading
from typing import Any

from orchestrator import Orchestrator, call, sequence
from projections.read_models import rebuild_runs
from tests.commands import make_registry
from tests.support.polling import wait_until

DEADLINE_S = 60.0


class StalledRuns:
    """Wraps a runs collection; each ``bulk_write`` waits for ``gate`` (bounded) before it goes through."""

    def __init__(self, inner: Any, gate: threading.Event) -> None:
        self.inner = inner
        self.gate = gate
        self.waiting = 0

    def bulk_write(self, requests: Any, ordered: bool = True) -> Any:
        self.waiting += 1
        assert self.gate.wait(DEADLINE_S), "the test never opened the gate"
        return self.inner.bulk_write(requests, ordered=ordered)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_runs_finish_while_the_read_model_cannot_write_and_it_catches_up_after() -> None:
    gate = threading.Event()
    with Orchestrator(make_registry(), executor="threads://2", store="mongomock://") as orch:
        assert orch.read_models is not None
        real = orch.read_models.runs
        stalled = StalledRuns(real, gate)
        orch.read_models.runs = stalled
        try:
            results = [
                orch.run(sequence(call("inc", i), call("square")), timeout=DEADLINE_S) for i in range(5)
            ]
            wait_until(lambda: stalled.waiting >= 1, timeout=DEADLINE_S, what="the read model blocked")
            stuck = list(real.find({}))
        finally:
            gate.set()
        assert orch.runs_collection is stalled
        lag = orch.read_model_lag
        held = {doc["_id"]: doc["state"] for doc in real.find({})}
        rebuilt = orch.store.database["rebuilt"]
        rebuild_runs(orch.store.events, rebuilt)
        expected = {doc["_id"]: doc["state"] for doc in rebuilt.find({})}
    assert results == [(i + 1) ** 2 for i in range(5)]
    assert stuck == []  # every run finished before the read model wrote anything
    assert held == expected and set(held.values()) == {"succeeded"} and len(held) == 5
    assert lag.batches >= 5 and lag.writes >= 1 and lag.max_s >= lag.last_s >= 0.0
