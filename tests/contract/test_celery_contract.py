"""The executor contract on Celery (a real redis-server, a real prefork worker); what only Celery promises."""

from __future__ import annotations

import threading
import uuid

import pytest
import redis

from orchestrator.core.errors import ConfigurationError
from orchestrator.transport.wire import dumps, envelope_to_doc
from tests.commands import make_registry
from tests.contract.executor_suite import WAIT_S, ExecutorContract, MakeExecutor, envelope, started
from tests.support.celery_worker import CeleryWorker, registry
from tests.support.polling import wait_until
from tests.support.redis_server import free_port
from workers import executor_from_url
from workers.celery import CeleryExecutor
from workers.celery.app import MAX_DELIVERIES, REPLY_PREFIX, TASK_PREFIX, Runner, load_registry
from workers.celery.replies import decode_reply

pytest_plugins = ["tests.support.redis_server", "tests.support.celery_worker"]
pytestmark = pytest.mark.slow


class TestCeleryExecutor(ExecutorContract):
    @pytest.fixture
    def kind(self) -> str:
        return "celery"

    @pytest.fixture
    def make_executor(self, celery: CeleryWorker) -> MakeExecutor:
        return lambda: CeleryExecutor(celery.broker, registry=make_registry(), queue=celery.queue)


def test_the_url_builds_a_celery_executor(celery: CeleryWorker) -> None:
    executor = executor_from_url(f"celery://{celery.broker}")
    try:
        assert isinstance(executor, CeleryExecutor)
        assert (executor.broker, executor.backend, executor.queue) == (
            celery.broker,
            celery.broker,
            "evenflow",
        )
    finally:
        executor.close()


def test_an_unreachable_broker_fails_fast_with_the_password_redacted() -> None:
    url = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
    executor = CeleryExecutor(url, connect_timeout_s=1.0)
    finished = threading.Event()
    timer = threading.Timer(15.0, finished.set)
    timer.start()
    try:
        with pytest.raises(ConfigurationError) as raised:
            executor.start(make_registry(), lambda outcome: None)
        assert not finished.is_set(), "connecting took longer than 15 s"
    finally:
        timer.cancel()
        executor.close()
    message = str(raised.value)
    assert "s3cret" not in message and ":***@127.0.0.1" in message
    assert "start them, or fix the URL" in message


@pytest.mark.parametrize(
    ("broker", "backend", "fix"),
    [
        ("127.0.0.1:6379", None, "redis://HOST:6379/0"),
        ("amqp://guest:pw@127.0.0.1//", None, "backend='redis://"),
        ("redis://127.0.0.1:6379/0", "mongodb://127.0.0.1", "backend='redis://"),
    ],
)
def test_bad_urls_are_refused_saying_what_to_use(broker: str, backend: str | None, fix: str) -> None:
    with pytest.raises(ConfigurationError, match=fix) as raised:
        CeleryExecutor(broker, backend=backend)
    assert ":pw@" not in str(raised.value)


def test_nothing_is_reported_after_close(celery: CeleryWorker, ledger: str) -> None:
    executor, outcomes = started(CeleryExecutor(celery.broker, queue=celery.queue))
    assert isinstance(executor, CeleryExecutor)
    gate = f"{ledger}.gate"
    executor.dispatch([envelope("ledgered", 1, ledger=ledger), envelope("wait_for_file", gate, 1, 30.0)])
    outcomes.wait_for(1)
    executor.close()
    open(gate, "w").close()
    replies = redis.Redis.from_url(celery.broker)
    try:  # the abandoned attempt finishes on the worker and replies, to an executor that reports no more
        wait_until(
            lambda: replies.llen(executor._reply_key) == 1,
            timeout=WAIT_S,
            what="the abandoned attempt's reply on the reply list",
        )
    finally:
        replies.close()
    assert len(outcomes.items) == 1


# --- the worker side --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("tests.commands", "is not module:attr"),
        ("tests.no_such_module:registry", "cannot be loaded"),
        ("tests.commands:no_such_attr", "cannot be loaded"),
        ("tests.commands:COMMANDS", "gives a dict, not a Registry"),
    ],
)
def test_a_worker_refuses_a_registry_it_cannot_load(spec: str, problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        load_registry(spec)


def test_a_worker_loads_a_registry_or_a_function_returning_one() -> None:
    made = load_registry("tests.commands:make_registry")
    assert "inc" in made
    assert load_registry("tests.support.celery_worker:registry").names() == registry().names()


def test_the_worker_task_counts_deliveries_and_runs_a_task_at_most_until_it_replied(redis_url: str) -> None:
    runner = Runner(make_registry(), redis_url)
    replies = redis.Redis.from_url(redis_url)
    key, task = f"{REPLY_PREFIX}{uuid.uuid4().hex}", uuid.uuid4().hex
    message = dumps(envelope_to_doc(envelope("inc", 1))).decode()
    try:
        replies.hset(TASK_PREFIX + task, "deliveries", MAX_DELIVERIES)  # as if every child died so far
        runner.run(task, message, key)
        assert decode_reply(pop(replies, key)).lost == MAX_DELIVERIES
        runner.run(task, message, key)  # delivered once more after the reply: runs nothing
        assert replies.llen(key) == 0

        other = uuid.uuid4().hex
        runner.run(other, "{not json", key)
        reply = decode_reply(pop(replies, key))
        assert reply.task == other and "not valid JSON" in reply.problem
    finally:
        replies.delete(key, TASK_PREFIX + task)
        replies.close()


def pop(client: redis.Redis, key: str) -> bytes:
    data = client.lpop(key)
    assert isinstance(data, bytes), f"no reply on {key}"
    return data
