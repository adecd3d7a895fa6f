"""The README's chain for ``evenflow listen`` and ``evenflow audit``: commands, listeners, bad listener lists.

``place_order`` emits ``order.placed``; the listener ``receipts`` answers with
``call("send_receipt", email)``; ``send_receipt`` emits ``receipt.sent``; the
listener ``filing`` answers that with ``file_receipt``, which emits nothing.
Workers load ``registry``; ``evenflow listen`` loads ``listeners`` (or
``make_listeners``, a function returning them). The rest are what a user
might wrongly name with ``--listeners``.
"""

from __future__ import annotations

from typing import Any

from orchestrator import Event, Node, Registry, call, emit, on

ORDER_PLACED = "order.placed"
RECEIPT_SENT = "receipt.sent"
RECEIPTS = "receipts"
FILING = "filing"


def place_order(order: dict[str, Any]) -> int:
    emit(ORDER_PLACED, {"id": order["id"], "email": order["email"]})
    return int(order["id"])


def send_receipt(email: str) -> str:
    emit(RECEIPT_SENT, {"email": email})
    return f"receipt to {email}"


def file_receipt(email: str) -> str:
    return f"filed {email}"


def registry() -> Registry:
    made = Registry()
    for fn in (place_order, send_receipt, file_receipt):
        made.register(fn.__name__, fn)
    return made


def receipt_for(event: Event) -> Node:
    return call("send_receipt", event.data["email"])


def filed(event: Event) -> Node:
    return call("file_receipt", event.data["email"])


def order(i: int) -> Node:
    return call("place_order", {"id": i, "email": f"customer-{i}@example.com"})


receipts = on(ORDER_PLACED, receipt_for, name=RECEIPTS)
listeners = [receipts, on(RECEIPT_SENT, filed, name=FILING)]


def make_listeners() -> list[Any]:
    return list(listeners)


# --- what --listeners must refuse ---------------------------------------------------------------

not_a_list = receipts
"""One listener, not a list of them."""
not_listeners = ["order.placed", receipt_for]
"""A list, but of a pattern and a plain function: not made with on(...)."""
nothing: list[Any] = []
