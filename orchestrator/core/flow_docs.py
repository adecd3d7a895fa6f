"""Flow documents from outside Python, read and checked in one place, whoever hands them in.

The service (a ``Client`` or ``evenflow submit``), a listener host's triggers
and a worker's expansion all hand in the log's flat form
(``{"root": "r", "nodes": [...]}``), written by anyone: another language, a
file, a peer. ``checked_flow`` gives the canonical document ``encode_flow``
writes, or an ``InvalidFlow``, ``InvalidOption`` or ``PayloadError`` naming what
is wrong and where (``nodes[2].timeout_s``), never another exception. ``FIELDS``
is the one schema: a field it does not list is refused by name, with the ones
allowed, since a misspelt option silently ignored is an option not applied. A
call's stored options are read into the values ``Call.options`` takes and held
to the same rule (``check_options``) as options given in Python or at
registration.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from .errors import EvenflowError, InvalidFlow, InvalidOption
from .flows import (
    DEFAULT_SIBLINGS,
    MAX_NODES,
    ROOT,
    Call,
    Chord,
    Each,
    Node,
    Parallel,
    Sequence,
    check_siblings,
    encode_flow,
)
from .policy import RetryPolicy
from .registry import MAX_TIMEOUT

CALL_FIELDS = ("command", "args", "kwargs", "retry", "timeout_s", "route", "key", "immutable")
FIELDS: dict[str, tuple[str, ...]] = {
    "call": CALL_FIELDS,
    "each": ("template", "siblings"),
    "sequence": ("children",),
    "parallel": ("children", "siblings"),
    "chord": ("children",),
}
"""Each node kind's own fields; every node also has ``path``, ``kind`` and an optional ``parent``."""
REQUIRED = {"call": "command", "each": "template", "sequence": "children", "parallel": "children"}
REQUIRED["chord"] = "children"
NODE_FIELDS = ("path", "parent", "kind")
DOC_FIELDS = ("root", "nodes")


def checked_flow(doc: Any) -> dict[str, Any]:
    """The canonical, checked form of a flow document from anyone: what every entry point stores."""
    return encode_flow(parse_flow(doc))


def parse_flow(doc: Any) -> Node:
    """The node tree of a flow document from anyone (``checked_flow`` when the document is what is wanted).

    Only ``path``, ``kind``, ``children`` and ``command`` are required; other
    fields take their defaults. Anything malformed is an ``InvalidFlow`` naming
    what is wrong, never another exception.
    """
    if not isinstance(doc, Mapping) or not isinstance(doc.get("nodes"), list):
        got = type(doc).__name__ if not isinstance(doc, Mapping) else "an object without a list of nodes"
        raise InvalidFlow(f'a JSON flow is an object {{"root": "r", "nodes": [...]}}, got {got}')
    _known_fields(doc, DOC_FIELDS, "", "a flow document")
    if len(doc["nodes"]) > MAX_NODES:
        raise InvalidFlow(f"a flow has at most {MAX_NODES} nodes, this one {len(doc['nodes'])}")
    try:
        for index, spec in enumerate(doc["nodes"]):
            check_node(spec, f"nodes[{index}]")
        return decode_flow({"root": doc.get("root", ROOT), "nodes": doc["nodes"]})
    except EvenflowError:
        raise
    except KeyError as exc:
        raise InvalidFlow(
            f"a node or field is missing: {exc}; see the JSON flow format in the README"
        ) from None
    except RecursionError:
        raise InvalidFlow("the flow's children form a cycle or nest too deep") from None
    except (TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise InvalidFlow(f"the flow document is malformed: {exc}") from None


def check_node(spec: Any, where: str) -> None:
    """One node against the schema: an object of a known kind with its required fields and no others."""
    if not isinstance(spec, Mapping):
        raise InvalidFlow(f"a node is an object, got {type(spec).__name__}", path=where)
    kind = spec.get("kind")
    if kind not in FIELDS:
        raise InvalidFlow(f"kind {kind!r:.40} is not one of {', '.join(FIELDS)}", path=f"{where}.kind")
    if not isinstance(spec.get("path"), str):
        raise InvalidFlow("every node needs a path, a string such as 'r.0'", path=f"{where}.path")
    _known_fields(spec, NODE_FIELDS + FIELDS[kind], where, f"a {kind} node")
    if REQUIRED[kind] not in spec:
        raise InvalidFlow(f"a {kind} node needs {REQUIRED[kind]!r}", path=f"{where}.{REQUIRED[kind]}")
    if kind == "call":
        _check_call(spec, where)
    elif kind == "each":
        template = spec["template"]
        if not isinstance(template, Mapping) or template.get("kind", "call") != "call":
            raise InvalidFlow("an each node's template is a call node", path=f"{where}.template")
        _check_call({"kind": "call", **template}, f"{where}.template")
    elif not isinstance(spec["children"], list):
        raise InvalidFlow("children is a list of node paths", path=f"{where}.children")


def _check_call(spec: Mapping[str, Any], where: str) -> None:
    _known_fields(spec, NODE_FIELDS + CALL_FIELDS, where, "a call node")
    if "command" not in spec:
        raise InvalidFlow("a call node needs 'command'", path=f"{where}.command")
    for field, kind in (("args", list), ("kwargs", dict)):
        if not isinstance(spec.get(field, kind()), kind):
            raise InvalidFlow(f"a call's {field} must be a JSON {kind.__name__}", path=f"{where}.{field}")
    for field in ("retry", "timeout_s", "route", "key", "immutable"):
        if spec.get(field) is None:
            continue
        try:  # one option at a time, so the error names its field
            Call(spec["command"]).options(**call_options({"command": spec["command"], field: spec[field]}))
        except InvalidOption as exc:
            raise InvalidOption(f"invalid flow at {where}.{field}: {exc}") from None


def _known_fields(spec: Mapping[str, Any], allowed: tuple[str, ...], where: str, what: str) -> None:
    unknown = [name for name in spec if name not in allowed]
    if unknown:
        field = f"{where}.{unknown[0]}" if where else str(unknown[0])
        raise InvalidFlow(f"unknown field {unknown[0]!r:.40}; {what} has {', '.join(allowed)}", path=field)


def decode_flow(doc: Mapping[str, Any]) -> Node:
    """The node tree of a document ``encode_flow`` wrote (the log's own); others go through ``parse_flow``."""
    by_path = {spec["path"]: spec for spec in doc["nodes"]}
    return _decode(by_path, doc["root"])


def _decode(by_path: Mapping[str, Mapping[str, Any]], path: str) -> Node:
    spec = by_path[path]
    kind = spec["kind"]
    if kind == "call":
        return _decode_call(spec)
    if kind == "each":
        return Each(_decode_call(spec["template"]), check_siblings(spec.get("siblings", DEFAULT_SIBLINGS)))
    children = tuple(_decode(by_path, child) for child in spec["children"])
    if kind == "sequence":
        return Sequence(children)
    if kind == "parallel":
        return Parallel(children, check_siblings(spec.get("siblings", DEFAULT_SIBLINGS)))
    if kind == "chord":
        header = by_path[spec["children"][0]]
        header_nodes = tuple(_decode(by_path, c) for c in header["children"])
        return Chord(header_nodes, children[1], check_siblings(header.get("siblings", DEFAULT_SIBLINGS)))
    raise InvalidFlow(f"unknown node kind {kind!r}", path=path)


def _decode_call(spec: Mapping[str, Any]) -> Call:
    if not isinstance(spec.get("args", []), list) or not isinstance(spec.get("kwargs", {}), dict):
        raise InvalidFlow("a call's args must be a list and its kwargs an object", path=spec.get("path"))
    node = Call(spec["command"], tuple(spec.get("args", ())), dict(spec.get("kwargs", {})))
    return node.options(**call_options(spec))


def call_options(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A stored call's options as the values ``Call.options`` takes (and checks); absent ones are None."""
    return {
        "retry": RetryPolicy.from_doc(spec["retry"]) if spec.get("retry") else None,
        "timeout": _timeout(spec) if spec.get("timeout_s") is not None else None,
        "route": spec.get("route"),
        "key": spec.get("key"),
        "immutable": spec.get("immutable", False),
    }


def _timeout(spec: Mapping[str, Any]) -> timedelta:
    """``timeout_s`` as a duration; the bound is ``check_options``'s, named in the document's unit."""
    seconds = spec["timeout_s"]
    limit = MAX_TIMEOUT.total_seconds()
    if not isinstance(seconds, int | float) or isinstance(seconds, bool) or not 0 < seconds <= limit:
        owner, bound = f"call({spec['command']!r})", f"(0, {limit:.0f}]"
        raise InvalidOption(f"{owner}: timeout_s must be seconds in {bound}, got {seconds!r:.30}")
    return timedelta(seconds=seconds)
