"""The in-memory twin of the executor port: every envelope runs in the caller's thread, now."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from orchestrator.core.envelope import Envelope
from orchestrator.core.registry import Registry

from .base import BaseExecutor
from .execution import execute


class InlineExecutor(BaseExecutor):
    """Runs each envelope synchronously inside ``dispatch()`` and reports before returning.

    A ``dispatch()`` made from inside ``report`` (an engine reacting at once) is
    queued and run by the outer call once the current envelope is reported, so a
    long chain of steps does not grow the stack by one level per step.
    """

    kind = "inline"
    requires_pickle = False

    def __init__(self) -> None:
        super().__init__()
        self._local = threading.local()

    def _dispatch(self, registry: Registry, envelopes: list[Envelope]) -> None:
        queue: deque[Envelope] | None = getattr(self._local, "queue", None)
        if queue is not None:
            queue.extend(envelopes)
            return
        queue = self._local.queue = deque(envelopes)
        try:
            while queue:
                self._deliver(execute(registry, queue.popleft(), by=self.by))
        finally:
            self._local.queue = None

    def _submit(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Future[Any]:
        future: Future[Any] = Future()
        future.set_running_or_notify_cancel()
        try:
            future.set_result(fn(*args, **kwargs))
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # as the stdlib's pools do: the future carries it
            future.set_exception(exc)
        return future

    def _shutdown(self, *, wait: bool, cancel_futures: bool) -> None:
        """Nothing runs after dispatch() returns, so there is nothing to stop."""
