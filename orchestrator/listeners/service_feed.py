"""Listeners in another process (``evenflow listen``): the feed and triggers through the service.

The listening process holds no store. It asks the service for the feed from a
position, for its checkpoint, to save one, and to log triggers; the service
answers from its own store, so the log stays the one source of events (a
socket only carries requests, and a lost reply is asked for again from the
same position). ``ServiceFeed`` is the client's half, ``listener_request``
the service's.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from orchestrator.core import events as ev
from orchestrator.core.errors import CorruptEvent, InvalidOption
from orchestrator.core.events import Event
from orchestrator.core.listening import Trigger, check_patterns
from orchestrator.core.ports import FeedStore, Position

log = logging.getLogger("evenflow.listeners")

LISTENER_REQUESTS = frozenset({"feed", "head", "checkpoint", "save", "trigger"})
FEED_BYTES = 4 * 1024 * 1024
"""About how much of the feed one reply carries; a batch over it is read again, smaller."""
MAX_TRIGGERS_PER_REQUEST = 10_000
MAX_WAIT_S = 30.0
"""The longest a service holds a feed request that found nothing."""


class Asks(Protocol):
    def ask(self, kind: str, **body: Any) -> dict[str, Any]: ...


class ServiceFeed:
    """A ``FeedStore`` and trigger sink over a service connection (a ``Client``)."""

    def __init__(self, client: Asks, *, wait_s: float = 0.0) -> None:
        """``wait_s``: how long the service may hold a read that finds nothing (a long poll)."""
        self.client = client
        self.wait_s = wait_s

    def read_feed(
        self, position: Position | None, patterns: Sequence[str], limit: int
    ) -> tuple[list[Event], Position]:
        body = {"position": position, "patterns": list(patterns), "limit": limit, "wait_s": self.wait_s}
        reply = self.client.ask("feed", **body)
        events: list[Event] = []
        for doc in reply["events"]:
            try:
                events.append(ev.from_doc(doc))
            except CorruptEvent as exc:  # a newer service's type, say: skipped as the stores skip theirs
                log.error("the feed skips an event this evenflow cannot read: %s", exc)
        return events, dict(reply["position"])

    def feed_head(self, patterns: Sequence[str]) -> Position:
        return dict(self.client.ask("head", patterns=list(patterns))["position"])

    def load_checkpoint(self, name: str) -> Position | None:
        position = self.client.ask("checkpoint", name=name).get("position")
        return dict(position) if position is not None else None

    def save_checkpoint(self, name: str, position: Position) -> None:
        self.client.ask("save", name=name, position=position)

    def trigger(self, triggers: Sequence[Trigger]) -> None:
        for start in range(0, len(triggers), MAX_TRIGGERS_PER_REQUEST):
            chunk = triggers[start : start + MAX_TRIGGERS_PER_REQUEST]
            self.client.ask("trigger", triggers=[trigger.to_doc() for trigger in chunk])


def listener_request(
    store: FeedStore,
    trigger: Callable[[Sequence[Trigger]], None],
    kind: str,
    body: Mapping[str, Any],
    wait: Callable[[float], None] | None = None,
) -> dict[str, Any]:
    """The service's answer to one listener request (raises ours for a bad one).

    A feed request with ``wait_s`` that finds nothing is held until the
    service appends (``wait``) or ``wait_s`` passes, then read once more: a
    remote listener hears new events within milliseconds without polling fast.
    """
    if kind == "feed":
        patterns = check_patterns(_list(body, "patterns"))
        position = _position(body.get("position"), optional=True)
        limit, wait_s = body.get("limit"), body.get("wait_s", 0)
        if type(limit) is not int or not 0 < limit <= 10_000:
            raise InvalidOption("a feed request's limit must be a whole number from 1 to 10000")
        if not isinstance(wait_s, int | float) or not 0 <= wait_s <= MAX_WAIT_S:
            raise InvalidOption(f"a feed request's wait_s must be seconds from 0 to {MAX_WAIT_S}")
        deadline = time.monotonic() + wait_s
        while True:
            events, after = store.read_feed(position, patterns, limit)
            left = deadline - time.monotonic()
            if events or wait is None or left <= 0:
                return _batch(events, after, store, position, patterns, limit)
            wait(left)
    if kind == "head":
        return {"position": store.feed_head(check_patterns(_list(body, "patterns")))}
    if kind == "checkpoint":
        return {"position": store.load_checkpoint(_name(body))}
    if kind == "save":
        store.save_checkpoint(_name(body), _position(body.get("position"), optional=False) or {})
        return {}
    if kind == "trigger":
        docs = _list(body, "triggers")
        if len(docs) > MAX_TRIGGERS_PER_REQUEST:
            raise InvalidOption(f"a trigger request carries at most {MAX_TRIGGERS_PER_REQUEST} triggers")
        trigger([Trigger.from_doc(_mapping(doc, "trigger")) for doc in docs])
        return {}
    raise InvalidOption(f"unknown listener request {kind!r}")


def _batch(
    events: list[Event],
    after: Position,
    store: FeedStore,
    position: Position | None,
    patterns: Sequence[str],
    limit: int,
) -> dict[str, Any]:
    """The reply: the batch read, or a smaller one read again while it is over ``FEED_BYTES``."""
    while True:
        docs = [ev.to_doc(event) for event in events]
        if limit == 1 or _size(docs) <= FEED_BYTES:
            return {"events": docs, "position": after}
        limit = max(1, limit // 4)
        events, after = store.read_feed(position, patterns, limit)


def _size(docs: list[dict[str, Any]]) -> int:
    return len(json.dumps(docs, default=str))


def _list(body: Mapping[str, Any], name: str) -> list[Any]:
    value = body.get(name)
    if not isinstance(value, list):
        raise InvalidOption(f"a listener request's {name} must be a list")
    return value


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidOption(f"a {what} must be an object")
    return value


def _name(body: Mapping[str, Any]) -> str:
    name = body.get("name")
    if not isinstance(name, str) or not 0 < len(name) <= 200:
        raise InvalidOption("a listener's name must be a string of 1 to 200 characters")
    return name


def _position(value: Any, *, optional: bool) -> Position | None:
    if value is None and optional:
        return None
    return dict(_mapping(value, "feed position"))
