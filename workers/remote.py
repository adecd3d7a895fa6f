"""What executors whose commands run on other hosts share: the ``concurrent.futures`` face by name.

Code never travels to a remote worker, so ``submit(fn, ...)`` sends the name
``fn`` is registered under (or ``fn`` itself when it is a name) and the worker
runs its own registration of it. The registry comes from ``start`` or the
constructor. A remote exception comes back as the builtin it was (``ValueError``
stays ``ValueError``) or as ``RemoteError`` naming its type.
"""

from __future__ import annotations

import builtins
import threading
import uuid
from abc import abstractmethod
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from orchestrator.core.codec import check_payload
from orchestrator.core.envelope import Envelope, ErrorInfo, Outcome
from orchestrator.core.errors import ConfigurationError, RemoteError
from orchestrator.core.ports import Report
from orchestrator.core.registry import Registry

from .base import BaseExecutor

SUBMITTED = "submitted"
"""The run id of envelopes made by ``submit``: their outcomes resolve futures, never reach the engine."""


class RemoteExecutor(BaseExecutor):
    """Sends envelopes to workers elsewhere; subclasses implement ``_send``."""

    isolated = True

    def __init__(self, registry: Registry | None = None) -> None:
        super().__init__()
        self._names = registry
        self._futures: dict[str, Future[Any]] = {}
        self._futures_lock = threading.Lock()

    def start(self, registry: Registry, report: Report) -> None:
        super().start(registry, report)
        self._names = registry

    def _dispatch(self, registry: Registry, envelopes: list[Envelope]) -> None:
        self._send(envelopes)

    @abstractmethod
    def _send(self, envelopes: list[Envelope]) -> None:
        """Get each envelope to a worker; every one must end in exactly one ``_deliver``."""

    def _submit(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Future[Any]:
        name = self._name_of(fn)
        check_payload(list(args), "args")
        check_payload(kwargs, "kwargs")
        envelope = Envelope(SUBMITTED, uuid.uuid4().hex, 1, name, list(args), dict(kwargs))
        future: Future[Any] = Future()
        with self._futures_lock:
            self._futures[envelope.attempt_id] = future
        self._send([envelope])
        return future

    def _name_of(self, fn: Callable[..., Any] | str) -> str:
        if isinstance(fn, str):
            return fn
        name = self._names.name_of(fn) if self._names is not None else None
        if name is None:
            raise ConfigurationError(
                f"{fn!r} is not a registered command here, and code is never sent to remote workers; "
                "submit the command's name, or pass the registry that has it to the executor"
            )
        return name

    def _deliver(self, outcome: Outcome) -> None:
        if outcome.run == SUBMITTED:
            with self._futures_lock:
                future = self._futures.pop(outcome.attempt_id, None)
            if future is not None and future.set_running_or_notify_cancel():
                _settle_future(future, outcome)
            return
        super()._deliver(outcome)

    def _cancel_futures(self) -> None:
        with self._futures_lock:
            pending, self._futures = list(self._futures.values()), {}
        for future in pending:
            future.cancel()


def _settle_future(future: Future[Any], outcome: Outcome) -> None:
    if outcome.ok:
        future.set_result(outcome.result if outcome.expansion is None else dict(outcome.expansion))
    else:
        assert outcome.error is not None
        future.set_exception(rebuild(outcome.error))


def rebuild(error: ErrorInfo) -> BaseException:
    """The remote exception as a local one: a builtin exception type by name, else ``RemoteError``."""
    module, _, name = error.type.rpartition(".")
    kind = getattr(builtins, name, None) if module == "builtins" else None
    if isinstance(kind, type) and issubclass(kind, Exception):
        try:
            return kind(error.message)
        except Exception:  # an exception type whose constructor wants other arguments
            pass
    return RemoteError(error.type, error.message, error.traceback)
