"""The ``runs`` read model, kept by a thread of its own so the engine never waits for it.

On a server each write to ``runs`` is a majority round trip; on the engine's
thread that would be paid on every turn, before the next dispatch. Instead the
engine hands each durable batch over (a queue put) and goes on. The thread
folds what has queued up, in order, batches together, so under load one bulk
write serves many turns. The lag (from hand-over to written) is measured;
readers in this process that need what they just wrote call ``settle``. A
failure is logged and never stops the engine: the projector forgets the runs
it touched and mends them from the log on their next batch (or at the next
start, through ``catch_up``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .core.events import Event

if TYPE_CHECKING:
    from projections.read_models import RunsProjector

log = logging.getLogger("evenflow.orchestrator")

MAX_EVENTS_PER_WRITE = 5_000
"""Events folded into one bulk write at most: bounds a write's size, not the queue."""


@dataclass
class Lag:
    """How far the read model has trailed the log (seconds from hand-over to written)."""

    last_s: float = 0.0
    max_s: float = 0.0
    batches: int = 0
    writes: int = 0


_REBUILD: list[Event] = []
"""Queued by ``wake``: fold the whole log in first (compared by identity)."""


class Projecting:
    """With ``rebuild_from`` (a private model, in memory: no reader but this process's) it sleeps, so
    no append pays for it, until ``wake``: then it folds the whole log in on its thread, and each
    batch from then on."""

    def __init__(
        self, projector: RunsProjector, *, rebuild_from: Callable[[], Iterable[Event]] | None = None
    ) -> None:
        self.projector = projector
        self._rebuild_from = rebuild_from
        self._dormant = rebuild_from is not None
        self.lag = Lag()
        self._queue: deque[tuple[float, list[Event]]] = deque()
        self._changed = threading.Condition()
        self._handed = 0
        self._applied = 0
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="evenflow-read-model", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put(self, batch: list[Event]) -> None:
        """On the engine's thread: a durable batch, for the read model to fold in soon."""
        with self._changed:
            if self._dormant:
                return
            self._queue.append((time.monotonic(), batch))
            self._handed += 1
            self._changed.notify_all()

    def wake(self) -> None:
        """Start following the log, if asleep: the whole log first, then every batch handed over."""
        with self._changed:
            if not self._dormant:
                return
            self._dormant = False  # batches from now on queue behind the rebuild, which skips none
            self._queue.append((time.monotonic(), _REBUILD))
            self._handed += 1
            self._changed.notify_all()

    def settle(self, timeout: float) -> bool:
        """Until every batch handed over so far is written (True), or ``timeout`` passes (False)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            goal = self._handed
            while self._applied < goal and (left := deadline - time.monotonic()) > 0:
                self._changed.wait(left)
            return self._applied >= goal

    def stop(self, timeout: float) -> None:
        """Write what is queued (within ``timeout``), then end the thread."""
        if not self._thread.is_alive():
            return
        self.settle(timeout)
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._queue and not self._stopping:
                    self._changed.wait()
                if not self._queue:
                    return
                taken = self._take()
            self._apply(taken)

    def _rebuild(self) -> None:
        """The whole log folded in, a bounded batch at a time; batches queued meanwhile repeat some of
        it, and the projector skips what it holds already."""
        assert self._rebuild_from is not None
        chunk: list[Event] = []
        for event in self._rebuild_from():
            chunk.append(event)
            if len(chunk) >= MAX_EVENTS_PER_WRITE:
                self.projector.apply(chunk)
                chunk = []
        if chunk:
            self.projector.apply(chunk)

    def _take(self) -> list[tuple[float, list[Event]]]:
        taken = [self._queue.popleft()]
        if taken[0][1] is _REBUILD:
            return taken
        size = len(taken[0][1])
        while (
            self._queue
            and self._queue[0][1] is not _REBUILD
            and size + len(self._queue[0][1]) <= MAX_EVENTS_PER_WRITE
        ):
            taken.append(self._queue.popleft())
            size += len(taken[-1][1])
        return taken

    def _apply(self, taken: list[tuple[float, list[Event]]]) -> None:
        events = [event for _, batch in taken for event in batch]
        try:
            if taken[0][1] is _REBUILD:
                self._rebuild()
            else:
                self.projector.apply(events)
        except Exception:
            if taken[0][1] is _REBUILD:
                with self._changed:
                    self._dormant = True  # the next ``wake`` tries the whole log again
            log.exception("the runs read model failed to fold %d events; it mends them later", len(events))
        lag = time.monotonic() - taken[0][0]
        with self._changed:
            self._applied += len(taken)
            self.lag.last_s, self.lag.max_s = lag, max(self.lag.max_s, lag)
            self.lag.batches += len(taken)
            self.lag.writes += 1
            self._changed.notify_all()
