"""How pool children stream each attempt's start and outcome back as it happens: one socket per child.

The parent listens on a Unix socket in a private directory; each child of
``processes://`` connects once, as it starts, says which pool generation it
belongs to, then writes one message per event with a single ``send_bytes`` on
its own connection. Nothing is shared between children, so a child killed in
the middle of a write spoils only its own connection, whose reader sees the end
of it and drops it. One reader thread in the parent waits on every connection
(and on the listening socket) and hands each message to a callback.

``settle(generation)`` is how the parent learns it has everything: called once
every child of a generation has exited, it returns after each of their
connections (including any still in the accept backlog) was read to its end.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Client, Connection, wait

log = logging.getLogger(__name__)

UNKNOWN = -1
"""The generation of a connection whose child has not said hello yet."""

DRAIN_S = 5.0
"""How long the connections of exited children may take to reach their ends."""


class Channel:
    """The parent's end: a listening socket, and a thread handing every message to ``on_message``."""

    def __init__(self, on_message: Callable[[bytes], None]) -> None:
        self._on_message = on_message
        self._dir = tempfile.mkdtemp(prefix="evenflow-outcomes-")
        self.address = os.path.join(self._dir, "s")
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(self.address)
        self._server.listen(128)
        self._server.setblocking(False)
        self._wake_r, self._wake_w = socket.socketpair()
        self._generations: dict[Connection, int] = {}
        self._lock = threading.Lock()
        self._settling: list[tuple[int, threading.Event, list[bool]]] = []
        self._open = True
        self._thread = threading.Thread(target=self._run, name="evenflow-outcomes", daemon=True)
        self._thread.start()

    def settle(self, generation: int) -> bool:
        """Once every child of ``generation`` has exited: True when all they wrote has been handled,
        False if that could not be made sure of (then treat what is unaccounted for as lost)."""
        done, complete = threading.Event(), list[bool]()
        with self._lock:
            self._settling.append((generation, done, complete))
        self._wake()
        return done.wait(DRAIN_S * 2) and all(complete)

    def close(self, timeout_s: float = 5.0) -> None:
        self._open = False
        self._wake()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout_s)
        for conn in list(self._generations):
            conn.close()
        for sock in (self._server, self._wake_r, self._wake_w):
            sock.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def _run(self) -> None:
        while self._open:
            for ready in wait([self._wake_r, self._server, *self._generations]):
                if ready is self._wake_r:
                    self._wake_r.recv(4096)
                elif ready is self._server:
                    self._accept()
                elif isinstance(ready, Connection):
                    self._read(ready)
            self._answer_settles()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._server.accept()
            except (BlockingIOError, OSError):
                return
            sock.setblocking(True)
            self._generations[Connection(sock.detach())] = UNKNOWN

    def _read(self, conn: Connection) -> None:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):  # the child is gone; a message it was writing died with it
            del self._generations[conn]
            conn.close()
            return
        if self._generations[conn] == UNKNOWN:
            self._generations[conn] = int(data)
            return
        try:
            self._on_message(data)
        except Exception:
            log.exception("handling a message from a worker process failed")

    def _answer_settles(self) -> None:
        with self._lock:
            settling, self._settling = self._settling, []
        for generation, done, complete in settling:
            complete.append(self._drain(generation))
            done.set()

    def _drain(self, generation: int) -> bool:
        """Read ``generation``'s connections (its children have exited) to their ends; False if some
        stayed open (a process the child forked may hold one), so what they hold is unknown."""
        self._accept()
        deadline = time.monotonic() + DRAIN_S
        while mine := [c for c, g in self._generations.items() if g in (generation, UNKNOWN)]:
            ready = wait(mine, timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                return False
            for conn in ready:
                if isinstance(conn, Connection):
                    self._read(conn)
        return True


def connect(address: str, generation: int) -> Connection:
    """In a child: this child's own connection to the parent, introduced with its generation."""
    conn = Client(address, family="AF_UNIX")
    conn.send_bytes(str(generation).encode())
    return conn


def send(conn: Connection, message: bytes) -> None:
    """One message as one ``send_bytes``: the only writer of ``conn`` is this child's main thread."""
    conn.send_bytes(message)
