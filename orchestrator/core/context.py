"""Which attempt is running in this thread or task, for commands that want to know.

A plain callable needs no evenflow import to run; one that performs an external
side effect can call ``current_call()`` to get a stable idempotency key.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CallContext:
    run: str
    node: str
    attempt: int
    command: str
    key: str
    """Stable across attempts of the node: ``run/node`` unless the flow set one."""


_current: ContextVar[CallContext | None] = ContextVar("evenflow_call", default=None)


def current_call() -> CallContext | None:
    """The attempt being executed here, or None outside a command."""
    return _current.get()


@contextmanager
def calling(context: CallContext) -> Iterator[CallContext]:
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)
