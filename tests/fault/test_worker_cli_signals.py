"""``evenflow worker`` hears SIGTERM while a command is deep in one C call.

A threads worker runs calls on its socket's thread, and Python runs signal handlers on the main
thread only, between bytecodes. The CLI runs the worker off the main thread, so its stop (the
``bye`` that keeps new calls away) does not wait for the command to come back from C. The command
waits in a C call that no signal ends until the test opens its gate, which the test does only once
the ``bye`` has come: on the main thread, the stop would wait for the gate and the bye never come.
The test is the service (a raw ROUTER) and reads what the worker sends.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from orchestrator.core.envelope import Envelope
from orchestrator.transport import protocol
from orchestrator.transport.protocol import Done, FromPeer, Hello, Signal, Started
from tests.fault.zmq_peers import FakeService
from tests.support.polling import DEADLINE_S, wait_until
from tests.support.zmq_cluster import worker

pytestmark = pytest.mark.slow

HEARTBEAT_S = 0.2
EXIT_SIGTERM = 143
REGISTRY = "tests.support.zmq_cluster:held"


def next_not_heartbeat(service: FakeService, within_s: float = DEADLINE_S) -> FromPeer | None:
    """The next message but heartbeats (which a worker keeps sending) within ``within_s``, or None."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        message = service.receive()
        if message != Signal("hb"):
            return message
    return None


def test_sigterm_is_heard_while_a_command_waits_in_a_c_call(tmp_path: Path) -> None:
    service = FakeService(wait_s=DEADLINE_S)
    marker, gate = tmp_path / "begun", tmp_path / "gate"
    item = Envelope("run-1", "held", 1, "held_in_c", [str(marker), str(gate)], {})
    try:
        with worker(service.endpoint, tmp_path, registry=REGISTRY, heartbeat_s=HEARTBEAT_S) as proc:
            assert isinstance(service.next_not_heartbeat(), Hello)
            service.send(protocol.welcome(HEARTBEAT_S, 10, go=False))
            service.send(protocol.calls([item]))
            assert service.next_not_heartbeat() == Started([item.attempt_id])
            wait_until(marker.exists, what="the command began")
            proc.signal(signal.SIGTERM)
            assert next_not_heartbeat(service) == Signal("bye"), "the stop waited for the command"
            gate.touch()
            done = next_not_heartbeat(service)
            assert isinstance(done, Done) and done.outcomes[0].result == "released"
            service.send(protocol.ack([item.attempt_id]))
            wait_until(lambda: proc.popen.poll() is not None, what="the worker exited once acked")
            assert proc.popen.returncode == EXIT_SIGTERM, proc.output()
    finally:
        gate.touch()
        service.close()
