"""A client's connection to the service: requests out, replies matched back by request id.

One DEALER socket, used under a lock so a ``Client`` may be shared by threads.
Replies for other requests that arrive while one is awaited are kept for
their own waiter.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from typing import Any

import zmq

from orchestrator.core.errors import PayloadError, ProtocolError

from . import protocol
from .security import ClientKeys
from .wire import MAX_MESSAGE_BYTES, loads

FORGOTTEN = 1_024
"""How many requests done with a connection remembers, to drop their late replies."""


class Connection:
    def __init__(self, endpoint: str, *, keys: ClientKeys | None = None) -> None:
        self.endpoint = endpoint
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._socket = self._context.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        if keys is not None:
            keys.apply(self._socket)
        self._socket.connect(endpoint)
        self._lock = threading.Lock()
        self._early: dict[str, list[dict[str, Any]]] = {}
        self._forgotten: OrderedDict[str, None] = OrderedDict()
        """The latest requests done with, whose late replies are dropped, not kept for nobody."""

    def send(self, kind: str, req: str | None = None, **body: Any) -> str:
        """Send one request; returns its id, which its replies carry."""
        req = req or uuid.uuid4().hex
        frame = protocol.request(kind, req, **body)
        if len(frame) > MAX_MESSAGE_BYTES:  # the service would drop it unread: say so here instead
            raise PayloadError(
                f"this {kind} request is {len(frame):,} bytes as JSON, over the {MAX_MESSAGE_BYTES:,} bytes "
                "one message to the service may hold; pass large data by reference (a path, a URL, a key), "
                "or split the work into several runs"
            )
        with self._lock:
            self._socket.send(frame)
        return req

    def wait(self, req: str, timeout: float) -> dict[str, Any] | None:
        """The next reply to ``req``, or None if none came within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                kept = self._early.get(req)
                if kept:
                    reply = kept.pop(0)
                    if not kept:
                        del self._early[req]
                    return reply
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                if self._socket.poll(int(min(left, 0.1) * 1000) + 1, zmq.POLLIN):
                    self._take()

    def _take(self) -> None:
        try:
            doc = loads(self._socket.recv(zmq.NOBLOCK))
        except (zmq.Again, ProtocolError):
            return
        req = doc.get("req") if isinstance(doc, dict) and doc.get("t") == "reply" else None
        if isinstance(req, str) and req not in self._forgotten:
            self._early.setdefault(req, []).append(doc)

    def forget(self, req: str) -> None:
        """``req`` is done with: drop the replies it still holds and, from now on, those that arrive."""
        with self._lock:
            self._early.pop(req, None)
            self._forgotten[req] = None
            if len(self._forgotten) > FORGOTTEN:
                self._forgotten.popitem(last=False)

    def close(self) -> None:
        self._socket.close(0)
        self._context.term()
