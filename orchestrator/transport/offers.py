"""Which commands the connected workers offer, so a service can refuse a flow none can run.

The hub's thread replaces the snapshot whenever a worker joins or leaves; any
thread reads it, or waits (on a condition, never a poll) for a worker that
offers what a submission needs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence

from .scheduler import WorkerInfo

Wanted = tuple[str, str | None]
"""A command and the route (group of workers) its node names, or None."""


class Offers:
    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._workers: tuple[WorkerInfo, ...] = ()

    def update(self, workers: Iterable[WorkerInfo]) -> None:
        """On the hub's thread: the workers connected now."""
        with self._changed:
            self._workers = tuple(workers)
            self._changed.notify_all()

    def commands(self) -> list[str]:
        """Every command some connected worker offers, sorted."""
        return sorted({command for worker in self._workers for command in worker.commands})

    def missing(self, wanted: Iterable[Wanted]) -> list[str]:
        """What no connected worker takes: each as ``'name'``, or ``'name' on route 'r'``."""
        workers = self._workers
        return sorted(
            {_label(command, route) for command, route in wanted if not _offered(command, route, workers)}
        )

    def wait(self, wanted: Sequence[Wanted], timeout_s: float) -> list[str]:
        """Until every wanted command is offered ([]), or what is still missing at the deadline."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while (missing := self.missing(wanted)) and (left := deadline - time.monotonic()) > 0:
                self._changed.wait(left)
        return missing


def _offered(command: str, route: str | None, workers: Sequence[WorkerInfo]) -> bool:
    return any(
        command in worker.commands and (route in (None, "default") or route in worker.queues)
        for worker in workers
    )


def _label(command: str, route: str | None) -> str:
    return repr(command) if route in (None, "default") else f"{command!r} on route {route!r}"
