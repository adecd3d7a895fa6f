"""Commands on a pool of threads in this process: for I/O-bound callables and anything unpicklable."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from orchestrator.core.envelope import Envelope
from orchestrator.core.registry import Registry

from .base import BaseExecutor, check_workers
from .execution import execute, failed


class ThreadExecutor(BaseExecutor):
    """Each envelope is one task on a ``ThreadPoolExecutor``; outcomes come from its threads.

    ``close()`` cancels envelopes not yet started and waits for running ones,
    since a thread cannot be stopped from outside.
    """

    kind = "threads"
    requires_pickle = False

    def __init__(self, max_workers: int | None = None) -> None:
        super().__init__()
        self.max_workers = check_workers(max_workers)
        self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="evenflow-threads")

    def _dispatch(self, registry: Registry, envelopes: list[Envelope]) -> None:
        for envelope in envelopes:
            self._pool.submit(self._run, registry, envelope)

    def _run(self, registry: Registry, envelope: Envelope) -> None:
        """Execute and report on the pool's thread. A done-callback would run in the dispatching
        thread when the call ended first, so an engine that dispatches from ``report`` would recurse."""
        try:
            outcome = execute(registry, envelope, by=self.by)
        except BaseException as exc:  # execute turns a command's errors into outcomes; this is ours
            outcome = failed(envelope, exc, by=self.by)
        self._deliver(outcome)

    def _submit(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Future[Any]:
        return self._pool.submit(fn, *args, **kwargs)

    def _shutdown(self, *, wait: bool, cancel_futures: bool) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)

    def __repr__(self) -> str:
        return f"ThreadExecutor(max_workers={self.max_workers!r})"
