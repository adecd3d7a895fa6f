"""``Run``, the handle ``submit`` returns, and waiting on the engine's futures from sync or async code.

Both faces wait on the same ``concurrent.futures.Future`` the engine answers:
blocking, or wrapped for the running event loop. A timeout names the run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Protocol

from .core.errors import ResultTimeout
from .core.state import RunState

RunId = str | Callable[[], str]
"""A run id, or how to learn it once the submission is logged (for the message of a timeout)."""


class Runs(Protocol):
    """What a ``Run`` asks of the orchestrator that made it."""

    def result(self, run_id: str, timeout: float | None = None) -> Any: ...

    def result_future(self, run_id: str) -> Future[Any]: ...

    def state(self, run_id: str) -> RunState: ...

    def cancel(self, run_id: str, reason: str = ..., timeout: float | None = ...) -> None: ...

    def retry(self, run_id: str) -> Run: ...


class Run:
    """A handle on one run: its id, its result and its status."""

    def __init__(self, orchestrator: Runs, run_id: str) -> None:
        self._orchestrator = orchestrator
        self.id = run_id

    def result(self, timeout: float | None = None) -> Any:
        return self._orchestrator.result(self.id, timeout)

    async def result_async(self, timeout: float | None = None) -> Any:
        return await wait_async(self._orchestrator.result_future(self.id), timeout, self.id)

    def status(self) -> str:
        """``running``, ``succeeded``, ``failed`` or ``cancelled``."""
        return self._orchestrator.state(self.id).status

    def cancel(self, reason: str = "cancelled by request") -> None:
        self._orchestrator.cancel(self.id, reason)

    def retry(self) -> Run:
        return self._orchestrator.retry(self.id)

    def __repr__(self) -> str:
        return f"Run({self.id!r})"


def wait(future: Future[Any], timeout: float | None, run_id: RunId = "") -> Any:
    try:
        return future.result(timeout)
    except FutureTimeout:
        raise _timed_out(run_id, timeout) from None


async def wait_async(future: Future[Any], timeout: float | None, run_id: RunId = "") -> Any:
    try:
        return await asyncio.wait_for(asyncio.wrap_future(future), timeout)
    except TimeoutError:
        raise _timed_out(run_id, timeout) from None


def id_of(submitted: Future[str]) -> Callable[[], str]:
    """The run id once ``submitted`` resolved, else ''."""
    return lambda: submitted.result() if submitted.done() and submitted.exception() is None else ""


def _timed_out(run_id: RunId, timeout: float | None) -> ResultTimeout:
    name = run_id if isinstance(run_id, str) else run_id()
    return ResultTimeout(f"run {name or '(not logged yet)'} did not finish within {timeout}s")
