"""One generator of steps, driven sync or async, gives the same result and sees the same exceptions."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Generator
from typing import Any

import pytest

from orchestrator.core.stepping import ASYNC_PASSES, SYNC_PASSES, drive, drive_async


def doubling(items: list[int], passes: tuple[type[BaseException], ...]) -> Generator[int, int, list[Any]]:
    """Ask for each item doubled; record what a call raised in its place, re-raise ``passes``."""
    out: list[Any] = []
    for item in items:
        try:
            out.append((yield item))
        except passes:
            raise
        except BaseException as exc:
            out.append(type(exc).__name__)
    return out


def sync_call(item: int) -> int:
    if item == 2:
        raise ValueError(item)
    if item == 3:
        raise SystemExit(item)
    return item * 2


async def async_call(item: int) -> int:
    return sync_call(item)


EXPECTED = [2, "ValueError", "SystemExit", 8]


def test_both_drivers_give_the_steps_result_with_each_raise_thrown_in() -> None:
    items = [1, 2, 3, 4]
    assert drive(doubling(items, SYNC_PASSES), sync_call) == EXPECTED
    assert asyncio.run(drive_async(doubling(items, ASYNC_PASSES), async_call)) == EXPECTED


def test_a_calls_stop_iteration_is_the_calls_not_the_end_of_the_steps() -> None:
    def stopping(item: int) -> int:
        raise StopIteration

    assert drive(doubling([1, 2], SYNC_PASSES), stopping) == ["StopIteration", "StopIteration"]


def test_steps_with_nothing_to_call_return_at_once() -> None:
    assert drive(doubling([], SYNC_PASSES), sync_call) == []
    assert asyncio.run(drive_async(doubling([], ASYNC_PASSES), async_call)) == []


def test_what_the_steps_re_raise_reaches_the_caller_and_the_steps_are_finished() -> None:
    def interrupted(item: int) -> int:
        raise KeyboardInterrupt

    steps = doubling([1, 2], SYNC_PASSES)
    with pytest.raises(KeyboardInterrupt):
        drive(steps, interrupted)
    assert inspect.getgeneratorstate(steps) == inspect.GEN_CLOSED, "the steps unwound, not left suspended"


def test_a_cancelled_call_passes_on_the_loop_but_is_handled_in_a_thread() -> None:
    async def cancelled(item: int) -> int:
        raise asyncio.CancelledError

    def cancelled_sync(item: int) -> int:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(drive_async(doubling([1], ASYNC_PASSES), cancelled))
    assert drive(doubling([1], SYNC_PASSES), cancelled_sync) == ["CancelledError"]
