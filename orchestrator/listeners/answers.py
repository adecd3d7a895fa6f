"""Calling a listener on events and turning what it answers into triggers.

The same functions run in the host's thread pool (sync listeners), on its
event loop (coroutine listeners) and in a child process (``process=True``),
so a listener behaves alike wherever it runs: both faces drive the one
``answering``. Nothing a listener does escapes as an exception: a raise, a
bad answer or a predicate that fails becomes a failure trigger, logged in
place of the run the listener would have started.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Generator, Sequence
from typing import Any

from orchestrator.core.events import Event
from orchestrator.core.listening import Listener, Trigger, failed_trigger, triggers_for
from orchestrator.core.stepping import ASYNC_PASSES, SYNC_PASSES, drive, drive_async


def answer_all(listener: Listener, events: Sequence[Event]) -> list[Trigger]:
    """Call a sync listener on each event in order (in a worker thread or a child process)."""
    return drive(answering(listener, events, passes=SYNC_PASSES), lambda event: _answer(listener, event))


async def answer_all_async(listener: Listener, events: Sequence[Event]) -> list[Trigger]:
    """Await a coroutine listener on each event in order, on the host's loop."""
    return await drive_async(answering(listener, events, passes=ASYNC_PASSES), listener.fn)


def answering(
    listener: Listener, events: Sequence[Event], *, passes: tuple[type[BaseException], ...]
) -> Generator[Event, Any, list[Trigger]]:
    """The steps of both faces: yields each event the predicate lets through, receives the
    listener's answer (or has what it raised thrown in) and returns the triggers, in order."""
    triggers: list[Trigger] = []
    for event in events:
        try:
            if listener.predicate is not None and not listener.predicate(event):
                continue
            answer = yield event
        except passes:
            raise
        except BaseException as exc:  # SystemExit too: a listener must not end the host
            triggers.append(failed_trigger(listener.name, event, exc))
            continue
        triggers.extend(triggers_for(listener.name, event, answer))
    return triggers


def _answer(listener: Listener, event: Event) -> Any:
    """A sync listener's answer; a sync callable that hands back a coroutine has it run here."""
    answer = listener.fn(event)
    return asyncio.run(_await(answer)) if inspect.isawaitable(answer) else answer


async def _await(awaitable: Any) -> Any:
    return await awaitable
