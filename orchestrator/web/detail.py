"""A run as its page draws it: the flow as a tree of nodes with their states, and every attempt.

Both come from the run's own events (the same fold the engine uses), so the
page shows what the log says and nothing the store keeps beside it. A group
with more than ``SHOWN`` children (a big map) shows its first ``SHOWN`` and the
states of the rest as counts, so a page of a million-item map stays small.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from ..core import events as ev
from ..core.events import Event
from ..core.evolve import fold
from ..core.state import NodeState, RunState

SHOWN = 50


def run_graph(run: str, events: Sequence[Event]) -> dict[str, Any] | None:
    """The page's view of ``run``; None when the log holds none of it. ``last_seq`` says how far into
    the log it looked, so a page drawing it beside the run's status can tell two moments apart."""
    if not events:
        return None
    state = fold(run, events)
    return {
        "run": run,
        "state": state.status,
        "last_seq": events[-1].seq,
        "flow": state.name,
        "nodes": list(_nodes(state)),
        "attempts": attempts(events),
    }


def _nodes(state: RunState) -> Iterable[dict[str, Any]]:
    """Each shown node, parents before children."""
    root = next((node for node in state.nodes.values() if node.parent is None), None)
    stack = [root] if root is not None else []
    while stack:
        node = stack.pop()
        children = [state.nodes[path] for path in node.children if path in state.nodes]
        shown, hidden = children[:SHOWN], children[SHOWN:]
        yield _node(node, [child.path for child in shown], hidden)
        stack.extend(reversed(shown))


def _node(node: NodeState, shown: list[str], hidden: list[NodeState]) -> dict[str, Any]:
    spec = node.spec
    error = node.error or {}
    return {
        "path": node.path,
        "parent": node.parent,
        "kind": spec.get("kind"),
        "command": spec.get("command"),
        "state": node.status,
        "attempts": node.attempt,
        "children": shown,
        "hidden": dict(Counter(child.status for child in hidden)),
        "error": error.get("message") if error else None,
    }


def attempts(events: Iterable[Event]) -> list[dict[str, Any]]:
    """Every attempt of the run, in the order they were dispatched, with where, when and how it ended."""
    found: dict[tuple[str | None, int | None], dict[str, Any]] = {}
    for event in events:
        key = (event.node, event.attempt)
        if event.type == ev.COMMAND_DISPATCHED:
            found[key] = {
                "node": event.node, "attempt": event.attempt, "command": event.command,
                "dispatched_at": event.at, "started_at": None, "ended_at": None, "worker": None,
                "outcome": None, "reason": None, "error_type": None, "duration_s": None,
            }  # fmt: skip
        elif key in found:
            _note(found[key], event)
    return list(found.values())


def _note(attempt: dict[str, Any], event: Event) -> None:
    data = event.data
    if event.type == ev.COMMAND_STARTED:
        attempt["worker"] = data.get("by") or event.by
        attempt["started_at"] = data.get("started_at") or event.at
    elif event.type in (ev.COMMAND_SUCCEEDED, ev.COMMAND_FAILED):
        error = data.get("error") or {}
        attempt["outcome"] = "succeeded" if event.type == ev.COMMAND_SUCCEEDED else "failed"
        attempt["ended_at"] = event.at
        attempt["duration_s"] = data.get("duration_s")
        attempt["reason"] = error.get("reason") if error else None
        attempt["error_type"] = error.get("type") if error else None
