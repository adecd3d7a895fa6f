"""Support for the read-model tests: where they run (mongomock, or a real server) and their logs.

``runs_backend`` is a fixture parametrised over ``mongomock`` and ``mongodb``;
the second is the server lane's case (``tests/support/stores.py``): it runs when
``EVENFLOW_TEST_MONGODB_URL`` names a server, in a database of its own dropped
afterwards, and is skipped otherwise. Logs come
from real flows (``random_flow``) run by an ``Orchestrator`` with the inline
executor: seeded, so a failure names its seed.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from orchestrator import Orchestrator, RetryPolicy, RunFailed, call, chord, each, parallel, sequence
from orchestrator.core.events import Event
from orchestrator.core.flows import Node
from orchestrator.store.faithful_mock import client
from orchestrator.store.mongo import MongoStore
from projections.run_status import RunStatus
from tests.commands import make_registry
from tests.support.stores import SERVER, server_database

IMMEDIATE = RetryPolicy(max_attempts=3, initial_delay=timedelta(0), jitter=0)
FLOW_NAMES = ("billing", "shipping", None)


@dataclass
class Backend:
    """Where one test runs: a database, for event stores of orchestrators and for hand-made collections."""

    kind: str
    database: Any

    def store(self) -> MongoStore:
        """An event store on ``events`` of this backend's database (fresh on mongomock)."""
        return MongoStore(self.database["events"], write_concern=None)

    def orchestrator(self, **options: Any) -> Orchestrator:
        return Orchestrator(make_registry(), executor="inline", store=self.store(), **options)


@pytest.fixture(params=["mongomock", SERVER])
def runs_backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "mongomock":
        yield Backend("mongomock", client()["evenflow"])
        return
    with server_database("evenflow_runs") as database:
        yield Backend("mongodb", database)


# --- logs from real flows ------------------------------------------------------------------


def random_call(rng: random.Random) -> Node:
    """A call that succeeds, fails, fails then succeeds on retry, or expands into a flow."""
    pick = rng.randrange(7)
    if pick == 0:
        return call("flaky", failures=rng.randint(1, 3)).options(retry=IMMEDIATE)
    if pick == 1:
        return call("raise_value_error", "planned").si()
    if pick == 2:
        return call("returns_flow", rng.randint(1, 3)).si()
    if pick == 3:
        return call("returns_set").si()  # its result cannot be logged: a PayloadError
    return call("describe", rng.randint(0, 9))


def random_flow(rng: random.Random, depth: int = 0) -> Node:
    if depth >= 2 or rng.random() < 0.35:
        return random_call(rng)
    children = [random_flow(rng, depth + 1) for _ in range(rng.randint(1, 3))]
    siblings = rng.choice(["finish", "cancel"])
    shape = rng.randrange(4)
    if shape == 0:
        return sequence(*children)
    if shape == 1:
        return parallel(*children, siblings=siblings)
    if shape == 2:
        return chord(children, call("describe"), siblings=siblings)
    return sequence(call("noop", list(range(rng.randint(0, 3)))).si(), each("square", siblings=siblings))


def run_random_flows(orch: Orchestrator, seed: int, count: int) -> list[str]:
    """Submit ``count`` random flows (all at once, so batches mix runs) and wait for each."""
    rng = random.Random(seed)
    runs = [orch.submit(random_flow(rng), name=rng.choice(FLOW_NAMES)).id for _ in range(count)]
    for run in runs:
        with contextlib.suppress(RunFailed):
            orch.result(run, timeout=60)
    return runs


def mixed_batches(logs: dict[str, list[Event]], rng: random.Random) -> list[list[Event]]:
    """The runs' events cut into batches as an engine makes them: several runs each, each in order."""
    pending = {run: list(events) for run, events in logs.items()}
    batches: list[list[Event]] = []
    while pending:
        batch: list[Event] = []
        for run in rng.sample(sorted(pending), k=rng.randint(1, len(pending))):
            take = rng.randint(1, 6)
            batch += pending[run][:take]
            pending[run] = pending[run][take:]
            if not pending[run]:
                del pending[run]
        batches.append(batch)
    return batches


def statuses(collection: Any) -> dict[str, RunStatus]:
    return {doc["_id"]: RunStatus.from_doc(doc) for doc in collection.find({})}


def index_names_used(collection: Any, pipeline: list[dict[str, Any]]) -> set[str]:
    """The names of the indexes a server's query plan for ``pipeline`` scans (explain, planner only)."""
    plan = collection.database.command(
        "explain",
        {"aggregate": collection.name, "pipeline": pipeline, "cursor": {}},
        verbosity="queryPlanner",
    )
    names: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("indexName"), str):
                names.add(node["indexName"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(plan)
    return names
