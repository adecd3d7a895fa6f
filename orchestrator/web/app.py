"""The Starlette application: routes, the token check, and errors as JSON.

Handlers are plain functions run in Starlette's thread pool (the stores are
synchronous); each request opens what it reads through ``reader`` and closes it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..core.errors import EvenflowError, RunNotFound
from ..json_text import to_json
from . import api, pages
from .api import BadParameter, Reader
from .guard import allowed
from .metrics import LogCollector
from .openapi import document

Handler = Callable[[Request, Reader], Any]


def make_app(reader: Reader, *, token: str | None = None) -> Starlette:
    """The API over what ``reader`` opens; with ``token``, every request must carry it."""
    metrics = CollectorRegistry(auto_describe=False)
    metrics.register(LogCollector(reader))
    routes = [
        Route("/api/v1/runs", _answer(api.runs, reader)),
        Route("/api/v1/runs/{run}", _answer(api.run, reader)),
        Route("/api/v1/runs/{run}/events", _answer(api.events, reader)),
        Route("/api/v1/runs/{run}/graph", _answer(api.graph, reader)),
        Route("/api/v1/stats", _answer(api.stats, reader)),
        Route("/api/v1/failures", _answer(api.failures, reader)),
        Route("/api/v1/throughput", _answer(api.throughput, reader)),
        Route("/api/v1/workers", _answer(api.workers, reader)),
        Route("/api/v1/openapi.json", _answer(lambda request, reader: document(), reader)),
        Route("/metrics", _metrics(metrics)),
        *pages.routes(reader),
    ]
    return Starlette(routes=routes, middleware=[Middleware(_TokenCheck, token=token)])


def json_response(value: Any, status: int = 200) -> Response:
    return Response(to_json(value, indent=None), status_code=status, media_type="application/json")


def _answer(handler: Handler, reader: Reader) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            return json_response(await run_in_threadpool(handler, request, reader))
        except BadParameter as exc:
            return json_response({"error": str(exc), "parameter": exc.parameter}, 400)
        except RunNotFound as exc:
            return json_response({"error": str(exc)}, 404)
        except EvenflowError as exc:
            return json_response({"error": str(exc)}, 503)

    return endpoint


def _metrics(registry: CollectorRegistry) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        body = await run_in_threadpool(generate_latest, registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return endpoint


class _TokenCheck(BaseHTTPMiddleware):
    def __init__(self, app: Any, token: str | None) -> None:
        super().__init__(app)
        self.token = token

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        if not pages.is_public(request.url.path) and not allowed(
            request.headers.get("authorization"), self.token
        ):
            error = "this server needs its token: send 'Authorization: Bearer <token>' (see --token-file)"
            return json_response({"error": error}, 401)
        return await call_next(request)
