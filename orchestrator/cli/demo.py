"""The demo flow of ``evenflow demo``: plain functions, no evenflow imports needed.

It shows a sequence, a map over a list made at run time (``each``), a chord
(a parallel header, then one callback with the list) and a retry: ``charge``
fails its first attempt the way a flaky payment service would.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from ..core.context import current_call
from ..core.flows import Node, call, chord, each, sequence
from ..core.policy import RetryPolicy
from ..core.registry import Registry

ORDERS = {42: {"id": 42, "email": "ada@example.com", "items": [3, 5, 8]}}
PRICES = {3: 30, 5: 50, 8: 80}


def load_order(order_id: int) -> dict[str, Any]:
    return ORDERS[order_id]


def item_ids(order: dict[str, Any]) -> list[int]:
    return list(order["items"])


def price(item: int) -> int:
    return PRICES[item]


def shipping(prices: list[int]) -> int:
    return 0 if sum(prices) >= 200 else 5


def charge(amount: int) -> str:
    context = current_call()
    if context is not None and context.attempt == 1:
        raise ConnectionError("payment service timed out")
    return f"charged {amount}"


REGISTRY = "orchestrator.cli.demo:registry"
"""How ``evenflow resume --registry`` names the demo's commands."""


def registry() -> Registry:
    commands = Registry()
    for fn in (load_order, item_ids, price, shipping, charge):
        commands.register(fn.__name__, fn)
    commands.register("total", sum)
    return commands


def flow() -> Node:
    quick_retry = RetryPolicy(max_attempts=3, initial_delay=timedelta(milliseconds=200))
    return sequence(
        call("load_order", 42),  # {"id": 42, "items": [3, 5, 8], ...}
        call("item_ids"),  # [3, 5, 8]
        each("price"),  # [30, 50, 80]
        chord([call("total"), call("shipping")], call("total")),  # total([160, 5]) -> 165
        call("charge").options(retry=quick_retry),  # fails once, then "charged 165"
    )
