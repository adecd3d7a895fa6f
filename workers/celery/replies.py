"""How outcomes come back from Celery workers: one Redis list per executor, read by one thread.

A worker pushes ``{"task": id, ...}`` onto the executor's list; the collector
blocks in ``BLPOP`` and then drains up to ``BATCH`` more with one ``LPOP``, so
there is no thread, subscription or poll per task, and a reply pushed while the
executor reconnects waits in the list. A second thread, ``Deadlines``, ends
attempts whose deadline passes with no reply, and carries outcomes decided
here (a failed send, an attempt expired before it was sent) so that every
outcome is reported from a thread of the executor, never inside ``dispatch``.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from orchestrator.core.envelope import Envelope, Outcome
from orchestrator.core.errors import ProtocolError
from orchestrator.transport.wire import loads

log = logging.getLogger(__name__)

OutcomeFor = Callable[[Envelope], Outcome]
"""Builds the outcome of a task's envelope that ends here rather than on a worker."""

BLOCK_S = 1.0
"""How long one BLPOP waits; bounds how late the collector notices a stop when Redis is unreachable."""
BATCH = 256
RETRY_S = 0.2
PRUNE_MIN = 1_024
WAKE = b""
"""Pushed onto the reply list by ``stop`` so a blocked BLPOP returns at once; ignored when read."""


@dataclass(frozen=True, slots=True)
class Reply:
    """One decoded reply: ``outcome`` (a wire document), or ``lost`` deliveries, or a ``problem``."""

    task: str
    outcome: Any = None
    lost: int = 0
    problem: str = ""


def decode_reply(data: bytes) -> Reply:
    """A reply from a worker, checked; ProtocolError if it is not one of the three kinds."""
    doc = loads(data)
    if not isinstance(doc, dict) or not isinstance(doc.get("task"), str):
        raise ProtocolError("a reply must be a JSON object with a task id")
    if "outcome" in doc:
        return Reply(doc["task"], outcome=doc["outcome"])
    lost = doc.get("lost")
    if type(lost) is int and lost > 0:
        return Reply(doc["task"], lost=lost)
    problem = doc.get("problem")
    if isinstance(problem, str):
        return Reply(doc["task"], problem=problem[:1_000])
    raise ProtocolError("a reply must carry an outcome, a lost count or a problem")


class Collector:
    """Reads one reply list until stopped, handing each raw reply to ``handle``."""

    def __init__(self, client: redis.Redis, key: str, handle: Callable[[bytes], None]) -> None:
        self._client = client
        self._key = key
        self._handle = handle
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="evenflow-celery-replies", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float) -> None:
        """Stop reading; a blocked BLPOP is woken by a push, or returns within ``BLOCK_S``."""
        self._stopping.set()
        if threading.current_thread() is self._thread:
            return
        with contextlib.suppress(redis.RedisError):  # unreachable: the BLPOP times out on its own
            self._client.rpush(self._key, WAKE)
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                batch = self._read()
            except redis.RedisError as exc:
                log.warning("reading replies from Redis failed (%s); retrying", exc)
                self._stopping.wait(RETRY_S)
                continue
            for data in batch:
                if self._stopping.is_set():
                    return
                if data != WAKE:
                    self._handle_safely(data)

    def _handle_safely(self, data: bytes) -> None:
        try:
            self._handle(data)
        except Exception:  # one bad reply must not stop the outcomes of every other task
            log.exception("handling a reply from a Celery worker failed")

    def _read(self) -> list[bytes]:
        first = self._client.blpop([self._key], timeout=BLOCK_S)
        if first is None:
            return []
        try:
            more = self._client.lpop(self._key, BATCH) or []
        except redis.RedisError:  # keep the reply already popped; the rest waits in the list
            more = []
        return [first[1], *more]


class Deadlines:
    """A timer thread: calls ``fire(task, outcome_for)`` when each registered moment comes.

    Entries of tasks that ended early stay in the heap until their moment; once
    the heap doubles, those that ``live`` no longer holds are pruned, so memory
    follows the tasks in flight, not every deadline ever set.
    """

    def __init__(self, fire: Callable[[str, OutcomeFor], None], live: Callable[[str], bool]) -> None:
        self._fire = fire
        self._live = live
        self._prune_at = PRUNE_MIN
        self._heap: list[tuple[float, int, str, OutcomeFor]] = []
        self._order = itertools.count()
        self._changed = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="evenflow-celery-deadlines", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def at(self, when: float, task: str, outcome_for: OutcomeFor) -> None:
        """At ``when`` (``time.monotonic()``), fire ``task`` with ``outcome_for``, if it is still pending."""
        with self._changed:
            heapq.heappush(self._heap, (when, next(self._order), task, outcome_for))
            if len(self._heap) > self._prune_at:
                self._heap = [item for item in self._heap if self._live(item[2])]
                heapq.heapify(self._heap)
                self._prune_at = max(PRUNE_MIN, 2 * len(self._heap))
            if self._heap and self._heap[0][2] == task:
                self._changed.notify()

    def stop(self, timeout_s: float) -> None:
        with self._changed:
            self._stopping = True
            self._heap.clear()
            self._changed.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            with self._changed:
                due = self._due_locked()
                if self._stopping:
                    return
                if not due:
                    wait = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._changed.wait(wait)
                    continue
            for _, _, task, outcome_for in due:
                try:
                    self._fire(task, outcome_for)
                except Exception:  # keep the timer alive for every other attempt
                    log.exception("ending task %s at its deadline failed", task)

    def _due_locked(self) -> list[tuple[float, int, str, OutcomeFor]]:
        now, due = time.monotonic(), []
        while self._heap and self._heap[0][0] <= now:
            due.append(heapq.heappop(self._heap))
        return due
