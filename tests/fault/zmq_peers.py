"""Raw ZeroMQ peers for fault tests: a DEALER that sends whatever frames it is given.

The service must treat every peer as hostile until it says a valid hello (and,
with CURVE on, until it passes the handshake). ``RawPeer`` speaks no protocol
of its own: tests hand it junk, forged outcomes or bad hellos and watch what
the service does, through its own monitor (was it hung up on?) and the replies
it gets. ``junk_frames`` and ``bad_hellos`` are the catalogue of bad input.
``FakeService`` is the other way round: a ROUTER the test drives, to watch what
a real ``Worker`` sends.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.utils.monitor import recv_monitor_message

from orchestrator.core.envelope import Outcome
from orchestrator.transport import protocol
from orchestrator.transport.protocol import FromPeer, Signal
from orchestrator.transport.wire import MAX_MESSAGE_BYTES

SEND_TIMEOUT_S = 5.0


class FakeService:
    """A ROUTER on a free loopback port that reads the worker's messages with deadlines (and answers
    its heartbeats)."""

    def __init__(self, wait_s: float = 30.0) -> None:
        self.wait_s = wait_s
        self.context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind("tcp://127.0.0.1:0")
        self.endpoint = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self.peer = b""

    def receive(self) -> FromPeer:
        if not self.socket.poll(int(self.wait_s * 1000)):
            raise AssertionError(f"the worker sent nothing within {self.wait_s:g}s")
        self.peer, frame = self.socket.recv_multipart()
        message = protocol.from_peer(frame)
        if message == Signal("hb"):  # beat back, or the worker takes us for silent and reconnects
            self.send(protocol.signal("hb"))
        return message

    def next_not_heartbeat(self) -> FromPeer:
        while isinstance(message := self.receive(), Signal) and message.type == "hb":
            pass
        return message

    def send(self, frame: bytes) -> None:
        self.socket.send_multipart([self.peer, frame])

    def close(self) -> None:
        self.socket.close(0)
        self.context.term()


class RawPeer:
    """One DEALER connected to ``endpoint``, optionally a CURVE client with the given key files."""

    def __init__(
        self, endpoint: str, *, secret_file: Path | None = None, server_file: Path | None = None
    ) -> None:
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.socket = self._context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.SNDHWM, 0)
        self.socket.setsockopt(zmq.SNDTIMEO, int(SEND_TIMEOUT_S * 1000))
        self.socket.setsockopt(zmq.RECONNECT_IVL, 50)
        if secret_file is not None and server_file is not None:
            public, secret = zmq.auth.load_certificate(str(secret_file))
            server, _ = zmq.auth.load_certificate(str(server_file))
            self.socket.curve_publickey = public
            self.socket.curve_secretkey = secret or b""
            self.socket.curve_serverkey = server
        self._monitor = self.socket.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        self.events: list[int] = []
        self.socket.connect(endpoint)

    def send(self, *frames: bytes) -> bool:
        """One message of ``frames`` (the ROUTER adds our routing id in front); False if it could not
        even be queued within ``SEND_TIMEOUT_S``: a DEALER whose CURVE handshake was refused has no
        pipe to queue on, and would otherwise block for ever."""
        try:
            self.socket.send_multipart(list(frames))
        except zmq.Again:
            return False
        return True

    def connected(self, timeout_s: float = 10.0) -> bool:
        return self._saw(zmq.EVENT_CONNECTED, timeout_s)

    def hung_up(self, timeout_s: float = 10.0) -> bool:
        """Whether the other side closed the connection within ``timeout_s``."""
        return self._saw(zmq.EVENT_DISCONNECTED, timeout_s)

    def replies(self, timeout_s: float = 2.0, *, until: int = 1_000) -> list[dict[str, Any]]:
        """The JSON messages received within ``timeout_s`` (stops early after ``until`` of them)."""
        found: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout_s
        while len(found) < until and (left := deadline - time.monotonic()) > 0:
            if self.socket.poll(int(left * 1000) + 1, zmq.POLLIN):
                found.append(json.loads(self.socket.recv()))
        return found

    def _saw(self, event: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while event not in self.events and (left := deadline - time.monotonic()) > 0:
            if self._monitor.poll(int(left * 1000) + 1, zmq.POLLIN):
                self.events.append(recv_monitor_message(self._monitor)["event"])
        return event in self.events

    def close(self) -> None:
        self.socket.disable_monitor()
        self._monitor.close(0)
        self.socket.close(0)
        self._context.term()

    def __enter__(self) -> RawPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- bad input ---------------------------------------------------------------------------


def junk_frames(seed: int, count: int = 40) -> Iterator[bytes]:
    """Single frames the service must drop as malformed: random bytes, then JSON of the wrong shape."""
    rng = random.Random(seed)
    for _ in range(count):
        yield bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 64)))
    yield b""
    yield b"\xff\xfe{}"  # not UTF-8
    yield '{"t": "hb"}'.encode("utf-16")  # JSON, but not UTF-8
    yield b'{"t": "hb", "x": NaN}'
    yield b"[" * 100_000 + b"]" * 100_000  # nesting the decoder gives up on
    yield b'{"t": "done", "x": 1e999}'
    shapes: list[Any] = [
        [],
        "hello",
        42,
        None,
        {},
        {"t": None},
        {"t": "nope"},
        {"t": ["hello"]},
        {"t": "done"},
        {"t": "done", "outcomes": "all of them"},
        {"t": "done", "outcomes": [{"run": "r"}]},
        {"t": "done", "outcomes": [None]},
        {"t": "done", "outcomes": [{}] * (protocol.MAX_BATCH + 1)},
        {"t": "submit"},
        {"t": "watch", "req": ""},
        {"t": "watch", "req": 7},
        {"t": "call", "envelopes": []},  # a service's message, not a peer's
        {"t": "done", "outcomes": [{"$bytes": "not base64!"}]},
    ]
    for doc in shapes:
        yield json.dumps(doc).encode()


def bad_hellos() -> Iterator[bytes]:
    """Hellos with one field wrong: the service must not take the peer as a worker."""
    good: dict[str, Any] = {
        "t": "hello",
        "v": protocol.VERSION,
        "name": "intruder",
        "commands": ["ledgered_wait"],
        "queues": [],
        "slots": 4,
        "session": "s",
    }
    spoiled: list[dict[str, Any]] = [
        {"v": protocol.VERSION + 1},
        {"v": None},
        {"name": ""},
        {"name": "x" * 201},
        {"name": 5},
        {"commands": "ledgered_wait"},
        {"commands": ["not a name!"]},
        {"commands": ["ledgered_wait\n"]},
        {"commands": [f"c{i}" for i in range(protocol.MAX_COMMANDS + 1)]},
        {"queues": [None]},
        {"slots": 0},
        {"slots": -1},
        {"slots": protocol.MAX_SLOTS + 1},
        {"slots": "4"},
        {"slots": 4.0},
        {"slots": True},
        {"session": ""},
        {"session": None},
    ]
    for change in spoiled:
        yield json.dumps({**good, **change}).encode()
    yield json.dumps({key: value for key, value in good.items() if key != "session"}).encode()


def oversize_frame() -> bytes:
    """One byte over the limit: ZeroMQ itself (``MAXMSGSIZE``) must hang up on the sender."""
    return b"{" + b" " * MAX_MESSAGE_BYTES


FORGER = "intruder"
"""The ``by`` of every forged outcome, so a test can look for it in the log."""


def forged_done(
    run: str, node: str, attempt: int, result: Any = "forged", started: list[str] | None = None
) -> bytes:
    """A well-formed ``done`` claiming the attempt succeeded with ``result``, by ``FORGER``; with
    ``started``, reporting those calls begun on the same message."""
    now = datetime.now(UTC)
    outcome = Outcome(run, node, attempt, ok=True, result=result, started_at=now, finished_at=now, by=FORGER)
    return protocol.done_frames([protocol.encoded_outcome(outcome)], started)[0]
