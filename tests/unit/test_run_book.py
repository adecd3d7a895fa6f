"""The engine's book of runs: a run ends once, its watchers hear it, and only the recent ones are kept."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

import pytest

from orchestrator.core.errors import RunFailed
from orchestrator.core.state import RunState
from orchestrator.engine.book import RECENT_RUNS, RunBook


def ended(run: str, status: str = "succeeded", result: Any = None) -> RunState:
    state = RunState(run)
    state.status, state.result, state.finished = status, result, True
    return state


def test_a_finished_run_answers_its_watchers_and_moves_to_the_recent_ones() -> None:
    book = RunBook()
    book.drive(RunState("a"))
    assert "a" in book.dirty and book.known("a") is book.live["a"]
    watcher: Future[Any] = Future()
    book.watch(book.live["a"], watcher)
    assert not watcher.done()
    book.finish(ended("a", result=42))
    assert watcher.result(0) == 42
    assert "a" not in book.live and book.known("a") is book.recent["a"]
    late: Future[Any] = Future()
    book.watch(book.recent["a"], late)  # a watcher after the end is answered at once
    assert late.result(0) == 42


def test_a_failed_run_fails_its_watchers() -> None:
    book = RunBook()
    watcher: Future[Any] = Future()
    book.waiters["b"].append(watcher)
    book.finish(ended("b", status="failed"))
    with pytest.raises(RunFailed):
        watcher.result(0)


def test_only_the_most_recent_runs_are_kept() -> None:
    book = RunBook()
    for i in range(RECENT_RUNS + 5):
        book.finish(ended(f"r{i}"))
    assert len(book.recent) == RECENT_RUNS
    assert book.known("r0") is None and book.known(f"r{RECENT_RUNS + 4}") is not None
