"""Events: frozen values in memory, versioned documents in the store.

This module is the only place that knows the stored form. A run's events are
numbered ``seq`` 1..N with no gaps; the document ``_id`` is ``"<run>/<seq>"``
zero-padded, so a store's primary key alone makes a second append of the same
``seq`` a conflict.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .errors import CorruptEvent, InvalidEvent

SCHEMA_VERSION = 1
SEQ_DIGITS = 10

# Run lifecycle
RUN_SUBMITTED = "run.submitted"
RUN_SUCCEEDED = "run.succeeded"
RUN_FAILED = "run.failed"
RUN_CANCELLED = "run.cancelled"
RUN_FLOW_PART = "run.flow_part"
"""The rest of a submission too large for one event, logged right after its ``run.submitted``."""
# One attempt of one command node
COMMAND_DISPATCHED = "command.dispatched"
COMMAND_STARTED = "command.started"
COMMAND_SUCCEEDED = "command.succeeded"
COMMAND_EXPANDED = "command.expanded"
COMMAND_FAILED = "command.failed"
OUTCOME_IGNORED = "outcome.ignored"
# Who drives the run
OWNER_CHANGED = "owner.changed"
# Decisions about a node
RETRY_SCHEDULED = "retry.scheduled"
NODE_FAILED = "node.failed"

RUN_TERMINAL = frozenset({RUN_SUCCEEDED, RUN_FAILED, RUN_CANCELLED})
KNOWN_TYPES = frozenset(
    {
        RUN_SUBMITTED,
        RUN_SUCCEEDED,
        RUN_FAILED,
        RUN_CANCELLED,
        RUN_FLOW_PART,
        COMMAND_DISPATCHED,
        COMMAND_STARTED,
        COMMAND_SUCCEEDED,
        COMMAND_EXPANDED,
        COMMAND_FAILED,
        OUTCOME_IGNORED,
        RETRY_SCHEDULED,
        NODE_FAILED,
        OWNER_CHANGED,
    }
)

SYSTEM_PREFIXES = frozenset(type_.split(".", 1)[0] for type_ in KNOWN_TYPES)
"""First segments of the types evenflow writes; a command's own events may not use them."""
MAX_TYPE_CHARS = 200
_DOMAIN_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*")


def is_domain_type(type_: str) -> bool:
    """A type a command may emit: dotted words, not in a namespace evenflow writes."""
    return (
        isinstance(type_, str)
        and len(type_) <= MAX_TYPE_CHARS
        and _DOMAIN_TYPE.fullmatch(type_) is not None
        and type_.split(".", 1)[0] not in SYSTEM_PREFIXES
    )


def check_domain_type(type_: object) -> str:
    """``type_`` if a command may emit it, else ``InvalidEvent`` saying what a type looks like."""
    if isinstance(type_, str) and is_domain_type(type_):
        return type_
    if isinstance(type_, str) and type_.split(".", 1)[0] in SYSTEM_PREFIXES:
        reserved = ", ".join(f"{prefix}.*" for prefix in sorted(SYSTEM_PREFIXES))
        raise InvalidEvent(
            f"event type {type_!r} is in a namespace evenflow writes ({reserved}); "
            "name your events after your domain, such as 'order.placed'"
        )
    raise InvalidEvent(
        f"event type {type_!r:.80} is not a dotted name of letters, digits, '_' and '-' of at most "
        f"{MAX_TYPE_CHARS} characters; use one such as 'order.placed'"
    )


def utcnow() -> datetime:
    """Now, in UTC, at the millisecond precision BSON keeps."""
    return to_millis(datetime.now(UTC))


def to_millis(moment: datetime) -> datetime:
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def event_id(run: str, seq: int) -> str:
    return f"{run}/{seq:0{SEQ_DIGITS}d}"


def run_of(event_id: str) -> str:
    """The run an event id (``<run>/<seq>``) belongs to."""
    return event_id.rsplit("/", 1)[0]


@dataclass(frozen=True, slots=True)
class Event:
    run: str
    seq: int
    type: str
    at: datetime
    node: str | None = None
    attempt: int | None = None
    command: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    by: str | None = None
    causation: str | None = None
    correlation: str | None = None

    @property
    def id(self) -> str:
        return event_id(self.run, self.seq)


DOC_FIELDS = ("_id", "v", "run", "seq", "type", "at", "node", "attempt", "command", "data", "by", "causation",
              "correlation")  # fmt: skip
"""The fields of a stored event; a store may keep more beside them (MongoDB's feed stamps, the open
mark), which are its own and never shown as part of the event."""


def to_doc(event: Event) -> dict[str, Any]:
    return {
        "_id": event.id,
        "v": SCHEMA_VERSION,
        "run": event.run,
        "seq": event.seq,
        "type": event.type,
        "at": event.at,
        "node": event.node,
        "attempt": event.attempt,
        "command": event.command,
        "data": dict(event.data),
        "by": event.by,
        "causation": event.causation,
        "correlation": event.correlation,
    }


def from_doc(doc: Mapping[str, Any]) -> Event:
    """Decode a stored event, refusing anything this version cannot fold."""
    try:
        version = doc.get("v", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise CorruptEvent(
                f"event {doc.get('_id')!r} has schema version {version}; this evenflow reads "
                f"version {SCHEMA_VERSION}: upgrade evenflow"
            )
        event = Event(
            run=doc["run"],
            seq=doc["seq"],
            type=doc["type"],
            at=_aware(doc["at"]),
            node=doc.get("node"),
            attempt=doc.get("attempt"),
            command=doc.get("command"),
            data=doc.get("data") or {},
            by=doc.get("by"),
            causation=doc.get("causation"),
            correlation=doc.get("correlation"),
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise CorruptEvent(f"event {doc.get('_id')!r} does not decode: missing or bad {exc}") from exc
    if event.type not in KNOWN_TYPES and not is_domain_type(event.type):
        raise CorruptEvent(f"event {event.id!r} has unknown type {event.type!r}")
    if doc.get("_id", event.id) != event.id:
        raise CorruptEvent(f"event {doc.get('_id')!r} is stored under the wrong id for {event.id!r}")
    return event


def _aware(moment: datetime) -> datetime:
    """Stores may hand back naive UTC datetimes; events always carry a zone."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
