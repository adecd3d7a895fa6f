"""``POST /api/v1/runs/RUN/cancel`` and ``/retry``: control through the log alone, as the CLI does.

Served only with ``--control``, which needs a token: a page may change what
runs. Each request opens the store writable for just that append
(``orchestrator.control``); an orchestrator that owns the run notices on its
next append. An embedded home another process owns cannot be written: that
is a 409 saying to act through its service instead.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from starlette.requests import Request

from ..control import cancel_run, retry_run
from ..core.errors import InvalidOption
from ..core.ports import EventStore

Writer = Callable[[], AbstractContextManager[EventStore]]
"""Opens the store writable for one control request and closes it after."""

MAX_REASON_BYTES = 4_000


def cancel(request: Request, writer: Writer, body: bytes) -> Any:
    run = request.path_params["run"]
    reason = _reason(body)
    with writer() as store:
        fresh = cancel_run(store, run, reason)
    return {"run": run, "cancelled": fresh}


def retry(request: Request, writer: Writer, body: bytes) -> Any:
    run = request.path_params["run"]
    with writer() as store:
        new = retry_run(store, run)
    return {"run": new, "retry_of": run}


def _reason(body: bytes) -> str:
    if not body.strip():
        return "cancelled from the web page"
    if len(body) > MAX_REASON_BYTES:
        raise InvalidOption(f'the request body is over {MAX_REASON_BYTES} bytes; send {{"reason": TEXT}}')
    try:
        reason = json.loads(body).get("reason")
    except (ValueError, AttributeError):
        reason = None
    if not isinstance(reason, str) or not reason:
        raise InvalidOption('send a JSON body {"reason": TEXT}, or none')
    return reason
