"""What a MongoDB store should hold: its collections and, by collection, its indexes.

One declaration, read by ``evenflow init`` (which creates what is missing) and
``evenflow doctor`` (which checks what is there): the log's own indexes and
the leases' TTL (``orchestrator.store.mongo``), the open runs
(``orchestrator.store.open_runs``) and the read model's (``projections.indexes``).
Where two declare one index name on one collection, the store's wins.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def collections() -> tuple[str, ...]:
    from ..store import mongo
    from ..store.open_runs import OPEN_RUNS

    return ("events", "runs", mongo.LEASES, mongo.CHECKPOINTS, OPEN_RUNS)


def expected_indexes() -> dict[str, dict[str, dict[str, Any]]]:
    """Collection -> index name -> ``{"key": [(field, order), ...], option: value}``."""
    from projections.indexes import INDEXES as PROJECTION_INDEXES

    from ..store import mongo

    declared: list[tuple[str, Sequence[Any]]] = [
        ("events", mongo.INDEXES),
        (mongo.LEASES, mongo.LEASE_INDEXES),
        *PROJECTION_INDEXES.items(),
    ]
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for collection, specs in declared:
        for spec in specs:
            found.setdefault(collection, {}).setdefault(spec.name, _doc(spec))
    return found


def _doc(spec: Any) -> dict[str, Any]:
    ttl = getattr(spec, "expire_after_s", None)
    return {"key": [tuple(pair) for pair in spec.keys], **({"expireAfterSeconds": ttl} if ttl else {})}
