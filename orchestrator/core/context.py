"""Which attempt is running in this thread or task, and the events it emits.

A plain callable needs no evenflow import to run; one that performs an external
side effect can call ``current_call()`` to get a stable idempotency key, and one
that announces something calls ``emit(type, data)``. Emitted events are held
here and travel back with the attempt's outcome, so they reach the log in the
same append as the result, whoever ran the command and wherever.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from .codec import MAX_PAYLOAD_BYTES, check_payload
from .errors import InvalidEvent
from .events import check_domain_type

MAX_EMITTED = 1_000
"""Events one attempt may emit: a bound on what one outcome carries into the log."""
MAX_EMITTED_BYTES = MAX_PAYLOAD_BYTES
"""The data of all the events of one attempt, together, as for one result."""


@dataclass(frozen=True, slots=True)
class CallContext:
    run: str
    node: str
    attempt: int
    command: str
    key: str
    """Stable across attempts of the node: ``run/node`` unless the flow set one."""


class Emitted(list[dict[str, Any]]):
    """``{"type", "data"}`` of each event an attempt emitted, in order, and their rough size."""

    size: int = 0


_current: ContextVar[CallContext | None] = ContextVar("evenflow_call", default=None)
_emitted: ContextVar[Emitted | None] = ContextVar("evenflow_emitted", default=None)


def current_call() -> CallContext | None:
    """The attempt being executed here, or None outside a command."""
    return _current.get()


@contextmanager
def calling(context: CallContext) -> Iterator[Emitted]:
    """Run the block as ``context``'s attempt; yields the list its ``emit`` calls fill."""
    emitted = Emitted()
    token, buffer = _current.set(context), _emitted.set(emitted)
    try:
        yield emitted
    finally:
        _emitted.reset(buffer)
        _current.reset(token)


def emit(type: str, data: Mapping[str, Any] | None = None) -> None:
    """Announce an event from inside a command; it is logged with the attempt's outcome.

    ``data`` must be what the log can store (checked here, so the command fails
    where it emitted). An attempt whose outcome is discarded (a duplicate, a
    result after a timeout) has its events discarded too; a retried command
    emits again, so its listeners hear from each attempt that reported.
    """
    context, emitted = _current.get(), _emitted.get()
    if context is None or emitted is None:
        raise InvalidEvent(
            f"emit({type!r:.80}) was called outside a command: call it from a command an orchestrator "
            "runs (in the thread or task that runs it)"
        )
    check_domain_type(type)
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise InvalidEvent(f"the data of event {type!r} must be a dict, got {data!r:.80}")
    size = check_payload(dict(data), f"data of event {type!r}")
    if emitted.size + size > MAX_EMITTED_BYTES:
        raise InvalidEvent(
            f"command {context.command!r} emitted events whose data passes {MAX_EMITTED_BYTES:,} bytes "
            "in one attempt; put large data elsewhere and emit a reference"
        )
    if len(emitted) >= MAX_EMITTED:
        raise InvalidEvent(
            f"command {context.command!r} emitted more than {MAX_EMITTED} events in one attempt; "
            "emit fewer, larger events, or split the work into more commands"
        )
    emitted.append({"type": type, "data": copy.deepcopy(dict(data))})
    emitted.size += size
