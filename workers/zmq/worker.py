"""A worker host: connects to the service, says which commands it has, runs what it is sent.

It runs only names in its own registry (an unknown name fails its attempt with
``UnknownCommand`` and nothing executes) through a local evenflow executor
(threads, processes or asyncio). With threads, one call at a time runs on the
thread that owns the socket, so its outcome goes out with no hand-off between
threads; a ``Standby`` thread serves the socket if that call outlasts a moment,
or the pool has an outcome to send, so a long command never makes its worker
look dead and never holds back another's outcome.

Every outcome is kept until the service acknowledges that it is in the log,
and sent again after a reconnect; an attempt sent twice (the service restarted
and re-dispatched it) is not run twice here: a running one is skipped, a
finished one has its kept outcome resent.

Calls beyond the running slots (prefetched) wait here, not in the local pool,
and each is reported ``started`` before it begins (with ``confirm_starts``, once
the service has answered ``go``): if this process dies, the service knows which
calls ran here and gives the others to another worker. ZeroMQ writes the report
from its own thread, later, so without the ``go`` a command that kills this
process at once can leave it unsent, and the call is handed on as never started.
A reconnect or a reset drops the calls waiting here (the service that forgot us
has handed them on), and so do reported calls its welcome finds unanswered. If
the service goes silent for ``heartbeat_s * liveness`` the worker connects
afresh. On ``stop()`` (SIGTERM in ``evenflow worker``) it says ``bye``, drops the
calls not begun and any still on their way (to a service that takes start reports,
which hands them on), lets running commands finish, and waits for their acks.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import socket as stdsocket
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import replace

import zmq

from orchestrator.core.envelope import Envelope, Outcome
from orchestrator.core.errors import ProtocolError
from orchestrator.core.logfields import fields
from orchestrator.core.registry import Registry
from orchestrator.transport import protocol
from orchestrator.transport.endpoints import check_endpoint
from orchestrator.transport.protocol import Ack, Calls, Go, Reset, Welcome
from orchestrator.transport.scheduler import credit
from orchestrator.transport.security import ClientKeys
from orchestrator.transport.waker import Waker

from ..base import worker_id
from ..execution import execute
from .hosting import announced_options, check_settings, dealer, local_pool, readable
from .standby import Standby

log = logging.getLogger("evenflow.zmq.worker")

SHARED_PATIENCE_S = 0.002
"""How long a call on the socket's thread may leave it unread while slots are free for more calls."""


class Worker:
    _reports_starts = False
    """The service asked for ``started`` reports (its welcome said so)."""
    _waits_for_go = False
    """The service answers each ``started`` report with a ``go`` (its welcome said so)."""
    _starts_in_done = False
    """The service reads ``started`` reports riding on a ``done`` (its welcome said so)."""
    _hellos = 0
    _inline: Envelope | None = None
    """A call set aside to run on the socket's thread when its turn ends (threads pool only)."""
    _covering = False
    """A call runs on the socket's thread; the standby may be serving the socket meanwhile."""

    def __init__(
        self,
        connect: str,
        registry: Registry,
        *,
        concurrency: int = 1,
        prefetch: int | None = None,
        pool: str = "threads",
        queues: tuple[str, ...] = (),
        name: str | None = None,
        heartbeat_s: float = 1.0,
        liveness: int = 3,
        keys: ClientKeys | None = None,
        drain_timeout_s: float = 30.0,
        confirm_starts: bool = False,
    ) -> None:
        check_settings(pool, concurrency, registry)
        self.connect = check_endpoint(connect, binding=False)
        self.registry = registry
        self.concurrency = concurrency
        self.slots = credit(concurrency, prefetch)
        self.pool = pool
        self.queues = tuple(queues)
        self.name = name or f"{stdsocket.gethostname()}:{os.getpid()}"
        self.heartbeat_s = heartbeat_s
        self.liveness = liveness
        self.drain_timeout_s = drain_timeout_s
        self.confirm_starts = confirm_starts
        """Begin a call only once the service has recorded its start (its ``go``): a SIGKILL then loses
        exactly the calls running, for a round trip per call."""
        self.by = f"{name}/zmq" if name else worker_id("zmq")
        """Who ran an attempt, as the log (and ``evenflow audit``) records it: the worker's name if given."""
        self.stats: dict[str, int] = {"calls": 0, "reconnects": 0, "resent": 0, "skipped_duplicates": 0}
        self._keys = keys
        self._session = uuid.uuid4().hex
        self._stop = threading.Event()
        self._results: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        self._waker = Waker()
        self._running: set[str] = set()
        self._waiting: deque[Envelope] = deque()
        """Calls sent ahead (prefetched), to start when a slot is free, oldest first."""
        self._reported: dict[str, tuple[Envelope, int]] = {}
        """Calls reported ``started``, waiting for their ``go``; with the hello they were reported under."""
        self._unacked: OrderedDict[str, bytes] = OrderedDict()
        """Outcomes sent and not yet acknowledged, encoded, by attempt."""
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._socket: zmq.Socket[bytes] | None = None
        self._heard = self._answered = time.monotonic()
        """When the service last sent anything (``_answered``; a reconnect resets only ``_heard``)."""
        self._executor = local_pool(pool, concurrency)
        self._draining = False
        self.connected = threading.Event()
        self._poller = zmq.Poller()
        self._next_beat = time.monotonic()
        self._standby = Standby(self._turn, self._waker.wake, self._waker.pending)  # an outcome, or a stop

    def stop(self) -> None:
        """Ask ``run`` to drain and return; safe from a signal handler or another thread."""
        self._stop.set()
        self._waker.wake()
        self._standby.nudge()  # a command on the socket's thread must not hold back the bye

    def run(self) -> None:
        """Serve until ``stop()``; then finish running commands and wait (bounded) for their acks."""
        self._executor.start(self.registry, self._report)
        self._standby.start()
        try:
            self._connect()
            self._serve(self._stop.is_set)
            self._drain()
        finally:
            self._standby.close()
            self._executor.close()
            if self._socket is not None:
                self._socket.close(0)
            self._context.term()
            self._waker.close()

    # --- the loop -----------------------------------------------------------------------------

    def _serve(self, finished: Callable[[], bool], *, deadline: float | None = None) -> None:
        while not finished() and (deadline is None or time.monotonic() < deadline):
            self._turn()
            if self._inline is not None:
                self._run_inline(self._inline)

    def _turn(self) -> None:
        """Serve the socket once: poll until the next heartbeat is due (or not at all if a call waits)."""
        wait_ms = 0 if self._inline is not None else int((self._next_beat - time.monotonic()) * 1000)
        ready = dict(self._poller.poll(max(0, wait_ms)))
        if self._stop.is_set():
            self._say_bye()
        if self._socket in ready:
            self._receive()
        if self._waker.fd in ready:
            self._waker.clear()
        self._send_results()
        now = time.monotonic()
        if now >= self._next_beat:
            self._send(protocol.signal("hb"))
            self._next_beat = now + self.heartbeat_s
        if now - self._heard > self.heartbeat_s * self.liveness:
            quiet = self.connected.is_set()  # say it once per outage, not at every retry
            (log.warning if quiet else log.debug)("the service at %s went silent; reconnecting", self.connect)
            self.stats["reconnects"] += 1
            self._connect()

    def _run_inline(self, envelope: Envelope) -> None:
        """Run the call set aside on this thread, the standby watching the socket; then send its outcome."""
        self._inline = None
        free = len(self._running) + len(self._reported) < self._limit()
        self._covering = True
        self._standby.cover(SHARED_PATIENCE_S if free else self.heartbeat_s / 2)
        try:
            outcome = execute(self.registry, envelope, by=self.by)
        finally:
            self._standby.uncover()
            self._covering = False
        self._results.put(outcome)
        self._send_results()

    def _drain(self) -> None:
        """Stop taking calls, let running ones finish, wait for their acks; all within the drain timeout."""
        self._say_bye()
        self._serve(self._drained, deadline=time.monotonic() + self.drain_timeout_s)
        if self._running or self._unacked:
            log.warning(
                "stopped with %d commands running and %d outcomes unacknowledged; the service "
                "re-dispatches them",
                len(self._running),
                len(self._unacked),
                extra=fields(worker=self.name),
            )

    def _say_bye(self) -> None:
        if self._draining:
            return
        self._draining = True
        self._send(protocol.signal("bye"))
        if self._reports_starts:  # the service hands those not reported begun to other workers
            self._waiting.clear()

    def _drained(self) -> bool:
        """Nothing runs, and every outcome is acknowledged or the service is gone (no ack would come)."""
        if self._running or self._waiting:
            return False
        silent = time.monotonic() - self._answered > self.heartbeat_s * self.liveness
        return silent or not (self._unacked or self._reported)

    def _connect(self) -> None:
        """A fresh DEALER: say hello, then resend every outcome not yet acknowledged."""
        if self._socket is not None:
            self._socket.close(0)
        self._socket = dealer(self._context, self.connect, self._keys)
        self._poller = readable(self._socket, self._waker.fd)
        self._heard = time.monotonic()
        self.connected.clear()
        self._hello()

    def _hello(self) -> None:
        """Say who we are; the calls waiting here belong to a service that forgot us, and go."""
        self._waiting.clear()
        self._reports_starts = self._waits_for_go = self._starts_in_done = False
        self.connected.clear()  # nothing starts until the welcome says how to report it
        self._hellos += 1
        commands, queues = self.registry.names(), list(self.queues)
        options = announced_options(self.registry)
        hello = protocol.hello(
            self.name, commands, queues, self.slots, self._session, options, go=self.confirm_starts
        )
        self._send(hello)
        if self._draining:  # a service that met us afresh must know we take nothing new
            self._send(protocol.signal("bye"))
        self._resend()

    def _resend(self) -> None:
        parts = list(self._unacked.values())
        for frame in protocol.done_frames(parts):
            self._send(frame)
        self.stats["resent"] += len(parts)

    def _receive(self) -> None:
        assert self._socket is not None
        for _ in range(1_000):
            try:
                frame = self._socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._heard = self._answered = time.monotonic()
            try:
                message = protocol.from_service(frame)
            except ProtocolError as exc:
                log.warning(
                    "dropped a malformed message from the service: %s", exc, extra=fields(worker=self.name)
                )
                continue
            self._handle(message)

    def _handle(self, message: protocol.FromService) -> None:
        if isinstance(message, Calls):
            for attempt_id in message.acks:
                self._unacked.pop(attempt_id, None)
            self._run(message.envelopes)
        elif isinstance(message, Ack):
            for attempt_id in message.ids:
                self._unacked.pop(attempt_id, None)
        elif isinstance(message, Go):
            self._go(message)
        elif isinstance(message, Welcome):
            self._reports_starts = message.starts
            self._waits_for_go = self.confirm_starts and message.starts and message.go
            self._starts_in_done = message.starts_in_done
            # a report sent before our latest hello was answered before this welcome, if at all
            self._drop_reported(lambda hello: hello < self._hellos)
            self.connected.set()
            self._start_waiting()
        elif isinstance(message, Reset):
            log.info("the service asked for a fresh hello (%s)", message.why, extra=fields(worker=self.name))
            self._hello()

    def _run(self, envelopes: list[Envelope]) -> None:
        waiting = {envelope.attempt_id for envelope in self._waiting}
        for envelope in envelopes:
            attempt = envelope.attempt_id
            if attempt in self._running or attempt in waiting or attempt in self._reported:
                self.stats["skipped_duplicates"] += 1
            elif attempt in self._unacked:
                self.stats["skipped_duplicates"] += 1
                self._send(protocol.done_frames([self._unacked[attempt]])[0])
            elif self._draining and self._reports_starts:
                continue  # sent before the service read our bye: it is handed on, as those waiting
            else:
                waiting.add(attempt)
                self._waiting.append(envelope)
                self.stats["calls"] += 1
        self._start_waiting()

    def _start_waiting(self, outcomes: list[bytes] | None = None) -> None:
        """Send ``outcomes``, then start waiting calls while slots are free, each reported ``started``
        before it begins: once the service's ``go`` for it has come, if the service sends one
        (``_go``), else at once, the report riding on the outcomes' ``done`` if the service reads it."""
        fresh = self._take_waiting() if self.connected.is_set() else []  # before the welcome: unsure how
        ids = [envelope.attempt_id for envelope in fresh]
        riding = bool(ids and outcomes) and self._starts_in_done and not self._waits_for_go
        for frame in protocol.done_frames(outcomes or [], ids if riding else None):
            self._send(frame)
        if ids and self._reports_starts and not riding:
            self._send(protocol.started(ids))
        if fresh and not self._waits_for_go:
            self._begin(fresh)

    def _take_waiting(self) -> list[Envelope]:
        fresh: list[Envelope] = []
        while self._waiting and len(self._running) + len(self._reported) < self._limit():
            envelope = self._waiting.popleft()
            fresh.append(envelope)
            if self._waits_for_go:
                self._reported[envelope.attempt_id] = (envelope, self._hellos)
            else:
                self._running.add(envelope.attempt_id)
        return fresh

    def _limit(self) -> int:
        """How many calls may run at once: asyncio runs all it holds."""
        return self.slots if self.pool == "asyncio" else self.concurrency

    def _begin(self, fresh: list[Envelope]) -> None:
        """The first call runs on this thread when its turn ends, if it owns the socket and runs threads."""
        if self.pool == "threads" and self._inline is None and not self._covering:
            self._inline, fresh = fresh[0], fresh[1:]
        if fresh:
            self._executor.dispatch(fresh)

    def _go(self, message: protocol.Go) -> None:
        """The service has recorded these calls as begun here: begin them; refused ones are not ours."""
        fresh: list[Envelope] = []
        for attempt_id in message.ids:
            reported = self._reported.pop(attempt_id, None)
            if reported is not None:
                self._running.add(attempt_id)
                fresh.append(reported[0])
        if fresh:
            self._begin(fresh)
        refused = set(message.refused)
        if refused:
            self._drop_reported(lambda hello: True, refused)
            self._start_waiting()

    def _drop_reported(self, when: Callable[[int], bool], only: set[str] | None = None) -> None:
        """Forget reported calls that will get no ``go`` (the service handed them on or forgot us)."""
        for attempt_id, (_, hello) in list(self._reported.items()):
            if when(hello) and (only is None or attempt_id in only):
                del self._reported[attempt_id]

    def _report(self, outcome: Outcome) -> None:
        """From the local executor's threads: hand the outcome to the socket's thread."""
        self._results.put(outcome)
        self._waker.wake()
        self._standby.nudge()

    def _send_results(self) -> None:
        batch: list[bytes] = []
        for _ in range(protocol.MAX_BATCH):
            try:
                outcome = self._results.get_nowait()
            except queue.Empty:
                break
            self._running.discard(outcome.attempt_id)
            part = protocol.encoded_outcome(replace(outcome, by=self.by))
            self._unacked[outcome.attempt_id] = part
            batch.append(part)
        if batch:
            self._start_waiting(batch)
        if batch and not self._results.empty():
            self._waker.wake()

    def _send(self, frame: bytes) -> None:
        assert self._socket is not None
        with contextlib.suppress(zmq.Again):  # not connected: outcomes stay unacked, go again after hello
            self._socket.send(frame, zmq.NOBLOCK)
