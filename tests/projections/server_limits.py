"""A server's aggregation limits, checked without a server: a pipeline linter and a size-keeping collection.

mongomock runs any pipeline whole in memory, so a ``$push`` that would meet a
server's limits on a big history passes every test. Two checks catch it here:

``growing_accumulators`` reads a pipeline as data and names every ``$push`` or
``$addToSet`` (in ``$group`` stages, nested pipelines included) that is not
declared bounded, and every one of ``$$ROOT``/``$$CURRENT`` (a whole event per
element). A ``$push`` into a group fed by events (no ``$group`` before it)
grows with the events, and no declaration excuses it.

``ServerLimits`` wraps a collection and runs a pipeline stage by stage on
mongomock, holding every document *between* stages to the document limit and
every blocking stage (``$group``, ``$sort``...) to the memory limit unless
``allowDiskUse`` is passed. That is stricter than a server, which checks 16 MiB
on the documents it returns or spills and lets an accumulator grow to 100 MB
in memory: a pipeline that passes here stays inside both on a server. The
limits can be scaled down, so a test shows with a small history what a big one
would do on a server; ``largest`` says how big a document any stage held.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import bson
from mongomock import aggregate as mongomock_pipeline
from pymongo.errors import DocumentTooLarge, OperationFailure

from orchestrator.store.faithful_mock import MAX_DOCUMENT_BYTES

MAX_STAGE_BYTES = 100 * 1024 * 1024
"""A blocking stage's memory without ``allowDiskUse`` (``internalQueryMaxBlockingSortMemoryUsageBytes``)."""
EXCEEDED_MEMORY_LIMIT = 292
"""The server's code for ``QueryExceededMemoryLimitNoDiskUseAllowed``."""
GROWING = ("$push", "$addToSet")
BLOCKING = ("$group", "$sort", "$bucket", "$bucketAuto", "$sortByCount", "$setWindowFields")
WHOLE = ("$$ROOT", "$$CURRENT")


def growing_accumulators(pipeline: Sequence[Mapping[str, Any]]) -> Iterator[tuple[str, str, bool]]:
    """``(field, operator, fed_by_events)`` for every ``$push``/``$addToSet`` of the pipeline's groups,
    and one more, operator ``"... of a whole document"``, for each that takes ``$$ROOT``."""
    fed_by_events = True
    for stage in pipeline:
        for name, spec in stage.items():
            for inner in _sub_pipelines(name, spec):
                yield from growing_accumulators(inner)
            if name != "$group":
                continue
            for field, accumulator in spec.items():
                if field == "_id" or not isinstance(accumulator, Mapping):
                    continue
                for operator in sorted(set(GROWING) & set(accumulator)):
                    yield field, operator, fed_by_events
                    if _mentions(accumulator[operator], WHOLE):
                        yield field, f"{operator} of a whole document", fed_by_events
            fed_by_events = False


def _sub_pipelines(name: str, spec: Any) -> list[Sequence[Mapping[str, Any]]]:
    """The pipelines inside a ``$lookup``, ``$unionWith`` or ``$facet`` stage."""
    if name in ("$lookup", "$unionWith") and isinstance(spec, Mapping):
        return [spec["pipeline"]] if "pipeline" in spec else []
    if name == "$facet" and isinstance(spec, Mapping):
        return list(spec.values())
    return []


def _mentions(expression: Any, names: Sequence[str]) -> bool:
    if isinstance(expression, str):
        return expression in names or any(expression.startswith(f"{name}.") for name in names)
    if isinstance(expression, Mapping):
        return any(_mentions(value, names) for value in expression.values())
    if isinstance(expression, list | tuple):
        return any(_mentions(value, names) for value in expression)
    return False


class ServerLimits:
    """A collection whose ``aggregate`` refuses what a server would refuse, stage by stage."""

    def __init__(
        self,
        inner: Any,
        *,
        document_bytes: int = MAX_DOCUMENT_BYTES,
        stage_bytes: int = MAX_STAGE_BYTES,
    ) -> None:
        self.inner = inner
        self.document_bytes = document_bytes
        self.stage_bytes = stage_bytes
        self.largest = 0
        """The largest document any stage has held so far, in BSON bytes."""

    def aggregate(self, pipeline: Sequence[Mapping[str, Any]], *args: Any, **kwargs: Any) -> Iterator[Any]:
        """Only a leading ``$match`` goes to ``inner`` (mongomock or the BSON-faithful layer over it)."""
        spill = bool(kwargs.pop("allowDiskUse", False))
        stages = list(pipeline)
        if stages and "$match" in stages[0]:
            leading, rest = stages[:1], stages[1:]
        else:
            leading, rest = [{"$match": {}}], stages
        docs = list(self.inner.aggregate(leading))
        self._check("$match", docs, spill)
        for stage in rest:
            docs = list(mongomock_pipeline.process_pipeline(docs, self.inner.database, [stage], None))
            self._check(next(iter(stage)), docs, spill)
        return iter(docs)

    def _check(self, operator: str, docs: list[Any], spill: bool) -> None:
        """What a stage output may hold: each document, and in all, for a blocking stage (its memory)."""
        sizes = [len(bson.encode(doc)) for doc in docs]
        held = max(sizes, default=0)
        self.largest = max(self.largest, held)
        if held > self.document_bytes:
            limit = self.document_bytes
            raise DocumentTooLarge(f"{operator} made a {held:,}-byte document; the limit is {limit:,}")
        if operator in BLOCKING and not spill and sum(sizes) > self.stage_bytes:
            raise OperationFailure(
                f"{operator} exceeded memory limit of {self.stage_bytes:,} bytes; pass allowDiskUse:true",
                code=EXCEEDED_MEMORY_LIMIT,
            )
