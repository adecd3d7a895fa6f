"""``Client.run`` is one request, answered when the submission is logged and again when the run ends;
if the end is slow to come it asks again, as ``Client.result`` does, and still gets the result. Asking
again costs no extra answers: the service answers a request once however often it is asked, and the
client drops a late answer to a request it is done with. A refusal keeps the attributes of its type.

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
import zmq

from orchestrator import call
from orchestrator import client as client_module
from orchestrator.client import Client
from orchestrator.core.errors import IdempotencyConflict
from orchestrator.core.registry import Registry
from orchestrator.service import Service
from orchestrator.transport import protocol
from orchestrator.transport.connection import Connection
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


def test_a_watch_asked_again_while_it_waits_is_answered_once(served: Served, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    run = served.client.submit(call("wait_for_file", str(gate), "done"), wait_for_worker=30)
    connection = Connection(served.service.endpoint)
    try:
        req = connection.send("watch", run=run)
        for _ in range(3):
            connection.send("watch", req, run=run)
        # the service takes requests in order: once this one is answered, the four watches wait
        assert not connection.wait(connection.send("watch", run="no-such-run"), 30)["ok"]
        gate.touch()
        assert connection.wait(req, 60)["result"] == "done"
        fence = connection.send("watch", run=run)  # its answer comes after any other answer to req
        assert connection.wait(fence, 60)["result"] == "done"
        assert connection.wait(req, 0) is None
    finally:
        connection.close()


def test_a_watch_that_could_not_wait_is_asked_again_afresh(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = served.client.submit(call("inc", 1), wait_for_worker=30)
    orchestrator = served.service.orchestrator
    watch = orchestrator.result_future

    def refuse_once(run_id: str) -> Any:
        monkeypatch.setattr(orchestrator, "result_future", watch)
        raise RuntimeError("the engine could not take the watch")

    monkeypatch.setattr(orchestrator, "result_future", refuse_once)
    connection = Connection(served.service.endpoint)
    try:
        req = connection.send("watch", run=run)
        assert not connection.wait(req, 30)["ok"]
        connection.send("watch", req, run=run)
        reply = connection.wait(req, 60)
        assert reply is not None, "the second ask was taken for one already waiting"
        assert reply["result"] == 2
    finally:
        connection.close()


def test_a_late_answer_to_a_request_done_with_is_dropped() -> None:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    router = context.socket(zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    connection = Connection(f"tcp://127.0.0.1:{port}")
    try:
        req = connection.send("watch", run="r")
        peer, _ = router.recv_multipart()
        for n in (1, 2):
            router.send_multipart([peer, protocol.reply(req, ok=True, n=n)])
        assert connection.wait(req, 30)["n"] == 1
        connection.forget(req)
        router.send_multipart([peer, protocol.reply(req, ok=True, n=3)])
        fence = connection.send("watch", run="r")
        router.recv_multipart()
        router.send_multipart([peer, protocol.reply(fence, ok=True)])
        assert connection.wait(fence, 30)["ok"]
        assert connection.wait(req, 0) is None  # neither the answer held (2) nor the one after (3)
        assert connection._early == {}  # nothing kept for requests answered, not even an empty list
    finally:
        connection.close()
        router.close(0)
        context.term()


def test_a_refusal_keeps_the_attributes_of_its_type(served: Served) -> None:
    flow = call("inc", 1)
    first = served.client.submit(flow, key="order-7", wait_for_worker=30)
    with pytest.raises(IdempotencyConflict) as refused:
        served.client.submit(call("inc", 2), key="order-7")
    assert (refused.value.key, refused.value.run) == ("order-7", first)
