"""Run status: one document per run, computed from the log by a named aggregation pipeline.

The pipeline is kept as data (``run_status_pipeline``) so it can be read,
explained and reused: ``run_status`` asks it about one run, ``rebuild_runs``
about every run, to fill the ``runs`` read model. The engine keeps that read
model up to date with a Python fold of the same facts (``run_tally.py``); a
property test holds the two to the same answer.

What a node's state means here. Only *command* nodes count, and only once
dispatched; each counts under the state its latest event puts it in:

    command.dispatched, command.started   running
    command.failed, retry.scheduled       retrying   (an attempt failed; the node is not given up)
    command.succeeded                     succeeded
    command.expanded                      expanded   (it returned a flow that replaced it)
    node.failed                           failed
    run ended while running or retrying   cancelled

``outcome.ignored`` changes nothing. Sequences, groups and maps are not
counted; neither is a call whose arguments could not be logged (it never ran).

``commands`` and ``error_types`` list the run's distinct names in sorted
order, the first ``MAX_LISTED`` of each, so a status document stays below
16 MiB however many distinct names a run uses (a run with more cannot be
found by the names past them). What grows in the pipeline grows with the
run's distinct names, never with its events: a ``$addToSet`` per node (one
command; at most one error type per attempt) and a ``$push`` per run of one
entry per distinct name or node state, cut to ``MAX_LISTED`` names after it
(a server lets a ``$push`` hold 100 MB: 400,000 command names of the longest).
Whole documents are never gathered.

Operators are those MongoDB 6+ and mongomock 4 both implement; two mongomock
gaps shape the code: it does not evaluate expressions inside array literals
(so one-element arrays are built with ``$map`` over ``[1]``) and it lacks
``$sortArray`` and ``$reduce`` (so sorted distinct lists come from grouping,
sorting and ``$push``, which keeps its input order).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from orchestrator.core import events as ev

from .source import EventsCollection, aggregate, aware

# Run states: "running" until a terminal event names the end.
RUNNING: Final = "running"
RUN_ENDS: Final[Mapping[str, str]] = {
    ev.RUN_SUCCEEDED: "succeeded",
    ev.RUN_FAILED: "failed",
    ev.RUN_CANCELLED: "cancelled",
}
RUN_STATES: Final = (RUNNING, *RUN_ENDS.values())

NODE_STATES: Final = ("running", "retrying", "succeeded", "expanded", "failed", "cancelled")
NODE_STATE_OF: Final[Mapping[str, str]] = {
    ev.COMMAND_DISPATCHED: "running",
    ev.COMMAND_STARTED: "running",
    ev.COMMAND_FAILED: "retrying",
    ev.RETRY_SCHEDULED: "retrying",
    ev.COMMAND_SUCCEEDED: "succeeded",
    ev.COMMAND_EXPANDED: "expanded",
    ev.NODE_FAILED: "failed",
}
"""The node state each event type leaves a dispatched command node in."""
MAX_LISTED: Final = 1_000
"""Names kept in ``commands`` and in ``error_types``: the first in sorted order. 1,000 command
names of at most 200 characters and 1,000 error types of at most ``MAX_NAME`` (1,000) characters
take under 5 MB; beside them a document holds a result of at most 4 MiB, or the at most 100
failures ``run.failed`` keeps (messages and tracebacks cut to 4,000 and 16,000 characters, under
9 MB): under 14 MB in all."""
UNSETTLED: Final = ("running", "retrying")
"""Node states that become ``cancelled`` when the run ends."""

_STATE_CODE: Final = {state: code for code, state in enumerate(NODE_STATES, start=1)}
_CODE_BASE: Final = 8
"""A node's latest state is found as max(seq * 8 + state code) over its events: order-free."""


@dataclass(frozen=True, slots=True)
class RunStatus:
    """One run at a glance, as the ``runs`` read model stores it (``to_doc`` / ``from_doc``)."""

    run: str
    flow: str | None
    state: str
    submitted_at: datetime | None
    ended_at: datetime | None
    duration_s: float | None
    nodes: Mapping[str, int] = field(default_factory=dict)
    attempts: int = 0
    commands: tuple[str, ...] = ()
    error_types: tuple[str, ...] = ()
    result: Any = None
    error: list[dict[str, Any]] | None = None
    last_seq: int = 0

    @property
    def finished(self) -> bool:
        return self.state != RUNNING

    def to_doc(self) -> dict[str, Any]:
        return {
            "_id": self.run,
            "flow": self.flow,
            "state": self.state,
            "submitted_at": self.submitted_at,
            "ended_at": self.ended_at,
            "duration_s": self.duration_s,
            "nodes": dict(self.nodes),
            "attempts": self.attempts,
            "commands": list(self.commands),
            "error_types": list(self.error_types),
            "result": self.result,
            "error": self.error,
            "last_seq": self.last_seq,
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> RunStatus:
        return cls(
            run=doc["_id"],
            flow=doc.get("flow"),
            state=doc["state"],
            submitted_at=aware(doc.get("submitted_at")),
            ended_at=aware(doc.get("ended_at")),
            duration_s=doc.get("duration_s"),
            nodes={state: int(doc.get("nodes", {}).get(state, 0)) for state in NODE_STATES},
            attempts=int(doc.get("attempts", 0)),
            commands=tuple(doc.get("commands") or ()),
            error_types=tuple(doc.get("error_types") or ()),
            result=doc.get("result"),
            error=doc.get("error"),
            last_seq=int(doc.get("last_seq", 0)),
        )


def run_status(events: EventsCollection, run: str) -> RunStatus | None:
    """The status of ``run`` computed from the log now; None if the log has no such run."""
    for doc in aggregate(events, run_status_pipeline([run])):
        return RunStatus.from_doc(doc)
    return None


def run_status_pipeline(runs: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """One status document per run of ``runs`` (every run when None), sorted by run id.

    With runs given, the first stage is a ``$match`` on ``run`` that the
    store's ``run_seq`` index serves; for every run the pipeline reads the whole
    log, as a rebuild must. Nothing depends on the order events arrive in,
    except the sorted ``$push`` that builds the sorted lists.
    """
    match = [] if runs is None else [{"$match": {"run": {"$in": sorted(set(runs))}}}]
    return [
        *match,
        {"$group": _PER_NODE},
        {"$project": _NODE_TAGS},
        {"$unwind": {"path": "$tags", "preserveNullAndEmptyArrays": True}},
        {"$group": _PER_TAG},
        {"$sort": {"_id.run": 1, "_id.tag.k": 1, "_id.tag.v": 1}},
        {"$group": _PER_RUN},
        {"$set": _COUNTS},
        {"$project": _STATUS},
        {"$sort": {"_id": 1}},
    ]


# --- the stages, as data -------------------------------------------------------------------


def _when(types: str | Sequence[str], then: Any, otherwise: Any = None) -> dict[str, Any]:
    test = {"$eq": ["$type", types]} if isinstance(types, str) else {"$in": ["$type", list(types)]}
    return {"$cond": [test, then, otherwise]}


def _node_state_key() -> dict[str, Any]:
    """seq * 8 + the code of the state this event leaves the node in; null for other events."""
    branches = [
        {"case": {"$eq": ["$type", kind]}, "then": {"$add": [{"$multiply": ["$seq", _CODE_BASE]}, code]}}
        for kind, code in ((kind, _STATE_CODE[state]) for kind, state in NODE_STATE_OF.items())
    ]
    return {"$switch": {"branches": branches, "default": None}}


_RUN_FIELDS = ("submitted_at", "flow", "ended", "ended_at", "result", "error")

# Stage 1: one document per (run, node); the run's own events have node null.
_PER_NODE: Final = {
    "_id": {"run": "$run", "node": "$node"},
    "last_seq": {"$max": "$seq"},
    "attempts": {"$sum": _when(ev.COMMAND_DISPATCHED, 1, 0)},
    "state_key": {"$max": _node_state_key()},
    "commands": {"$addToSet": _when(ev.COMMAND_DISPATCHED, "$command")},
    "errors": {"$addToSet": _when(ev.COMMAND_FAILED, "$data.error.type")},
    "submitted_at": {"$max": _when(ev.RUN_SUBMITTED, "$at")},
    "flow": {"$max": _when(ev.RUN_SUBMITTED, {"$ifNull": ["$data.name", None]})},
    "ended": {
        "$max": {
            "$switch": {
                "branches": [{"case": {"$eq": ["$type", t]}, "then": s} for t, s in RUN_ENDS.items()],
                "default": None,
            }
        }
    },
    "ended_at": {"$max": _when(list(RUN_ENDS), "$at")},
    "result": {"$max": _when(ev.RUN_SUCCEEDED, "$data.result")},
    "error": {"$max": _when(ev.RUN_FAILED, "$data.failures")},
}


def _tags(source: str, kind: str) -> dict[str, Any]:
    present = {"$filter": {"input": source, "cond": {"$ne": ["$$this", None]}}}
    return {"$map": {"input": present, "in": {"k": kind, "v": "$$this"}}}


def _node_state() -> dict[str, Any]:
    remainder = {"$mod": ["$state_key", _CODE_BASE]}
    branches = [{"case": {"$eq": [remainder, code]}, "then": state} for state, code in _STATE_CODE.items()]
    return {"$switch": {"branches": branches, "default": None}}


# Stage 2: tag each (run, node) with what it adds to the run: command names ("c"),
# error types ("e") and, once dispatched, its state ("n"). Grouping by tag then
# dedupes the names and counts the nodes in each state in one pass.
_NODE_TAGS: Final = {
    "last_seq": 1,
    "attempts": 1,
    **dict.fromkeys(_RUN_FIELDS, 1),
    "tags": {
        "$concatArrays": [
            _tags("$commands", "c"),
            _tags("$errors", "e"),
            {
                "$map": {
                    "input": {"$cond": [{"$gt": ["$attempts", 0]}, [1], []]},
                    "in": {"k": "n", "v": _node_state()},
                }
            },
        ]
    },
}

# Stage 3: one document per (run, tag); the run's own document has no tag.
_PER_TAG: Final = {
    "_id": {"run": "$_id.run", "tag": {"$ifNull": ["$tags", None]}},
    "count": {"$sum": 1},
    "attempts": {"$sum": {"$cond": [{"$eq": ["$tags.k", "n"]}, "$attempts", 0]}},
    "last_seq": {"$max": "$last_seq"},
    **{name: {"$max": f"${name}"} for name in _RUN_FIELDS},
}

# Stage 4 (after sorting by run and tag): one document per run, its tags in order.
_PER_RUN: Final = {
    "_id": "$_id.run",
    "tags": {
        "$push": {
            "$cond": [
                {"$ne": ["$_id.tag", None]},
                {"k": "$_id.tag.k", "v": "$_id.tag.v", "count": "$count"},
                None,
            ]
        }
    },
    "attempts": {"$sum": "$attempts"},
    "last_seq": {"$max": "$last_seq"},
    **{name: {"$max": f"${name}"} for name in _RUN_FIELDS},
}


def _tagged(kind: str) -> dict[str, Any]:
    return {"$filter": {"input": "$tags", "cond": {"$eq": ["$$this.k", kind]}}}


def _values(kind: str) -> dict[str, Any]:
    """The run's names tagged ``kind``, in sorted order (tags were pushed sorted), ``MAX_LISTED`` at most."""
    return {"$slice": [{"$map": {"input": _tagged(kind), "in": "$$this.v"}}, MAX_LISTED]}


def _count(state: str) -> dict[str, Any]:
    """The count on the run's "n" tag for ``state``; 0 when no node is in it."""
    tagged = {
        "$filter": {
            "input": "$tags",
            "cond": {"$and": [{"$eq": ["$$this.k", "n"]}, {"$eq": ["$$this.v", state]}]},
        }
    }
    counts = {"$map": {"input": tagged, "in": "$$this.count"}}
    return {"$ifNull": [{"$arrayElemAt": [counts, 0]}, 0]}


# Stage 5: drop the null tags of the run's own document; count nodes per state.
_COUNTS: Final = {
    "tags": {"$filter": {"input": "$tags", "cond": {"$ne": ["$$this", None]}}},
    "counts": {state: _count(state) for state in NODE_STATES},
}

_ENDED: Final = {"$ne": ["$ended", None]}


def _settled_count(state: str) -> Any:
    """What a node count reads once the run ended: unsettled nodes were cancelled."""
    if state in UNSETTLED:
        return {"$cond": [_ENDED, 0, f"$counts.{state}"]}
    if state == "cancelled":
        unsettled = [f"$counts.{name}" for name in UNSETTLED]
        return {"$cond": [_ENDED, {"$add": ["$counts.cancelled", *unsettled]}, "$counts.cancelled"]}
    return f"$counts.{state}"


# Stage 6: the document the read model stores (``RunStatus.to_doc``).
_STATUS: Final = {
    "_id": 1,
    "flow": 1,
    "state": {"$ifNull": ["$ended", RUNNING]},
    "submitted_at": 1,
    "ended_at": 1,
    "duration_s": {
        "$cond": [
            {"$and": [{"$ne": ["$ended_at", None]}, {"$ne": ["$submitted_at", None]}]},
            {"$divide": [{"$subtract": ["$ended_at", "$submitted_at"]}, 1000]},
            None,
        ]
    },
    "nodes": {state: _settled_count(state) for state in NODE_STATES},
    "attempts": 1,
    "commands": _values("c"),
    "error_types": _values("e"),
    "result": 1,
    "error": 1,
    "last_seq": 1,
}
