"""The indexes the projections rely on, by collection, and their creation.

``runs`` (the read model): ``run_history`` filters on at most one of state,
flow, command or error type, then sorts newest first on
``(submitted_at desc, _id desc)``; each index below serves one such filter and
the sort together, so a page reads only its rows. ``commands`` and
``error_types`` are arrays (multikey indexes); the sort keys are not, so the
server can still sort by the index.

``events``: the ``run_status`` pipeline matches ``run`` and ``catch_up`` takes
each run's last ``seq``; both need ``run_seq``; ``audit_chain`` finds the runs
of one chain by the ``correlation`` of their ``run.submitted``:
``correlation_type``. The store creates both at open
(``orchestrator.store.mongo.INDEXES``); they are listed here so a reader sees
every index a projection relies on; creating one again is a no-op.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

ASC, DESC = 1, -1


@dataclass(frozen=True, slots=True)
class IndexSpec:
    name: str
    keys: tuple[tuple[str, int], ...]
    why: str

    def options(self) -> dict[str, Any]:
        """Options beside the keys (none: these are plain indexes)."""
        return {}


_NEWEST_FIRST = (("submitted_at", DESC), ("_id", DESC))

INDEXES: Final[Mapping[str, tuple[IndexSpec, ...]]] = {
    "runs": (
        IndexSpec("submitted_id", _NEWEST_FIRST, "run_history with no filter: newest first, by cursor"),
        IndexSpec("state_submitted", (("state", ASC), *_NEWEST_FIRST), "run_history(state=...)"),
        IndexSpec("flow_submitted", (("flow", ASC), *_NEWEST_FIRST), "run_history(flow=...)"),
        IndexSpec("commands_submitted", (("commands", ASC), *_NEWEST_FIRST), "run_history(command=...)"),
        IndexSpec(
            "error_types_submitted", (("error_types", ASC), *_NEWEST_FIRST), "run_history(error_type=...)"
        ),
    ),
    "events": (
        IndexSpec(
            "run_seq",
            (("run", ASC), ("seq", ASC)),
            "run_status's $match on run; catch_up's last seq per run; the store creates it at open",
        ),
        IndexSpec(
            "correlation_type",
            (("correlation", ASC), ("type", ASC)),
            "audit_chain: the run.submitted events of one chain of runs",
        ),
    ),
}


def ensure_indexes(target: Any) -> list[str]:
    """Create the indexes of ``INDEXES`` (idempotent); returns the names created or confirmed.

    ``target`` is a database (every collection listed) or a mapping from
    collection name to collection (only those it holds, e.g. ``{"runs": runs}``).
    """
    names: list[str] = []
    for collection_name, specs in INDEXES.items():
        if isinstance(target, Mapping):
            if collection_name not in target:
                continue
            collection = target[collection_name]
        else:
            collection = target[collection_name]
        for spec in specs:
            collection.create_index(list(spec.keys), name=spec.name)
            names.append(f"{collection_name}.{spec.name}")
    return names
