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
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..core.errors import (
    ConcurrencyConflict,
    ConfigurationError,
    EvenflowError,
    InvalidOption,
    InvalidRunState,
    RunNotFound,
    RunParked,
    StoreLocked,
)
from ..json_text import to_json
from . import api, pages
from . import control as web_control
from .api import BadParameter, Reader
from .control import Control
from .guard import LOOPBACK_HOSTS, allowed
from .metrics import Live, LiveCollector, LogCollector
from .openapi import document

Handler = Callable[[Request, Reader], Any]


def make_app(
    reader: Reader,
    *,
    token: str | None = None,
    control: Control | None = None,
    live: Callable[[], Live] | None = None,
) -> Starlette:
    """The API over what ``reader`` opens; with ``token``, every request must carry it. With ``control``
    (which needs a token) runs may be cancelled, retried and resumed too; with ``live``, ``/metrics`` adds the
    service's own figures."""
    if control is not None and token is None:
        raise ConfigurationError(
            "control (cancel, retry, resume) needs a token: give --token-file with --control"
        )
    metrics = CollectorRegistry(auto_describe=False)
    metrics.register(LogCollector(reader))
    if live is not None:
        metrics.register(LiveCollector(live))
    routes = [
        Route("/api/v1/runs", _answer(api.runs, reader)),
        Route("/api/v1/runs/{run}", _answer(api.run, reader)),
        Route("/api/v1/runs/{run}/events", _answer(api.events, reader)),
        Route("/api/v1/runs/{run}/graph", _answer(api.graph, reader)),
        Route("/api/v1/stats", _answer(api.stats, reader)),
        Route("/api/v1/failures", _answer(api.failures, reader)),
        Route("/api/v1/throughput", _answer(api.throughput, reader)),
        Route("/api/v1/workers", _answer(api.workers, reader)),
        Route("/api/v1/listeners", _answer(api.listeners, reader)),
        Route("/api/v1/openapi.json", _answer(lambda request, reader: document(), reader)),
        Route("/api/v1", _answer(lambda request, reader: {"control": control is not None}, reader)),
        *(_control_routes(control) if control is not None else []),
        Route("/metrics", _metrics(metrics)),
        *pages.routes(reader),
    ]
    middleware = [Middleware(_TokenCheck, token=token)]
    if token is None:  # only a loopback name may reach it: no page elsewhere rebinds its name to us
        middleware.insert(0, Middleware(TrustedHostMiddleware, allowed_hosts=list(LOOPBACK_HOSTS)))
    return Starlette(routes=routes, middleware=middleware)


def json_response(value: Any, status: int = 200) -> Response:
    return Response(to_json(value, indent=None), status_code=status, media_type="application/json")


def _answer(handler: Handler, reader: Any) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            return json_response(await run_in_threadpool(handler, request, reader))
        except BadParameter as exc:
            return json_response({"error": str(exc), "parameter": exc.parameter}, 400)
        except RunNotFound as exc:
            return json_response({"error": str(exc)}, 404)
        except InvalidOption as exc:
            return json_response({"error": str(exc)}, 400)
        except (InvalidRunState, RunParked, ConcurrencyConflict, StoreLocked) as exc:
            return json_response({"error": _conflict(exc)}, 409)
        except EvenflowError as exc:
            return json_response({"error": str(exc)}, 503)

    return endpoint


def _conflict(exc: Exception) -> str:
    if isinstance(exc, StoreLocked):
        return (
            f"process {exc.pid} owns the embedded store in {exc.home}; cancel or retry through its "
            "service (evenflow cancel/retry --connect ENDPOINT) or stop it first"
        )
    return str(exc)


def _control_routes(acting: Control) -> list[Route]:
    def route(action: str, handler: Callable[[Request, Control, bytes], Any]) -> Route:
        async def endpoint(request: Request) -> Response:
            if int(request.headers.get("content-length") or 0) > web_control.MAX_REASON_BYTES:
                error = f"the request body is over {web_control.MAX_REASON_BYTES} bytes"
                return json_response({"error": error}, 413)
            body = await request.body()
            return await _answer(lambda request, _: handler(request, acting, body), None)(request)

        return Route(f"/api/v1/runs/{{run}}/{action}", endpoint, methods=["POST"])

    return [route(action, getattr(web_control, action)) for action in ("cancel", "retry", "resume")]


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
