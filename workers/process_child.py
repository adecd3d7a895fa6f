"""What runs inside each child of ``processes://``: receive work, say it starts, run it, send its end.

A child holds one connection to the parent (``process_channel``). The registry
comes once, as the child's start argument (again only if the parent's registry
grows). After that the parent sends lists of (ticket, work): an ``Envelope``,
or for the ``concurrent.futures`` face a pickled call. For each, the child
first writes the ticket into a word of memory it shares with the parent
(``started``), then runs it, then sends its end at once, one message per
attempt. So the parent knows which attempt a dead child had started, and
saying so costs no message: the parent is woken once per attempt, not twice.

The child leaves when the parent closes the connection or dies
(``orchestrator.core.lifeline``), ignores Ctrl-C, and on SIGTERM (the parent
closing) leaves at once if idle, or once the running attempt's outcome is sent.
"""

from __future__ import annotations

import os
import pickle
import signal
import traceback
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from types import FrameType
from typing import Any, Protocol

from orchestrator.core import lifeline
from orchestrator.core.envelope import Envelope, Outcome
from orchestrator.core.errors import ConfigurationError, PayloadError
from orchestrator.core.registry import Registry

from .base import worker_id
from .execution import execute, failed

NONE = -1
"""No ticket: nothing started yet."""
HELLO = -2
"""The ticket of a child's first message: its registry is loaded, it is ready for work."""

Work = Envelope | bytes
"""An attempt to run, or a pickled ``(fn, args, kwargs)`` from the ``concurrent.futures`` face."""
Ticketed = tuple[int, Work]
CallEnd = tuple[bool, bytes]
"""How a call ended: (True, its pickled value) or (False, its pickled exception)."""
Ended = Outcome | CallEnd


class Word(Protocol):
    """A machine word in memory shared with the parent (a ``multiprocessing`` ``RawValue("q")``)."""

    value: int


@dataclass
class _ChildState:
    registry: Registry | None = None
    problem: str = ""
    by: str = ""
    busy: bool = False
    stopping: bool = False


_child = _ChildState()


def main(conn: Connection, started: Word, payload: bytes, owner: int) -> None:
    """The child process: leave with ``owner``, load the registry, serve the parent until told to stop."""
    lifeline.hold(owner)
    signal.signal(signal.SIGTERM, _on_terminate)
    _child.by = worker_id("processes")
    _load(payload)
    _send(conn, HELLO, None)
    _serve(conn, started)


def _load(payload: bytes) -> None:
    """The registry as sent (a failure is kept, so each envelope can say why it cannot run)."""
    try:
        _child.registry, _child.problem = (pickle.loads(payload) if payload else Registry()), ""
    except Exception as exc:  # unpickling runs arbitrary imports; any failure means "cannot load"
        _child.registry, _child.problem = None, f"{type(exc).__name__}: {exc}"


def _on_terminate(signum: int, frame: FrameType | None) -> None:
    """Leave now if idle; mid-attempt, leave once its outcome is sent."""
    if not _child.busy:
        os._exit(128 + signum)
    _child.stopping = True


def _serve(conn: Connection, started: Word) -> None:
    """Run what arrives in order: mark each attempt started, run it, send its end at once."""
    queued: deque[Ticketed] = deque()
    while True:
        if not queued:
            _child.busy = False
            if _child.stopping:
                os._exit(128 + signal.SIGTERM)
            _receive(conn, queued)
            _child.busy = True
            continue
        ticket, work = queued.popleft()
        started.value = ticket  # before any of it runs: if this child dies, only this one had started
        _send(conn, ticket, _perform(work))
        if _child.stopping:
            os._exit(128 + signal.SIGTERM)


def _receive(conn: Connection, queued: deque[Ticketed]) -> None:
    """Wait for the parent's next message; a closed connection means leave."""
    try:
        kind, body = pickle.loads(conn.recv_bytes())
    except (EOFError, OSError):
        os._exit(0)
    if kind == "registry":
        _load(body)
    else:
        queued.extend(unpack(body))


def _perform(work: Work) -> Outcome | CallEnd:
    return _call(work) if isinstance(work, bytes) else _run(work)


def _run(envelope: Envelope) -> Outcome:
    registry = _child.registry
    if registry is None:
        problem = ConfigurationError(
            f"worker process {os.getpid()} could not load the command registry ({_child.problem}); "
            "make the modules that define the commands importable there (installed or on PYTHONPATH)"
        )
        return failed(envelope, problem, by=_child.by)
    return execute(registry, envelope, by=_child.by)


def _call(blob: bytes) -> CallEnd:
    """The ``concurrent.futures`` face: anything ``fn`` raises goes back, as a pool worker's would."""
    try:
        fn, args, kwargs = pickle.loads(blob)
        value = fn(*args, **kwargs)
    except BaseException as exc:  # the caller's future gets it, SystemExit too
        return False, _pickled_exception(exc)
    try:
        return True, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        return False, _pickled_exception(exc)


def _pickled_exception(exc: BaseException) -> bytes:
    """``exc`` with the child's traceback as a note; a stand-in if it will not pickle."""
    text = "".join(traceback.format_exception(exc))
    try:
        exc.add_note(f"raised in worker process {os.getpid()}:\n{text}")
        return pickle.dumps(exc, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        return pickle.dumps(RuntimeError(f"{type(exc).__name__} in worker process {os.getpid()}:\n{text}"))


def _send(conn: Connection, ticket: int, end: Ended | None) -> None:
    """One message to the parent; a parent gone (or closing) means leave."""
    try:
        conn.send_bytes(encode(ticket, end))
    except OSError:
        os._exit(0)


def encode(ticket: int, end: Ended | None) -> bytes:
    """The message that ends ``ticket``: an outcome flattened (stamps as integer µs since the epoch,
    a third of the pickling cost of datetimes), anything else as it is."""
    message: tuple[int, bool, Any]
    try:
        message = (ticket, True, _flat(end)) if isinstance(end, Outcome) else (ticket, False, end)
    except TypeError:  # a stamp without a time zone: send the outcome as it is
        message = (ticket, False, end)
    try:
        return pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # what the command returned survived the checks yet will not pickle
        assert isinstance(end, Outcome)
        refused = PayloadError(f"the outcome of attempt {end.attempt_id} cannot be sent back: {exc}")
        envelope = Envelope(end.run, end.node, end.attempt, command="?")
        return pickle.dumps((ticket, False, failed(envelope, refused, by=_child.by)))


def pack(items: list[Ticketed]) -> bytes:
    """In the parent: the message that sends ``items`` to a child. Envelopes go as plain tuples:
    pickling a frozen dataclass (``__getstate__`` through ``fields()``) costs ten times more."""
    flat = [(ticket, work if isinstance(work, bytes) else _flat_envelope(work)) for ticket, work in items]
    return pickle.dumps(("run", flat), protocol=pickle.HIGHEST_PROTOCOL)


def unpack(flat: list[tuple[int, Any]]) -> list[Ticketed]:
    """In the child: the items ``pack`` sent."""
    return [(ticket, work if isinstance(work, bytes) else Envelope(*work)) for ticket, work in flat]


def _flat_envelope(e: Envelope) -> tuple[Any, ...]:
    return (e.run, e.node, e.attempt, e.command, e.args, e.kwargs, e.deadline, e.key, e.route)


def decode(data: bytes) -> tuple[int, Ended | None]:
    """In the parent: the ticket a message ends, and how."""
    ticket, flat, body = pickle.loads(data)
    return ticket, (_unflat(body) if flat else body)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


def _flat(o: Outcome) -> tuple[Any, ...]:
    started = None if o.started_at is None else (o.started_at - EPOCH) // MICROSECOND
    finished = None if o.finished_at is None else (o.finished_at - EPOCH) // MICROSECOND
    return (o.run, o.node, o.attempt, o.ok, o.result, o.error, o.expansion, started, finished, o.by, o.events)


def _unflat(body: tuple[Any, ...]) -> Outcome:
    run, node, attempt, ok, result, error, expansion, started, finished, by, events = body
    started_at = None if started is None else EPOCH + timedelta(microseconds=started)
    finished_at = None if finished is None else EPOCH + timedelta(microseconds=finished)
    return Outcome(run, node, attempt, ok, result, error, expansion, started_at, finished_at, by, events)
