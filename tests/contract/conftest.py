"""Fixtures every executor kind's contract tests share; each kind supplies ``kind`` and ``make_executor``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.contract.executor_suite import Harness, MakeExecutor, harnessed


@pytest.fixture
def harness(kind: str, make_executor: MakeExecutor) -> Iterator[Harness]:
    with harnessed(kind, make_executor()) as found:
        yield found


@pytest.fixture
def ledger(tmp_path: Path) -> str:
    return str(tmp_path / "ledger.jsonl")
