"""What a MongoDB store should hold: its collections and, by collection, its indexes.

One declaration, read by ``evenflow init`` (which creates what is missing) and
``evenflow doctor`` (which checks what is there): the log's own indexes and
the leases' TTL (``orchestrator.store.index_specs``) and the read model's
(``projections.indexes``).
Where two declare one index name on one collection, the store's wins.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def collections() -> tuple[str, ...]:
    from ..store import mongo

    return ("events", "runs", mongo.LEASES, mongo.CHECKPOINTS)


def expected_indexes() -> dict[str, dict[str, dict[str, Any]]]:
    """Collection -> index name -> ``{"key": [(field, order), ...], option: value}``."""
    from projections.indexes import INDEXES as PROJECTION_INDEXES

    from ..store import index_specs, mongo

    declared: list[tuple[str, Sequence[Any]]] = [
        ("events", index_specs.INDEXES),
        (mongo.LEASES, index_specs.LEASE_INDEXES),
        *PROJECTION_INDEXES.items(),
    ]
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for collection, specs in declared:
        for spec in specs:
            found.setdefault(collection, {}).setdefault(spec.name, _doc(spec))
    return found


def _doc(spec: Any) -> dict[str, Any]:
    return {"key": [tuple(pair) for pair in spec.keys], **spec.options()}
