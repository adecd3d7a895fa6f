"""A threads worker runs a call on the thread that owns its socket, and a long one never silences it.

Running the call there saves two hand-offs between threads per call (the W5
round trip through zmq). What must still hold, with the test as the service (a
raw ROUTER, ``FakeService``) and a real ``Worker`` in this process:

- a call runs on the socket's thread, and its outcome comes after its report;
- while that thread runs a command longer than the service's patience
  (``heartbeat_s * liveness``), the worker keeps beating, and never reconnects;
- an outcome from the pool is sent while the socket's thread is still busy;
- a stop during such a command lets it finish, and its outcome goes out;
- a call that reaches the worker after its ``bye`` is never begun: the service handed it on.

Commands wait for files the test creates, so nothing here depends on timing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.core.envelope import Envelope
from orchestrator.core.registry import Registry
from orchestrator.transport import protocol
from orchestrator.transport.protocol import Done, Hello, Signal, Started
from tests import commands
from tests.fault.zmq_peers import FakeService
from tests.support.polling import wait_until
from workers.zmq import Worker

pytestmark = pytest.mark.slow

HEARTBEAT_S = 0.05
LIVENESS = 10
"""The worker takes the service for gone after half a second unheard: the test answers every beat,
and a busy machine may leave it unread for a moment."""
SOCKET_THREAD = "worker-socket"
BEATS_WHILE_BUSY = 2 * LIVENESS
"""Heartbeats the test waits for while one command holds the socket's thread: twice what the
service would wait before taking the worker for dead."""


def where(gate: str = "") -> str:
    """The thread the command ran on, once ``gate`` exists (at once without one)."""
    if gate:
        commands.wait_for_file(gate, seconds=60.0)
    return threading.current_thread().name


class Host:
    """A real ``Worker`` on its own thread, talking to the test's ``FakeService``."""

    def __init__(self, concurrency: int) -> None:
        registry = Registry()
        registry.register("where", where)
        registry.register("ledgered", commands.ledgered)
        self.service = FakeService()
        self.worker = Worker(
            self.service.endpoint,
            registry,
            concurrency=concurrency,
            heartbeat_s=HEARTBEAT_S,
            liveness=LIVENESS,
            drain_timeout_s=30,
        )
        self.thread = threading.Thread(target=self.worker.run, name=SOCKET_THREAD, daemon=True)

    def start(self) -> None:
        self.thread.start()
        hello = self.service.next_not_heartbeat()
        assert isinstance(hello, Hello)
        self.service.send(protocol.welcome(HEARTBEAT_S, LIVENESS, go=False))

    def outcome_of(self, envelope: Envelope) -> Done:
        """The next message but heartbeats and start reports: the outcome of ``envelope``."""
        while isinstance(message := self.service.next_not_heartbeat(), Started):
            pass
        assert isinstance(message, Done), message
        assert [outcome.attempt_id for outcome in message.outcomes] == [envelope.attempt_id]
        return message

    def close(self) -> None:
        self.worker.stop()
        self.thread.join(timeout=30)
        self.service.close()


def host_of(concurrency: int) -> Iterator[Host]:
    host = Host(concurrency)
    host.start()
    try:
        yield host
    finally:
        host.close()


@pytest.fixture
def one_slot() -> Iterator[Host]:
    yield from host_of(1)


@pytest.fixture
def two_slots() -> Iterator[Host]:
    yield from host_of(2)


def call(node: str, gate: Path | None = None) -> Envelope:
    return Envelope("run-1", node, 1, "where", [str(gate)] if gate else [], {})


def test_a_call_runs_on_the_thread_that_owns_the_socket(one_slot: Host) -> None:
    for index in range(3):
        item = call(f"n.{index}")
        one_slot.service.send(protocol.calls([item]))
        assert one_slot.service.next_not_heartbeat() == Started([item.attempt_id])
        done = one_slot.outcome_of(item)
        assert done.outcomes[0].ok and done.outcomes[0].result == SOCKET_THREAD


def test_each_next_report_rides_on_the_outcome_before_it(one_slot: Host) -> None:
    """Prefetched calls on one slot: one message per call, not a report and an outcome apart."""
    items = [call(f"n.{index}") for index in range(3)]
    one_slot.service.send(protocol.calls(items))
    assert one_slot.service.next_not_heartbeat() == Started([items[0].attempt_id])
    for index, item in enumerate(items):
        done = one_slot.service.next_not_heartbeat()
        assert isinstance(done, Done) and [o.attempt_id for o in done.outcomes] == [item.attempt_id]
        assert done.started == [following.attempt_id for following in items[index + 1 : index + 2]]


def test_a_long_command_on_the_socket_thread_never_silences_the_worker(
    one_slot: Host, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    item = call("long", gate)
    one_slot.service.send(protocol.calls([item]))
    assert one_slot.service.next_not_heartbeat() == Started([item.attempt_id])
    try:
        for _ in range(BEATS_WHILE_BUSY):
            message = one_slot.service.receive()
            assert message == Signal("hb"), f"the worker sent {message} while its command ran"
    finally:
        gate.touch()
    done = one_slot.outcome_of(item)
    assert done.outcomes[0].ok and done.outcomes[0].result == SOCKET_THREAD
    assert one_slot.worker.stats["reconnects"] == 0


def test_a_pool_outcome_is_sent_while_the_socket_thread_is_busy(two_slots: Host, tmp_path: Path) -> None:
    """The first call of a batch takes the socket's thread; the second, quick, runs on the pool."""
    gate = tmp_path / "gate"
    slow, quick = call("slow", gate), call("quick")
    two_slots.service.send(protocol.calls([slow, quick]))
    try:
        assert two_slots.service.next_not_heartbeat() == Started([slow.attempt_id, quick.attempt_id])
        quick_done = two_slots.outcome_of(quick)
        assert quick_done.outcomes[0].result != SOCKET_THREAD
    finally:
        gate.touch()
    slow_done = two_slots.outcome_of(slow)
    assert slow_done.outcomes[0].result == SOCKET_THREAD


def test_a_stop_during_a_command_on_the_socket_thread_lets_it_finish(one_slot: Host, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    item = call("stopped", gate)
    one_slot.service.send(protocol.calls([item]))
    assert one_slot.service.next_not_heartbeat() == Started([item.attempt_id])
    one_slot.worker.stop()
    try:
        assert one_slot.service.next_not_heartbeat() == Signal("bye")
    finally:
        gate.touch()
    done = one_slot.outcome_of(item)
    assert done.outcomes[0].ok
    one_slot.service.send(protocol.ack([item.attempt_id]))
    wait_until(lambda: not one_slot.thread.is_alive(), what="the worker returned from run() once acked")


def test_a_call_that_arrives_after_the_bye_is_left_to_the_worker_it_was_handed_to(
    one_slot: Host, tmp_path: Path
) -> None:
    """The service sent it before reading the bye, then gave it to another worker with the calls not
    reported begun; run here too, it would run twice."""
    gate, ledger = tmp_path / "gate", tmp_path / "ledger"
    item = call("stopped", gate)
    late = Envelope("run-1", "late", 1, "ledgered", [1], {"ledger": str(ledger)})
    one_slot.service.send(protocol.calls([item]))
    assert one_slot.service.next_not_heartbeat() == Started([item.attempt_id])
    one_slot.worker.stop()
    try:
        assert one_slot.service.next_not_heartbeat() == Signal("bye")
        one_slot.service.send(protocol.calls([late]))
    finally:
        gate.touch()
    done = one_slot.service.next_not_heartbeat()
    assert isinstance(done, Done) and [o.attempt_id for o in done.outcomes] == [item.attempt_id]
    assert not done.started, "the late call was reported begun"
    one_slot.service.send(protocol.ack([item.attempt_id]))
    wait_until(lambda: not one_slot.thread.is_alive(), what="the worker returned from run() once acked")
    assert commands.ledger_read(str(ledger)) == []
