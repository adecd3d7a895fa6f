"""What every evenflow executor shares: the port's bookkeeping and the ``concurrent.futures`` face.

An executor is started with a registry and a ``report`` callback, runs the
envelopes it is given and reports one outcome for each. Subclassing
``concurrent.futures.Executor`` lets the same object stand in wherever the
standard library's executors are expected (``submit``, ``map``, ``shutdown``,
``with``), so evenflow and stdlib-style executors are interchangeable.

Lifecycle: ``close()`` (the port) and ``shutdown()`` (the stdlib face) both end
the executor. Nothing is reported after either returns; an envelope abandoned
by ``close()`` gets no outcome, and the engine re-dispatches it on restart.
"""

from __future__ import annotations

import ast
import logging
import os
import socket
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import Executor as StdExecutor
from concurrent.futures import Future
from pathlib import Path
from typing import Any, ClassVar, ParamSpec, TypeVar

from orchestrator.core.envelope import Envelope, Outcome
from orchestrator.core.errors import ConfigurationError
from orchestrator.core.logfields import fields
from orchestrator.core.ports import Report
from orchestrator.core.registry import Registry

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


def worker_id(kind: str) -> str:
    """``host:pid/kind``: who ran an attempt, as the log's ``by`` field records it."""
    return f"{socket.gethostname()}:{os.getpid()}/{kind}"


def check_workers(value: object, *, what: str = "max_workers") -> int | None:
    """A worker count must be a positive int (None means the executor's default)."""
    if value is None:
        return None
    if type(value) is not int or value < 1:
        raise ConfigurationError(f"{what} must be a whole number >= 1, or None for the default: {value!r}")
    return value


def default_workers() -> int:
    return os.cpu_count() or 1


def main_guard_problem() -> str | None:
    """Why spawned worker processes would fail at birth: the script they import again has no main guard.

    Under spawn or forkserver every child imports the ``__main__`` script again.
    A script that starts its flows at import, outside ``if __name__ ==
    "__main__":``, makes each child do the same: each fails to bootstrap and
    every attempt ends ``WorkerLost``. Said once here, as it is built, instead.
    """
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    spec = getattr(main, "__spec__", None)
    name = spec.name if spec is not None else Path(path or "").stem
    if name == "__main__" or name.endswith(".__main__"):  # a package's __main__: children skip it
        return None
    if main is None or not path or not _running_its_top_level(vars(main)):
        return None
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return None
    if any(_is_main_guard(node) for node in tree.body):
        return None
    return (
        f"the worker processes of processes:// import {Path(path).name} again, and it starts its flows as "
        'it is imported: put that code under `if __name__ == "__main__":`'
    )


def _running_its_top_level(namespace: dict[str, Any]) -> bool:
    frame = sys._getframe()
    while frame is not None:
        if frame.f_code.co_name == "<module>" and frame.f_globals is namespace:
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


def _is_main_guard(node: ast.stmt) -> bool:
    test = ast.unparse(node.test) if isinstance(node, ast.If) else ""
    return "__name__" in test and "__main__" in test


class BaseExecutor(StdExecutor, ABC):
    """The executor port plus the ``concurrent.futures.Executor`` face, for subclasses to fill in.

    Subclasses implement ``_dispatch``, ``_submit`` and ``_shutdown``; this class
    keeps the registry and callback, refuses work after shutdown and isolates a
    failing ``report`` so one bad callback cannot cost other envelopes their outcome.
    """

    kind: ClassVar[str] = "base"
    requires_pickle: bool = False
    isolated: bool = False
    """Commands run in other processes or hosts, so none can stop the orchestrator's process."""

    def __init__(self) -> None:
        self.by = worker_id(self.kind)
        self._registry: Registry | None = None
        self._report: Report | None = None
        self._open = True
        self._reporting = True

    # --- the executor port ------------------------------------------------------------

    def start(self, registry: Registry, report: Report) -> None:
        self._registry = registry
        self._report = report

    def dispatch(self, envelopes: Sequence[Envelope]) -> None:
        if self._registry is None:
            raise ConfigurationError(f"{self!r} was not started: call start(registry, report) first")
        if not self._open:
            raise ConfigurationError(f"{self!r} is closed; build a new executor to dispatch more")
        if envelopes:
            self._dispatch(self._registry, list(envelopes))

    def close(self) -> None:
        """Stop: cancel what has not started, end reporting; safe to call twice."""
        if self._open:
            self._open = False
            try:
                self._close()
            finally:
                self._reporting = False

    # --- the concurrent.futures face --------------------------------------------------

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        if not self._open:
            raise RuntimeError(f"cannot submit to {self!r} after shutdown() or close()")
        return self._submit(fn, args, kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if self._open:
            self._open = False
            try:
                self._shutdown(wait=wait, cancel_futures=cancel_futures)
            finally:
                self._reporting = False

    # --- for subclasses ---------------------------------------------------------------

    @abstractmethod
    def _dispatch(self, registry: Registry, envelopes: list[Envelope]) -> None:
        """Run each envelope and ``_deliver`` exactly one outcome for it."""

    @abstractmethod
    def _submit(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Future[Any]:
        """The ``concurrent.futures`` face: run ``fn`` where this executor runs commands."""

    @abstractmethod
    def _shutdown(self, *, wait: bool, cancel_futures: bool) -> None:
        """Stop the underlying pool or loop."""

    def _close(self) -> None:
        self._shutdown(wait=True, cancel_futures=True)

    def _deliver(self, outcome: Outcome) -> None:
        """Hand one outcome to the engine; a raising callback is logged, never propagated."""
        report = self._report
        if report is None or not self._reporting:
            return
        try:
            report(outcome)
        except Exception:
            log.exception(
                "reporting the outcome of %s failed",
                outcome.attempt_id,
                extra=fields(outcome.run, outcome.node, outcome.attempt, outcome.by),
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
