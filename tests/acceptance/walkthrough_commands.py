"""Flows and commands for ``test_control_cli``: importable by name from ``evenflow`` child processes.

The flows take their files from the environment, since ``evenflow run MODULE:FLOW``
passes no arguments: ``$EVENFLOW_TEST_GATE`` names the file ``wait_gate`` waits for,
``$EVENFLOW_TEST_MARKER`` the file without which ``fail_until_marker`` fails, and
``$EVENFLOW_TEST_LEDGER`` the external ledger every execution is written to.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from typing import Any

from orchestrator.core.flows import Node, call, parallel, sequence
from orchestrator.core.policy import RetryPolicy
from orchestrator.core.registry import Registry
from tests import commands

GATE_ENV = "EVENFLOW_TEST_GATE"
MARKER_ENV = "EVENFLOW_TEST_MARKER"
GATE_S = 60.0
"""The longest ``wait_gate`` blocks: a test that forgets its gate still ends."""
RETRY_DELAY = timedelta(seconds=2)
"""``retrying``'s one retry waits this long: time to kill the orchestrator in between."""


def wait_gate(value: Any = None) -> Any:
    """Ledger this execution, then block until the file ``$EVENFLOW_TEST_GATE`` exists; return ``value``."""
    commands.ledgered()
    return commands.wait_for_file(os.environ[GATE_ENV], value, seconds=GATE_S)


def fail_until_marker(value: Any = None) -> Any:
    """Ledger this execution; fail unless the file ``$EVENFLOW_TEST_MARKER`` exists, else return ``value``."""
    commands.ledgered()
    if not os.path.exists(os.environ[MARKER_ENV]):
        raise RuntimeError("the marker file is missing")
    return value


def registry() -> Registry:
    found = commands.make_registry()
    found.register("wait_gate", wait_gate)
    found.register("fail_until_marker", fail_until_marker)
    return found


def gated() -> Node:
    """1, then held at the gate, then 2: ``r.0`` and ``r.1`` write the ledger."""
    return sequence(call("ledgered", 1), call("wait_gate"), call("inc"))


def failing() -> Node:
    """2, then [2, 2] (the second branch fails until the marker exists), then 4; three ledgered nodes."""
    return sequence(call("ledgered", 2), parallel(call("ledgered"), call("fail_until_marker")), call("total"))


def retrying() -> Node:
    """3, then a call that fails until the marker exists, retried once after ``RETRY_DELAY``; result 3."""
    later = RetryPolicy(max_attempts=2, initial_delay=RETRY_DELAY, jitter=0)
    return sequence(call("ledgered", 3), call("fail_until_marker").options(retry=later))


def hold(home: str, count: int) -> None:
    """An orchestrator that submits ``count`` ``gated`` runs, prints their ids and waits to be killed."""
    from orchestrator import Orchestrator

    orch = Orchestrator(registry(), home=home)
    print(*(orch.submit(gated(), name="gated").id for _ in range(count)), flush=True)
    sys.stdin.read()
