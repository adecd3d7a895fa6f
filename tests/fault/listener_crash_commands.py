"""Commands, listeners and the child-process entry point of ``test_listener_faults.py``.

The chain: ``place_order(i)`` emits ``order.placed``; the listener ``receipts``
answers it with ``send_receipt``, which emits ``receipt.sent``; the listener
``archive`` answers that with ``archive_order``, which emits nothing. So every
order ends as three runs, and every ``order.placed`` and ``receipt.sent``
event must cause exactly one run (L10).

Every command records its execution in the external ledger named by
``$EVENFLOW_TEST_LEDGER`` (when set) before doing anything else, so a test
counts real executions in whatever process they ran.

Child processes run ``main``:

    python -c "import sys; from tests.fault.listener_crash_commands import main; main(sys.argv[1:])" \
        owner HOME ORDERS STOP WORK_S PACED

``owner`` opens an orchestrator on the embedded store in HOME with both
listeners, prints ``started``, submits ORDERS orders under the keys
``order-<i>`` (a restart submits them again and gets the same runs), then
waits (bounded) for the file STOP and closes, printing ``stopped``. With PACED
``1`` it submits the next order only once the previous one's receipt run is
logged, so each ``order.placed`` is a trigger batch of its own and a crash
point armed ``@N`` is reached for any N up to ORDERS.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

from orchestrator.core.context import emit
from orchestrator.core.crashpoints import arm_from_environment
from orchestrator.core.events import Event
from orchestrator.core.flows import Node, call
from orchestrator.core.keys import run_for_key
from orchestrator.core.listening import Listener, on, trigger_key
from orchestrator.core.registry import Registry
from tests.commands import LEDGER_ENV, ledgered
from tests.support.polling import wait_until

ORDERS_LISTENER = "receipts"
RECEIPTS_LISTENER = "archive"
ORDER_PLACED = "order.placed"
RECEIPT_SENT = "receipt.sent"
CAUSES = {ORDER_PLACED: ORDERS_LISTENER, RECEIPT_SENT: RECEIPTS_LISTENER}
"""Which listener each causing event type belongs to."""
OWNER_S = 120.0
"""How long an owner waits for its stop file at most."""
PACE_S = 30.0
"""How long a paced owner waits for one order's receipt run at most."""


# --- commands -------------------------------------------------------------------------------


def _ledger() -> None:
    if os.environ.get(LEDGER_ENV):
        ledgered()


def _work(seconds: float) -> None:
    if seconds > 0:
        threading.Event().wait(seconds)  # stands for the command's own work, not a wait for a condition


def email_of(order_id: int) -> str:
    return f"customer-{order_id}@example.com"


def place_order(order_id: int, work_s: float = 0.0) -> int:
    _ledger()
    _work(work_s)
    emit(ORDER_PLACED, {"id": order_id, "email": email_of(order_id), "work_s": work_s})
    return order_id


def send_receipt(email: str, order_id: int, work_s: float = 0.0) -> str:
    _ledger()
    _work(work_s)
    emit(RECEIPT_SENT, {"id": order_id, "email": email, "work_s": work_s})
    return f"receipt to {email}"


def archive_order(order_id: int, work_s: float = 0.0) -> int:
    _ledger()
    _work(work_s)
    return order_id


def make_registry() -> Registry:
    registry = Registry()
    for fn in (place_order, send_receipt, archive_order):
        registry.register(fn.__name__, fn)
    return registry


def order_flow(order_id: int, work_s: float = 0.0) -> Node:
    return call("place_order", order_id, work_s)


def order_key(order_id: int) -> str:
    return f"order-{order_id}"


# --- listeners ------------------------------------------------------------------------------


def answer_order(event: Event) -> Node:
    data = event.data
    return call("send_receipt", data["email"], data["id"], data.get("work_s", 0.0))


def answer_receipt(event: Event) -> Node:
    return call("archive_order", event.data["id"], event.data.get("work_s", 0.0))


def listeners() -> list[Listener]:
    """The chain's two listeners, under fixed names (a restart resumes their checkpoints)."""
    return [
        on(ORDER_PLACED, answer_order, name=ORDERS_LISTENER, since="start"),
        on(RECEIPT_SENT, answer_receipt, name=RECEIPTS_LISTENER, since="start"),
    ]


def triggered_run(listener: str, event_id: str, index: int = 0) -> str:
    """The run id a listener's answer to an event lands on."""
    return run_for_key(trigger_key(listener, event_id, index))


# --- child processes ----------------------------------------------------------------------------


def owner(home: str, orders: str, stop: str, work_s: str, paced: str) -> int:
    from orchestrator import Orchestrator

    orch = Orchestrator(make_registry(), executor="threads://4", home=home).start()
    for listener in listeners():
        orch.listen(listener)
    print("started", flush=True)
    for i in range(int(orders)):
        run = orch.submit(order_flow(i, float(work_s)), key=order_key(i))
        print(i, run.id, flush=True)
        if paced == "1":
            receipt = _receipt_run(orch, run.id)
            if receipt is None:
                print(f"order {i}: no receipt run within {PACE_S}s", flush=True)
                return 4
    try:
        wait_until(lambda: os.path.exists(stop), timeout=OWNER_S, what="the stop file")
    except AssertionError:
        print(f"no stop file within {OWNER_S}s", flush=True)
        return 3
    orch.close()
    print("stopped", flush=True)
    return 0


def _receipt_run(orch: Any, order_run: str) -> str | None:
    """Until the order's ``order.placed`` is logged and its receipt run too (bounded); that run's id."""

    def receipt_run() -> str | None:
        placed = [event for event in orch.events(order_run) if event.type == ORDER_PLACED]
        if placed:
            receipt = triggered_run(ORDERS_LISTENER, placed[0].id)
            if orch.events(receipt):
                return receipt
        return None

    try:
        return wait_until(receipt_run, timeout=PACE_S, what=f"the receipt run of {order_run}")
    except AssertionError:
        return None


def main(argv: list[str]) -> None:
    arm_from_environment()  # the EVENFLOW_CRASH_AT the test set for this child
    entry = {"owner": owner}[argv[0]]
    sys.exit(entry(*argv[1:]))
