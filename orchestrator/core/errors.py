"""The one exception tree of evenflow.

    EvenflowError
    ├── ConfigurationError        a bad URL, option or environment at startup
    │   ├── StoreUnavailable      MongoDB or the embedded journal cannot be reached
    │   └── StoreLocked           another orchestrator owns the embedded store
    ├── InvalidFlow               a flow's shape is wrong (empty group, too deep...)
    ├── InvalidOption             a node or command option is wrong
    ├── UnknownCommand            a name no registry here knows
    ├── PayloadError              a value would not survive the log unchanged
    │   ├── InvalidEvent          an event a command emits that the log cannot take
    │   └── EventRefused          a store refused events for what they hold
    ├── ConcurrencyConflict       another writer appended the same seq first
    ├── CorruptEvent              a stored event does not decode
    ├── RunNotFound               no run with that id
    ├── InvalidRunState           the run is in the wrong state for the request
    ├── RunParked                 a run this orchestrator's registry cannot drive
    ├── IdempotencyConflict       a submission key already names a run with another payload
    ├── ResultTimeout             waiting for a run's result timed out
    ├── ProtocolError             a malformed or oversize message from a peer
    ├── RemoteError               a command raised, elsewhere, an exception this process cannot rebuild
    ├── ListenerError             a listener failed; logged as the failure of the run it would start
    │   └── CascadeLimit          listeners kept triggering each other past the limit
    ├── RunFailed                 a run ended in failure; lists every failed node
    │   └── RunCancelled          a run was cancelled
    └── CommandError              the kinds of attempt failure evenflow itself reports
        ├── CommandTimeout        an attempt passed its deadline
        ├── WorkerLost            the process running an attempt died
        ├── Interrupted           the orchestrator stopped while an attempt was in flight
        └── NoWorker              no live worker could take a call before its deadline

Errors carry structured fields, and ``retryable`` says whether a retry policy
may try again after it (a payload or unknown-command error never heals).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


class EvenflowError(Exception):
    """Root of every error evenflow raises on purpose."""

    retryable: bool = False


class ConfigurationError(EvenflowError):
    pass


EXTRAS = {
    "zmq": ("pyzmq", "zmq"),
    "celery": ("celery", "celery"),
    "redis": ("redis", "celery"),
    "starlette": ("starlette", "ui"),
    "uvicorn": ("uvicorn", "ui"),
    "prometheus_client": ("prometheus_client", "ui"),
}
"""A module an optional part of evenflow imports: the package providing it, the extra installing it."""


@contextmanager
def extra_needed(what: str) -> Iterator[None]:
    """Turn the ``ImportError`` of a module an extra provides into our one-line error naming the extra.

    The base install leaves pyzmq and Celery out; without this a user sees
    "No module named 'zmq'" and has to guess which package, and which extra, to add.
    """
    try:
        yield
    except ImportError as exc:
        missing = EXTRAS.get((exc.name or "").partition(".")[0])
        if missing is None:
            raise
        package, extra = missing
        raise ConfigurationError(
            f"{what} needs {package}, which is not installed here: pip install 'evenflow[{extra}]'"
        ) from None


class StoreUnavailable(ConfigurationError):
    retryable = True


class StoreLocked(ConfigurationError):
    def __init__(self, home: str, pid: int | None) -> None:
        owner = f"process {pid}" if pid else "another process"
        super().__init__(
            f"the embedded store in {home} is owned by {owner}; stop it, or point "
            "this orchestrator at another --home / EVENFLOW_HOME"
        )
        self.home = home
        self.pid = pid


class InvalidFlow(EvenflowError):
    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(f"invalid flow at {path}: {message}" if path else f"invalid flow: {message}")
        self.path = path


class InvalidOption(EvenflowError):
    pass


class UnknownCommand(EvenflowError):
    def __init__(self, name: str, known: Sequence[str] = (), *, path: str | None = None) -> None:
        import difflib

        close = difflib.get_close_matches(name, list(known), n=3)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        where = f" at node {path}" if path else ""
        super().__init__(
            f"unknown command {name!r}{where}{hint} "
            f"(register it where commands run: registry.register({name!r}, fn))"
        )
        self.name = name
        self.path = path
        self.close_matches = close


class CommandNotOffered(EvenflowError):
    """A service was sent a flow naming a command no connected worker offers."""


class PayloadError(EvenflowError):
    def __init__(self, message: str, *, path: str = "") -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


class InvalidEvent(PayloadError):
    """An event a command emits that the log cannot take (bad type, data, or too many)."""


class EventRefused(PayloadError):
    """A store refused events for what they hold (too large, not encodable); ``events`` names them.

    Raised before anything of the append is written. Unlike ``StoreUnavailable``,
    trying again cannot help: the engine ends what produced the events instead.
    """

    def __init__(self, message: str, *, events: Sequence[str]) -> None:
        super().__init__(message)
        self.events = tuple(events)


class ListenerError(EvenflowError):
    """What a listener did wrong, logged as the failure of the run it would have triggered."""


class CascadeLimit(ListenerError):
    """Listeners kept triggering each other past the depth limit; the chain is cut there."""


class ConcurrencyConflict(EvenflowError):
    retryable = True


class CorruptEvent(EvenflowError):
    pass


class RunNotFound(EvenflowError):
    def __init__(self, run: str) -> None:
        super().__init__(f"no run {run!r} in this store; `evenflow runs` lists the runs it has")
        self.run = run


class InvalidRunState(EvenflowError):
    pass


class SubmissionIncomplete(EvenflowError):
    """A large submission's ``run.flow_part`` events are not all in the log: whoever submitted it
    stopped during an append the store did not make atomic. The run fails before anything runs."""


class RunParked(EvenflowError):
    """A run this orchestrator cannot drive (its registry lacks a command the run still needs).

    Nothing is written to it: it stays unfinished in the log for an orchestrator
    whose registry has the command (after a fixed deploy) to resume.
    """


class IdempotencyConflict(EvenflowError):
    """The key was used before for a different flow, input or name: submitting is not idempotent here."""

    def __init__(self, key: str, run: str) -> None:
        super().__init__(
            f"submission key {key!r} already names run {run} with a different flow, input or name; "
            "reuse a key only to submit the same thing again, or choose a new key"
        )
        self.key = key
        self.run = run


class ResultTimeout(EvenflowError, TimeoutError):
    pass


@dataclass(frozen=True, slots=True)
class Failure:
    """Why one node failed for good: what the log says about its last attempt."""

    node: str
    command: str | None
    attempt: int | None
    type: str
    message: str
    reason: str = "raised"
    traceback: str = ""

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Failure:
        return cls(
            node=doc["node"],
            command=doc.get("command"),
            attempt=doc.get("attempt"),
            type=doc.get("type", "builtins.Exception"),
            message=doc.get("message", ""),
            reason=doc.get("reason", "raised"),
            traceback=doc.get("traceback", ""),
        )

    def describe(self) -> str:
        what = f"{self.command!r} " if self.command else ""
        attempt = f" (attempt {self.attempt}, {self.reason})" if self.attempt else ""
        return f"node {self.node} {what}failed{attempt}: {self.type}: {self.message}"


SHOWN_FAILURES = 10
"""A failed run's message names this many failures and counts the rest (``failures`` holds them all)."""


class RunFailed(EvenflowError):
    def __init__(self, run: str, failures: Sequence[Failure]) -> None:
        self.run = run
        self.failures = tuple(failures)
        lines = "; ".join(f.describe() for f in self.failures[:SHOWN_FAILURES]) or "no failure recorded"
        more = len(self.failures) - SHOWN_FAILURES
        if more > 0:
            lines += f"; and {more} more (all in `evenflow audit {run}`)"
        super().__init__(f"run {run} failed: {lines}")


class RunCancelled(RunFailed):
    pass


class CommandError(EvenflowError):
    """Failures evenflow itself assigns to an attempt; their names go into the log."""

    retryable = True


class CommandTimeout(CommandError):
    pass


class WorkerLost(CommandError):
    pass


class NoWorker(CommandError):
    pass


class Interrupted(CommandError):
    """Logged on restart for an attempt the log shows in flight: it is sent again as a new attempt."""


class ProtocolError(EvenflowError):
    """A peer sent something evenflow's wire format does not allow; the message is dropped."""


class RemoteError(EvenflowError):
    """What ``submit`` on a remote executor raises when the command's exception type is not a builtin.

    ``type`` is the remote exception's qualified name, ``remote_traceback`` its traceback.
    """

    def __init__(self, type: str, message: str, remote_traceback: str = "") -> None:
        super().__init__(f"{type}: {message}")
        self.type = type
        self.remote_traceback = remote_traceback
