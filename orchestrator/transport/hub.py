"""The service end of the ZeroMQ socket: workers, routing, credit, heartbeats, acknowledgements.

One thread owns the ROUTER socket (ZeroMQ sockets are not thread-safe); other
threads hand it work through a queue and wake it through a pipe. It keeps, per
worker, the commands and queues it announced, its free slots (credit: a worker
is never sent more calls than it has slots, so a burst waits here, in order,
instead of overrunning it or being dropped at a high-water mark) and the calls
it holds. A worker silent for ``heartbeat_s * liveness`` — closed, killed or
frozen — is forgotten and its calls end as ``lost``, which the engine
re-dispatches as new attempts. A call no worker can take waits until
``schedule_timeout_s``, then fails with ``NoWorker``. Every frame is checked
before anything else sees it; bad ones are dropped and counted.
"""

from __future__ import annotations

import errno
import logging
import queue
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from orchestrator.core.envelope import EndReason, Envelope, ErrorInfo, Outcome
from orchestrator.core.errors import ConfigurationError, NoWorker, ProtocolError, UnknownCommand, WorkerLost

from . import protocol
from .endpoints import check_endpoint
from .protocol import Done, Hello, Request, Signal
from .security import ServerKeys
from .waker import Waker
from .wire import MAX_MESSAGE_BYTES

log = logging.getLogger("evenflow.zmq.hub")

OnOutcome = Callable[[Outcome, bytes], None]
OnRequest = Callable[[bytes, Request], None]

ACK_DELAY_S = 0.02
"""How long an acknowledgement may wait for a call to ride on: a send is costly, a short wait is not."""

_REFUSED_HANDSHAKES = (
    zmq.EVENT_HANDSHAKE_FAILED_AUTH,
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL,
)


@dataclass
class Peer:
    """A worker that said hello, as this service knows it."""

    id: bytes
    name: str
    commands: frozenset[str]
    queues: frozenset[str]
    slots: int
    last_seen: float
    calls: dict[str, Envelope] = field(default_factory=dict)
    draining: bool = False
    """Said ``bye``: finishing what it holds, taking nothing new."""
    owed: list[str] = field(default_factory=list)
    """Acknowledgements not yet sent: they ride on the next call, or go alone after ``ACK_DELAY_S``."""
    owed_since: float = 0.0

    @property
    def free(self) -> int:
        return 0 if self.draining else self.slots - len(self.calls)

    def takes(self, envelope: Envelope) -> bool:
        route = envelope.route
        return envelope.command in self.commands and (route in (None, "default") or route in self.queues)


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    name: str
    commands: frozenset[str]
    queues: frozenset[str]
    slots: int
    busy: int


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
        if not heartbeat_s > 0 or type(liveness) is not int or liveness < 1 or not schedule_timeout_s > 0:
            raise ConfigurationError(
                f"heartbeat_s ({heartbeat_s!r}) and schedule_timeout_s ({schedule_timeout_s!r}) must be "
                f"positive and liveness ({liveness!r}) a whole number >= 1"
            )
        self.endpoint = check_endpoint(endpoint, binding=True)
        self.heartbeat_s = heartbeat_s
        self.liveness = liveness
        self.schedule_timeout_s = schedule_timeout_s
        self.by = by
        self.stats: Counter[str] = Counter()
        self._on_outcome = on_outcome
        self._on_request = on_request
        self._keys = keys
        self._peers: dict[bytes, Peer] = {}
        self._pending: dict[tuple[str, str | None], deque[tuple[Envelope, float]]] = defaultdict(deque)
        self._reporters: dict[str, bytes] = {}
        self._resets: dict[bytes, float] = {}
        """Unknown peers asked to say hello, and when: at most one reset each per liveness window."""
        self._inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._waker = Waker()
        self._closing = threading.Event()
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
            except Exception:  # the service must outlive any one message
                log.exception("the zmq hub hit an unexpected error; it goes on")

    def _receive(self) -> None:
        for _ in range(1_000):  # bounded, so timers and the inbox get their turn
            try:
                frames = self._socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) != 2:
                self._drop(
                    "malformed", f"a message of {len(frames)} frames", peer=frames[0] if frames else b""
                )
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
        known = self._peers.get(peer)
        if known is None:
            self._unknown(peer, now)
            return
        known.last_seen = now
        if isinstance(message, Done):
            self._done(known, message)
        elif isinstance(message, Signal) and message.type == "bye":
            known.draining = True
            log.info("worker %s is draining; it gets no new calls", known.name)

    def _unknown(self, peer: bytes, now: float) -> None:
        """Drop what a peer that never said hello (or was forgotten) sends; ask it for a hello, once.

        One reset per liveness window: a worker that wakes from a freeze with
        several messages under way would otherwise get a reset for each, and
        resend every kept outcome once per reset. If this reset is lost, the
        worker hears nothing, counts the service as silent and reconnects.
        """
        self.stats["unknown"] += 1
        if now - self._resets.get(peer, -float("inf")) < self.heartbeat_s * self.liveness:
            return
        self._resets[peer] = now
        self.stats["reset"] += 1
        self._send(peer, protocol.reset("this service does not know you; say hello again"))

    def _hello(self, peer: bytes, hello: Hello, now: float) -> None:
        self._resets.pop(peer, None)
        known = self._peers.get(peer)
        calls = known.calls if known is not None else {}
        self._peers[peer] = Peer(peer, hello.name, hello.commands, hello.queues, hello.slots, now, calls)
        self.stats["hello"] += 1
        log.info("worker %s joined: %d commands, %d slots", hello.name, len(hello.commands), hello.slots)
        if self._send(peer, protocol.welcome(self.heartbeat_s, self.liveness)):
            self._fill(self._peers[peer])

    def _done(self, peer: Peer, message: Done) -> None:
        for outcome in message.outcomes:
            peer.calls.pop(outcome.attempt_id, None)
            self._reporters[outcome.attempt_id] = peer.id
            self.stats["outcomes"] += 1
            self._on_outcome(outcome, peer.id)
        self._fill(peer)

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
                self._place(item)
            elif kind == "acks":
                self._ack(item)
            elif kind == "reply":
                self._send(*item)
            elif kind == "workers":
                item(
                    [
                        WorkerInfo(p.name, p.commands, p.queues, p.slots, len(p.calls))
                        for p in self._peers.values()
                    ]
                )

    def _place(self, envelopes: list[Envelope]) -> None:
        """Send each call to the live worker with the command and the most free slots, or queue it."""
        now = time.monotonic()
        batches: dict[bytes, list[Envelope]] = defaultdict(list)
        for envelope in envelopes:
            peer = max(
                (p for p in self._peers.values() if p.free > 0 and p.takes(envelope)),
                key=lambda p: p.free,
                default=None,
            )
            if peer is None:
                self._pending[(envelope.command, envelope.route)].append((envelope, now))
                continue
            peer.calls[envelope.attempt_id] = envelope
            batches[peer.id].append(envelope)
        for peer_id, batch in batches.items():
            self._send_calls(peer_id, batch)

    def _fill(self, peer: Peer) -> None:
        """Give a worker that has free slots the oldest waiting calls it can take."""
        batch: list[Envelope] = []
        for key in [key for key in self._pending if key[0] in peer.commands]:
            waiting = self._pending[key]
            while waiting and peer.free > 0 and peer.takes(waiting[0][0]):
                envelope, _ = waiting.popleft()
                peer.calls[envelope.attempt_id] = envelope
                batch.append(envelope)
            if not waiting:
                del self._pending[key]
        if batch:
            self._send_calls(peer.id, batch)

    def _send_calls(self, peer: bytes, envelopes: list[Envelope]) -> None:
        known = self._peers.get(peer)
        acks: list[str] = []
        if known is not None:
            acks, known.owed = known.owed, []
        for start in range(0, len(envelopes), protocol.MAX_BATCH):
            batch = envelopes[start : start + protocol.MAX_BATCH]
            if not self._send(peer, protocol.calls(batch, acks if start == 0 else None)):
                return

    def _ack(self, attempt_ids: list[str]) -> None:
        """Owe each outcome's acknowledgement to the worker that sent it."""
        now = time.monotonic()
        for attempt_id in attempt_ids:
            peer = self._peers.get(self._reporters.pop(attempt_id, b""))
            if peer is not None:
                if not peer.owed:
                    peer.owed_since = now
                peer.owed.append(attempt_id)

    def _flush_acks(self, now: float) -> float:
        """Send acknowledgements that waited ``ACK_DELAY_S`` for a call; returns when the next are due."""
        due = float("inf")
        for peer in list(self._peers.values()):
            if not peer.owed:
                continue
            if now - peer.owed_since >= ACK_DELAY_S:
                ids, peer.owed = peer.owed, []
                self._send(peer.id, protocol.ack(ids))
            else:
                due = min(due, peer.owed_since + ACK_DELAY_S)
        return due

    def _tick(self) -> None:
        now = time.monotonic()
        silent_after = self.heartbeat_s * self.liveness
        self._resets = {peer: at for peer, at in self._resets.items() if now - at < silent_after}
        for peer in list(self._peers.values()):
            if now - peer.last_seen > silent_after:
                self._forget(peer, f"went silent for {now - peer.last_seen:.1f}s (over {silent_after:g}s)")
            else:
                self._send(peer.id, protocol.signal("hb"))
        self._expire(now)

    def _expire(self, now: float) -> None:
        """Fail calls that waited past the schedule timeout: ``UnknownCommand`` if no live worker
        has the name (a typo, or a deploy that dropped it), ``NoWorker`` if those that have it
        were all busy or in other queues."""
        known: set[str] = set()
        for peer in self._peers.values():
            known |= peer.commands
        for key in list(self._pending):
            waiting = self._pending[key]
            while waiting and now - waiting[0][1] > self.schedule_timeout_s:
                envelope, _ = waiting.popleft()
                self.stats["unscheduled"] += 1
                self._lose(envelope, self._unscheduled(envelope, known), reason="raised")
            if not waiting:
                del self._pending[key]

    def _unscheduled(self, envelope: Envelope, known: set[str]) -> Exception:
        if envelope.command not in known:
            return UnknownCommand(envelope.command, sorted(known), path=envelope.node)
        where = f" in queue {envelope.route!r}" if envelope.route not in (None, "default") else ""
        return NoWorker(
            f"no worker with command {envelope.command!r}{where} took attempt {envelope.attempt_id} "
            f"within {self.schedule_timeout_s:g}s; start more workers (evenflow worker --registry ...) "
            "or raise the schedule timeout"
        )

    def _forget(self, peer: Peer, why: str) -> None:
        """Drop a worker; each call it held ends as lost, for the engine to send again."""
        self._peers.pop(peer.id, None)
        self.stats["forgotten"] += 1
        log.warning("worker %s %s; %d calls it held end as lost", peer.name, why, len(peer.calls))
        for envelope in peer.calls.values():
            self._lose(envelope, WorkerLost(f"worker {peer.name} {why} while holding this attempt"))
        peer.calls.clear()

    def _lose(self, envelope: Envelope, exc: Exception, *, reason: EndReason = "lost") -> None:
        error = ErrorInfo.from_exception(exc, reason=reason)
        self._on_outcome(Outcome.failed(envelope, error, by=self.by), b"")

    def _send(self, peer: bytes, frame: bytes) -> bool:
        """Send one frame; a peer that is gone is forgotten (ROUTER_MANDATORY makes it visible)."""
        try:
            self._socket.send_multipart([peer, frame], zmq.NOBLOCK)
            return True
        except zmq.ZMQError as exc:
            if exc.errno not in (errno.EHOSTUNREACH, zmq.EAGAIN):
                raise
            known = self._peers.get(peer)
            if known is not None:
                self._forget(known, "became unreachable")
            return False

    def _count_refusals(self) -> None:
        for _ in range(1_000):
            try:
                event = recv_monitor_message(self._monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            if event["event"] in _REFUSED_HANDSHAKES:
                self._drop(
                    "refused_handshake", f"a peer failed the CURVE handshake at {event.get('endpoint')!r}"
                )

    def _drop(self, kind: str, why: str, *, peer: bytes = b"") -> None:
        """Count what was dropped and log it at most once per 5 s per kind, with the running count."""
        self.stats[kind] += 1
        if peer and kind == "malformed":
            known = self._peers.get(peer)
            if known is not None:
                self._forget(known, "sent a malformed message")
        now = time.monotonic()
        if now - self._last_log.get(kind, -10.0) >= 5.0:
            self._last_log[kind] = now
            log.warning("dropped %s traffic (%d so far): %s", kind, self.stats[kind], why[:200])


def _error(message: str, kind: str = "EvenflowError") -> dict[str, str]:
    return {"type": kind, "message": message}
