"""Flows: trees of command calls, sequences, parallel groups, chords and maps.

Nodes are frozen values built with ``call``, ``sequence``, ``parallel``,
``chord`` and ``each``. The log stores a flow *flat*, as a list of node specs
addressed by path (``r``, ``r.0``, ``r.1.3``), so any depth fits within BSON's
nesting limit and every node has a stable name for events to point at.

Documents of this form from outside Python (JSON, a listener host, a remote
worker's expansion) are read back and checked by ``flow_docs``.

Data moves as Celery users expect: in a sequence each step receives the
previous result as its first positional argument unless it is immutable; a
parallel group hands its input to every branch and returns their results in
order; a chord calls its body once with the list of its header's results.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, Literal

from .codec import check_payload
from .errors import InvalidFlow, InvalidOption
from .policy import RetryPolicy
from .registry import check_name, check_options

Siblings = Literal["finish", "cancel"]
SIBLINGS: tuple[Siblings, ...] = ("finish", "cancel")
DEFAULT_SIBLINGS: Siblings = "finish"
"""When one branch of a group fails for good, the others still run to their end
by default, so the group's error lists every failure; ``"cancel"`` fails the
group at once and dispatches nothing more in it."""

ROOT = "r"
MAX_DEPTH = 32
MAX_NODES = 1_000_000
"""Nodes of one flow document. A run keeps a node in about 1 KB, so a million fit in memory. A flow
too large for one event is logged in parts (``submitting.py``); wider work is a map (``each``), whose
calls are made at run time from the list a step returns and are not stored in the submission."""


class Node:
    """Base of every flow node; a marker so results can be recognised as flows."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Call(Node):
    command: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    retry: RetryPolicy | None = None
    timeout: timedelta | None = None
    route: str | None = None
    key: str | None = None
    immutable: bool = False

    def options(
        self,
        *,
        retry: RetryPolicy | None = None,
        timeout: timedelta | None = None,
        route: str | None = None,
        key: str | None = None,
        immutable: bool | None = None,
    ) -> Call:
        """A copy with these options set; ``None`` keeps the current value."""
        changes: dict[str, Any] = {
            name: value
            for name, value in (
                ("retry", retry),
                ("timeout", timeout),
                ("route", route),
                ("key", key),
                ("immutable", immutable),
            )
            if value is not None
        }
        owner = f"call({self.command!r})"
        check_options(owner, retry=retry, timeout=timeout, route=route, key=key, immutable=immutable)
        return replace(self, **changes)

    def si(self) -> Call:
        """Immutable: ignore the previous step's result (Celery's ``.si()``)."""
        return replace(self, immutable=True)


@dataclass(frozen=True, slots=True)
class Sequence(Node):
    steps: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Parallel(Node):
    branches: tuple[Node, ...]
    siblings: Siblings = DEFAULT_SIBLINGS


@dataclass(frozen=True, slots=True)
class Chord(Node):
    header: tuple[Node, ...]
    body: Node
    siblings: Siblings = DEFAULT_SIBLINGS


@dataclass(frozen=True, slots=True)
class Each(Node):
    """Map one command over the list the previous step produced, in parallel."""

    template: Call
    siblings: Siblings = DEFAULT_SIBLINGS


def call(command: str, *args: Any, **kwargs: Any) -> Call:
    """A call of the command registered as ``command`` with these arguments.

    Tuples in the arguments, at any depth, become lists here, before anything is
    stored: the log would give them back as lists anyway, and an argument list is
    read by position, so nothing is lost (results and emitted data still refuse
    tuples, whose readers might tell them apart).
    """
    check_name(command)
    return Call(command, tuple(_listed(arg) for arg in args), {k: _listed(v) for k, v in kwargs.items()})


def _listed(value: Any) -> Any:
    """``value`` with every tuple in it (not a subclass such as a namedtuple) turned into a list."""
    if type(value) in (tuple, list):
        return [_listed(item) for item in value]
    if type(value) is dict:
        return {key: _listed(item) for key, item in value.items()}
    return value


cmd = call


def sequence(*steps: Node | Iterable[Node]) -> Sequence:
    return Sequence(_nodes(steps, "sequence"))


def parallel(*branches: Node | Iterable[Node], siblings: Siblings = DEFAULT_SIBLINGS) -> Parallel:
    return Parallel(_nodes(branches, "parallel"), check_siblings(siblings))


def chord(header: Iterable[Node], body: Node, *, siblings: Siblings = DEFAULT_SIBLINGS) -> Chord:
    """Run ``header`` in parallel, then ``body`` once with the list of results ([] if empty)."""
    if isinstance(header, Node):
        raise InvalidFlow("chord(header, body): header must be a list of nodes")
    return Chord(
        _nodes(tuple(header), "chord", allow_empty=True), _node(body, "chord body"), check_siblings(siblings)
    )


def each(command: str | Call, *args: Any, siblings: Siblings = DEFAULT_SIBLINGS, **kwargs: Any) -> Each:
    """Call ``command(item, *args, **kwargs)`` for every item of the incoming list."""
    if isinstance(command, Call) and (args or kwargs):
        raise InvalidFlow(f"each({command.command!r}, ...): put the extra arguments in the call(...) itself")
    template = command if isinstance(command, Call) else call(command, *args, **kwargs)
    if template.immutable:
        raise InvalidFlow(f"each({template.command!r}) needs the item: the template cannot be immutable")
    return Each(template, check_siblings(siblings))


def _nodes(items: tuple[Any, ...], what: str, *, allow_empty: bool = False) -> tuple[Node, ...]:
    if len(items) == 1 and not isinstance(items[0], Node) and isinstance(items[0], Iterable):
        items = tuple(items[0])
    if not items and not allow_empty:
        raise InvalidFlow(f"{what}() needs at least one node")
    return tuple(_node(item, what) for item in items)


def _node(item: Any, what: str) -> Node:
    if not isinstance(item, Node):
        raise InvalidFlow(f"{what}() takes flow nodes (call(...), sequence(...), ...), got {item!r}")
    return item


def check_siblings(value: str) -> Siblings:
    """``value`` if it is a way a group's branches may end, else ``InvalidOption``."""
    if value not in SIBLINGS:
        raise InvalidOption(f"siblings must be one of {SIBLINGS}, got {value!r}")
    return value


# --- the stored, flat form -------------------------------------------------------------


def is_flow(value: Any) -> bool:
    return isinstance(value, Node)


def encode_flow(node: Node, root: str = ROOT) -> dict[str, Any]:
    """Flatten a flow into ``{"root": path, "nodes": [spec, ...]}``, checking it as it goes."""
    out = _Flat()
    _encode(node, root, None, 0, out)
    return {"root": root, "nodes": out.specs}


class _SpecKeys:
    """Holds no state: the attribute dicts of its instances are call specs (``_call_node``)."""


@dataclass(slots=True)
class _Flat:
    """The specs of one flow as they are made, and the one empty ``kwargs`` its calls without any share
    (no one changes a spec's ``kwargs``: envelopes carry copies)."""

    specs: list[dict[str, Any]] = field(default_factory=list)
    no_kwargs: dict[str, Any] = field(default_factory=dict)


def _call_node(node: Call, path: str, parent: str | None, out: _Flat) -> dict[str, Any]:
    """The spec of a call node: a plain ``dict`` that shares its table of keys with every other one.

    CPython keeps one table of keys for the attribute dicts of all instances of a class (PEP 412), so
    a spec made as one holds only its values: 176 bytes instead of the 464 a dict of 11 keys of its
    own takes (3.11), most of what a wide chord's submission holds per call. It equals, encodes and
    copies as any dict; a key added to it later only makes it an ordinary one again.
    """
    fields = {"path": path, "parent": parent, **call_spec(node, path)}
    if not fields["kwargs"]:
        fields["kwargs"] = out.no_kwargs
    holder = _SpecKeys()
    for name, value in fields.items():
        setattr(holder, name, value)
    return vars(holder)


def _encode(node: Any, path: str, parent: str | None, depth: int, out: _Flat) -> None:
    if depth > MAX_DEPTH:
        raise InvalidFlow(f"nests deeper than {MAX_DEPTH} levels (or contains itself)", path=path)
    if len(out.specs) >= MAX_NODES:
        raise InvalidFlow(f"has more than {MAX_NODES:,} nodes; split it into several runs", path=path)
    if isinstance(node, Call):
        out.specs.append(_call_node(node, path, parent, out))
        return
    spec: dict[str, Any] = {"path": path, "parent": parent}
    out.specs.append(spec)
    if isinstance(node, Each):
        spec.update(kind="each", siblings=node.siblings, template=call_spec(node.template, path))
        return
    if isinstance(node, Sequence):
        spec.update(kind="sequence", children=_children(node.steps, path, depth, out, "sequence"))
    elif isinstance(node, Parallel):
        spec.update(
            kind="parallel",
            siblings=node.siblings,
            children=_children(node.branches, path, depth, out, "parallel"),
        )
    elif isinstance(node, Chord):
        header = f"{path}.0"
        spec.update(kind="chord", children=[header, f"{path}.1"])
        group: dict[str, Any] = {
            "path": header,
            "parent": path,
            "kind": "parallel",
            "siblings": node.siblings,
        }
        out.specs.append(group)
        group["children"] = _children(node.header, header, depth + 1, out, "chord header", allow_empty=True)
        _encode(node.body, f"{path}.1", path, depth + 1, out)
    else:
        raise InvalidFlow(f"{node!r} is not a flow node", path=path)


def _children(
    nodes: tuple[Node, ...],
    path: str,
    depth: int,
    out: _Flat,
    what: str,
    *,
    allow_empty: bool = False,
) -> list[str]:
    if not nodes and not allow_empty:
        raise InvalidFlow(f"{what} has no nodes; give it at least one", path=path)
    paths = [f"{path}.{i}" for i in range(len(nodes))]
    for child, child_path in zip(nodes, paths, strict=True):
        _encode(child, child_path, path, depth + 1, out)
    return paths


def call_spec(node: Call, path: str) -> dict[str, Any]:
    check_name(node.command)
    if not isinstance(node.args, tuple | list):
        raise InvalidFlow(f"args of {node.command!r} must be a tuple or list", path=path)
    args = list(node.args)
    kwargs = dict(node.kwargs)
    check_payload(args, f"node {path} ({node.command}) args")
    check_payload(kwargs, f"node {path} ({node.command}) kwargs")
    return {
        "kind": "call",
        "command": node.command,
        "args": args,
        "kwargs": kwargs,
        "retry": node.retry.to_doc() if node.retry else None,
        "timeout_s": node.timeout.total_seconds() if node.timeout else None,
        "route": node.route,
        "key": node.key,
        "immutable": node.immutable,
    }


def call_specs(doc: Mapping[str, Any]) -> Iterable[dict[str, Any]]:
    """Every call spec in a flat flow, including the templates of ``each`` nodes."""
    for spec in doc["nodes"]:
        if spec["kind"] == "call":
            yield spec
        elif spec["kind"] == "each":
            yield spec["template"]


def reroot(doc: Mapping[str, Any], root: str) -> dict[str, Any]:
    """The same flow with its paths moved under ``root`` (where an expansion is grafted)."""
    old = doc["root"]

    def move(path: str | None) -> str | None:
        if path is None:
            return None
        return root + path[len(old) :]

    nodes = []
    for spec in doc["nodes"]:
        moved: dict[str, Any] = dict(spec, path=move(spec["path"]), parent=move(spec["parent"]))
        if "children" in spec:
            moved["children"] = [move(child) for child in spec["children"]]
        nodes.append(moved)
    return {"root": root, "nodes": nodes}


WIDE_GROUP = 1_000
"""Children from which a stored part names a group's children by their count (``narrowed``)."""


def narrowed(spec: dict[str, Any]) -> dict[str, Any]:
    """A group's spec as a part stores it: its children as their count (``width``) when there are many
    and each is ``<path>.<index>``, as ``flows`` names them, so the header of a chord of a million calls
    is a few bytes, not 22 MB of paths. ``widened`` gives the spec back."""
    children = spec.get("children")
    if children is None or len(children) < WIDE_GROUP:
        return spec
    path = spec["path"]
    if any(child != f"{path}.{index}" for index, child in enumerate(children)):
        return spec
    stored = {key: value for key, value in spec.items() if key != "children"}
    stored["width"] = len(children)
    return stored


def widened(spec: dict[str, Any], named: Callable[[str], str] = str) -> dict[str, Any]:
    """The spec ``narrowed`` stored, with its children named again; ``named`` may hand back the path
    strings a run already holds, so a million children do not name themselves twice in memory."""
    if "width" not in spec:
        return spec
    whole = {key: value for key, value in spec.items() if key != "width"}
    whole["children"] = [named(f"{spec['path']}.{index}") for index in range(int(spec["width"]))]
    return whole
