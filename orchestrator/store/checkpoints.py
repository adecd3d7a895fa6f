"""Which listeners keep a place in the log, and how far behind it each is: what the ``listeners``
page and API show. Kept apart from the stores, which load, save and list checkpoints by name."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

LAG_CAP = 10_000
"""Events counted past a checkpoint at most; beyond it the count says "at least"."""


@dataclass(frozen=True, slots=True)
class ListenerLag:
    name: str
    behind: int
    """Events of any type logged after the listener's place (at most ``LAG_CAP``)."""
    at_least: bool
    """True when there are ``LAG_CAP`` or more."""
    oldest_unread_at: datetime | None
    """When the first event after its place was logged: how far behind in time."""


def checkpoint_names(store: Any) -> list[str] | None:
    """The names listeners saved places under, sorted; None for a store that keeps none."""
    names = getattr(store, "checkpoint_names", None)
    return None if names is None else list(names())


def lags(store: Any) -> list[ListenerLag] | None:
    """Each listener's distance behind the end of the log; None for a store without checkpoints."""
    names = checkpoint_names(store)
    if names is None:
        return None
    found = []
    for name in names:
        events, _ = store.read_feed(store.load_checkpoint(name), ["*"], LAG_CAP)
        first = events[0].at if events else None
        found.append(ListenerLag(name, len(events), len(events) >= LAG_CAP, first))
    return found
