"""The messages between the service, its workers and its clients, and the checks on each.

Every message is one ZeroMQ frame holding one JSON object (``wire``)
with its type in ``"t"``. Workers and clients talk to the service's ROUTER
socket from DEALER sockets; the ROUTER prefixes each message with the peer's
routing id, so the service sees ``[peer, frame]`` and nothing else is valid.

    worker -> service   hello  {name, commands, queues, slots, session, starts?, go?, options?}
                        started {ids: [...]}           (these calls are to begin; sent before they do)
                        hb     {}                      (also while commands run)
                        done   {outcomes: [...], started?: [...]}  (kept until acked)
                        bye    {}
    service -> worker   welcome {heartbeat_s, liveness, starts?, go?, starts_in_done?}
                        go      {ids: [...], refused?: [...]}  (the answer to a ``started``: ids are
                                                        recorded as begun and may begin; refused
                                                        ones are not this worker's to run)
                        call    {envelopes: [...], acks?}  (never more than the free slots)
                        ack     {ids: [...]}           (these outcomes are in the log; when no
                                                        call is going that way to carry them)
                        hb      {}
                        reset   {why}                  (say hello again, resend what is unacked)
    client -> service   submit  {req, flow, input?, name?, key?, wait, wait_for_worker?}
                        watch   {req, run}
    service -> client   reply   {req, ok, run?, status?, result?, error?}

A worker that says ``starts: true`` in its hello (to a service whose welcome
says ``starts: true``) holds the calls it prefetched until a slot is free and
reports each one in a ``started`` message before it begins: a call it held
but never started is given to another worker when it leaves, and is no
attempt lost. If both also say ``go: true``, the service answers each ``started``
with a ``go`` and the worker begins a call only once the ``go`` for it has come:
a report only handed to the worker's socket may still be in that process when
the command kills it, and the service would then hand a call that did begin
(a poison, or one whose outcome died with it) to another worker as never
started. Every outcome sent before a ``started`` reaches the service before
it, so a ``go`` also says those outcomes are there. A service whose welcome
says ``starts_in_done: true`` also takes the ``started`` ids of a worker that
waits for no ``go`` riding on a ``done``, read after its outcomes: a worker
that ends one call and begins the next sends one message for both.

``options`` are the retry policy (its stored form) and timeout (``timeout_s``)
each command was registered with on the worker, by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from orchestrator.core.envelope import Envelope, ErrorInfo, Outcome
from orchestrator.core.errors import PayloadError, ProtocolError
from orchestrator.core.registry import NAME_PATTERN

from .hello_options import hello_options
from .wire import (
    MAX_MESSAGE_BYTES,
    dumps,
    envelope_from_doc,
    envelope_to_doc,
    loads,
    outcome_from_doc,
    outcome_to_doc,
)

VERSION = 1
MAX_BATCH = 1_000
MAX_COMMANDS = 10_000
MAX_SLOTS = 10_000
CLIENT_TYPES = frozenset(
    {"submit", "watch", "cancel", "retry", "feed", "head", "checkpoint", "save", "trigger"}
)


@dataclass(frozen=True, slots=True)
class Hello:
    name: str
    commands: frozenset[str]
    queues: frozenset[str]
    slots: int
    session: str
    starts: bool = False
    """The worker reports each call in a ``started`` message before it begins (and holds the rest)."""
    go: bool = False
    """The worker waits for the service's ``go`` before it begins a call it reported."""
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Per command, the options it was registered with: ``retry`` (a policy's stored form), ``timeout_s``."""


@dataclass(frozen=True, slots=True)
class Started:
    ids: list[str]


@dataclass(frozen=True, slots=True)
class Done:
    outcomes: list[Outcome]
    started: list[str] = field(default_factory=list)
    """Calls reported as begun, after these outcomes (a welcome's ``starts_in_done``)."""


@dataclass(frozen=True, slots=True)
class Signal:
    """A message with no body that matters: hb, bye."""

    type: str


@dataclass(frozen=True, slots=True)
class Request:
    """What a client asks (``type`` in ``CLIENT_TYPES``); the body is checked by the service."""

    type: str
    req: str
    body: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Welcome:
    heartbeat_s: float
    liveness: int
    starts: bool = False
    """The service wants ``started`` reports (an older one would drop the message as unknown)."""
    go: bool = False
    """The service answers each ``started`` with a ``go`` (an older one never does: do not wait for it)."""
    starts_in_done: bool = False
    """The service reads ``started`` ids on a ``done`` (an older one would ignore them: send them alone)."""


@dataclass(frozen=True, slots=True)
class Calls:
    envelopes: list[Envelope]
    acks: list[str]
    """Acknowledgements owed to the worker, carried with the calls instead of in messages of their own."""


@dataclass(frozen=True, slots=True)
class Ack:
    ids: list[str]


@dataclass(frozen=True, slots=True)
class Go:
    """The answer to a ``started``: ``ids`` are recorded as begun (they end as lost with the worker) and
    may begin; ``refused`` are calls this worker does not hold here (handed elsewhere): drop them."""

    ids: list[str]
    refused: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Reset:
    why: str


FromPeer = Hello | Started | Done | Signal | Request
FromService = Welcome | Calls | Ack | Go | Reset | Signal


# --- encoding ---------------------------------------------------------------------------


def hello(
    name: str,
    commands: list[str],
    queues: list[str],
    slots: int,
    session: str,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    go: bool = False,
) -> bytes:
    doc = {"t": "hello", "v": VERSION, "name": name, "commands": commands, "queues": queues}
    more = {"go": True} if go else {}
    return dumps(
        {**doc, "slots": slots, "session": session, "starts": True, **more, "options": dict(options or {})}
    )


def started(ids: list[str]) -> bytes:
    return dumps({"t": "started", "ids": ids})


OUTCOME_BYTES = MAX_MESSAGE_BYTES - 64 * 1024
"""The largest encoded outcome a worker sends: one message, with room for its framing."""


def encoded_outcome(outcome: Outcome) -> bytes:
    """The outcome as JSON for a ``done`` message; one over ``OUTCOME_BYTES`` becomes a small failure.

    A result and the events a command emitted may each be as large as the log
    allows, together more than one message holds: the attempt then fails with
    a ``PayloadError`` saying so, instead of being refused by the service and
    sent again forever.
    """
    part = dumps(outcome_to_doc(outcome))
    if len(part) <= OUTCOME_BYTES:
        return part
    error = PayloadError(
        f"the outcome of {outcome.attempt_id} (result and emitted events) is {len(part):,} bytes as JSON, "
        f"over the {OUTCOME_BYTES:,} bytes one message carries; return and emit less, store large data "
        "elsewhere and pass a reference"
    )
    failure = ErrorInfo.from_exception(error)
    small = replace(outcome, ok=False, result=None, expansion=None, events=(), error=failure)
    return dumps(outcome_to_doc(small))


def done_frames(parts: list[bytes], started: list[str] | None = None) -> list[bytes]:
    """``done`` messages carrying encoded outcomes, each within the message limit and ``MAX_BATCH``;
    ``started`` ids ride on the last (or on one of their own, where they would not fit there)."""
    frames: list[bytes] = []
    chunk: list[bytes] = []
    size = 0
    more = b',"started":' + dumps(started) if started else b""
    for part in parts:
        if chunk and (size + len(part) > OUTCOME_BYTES or len(chunk) >= MAX_BATCH):
            frames.append(_done_frame(chunk))
            chunk, size = [], 0
        chunk.append(part)
        size += len(part) + 1
    if chunk and size + len(more) > OUTCOME_BYTES:
        frames.append(_done_frame(chunk))
        chunk = []
    if chunk or more:
        frames.append(_done_frame(chunk, more))
    return frames


def _done_frame(parts: list[bytes], more: bytes = b"") -> bytes:
    return b'{"t":"done","outcomes":[' + b",".join(parts) + b"]" + more + b"}"


def signal(kind: str) -> bytes:
    return dumps({"t": kind})


def welcome(heartbeat_s: float, liveness: int, *, go: bool = False) -> bytes:
    more = {"go": True} if go else {}
    doc = {"t": "welcome", "heartbeat_s": heartbeat_s, "liveness": liveness, "starts": True}
    return dumps({**doc, "starts_in_done": True, **more})


def calls(envelopes: list[Envelope], acks: list[str] | None = None) -> bytes:
    doc = {"t": "call", "envelopes": [envelope_to_doc(envelope) for envelope in envelopes]}
    return dumps({**doc, "acks": acks} if acks else doc)


def ack(ids: list[str]) -> bytes:
    return dumps({"t": "ack", "ids": ids})


def go(ids: list[str], refused: list[str] | None = None) -> bytes:
    return dumps({"t": "go", "ids": ids, **({"refused": refused} if refused else {})})


def reset(why: str) -> bytes:
    return dumps({"t": "reset", "why": why})


def request(kind: str, req: str, **body: Any) -> bytes:
    return dumps({"t": kind, "req": req, **body})


def reply(req: str, **body: Any) -> bytes:
    return dumps({"t": "reply", "req": req, **body})


# --- decoding ---------------------------------------------------------------------------


def from_peer(frame: bytes) -> FromPeer:
    """A worker's or client's message, checked; ProtocolError for anything else."""
    doc = _object(frame)
    kind = _kind(doc)
    if kind == "hello":
        if type(doc.get("v")) is not int or doc.get("v") != VERSION:
            raise ProtocolError(f"hello speaks version {doc.get('v')!r}; this service speaks {VERSION}")
        return Hello(
            name=_text(doc, "name"),
            commands=_names(doc, "commands"),
            queues=_names(doc, "queues"),
            slots=_bounded(doc, "slots", MAX_SLOTS),
            session=_text(doc, "session"),
            starts=doc.get("starts") is True,
            go=doc.get("go") is True,
            options=hello_options(doc.get("options"), MAX_COMMANDS),
        )
    if kind == "started":
        return Started(_list_of_ids(doc, "ids", MAX_SLOTS))
    if kind == "done":
        started = _list_of_ids(doc, "started", MAX_SLOTS) if "started" in doc else []
        return Done([outcome_from_doc(item) for item in _list(doc, "outcomes", MAX_BATCH)], started)
    if kind in ("hb", "bye"):
        return Signal(kind)
    if kind in CLIENT_TYPES:
        return Request(kind, _text(doc, "req"), doc)
    raise ProtocolError(f"unknown message type {kind!r}")


def from_service(frame: bytes) -> FromService:
    """The service's message, checked: a worker trusts no more than the service does."""
    doc = _object(frame)
    kind = _kind(doc)
    if kind == "call":
        envelopes = [envelope_from_doc(item) for item in _list(doc, "envelopes", MAX_BATCH)]
        return Calls(envelopes, _ids(doc, "acks") if "acks" in doc else [])
    if kind == "ack":
        return Ack(_ids(doc, "ids"))
    if kind == "welcome":
        heartbeat = doc.get("heartbeat_s")
        if not isinstance(heartbeat, int | float) or not 0 < heartbeat <= 3600:
            raise ProtocolError("welcome heartbeat_s must be a number of seconds in (0, 3600]")
        liveness = _bounded(doc, "liveness", 1_000)
        flags = (doc.get(flag) is True for flag in ("starts", "go", "starts_in_done"))
        return Welcome(float(heartbeat), liveness, *flags)
    if kind == "go":
        refused = _list_of_ids(doc, "refused", MAX_SLOTS) if "refused" in doc else []
        return Go(_list_of_ids(doc, "ids", MAX_SLOTS), refused)
    if kind == "reset":
        return Reset(str(doc.get("why", ""))[:200])
    if kind == "hb":
        return Signal(kind)
    raise ProtocolError(f"unknown message type {kind!r}")


def _object(frame: bytes) -> dict[str, Any]:
    doc = loads(frame, max_bytes=MAX_MESSAGE_BYTES)
    if not isinstance(doc, dict):
        raise ProtocolError(f"a message is a JSON object, not {type(doc).__name__}")
    return doc


def _kind(doc: Mapping[str, Any]) -> str:
    """The message type, checked before anything compares it (a list there is not even hashable)."""
    kind = doc.get("t")
    if not isinstance(kind, str):
        raise ProtocolError(f"field 't' must name the message type, not {type(kind).__name__}")
    return kind


def _text(doc: Mapping[str, Any], name: str) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or not 0 < len(value) <= 200:
        raise ProtocolError(f"field {name!r} must be a string of 1 to 200 characters")
    return value


def _list(doc: Mapping[str, Any], name: str, limit: int) -> list[Any]:
    value = doc.get(name)
    if not isinstance(value, list) or len(value) > limit:
        raise ProtocolError(f"field {name!r} must be a list of at most {limit} items")
    return value


def _ids(doc: Mapping[str, Any], name: str) -> list[str]:
    return _list_of_ids(doc, name, 100 * MAX_BATCH)


def _list_of_ids(doc: Mapping[str, Any], name: str, limit: int) -> list[str]:
    ids = _list(doc, name, limit)
    if not all(isinstance(item, str) for item in ids):
        raise ProtocolError(f"{name} must be attempt ids (strings)")
    return ids


def _names(doc: Mapping[str, Any], name: str) -> frozenset[str]:
    items = _list(doc, name, MAX_COMMANDS)
    if not all(isinstance(item, str) and NAME_PATTERN.fullmatch(item) for item in items):  # "$" allows "\n"
        raise ProtocolError(f"field {name!r} must list valid command or queue names")
    return frozenset(items)


def _bounded(doc: Mapping[str, Any], name: str, limit: int) -> int:
    value = doc.get(name)
    if type(value) is not int or not 1 <= value <= limit:
        raise ProtocolError(f"field {name!r} must be a whole number from 1 to {limit}")
    return value
