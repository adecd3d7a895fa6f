"""A second thread that keeps a worker's socket served while the socket's own thread runs a command.

The worker runs a call on the thread that owns its socket, so a short command's
outcome goes out without two thread hand-offs (to a pool thread and back through
a waker): about 0.4 ms of a W5 round trip on this kind of machine. Meanwhile
nobody reads the socket, which is fine for a moment and wrong for long: the
service must keep hearing heartbeats, and outcomes from the pool's threads must
not wait behind the command. So before the call, the owner ``cover``s it: if the
call outlasts its patience, or a pool outcome is ready (``nudge``), this thread
takes the socket (ZeroMQ allows moving a socket between threads across a full
memory barrier: the condition's lock is one) and serves turns until the owner,
done, asks for it back in ``uncover``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

IDLE, COVERING, LEADING, RETURNING = "idle", "covering", "leading", "returning"


class Standby:
    def __init__(
        self, turn: Callable[[], None], wake: Callable[[], None], pending: Callable[[], bool]
    ) -> None:
        """``turn`` serves the socket once (a bounded poll); ``wake`` ends a poll in progress;
        ``pending`` says whether something already waits to be sent (its ``nudge`` may have come
        before the cover, and been ignored then)."""
        self._turn = turn
        self._wake = wake
        self._pending = pending
        self._cv = threading.Condition()
        self._state = IDLE
        self._deadline = 0.0
        self._nudged = False
        self._closed = False
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._watch, name="evenflow-worker-standby", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def cover(self, patience_s: float) -> None:
        """The owner is about to run a command and leave the socket unread: watch it."""
        with self._cv:
            self._state, self._deadline = COVERING, time.monotonic() + patience_s
            self._nudged = self._pending()  # under the lock, so a nudge either sees COVERING or this
            self._cv.notify_all()

    def uncover(self) -> None:
        """The owner's command ended: take the socket back, once this thread has finished its turn."""
        with self._cv:
            if self._state == COVERING:
                self._state = IDLE
                return
            if self._state == LEADING:
                self._state = RETURNING
        self._wake()
        with self._cv:
            while self._state in (LEADING, RETURNING):
                self._cv.wait()
            failure, self._failure = self._failure, None
        if failure is not None:
            raise failure

    def nudge(self) -> None:
        """Something waits to be sent (an outcome from the pool, a stop): take over now if covering."""
        with self._cv:
            if self._state == COVERING:
                self._nudged = True
                self._cv.notify_all()

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _watch(self) -> None:
        while self._wait_to_lead():
            try:
                while self._state == LEADING:
                    self._turn()
            except BaseException as exc:  # the owner re-raises it: the worker must not hang on a dead thread
                self._failure = exc
            with self._cv:
                self._state = IDLE
                self._cv.notify_all()

    def _wait_to_lead(self) -> bool:
        """Block until a covered command outlasts its patience or is nudged; False once closed."""
        with self._cv:
            while not self._closed:
                if self._state == COVERING:
                    left = self._deadline - time.monotonic()
                    if self._nudged or left <= 0:
                        self._state = LEADING
                        return True
                    self._cv.wait(left)
                else:
                    self._cv.wait()
            return False
