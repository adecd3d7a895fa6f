"""A home of real runs for the export/import tests, made by the engine itself (not a generator).

Runs of flow ``orders``: successes whose results hold the values JSON lacks
(bytes, a datetime, NaN and infinities) and a command's own event; one whose
call fails once and succeeds when retried; one that fails for good after its
retries. A listener answers each successful ``orders`` run by hand with a run of
flow ``receipts`` in the same chain, so audits have chains to follow.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from orchestrator import Orchestrator, Registry, RetryPolicy, RunFailed, call, parallel, sequence
from orchestrator.core.context import emit
from orchestrator.core.events import Event
from orchestrator.core.run_query import RunQuery
from orchestrator.store import abilities
from tests.support.polling import wait_until

QUICK = RetryPolicy(max_attempts=2, initial_delay=timedelta(milliseconds=1), jitter=0.0)
ORDERS = 4


@dataclass(frozen=True, slots=True)
class Home:
    path: Path
    orders: list[str]
    """The ``orders`` runs, in submission order, keyed ``order-N``: the last one failed, the one before
    it was retried."""
    runs: int
    """Every run in the home, the listener's ``receipts`` runs too."""


def _registry() -> Registry:
    tried: dict[int, int] = {}

    def price(order: int) -> dict[str, Any]:
        emit("order.priced", {"order": order, "raw": bytes([order, 0, 255])})
        when = datetime(2026, 3, 1, 12, 0, 0, 123000, tzinfo=UTC)
        return {"order": order, "raw": b"\x00\xff", "when": when, "ratio": math.nan, "top": math.inf}

    def charge(priced: Any, fails: int) -> int:
        order = priced[0]["order"] if isinstance(priced, list) else priced["order"]
        tried[order] = tried.get(order, 0) + 1
        if tried[order] <= fails:
            raise ValueError(f"card declined for order {order}")
        return order * 100

    def receipt(order: int) -> str:
        return f"receipt {order}"

    registry = Registry()
    for fn in (price, charge, receipt):
        registry.register(fn.__name__, fn)
    return registry


def _order(order: int, fails: int) -> Any:
    priced = parallel(call("price", order), call("price", order + 1))
    return sequence(priced, call("charge", fails=fails).options(retry=QUICK))


def build(path: Path) -> Home:
    """Fill ``path`` with ``ORDERS`` runs of ``orders`` and the listener's answers; wait until all ended."""
    orders: list[str] = []
    with Orchestrator(_registry(), executor="inline", home=path) as orch:
        orch.listen(
            "run.succeeded",
            lambda event: call("receipt", 1),
            name="receipts",
            predicate=lambda event: event.run == event.correlation,
        )
        for order in range(ORDERS):
            fails = {ORDERS - 2: 1, ORDERS - 1: 5}.get(order, 0)  # one retried, one failing for good
            run = orch.submit(_order(order, fails), name="orders", key=f"order-{order}")
            orders.append(run.id)
            with contextlib.suppress(RunFailed):
                run.result(60)
        history = abilities(orch.store).history
        assert history is not None
        every = ORDERS + ORDERS - 1  # each success is answered by one receipts run

        def settled() -> bool:
            page = history.run_page(RunQuery(limit=100)) or []
            return len(page) == every and not orch.store.unfinished_runs()

        wait_until(settled, what="every run and every listener's answer to end")
    return Home(path, orders, every)


def all_events(store: Any) -> list[Event]:
    """Every event of an embedded store, in journal order (for comparisons in tests)."""
    return list(abilities(store).scan.scan())  # type: ignore[union-attr]
