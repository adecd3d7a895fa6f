"""``/api/v1``: what ``evenflow runs | status | audit | stats | failures | throughput | activity --json``
print, over HTTP, in the same shapes (``orchestrator.json_text``).

Each handler reads through ``query_source.Source``, as the CLI does, so both
answer from the same tables and pipelines. A bad parameter is a 400 naming it;
an unknown run a 404.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import Any

from starlette.requests import Request

from ..core.errors import InvalidOption, RunNotFound
from ..core.keys import run_for_key
from ..core.timespec import parse_moment, parse_span
from ..json_text import plain
from ..query_source import Source

Reader = Callable[[], AbstractContextManager[Source]]
"""Opens what a request reads (read-only) and closes it after."""

STATES = ("running", "succeeded", "failed", "cancelled")
MAX_LIMIT = 1_000


class BadParameter(InvalidOption):
    """A query parameter the API cannot take: answered 400, naming ``parameter``."""

    def __init__(self, parameter: str, problem: str) -> None:
        super().__init__(problem if problem.startswith(parameter) else f"{parameter}: {problem}")
        self.parameter = parameter


def runs(request: Request, reader: Reader) -> Any:
    query = request.query_params
    state = query.get("state")
    if state is not None and state not in STATES:
        raise BadParameter("state", f"{state!r} is not one of {', '.join(STATES)}")
    limit = _integer(query.get("limit", "20"), "limit", 1, MAX_LIMIT)
    since, until = _window(request)
    key = query.get("key")
    if key is not None:
        try:
            run_for_key(key)
        except InvalidOption as exc:
            raise BadParameter("key", str(exc)) from None
    names = {
        "flow": query.get("flow"),
        "command": query.get("command"),
        "error_type": query.get("error_type"),
        "key": key,
    }
    with reader() as source:
        try:
            page = source.history(
                state=state, since=since, until=until, **names, limit=limit, after=query.get("after")
            )
        except InvalidOption as exc:
            raise BadParameter("after", str(exc)) from None
    return {"runs": [plain(row) for row in page.rows], "next": page.next}


def run(request: Request, reader: Reader) -> Any:
    name = request.path_params["run"]
    with reader() as source:
        status = source.status(name)
    if status is None:
        raise RunNotFound(name)
    return plain(status)


def events(request: Request, reader: Reader) -> Any:
    from projections import audit_chain, audit_trail

    name = request.path_params["run"]
    run_only = _flag(request.query_params.get("run_only"), "run_only")
    with reader() as source:
        trail = (audit_trail if run_only else audit_chain)(source.events, name)
    if not trail:
        raise RunNotFound(name)
    return [plain(entry) for entry in trail]


def stats(request: Request, reader: Reader) -> Any:
    since, until = _window(request)
    with reader() as source:
        return [plain(row) for row in source.command_stats(since, until)]


def failures(request: Request, reader: Reader) -> Any:
    since, until = _window(request)
    with reader() as source:
        return [plain(group) for group in source.failures(since, until)]


def throughput(request: Request, reader: Reader) -> Any:
    since, until = _window(request)
    bucket = _span(request.query_params.get("bucket", "1h"), "bucket")
    completions = _flag(request.query_params.get("completions"), "completions")
    with reader() as source:
        return [plain(b) for b in source.throughput(since, until, bucket, completions=completions)]


def workers(request: Request, reader: Reader) -> Any:
    since, until = _window(request)
    with reader() as source:
        return [plain(worker) for worker in source.worker_activity(since, until)]


# --- parameters ------------------------------------------------------------------------------


def _window(request: Request) -> tuple[datetime | None, datetime | None]:
    query = request.query_params
    return _moment(query.get("since"), "since"), _moment(query.get("until"), "until")


def _moment(text: str | None, name: str) -> datetime | None:
    if text is None or text == "":
        return None
    try:
        return parse_moment(text, option=name)
    except InvalidOption as exc:
        raise BadParameter(name, str(exc)) from None


def _span(text: str, name: str) -> timedelta:
    try:
        return parse_span(text, option=name)
    except InvalidOption as exc:
        raise BadParameter(name, str(exc)) from None


def _integer(text: str, name: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise BadParameter(name, f"{text!r} is not a whole number from {low} to {high}")
    return value


def _flag(text: str | None, name: str) -> bool:
    if text is None or text.lower() in ("", "false", "0", "no"):
        return False
    if text.lower() in ("true", "1", "yes"):
        return True
    raise BadParameter(name, f"{text!r} is not true or false")


def graph(request: Request, reader: Reader) -> Any:
    from .detail import run_graph

    name = request.path_params["run"]
    with reader() as source:
        found = run_graph(name, source.store.read(name))
    if found is None:
        raise RunNotFound(name)
    return found


def last_seq(reader: Reader, run: str) -> tuple[int, str] | None:
    """How far ``run``'s log goes, and its state: what a page watching it compares."""
    with reader() as source:
        status = source.status(run)
    return None if status is None else (status.last_seq, status.state)


def listeners(request: Request, reader: Reader) -> Any:
    from ..store.checkpoints import lags

    with reader() as source:
        found = lags(source.store)
    return [plain(lag) for lag in found or ()]
