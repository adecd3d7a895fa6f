"""An ``events`` collection for projections over an embedded journal that loads only what a pipeline needs.

Projections answer with aggregation pipelines whose first stage is a ``$match``.
When that stage names runs — one run (``audit``, a run's correlation), a list
of runs (a chain's events), or the submissions of one correlation (a chain's
runs, found through the history tables) — only those runs' events are read
from the journal, by primary key, into a private mongomock collection, and the
whole pipeline runs there. What is loaded holds every event the ``$match``
selects, so the answer is the one the whole journal gives; any other pipeline
runs on the store's full mirror (``EmbeddedStore.events``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from orchestrator.core import events as ev

from .encoding import decode_doc


class Journal(Protocol):
    """What of the embedded store a subset reads (a Protocol, so this module need not import it)."""

    @property
    def events(self) -> Any: ...

    def run_blobs(self, run: str) -> list[bytes]: ...

    def chain(self, correlation: str) -> list[str]: ...


class SubsetEvents:
    """The ``aggregate`` of an ``events`` collection, served from the runs a pipeline's ``$match`` names."""

    def __init__(self, store: Journal) -> None:
        self._store = store

    def aggregate(self, pipeline: Sequence[Mapping[str, Any]], *args: Any, **kwargs: Any) -> Any:
        first = pipeline[0].get("$match") if pipeline else None
        runs = self._named_runs(first) if isinstance(first, Mapping) else None
        if runs is None:
            return self._store.events.aggregate(pipeline, *args, **kwargs)
        from .faithful_mock import client

        collection = client()["evenflow"]["events"]
        docs = [decode_doc(blob) for run in runs for blob in self._store.run_blobs(run)]
        if docs:
            collection.insert_many(docs)
        return collection.aggregate(list(pipeline), *args, **kwargs)

    def _named_runs(self, match: Mapping[str, Any]) -> list[str] | None:
        """The runs holding every event ``match`` selects, when the match names them; else None."""
        run = match.get("run")
        if isinstance(run, str):
            return [run]
        if isinstance(run, Mapping) and set(run) == {"$in"} and all(isinstance(r, str) for r in run["$in"]):
            return sorted(set(run["$in"]))
        correlation = match.get("correlation")
        if run is None and isinstance(correlation, str) and match.get("type") == ev.RUN_SUBMITTED:
            return self._store.chain(correlation)
        return None
