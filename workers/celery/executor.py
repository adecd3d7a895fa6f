"""``CeleryExecutor``: commands as Celery tasks, outcomes back through a Redis reply list.

Each envelope becomes one ``evenflow.run`` task carrying evenflow's JSON (no
pickle crosses the wire) and the name of this executor's reply list. The
executor keeps the envelopes in flight by task id; the first reply for a task
is reported and later ones (a redelivery after a worker child died) are
dropped, so the engine hears exactly one outcome per envelope. An attempt
whose deadline passes with no reply ends as ``CommandTimeout``; the task also
carries that deadline as Celery's ``expires`` and a hard time limit, so a
worker neither starts it late nor runs it forever. Start workers as
``workers.celery.app`` describes.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
from celery import Celery

from orchestrator.core.envelope import Envelope, Outcome, now_precise
from orchestrator.core.errors import ConfigurationError, ProtocolError, WorkerLost
from orchestrator.core.ports import Report
from orchestrator.core.registry import Registry
from orchestrator.transport.wire import dumps, envelope_to_doc, outcome_from_doc

from ..execution import failed, seconds_until, timed_out
from ..remote import RemoteExecutor
from .app import DEFAULT_QUEUE, REPLY_PREFIX, TASK_NAME, make_app
from .replies import BLOCK_S, Collector, Deadlines, OutcomeFor, Reply, decode_reply

log = logging.getLogger(__name__)

REPLY_SCHEMES = ("redis", "rediss", "unix")
TIME_LIMIT_GRACE_S = 2.0
"""A worker kills an attempt this long after its deadline, once the executor has reported it timed out."""


@dataclass(frozen=True, slots=True)
class _Connection:
    replies: redis.Redis
    collector: Collector
    deadlines: Deadlines


class CeleryExecutor(RemoteExecutor):
    """Sends envelopes to Celery workers through ``broker``; outcomes return through Redis.

    ``backend`` is the Redis whose lists carry outcomes back (default: the
    broker, which must then be Redis); workers must be started with the same
    one (``EVENFLOW_BACKEND``). ``queue`` is the Celery queue the workers
    consume. ``registry`` maps callables to names for ``submit``.
    """

    kind = "celery"
    requires_pickle = False

    def __init__(
        self,
        broker: str,
        *,
        backend: str | None = None,
        registry: Registry | None = None,
        queue: str = DEFAULT_QUEUE,
        connect_timeout_s: float = 5.0,
        close_timeout_s: float = 10.0,
    ) -> None:
        super().__init__(registry)
        self.broker = _check_url(broker, "broker")
        self.backend = _check_url(backend or broker, "backend")
        if urlsplit(self.backend).scheme not in REPLY_SCHEMES:
            raise ConfigurationError(
                f"outcomes come back from Celery workers through Redis, and {redact(self.backend)} is not "
                "Redis: use a redis:// broker, or pass backend='redis://HOST:PORT/DB'"
            )
        if not isinstance(queue, str) or not queue:
            raise ConfigurationError(f"queue must be a non-empty Celery queue name, got {queue!r}")
        self.queue = queue
        self._connect_timeout_s = connect_timeout_s
        self._close_timeout_s = close_timeout_s
        self._app: Celery = make_app(self.broker, queue=queue)
        self._reply_key = f"{REPLY_PREFIX}{uuid.uuid4().hex}"
        self._lock = threading.Lock()
        self._drained = threading.Condition(self._lock)
        self._pending: dict[str, Envelope] = {}
        self._connection: _Connection | None = None
        self._closed = False

    # --- connecting ---------------------------------------------------------------------

    def start(self, registry: Registry, report: Report) -> None:
        """Connect now, so an unreachable broker fails here rather than at the first dispatch."""
        super().start(registry, report)
        self._connect()

    def _connect(self) -> _Connection:
        with self._lock:
            if self._closed:
                raise ConfigurationError(f"{self!r} is closed; build a new executor to dispatch more")
            if self._connection is None:
                self._connection = self._open_connection()
            return self._connection

    def _open_connection(self) -> _Connection:
        replies: redis.Redis | None = None
        try:
            replies = redis.Redis.from_url(
                self.backend,
                socket_connect_timeout=self._connect_timeout_s,
                socket_timeout=BLOCK_S + self._connect_timeout_s,
            )
            replies.ping()
            with self._app.connection_for_write() as broker:
                broker.ensure_connection(max_retries=1, interval_start=0, timeout=self._connect_timeout_s)
        except Exception as exc:  # redis and kombu raise many types; all mean "cannot reach"
            if replies is not None:
                replies.close()
            raise ConfigurationError(
                f"cannot reach the Celery broker {redact(self.broker)} or the reply Redis "
                f"{redact(self.backend)}: {type(exc).__name__}; start them, or fix the URL"
            ) from None
        collector = Collector(replies, self._reply_key, self._on_reply)
        connection = _Connection(replies, collector, Deadlines(self._fire, self._pending.__contains__))
        connection.collector.start()
        connection.deadlines.start()
        return connection

    # --- sending ------------------------------------------------------------------------

    def _send(self, envelopes: list[Envelope]) -> None:
        connection = self._connect()
        outgoing: list[tuple[str, Envelope]] = []
        with self._lock:
            for envelope in envelopes:
                task = uuid.uuid4().hex
                self._pending[task] = envelope
                outgoing.append((task, envelope))
        for task, envelope in outgoing:
            if envelope.deadline is not None:
                remaining = seconds_until(envelope.deadline, now_precise())
                connection.deadlines.at(time.monotonic() + remaining, task, self._timed_out)
        self._publish(connection, [(t, e) for t, e in outgoing if not _expired(e)])

    def _publish(self, connection: _Connection, outgoing: list[tuple[str, Envelope]]) -> None:
        """Send every task with one producer; if the broker fails, what is unsent is lost at once."""
        sent = 0
        try:
            with self._app.producer_or_acquire() as producer:
                for task, envelope in outgoing:
                    self._app.send_task(
                        TASK_NAME,
                        args=[dumps(envelope_to_doc(envelope)).decode(), self._reply_key],
                        task_id=task,
                        queue=self.queue,
                        producer=producer,
                        **_limits(envelope),
                    )
                    sent += 1
        except Exception as exc:  # kombu and redis raise many types; all mean "not sent"
            cause = f"it could not be sent to the Celery broker ({type(exc).__name__}: {exc})"
            outcome_for = functools.partial(lost, by=self.by, cause=cause)
            for task, _ in outgoing[sent:]:
                connection.deadlines.at(0.0, task, outcome_for)

    # --- outcomes -----------------------------------------------------------------------

    def _on_reply(self, data: bytes) -> None:
        """Collector thread: report the first reply for a task in flight; drop any later one."""
        try:
            reply = decode_reply(data)
        except ProtocolError as exc:
            log.warning("dropped a malformed reply on %s: %s", self._reply_key, exc)
            return
        envelope = self._take(reply.task)
        if envelope is None:
            log.info("dropped a second or late reply for task %s", reply.task)
            return
        self._deliver(self._outcome(envelope, reply))

    def _outcome(self, envelope: Envelope, reply: Reply) -> Outcome:
        if reply.lost:
            cause = f"the worker process running it died on each of {reply.lost} deliveries"
            return lost(envelope, by=self.by, cause=cause)
        if reply.problem:
            refused = ProtocolError(f"the worker refused the task: {reply.problem}")
            return failed(envelope, refused, by=self.by)
        try:
            outcome = outcome_from_doc(reply.outcome)
        except ProtocolError as exc:
            return failed(envelope, exc, by=self.by)
        if outcome.attempt_id != envelope.attempt_id:
            problem = ProtocolError(f"a reply for {envelope.attempt_id} named {outcome.attempt_id}")
            return failed(envelope, problem, by=self.by)
        return outcome

    def _fire(self, task: str, outcome_for: OutcomeFor) -> None:
        """Deadlines thread: an outcome decided here, if the task is still in flight."""
        envelope = self._take(task)
        if envelope is not None:
            self._deliver(outcome_for(envelope))

    def _timed_out(self, envelope: Envelope) -> Outcome:
        return timed_out(envelope, by=self.by, started_at=None, when="before a Celery worker reported")

    def _take(self, task: str) -> Envelope | None:
        with self._lock:
            envelope = self._pending.pop(task, None)
            if not self._pending:
                self._drained.notify_all()
            return envelope

    # --- stopping -----------------------------------------------------------------------

    def _shutdown(self, *, wait: bool, cancel_futures: bool) -> None:
        """Wait (up to ``close_timeout_s``) for what is in flight, then disconnect.

        Outcomes travel back over the connection this closes, so a future still
        pending then is cancelled rather than left to hang.
        """
        if cancel_futures:
            self._cancel_futures()
        if wait:
            with self._lock:
                self._drained.wait_for(lambda: not self._pending, self._close_timeout_s)
        self._disconnect()
        self._cancel_futures()

    def _close(self) -> None:
        """Abandon what is in flight (the engine re-dispatches it on restart) and disconnect."""
        self._cancel_futures()
        self._disconnect()

    def _disconnect(self) -> None:
        with self._lock:
            connection, self._connection = self._connection, None
            self._closed = True
            self._pending.clear()
        if connection is not None:
            connection.deadlines.stop(self._close_timeout_s)
            connection.collector.stop(self._close_timeout_s)
            with contextlib.suppress(redis.RedisError):  # else the list expires on its own
                connection.replies.delete(self._reply_key)
            connection.replies.close()
        self._app.close()

    def __repr__(self) -> str:
        return f"CeleryExecutor({redact(self.broker)!r}, queue={self.queue!r})"


def lost(envelope: Envelope, *, by: str, cause: str) -> Outcome:
    exc = WorkerLost(
        f"attempt {envelope.attempt_id} of {envelope.command!r} was lost: {cause}. "
        "A Celery worker child dies when a command kills it or it runs out of memory; "
        "a retry policy may run the attempt again"
    )
    return failed(envelope, exc, by=by, reason="lost")


def redact(url: str) -> str:
    """``url`` with its password replaced, fit for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _check_url(url: object, what: str) -> str:
    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError(f"the Celery {what} must be a URL such as redis://HOST:6379/0, got {url!r}")
    return url


def _expired(envelope: Envelope) -> bool:
    return envelope.deadline is not None and seconds_until(envelope.deadline, now_precise()) <= 0


def _limits(envelope: Envelope) -> dict[str, Any]:
    """Celery's own bounds for an attempt with a deadline: never start it late, kill it if it overruns."""
    if envelope.deadline is None:
        return {}
    remaining = max(0.0, seconds_until(envelope.deadline, now_precise()))
    return {"expires": remaining, "time_limit": remaining + TIME_LIMIT_GRACE_S}
