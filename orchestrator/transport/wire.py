"""Envelopes and outcomes as JSON, for executors whose commands run in another host's process.

JSON rather than pickle: a peer can send only data, never code, and any
language can speak it. The log's values (checked by ``check_payload``) are JSON
plus bytes, UTC datetimes and non-finite floats, carried as ``{"$bytes": base64}``,
``{"$date": iso}`` and ``{"$float": "NaN" | "Infinity" | "-Infinity"}``; payload
keys may not start with ``$``, so the tags are unambiguous. Bare ``NaN`` or
``Infinity``, and numbers too big for a float, are not JSON and are refused.
Everything read from a peer is checked here, field by field, before it can
reach the engine or the log: a bad message raises ``ProtocolError`` and is dropped.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from orchestrator.core.codec import check_payload, is_text
from orchestrator.core.context import MAX_EMITTED
from orchestrator.core.envelope import Envelope, ErrorInfo, Outcome
from orchestrator.core.errors import PayloadError, ProtocolError
from orchestrator.core.events import is_domain_type

MAX_MESSAGE_BYTES = 24 * 1024 * 1024
"""A message as JSON: room for the largest event the log holds (16 MiB as BSON; base64 makes bytes a
third larger) plus framing, so whatever the log can take can be sent."""

_REASONS = ("raised", "timeout", "lost")
_NON_FINITE = ("NaN", "Infinity", "-Infinity")


# --- tagged JSON ------------------------------------------------------------------------


def dumps(value: Any) -> bytes:
    """One message as compact UTF-8 JSON, for every value ``check_payload`` accepts.

    A non-finite float or a lone surrogate (which UTF-8 cannot hold) fails the
    fast path; only then is the value walked to tag its floats and sent as ASCII.
    """
    try:
        return _encode(value, ascii_only=False)
    except ValueError:  # allow_nan=False refused a float, or UnicodeEncodeError
        return _encode(_tag_floats(value), ascii_only=True)


def _encode(value: Any, *, ascii_only: bool) -> bytes:
    text = json.dumps(value, default=_tag, separators=(",", ":"), ensure_ascii=ascii_only, allow_nan=False)
    return text.encode()


def loads(data: bytes, *, max_bytes: int = MAX_MESSAGE_BYTES) -> Any:
    """Decode one message; ProtocolError if it is too big, not UTF-8 JSON, or badly tagged."""
    if len(data) > max_bytes:
        raise ProtocolError(f"message of {len(data):,} bytes is over the {max_bytes:,}-byte limit")
    try:
        text = data.decode()  # json.loads would also take UTF-16 and UTF-32, and encoded surrogates
        return json.loads(text, object_hook=_untag, parse_constant=_no_constant, parse_float=_finite)
    except ProtocolError:
        raise
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ProtocolError(f"message is not valid JSON: {exc}") from None


def _tag(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode()}
    if isinstance(value, datetime):
        if value.tzinfo is None:  # naive means UTC, as in BSON; astimezone would take it as local time
            value = value.replace(tzinfo=UTC)
        return {"$date": value.astimezone(UTC).isoformat()}
    raise TypeError(f"{type(value).__name__} is not part of evenflow's wire format")


def _tag_floats(value: Any) -> Any:
    """``value`` with each NaN or infinity replaced by its ``$float`` tag."""
    if isinstance(value, float) and not math.isfinite(value):
        return {"$float": "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")}
    if isinstance(value, list | tuple):
        return [_tag_floats(item) for item in value]
    if isinstance(value, dict):
        return {key: _tag_floats(item) for key, item in value.items()}
    return value


def _untag(doc: dict[str, Any]) -> Any:
    if len(doc) != 1:
        return doc
    ((key, value),) = doc.items()
    if key == "$bytes":
        if not isinstance(value, str):
            raise ProtocolError("$bytes must hold a base64 string")
        try:
            return base64.b64decode(value, validate=True)
        except ValueError:  # binascii.Error, or a ValueError for non-ASCII text
            raise ProtocolError("$bytes holds invalid base64") from None
    if key == "$date":
        if not isinstance(value, str):
            raise ProtocolError("$date must hold an ISO 8601 string")
        try:
            when = datetime.fromisoformat(value)
            return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
        except (ValueError, OverflowError):  # OverflowError: an offset that leaves years 1-9999
            raise ProtocolError(f"$date {value[:40]!r} is not an ISO 8601 time in years 1-9999") from None
    if key == "$float":
        if value not in _NON_FINITE:
            raise ProtocolError(f"$float must hold one of {_NON_FINITE}")
        return float(value)
    return doc


def _no_constant(name: str) -> Any:
    raise ProtocolError(f'{name} is not valid JSON; send it as {{"$float": "{name}"}}')


def _finite(text: str) -> float:
    """A JSON number as a float; one too big for a float (``1e999``) would silently become infinity."""
    value = float(text)
    if not math.isfinite(value):
        raise ProtocolError(f"number {text[:40]} is out of a float's range")
    return value


# --- envelopes --------------------------------------------------------------------------


def envelope_to_doc(envelope: Envelope) -> dict[str, Any]:
    return {
        "run": envelope.run,
        "node": envelope.node,
        "attempt": envelope.attempt,
        "command": envelope.command,
        "args": list(envelope.args),
        "kwargs": dict(envelope.kwargs),
        "deadline": envelope.deadline,
        "key": envelope.key,
    }


def envelope_from_doc(doc: Any) -> Envelope:
    """An envelope from a peer, every field checked (workers run only names they registered)."""
    doc = _mapping(doc, "envelope")
    deadline = doc.get("deadline")
    if deadline is not None and not isinstance(deadline, datetime):
        raise ProtocolError("envelope deadline must be a $date or null")
    args, kwargs = _field(doc, "args", list), _field(doc, "kwargs", dict)
    _payload(args, "args")
    _payload(kwargs, "kwargs")
    return Envelope(
        run=_text(doc, "run"),
        node=_text(doc, "node"),
        attempt=_count(doc, "attempt"),
        command=_text(doc, "command"),
        args=args,
        kwargs=kwargs,
        deadline=deadline,
        key=_field(doc, "key", str, default=""),
    )


# --- outcomes ---------------------------------------------------------------------------


def outcome_to_doc(outcome: Outcome) -> dict[str, Any]:
    return {
        "run": outcome.run,
        "node": outcome.node,
        "attempt": outcome.attempt,
        "ok": outcome.ok,
        "result": outcome.result,
        "error": outcome.error.to_doc() if outcome.error is not None else None,
        "expansion": dict(outcome.expansion) if outcome.expansion is not None else None,
        "started_at": outcome.started_at,
        "finished_at": outcome.finished_at,
        "by": outcome.by,
        "events": [dict(event) for event in outcome.events],
    }


def outcome_from_doc(doc: Any) -> Outcome:
    """An outcome from a peer, every field checked before it can reach the log.

    A malformed outcome is a ``ProtocolError``. A well-formed one whose result,
    flow or events the log cannot hold is let through: the engine ends that
    attempt failed with the reason, as it does for every executor.
    """
    doc = _mapping(doc, "outcome")
    ok = doc.get("ok")
    if type(ok) is not bool:
        raise ProtocolError("outcome ok must be true or false")
    error = doc.get("error")
    if ok == (error is not None):
        raise ProtocolError("an outcome has an error exactly when it is not ok")
    expansion = doc.get("expansion")
    if expansion is not None and not (ok and isinstance(expansion, dict)):
        raise ProtocolError("an outcome's expansion must be a flow document on a successful outcome")
    return Outcome(
        run=_text(doc, "run"),
        node=_text(doc, "node"),
        attempt=_count(doc, "attempt"),
        ok=ok,
        result=doc.get("result"),
        error=_error(error) if error is not None else None,
        expansion=expansion,
        started_at=_when(doc, "started_at"),
        finished_at=_when(doc, "finished_at"),
        by=_name(doc, "by"),
        events=_emitted(doc.get("events")),
    )


def _emitted(events: Any) -> tuple[dict[str, Any], ...]:
    """A peer's emitted events, in the shape ``emit`` gives them (their data is checked by the engine)."""
    if events is None:
        return ()
    if not isinstance(events, list) or len(events) > MAX_EMITTED:
        raise ProtocolError(f"an outcome's events must be a list of at most {MAX_EMITTED}")
    checked = []
    for event in events:
        event = _mapping(event, "event")
        type_ = _field(event, "type", str)
        if not is_domain_type(type_):
            raise ProtocolError(f"event type {type_!r:.80} is not one a command may emit")
        checked.append({"type": type_, "data": _field(event, "data", dict, default={})})
    return tuple(checked)


def _error(doc: Any) -> ErrorInfo:
    doc = _mapping(doc, "error")
    mro = _field(doc, "mro", list, default=[])
    if not all(isinstance(name, str) for name in mro):
        raise ProtocolError("error mro must be a list of strings")
    reason = _field(doc, "reason", str, default="raised")
    if reason not in _REASONS:
        raise ProtocolError(f"error reason must be one of {_REASONS}")
    return ErrorInfo(  # cut to the sizes a local error has, so no peer can bloat the log
        type=_text(doc, "type"),
        message=_field(doc, "message", str, default=""),
        mro=tuple(mro),
        traceback=_field(doc, "traceback", str, default=""),
        reason=reason,
    )


# --- field checks -----------------------------------------------------------------------


def _mapping(doc: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(doc, dict):
        raise ProtocolError(f"{what} must be a JSON object, got {type(doc).__name__}")
    return doc


def _field(doc: Mapping[str, Any], name: str, kind: type, *, default: Any = ...) -> Any:
    value = doc.get(name, default)
    if value is ...:
        raise ProtocolError(f"field {name!r} is missing")
    if value is not default and type(value) is not kind:
        raise ProtocolError(f"field {name!r} must be a {kind.__name__}, got {type(value).__name__}")
    return value


def _text(doc: Mapping[str, Any], name: str) -> str:
    value: str = _field(doc, name, str)
    if not value or len(value) > 1_000 or not is_text(value):
        raise ProtocolError(f"field {name!r} must be 1 to 1000 characters of valid Unicode")
    return value


def _name(doc: Mapping[str, Any], name: str) -> str | None:
    """An optional short text the log keeps as it is (who ran an attempt)."""
    value: str | None = _field(doc, name, str, default=None)
    if value is not None and (len(value) > 1_000 or not is_text(value)):
        raise ProtocolError(f"field {name!r} must be up to 1000 characters of valid Unicode")
    return value


def _count(doc: Mapping[str, Any], name: str) -> int:
    value: int = _field(doc, name, int)
    if not 1 <= value <= 1_000_000:
        raise ProtocolError(f"field {name!r} must be a whole number from 1 to 1000000")
    return value


def _when(doc: Mapping[str, Any], name: str) -> datetime | None:
    value = doc.get(name)
    if value is not None and not isinstance(value, datetime):
        raise ProtocolError(f"field {name!r} must be a $date or null")
    return value


def _payload(value: Any, path: str) -> None:
    try:
        check_payload(value, path)
    except PayloadError as exc:
        raise ProtocolError(f"{path} cannot go into the log: {exc}") from None
