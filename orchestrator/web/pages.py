"""The pages and the live stream a run's page listens to.

Pages are static files (``static/``) that draw what the API answers; they hold
no data, so they are served without the token, and their scripts send it.
A run's page listens to ``/api/v1/runs/RUN/stream`` (server-sent events): one
``changed`` event each time the run's log grows, ``ended`` once it has ended.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from ..core.errors import RunNotFound
from ..core.state import TERMINAL
from ..json_text import to_json
from .api import Reader, last_seq

STATIC = Path(__file__).with_name("static")
POLL_S = 0.25
"""How often a stream looks at the log: the page lags the log by at most this much."""
STREAM_S = 6 * 3600.0
"""A stream ends after this long even if the run has not; the page opens a new one."""
PAGES = frozenset({"/", "/runs", "/stats", "/workers"})
"""Pages that hold no data, served without the token (as are ``/runs/RUN`` and ``/static/FILE``)."""


def routes(reader: Reader) -> list[BaseRoute]:
    return [
        Route("/", lambda request: RedirectResponse("/runs")),
        Route("/runs", _page("runs.html")),
        Route("/runs/{run}", _page("run.html")),
        Route("/stats", _page("stats.html")),
        Route("/workers", _page("workers.html")),
        Route("/api/v1/runs/{run}/stream", _stream(reader)),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]


def is_public(path: str) -> bool:
    """Exactly the pages and their static files: a run's page is ``/runs/`` and one segment."""
    parts = path.split("/")
    if path in PAGES:
        return True
    if len(parts) == 3 and parts[1] == "runs":
        return bool(parts[2]) and parts[2] not in (".", "..")
    return len(parts) == 3 and parts[1] == "static" and bool(parts[2]) and parts[2] not in (".", "..")


def _page(name: str) -> Any:
    async def page(request: Request) -> Response:
        return FileResponse(STATIC / name, media_type="text/html")

    return page


def _stream(reader: Reader) -> Any:
    async def stream(request: Request) -> Response:
        if await run_in_threadpool(last_seq, reader, request.path_params["run"]) is None:
            missing = str(RunNotFound(request.path_params["run"]))
            return Response(to_json({"error": missing}, indent=None), 404, media_type="application/json")
        return StreamingResponse(_changes(request, reader), media_type="text/event-stream")

    return stream


async def _changes(request: Request, reader: Reader) -> AsyncIterator[str]:
    run = request.path_params["run"]
    seen: tuple[int, str] | None = None
    for _ in range(int(STREAM_S / POLL_S)):
        if await request.is_disconnected() or _stopping(request):
            return
        now = await run_in_threadpool(last_seq, reader, run)
        if now is not None and now != seen:
            seen = now
            yield f"event: changed\ndata: {to_json({'last_seq': now[0], 'state': now[1]}, indent=None)}\n\n"
            if now[1] in TERMINAL:
                yield "event: ended\ndata: {}\n\n"
                return
        await asyncio.sleep(POLL_S)


def _stopping(request: Request) -> bool:
    """The server is shutting down (``HttpServer.stop`` sets this): a stream ends rather than hold it."""
    return bool(getattr(request.app.state, "stopping", False))
