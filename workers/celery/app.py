"""The Celery side of evenflow: an app factory and ONE generic task that runs any registered command.

Start a worker where the commands live (plain callables, no decorator)::

    EVENFLOW_REGISTRY=myapp.commands:registry \\
    EVENFLOW_BROKER=redis://HOST:6379/0 \\
    celery -A workers.celery.app worker --concurrency 2

``EVENFLOW_REGISTRY`` is ``module:attr``, where ``attr`` is a ``Registry`` or a
zero-argument callable returning one. The broker comes from ``EVENFLOW_BROKER``,
else Celery's ``-b`` / ``CELERY_BROKER_URL``, else ``redis://127.0.0.1:6379/0``.
Outcomes go back through Redis: ``EVENFLOW_BACKEND`` when the executor was
given ``backend=``, else the broker. Workers consume the queue ``evenflow``
unless told otherwise with ``-Q`` (and the executor's ``queue=``).

The task ``evenflow.run`` gets the envelope as evenflow's JSON (never a pickle),
runs it with ``workers.execution.execute`` and pushes the outcome onto the
executor's reply list. Celery carries single attempts only: no Celery retries
(evenflow's log decides retries), late acks and requeue on a lost worker child
(at least once), with a per-task delivery count in Redis so a command that
kills its process every time ends as ``WorkerLost`` instead of looping.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any

import redis
from celery import Celery, Task

from orchestrator.core.errors import ConfigurationError, ProtocolError
from orchestrator.core.registry import Registry
from orchestrator.transport.wire import dumps, envelope_from_doc, loads, outcome_to_doc

from ..base import worker_id
from ..execution import execute

log = logging.getLogger(__name__)

TASK_NAME = "evenflow.run"
DEFAULT_QUEUE = "evenflow"
DEFAULT_BROKER = "redis://127.0.0.1:6379/0"
REPLY_PREFIX = "evenflow:replies:"
"""Each executor owns one reply list under this prefix; a worker pushes nowhere else."""
TASK_PREFIX = "evenflow:task:"
MAX_DELIVERIES = 2
"""Executions of one task a dying worker child may cost; the next delivery reports ``WorkerLost``."""
KEY_TTL_S = 24 * 3600
"""Reply lists and delivery counts outlive a vanished executor by this long, then Redis drops them."""

REGISTRY_ENV = "EVENFLOW_REGISTRY"
BROKER_ENV = "EVENFLOW_BROKER"
BACKEND_ENV = "EVENFLOW_BACKEND"


def make_app(broker: str, *, queue: str = DEFAULT_QUEUE, worker: Runner | None = None) -> Celery:
    """A Celery app configured for evenflow: JSON only, single attempts, late acks.

    The executor's app only sends (``send_task`` by name); a worker's app also
    registers ``evenflow.run`` bound to ``worker``.
    """
    app = Celery("evenflow", broker=broker, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        task_default_queue=queue,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
    )
    if worker is not None:

        def run(task: Task, message: str, reply: str) -> None:
            worker.run(str(task.request.id), message, reply)

        options = {"max_retries": 0, "acks_late": True, "reject_on_worker_lost": True}
        app.task(name=TASK_NAME, bind=True, **options)(run)
    return app


def worker_app() -> Celery:
    """The app ``celery -A workers.celery.app worker`` runs, configured from the environment."""
    broker = os.environ.get(BROKER_ENV) or os.environ.get("CELERY_BROKER_URL") or DEFAULT_BROKER
    spec = os.environ.get(REGISTRY_ENV, "")
    if not spec:
        raise ConfigurationError(
            f"${REGISTRY_ENV} is not set: name the commands this worker runs, "
            f"as {REGISTRY_ENV}=myapp.commands:registry (a Registry or a function returning one)"
        )
    runner = Runner(load_registry(spec), os.environ.get(BACKEND_ENV) or broker)
    return make_app(broker, worker=runner)


def load_registry(spec: str) -> Registry:
    """``module:attr`` to a Registry; ``attr`` may be a zero-argument callable that returns one."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigurationError(f"{REGISTRY_ENV}={spec!r} is not module:attr, e.g. myapp.commands:registry")
    try:
        found: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(
            f"{REGISTRY_ENV}={spec!r} cannot be loaded ({exc}); make {module_name!r} importable "
            "where the worker runs (installed, or on PYTHONPATH)"
        ) from None
    if not isinstance(found, Registry) and callable(found):
        found = found()
    if not isinstance(found, Registry):
        raise ConfigurationError(
            f"{REGISTRY_ENV}={spec!r} gives a {type(found).__name__}, "
            "not a Registry or a function returning one"
        )
    return found


@dataclass
class Runner:
    """What ``evenflow.run`` does in a worker child: count the delivery, execute, push the reply."""

    registry: Registry
    replies_url: str
    _clients: dict[int, redis.Redis] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, task_id: str, message: str, reply: str) -> None:
        """The body of task ``task_id``; it reports through the reply list, never a result backend."""
        if not isinstance(reply, str) or not reply.startswith(REPLY_PREFIX):
            log.error("task %s names no evenflow reply list (%r); dropped", task_id, reply)
            return
        deliveries, replied = self._begin(task_id)
        if replied:
            log.info("task %s was delivered again after its outcome was sent; not run twice", task_id)
            return
        if deliveries > MAX_DELIVERIES:
            doc: dict[str, Any] = {"task": task_id, "lost": deliveries - 1}
        else:
            doc = self._execute(task_id, message)
        self._reply(task_id, reply, dumps(doc))

    def _execute(self, task_id: str, message: Any) -> dict[str, Any]:
        try:
            if not isinstance(message, str):
                raise ProtocolError(f"the envelope must be a JSON string, got {type(message).__name__}")
            envelope = envelope_from_doc(loads(message.encode()))
        except ProtocolError as exc:
            return {"task": task_id, "problem": str(exc)}
        outcome = execute(self.registry, envelope, by=worker_id("celery"))
        return {"task": task_id, "outcome": outcome_to_doc(outcome)}

    def _begin(self, task_id: str) -> tuple[int, bool]:
        """Count this delivery; and whether an earlier one already sent the outcome."""
        key = TASK_PREFIX + task_id
        pipe = self._redis().pipeline(transaction=True)
        pipe.hincrby(key, "deliveries", 1)
        pipe.hget(key, "replied")
        pipe.expire(key, KEY_TTL_S)
        deliveries, replied, _ = pipe.execute()
        return int(deliveries), replied is not None

    def _reply(self, task_id: str, reply: str, data: bytes) -> None:
        """Push the outcome and mark the task replied, atomically: a redelivery then runs nothing."""
        key = TASK_PREFIX + task_id
        pipe = self._redis().pipeline(transaction=True)
        pipe.rpush(reply, data)
        pipe.expire(reply, KEY_TTL_S)
        pipe.hset(key, "replied", 1)
        pipe.expire(key, KEY_TTL_S)
        pipe.execute()

    def _redis(self) -> redis.Redis:
        """One client per process: prefork children must not share their parent's sockets."""
        with self._lock:
            client = self._clients.get(os.getpid())
            if client is None:
                client = self._clients[os.getpid()] = redis.Redis.from_url(self.replies_url)
            return client


_apps: dict[str, Celery] = {}


def __getattr__(name: str) -> Celery:
    """``app`` is built on first use (by ``celery -A``), so importing this module has no side effects."""
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if "app" not in _apps:
        _apps["app"] = worker_app()
    return _apps["app"]
