"""The OpenAPI document of ``/api/v1``, its schemas derived from the answers' own dataclasses.

Deriving them keeps the document true when a projection gains a field; the
paths and parameters are written out here, beside what they mean.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

_STATE = {"type": "string", "enum": ["running", "succeeded", "failed", "cancelled"]}
_WHEN = "30s, 15m, 1h, 2d (that long ago) or an ISO 8601 time (UTC unless it names a zone)"


def document() -> dict[str, Any]:
    from projections.audit import AuditEntry
    from projections.command_stats import CommandStats
    from projections.failures import FailureGroup
    from projections.run_status import RunStatus
    from projections.throughput import Bucket
    from projections.worker_activity import WorkerActivity

    from ..store.checkpoints import ListenerLag

    shapes = (RunStatus, AuditEntry, CommandStats, FailureGroup, Bucket, WorkerActivity, ListenerLag)
    schemas = {shape.__name__: schema_of(shape) for shape in shapes}
    schemas["RunPage"] = {
        "type": "object",
        "properties": {"runs": _array("RunStatus"), "next": {"type": ["string", "null"]}},
        "required": ["runs", "next"],
    }
    schemas["RunGraph"] = _graph_schema()
    schemas["Error"] = {
        "type": "object",
        "properties": {"error": {"type": "string"}, "parameter": {"type": "string"}},
        "required": ["error"],
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "evenflow", "version": _version(), "description": "The event log, read."},
        "paths": _paths(),
        "components": {
            "schemas": schemas,
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
        },
    }


def _paths() -> dict[str, Any]:
    window = [_query("since", "from this moment: " + _WHEN), _query("until", "before this moment: " + _WHEN)]
    run = {"name": "run", "in": "path", "required": True, "schema": {"type": "string"}}
    return {
        "/api/v1/runs": _get(
            "Runs, newest first, a page at a time",
            "RunPage",
            [
                _query("state", "only runs in this state", _STATE),
                _query("flow", "only runs of this flow name"),
                _query("since", "submitted at or after: " + _WHEN),
                _query("until", "submitted before: " + _WHEN),
                _query("command", "only runs that called this command"),
                _query("error_type", "only runs with an attempt that failed with this error type"),
                _query("key", "only the run submitted with this idempotency key"),
                _query("limit", "rows per page, 1 to 1000 (default 20)", {"type": "integer"}),
                _query("after", "the 'next' of the previous page"),
            ],
        ),
        "/api/v1/runs/{run}": _get("One run's status, result or error", "RunStatus", [run]),
        "/api/v1/runs/{run}/events": _get(
            "The run's events with who and why, and the runs its listeners chained",
            _array("AuditEntry"),
            [run, _query("run_only", "true: this run's events alone", {"type": "boolean"})],
        ),
        "/api/v1/listeners": _get(
            "Each listener's place: events logged after it (any type) and when the first was logged",
            _array("ListenerLag"),
            [],
        ),
        "/api/v1/runs/{run}/graph": _get(
            "The flow as a tree of nodes with their states, and every attempt", "RunGraph", [run]
        ),
        "/api/v1/runs/{run}/stream": {
            "get": {
                "summary": "Server-sent events: 'changed' each time the run's log grows, 'ended' once",
                "parameters": [run],
                "responses": {
                    "200": {"description": "an event stream", "content": {"text/event-stream": {}}}
                },
            }
        },
        "/api/v1/runs/{run}/cancel": _post("Cancel a running run (with --control and the token)", run),
        "/api/v1/runs/{run}/retry": _post("Log the run that continues a failed one (--control, token)", run),
        "/api/v1/runs/{run}/resume": _post(
            "Drive a parked or orphaned run from now on (serve --http, token; 409 from evenflow ui)", run
        ),
        **_figures(window),
    }


def _figures(window: list[dict[str, Any]]) -> dict[str, Any]:
    """The aggregate answers, each over a window of time."""
    return {
        "/api/v1/stats": _get(
            "Per command: calls, failures, retries, durations", _array("CommandStats"), window
        ),
        "/api/v1/failures": _get("Failures by error type and command", _array("FailureGroup"), window),
        "/api/v1/throughput": _get(
            "Events per bucket of time, aligned to the epoch, oldest first",
            _array("Bucket"),
            [
                *window,
                _query("bucket", "each bucket's length: 30s, 15m, 1h, 1d (default 1h)"),
                _query("completions", "true: only ended attempts", {"type": "boolean"}),
            ],
        ),
        "/api/v1/workers": _get(
            "Per worker: attempts started, busy seconds, failures", _array("WorkerActivity"), window
        ),
    }


def _get(summary: str, answer: str | dict[str, Any], parameters: list[dict[str, Any]]) -> dict[str, Any]:
    schema = {"$ref": f"#/components/schemas/{answer}"} if isinstance(answer, str) else answer
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    return {
        "get": {
            "summary": summary,
            "parameters": parameters,
            "security": [{}, {"token": []}],
            "responses": {
                "200": {"description": "the answer", "content": {"application/json": {"schema": schema}}},
                "400": {"description": "a parameter it cannot take, named", **error},
                "401": {"description": "a token is set and the request did not carry it", **error},
                "404": {"description": "no such run", **error},
            },
        }
    }


def _post(summary: str, run: dict[str, Any]) -> dict[str, Any]:
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    return {
        "post": {
            "summary": summary,
            "parameters": [run],
            "security": [{"token": []}],
            "responses": {
                "200": {
                    "description": "done",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                "401": {"description": "no token, or the wrong one", **error},
                "404": {"description": "no such run", **error},
                "409": {
                    "description": "the run's state forbids it, or another process owns the home",
                    **error,
                },
            },
        }
    }


def _query(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "query", "description": description, "schema": schema or {"type": "string"}}


def _array(name: str) -> dict[str, Any]:
    return {"type": "array", "items": {"$ref": f"#/components/schemas/{name}"}}


def schema_of(shape: type) -> dict[str, Any]:
    """A dataclass's JSON Schema as ``json_text`` writes it."""
    hints = typing.get_type_hints(shape)
    fields = [field.name for field in dataclasses.fields(shape)]
    return {
        "type": "object",
        "properties": {name: _schema(hints[name]) for name in fields},
        "required": fields,
    }


def _schema(hint: Any) -> dict[str, Any]:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [_schema(arg) for arg in args]}
    if dataclasses.is_dataclass(hint):
        return schema_of(typing.cast(type, hint))
    simple = {type(None): {"type": "null"}, bool: {"type": "boolean"}, int: {"type": "integer"},
              float: {"type": "number"}, str: {"type": "string"},
              datetime: {"type": "string", "format": "date-time"}}  # fmt: skip
    if hint in simple:
        return simple[hint]
    if origin is not None and isinstance(origin, type) and issubclass(origin, Mapping):
        return {"type": "object", "additionalProperties": _schema(args[1]) if args else {}}
    if origin is not None and isinstance(origin, type) and issubclass(origin, Sequence | tuple | list):
        return {"type": "array", "items": _schema(args[0]) if args else {}}
    return {}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("evenflow")
    except PackageNotFoundError:
        return "0+unknown"


def _graph_schema() -> dict[str, Any]:
    text, maybe = {"type": "string"}, {"type": ["string", "null"]}
    node = {
        "type": "object",
        "properties": {
            "path": text, "parent": maybe, "kind": maybe, "command": maybe, "state": text,
            "attempts": {"type": "integer"}, "children": {"type": "array", "items": text},
            "hidden": {"type": "object", "additionalProperties": {"type": "integer"}}, "error": maybe,
        },
        "required": ["path", "parent", "kind", "state", "children", "hidden"],
    }  # fmt: skip
    attempt = {
        "type": "object",
        "properties": {
            "node": maybe, "attempt": {"type": ["integer", "null"]}, "command": maybe, "worker": maybe,
            "dispatched_at": text, "started_at": maybe, "ended_at": maybe, "outcome": maybe,
            "reason": maybe, "error_type": maybe, "duration_s": {"type": ["number", "null"]},
        },
        "required": ["node", "attempt", "command", "dispatched_at", "outcome"],
    }  # fmt: skip
    return {
        "type": "object",
        "properties": {
            "run": text, "state": text, "last_seq": {"type": "integer"}, "flow": maybe,
            "nodes": {"type": "array", "items": node}, "attempts": {"type": "array", "items": attempt},
        },
        "required": ["run", "state", "last_seq", "nodes", "attempts"],
    }  # fmt: skip
