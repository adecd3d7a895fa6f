"""Events as BSON: the one encoder and decoder every store uses, so every store holds the same bytes.

Each event is encoded once, before anything of its append is written, and
checked against ``MAX_EVENT_BYTES``; an event BSON cannot hold, or one too
large, makes the store raise ``EventRefused`` naming every such event of the
batch, and nothing of the batch is written. Decoding gives back the Python
types that went in: BSON's 64-bit integers come back as ``int``, not
``bson.int64.Int64``, and datetimes aware, in UTC.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC
from typing import Any

import bson
from bson.codec_options import CodecOptions, TypeDecoder, TypeRegistry
from bson.errors import InvalidDocument
from bson.int64 import Int64

from orchestrator.core import events as ev
from orchestrator.core.codec import MAX_EVENT_BYTES
from orchestrator.core.errors import CorruptEvent, EventRefused
from orchestrator.core.events import Event

STAMP_BYTES = 64
"""Room kept in every event for the fields a store stamps on it, so all stores refuse the same events."""
EVENT_LIMIT = MAX_EVENT_BYTES - STAMP_BYTES
CORRUPT_FIELD = "corrupt"
"""Set on a placeholder document for a stored event that would not decode (embedded journal)."""


class _PlainInt(TypeDecoder):
    """BSON int64 as a plain ``int``: the type mapping promises an int comes back an int."""

    bson_type = Int64

    def transform_bson(self, value: Any) -> int:
        return int(value)


TYPE_REGISTRY = TypeRegistry([_PlainInt()])
CODEC_OPTIONS: CodecOptions[dict[str, Any]] = CodecOptions(
    tz_aware=True, tzinfo=UTC, type_registry=TYPE_REGISTRY
)
"""How every store decodes: what a PyMongo client of evenflow's is opened with, too."""


def encode_events(
    events: Sequence[Event], stamp: Callable[[Event], Mapping[str, Any]] | None = None
) -> list[bytes]:
    """Each event's stored BSON; ``EventRefused`` naming every event that cannot be stored.

    ``stamp`` gives the fields a store adds to an event's document beside the
    event's own (on MongoDB: the writer's id and counter the feed reads, the
    open mark of a submission); they take at most ``STAMP_BYTES``.
    """
    refused: list[tuple[Event, str]] = []
    blobs = [blob for _, blob in encoded(events, refused, stamp)]
    if refused:
        raise refusal(refused)
    return blobs


def encoded(
    events: Iterable[Event],
    refused: list[tuple[Event, str]],
    stamp: Callable[[Event], Mapping[str, Any]] | None = None,
) -> Iterator[tuple[Event, bytes]]:
    """Each event and its stored BSON, one at a time, so a large append never holds all of them; an
    event that cannot be stored is added to ``refused`` (with why) instead, and the walk goes on."""
    for event in events:
        doc, extra = ev.to_doc(event), stamp(event) if stamp is not None else {}
        doc.update(extra)
        try:
            blob = bson.encode(doc)
        except (InvalidDocument, UnicodeEncodeError, OverflowError, TypeError, ValueError) as exc:
            refused.append((event, f"holds a value BSON cannot encode ({type(exc).__name__}: {exc})"))
            continue
        size = len(blob)
        if size > EVENT_LIMIT and extra:  # the event's own size: less the stamp's elements
            size -= len(bson.encode(extra)) - 5
        if size > EVENT_LIMIT:
            refused.append((event, f"is {size:,} bytes, over the {EVENT_LIMIT:,}-byte limit of one event"))
            continue
        yield event, blob


def refusal(refused: Sequence[tuple[Event, str]]) -> EventRefused:
    """One error naming each refused event and why (shown in full for the first few)."""
    shown = "; ".join(f"{describe(event)} {why}" for event, why in refused[:3])
    more = f" (and {len(refused) - 3} more)" if len(refused) > 3 else ""
    return EventRefused(
        f"the log refused {len(refused)} event(s): {shown}{more}", events=[event.id for event, _ in refused]
    )


def describe(event: Event) -> str:
    node = f" of node {event.node}" if event.node else ""
    attempt = f" attempt {event.attempt}" if event.attempt else ""
    return f"event {event.id} ({event.type}{node}{attempt})"


def decode_doc(blob: bytes) -> dict[str, Any]:
    return bson.decode(blob, CODEC_OPTIONS)


def decode(doc: Mapping[str, Any]) -> Event:
    """A stored document as an event; ``CorruptEvent`` for a damaged one."""
    if CORRUPT_FIELD in doc:
        raise CorruptEvent(f"event {doc.get('_id')!r} is damaged in the store: {doc[CORRUPT_FIELD]}")
    return ev.from_doc(doc)


def round_trip(event: Event) -> Event:
    """The event as a store gives it back (BSON turns tuples into lists, drops microseconds)."""
    return ev.from_doc(decode_doc(bson.encode(ev.to_doc(event))))
