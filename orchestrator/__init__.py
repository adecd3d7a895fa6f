"""evenflow: run plain Python callables as event-sourced flows, logged to MongoDB.

from orchestrator import Registry, Orchestrator, call, sequence, parallel

registry = Registry()
registry.register("inc", lambda x: x + 1)
with Orchestrator(registry, executor="threads") as orch:
    orch.run(sequence(call("inc", 1), call("inc")))   # 3
"""

from typing import TYPE_CHECKING

from .core.context import CallContext, current_call, emit
from .core.errors import (
    CascadeLimit,
    CommandError,
    CommandTimeout,
    ConcurrencyConflict,
    ConfigurationError,
    CorruptEvent,
    EvenflowError,
    Failure,
    IdempotencyConflict,
    InvalidEvent,
    InvalidFlow,
    InvalidOption,
    InvalidRunState,
    ListenerError,
    NoWorker,
    PayloadError,
    ProtocolError,
    RemoteError,
    ResultTimeout,
    RunCancelled,
    RunFailed,
    RunNotFound,
    RunParked,
    StoreLocked,
    StoreUnavailable,
    UnknownCommand,
    WorkerLost,
)
from .core.events import Event
from .core.flows import (
    Call,
    Chord,
    Each,
    Node,
    Parallel,
    Sequence,
    call,
    chord,
    cmd,
    each,
    encode_flow,
    parallel,
    sequence,
)
from .core.listening import Listener, on
from .core.policy import RetryPolicy
from .core.registry import Registry

if TYPE_CHECKING:
    from .client import Client
    from .orchestrator import Orchestrator, Run


def __getattr__(name: str) -> object:
    """Load the engine only for those who drive flows; worker hosts import the core alone."""
    if name in ("Orchestrator", "Run"):
        from . import orchestrator as module

        return getattr(module, name)
    if name == "Client":
        from .client import Client

        return Client
    raise AttributeError(f"module 'orchestrator' has no attribute {name!r}")


__all__ = [
    "Call",
    "CallContext",
    "CascadeLimit",
    "Chord",
    "Client",
    "CommandError",
    "CommandTimeout",
    "ConcurrencyConflict",
    "ConfigurationError",
    "CorruptEvent",
    "Each",
    "EvenflowError",
    "Event",
    "Failure",
    "IdempotencyConflict",
    "InvalidEvent",
    "InvalidFlow",
    "InvalidOption",
    "InvalidRunState",
    "Listener",
    "ListenerError",
    "NoWorker",
    "Node",
    "Orchestrator",
    "Parallel",
    "PayloadError",
    "ProtocolError",
    "Registry",
    "RemoteError",
    "ResultTimeout",
    "RetryPolicy",
    "Run",
    "RunCancelled",
    "RunFailed",
    "RunNotFound",
    "RunParked",
    "Sequence",
    "StoreLocked",
    "StoreUnavailable",
    "UnknownCommand",
    "WorkerLost",
    "call",
    "chord",
    "cmd",
    "current_call",
    "each",
    "emit",
    "encode_flow",
    "on",
    "parallel",
    "sequence",
]
