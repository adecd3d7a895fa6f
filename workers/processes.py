"""Commands in evenflow's own pool of worker processes, each envelope written straight to its child.

The registry travels once per child, as its start argument (again only when it
gains a command); after that only envelopes (plain data) go out. ``dispatch``
writes from the calling thread to the child with the least work outstanding:
one envelope alone, many in chunks, so pickling and system calls cost per
chunk. No child holds more than ``process_work.WINDOW`` envelopes not yet
ended, so a slow attempt holds back few others; the rest wait and go out as
children catch up. Each child marks in shared memory the attempt it starts and
sends its outcome as it ends; the pool's reader thread (``process_pool``)
reports each at once. Every envelope holds a ticket until its one outcome is
reported, whichever path brings it.

When a child dies (SIGKILL, a segfault, ``os._exit``) only its own work is
decided, once everything it wrote is read: an attempt it had started is
``WorkerLost`` with reason ``"lost"``; envelopes it had not started go to
another child (at most ``MAX_RESENDS`` times), and a replacement child starts.
Its siblings carry on undisturbed.

This replaced a ``ProcessPoolExecutor``: a task there crossed the pool's
management thread and its queue feeder thread before reaching a pipe, about
200 µs more per round trip (on two cores) than one write from the dispatching thread.
"""

from __future__ import annotations

import logging
import multiprocessing
import pickle
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from orchestrator.core.envelope import Envelope, Outcome
from orchestrator.core.errors import ConfigurationError, PayloadError, WorkerLost
from orchestrator.core.ports import Report
from orchestrator.core.registry import Registry

from .base import BaseExecutor, check_workers, default_workers, main_guard_problem
from .execution import failed
from .process_channel import frame
from .process_child import HELLO, NONE, CallEnd, Ticketed, decode, pack
from .process_pool import Child, Children
from .process_work import Book, Ticket

log = logging.getLogger(__name__)


End = Outcome | CallEnd | BaseException
Settled = list[tuple[Ticket, End]]


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


def lost(envelope: Envelope, *, by: str, cause: str) -> Outcome:
    exc = WorkerLost(
        f"attempt {envelope.attempt_id} of {envelope.command!r} was lost: {cause}. "
        "A worker process dies when a command kills it or it runs out of memory; "
        "a retry policy may run the attempt again"
    )
    return failed(envelope, exc, by=by, reason="lost")


class ProcessExecutor(BaseExecutor):
    """Runs envelopes in ``max_workers`` child processes (default: one per CPU).

    ``close()`` drops what has not been sent, gives running attempts
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
        self._changed = threading.Condition(self._lock)
        self._pool: Children | None = None
        self._children: list[Child] = []
        self._book = Book()
        self._payload, self._names = snapshot(None)
        self._closing = False

    def start(self, registry: Registry, report: Report) -> None:
        """Start (and so warm) the children with ``registry``, so startup errors surface here.

        Children that spawn or forkserve import ``__main__`` again: a script without a main guard
        would start its flows in each of them, so that is refused here, in one line.
        """
        if self._context.get_start_method() != "fork" and (problem := main_guard_problem()) is not None:
            raise ConfigurationError(problem)
        super().start(registry, report)
        with self._lock:
            self._refresh_locked(registry)
            while len(self._children) < self.max_workers:
                self._spawn_locked()

    # --- sending ---------------------------------------------------------------------------

    def _dispatch(self, registry: Registry, envelopes: list[Envelope]) -> None:
        refused = _unsendable(registry, {envelope.command for envelope in envelopes})
        for envelope in envelopes:
            if envelope.command in refused:
                self._deliver(failed(envelope, PayloadError(refused[envelope.command]), by=self.by))
        sendable = [envelope for envelope in envelopes if envelope.command not in refused]
        if not sendable:
            return
        with self._lock:
            if any(e.command not in self._names and e.command in registry for e in sendable):
                self._refresh_locked(registry)
            for envelope in sendable:
                self._book.add(envelope)
            settled = self._pump_locked()
        self._settle(settled)

    def _refresh_locked(self, registry: Registry) -> None:
        """Children get the registry again when it gained a command since they started."""
        payload, names = snapshot(registry)
        if names == self._names and payload == self._payload:
            return
        self._payload, self._names = payload, names
        message = frame(pickle.dumps(("registry", payload)))
        for child in self._children:
            self._write(child, message)

    def _pump_locked(self) -> Settled:
        """Send waiting work to the children with room, least loaded first; what cannot go is settled."""
        settled: Settled = []
        while self._book.backlog and not self._closing and self._staffed_locked(settled):
            chunk = self._book.next_chunk(self._children)
            if chunk is None:
                break
            self._send_locked(*chunk, settled)
        return settled

    def _staffed_locked(self, settled: Settled) -> bool:
        """Start children up to ``max_workers``; if none can be started, what waits is lost."""
        while len(self._children) < self.max_workers:
            try:
                self._spawn_locked()
            except Exception as exc:
                if self._children:
                    break
                cause = f"no worker process could be started ({exc})"
                settled.extend(
                    (ticket, self._lost_end(ticket, cause)) for ticket in self._book.take_waiting()
                )
                return False
        return True

    def _send_locked(self, child: Child, items: list[Ticketed], settled: Settled) -> None:
        if not items:
            return
        try:
            message = frame(pack(items))
        except Exception as exc:  # an envelope whose arguments will not pickle: it alone fails
            settled.extend(self._unpicklable_locked(items, exc))
            return
        self._book.sent(child, items)
        self._write(child, message)

    def _unpicklable_locked(self, items: list[Ticketed], error: Exception) -> Settled:
        """Work that will not pickle fails alone; the rest goes back to wait its turn."""
        refused: list[tuple[int, Exception]] = []
        keep: list[int] = []
        for number, work in items:
            try:
                pickle.dumps(work)
                keep.append(number)
            except Exception as exc:
                refused.append((number, exc))
        if not refused:  # the list failed as a whole though each item pickles: fail them all
            refused, keep = [(number, error) for number in keep], []
        self._book.wait_again(keep)
        return [self._refused(ticket, exc) for number, exc in refused if (ticket := self._book.ended(number))]

    def _refused(self, ticket: Ticket, exc: Exception) -> tuple[Ticket, End]:
        if isinstance(ticket.work, bytes):
            return ticket, exc
        refused = PayloadError(f"attempt {ticket.work.attempt_id} cannot be sent to a worker process: {exc}")
        return ticket, failed(ticket.work, refused, by=self.by)

    def _write(self, child: Child, message: bytes) -> None:
        assert self._pool is not None
        self._pool.write(child, message)

    def _spawn_locked(self) -> Child:
        if self._pool is None:
            self._pool = Children(self._context, self._on_messages, self._on_death)
        child = self._pool.spawn(self._payload)
        self._children.append(child)
        return child

    # --- the concurrent.futures face --------------------------------------------------------

    def _submit(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Future[Any]:
        """A call travels as one pickled blob, so one that fails to unpickle in the child fails alone."""
        future: Future[Any] = Future()
        try:
            blob = pickle.dumps((fn, args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # as a standard process pool does: the future carries it
            future.set_exception(exc)
            return future
        with self._lock:
            self._book.add(blob, future)
            settled = self._pump_locked()
        self._settle(settled)
        return future

    # --- what comes back (on the pool's reader thread) ---------------------------------------

    def _on_messages(self, child: Child, messages: list[bytes]) -> None:
        """Attempts that ended, each reported once; then refill the children."""
        settled: Settled = []
        with self._lock:
            for data in messages:
                number, end = decode(data)
                if end is None:
                    child.ready = number == HELLO
                elif (ticket := self._book.ended(number)) is not None:
                    settled.append((ticket, end))
            settled.extend(self._pump_locked())
            if not self._book.tickets:
                self._changed.notify_all()
        self._settle(settled)

    def _on_death(self, child: Child) -> None:
        """What a dead child held: lost if it had started, else sent again. A replacement starts now
        if the child had run something; one that died before that is replaced only when work comes,
        so children that cannot start do not start over and over."""
        with self._lock:
            self._children.remove(child)
            left = self._book.left_by(child, child.started.value, closing=self._closing)
            settled: Settled = [(ticket, self._lost_end(ticket, cause)) for ticket, cause in left]
            if child.started.value != NONE and not self._closing:
                self._respawn_locked()  # it ran work, so its like will start: have one ready
            settled.extend(self._pump_locked())
            self._changed.notify_all()
        self._settle(settled)

    def _lost_end(self, ticket: Ticket, cause: str) -> End:
        if isinstance(ticket.work, bytes):
            return BrokenProcessPool(f"a call submitted to {self!r} was lost: {cause}")
        return lost(ticket.work, by=self.by, cause=cause)

    def _respawn_locked(self) -> None:
        try:
            self._spawn_locked()
        except Exception:  # the next dispatch tries again, and says why if it cannot
            log.warning("could not start a worker process to replace one that died", exc_info=True)

    def _settle(self, settled: Settled) -> None:
        """Outside the lock: report each outcome, resolve each call's future."""
        for ticket, end in settled:
            if ticket.future is None:
                assert isinstance(end, Outcome)
                self._deliver(end)
            else:
                _resolve(ticket.future, end)

    # --- stopping ------------------------------------------------------------------------------

    def _close(self) -> None:
        """Drop what waits, let running attempts end for ``close_timeout_s``, then kill what is left."""
        with self._lock:
            self._closing = True
            dropped = self._book.take_waiting()
        self._fail_calls(dropped, "the executor closed before it was sent")
        self._stop_children()

    def _shutdown(self, *, wait: bool, cancel_futures: bool) -> None:
        """The standard face: with ``wait``, everything submitted ends first (as a standard pool's)."""
        if cancel_futures:
            with self._lock:
                for number in self._book.backlog:
                    if (ticket := self._book.tickets.get(number)) is not None and ticket.future is not None:
                        ticket.future.cancel()
        if wait:
            self._finish()
        else:
            threading.Thread(target=self._finish, name="evenflow-processes-shutdown", daemon=True).start()

    def _finish(self) -> None:
        with self._changed:
            self._changed.wait_for(lambda: not self._book.tickets)
            self._closing = True
        self._stop_children()

    def _stop_children(self) -> None:
        """SIGTERM: an idle child leaves at once, a busy one after sending its outcome; after
        ``close_timeout_s`` the rest are killed, and what they ran is abandoned, not lost."""
        with self._lock:
            children, pool = list(self._children), self._pool
        for child in children:
            child.process.terminate()
        deadline = time.monotonic() + self._close_timeout_s
        for child in children:
            child.process.join(max(0.0, deadline - time.monotonic()))
        if pool is not None and pool.reader is not threading.current_thread():
            with self._changed:  # the reader has read what they sent before leaving
                self._changed.wait_for(lambda: not self._children, max(0.0, deadline - time.monotonic()))
        self._reporting = False
        for child in children:
            if child.process.is_alive():
                child.process.kill()
                child.process.join(self._close_timeout_s)
        if pool is not None:
            pool.stop(children)
        with self._lock:
            left = self._book.take_all()
        self._fail_calls(left, "the executor closed before it ended")

    def _fail_calls(self, tickets: list[Ticket], cause: str) -> None:
        """Calls of the ``concurrent.futures`` face get an answer; envelopes are abandoned, not lost."""
        self._settle(
            [(ticket, self._lost_end(ticket, cause)) for ticket in tickets if ticket.future is not None]
        )

    def __repr__(self) -> str:
        method = self._context.get_start_method()
        return f"ProcessExecutor(max_workers={self.max_workers}, mp_context={method!r})"


def _unsendable(registry: Registry, commands: set[str]) -> dict[str, str]:
    """The commands that cannot reach a child (a lambda, a closure), and why: they fail at once."""
    reasons = {name: registry.unsendable_reason(name) for name in commands if name in registry}
    return {name: reason for name, reason in reasons.items() if reason is not None}


def _resolve(future: Future[Any], end: End) -> None:
    if future.done():
        return
    if isinstance(end, BaseException):
        future.set_exception(end)
        return
    assert isinstance(end, tuple)
    ok, blob = end
    try:
        value = pickle.loads(blob)
    except Exception as exc:  # what the call returned or raised does not unpickle here
        future.set_exception(exc)
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)
