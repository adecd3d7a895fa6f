"""``ListenerHost``: follows the log for each listener and sends what they answer to be triggered.

Each listener has its own task on the host's event loop (one thread) and its
own checkpoint. A turn of a task reads a batch of matching events after its
position, calls the listener on each (coroutine listeners on the loop, sync
ones in a worker thread, ``process=True`` ones in a child process), hands all
the triggers of the batch to ``trigger`` (which returns once they are logged),
and only then saves the position as the checkpoint. A crash between the two
calls the listener again on restart; the triggered runs are keyed on the
causing event, so they land on the runs already logged: exactly once per
(listener, event). Anything that fails in a turn (the store, the trigger) is
retried from the same position; a listener's own failure is logged as the
failure of the run it would have triggered and never stops its task.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import pickle
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from orchestrator.core import lifeline
from orchestrator.core.crashpoints import crash_point
from orchestrator.core.errors import ConfigurationError, WorkerLost
from orchestrator.core.listening import Listener, Trigger, failed_trigger, matches
from orchestrator.core.ports import FeedStore, Position

from .answers import answer_all, answer_all_async

log = logging.getLogger("evenflow.listeners")

Triggered = Callable[[Sequence[Trigger]], None]
"""Logs triggers durably (as runs, keyed on their cause); raises if it could not."""

BATCH = 500
"""Events one turn of a listener reads."""
POLL_S = 0.5
"""How often an idle listener looks for events that no wake-up announced (other writers)."""
SAVE_S = 1.0
"""How often a position is saved while a listener works through a backlog (full batches) or moves
past events of other types only; a turn that handled events and caught up always saves. Saving less
often costs only calls again after a crash, never a second run."""
BACKOFF_S = (0.1, 0.5, 2.0)
IO_THREADS = 16
"""Threads for store, feed and trigger calls (made as needed): a remote listener's long poll holds one."""


class ListenerHost:
    """Runs listeners against a ``FeedStore``; ``wake()`` from any thread after an append."""

    def __init__(
        self,
        feed: FeedStore,
        trigger: Triggered,
        *,
        poll_s: float = POLL_S,
        threads: int = 4,
    ) -> None:
        self.feed = feed
        self.trigger = trigger
        self.poll_s = poll_s
        self._names: set[str] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="evenflow-listeners", daemon=True)
        self._threads = ThreadPoolExecutor(threads, thread_name_prefix="evenflow-listener")
        """Where sync listeners run."""
        self._io = ThreadPoolExecutor(IO_THREADS, thread_name_prefix="evenflow-listener-io")
        """Where store and trigger calls block: apart, so stuck listeners cannot starve the others' reads."""
        self._processes: dict[str, ProcessPoolExecutor] = {}
        """A child per ``process=True`` listener: one that dies takes no other listener's event with it."""
        self._wakes: dict[asyncio.Event, tuple[str, ...]] = {}
        """Each following listener's wake-up, with the patterns that may wake it."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._stopped: asyncio.Event | None = None
        self._lock = threading.Lock()

    def add(self, listener: Listener) -> None:
        """Start following ``listener`` from its checkpoint (saving a first one if it has none).

        The starting position is fixed here, in the caller's thread, so an event
        logged after ``add`` returns is never missed.
        """
        with self._lock:
            if listener.name in self._names:
                raise ConfigurationError(
                    f"a listener named {listener.name!r} is already listening; give each listener its "
                    "own name= (the name keys its checkpoint and the runs it triggers)"
                )
            if listener.process:
                _check_picklable(listener)
            position = self.feed.load_checkpoint(listener.name)
            if position is None:
                position = None if listener.since == "start" else self.feed.feed_head(listener.patterns)
                self.feed.save_checkpoint(listener.name, position or {})
            self._names.add(listener.name)
            self._loop.call_soon_threadsafe(self._follow_soon, listener, position)  # runs once the loop does

    def start(self) -> None:
        if not self._thread.is_alive():
            self._thread.start()

    def wake(self, types: Iterable[str] | None = None) -> None:
        """Events of ``types`` (None: of any type) are in the log: end the idle wait of their listeners."""
        if self._thread.is_alive() and not self._stopping:
            self._loop.call_soon_threadsafe(self._wake, None if types is None else frozenset(types))

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the turns in progress (their checkpoints included), then stop."""
        self._stopping = True
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop_now)
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("listeners did not stop within %gs; their last batches are read again", timeout)
        if not self._thread.is_alive() and not self._loop.is_closed():
            self._loop.close()  # never started
        self._threads.shutdown(wait=False, cancel_futures=True)
        self._io.shutdown(wait=False, cancel_futures=True)
        for name in list(self._processes):
            self._drop_pool(name)

    # --- on the host's loop ------------------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._until_stopped())
        finally:
            self._loop.close()

    async def _until_stopped(self) -> None:
        self._stopped = asyncio.Event()
        if self._stopping:
            self._stopped.set()
        await self._stopped.wait()
        if self._tasks:
            await asyncio.wait(set(self._tasks))

    def _stop_now(self) -> None:
        self._wake(None)
        if self._stopped is not None:
            self._stopped.set()

    def _follow_soon(self, listener: Listener, position: Position | None) -> None:
        task = self._loop.create_task(self._follow(listener, position), name=f"listener {listener.name}")
        self._tasks.add(task)
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "%s stopped: %r; restart the orchestrator to resume it", task.get_name(), task.exception()
            )

    def _wake(self, types: frozenset[str] | None) -> None:
        for woken, patterns in self._wakes.items():
            if types is None or any(matches(patterns, type_) for type_ in types):
                woken.set()

    async def _follow(self, listener: Listener, position: Position | None) -> None:
        woken = asyncio.Event()
        self._wakes[woken] = listener.patterns
        saved, saved_at, failures = position, time.monotonic(), 0
        try:
            while not self._stopping:
                woken.clear()
                try:
                    events, after = await self._blocking(
                        self.feed.read_feed, position, listener.patterns, BATCH
                    )
                    if events:
                        triggers = await self._answer(listener, events)
                        if triggers:
                            await self._blocking(self.trigger, triggers)
                            crash_point("listener-after-trigger-before-checkpoint")
                    caught_up = len(events) < BATCH
                    if after != saved and ((events and caught_up) or time.monotonic() - saved_at >= SAVE_S):
                        await self._blocking(self.feed.save_checkpoint, listener.name, after)
                        saved, saved_at = after, time.monotonic()
                    position, failures = after, 0
                    if not caught_up:
                        continue
                except Exception as exc:
                    failures += 1
                    pause = BACKOFF_S[min(failures, len(BACKOFF_S)) - 1]
                    log.warning(
                        "listener %r: a turn failed (%r); reading again in %gs", listener.name, exc, pause
                    )
                    await _idle(woken, pause)
                    continue
                await _idle(woken, self.poll_s)
        finally:
            self._wakes.pop(woken, None)

    async def _answer(self, listener: Listener, events: list[Any]) -> list[Trigger]:
        if listener.process:
            return await self._answer_in_child(listener, events)
        if _is_coroutine_function(listener.fn):
            return await answer_all_async(listener, events)
        return await self._loop.run_in_executor(self._threads, answer_all, listener, events)

    async def _blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Store and trigger calls block: run them off the loop so coroutine listeners keep going."""
        return await self._loop.run_in_executor(self._io, fn, *args)

    async def _answer_in_child(self, listener: Listener, events: list[Any]) -> list[Trigger]:
        """In the listener's child process; if it dies, one event at a time in fresh ones, so only an
        event that kills its process is logged as the listener's failure."""
        try:
            return await self._loop.run_in_executor(self._pool(listener.name), answer_all, listener, events)
        except BrokenProcessPool:
            self._drop_pool(listener.name)
        triggers: list[Trigger] = []
        for event in events:
            try:
                pool = self._pool(listener.name)
                triggers += await self._loop.run_in_executor(pool, answer_all, listener, [event])
            except BrokenProcessPool:
                self._drop_pool(listener.name)
                died = WorkerLost(f"the process running listener {listener.name!r} died on this event")
                triggers.append(failed_trigger(listener.name, event, died))
        return triggers

    def _drop_pool(self, name: str) -> None:
        pool = self._processes.pop(name, None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def _pool(self, name: str) -> ProcessPoolExecutor:
        if name not in self._processes:
            import multiprocessing

            self._processes[name] = ProcessPoolExecutor(
                1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=lifeline.hold,
                initargs=(os.getpid(),),
            )
        return self._processes[name]


async def _idle(woken: asyncio.Event, seconds: float) -> None:
    """Wait ``seconds``, or less if woken (new events of the listener's types, or a stop)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(woken.wait(), seconds)


def _is_coroutine_function(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)


def _check_picklable(listener: Listener) -> None:
    try:
        pickle.dumps((listener.fn, listener.predicate))
    except Exception as exc:
        raise ConfigurationError(
            f"listener {listener.name!r} runs in a child process, so it must pickle: {exc}; define it "
            "(and its predicate) at module level, or listen without process=True"
        ) from None
