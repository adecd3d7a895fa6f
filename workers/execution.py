"""Running one envelope: the only place a command is called, for every executor.

``execute`` (sync) and ``execute_async`` share everything but the call itself,
written once as the steps of ``attempt``: resolve the name, refuse an attempt
already past its deadline, set the call context, turn the return value into a
result or an expansion, and turn every exception into error info. Neither
raises for anything a command does; only ``KeyboardInterrupt`` (and, on the
async path, cancellation) passes through, so a command calling ``sys.exit``
fails its attempt instead of killing a worker.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import traceback
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from orchestrator.core.codec import check_payload
from orchestrator.core.context import CallContext, Emitted, calling
from orchestrator.core.envelope import (
    EndReason,
    Envelope,
    ErrorInfo,
    Outcome,
    now_precise,
)
from orchestrator.core.errors import CommandTimeout, UnknownCommand
from orchestrator.core.flows import encode_flow, is_flow
from orchestrator.core.registry import Registry
from orchestrator.core.stepping import ASYNC_PASSES, SYNC_PASSES, drive, drive_async

PLAIN_DATA = "None, bool, int, float, str, bytes, list, dict or a UTC datetime"


def execute(registry: Registry, envelope: Envelope, *, by: str) -> Outcome:
    """Run one attempt to completion in this thread; awaitables run in a fresh event loop."""
    steps = attempt(registry, envelope, by=by, passes=SYNC_PASSES)
    return drive(steps, lambda fn: call_sync(fn, envelope.args, envelope.kwargs))


async def execute_async(registry: Registry, envelope: Envelope, *, by: str) -> Outcome:
    """Run one attempt on the running loop; sync callables go to the loop's default thread pool."""
    steps = attempt(registry, envelope, by=by, passes=ASYNC_PASSES)
    return await drive_async(steps, lambda fn: call_async(fn, envelope.args, envelope.kwargs))


def attempt(
    registry: Registry, envelope: Envelope, *, by: str, passes: tuple[type[BaseException], ...]
) -> Generator[Callable[..., Any], Any, Outcome]:
    """One attempt's steps, for both faces: yields the command to call, receives what it returned
    (or has what it raised thrown in) and returns the outcome. Only ``passes`` escapes."""
    started = now_precise()
    target = resolve(registry, envelope, by=by, now=started)
    if isinstance(target, Outcome):
        return target
    emitted = Emitted()
    try:
        with calling(call_context(envelope)) as emitted:
            value = yield target
    except passes:
        raise
    except BaseException as exc:  # SystemExit too: a command must not end its worker
        return with_events(
            failed(envelope, exc, by=by, started_at=started, tb=traceback.format_exc()), emitted
        )
    return with_events(settle(envelope, value, by=by, started_at=started), emitted)


def resolve(
    registry: Registry, envelope: Envelope, *, by: str, now: datetime
) -> Callable[..., Any] | Outcome:
    """The callable to run, or the outcome of an attempt that must not run (unknown, expired).

    Such an outcome has no ``started_at``: nothing was executed.
    """
    try:
        fn = registry.get(envelope.command, path=envelope.node).fn
    except UnknownCommand as exc:
        return failed(envelope, exc, by=by)
    if envelope.deadline is not None and seconds_until(envelope.deadline, now) <= 0:
        return timed_out(envelope, by=by, started_at=None, when="before it started")
    return fn


def with_events(outcome: Outcome, emitted: Emitted) -> Outcome:
    """The outcome carrying what the command emitted, success or failure alike."""
    return replace(outcome, events=tuple(emitted)) if emitted else outcome


def call_context(envelope: Envelope) -> CallContext:
    key = envelope.key or f"{envelope.run}/{envelope.node}"
    return CallContext(envelope.run, envelope.node, envelope.attempt, envelope.command, key)


async def call_async(fn: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
    """Await coroutine functions on the loop; run anything else in a thread with this context."""
    if is_coroutine_callable(fn):
        return await fn(*args, **kwargs)
    context = contextvars.copy_context()
    call = functools.partial(context.run, fn, *args, **kwargs)
    value = await asyncio.get_running_loop().run_in_executor(None, call)
    return await value if inspect.isawaitable(value) else value


def call_sync(fn: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
    """Call in this thread; an awaitable it hands back is run to completion in a fresh loop."""
    value = fn(*args, **kwargs)
    return run_awaitable(value) if inspect.isawaitable(value) else value


def is_coroutine_callable(fn: Callable[..., Any]) -> bool:
    """An ``async def`` function, a partial of one, or an object whose ``__call__`` is one."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)


def run_awaitable(awaitable: Awaitable[Any]) -> Any:
    """Await in a fresh loop; inside a running loop, do it in a helper thread rather than re-enter it."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_await(awaitable))
    context = contextvars.copy_context()
    with ThreadPoolExecutor(1, thread_name_prefix="evenflow-await") as helper:
        return helper.submit(context.run, asyncio.run, _await(awaitable)).result()


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def settle(envelope: Envelope, value: Any, *, by: str, started_at: datetime) -> Outcome:
    """A successful call's outcome: an expansion for a flow, else a result the log can store."""
    stamps: dict[str, Any] = {"started_at": started_at, "finished_at": now_precise(), "by": by}
    what = "an invalid flow" if is_flow(value) else "a value the log cannot store"
    try:
        if is_flow(value):
            flow = encode_flow(value)
            return Outcome(envelope.run, envelope.node, envelope.attempt, ok=True, expansion=flow, **stamps)
        check_payload(value, "result")
    except Exception as exc:
        message = f"command {envelope.command!r} returned {what}: {exc}; return {PLAIN_DATA}, or a flow"
        return failed(envelope, exc, by=by, started_at=started_at, tb=traceback.format_exc(), message=message)
    return Outcome(envelope.run, envelope.node, envelope.attempt, ok=True, result=value, **stamps)


def failed(
    envelope: Envelope,
    exc: BaseException,
    *,
    by: str,
    started_at: datetime | None = None,
    tb: str = "",
    reason: EndReason = "raised",
    message: str | None = None,
) -> Outcome:
    """The outcome of an attempt that ended in ``exc``."""
    error = ErrorInfo.from_exception(exc, traceback=tb, reason=reason)
    if message is not None:
        error = replace(error, message=message)
    return Outcome.failed(envelope, error, started_at=started_at, finished_at=now_precise(), by=by)


def timed_out(envelope: Envelope, *, by: str, started_at: datetime | None, when: str) -> Outcome:
    deadline = envelope.deadline.isoformat(timespec="milliseconds") if envelope.deadline else "?"
    exc = CommandTimeout(
        f"command {envelope.command!r} (attempt {envelope.attempt_id}) passed its deadline "
        f"{deadline} {when}; give the node a longer timeout or make the command faster"
    )
    return failed(envelope, exc, by=by, started_at=started_at, reason="timeout")


def seconds_until(deadline: datetime, now: datetime) -> float:
    """Seconds from ``now`` to ``deadline``; a naive deadline is taken as UTC, as BSON does."""
    if deadline.tzinfo is None:
        deadline = deadline.replace(tzinfo=UTC)
    return (deadline - now).total_seconds()
