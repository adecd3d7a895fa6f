"""Any ``concurrent.futures.Executor`` as an evenflow executor: stdlib pools, loky, dask and the like.

Each envelope is one task on the wrapped pool, ``run_envelope(registry,
envelope)``, whose done-callback reports its outcome. What goes with an
envelope depends on where the pool runs it:

- a ``ThreadPoolExecutor`` runs in this process, so the task gets the registry
  itself and nothing is pickled (``requires_pickle`` is False);
- any other pool is taken to run elsewhere (processes, other hosts), so
  ``requires_pickle`` is True and each task carries a registry of just its own
  command. A command that cannot be pickled, or a name the registry lacks, is
  reported at once without a trip to the pool. Pass ``requires_pickle=False``
  for a pool of your own that is known to run in this process.

The pool stays its creator's: ``close()`` cancels this executor's envelopes not
yet started, waits up to ``close_timeout_s`` for running ones and leaves the
pool up, since it may be shared (loky's reusable executor, a dask cluster) and
shutting down what one did not create cannot be undone. With ``owns=True`` it
also shuts the pool down, and kills the workers of a process pool still busy
after ``close_timeout_s``, so ``close()`` never hangs.

A pool that breaks (``BrokenExecutor``: a stdlib or loky worker killed, out of
memory) ends every attempt in it as ``WorkerLost`` with reason ``"lost"``, as does
dask's ``KilledWorker``. A broken stdlib or loky pool takes no more work, so every
later envelope is lost at once, with a message that says so; ``processes://N``
replaces a broken pool by itself.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import BrokenExecutor, Future, ThreadPoolExecutor
from concurrent.futures import Executor as StdExecutor
from concurrent.futures import wait as wait_futures
from typing import Any

from orchestrator.core.envelope import Envelope, Outcome
from orchestrator.core.errors import ConfigurationError, PayloadError
from orchestrator.core.registry import Registry

from .base import BaseExecutor, worker_id
from .execution import execute, failed
from .processes import lost

KIND = "futures"

LOST_ERRORS = frozenset({"KilledWorker"})
"""Names of errors by which third-party pools that never break say a worker died (dask)."""

BROKEN_GRACE_S = 5.0
"""How long a broken pool gets to fail its own futures before the ones left over are reported lost."""


def run_envelope(registry: Registry, envelope: Envelope) -> Outcome:
    """One pool task: run the envelope, stamped with the id of the process that ran it."""
    return execute(registry, envelope, by=worker_id(KIND))


def carrier(registry: Registry, name: str) -> Registry:
    """A registry holding only ``name``: what a pool in other processes gets with each envelope."""
    command = registry.get(name)
    slim = Registry()
    slim.register(name, command.fn, retry=command.retry, timeout=command.timeout, route=command.route)
    return slim


class FuturesExecutor(BaseExecutor):
    """Runs each envelope as one task on ``pool``, any ``concurrent.futures.Executor``.

    ``owns`` (default False) says whether closing this executor shuts the pool
    down; ``requires_pickle`` (default: False only for a ``ThreadPoolExecutor``)
    whether commands must be sendable to another process.
    """

    kind = KIND

    def __init__(
        self,
        pool: StdExecutor,
        *,
        owns: bool = False,
        requires_pickle: bool | None = None,
        close_timeout_s: float = 5.0,
    ) -> None:
        if isinstance(pool, BaseExecutor):
            raise ConfigurationError(f"{pool!r} is already an evenflow executor; use it as it is")
        if not isinstance(pool, StdExecutor):
            raise ConfigurationError(
                f"{pool!r} is not a concurrent.futures.Executor; for dask, wrap client.get_executor()"
            )
        super().__init__()
        self.pool = pool
        self.owns = owns
        in_process = isinstance(pool, ThreadPoolExecutor)
        self.requires_pickle = not in_process if requires_pickle is None else requires_pickle
        self.isolated = self.requires_pickle  # what is pickled is run by another process
        self._close_timeout_s = close_timeout_s
        self._lock = threading.Lock()
        self._inflight: dict[Future[Any], Envelope | None] = {}
        self._local = threading.local()
        self._reaping = False

    # --- envelopes ---------------------------------------------------------------------

    def _dispatch(self, registry: Registry, envelopes: list[Envelope]) -> None:
        for envelope in envelopes:
            refused = self._refusal(registry, envelope)
            if refused is not None:
                self._emit(refused)
                continue
            carried = carrier(registry, envelope.command) if self.requires_pickle else registry
            try:
                future = self.pool.submit(run_envelope, carried, envelope)
            except Exception as exc:  # a broken or shut-down pool: the attempt never started
                self._emit(self._not_taken(envelope, exc))
                continue
            self._track(future, envelope)
            future.add_done_callback(self._settle)

    def _refusal(self, registry: Registry, envelope: Envelope) -> Outcome | None:
        """The outcome of an envelope the pool need not see: an unknown or an unsendable command."""
        if envelope.command not in registry:
            return execute(registry, envelope, by=self.by)  # fails with UnknownCommand, running nothing
        reason = registry.unsendable_reason(envelope.command) if self.requires_pickle else None
        return failed(envelope, PayloadError(reason), by=self.by) if reason is not None else None

    def _not_taken(self, envelope: Envelope, exc: Exception) -> Outcome:
        if isinstance(exc, BrokenExecutor):
            cause = (
                f"its pool {self.pool!r} is broken (one of its workers died) and takes no more work; "
                "build a new pool, or use processes://N, which replaces a broken pool"
            )
            return lost(envelope, by=self.by, cause=cause)
        refused = ConfigurationError(
            f"the pool {self.pool!r} refused attempt {envelope.attempt_id}: {exc}; "
            "a pool shut down by its owner takes no more work, so keep it open while the orchestrator runs"
        )
        return failed(envelope, refused, by=self.by)

    def _settle(self, future: Future[Any]) -> None:
        """Done-callback of one envelope's task, in whatever thread the pool completes it."""
        with self._lock:
            envelope = self._inflight.pop(future, None)
        if envelope is None or future.cancelled():
            return
        error = future.exception()
        if error is None:
            self._emit(future.result())
        elif isinstance(error, BrokenExecutor) or type(error).__name__ in LOST_ERRORS:
            self._emit(lost(envelope, by=self.by, cause=f"a worker of its pool died ({error})"))
            if isinstance(error, BrokenExecutor):
                self._reap_broken()
        else:
            self._emit(failed(envelope, error, by=self.by))

    def _emit(self, outcome: Outcome) -> None:
        """Deliver, queueing deliveries made from inside ``report`` on this thread so chains do not recurse.

        A ``dispatch`` from ``report`` whose task is already done when its
        callback is added runs that callback at once, in this frame.
        """
        queue: deque[Outcome] | None = getattr(self._local, "queue", None)
        if queue is not None:
            queue.append(outcome)
            return
        queue = self._local.queue = deque([outcome])
        try:
            while queue:
                self._deliver(queue.popleft())
        finally:
            self._local.queue = None

    def _reap_broken(self) -> None:
        """Once the pool has broken, report as lost whatever it has not failed within ``BROKEN_GRACE_S``.

        A future submitted just as a stdlib pool breaks may never be completed.
        """
        with self._lock:
            if self._reaping:
                return
            self._reaping = True
        threading.Thread(target=self._reap, name="evenflow-futures-reaper", daemon=True).start()

    def _reap(self) -> None:
        wait_futures(self._pending(), timeout=BROKEN_GRACE_S)
        with self._lock:
            doomed = {f: e for f, e in self._inflight.items() if e is not None and not f.done()}
            for future in doomed:
                del self._inflight[future]
        for future, envelope in doomed.items():
            future.cancel()
            self._emit(lost(envelope, by=self.by, cause="its pool broke as it was sent"))

    # --- the concurrent.futures face and lifecycle ---------------------------------------

    def _submit(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Future[Any]:
        future = self.pool.submit(fn, *args, **kwargs)
        self._track(future, None)
        future.add_done_callback(self._forget)
        return future

    def _shutdown(self, *, wait: bool, cancel_futures: bool) -> None:
        if cancel_futures:
            self._cancel_pending()
        if self.owns:
            self.pool.shutdown(wait=wait)  # loky's shutdown has no cancel_futures; ours are cancelled
        elif wait:
            wait_futures(self._pending())

    def _close(self) -> None:
        """Cancel what has not started, give running attempts ``close_timeout_s``, never hang."""
        self._cancel_pending()
        processes = list((getattr(self.pool, "_processes", None) or {}).values()) if self.owns else []
        if self.owns:
            self.pool.shutdown(wait=False)
        _, running = wait_futures(self._pending(), timeout=self._close_timeout_s)
        self._reporting = False  # what is still running now was abandoned, not lost
        if running:
            for process in processes:
                kill(process, self._close_timeout_s)

    def _track(self, future: Future[Any], envelope: Envelope | None) -> None:
        with self._lock:
            self._inflight[future] = envelope

    def _forget(self, future: Future[Any]) -> None:
        with self._lock:
            self._inflight.pop(future, None)

    def _pending(self) -> list[Future[Any]]:
        with self._lock:
            return list(self._inflight)

    def _cancel_pending(self) -> None:
        for future in self._pending():
            future.cancel()

    def __repr__(self) -> str:
        return f"FuturesExecutor({self.pool!r}, owns={self.owns})"


def kill(process: Any, timeout_s: float) -> None:
    """SIGKILL a pool's worker by pid: loky's processes have no ``kill()``; Windows has no SIGKILL."""
    if process.is_alive() and process.pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, getattr(signal, "SIGKILL", signal.SIGTERM))
        process.join(timeout_s)
