"""Commands in a pool of worker processes, sent in chunks so each envelope costs little.

The registry travels once per child, as the pool's initializer argument; after
that only envelopes (plain data) go out and outcomes come back. ``dispatch``
cuts what it is given into a few chunks per worker and sends each chunk as one
pool task, so the pipe and pickling overhead is paid per chunk, not per envelope.

When a child dies (SIGKILL, a segfault, ``os._exit``) the standard pool breaks:
every chunk in flight in it ends as ``WorkerLost`` with reason ``"lost"``, and
the next dispatch gets a fresh pool.
"""

from __future__ import annotations

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
from typing import Any

from orchestrator.core import lifeline
from orchestrator.core.envelope import Envelope, Outcome
from orchestrator.core.errors import ConfigurationError, PayloadError, WorkerLost
from orchestrator.core.ports import Report
from orchestrator.core.registry import Registry

from .base import BaseExecutor, check_workers, default_workers, main_guard_problem, worker_id
from .execution import execute, failed

MAX_CHUNK = 64
CHUNKS_PER_WORKER = 4
"""A few chunks per worker keep every worker busy while one chunk's results travel back."""

# --- in the child ----------------------------------------------------------------------


@dataclass
class _ChildState:
    registry: Registry | None = None
    problem: str = ""
    by: str = ""


_child = _ChildState()


def install(payload: bytes, owner: int) -> None:
    """Pool initializer: load this child's registry; a failure is kept, so each envelope can say why.

    The child leaves when ``owner`` (the process that made the pool) dies, and ignores Ctrl-C.
    """
    lifeline.hold(owner)
    _child.by = worker_id("processes")
    try:
        _child.registry = pickle.loads(payload) if payload else Registry()
    except Exception as exc:  # unpickling runs arbitrary imports; any failure means "cannot load"
        _child.registry, _child.problem = None, f"{type(exc).__name__}: {exc}"


def run_chunk(envelopes: list[Envelope]) -> list[Outcome]:
    """One pool task: run a chunk of envelopes in order, one outcome each."""
    registry = _child.registry
    if registry is None:
        problem = ConfigurationError(
            f"worker process {os.getpid()} could not load the command registry ({_child.problem}); "
            "make the modules that define the commands importable there (installed or on PYTHONPATH)"
        )
        return [failed(envelope, problem, by=_child.by) for envelope in envelopes]
    return [execute(registry, envelope, by=_child.by) for envelope in envelopes]


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
    """One generation of the process pool and the chunks in flight in it."""

    pool: ProcessPoolExecutor
    names: frozenset[str]
    inflight: dict[Future[list[Outcome]], list[Envelope]] = field(default_factory=dict)
    retired: bool = False


class ProcessExecutor(BaseExecutor):
    """Runs envelopes in ``max_workers`` child processes (default: one per CPU).

    ``close()`` cancels chunks not yet started, gives running ones
    ``close_timeout_s`` to finish, then kills their processes; it never hangs.
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
        size = chunk_size(len(sendable), self.max_workers)
        for first in range(0, len(sendable), size):
            self._send(sendable[first : first + size])

    def _sendable(self, registry: Registry, envelope: Envelope) -> bool:
        """Report at once a command that cannot reach a child (a lambda, a closure)."""
        reason = registry.unsendable_reason(envelope.command) if envelope.command in registry else None
        if reason is not None:
            self._deliver(failed(envelope, PayloadError(reason), by=self.by))
        return reason is None

    def _send(self, chunk: list[Envelope]) -> None:
        try:
            with self._lock:
                slot, future = self._submit_locked((e.command for e in chunk), run_chunk, chunk)
                slot.inflight[future] = chunk
        except Exception as exc:  # the pool cannot start a worker: every envelope of the chunk is lost
            for envelope in chunk:
                self._deliver(lost(envelope, by=self.by, cause=f"no worker process could be started ({exc})"))
            return
        future.add_done_callback(partial(self._settled_chunk, slot))

    def _settled_chunk(self, slot: _Pool, future: Future[list[Outcome]]) -> None:
        """Done-callback of one chunk (in the pool's manager thread): report each outcome once."""
        with self._lock:
            chunk = slot.inflight.pop(future, None)
            if chunk is None or future.cancelled():
                return
            error = future.exception()
            if isinstance(error, BrokenProcessPool):
                self._retire_locked(slot)
        if error is None:
            for outcome in future.result():
                self._deliver(outcome)
        elif isinstance(error, BrokenProcessPool):
            for envelope in chunk:
                self._deliver(lost(envelope, by=self.by, cause="a worker process of its pool died"))
        else:
            for envelope in chunk:
                self._deliver(failed(envelope, error, by=self.by))

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
            payload, names = snapshot(registry)
            pool = ProcessPoolExecutor(
                self.max_workers,
                mp_context=self._context,
                initializer=install,
                initargs=(payload, os.getpid()),
            )
            slot = self._current = _Pool(pool, names)
            self._pools.add(slot)
        return slot

    def _retire_locked(self, slot: _Pool) -> None:
        """Stop using ``slot``; a reaper thread waits for it to end and reports what it lost."""
        if self._current is slot:
            self._current = None
        if not slot.retired:
            slot.retired = True
            reaper = threading.Thread(target=self._reap, args=(slot,), name="evenflow-reaper", daemon=True)
            reaper.start()

    def _reap(self, slot: _Pool) -> None:
        slot.pool.shutdown(wait=True)
        with self._lock:
            leftovers = list(slot.inflight.values())
            slot.inflight.clear()
            self._pools.discard(slot)
        for chunk in leftovers:  # submitted as the pool broke: the stdlib never completes these
            for envelope in chunk:
                self._deliver(lost(envelope, by=self.by, cause="its worker pool broke as it was sent"))

    def _shutdown(self, *, wait: bool, cancel_futures: bool) -> None:
        for slot in self._take_pools():
            slot.pool.shutdown(wait=wait, cancel_futures=cancel_futures)

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
