"""A real uvicorn server on 127.0.0.1 in a thread, and a tiny HTTP client, for the API's tests."""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from tests.support.polling import wait_until


@dataclass
class Answer:
    status: int
    body: bytes
    content_type: str

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Served:
    base: str

    def get(self, path: str, token: str | None = None) -> Answer:
        return self._send(urllib.request.Request(self.base + path), token)

    def post(self, path: str, body: Any = None, token: str | None = None) -> Answer:
        data = b"" if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method="POST")
        request.add_header("Content-Type", "application/json")
        return self._send(request, token)

    def _send(self, request: urllib.request.Request, token: str | None) -> Answer:
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return Answer(response.status, response.read(), response.headers["content-type"])
        except urllib.error.HTTPError as error:
            return Answer(error.code, error.read(), error.headers["content-type"])


@contextmanager
def served(app: Any) -> Iterator[Served]:
    """``app`` served on a free port of 127.0.0.1 until the block ends."""
    import uvicorn

    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen(64)
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=3)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listening]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, what="uvicorn started")
        yield Served(f"http://127.0.0.1:{listening.getsockname()[1]}")
    finally:
        app.state.stopping = True
        server.should_exit = True
        thread.join(60)
        listening.close()
