"""``Client.run`` is one request, answered when the submission is logged and again when the run ends;
if the end is slow to come it asks again, as ``Client.result`` does, and still gets the result.

The service and a worker run in this process (memory store, real sockets on 127.0.0.1), so the
test reads the service's count of requests.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from orchestrator import call
from orchestrator import client as client_module
from orchestrator.client import Client
from orchestrator.core.registry import Registry
from orchestrator.service import Service
from tests import commands
from tests.support.polling import wait_until
from workers.zmq import Worker

pytestmark = pytest.mark.slow

HEARTBEAT_S = 0.2


@dataclass
class Served:
    service: Service
    client: Client

    def requests(self) -> int:
        return self.service.executor.hub.stats["requests"]


@pytest.fixture
def served() -> Iterator[Served]:
    registry = Registry()
    registry.register("inc", lambda value: value + 1)
    registry.register("wait_for_file", commands.wait_for_file)
    with Service("tcp://127.0.0.1:0", store="memory://", heartbeat_s=HEARTBEAT_S) as service:
        service.start()
        worker = Worker(service.endpoint, registry, heartbeat_s=HEARTBEAT_S)
        thread = threading.Thread(target=worker.run, name="worker", daemon=True)
        thread.start()
        try:
            with Client(service.endpoint, timeout=30) as client:
                yield Served(service, client)
        finally:
            worker.stop()
            thread.join(timeout=30)


def test_a_run_is_one_request(served: Served) -> None:
    assert served.client.run(call("inc", 1), timeout=60, wait_for_worker=30) == 2  # the worker has joined
    before = served.requests()
    assert served.client.run(call("inc", 41), timeout=60) == 42
    assert served.requests() - before == 1


def test_a_run_whose_end_is_slow_to_come_is_asked_for_again(
    served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_module, "ASK_AGAIN_S", 0.2)
    gate = tmp_path / "gate"
    answer: Future[Any] = Future()

    def run() -> None:
        try:
            flow = call("wait_for_file", str(gate), "done")
            answer.set_result(served.client.run(flow, timeout=60, wait_for_worker=30))
        except BaseException as exc:
            answer.set_exception(exc)

    before = served.requests()
    threading.Thread(target=run, name="client", daemon=True).start()
    try:
        wait_until(lambda: answer.done() or served.requests() - before >= 3, what="the client asked again")
        assert not answer.done(), f"the run ended with its gate shut: {answer.exception()}"
    finally:
        gate.touch()
    assert answer.result(timeout=60) == "done"
