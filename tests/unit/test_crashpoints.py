"""Crash points fire only where and when a test armed them; importing reads nothing.

In-process tests stop short of the armed pass (the SIGKILL would end pytest);
the kill itself and the environment's arming are checked in child processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.core import crashpoints
from orchestrator.core.crashpoints import CRASH_ENV, arm, armed, crash_point
from orchestrator.core.errors import ConfigurationError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def disarmed() -> Iterator[None]:
    arm(None)
    yield
    arm(None)


def child(code: str, crash: str | None) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter whose environment holds ``crash`` (or no arming)."""
    env = {key: value for key, value in os.environ.items() if key != CRASH_ENV}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    if crash is not None:
        env[CRASH_ENV] = crash
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def test_the_armed_pass_is_counted_at_the_armed_point_only() -> None:
    arm("mid-batch@3")
    assert not armed("mid-batch")
    crash_point("after-lease-acquired")  # another point: not counted
    crash_point("mid-batch")
    assert not armed("mid-batch")
    crash_point("mid-batch")
    assert armed("mid-batch"), "the third pass is the armed one"
    assert not armed("after-lease-acquired")


def test_arming_again_counts_from_zero_and_none_disarms() -> None:
    arm("mid-batch@2")
    crash_point("mid-batch")
    assert armed("mid-batch")
    arm("mid-batch@2")
    assert not armed("mid-batch")
    arm(None)
    assert not armed("mid-batch")
    crash_point("mid-batch")  # unarmed: returns


@pytest.mark.parametrize("spec", ["no-such-point", "mid-batch@0", "mid-batch@two"])
def test_a_bad_spec_is_refused_when_armed(spec: str) -> None:
    with pytest.raises(ConfigurationError, match="crash point"):
        arm(spec)
    assert crashpoints._armed is None


def test_the_environment_is_read_by_the_entry_point_not_by_importing() -> None:
    code = (
        "import orchestrator.engine, orchestrator.store\n"
        "from orchestrator.core.crashpoints import arm_from_environment, armed\n"
        "print(armed('after-lease-acquired'))\n"
        "arm_from_environment()\n"
        "print(armed('after-lease-acquired'))\n"
    )
    done = child(code, "after-lease-acquired")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True"]


def test_an_unset_environment_leaves_an_arming_in_place() -> None:
    code = (
        "from orchestrator.core.crashpoints import arm, arm_from_environment, armed\n"
        "arm('mid-batch')\n"
        "arm_from_environment()\n"
        "print(armed('mid-batch'))\n"
    )
    done = child(code, None)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True"]


def test_an_armed_process_is_killed_on_the_armed_pass() -> None:
    code = (
        "from orchestrator.core.crashpoints import arm_from_environment, crash_point\n"
        "arm_from_environment()\n"
        "crash_point('mid-batch')\n"
        "print('first pass', flush=True)\n"
        "crash_point('mid-batch')\n"
        "print('second pass', flush=True)\n"
    )
    done = child(code, "mid-batch@2")
    assert done.returncode == -signal.SIGKILL, done
    assert done.stdout.split("\n") == ["first pass", ""]
