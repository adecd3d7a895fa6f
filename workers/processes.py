"""Commands in a pool of worker processes, sent in chunks, each outcome reported as its attempt ends.

The registry travels once per child, as the pool's initializer argument; after
that only envelopes (plain data) go out. ``dispatch`` cuts what it is given
into a few chunks per worker and sends each chunk as one pool task, so pickling
and the task queue cost per chunk, not per envelope. The child streams back on
its own connection (``process_channel``) that an attempt starts and, as soon as
it ends, its outcome; a reader thread reports each at once. Each envelope sent
holds a ticket until its one outcome is reported, whichever path brings it.

When a child dies (SIGKILL, a segfault, ``os._exit``) the standard pool breaks
and the next dispatch gets a fresh pool. Once every child of the broken pool
has left and all they wrote is read, each envelope still open is decided: one
that had started is ``WorkerLost`` with reason ``"lost"``; one that had not is
sent again, to the new pool, so it runs at most once.
"""

from __future__ import annotations

import itertools
import math
import multiprocessing
import os
import pickle
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from functools import partial
from multiprocessing.connection import wait as wait_ready
from typing import Any

from orchestrator.core.envelope import Envelope, Outcome
from orchestrator.core.errors import ConfigurationError, PayloadError, WorkerLost
from orchestrator.core.ports import Report
from orchestrator.core.registry import Registry

from .base import BaseExecutor, check_workers, default_workers, main_guard_problem
from .execution import failed
from .process_channel import Channel
from .process_child import NONE, Ticketed, install, run_chunk

MAX_CHUNK = 64
CHUNKS_PER_WORKER = 4
"""A few chunks per worker keep every worker busy while one chunk's acknowledgement travels back."""
MAX_RESENDS = 3
"""How many broken pools an envelope may outlive without starting before it is reported lost."""


# --- in the parent ---------------------------------------------------------------------


def chunk_size(count: int, workers: int) -> int:
    return max(1, min(MAX_CHUNK, math.ceil(count / (CHUNKS_PER_WORKER * workers))))


def start_method(name: str) -> str:
    """``name`` if this platform has it; forkserver falls back to spawn where it does not exist."""
    methods = multiprocessing.get_all_start_methods()
    if name == "forkserver" and name not in methods:
        return "spawn"
    if name not in methods:
        raise ConfigurationError(f"mp_context {name!r} is not available here; use one of {methods}")
    return name


def snapshot(registry: Registry | None) -> tuple[bytes, frozenset[str]]:
    """The registry as children get it (only the sendable commands), and every name it knew."""
    if registry is None:
        return b"", frozenset()
    child = Registry()
    for name in registry.names():
        if registry.unsendable_reason(name) is None:
            cmd = registry.get(name)
            child.register(name, cmd.fn, retry=cmd.retry, timeout=cmd.timeout, route=cmd.route)
    return pickle.dumps(child), frozenset(registry.names())


def worker_processes(pool: ProcessPoolExecutor) -> list[multiprocessing.process.BaseProcess]:
    """The pool's live children; the stdlib offers no public way to stop a busy one."""
    return list((getattr(pool, "_processes", None) or {}).values())


def lost(envelope: Envelope, *, by: str, cause: str) -> Outcome:
    exc = WorkerLost(
        f"attempt {envelope.attempt_id} of {envelope.command!r} was lost: {cause}. "
        "A worker process dies when a command kills it or it runs out of memory; "
        "a retry policy may run the attempt again"
    )
    return failed(envelope, exc, by=by, reason="lost")


@dataclass(eq=False)
class _Pool:
    """One generation of the process pool and the chunks in flight in it (future → its tickets)."""

    pool: ProcessPoolExecutor
    names: frozenset[str]
    generation: int
    inflight: dict[Future[Any], list[int]] = field(default_factory=dict)
    retired: bool = False
    broken: bool = False


@dataclass(eq=False)
class _Ticket:
    """An envelope sent and not yet reported: where it went, and whether its child said it started."""

    envelope: Envelope
    slot: _Pool
    started: bool = False
    resends: int = 0


class ProcessExecutor(BaseExecutor):
    """Runs envelopes in ``max_workers`` child processes (default: one per CPU).

    ``close()`` cancels chunks not yet started, gives running ones
    ``close_timeout_s`` to finish, then kills their processes; it never hangs.
    When a child dies, its siblings get as long to finish the attempt each is running.
    """

    kind = "processes"
    requires_pickle = True
    isolated = True

    def __init__(
        self, max_workers: int | None = None, *, mp_context: str = "forkserver", close_timeout_s: float = 5.0
    ) -> None:
        super().__init__()
        self.max_workers = check_workers(max_workers) or default_workers()
        self._context = multiprocessing.get_context(start_method(mp_context))
        self._close_timeout_s = close_timeout_s
        self._lock = threading.Lock()
        self._current: _Pool | None = None
        self._pools: set[_Pool] = set()
        self._tickets: dict[int, _Ticket] = {}
        self._numbers = itertools.count()
        self._generations = itertools.count()
        self._channel: Channel | None = None

    def start(self, registry: Registry, report: Report) -> None:
        """Build (and warm) a pool that carries ``registry``, so startup errors surface here.

        Children that spawn or forkserve import ``__main__`` again: a script without a main guard
        would start its flows in each of them, so that is refused here, in one line.
        """
        if self._context.get_start_method() != "fork" and (problem := main_guard_problem()) is not None:
            raise ConfigurationError(problem)
        super().start(registry, report)
        with self._lock:
            if self._current is not None:
                self._retire_locked(self._current)
            slot = self._current_locked(())
        for _ in range(self.max_workers):
            slot.pool.submit(os.getpid)

    def _dispatch(self, registry: Registry, envelopes: list[Envelope]) -> None:
        sendable = [envelope for envelope in envelopes if self._sendable(registry, envelope)]
        self._send_all([(next(self._numbers), envelope) for envelope in sendable])

    def _send_all(self, items: list[Ticketed]) -> None:
        size = chunk_size(len(items), self.max_workers)
        for first in range(0, len(items), size):
            self._send(items[first : first + size])

    def _sendable(self, registry: Registry, envelope: Envelope) -> bool:
        """Report at once a command that cannot reach a child (a lambda, a closure)."""
        reason = registry.unsendable_reason(envelope.command) if envelope.command in registry else None
        if reason is not None:
            self._deliver(failed(envelope, PayloadError(reason), by=self.by))
        return reason is None

    def _send(self, chunk: list[Ticketed]) -> None:
        try:
            with self._lock:
                slot, future = self._submit_locked((e.command for _, e in chunk), run_chunk, chunk)
                for number, envelope in chunk:  # under the lock: no outcome can be handled before this
                    self._tickets[number] = _Ticket(envelope, slot, resends=self._resends(number))
                slot.inflight[future] = [number for number, _ in chunk]
        except Exception as exc:  # the pool cannot start a worker: every envelope of the chunk is lost
            cause = f"no worker process could be started ({exc})"
            for number, envelope in chunk:
                with self._lock:
                    self._tickets.pop(number, None)
                self._deliver(lost(envelope, by=self.by, cause=cause))
            return
        future.add_done_callback(partial(self._settled_chunk, slot))

    def _resends(self, number: int) -> int:
        held = self._tickets.get(number)
        return 0 if held is None else held.resends

    def _on_message(self, data: bytes) -> None:
        """From the reader thread: an attempt ended (report it, once) and/or the next one started."""
        number, outcome, following = pickle.loads(data)
        with self._lock:
            ended = self._tickets.pop(number, None) if outcome is not None else None
            if following != NONE and (held := self._tickets.get(following)) is not None:
                held.started = True
        if ended is not None:
            self._deliver(outcome)

    def _end(self, number: int, outcome: Outcome) -> None:
        """Report ``outcome`` unless its ticket was already reported by another path."""
        with self._lock:
            ended = self._tickets.pop(number, None)
        if ended is not None:
            self._deliver(outcome)

    def _settled_chunk(self, slot: _Pool, future: Future[list[tuple[int, Outcome]]]) -> None:
        """Done-callback of one chunk (in the pool's manager thread): its acknowledgement."""
        with self._lock:
            numbers = slot.inflight.pop(future, None)
            if numbers is None or future.cancelled():
                return
            error = future.exception()
            if isinstance(error, BrokenProcessPool):
                slot.broken = True
                self._retire_locked(slot)  # the reaper decides each open ticket once the pool is gone
                return
            tickets = {number: self._tickets.get(number) for number in numbers}
        if error is None:
            for number, outcome in future.result():  # only what the child could not stream
                self._end(number, outcome)
            return
        for number, ticket in tickets.items():
            if ticket is not None:
                self._end(number, failed(ticket.envelope, error, by=self.by))

    def _submit(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Future[Any]:
        with self._lock:
            return self._submit_locked((), fn, *args, **kwargs)[1]

    def _submit_locked(
        self, commands: Iterable[str], fn: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> tuple[_Pool, Future[Any]]:
        """Submit to the current pool; a pool found broken is replaced once."""
        commands = list(commands)
        for attempt in (1, 2):
            slot = self._current_locked(commands)
            try:
                return slot, slot.pool.submit(fn, *args, **kwargs)
            except BrokenProcessPool:
                slot.broken = True
                self._retire_locked(slot)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _current_locked(self, commands: Iterable[str]) -> _Pool:
        """The pool to use; a new one if there is none or it predates a command being sent."""
        slot, registry = self._current, self._registry
        if (
            slot is not None
            and registry is not None
            and any(name not in slot.names and name in registry for name in commands)
        ):
            self._retire_locked(slot)
            slot = None
        if slot is None:
            if not self._open:
                raise ConfigurationError(f"{self!r} is closed")
            if self._channel is None:
                self._channel = Channel(self._on_message)
            payload, names = snapshot(registry)
            generation = next(self._generations)
            pool = ProcessPoolExecutor(
                self.max_workers,
                mp_context=self._context,
                initializer=install,
                initargs=(payload, os.getpid(), self._channel.address, generation),
            )
            slot = self._current = _Pool(pool, names, generation)
            self._pools.add(slot)
        return slot

    def _retire_locked(self, slot: _Pool) -> None:
        """Stop using ``slot``; a reaper thread waits for it to end and decides what it left open."""
        if self._current is slot:
            self._current = None
        if not slot.retired:
            slot.retired = True
            reaper = threading.Thread(target=self._reap, args=(slot,), name="evenflow-reaper", daemon=True)
            reaper.start()

    def _reap(self, slot: _Pool) -> None:
        """Once ``slot``'s children are gone and all they wrote is read: report what had started as
        lost, and send again what had not."""
        if slot.broken:
            self._stop_children(slot)
        slot.pool.shutdown(wait=True)
        channel = self._channel
        settled = channel is not None and channel.settle(slot.generation)
        again: list[Ticketed] = []
        given_up: list[Outcome] = []
        with self._lock:
            slot.inflight.clear()
            self._pools.discard(slot)
            for number, ticket in [(n, t) for n, t in self._tickets.items() if t.slot is slot]:
                cause = self._lost_cause(ticket, settled)
                if cause is None:
                    ticket.resends += 1
                    again.append((number, ticket.envelope))
                else:
                    del self._tickets[number]
                    given_up.append(lost(ticket.envelope, by=self.by, cause=cause))
        for outcome in given_up:
            self._deliver(outcome)
        self._send_all(again)

    def _lost_cause(self, ticket: _Ticket, settled: bool) -> str | None:
        """Why an envelope left open by a dead pool is lost, or None to send it again."""
        if ticket.started:
            return "the worker process running it died"
        if not settled:
            return "a worker process of its pool died, and whether it had started cannot be told"
        if ticket.resends >= MAX_RESENDS:
            return f"its worker pool broke {ticket.resends + 1} times before it could start"
        if not self._open:
            return "its worker pool broke as the executor closed"
        return None

    def _stop_children(self, slot: _Pool) -> None:
        """A broken pool's children: each may finish the attempt it runs, for ``close_timeout_s``."""
        processes = worker_processes(slot.pool)
        deadline = time.monotonic() + self._close_timeout_s
        pending = {process.sentinel: process for process in processes}
        while pending and (left := deadline - time.monotonic()) > 0:
            for sentinel in wait_ready(list(pending), timeout=left):
                if isinstance(sentinel, int):
                    pending.pop(sentinel)
        for process in pending.values():
            process.kill()

    def _shutdown(self, *, wait: bool, cancel_futures: bool) -> None:
        for slot in self._take_pools():
            slot.pool.shutdown(wait=wait, cancel_futures=cancel_futures)
        self._close_channel()

    def _close(self) -> None:
        with self._lock:
            slots = list(self._pools)
        processes = [process for slot in slots for process in worker_processes(slot.pool)]
        for slot in self._take_pools():
            slot.pool.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + self._close_timeout_s
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
        self._reporting = False  # what is killed below was abandoned, not lost
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join(self._close_timeout_s)
        self._close_channel()

    def _close_channel(self) -> None:
        with self._lock:
            channel, self._channel = self._channel, None
        if channel is not None:
            channel.close()

    def _take_pools(self) -> list[_Pool]:
        """The pools nobody else is stopping (retired ones are their reaper's), now ours to stop."""
        with self._lock:
            self._current = None
            slots = [slot for slot in self._pools if not slot.retired]
            for slot in slots:
                slot.retired = True
            return slots

    def __repr__(self) -> str:
        method = self._context.get_start_method()
        return f"ProcessExecutor(max_workers={self.max_workers}, mp_context={method!r})"
