"""``evolve(state, event) -> state``: how each event moves a run forward.

Deterministic: the same events give the same state in any process. Data flow
(inputs, results, fan-out and fan-in) is derived here; every *choice* (dispatch,
retry or give up, time out, finish) is a ``decide`` output that came back as an
event. The state is owned by the fold and updated in place for speed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from . import events as ev
from .errors import CorruptEvent
from .events import Event
from .flows import reroot, widened
from .state import (
    ACTIVE,
    CANCELLED,
    FAILED,
    FAILING,
    NO_INPUT,
    READY,
    RUN_RUNNING,
    RUNNING,
    SUCCEEDED,
    TERMINAL,
    WAITING,
    NodeState,
    RunState,
)
from .stored_names import INTERRUPTED, INVALID_FLOW


def fold(run: str, events: Iterable[Event]) -> RunState:
    state = RunState(run)
    for event in events:
        state = evolve(state, event)
    return state


def evolve(state: RunState, event: Event) -> RunState:
    if event.run != state.run or event.seq != state.seq + 1:
        raise CorruptEvent(f"event {event.id} does not follow seq {state.seq} of run {state.run}")
    handler = _HANDLERS.get(event.type)
    if handler is None and not ev.is_domain_type(event.type):
        raise CorruptEvent(f"event {event.id} has unknown type {event.type!r}")
    if state.flow is None and event.type != ev.RUN_SUBMITTED:
        raise CorruptEvent(f"event {event.id} comes before the run was submitted")
    try:
        if handler is not None:  # a command's own event moves nothing; listeners act on it
            handler(state, event)
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptEvent(f"event {event.id} ({event.type}) does not fit run {state.run}: {exc!r}") from exc
    state.seq = event.seq
    return state


# --- run events ----------------------------------------------------------------------------


def _submitted(state: RunState, event: Event) -> None:
    if state.flow is not None:
        raise CorruptEvent(f"run {state.run} is submitted twice (event {event.id})")
    data = event.data
    state.flow = data["flow"]
    state.name, state.key, state.digest = data.get("name"), data.get("key"), data.get("digest")
    state.retry_of = data.get("retry_of")
    state.correlation, state.cause = event.correlation, event.causation
    state.listener, state.depth = data.get("listener"), int(data.get("depth", 0))
    state.refused = data.get("refused")
    state.kept = {path: result for path, result in data.get("kept") or ()}
    state.owner = event.by
    state.submitted_at, state.status = event.at, RUN_RUNNING
    state.parts_due = int(data.get("parts", 0))
    if state.parts_due:  # the rest follows in run.flow_part events; nothing starts before it is all in
        state.flow, state.input = {**state.flow, "nodes": []}, data.get("input", NO_INPUT)
        return
    _add_nodes(state, data["flow"]["nodes"])
    _activate(state, data["flow"]["root"], data.get("input", NO_INPUT))


def _flow_part(state: RunState, event: Event) -> None:
    """One slice of a large submission's node specs or kept results; the last one starts the run."""
    if state.parts_due <= 0:
        raise CorruptEvent(f"run {state.run} has no submission part due (event {event.id})")
    assert state.flow is not None
    nodes, kept = event.data.get("nodes", ()), event.data.get("kept", ())
    _add_nodes(state, nodes, link=False)
    state.flow["nodes"].extend(nodes)
    state.kept.update((path, result) for path, result in kept)
    state.parts_due -= 1
    if not state.parts_due:
        _widen(state, state.flow["nodes"])
        _link(state, state.flow["nodes"])
        value, state.input = state.input, NO_INPUT
        _activate(state, state.flow["root"], value)


def _run_ended(state: RunState, event: Event) -> None:
    state.finished, state.finished_at = True, event.at
    state.status = event.type.removeprefix("run.")
    omitted = "result_omitted" in event.data  # too large to log twice: the nodes hold it
    state.result = state.root.result if omitted else event.data.get("result")
    state.failures = list(event.data.get("failures", ()))
    if state.parts_due:  # its submission never came whole: it has no nodes to stop
        return
    if state.root.status not in TERMINAL:
        _cancel(state, state.root.path)
    state.ready.clear()
    state.failing.clear()
    state.clear_timers()


# --- attempt events ------------------------------------------------------------------------


def _dispatched(state: RunState, event: Event) -> None:
    node = _node(state, event)
    node.move(RUNNING)
    node.attempt = _attempt(event)
    node.reported, node.reported_by = False, None
    node.deadline = event.data.get("deadline")
    node.isolated = bool(event.data.get("isolated", False))  # absent before 2026-12-06: counted
    state.ready.pop(node.path, None)
    state.timers.pop(node.path, None)
    if node.deadline is not None:
        state.set_timer(node.path, node.deadline)


def _started(state: RunState, event: Event) -> None:
    """Logged with an accepted outcome, just before its ending: who reported it."""
    node = _current_attempt(state, event)
    node.reported, node.reported_by = True, event.data.get("by")


def _succeeded(state: RunState, event: Event) -> None:
    node = _current_attempt(state, event)
    state.timers.pop(node.path, None)
    state.progress += 1
    _complete(state, node, event.data.get("result"))


def _expanded(state: RunState, event: Event) -> None:
    node = _current_attempt(state, event)
    state.timers.pop(node.path, None)
    state.progress += 1
    node.move(ACTIVE)
    flow = reroot(event.data["flow"], f"{node.path}.e")
    specs = [dict(spec, parent=node.path) if spec["parent"] is None else spec for spec in flow["nodes"]]
    _add_nodes(state, specs)
    node.children = [flow["root"]]
    _activate(state, flow["root"], NO_INPUT)


def _failed(state: RunState, event: Event) -> None:
    node = _current_attempt(state, event)
    state.timers.pop(node.path, None)
    node.error = dict(event.data["error"])
    if node.error.get("type") == INTERRUPTED:
        if not node.isolated:
            node.interrupted = node.interrupted + 1 if node.interrupted_at == state.progress else 1
            node.interrupted_at = state.progress
    else:
        state.progress += 1
        if node.error.get("reason") == "lost":
            node.lost += 1
    node.move(FAILING)
    state.failing[node.path] = None


def _owner_changed(state: RunState, event: Event) -> None:
    """Another orchestrator took the run over; the previous owner's next append to it conflicts."""
    state.owner = event.data["owner"]


def _ignored(state: RunState, event: Event) -> None:
    """A late or duplicate outcome: recorded for the audit, changes nothing."""


def _retry_scheduled(state: RunState, event: Event) -> None:
    node = _node(state, event)
    node.move(WAITING)
    state.failing.pop(node.path, None)
    state.set_timer(node.path, event.data["due"])


def _node_failed(state: RunState, event: Event) -> None:
    node = _node(state, event)
    state.failing.pop(node.path, None)
    state.ready.pop(node.path, None)
    state.timers.pop(node.path, None)
    _fail(state, node, list(event.data["failures"]))


# --- propagation ---------------------------------------------------------------------------


def _activate(state: RunState, path: str, value: Any) -> None:
    node = state.nodes[path]
    node.input = value
    kind = node.kind
    if kind == "call" and path in state.kept:  # it succeeded in the run this one retries
        _complete(state, node, state.kept[path])
    elif kind == "call":
        node.move(READY)
        state.ready[path] = None
    elif kind in ("sequence", "chord"):
        node.move(ACTIVE)
        _activate(state, node.children[0], value)
    elif kind == "parallel":
        _fan_out(state, node, [(child, value) for child in node.children])
    elif kind == "each":
        if not isinstance(value, list):
            node.error = _bad_map_input(node, value)
            node.move(FAILING)
            state.failing[path] = None
            return
        children = [f"{path}.{i}" for i in range(len(value))]
        _add_items(state, node, children)
        node.children = children
        _fan_out(state, node, list(zip(children, value, strict=True)))


def _fan_out(state: RunState, node: NodeState, branches: list[tuple[str, Any]]) -> None:
    node.results = [None] * len(branches)
    node.pending = len(branches)
    if not branches:
        node.move(SUCCEEDED)
        node.result = []
        _settled(state, node)
        return
    node.move(ACTIVE)
    for child, value in branches:
        _activate(state, child, value)


def _complete(state: RunState, node: NodeState, result: Any) -> None:
    node.move(SUCCEEDED)
    node.result = result
    _settled(state, node)


def _fail(state: RunState, node: NodeState, failures: Sequence[dict[str, Any]]) -> None:
    node.move(FAILED)
    node.failures = failures
    _settled(state, node)


def _settled(state: RunState, node: NodeState) -> None:
    """Tell the parent that ``node`` reached a terminal status."""
    if node.parent is None:
        return
    parent = state.nodes[node.parent]
    if parent.status in TERMINAL:
        return
    if parent.kind in ("parallel", "each"):
        _branch_settled(state, parent, node)
    elif node.status == FAILED:
        _fail(state, parent, node.failures)
    elif parent.kind in ("sequence", "chord") and node.index + 1 < len(parent.children):
        _activate(state, parent.children[node.index + 1], node.result)
    else:  # the last step, or the flow a call expanded into
        _complete(state, parent, node.result)


def _branch_settled(state: RunState, group: NodeState, branch: NodeState) -> None:
    group.pending -= 1
    if branch.status == SUCCEEDED:
        assert isinstance(group.results, list), f"group {group.path} settles a branch before fanning out"
        group.results[branch.index] = branch.result
    elif branch.status == FAILED:
        if isinstance(group.failures, list):
            group.failures.extend(branch.failures)
        else:  # the first: the shared empty tuple is replaced, never grown
            group.failures = list(branch.failures)
        if group.spec.get("siblings") == "cancel":
            for child in group.children:
                _cancel(state, child)
            _fail(state, group, group.failures)
            return
    if group.pending == 0:
        if group.failures:
            _fail(state, group, group.failures)
        else:
            _complete(state, group, group.results)


def _cancel(state: RunState, path: str) -> None:
    node = state.nodes[path]
    if node.status in TERMINAL:
        return
    node.move(CANCELLED)
    state.ready.pop(path, None)
    state.failing.pop(path, None)
    state.timers.pop(path, None)
    for child in node.children:
        _cancel(state, child)


# --- helpers -------------------------------------------------------------------------------


def _add_nodes(state: RunState, specs: Sequence[dict[str, Any]], *, link: bool = True) -> None:
    for spec in specs:
        path = spec["path"]
        if path in state.nodes:
            raise CorruptEvent(f"node {path} of run {state.run} is defined twice")
        children = list(spec["children"]) if "children" in spec else ()
        state.nodes[path] = NodeState(path, spec, children=children, parent=spec["parent"])
    if link:
        _link(state, specs)


def _widen(state: RunState, specs: list[dict[str, Any]]) -> None:
    """Name the children of the groups a part stored by their count (``flows.narrowed``), once every
    node is in: with the paths the nodes hold, so none is kept twice."""
    for index, spec in enumerate(specs):
        if "width" in spec:
            node = state.nodes[spec["path"]]
            specs[index] = node.spec = widened(spec, lambda path: state.nodes[path].path)
            node.children = specs[index]["children"]


def _link(state: RunState, specs: Sequence[dict[str, Any]]) -> None:
    """Each child's place among its parent's children (all of them must be added by now)."""
    for path in [spec["path"] for spec in specs if spec.get("children")]:
        for index, child in enumerate(state.nodes[path].children):
            state.nodes[child].index = index


def _add_items(state: RunState, group: NodeState, paths: list[str]) -> None:
    """The calls of a map, one per item. Each takes the map's template as its spec, shared (a map of
    a million items keeps one), unless the template has a key: then each its own, ``key/index``."""
    template = group.spec["template"]
    key = template.get("key")
    for index, path in enumerate(paths):
        if path in state.nodes:
            raise CorruptEvent(f"node {path} of run {state.run} is defined twice")
        spec = dict(template, key=f"{key}/{index}") if key else template
        state.nodes[path] = NodeState(path, spec, index=index, parent=group.path)


def _node(state: RunState, event: Event) -> NodeState:
    if event.node not in state.nodes:
        raise CorruptEvent(f"event {event.id} names node {event.node!r}, which run {state.run} lacks")
    return state.nodes[event.node]


def _attempt(event: Event) -> int:
    if not isinstance(event.attempt, int) or event.attempt < 1:
        raise CorruptEvent(f"event {event.id} has no valid attempt number")
    return event.attempt


def _current_attempt(state: RunState, event: Event) -> NodeState:
    node = _node(state, event)
    if node.status != RUNNING or node.attempt != _attempt(event):
        raise CorruptEvent(
            f"event {event.id} reports attempt {event.attempt} of node {node.path}, "
            f"which is {node.status} at attempt {node.attempt}"
        )
    return node


def _bad_map_input(node: NodeState, value: Any) -> dict[str, Any]:
    shown = "nothing" if value is NO_INPUT else f"a {type(value).__name__}"
    return {
        "type": INVALID_FLOW,
        "mro": [INVALID_FLOW],
        "message": f"each({node.spec['template']['command']!r}) at {node.path} needs a list, got {shown}",
        "traceback": "",
        "reason": "raised",
    }


_HANDLERS: dict[str, Callable[[RunState, Event], None]] = {
    ev.RUN_SUBMITTED: _submitted,
    ev.RUN_FLOW_PART: _flow_part,
    ev.RUN_SUCCEEDED: _run_ended,
    ev.RUN_FAILED: _run_ended,
    ev.RUN_CANCELLED: _run_ended,
    ev.COMMAND_DISPATCHED: _dispatched,
    ev.COMMAND_STARTED: _started,
    ev.COMMAND_SUCCEEDED: _succeeded,
    ev.COMMAND_EXPANDED: _expanded,
    ev.COMMAND_FAILED: _failed,
    ev.OUTCOME_IGNORED: _ignored,
    ev.OWNER_CHANGED: _owner_changed,
    ev.RETRY_SCHEDULED: _retry_scheduled,
    ev.NODE_FAILED: _node_failed,
}
