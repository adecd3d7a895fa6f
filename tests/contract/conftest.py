"""Fixtures every executor kind's contract tests share; each kind supplies ``kind`` and ``make_executor``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.contract.executor_suite import Harness, MakeExecutor, started


@pytest.fixture
def harness(kind: str, make_executor: MakeExecutor) -> Iterator[Harness]:
    executor, outcomes = started(make_executor())
    try:
        yield Harness(kind, executor, outcomes)
    finally:
        executor.close()
    outcomes.assert_unique()


@pytest.fixture
def ledger(tmp_path: Path) -> str:
    return str(tmp_path / "ledger.jsonl")
