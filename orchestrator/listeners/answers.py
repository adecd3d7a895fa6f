"""Calling a listener on events and turning what it answers into triggers.

The same functions run in the host's thread pool (sync listeners), on its
event loop (coroutine listeners) and in a child process (``process=True``),
so a listener behaves alike wherever it runs. Nothing a listener does escapes
as an exception: a raise, a bad answer or a predicate that fails becomes a
failure trigger, logged in place of the run the listener would have started.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Sequence
from typing import Any

from orchestrator.core.events import Event
from orchestrator.core.listening import Listener, Trigger, failed_trigger, triggers_for


def answer_all(listener: Listener, events: Sequence[Event]) -> list[Trigger]:
    """Call a sync listener on each event in order (in a worker thread or a child process)."""
    triggers: list[Trigger] = []
    for event in events:
        try:
            if listener.predicate is not None and not listener.predicate(event):
                continue
            answer = listener.fn(event)
            if inspect.isawaitable(answer):  # a sync callable that hands back a coroutine
                answer = asyncio.run(_await(answer))
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # SystemExit too: a listener must not end the host
            triggers.append(failed_trigger(listener.name, event, exc))
            continue
        triggers.extend(triggers_for(listener.name, event, answer))
    return triggers


async def answer_all_async(listener: Listener, events: Sequence[Event]) -> list[Trigger]:
    """Await a coroutine listener on each event in order, on the host's loop."""
    triggers: list[Trigger] = []
    for event in events:
        try:
            if listener.predicate is not None and not listener.predicate(event):
                continue
            answer = await listener.fn(event)
        except (KeyboardInterrupt, asyncio.CancelledError):
            raise
        except BaseException as exc:  # SystemExit too: a listener must not end the host
            triggers.append(failed_trigger(listener.name, event, exc))
            continue
        triggers.extend(triggers_for(listener.name, event, answer))
    return triggers


async def _await(awaitable: Any) -> Any:
    return await awaitable
