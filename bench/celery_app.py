"""The Celery baseline: W1-W5 as a Celery user writes them, with canvas and Celery's own retry.

Broker and result backend are the Redis in ``$EVENFLOW_BENCH_REDIS``. JSON only,
as evenflow's wire; acks early (Celery's default) so Celery is measured as
most deployments run it.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

REDIS = os.environ.get("EVENFLOW_BENCH_REDIS", "redis://127.0.0.1:6379/0")

app = Celery("evenflow-bench", broker=REDIS, backend=REDIS)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="bench.noop")
def noop(i: int) -> int:
    return i


@app.task(name="bench.inc")
def inc(x: int) -> int:
    return x + 1


@app.task(name="bench.square")
def square(i: int) -> int:
    return i * i


@app.task(name="bench.total")
def total(values: list[int]) -> int:
    return sum(values)


@app.task(name="bench.fail_twice", bind=True, max_retries=2)
def fail_twice(self: Any, i: int) -> int:
    """Fails twice, retried at once by Celery itself, succeeds on the third try (W4)."""
    if self.request.retries < 2:
        raise self.retry(countdown=0)
    return i
