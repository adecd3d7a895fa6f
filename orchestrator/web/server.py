"""Serving an app over HTTP with uvicorn: in the foreground (``evenflow ui``) or on a thread beside
the service (``evenflow serve --http``). The socket is bound first, so port 0 works and a busy port is
our one-line error, not uvicorn's."""

from __future__ import annotations

import socket
import threading
from typing import Any

from ..core.errors import InvalidOption

STOP_S = 3
"""How long a stopping server waits for open requests (a page's event stream) before ending them."""


def parse_bind(text: str, option: str = "--bind") -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InvalidOption(f"{option} {text!r} is not HOST:PORT, like 127.0.0.1:8765")
    return host, int(port)


class HttpServer:
    """``app`` on ``host:port`` (port 0: a free one, named by ``url``)."""

    def __init__(self, app: Any, host: str, port: int, *, option: str = "--bind") -> None:
        import uvicorn

        self.socket = _listen(host, port, option)
        bound_host, bound_port = self.socket.getsockname()[:2]
        self.url = f"http://{f'[{bound_host}]' if ':' in bound_host else bound_host}:{bound_port}"
        self.app = app
        config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=STOP_S)
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    def run(self) -> None:
        """Serve until SIGINT or SIGTERM (uvicorn's own handlers)."""
        try:
            self.server.run(sockets=[self.socket])
        finally:
            self.socket.close()

    def start(self) -> HttpServer:
        """Serve on a thread (uvicorn leaves the process's signals alone off the main thread)."""
        self._thread = threading.Thread(target=self.run, name="evenflow-http", daemon=True)
        self._thread.start()
        return self

    @property
    def serving(self) -> bool:
        """Whether its thread still runs (after ``stop``: whether stopping took longer than its timeout)."""
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        self.app.state.stopping = True  # open event streams end at their next look
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)


def _listen(host: str, port: int, option: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listening = socket.socket(family, socket.SOCK_STREAM)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listening.bind((host, port))
    except OSError as exc:
        listening.close()
        raise InvalidOption(f"{option} {host}:{port}: cannot listen there ({exc.strerror})") from None
    listening.listen(128)
    return listening
