"""A folded run as plain JSON, so the state a golden log folds to can be checked in and compared.

Values inside (results, inputs, errors) are written as MongoDB canonical
extended JSON, so a NaN, an int beyond 32 bits, bytes and datetimes keep their
exact type and value in the expected file. ``NO_INPUT`` is written as
``"<no input>"``.
"""

from __future__ import annotations

import json
from typing import Any

from bson import json_util
from bson.json_util import CANONICAL_JSON_OPTIONS

from orchestrator.core.state import NO_INPUT, NodeState, RunState

_RUN_FIELDS = (
    "run", "seq", "status", "submitted_at", "finished_at", "name", "key", "digest", "retry_of", "kept",
    "progress", "owner", "correlation", "cause", "listener", "refused", "depth", "result", "failures",
    "finished", "ready", "failing", "timers",
)  # fmt: skip
_NODE_FIELDS = (
    "status", "input", "index", "attempt", "deadline", "error", "result", "results", "pending", "failures",
    "lost", "interrupted", "interrupted_at", "children", "parent",
)  # fmt: skip


def snapshot(state: RunState) -> dict[str, Any]:
    """Every field of the run and of each node (the flow spec itself is checked through ``flow``)."""
    doc: dict[str, Any] = {name: getattr(state, name) for name in _RUN_FIELDS}
    doc["ready"], doc["failing"] = list(state.ready), list(state.failing)
    doc["flow"] = state.flow
    doc["nodes"] = {path: _node(node) for path, node in state.nodes.items()}
    return as_json(doc)


def _node(node: NodeState) -> dict[str, Any]:
    return {name: getattr(node, name) for name in _NODE_FIELDS}


def as_json(value: Any) -> Any:
    """``value`` as canonical extended JSON, parsed back into plain dicts and lists."""
    text = json_util.dumps(_marked(value), json_options=CANONICAL_JSON_OPTIONS, sort_keys=True)
    return json.loads(text)


def _marked(value: Any) -> Any:
    if value is NO_INPUT:
        return "<no input>"
    if isinstance(value, dict):
        return {key: _marked(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_marked(item) for item in value]
    return value
