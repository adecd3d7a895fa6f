"""What runs inside each child of ``processes://``: load the registry once, run chunks, stream each event.

The registry travels once per child, as the pool's initializer argument. A
chunk is a list of (ticket, envelope); for each, the child tells the parent on
its own connection that the attempt starts, runs it, and sends the outcome at
once, together with the start of the next one, so each attempt costs one
message. The chunk's own pool result is only an acknowledgement (it carries
outcomes only if the connection failed).

When the pool breaks, the standard library sends SIGTERM to the other
children. A child in the middle of a chunk finishes the attempt it is running,
sends its outcome, and leaves without starting another; an idle child leaves at
once. So one killed child costs only the attempt running in it.
"""

from __future__ import annotations

import os
import pickle
import signal
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from types import FrameType

from orchestrator.core import lifeline
from orchestrator.core.envelope import Envelope, Outcome
from orchestrator.core.errors import ConfigurationError, PayloadError
from orchestrator.core.registry import Registry

from .base import worker_id
from .execution import execute, failed
from .process_channel import connect, send

NONE = -1
"""No ticket: a message that only starts an attempt, or only ends one."""

Ticketed = tuple[int, Envelope]


@dataclass
class _ChildState:
    registry: Registry | None = None
    problem: str = ""
    by: str = ""
    channel: Connection | None = None
    busy: bool = False
    stopping: bool = False


_child = _ChildState()


def install(payload: bytes, owner: int, address: str, generation: int) -> None:
    """Pool initializer: load this child's registry (a failure is kept, so each envelope can say why)
    and connect to the parent. The child leaves when ``owner`` dies, and ignores Ctrl-C."""
    lifeline.hold(owner)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_terminate)
    _child.by = worker_id("processes")
    _child.channel = connect(address, generation)
    try:
        _child.registry = pickle.loads(payload) if payload else Registry()
    except Exception as exc:  # unpickling runs arbitrary imports; any failure means "cannot load"
        _child.registry, _child.problem = None, f"{type(exc).__name__}: {exc}"


def _on_terminate(signum: int, frame: FrameType | None) -> None:
    """Leave now if idle; mid-chunk, leave once the running attempt's outcome is sent."""
    if not _child.busy:
        os._exit(128 + signum)
    _child.stopping = True


def run_chunk(chunk: list[Ticketed]) -> list[tuple[int, Outcome]]:
    """One pool task: run a chunk in order, streaming each start and outcome; return what could not
    be streamed."""
    _child.busy = True
    unsent: list[tuple[int, Outcome]] = []
    if chunk:
        _stream(NONE, None, chunk[0][0], unsent)
    for index, (ticket, envelope) in enumerate(chunk):
        outcome = _run(envelope)
        stopping = _child.stopping  # read once: a next attempt announced as started is run
        following = chunk[index + 1][0] if index + 1 < len(chunk) and not stopping else NONE
        _stream(ticket, outcome, following, unsent)
        if stopping:
            os._exit(128 + signal.SIGTERM)
    _child.busy = False
    return unsent


def _run(envelope: Envelope) -> Outcome:
    registry = _child.registry
    if registry is None:
        problem = ConfigurationError(
            f"worker process {os.getpid()} could not load the command registry ({_child.problem}); "
            "make the modules that define the commands importable there (installed or on PYTHONPATH)"
        )
        return failed(envelope, problem, by=_child.by)
    return execute(registry, envelope, by=_child.by)


def _stream(ticket: int, outcome: Outcome | None, following: int, unsent: list[tuple[int, Outcome]]) -> None:
    """Send (ended ticket, its outcome, started ticket); kept for the acknowledgement if that fails."""
    conn = _child.channel
    try:
        message = _encode(ticket, outcome, following)
        if conn is None:
            raise OSError("no connection to the parent")
        send(conn, message)
    except OSError:
        _child.channel = None
        if outcome is not None:
            unsent.append((ticket, outcome))


def _encode(ticket: int, outcome: Outcome | None, following: int) -> bytes:
    try:
        return pickle.dumps((ticket, outcome, following), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # what the command returned survived the checks yet will not pickle
        assert outcome is not None
        refused = PayloadError(f"the outcome of attempt {outcome.attempt_id} cannot be sent back: {exc}")
        envelope = Envelope(outcome.run, outcome.node, outcome.attempt, command="?")
        return pickle.dumps((ticket, failed(envelope, refused, by=_child.by), following))
