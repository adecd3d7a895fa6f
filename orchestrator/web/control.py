"""``POST /api/v1/runs/RUN/cancel``, ``/retry`` and ``/resume``: who carries them out, and the bodies.

Served only with a token, since a page may then change what runs. Two ways to
act: ``LogControl`` through the log alone, as ``evenflow cancel`` and ``retry``
do (``evenflow ui --control``; an orchestrator that owns the run notices on its
next append; an embedded home another process owns cannot be written, a 409);
``EngineControl`` through the service's own orchestrator (``serve --http``).
Only the latter resumes: driving a run takes an orchestrator with its commands.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol

from starlette.requests import Request

from ..control import cancel_run, retry_run
from ..core.errors import InvalidOption, InvalidRunState
from ..core.ports import EventStore

MAX_REASON_BYTES = 4_000


class Control(Protocol):
    def cancel(self, run: str, reason: str) -> bool:
        """True if this cancelled it, False if it was cancelled already."""

    def retry(self, run: str) -> str:
        """The id of the run that continues ``run``."""

    def resume(self, run: str) -> None:
        """Have ``run`` driven from now on (see ``Orchestrator.resume``)."""


class LogControl:
    """Appends to the log itself, opening the store writable for each request."""

    def __init__(self, writer: Callable[[], AbstractContextManager[EventStore]]) -> None:
        self.writer = writer

    def cancel(self, run: str, reason: str) -> bool:
        with self.writer() as store:
            return cancel_run(store, run, reason)

    def retry(self, run: str) -> str:
        with self.writer() as store:
            return retry_run(store, run)

    def resume(self, run: str) -> None:
        raise InvalidRunState(
            f"this page only reads and writes the log, and driving run {run} takes an orchestrator with "
            "its commands: run `evenflow resume --registry MODULE:REGISTRY` where they are, or serve the "
            "pages from the service (`evenflow serve --http`) and resume there"
        )


class EngineControl:
    """Asks the orchestrator of the process (the service's), which logs and acts at once."""

    def __init__(self, orchestrator: Any) -> None:
        self.orchestrator = orchestrator

    def cancel(self, run: str, reason: str) -> bool:
        from ..core.errors import RunNotFound
        from ..core.evolve import fold

        events = self.orchestrator.store.read(run)
        if not events:
            raise RunNotFound(run)
        already = fold(run, events).status == "cancelled"
        self.orchestrator.cancel(run, reason)
        return not already

    def retry(self, run: str) -> str:
        return str(self.orchestrator.retry(run).id)

    def resume(self, run: str) -> None:
        self.orchestrator.resume(run)


def cancel(request: Request, control: Control, body: bytes) -> Any:
    run = request.path_params["run"]
    return {"run": run, "cancelled": control.cancel(run, _reason(body))}


def retry(request: Request, control: Control, body: bytes) -> Any:
    run = request.path_params["run"]
    return {"run": control.retry(run), "retry_of": run}


def resume(request: Request, control: Control, body: bytes) -> Any:
    run = request.path_params["run"]
    control.resume(run)
    return {"run": run, "resumed": True}


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
