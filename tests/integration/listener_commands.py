"""Commands and listeners of ``test_listeners.py``, at module level so a child process can import them.

``process=True`` listeners are pickled by reference into a spawned process, so
they (and every command a triggered flow names) live here rather than in the
test module.
"""

from __future__ import annotations

import os
from typing import Any

from orchestrator.core.context import current_call, emit
from orchestrator.core.events import Event
from orchestrator.core.flows import Node, call
from orchestrator.core.registry import Registry
from tests.commands import async_emits, emits, gate

ORDER_PLACED = "order.placed"
PING = "ping"


# --- commands -------------------------------------------------------------------------------


def place_order(order_id: int) -> int:
    emit(ORDER_PLACED, {"id": order_id})
    return order_id


def tries(failures: int) -> int:
    """Emit ``work.tried`` naming the attempt, then fail the first ``failures`` attempts."""
    context = current_call()
    assert context is not None
    emit("work.tried", {"attempt": context.attempt})
    if context.attempt <= failures:
        raise ConnectionError(f"attempt {context.attempt} fails on purpose")
    return context.attempt


def emits_then_waits(gate_name: str) -> str:
    """Emit ``work.late``, then block until the test opens ``gate(gate_name)`` (bounded)."""
    emit("work.late", {"gate": gate_name})
    gate(gate_name).wait(30)
    return "finished late"


def mark(marker: str) -> str:
    """Emit ``order.marked`` carrying a path the listener below uses as a once-only flag."""
    emit("order.marked", {"marker": marker})
    return marker


def ping(n: int) -> int:
    emit(PING, {"n": n})
    return n


def record(*values: Any) -> list[Any]:
    return list(values)


def fail(message: str = "the command failed") -> None:
    raise ValueError(message)


def make_registry() -> Registry:
    registry = Registry()
    for fn in (place_order, emits, async_emits, tries, emits_then_waits, mark, ping, record, fail):
        registry.register(fn.__name__, fn)
    return registry


# --- listeners ------------------------------------------------------------------------------


def answer_in_child(event: Event) -> Node:
    """A ``process=True`` listener: its answer names the process it ran in."""
    return call("record", event.data["id"], os.getpid())


def die_once_in_child(event: Event) -> Node:
    """A ``process=True`` listener whose process dies the first time (creating the marker), then answers."""
    marker = event.data["marker"]
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return call("record", "answered after a crash", os.getpid())
    os._exit(1)


def die_on_odd_in_child(event: Event) -> Node:
    """A ``process=True`` listener whose process dies on every odd order: a poison event for it."""
    if int(event.data["id"]) % 2:
        os._exit(1)
    return call("record", event.data["id"], os.getpid())


def only_even(event: Event) -> bool:
    return int(event.data["id"]) % 2 == 0


def answer_ping(event: Event) -> Node:
    """Answer ``ping`` with a command that pings again: a cascade without end."""
    return call("ping", int(event.data["n"]) + 1)


def answer_order(event: Event) -> Node:
    return call("record", "receipt", event.data["id"])


def answer_tick(event: Event) -> Node:
    """Answer each ``tick.*`` event with ``inc`` of its index (a ``process=True`` listener)."""
    return call("inc", event.data["index"])
