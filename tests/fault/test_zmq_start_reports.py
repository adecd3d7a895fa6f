"""A worker begins a call only once the service has its ``started`` report: the report must not be
outrun by the command it announces.

The bug this pins: the worker handed ``started`` to its socket and began the
command at once (its wait for ZeroMQ to have written the report was a no-op:
pyzmq copies a message under 64 KiB and hands back a tracker that is already
done). ZeroMQ writes from its own thread, later; a command that SIGKILLs its
worker (or a busy machine) left the report, and the outcomes sent just before
it, unsent. The service then took the call for one never started and handed it
on as the same attempt: with one worker, it waited out the schedule timeout (a
fan-out in the executor contract got no outcome for 60 s); with several, a
poison killed the next worker uncounted, and innocents that had run there ran
again. A worker started with ``confirm_starts`` (``evenflow worker
--confirm-starts``) now asks the service to answer each report with ``go`` and
begins only then; that costs a round trip a call (half the throughput of tiny
calls in ``bench/run.py``), so it is off by default, and a worker without it
keeps the old, at-least-once behaviour.

Here the test is the service: a raw ROUTER speaking the protocol to a real
``Worker`` (threads, in this process), so it decides when ``go`` goes out, and
checks what the worker does meanwhile through the messages it sends.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from orchestrator.core.envelope import Envelope
from orchestrator.core.registry import Registry
from orchestrator.transport import protocol
from orchestrator.transport.protocol import Done, Hello, Signal, Started
from tests.fault.zmq_peers import FakeService, RawPeer, forged_done
from tests.support.polling import wait_until
from workers.zmq import Worker, ZmqExecutor

pytestmark = pytest.mark.slow

HEARTBEAT_S = 0.2
WAIT_S = 30.0
QUIET_BEATS = 3
"""Heartbeats the worker sends after its report while the test holds ``go`` back: with the bug its
command ran (and its outcome came) in a fraction of one."""


@dataclass
class Gates:
    """What the commands see: whether the test had sent ``go`` when each began."""

    go_sent: set[str] = field(default_factory=set)
    began: list[tuple[str, bool]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def registry(self) -> Registry:
        registry = Registry()

        def probe(name: str) -> bool:
            with self.lock:
                confirmed = name in self.go_sent
                self.began.append((name, confirmed))
            return confirmed

        registry.register("probe", probe)
        return registry


def call(name: str) -> Envelope:
    return Envelope("run-1", name, 1, "probe", [name], {})


@pytest.fixture
def gates() -> Gates:
    return Gates()


@pytest.fixture
def service(gates: Gates) -> Iterator[FakeService]:
    fake = FakeService()
    worker = Worker(
        fake.endpoint,
        gates.registry(),
        concurrency=1,
        prefetch=4,
        heartbeat_s=HEARTBEAT_S,
        drain_timeout_s=5,
        confirm_starts=True,
    )
    thread = threading.Thread(target=worker.run, name="worker-under-test", daemon=True)
    thread.start()
    try:
        hello = fake.next_not_heartbeat()
        assert isinstance(hello, Hello) and hello.starts and hello.go, "the worker does not wait for go"
        fake.send(protocol.welcome(HEARTBEAT_S, 3, go=True))
        yield fake
    finally:
        worker.stop()
        thread.join(timeout=30)
        fake.close()


def go(service: FakeService, gates: Gates, item: Envelope) -> None:
    """Tell the worker it may begin ``item``; from now on the command sees its go as sent."""
    with gates.lock:
        gates.go_sent.add(item.node)
    service.send(protocol.go([item.attempt_id]))


def test_a_reported_call_begins_only_after_its_go(service: FakeService, gates: Gates) -> None:
    first = call("r.0")
    service.send(protocol.calls([first]))
    report = service.next_not_heartbeat()
    assert report == Started([first.attempt_id])
    for _ in range(QUIET_BEATS):  # held back: the worker only beats, its command has not begun
        message = service.receive()
        assert message == Signal("hb"), f"the worker ran {first.attempt_id} before its go: {message}"
    assert gates.began == []
    go(service, gates, first)
    done = service.next_not_heartbeat()
    assert isinstance(done, Done) and [o.attempt_id for o in done.outcomes] == [first.attempt_id]
    assert done.outcomes[0].ok and done.outcomes[0].result is True
    assert gates.began == [("r.0", True)]


def test_every_call_in_a_stream_begins_after_its_go_and_one_slot_runs_at_a_time(
    service: FakeService, gates: Gates
) -> None:
    """Four prefetched calls, one slot: each is reported alone, after the previous outcome."""
    calls = [call(f"r.{i}") for i in range(4)]
    service.send(protocol.calls(calls))
    for item in calls:
        assert service.next_not_heartbeat() == Started([item.attempt_id])
        go(service, gates, item)
        done = service.next_not_heartbeat()
        assert isinstance(done, Done) and [o.attempt_id for o in done.outcomes] == [item.attempt_id]
    assert gates.began == [(item.node, True) for item in calls]


def test_a_refused_report_frees_its_slot_for_the_next_call(service: FakeService, gates: Gates) -> None:
    """The service no longer holds the call (handed on): the worker drops it, runs nothing of it, and
    reports the next call in its slot."""
    handed_on, kept = call("r.0"), call("r.1")
    service.send(protocol.calls([handed_on, kept]))
    assert service.next_not_heartbeat() == Started([handed_on.attempt_id])
    service.send(protocol.go([], [handed_on.attempt_id]))
    assert service.next_not_heartbeat() == Started([kept.attempt_id])
    go(service, gates, kept)
    done = service.next_not_heartbeat()
    assert isinstance(done, Done) and [o.attempt_id for o in done.outcomes] == [kept.attempt_id]
    assert gates.began == [("r.1", True)]


def test_a_report_left_unanswered_by_a_service_that_forgot_the_worker_holds_no_slot(
    service: FakeService, gates: Gates
) -> None:
    """Reset before the go: the service forgot the worker (and handed the call on). After the fresh
    hello and welcome the reported call is dropped, never run, and the slot takes a new call."""
    forgotten, fresh = call("r.0"), call("r.1")
    service.send(protocol.calls([forgotten]))
    assert service.next_not_heartbeat() == Started([forgotten.attempt_id])
    service.send(protocol.reset("this service does not know you; say hello again"))
    hello = service.next_not_heartbeat()
    assert isinstance(hello, Hello) and hello.go
    service.send(protocol.welcome(HEARTBEAT_S, 3, go=True))
    service.send(protocol.calls([fresh]))
    assert service.next_not_heartbeat() == Started([fresh.attempt_id])
    go(service, gates, fresh)
    done = service.next_not_heartbeat()
    assert isinstance(done, Done) and [o.attempt_id for o in done.outcomes] == [fresh.attempt_id]
    assert gates.began == [("r.1", True)]


# --- the service's side ---------------------------------------------------------------------


@pytest.fixture
def executor(gates: Gates) -> Iterator[ZmqExecutor]:
    """A ``ZmqExecutor`` whose workers are raw peers played by the test."""
    zmq_executor = ZmqExecutor("tcp://127.0.0.1:0", heartbeat_s=5.0, schedule_timeout_s=60.0)
    zmq_executor.start(gates.registry(), lambda outcome: None)
    try:
        yield zmq_executor
    finally:
        zmq_executor.close()


def joined(executor: ZmqExecutor, *, go: bool) -> RawPeer:
    peer = RawPeer(executor.endpoint)
    peer.send(protocol.hello("raw", ["probe"], [], 1, "s", go=go))
    welcome = peer.replies(WAIT_S, until=1)
    assert welcome and welcome[0]["t"] == "welcome" and welcome[0].get("go") is True
    return peer


def next_of(peer: RawPeer, kind: str) -> dict[str, Any]:
    """The next message of type ``kind``; any other type before it (bar heartbeats) fails."""
    while replies := peer.replies(WAIT_S, until=1):
        if replies[0]["t"] == kind:
            return replies[0]
        assert replies[0]["t"] == "hb", f"{replies[0]} before a {kind!r}"
    raise AssertionError(f"no {kind!r} within {WAIT_S:g}s")


def test_the_service_answers_a_report_with_go_for_the_calls_it_holds_there(executor: ZmqExecutor) -> None:
    with joined(executor, go=True) as peer:
        item = call("r.0")
        executor.dispatch([item])
        assert [doc["node"] for doc in next_of(peer, "call")["envelopes"]] == ["r.0"]
        peer.send(protocol.started([item.attempt_id, "run-1/elsewhere#1"]))
        assert next_of(peer, "go") == {"t": "go", "ids": [item.attempt_id], "refused": ["run-1/elsewhere#1"]}


def test_a_worker_that_does_not_wait_for_go_is_sent_none(executor: ZmqExecutor) -> None:
    """An older worker would drop an unknown message with a warning: it reports, and is not answered."""
    with joined(executor, go=False) as peer:
        first, second = call("r.0"), call("r.1")
        executor.dispatch([first, second])  # one slot: the second waits for the first's outcome
        next_of(peer, "call")
        peer.send(protocol.started([first.attempt_id]))
        peer.send(forged_done("run-1", "r.0", 1))
        assert [doc["node"] for doc in next_of(peer, "call")["envelopes"]] == ["r.1"]


def test_calls_reported_begun_on_a_done_stay_with_a_worker_that_says_bye(executor: ZmqExecutor) -> None:
    """A report riding on an outcome counts as one sent alone: at the bye the service hands on only
    the call that had not begun, and the next worker is sent that one, not the one begun."""
    first, begun, waiting = call("r.0"), call("r.1"), call("r.2")
    with RawPeer(executor.endpoint) as peer:
        peer.send(protocol.hello("raw", ["probe"], [], 2, "s", go=False))
        assert peer.replies(WAIT_S, until=1)[0].get("starts_in_done") is True
        executor.dispatch([first, begun, waiting])  # two slots: the third waits at the service
        assert [doc["node"] for doc in next_of(peer, "call")["envelopes"]] == ["r.0", "r.1"]
        peer.send(protocol.started([first.attempt_id]))
        peer.send(forged_done("run-1", "r.0", 1, started=[begun.attempt_id]))
        assert [doc["node"] for doc in next_of(peer, "call")["envelopes"]] == ["r.2"]
        peer.send(protocol.signal("bye"))
        with RawPeer(executor.endpoint) as other:
            other.send(protocol.hello("other", ["probe"], [], 2, "t", go=False))
            next_of(other, "welcome")
            assert [doc["node"] for doc in next_of(other, "call")["envelopes"]] == ["r.2"]


def test_by_default_a_worker_does_not_ask_for_go_and_begins_at_once(gates: Gates) -> None:
    fake = FakeService()
    worker = Worker(
        fake.endpoint, gates.registry(), concurrency=1, heartbeat_s=HEARTBEAT_S, drain_timeout_s=5
    )
    thread = threading.Thread(target=worker.run, name="worker-under-test", daemon=True)
    thread.start()
    try:
        hello = fake.next_not_heartbeat()
        assert isinstance(hello, Hello) and hello.starts and not hello.go
        fake.send(protocol.welcome(HEARTBEAT_S, 3, go=True))  # a service that offers go, unasked
        fake.send(protocol.calls([call("a")]))
        wait_until(lambda: gates.began, what="the call begun without a go")
        assert gates.began == [("a", False)]
    finally:
        worker.stop()
        thread.join(timeout=30)
        fake.close()
