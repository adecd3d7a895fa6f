"""The indexes a MongoDB store creates at open, declared once for the store, ``init`` and ``doctor``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from pymongo import ASCENDING

from .open_runs import OPEN

LEASE_TTL_S = 86_400
"""A lease document, released or abandoned, goes this long after its ``at`` (TTL index ``expire_at``)."""


class IndexSpec(NamedTuple):
    name: str
    keys: tuple[tuple[str, int], ...]
    why: str
    expire_after_s: int | None = None
    """Set on a TTL index: the server removes a document this long after the time in its key."""
    partial: Mapping[str, Any] | None = None
    """Set on a partial index: it holds only the documents this filter matches."""

    def options(self) -> dict[str, Any]:
        """The options ``create_index`` takes for it (and ``index_information`` shows) beside its keys."""
        ttl = {"expireAfterSeconds": self.expire_after_s} if self.expire_after_s else {}
        return {**ttl, **({"partialFilterExpression": dict(self.partial)} if self.partial else {})}


INDEXES: tuple[IndexSpec, ...] = (
    IndexSpec("type_at", (("type", ASCENDING), ("at", ASCENDING)), "queries by type; marking open runs once"),
    IndexSpec("run_seq", (("run", ASCENDING), ("seq", ASCENDING)), "a run's events in seq order"),
    IndexSpec("run_type", (("run", ASCENDING), ("type", ASCENDING)), "checking the open runs' lifecycle"),
    IndexSpec("at_id", (("at", ASCENDING), ("_id", ASCENDING)), "the listeners' feed, in time order"),
    IndexSpec("correlation_type", (("correlation", ASCENDING), ("type", ASCENDING)), "the runs of one chain"),
    IndexSpec(
        "open_run", ((OPEN, ASCENDING),), "unfinished runs: the marked submissions", partial={OPEN: True}
    ),
)
"""The indexes of ``events`` (``_id`` comes free); ops/ documents them."""
LEASE_INDEXES: tuple[IndexSpec, ...] = (
    IndexSpec(
        "expire_at", (("at", ASCENDING),), "lease documents go a day after their last beat", LEASE_TTL_S
    ),
)
"""The indexes of ``leases``."""
