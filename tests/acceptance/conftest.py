"""Fixtures of the CLI's acceptance tests: an empty home, and a folder of user code to run."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def user_code(tmp_path: Path) -> Path:
    (tmp_path / "myflows.py").write_text(
        textwrap.dedent(
            """
            from orchestrator import Registry, call, parallel, sequence

            def double(x):
                return 2 * x

            def fail(x):
                raise KeyError(f"no such key {x}")

            registry = Registry()
            registry.register("double", double)
            registry.register("fail", fail)

            flow = sequence(call("double", 3), parallel(call("double"), call("double")))
            chain = sequence(call("double"), call("double"))
            def broken():
                return sequence(call("double", 1), call("fail"))
            """
        )
    )
    return tmp_path
