"""Commands on an event loop of their own: coroutines on the loop, sync callables in its threads.

The loop runs in a daemon thread owned by the executor, so the engine (sync or
async) never shares its loop with commands. An envelope with a deadline is
bounded with ``asyncio.wait_for``: past it, the attempt ends as a timeout
(a coroutine is cancelled; a sync callable keeps its thread but its result is dropped).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from orchestrator.core.envelope import Envelope, Outcome, now_precise
from orchestrator.core.ports import Report
from orchestrator.core.registry import Registry

from .base import BaseExecutor, check_workers
from .execution import call_async, execute_async, failed, seconds_until, timed_out


class AsyncioExecutor(BaseExecutor):
    """Runs every envelope as a task on a private event loop.

    ``close()`` cancels what is still running on the loop (nothing is reported for
    it), then waits for sync callables already running in the loop's threads.
    """

    kind = "asyncio"
    requires_pickle = False

    def __init__(self, *, max_threads: int | None = None, close_timeout_s: float = 5.0) -> None:
        super().__init__()
        self.max_threads = check_workers(max_threads, what="max_threads")
        self._threads = ThreadPoolExecutor(self.max_threads, thread_name_prefix="evenflow-asyncio")
        self._close_timeout_s = close_timeout_s
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._submitted: set[Future[Any]] = set()

    def start(self, registry: Registry, report: Report) -> None:
        super().start(registry, report)
        self._running_loop()

    def _dispatch(self, registry: Registry, envelopes: list[Envelope]) -> None:
        self._running_loop().call_soon_threadsafe(self._spawn, registry, envelopes)

    def _spawn(self, registry: Registry, envelopes: list[Envelope]) -> None:
        """On the loop: one task per envelope, each reporting its own outcome."""
        loop = asyncio.get_running_loop()
        for envelope in envelopes:
            task = loop.create_task(self._run(registry, envelope))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, registry: Registry, envelope: Envelope) -> None:
        try:
            outcome = await bounded(execute_async(registry, envelope, by=self.by), envelope, by=self.by)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a KeyboardInterrupt raised by a command must not stop the loop
            outcome = failed(envelope, exc, by=self.by)
        self._deliver(outcome)

    def _submit(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Future[Any]:
        future = asyncio.run_coroutine_threadsafe(call_async(fn, args, kwargs), self._running_loop())
        self._submitted.add(future)
        future.add_done_callback(self._submitted.discard)
        return future

    def _shutdown(self, *, wait: bool, cancel_futures: bool) -> None:
        if wait and not cancel_futures:
            concurrent.futures.wait(list(self._submitted))
        with self._lock:
            loop, thread = self._loop, self._thread
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join(self._close_timeout_s)
        self._threads.shutdown(wait=wait, cancel_futures=True)

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                loop.set_default_executor(self._threads)
                self._thread = threading.Thread(
                    target=serve, args=(loop,), name="evenflow-asyncio-loop", daemon=True
                )
                self._thread.start()
                self._loop = loop
            return self._loop


async def bounded(work: Coroutine[Any, Any, Outcome], envelope: Envelope, *, by: str) -> Outcome:
    """Await ``work``, or end the attempt as a timeout once its deadline passes."""
    if envelope.deadline is None:
        return await work
    started = now_precise()
    try:
        return await asyncio.wait_for(work, timeout=max(0.0, seconds_until(envelope.deadline, started)))
    except TimeoutError:
        return timed_out(envelope, by=by, started_at=started, when="while it ran")


def serve(loop: asyncio.AbstractEventLoop) -> None:
    """The loop thread: run until stopped, then cancel what is left and close the loop."""
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
