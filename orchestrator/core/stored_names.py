"""The names the log stores for classes, declared once here and never derived from where a class lives.

Error types go into the log as names (``command.failed`` data, retry policies'
``retry_on``). A name once written must keep meaning the same class, whatever
module holds it later, or old logs stop folding the same way. So each class of
evenflow's that can be named in the log has its name written out below; moving
a class changes nothing stored. The names are those the first release wrote
(they look like module paths of that release and no longer imply one).

Classes not listed (builtins, your own exceptions) are named ``module.qualname``.
"""

from __future__ import annotations

from . import errors

_DECLARED: dict[type[BaseException], str] = {
    errors.EvenflowError: "orchestrator.core.errors.EvenflowError",
    errors.ConfigurationError: "orchestrator.core.errors.ConfigurationError",
    errors.StoreUnavailable: "orchestrator.core.errors.StoreUnavailable",
    errors.StoreLocked: "orchestrator.core.errors.StoreLocked",
    errors.InvalidFlow: "orchestrator.core.errors.InvalidFlow",
    errors.InvalidOption: "orchestrator.core.errors.InvalidOption",
    errors.UnknownCommand: "orchestrator.core.errors.UnknownCommand",
    errors.PayloadError: "orchestrator.core.errors.PayloadError",
    errors.CommandNotOffered: "orchestrator.core.errors.CommandNotOffered",
    errors.InvalidEvent: "orchestrator.core.errors.InvalidEvent",
    errors.EventRefused: "orchestrator.core.errors.EventRefused",
    errors.ListenerError: "orchestrator.core.errors.ListenerError",
    errors.CascadeLimit: "orchestrator.core.errors.CascadeLimit",
    errors.ConcurrencyConflict: "orchestrator.core.errors.ConcurrencyConflict",
    errors.CorruptEvent: "orchestrator.core.errors.CorruptEvent",
    errors.RunNotFound: "orchestrator.core.errors.RunNotFound",
    errors.InvalidRunState: "orchestrator.core.errors.InvalidRunState",
    errors.RunParked: "orchestrator.core.errors.RunParked",
    errors.SubmissionIncomplete: "orchestrator.core.errors.SubmissionIncomplete",
    errors.IdempotencyConflict: "orchestrator.core.errors.IdempotencyConflict",
    errors.ResultTimeout: "orchestrator.core.errors.ResultTimeout",
    errors.RunFailed: "orchestrator.core.errors.RunFailed",
    errors.RunCancelled: "orchestrator.core.errors.RunCancelled",
    errors.CommandError: "orchestrator.core.errors.CommandError",
    errors.CommandTimeout: "orchestrator.core.errors.CommandTimeout",
    errors.WorkerLost: "orchestrator.core.errors.WorkerLost",
    errors.NoWorker: "orchestrator.core.errors.NoWorker",
    errors.Interrupted: "orchestrator.core.errors.Interrupted",
    errors.ProtocolError: "orchestrator.core.errors.ProtocolError",
    errors.RemoteError: "orchestrator.core.errors.RemoteError",
}


def stored_name(kind: type) -> str:
    """The name the log keeps for ``kind``: declared above, else ``module.qualname``."""
    declared = _DECLARED.get(kind)
    return declared if declared is not None else f"{kind.__module__}.{kind.__qualname__}"


def declared_names() -> dict[type[BaseException], str]:
    """Every declared class and its stored name (a copy)."""
    return dict(_DECLARED)


INTERRUPTED = stored_name(errors.Interrupted)
INVALID_FLOW = stored_name(errors.InvalidFlow)

NEVER_RETRY = tuple(
    stored_name(kind)
    for kind in (errors.UnknownCommand, errors.PayloadError, errors.InvalidFlow, errors.ConfigurationError)
)
"""Errors no retry can heal, whatever a policy says."""
