"""The service end of the ZeroMQ socket: reads and writes frames; the scheduler decides the rest.

One thread owns the ROUTER socket (ZeroMQ sockets are not thread-safe); others hand it work
through a queue and wake it through a pipe. Every frame is checked first; bad ones are dropped
and counted. Which worker gets which call, credit, dead workers and lone acknowledgements are
the ``Scheduler``'s to decide, given the time this thread reads; the hub carries out its answers.
"""

from __future__ import annotations

import errno
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from orchestrator.core.envelope import Envelope, ErrorInfo, Outcome
from orchestrator.core.errors import ConfigurationError, ProtocolError
from orchestrator.core.logfields import fields

from . import protocol
from .endpoints import check_endpoint
from .offers import Offers
from .protocol import Done, Hello, Request, Signal, Started
from .scheduler import Batch, Departure, Ended, Scheduler, WorkerInfo
from .security import ServerKeys
from .waker import Waker
from .wire import MAX_MESSAGE_BYTES

log = logging.getLogger("evenflow.zmq.hub")

OnOutcome = Callable[[Outcome, bytes], None]
OnRequest = Callable[[bytes, Request], None]

_REFUSED_HANDSHAKES = (
    zmq.EVENT_HANDSHAKE_FAILED_AUTH,
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL,
)


class Hub:
    """Binds ``endpoint`` and serves workers (and, through ``on_request``, clients) from one thread."""

    def __init__(
        self,
        endpoint: str,
        *,
        on_outcome: OnOutcome,
        on_request: OnRequest | None = None,
        heartbeat_s: float = 1.0,
        liveness: int = 3,
        schedule_timeout_s: float = 300.0,
        keys: ServerKeys | None = None,
        by: str = "zmq-service",
    ) -> None:
        self.scheduler = Scheduler(
            heartbeat_s=heartbeat_s, liveness=liveness, schedule_timeout_s=schedule_timeout_s
        )
        self.endpoint = check_endpoint(endpoint, binding=True)
        self.heartbeat_s = heartbeat_s
        self.liveness = liveness
        self.by = by
        self.stats: Counter[str] = Counter()
        self.offers = Offers()
        self._on_outcome = on_outcome
        self._on_request = on_request
        self._keys = keys
        self._inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._waker = Waker()
        self._closing = threading.Event()
        self._unreachable: set[bytes] = set()
        """Peers a send found gone: forgotten once what they sent before going is read."""
        self._thread: threading.Thread | None = None
        self._starting = threading.Lock()
        self._last_log: dict[str, float] = {}
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._authenticator: Any = None
        self._socket = self._bind()
        self._monitor = self._socket.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_FAILED_AUTH
            | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
            | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
        )

    def _bind(self) -> zmq.Socket[bytes]:
        socket = self._context.socket(zmq.ROUTER)
        socket.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a send to a vanished peer raises, never vanishes
        socket.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        socket.setsockopt(zmq.SNDHWM, 0)  # credit bounds what is queued per worker; never drop
        socket.setsockopt(zmq.RCVHWM, 0)
        socket.setsockopt(zmq.LINGER, 0)
        try:
            if self._keys is not None:
                self._authenticator = self._keys.apply(self._context, socket)
            socket.bind(self.endpoint)
        except zmq.ZMQError as exc:
            socket.close(0)
            self._stop_auth()
            self._context.term()
            raise ConfigurationError(
                f"cannot listen on {self.endpoint}: {exc}; use tcp://HOST:PORT with a free port"
            ) from None
        except Exception:
            socket.close(0)
            self._stop_auth()
            self._context.term()
            raise
        self.endpoint = socket.getsockopt_string(zmq.LAST_ENDPOINT) or self.endpoint
        return socket

    # --- from any thread --------------------------------------------------------------------

    def start(self) -> None:
        with self._starting:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="evenflow-zmq-hub", daemon=True)
                self._thread.start()

    def send_calls(self, envelopes: Iterable[Envelope]) -> None:
        self._put("calls", list(envelopes))

    def acknowledge(self, attempt_ids: Iterable[str]) -> None:
        self._put("acks", list(attempt_ids))

    def reply(self, peer: bytes, frame: bytes) -> None:
        self._put("reply", (peer, frame))

    def workers(self) -> list[WorkerInfo]:
        """A snapshot of the live workers (for status output and tests)."""
        done: queue.SimpleQueue[list[WorkerInfo]] = queue.SimpleQueue()
        self._put("workers", done.put)
        return done.get(timeout=10)

    def close(self) -> None:
        if self._closing.is_set():
            return
        self._closing.set()
        self._waker.wake()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._monitor.close(0)
        self._socket.close(0)
        self._stop_auth()
        self._context.term()
        self._waker.close()

    def _stop_auth(self) -> None:
        if self._authenticator is not None:
            self._authenticator.stop()
            self._authenticator = None

    def _put(self, kind: str, item: Any) -> None:
        self._inbox.put((kind, item))
        self._waker.wake()

    # --- the socket's thread -----------------------------------------------------------------

    def _loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        poller.register(self._monitor, zmq.POLLIN)
        poller.register(self._waker.fd, zmq.POLLIN)
        next_tick = time.monotonic()
        while not self._closing.is_set():
            timeout_ms = max(0, int((next_tick - time.monotonic()) * 1000))
            ready = dict(poller.poll(timeout_ms))
            try:
                if self._socket in ready:
                    self._receive()
                if self._monitor in ready:
                    self._count_refusals()
                if self._waker.fd in ready:
                    self._waker.clear()
                self._drain_inbox()
                now = time.monotonic()
                if now >= next_tick:
                    self._tick()
                    next_tick = now + self.heartbeat_s / 2
                next_tick = min(next_tick, self._flush_acks(now))
                self._forget_unreachable()
            except Exception:  # the service must outlive any one message
                log.exception("the zmq hub hit an unexpected error; it goes on")

    def _receive(self) -> None:
        for _ in range(1_000):  # bounded, so timers and the inbox get their turn
            try:
                frames = self._socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) != 2:  # a ROUTER always gives the peer's id first
                self._drop("malformed", f"a message of {len(frames)} frames", peer=frames[0])
                continue
            peer, frame = frames
            try:
                message = protocol.from_peer(frame)
            except ProtocolError as exc:
                self._drop("malformed", str(exc), peer=peer)
                continue
            self._handle(peer, message)

    def _handle(self, peer: bytes, message: protocol.FromPeer) -> None:
        now = time.monotonic()
        if isinstance(message, Hello):
            self._hello(peer, message, now)
            return
        if isinstance(message, Request):
            self._request(peer, message)
            return
        known = self.scheduler.heard(peer, now)
        if known is None:
            self._unknown(peer, now)
        elif isinstance(message, Started):
            begun = self.scheduler.started(peer, message.ids)
            if known.go:  # recorded: it may begin them now (and they end as lost with it)
                held = set(begun)
                self._send(peer, protocol.go(begun, [i for i in message.ids if i not in held]))
            self._send_batch(self.scheduler.fill(peer))  # all it holds may have begun
        elif isinstance(message, Done):
            self._done(peer, message)
        elif isinstance(message, Signal) and message.type == "bye":
            handed_back, lost = self.scheduler.drain(peer, now)
            for ended in lost:
                self._lose(ended)
            log.info(
                "worker %s is draining; it gets no new calls (%d it had not started go to others)",
                known.name,
                handed_back,
                extra=fields(worker=known.name),
            )
            self._fill_all()

    def _unknown(self, peer: bytes, now: float) -> None:
        """Drop what an unknown peer sends; ask it for a hello once (a lost ask: it reconnects)."""
        self.stats["unknown"] += 1
        if self.scheduler.should_reset(peer, now):
            self.stats["reset"] += 1
            self._send(peer, protocol.reset("this service does not know you; say hello again"))

    def _hello(self, peer: bytes, hello: Hello, now: float) -> None:
        for conflict in self.scheduler.join(peer, hello, now):
            self.stats["option_conflicts"] += 1
            log.warning("%s", conflict, extra=fields(worker=conflict.refused))
        self.offers.update(self.scheduler.workers())
        self.stats["hello"] += 1
        log.info(
            "worker %s joined: %d commands, %d slots",
            hello.name,
            len(hello.commands),
            hello.slots,
            extra=fields(worker=hello.name),
        )
        if self._send(peer, protocol.welcome(self.heartbeat_s, self.liveness, go=True)):
            self._send_batch(self.scheduler.fill(peer))

    def _fill_all(self) -> None:  # calls a worker handed back go to those with free slots
        for peer in list(self.scheduler.peers):
            self._send_batch(self.scheduler.fill(peer))

    def _done(self, peer: bytes, message: Done) -> None:
        for outcome in message.outcomes:
            self.scheduler.completed(peer, outcome.attempt_id)
            self.stats["outcomes"] += 1
            self._on_outcome(outcome, peer)
        self.scheduler.started(peer, message.started)  # reported with them: this worker waits for no go
        self._send_batch(self.scheduler.fill(peer))

    def _request(self, peer: bytes, request: Request) -> None:
        if self._on_request is None:
            self._send(
                peer, protocol.reply(request.req, ok=False, error=_error("this endpoint has no service"))
            )
            return
        self.stats["requests"] += 1
        self._on_request(peer, request)

    def _drain_inbox(self) -> None:
        for _ in range(10_000):
            try:
                kind, item = self._inbox.get_nowait()
            except queue.Empty:
                return
            if kind == "calls":
                for batch in self.scheduler.place(item, time.monotonic()):
                    self._send_batch(batch)
            elif kind == "acks":
                self.scheduler.acknowledge(item, time.monotonic())
            elif kind == "reply":
                self._send(*item)
            elif kind == "workers":
                item(self.scheduler.workers())

    def _send_batch(self, batch: Batch | None) -> None:
        """Send a worker its calls, ``MAX_BATCH`` a message, the acknowledgements owed riding on the first."""
        if batch is None:
            return
        for start in range(0, len(batch.calls), protocol.MAX_BATCH):
            calls = batch.calls[start : start + protocol.MAX_BATCH]
            if not self._send(batch.peer, protocol.calls(calls, batch.acks if start == 0 else None)):
                return

    def _flush_acks(self, now: float) -> float:
        """Send acknowledgements that waited for a call long enough; returns when the next are due."""
        sends, due = self.scheduler.acks_due(now)
        for peer, ids in sends:
            self._send(peer, protocol.ack(ids))
        return due

    def _tick(self) -> None:
        now = time.monotonic()
        for departure in self.scheduler.silent(now):
            self._departed(departure)
        for peer in list(self.scheduler.peers):
            self._send(peer, protocol.signal("hb"))
        expired = self.scheduler.expire(now)
        self.stats["unscheduled"] += len(expired)
        for ended in expired:
            self._lose(ended)

    def _forget_unreachable(self) -> None:
        """Read what gone peers sent before they went, then forget them: no outcome is lost with them."""
        for _ in range(10):  # reading may find more peers gone
            if not self._unreachable:
                return
            self._receive()
            gone, self._unreachable = self._unreachable, set()
            for peer in gone:
                self._forget(peer, "became unreachable")

    def _forget(self, peer: bytes, why: str) -> None:
        departure = self.scheduler.forget(peer, why, time.monotonic())
        if departure is not None:
            self._departed(departure)

    def _departed(self, departure: Departure) -> None:
        """A forgotten worker: each call it held ends as lost, for the engine to send again."""
        self.stats["forgotten"] += 1
        self.offers.update(self.scheduler.workers())
        if departure.clean:
            log.info("worker %s left cleanly", departure.name, extra=fields(worker=departure.name))
            return
        log.warning(
            "worker %s %s; %d calls it started end as lost, %d it had not started go to others",
            departure.name,
            departure.why,
            len(departure.lost),
            departure.requeued,
            extra=fields(worker=departure.name),
        )
        self.stats["handed_back"] += departure.requeued
        for ended in departure.lost:
            self._lose(ended)
        if departure.requeued:
            self._fill_all()

    def _lose(self, ended: Ended) -> None:
        error = ErrorInfo.from_exception(ended.error, reason=ended.reason)
        self._on_outcome(Outcome.failed(ended.envelope, error, by=self.by), b"")

    def _send(self, peer: bytes, frame: bytes) -> bool:
        """Send one frame; a peer that is gone is forgotten (ROUTER_MANDATORY makes it visible)."""
        try:
            self._socket.send_multipart([peer, frame], zmq.NOBLOCK)
            return True
        except zmq.ZMQError as exc:
            if exc.errno not in (errno.EHOSTUNREACH, zmq.EAGAIN):
                raise
            self._unreachable.add(peer)
            return False

    def _count_refusals(self) -> None:
        for _ in range(1_000):
            try:
                event = recv_monitor_message(self._monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            if event["event"] in _REFUSED_HANDSHAKES:
                self._drop("refused_handshake", f"a peer failed the CURVE handshake at {event['endpoint']!r}")

    def _drop(self, kind: str, why: str, *, peer: bytes = b"") -> None:
        """Count what was dropped and log it at most once per 5 s per kind, with the running count."""
        self.stats[kind] += 1
        if peer and kind == "malformed":
            self._forget(peer, "sent a malformed message")
        now = time.monotonic()
        if now - self._last_log.get(kind, -10.0) >= 5.0:
            self._last_log[kind] = now
            log.warning("dropped %s traffic (%d so far): %s", kind, self.stats[kind], why[:200])


def _error(message: str, kind: str = "EvenflowError") -> dict[str, str]:
    return {"type": kind, "message": message}
