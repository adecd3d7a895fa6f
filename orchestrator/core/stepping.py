"""Logic that calls user code, written once and driven either in this thread or on an event loop.

Running a command or a listener is the same work sync or async but for the
call itself. So that work is one generator: it yields what to call, receives
what the call returned, or has what it raised thrown in at the ``yield`` (its
``try``/``except`` sees it as if it had made the call), and returns the
result. ``drive`` makes each call in this thread; ``drive_async`` awaits it.
Everything a call raises is thrown in, so a step's ``with`` blocks always
unwind in the context that entered them; the step re-raises what it must
not swallow (``SYNC_PASSES`` or ``ASYNC_PASSES``). The shape is httpx's auth
flows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Generator
from typing import TypeVar

Request = TypeVar("Request")
Reply = TypeVar("Reply")
Result = TypeVar("Result")

SYNC_PASSES: tuple[type[BaseException], ...] = (KeyboardInterrupt,)
"""What a step re-raises when driven in a thread: the user's Ctrl-C, never what user code did."""

ASYNC_PASSES: tuple[type[BaseException], ...] = (KeyboardInterrupt, asyncio.CancelledError)
"""What a step re-raises when driven on a loop: Ctrl-C, and the cancellation of its task."""


def drive(steps: Generator[Request, Reply, Result], call: Callable[[Request], Reply]) -> Result:
    """Run ``steps`` to its result, making each call it yields in this thread."""
    try:
        request = next(steps)
        while True:
            try:
                reply = call(request)
            except BaseException as exc:  # the step decides: handled, or raised again
                request = steps.throw(exc)
            else:
                request = steps.send(reply)
    except StopIteration as done:
        result: Result = done.value
        return result


async def drive_async(
    steps: Generator[Request, Reply, Result], call: Callable[[Request], Awaitable[Reply]]
) -> Result:
    """Run ``steps`` to its result, awaiting each call it yields on the running loop."""
    try:
        request = next(steps)
        while True:
            try:
                reply = await call(request)
            except BaseException as exc:  # the step decides: handled, or raised again
                request = steps.throw(exc)
            else:
                request = steps.send(reply)
    except StopIteration as done:
        result: Result = done.value
        return result
