"""Commands, the flow and the child-process entry points of ``test_crash_points.py``.

Every command of ``crash_flow`` writes the external ledger (``tests.commands``)
before doing anything else, so the test counts real executions of every node,
in whatever process they ran. ``REFERENCE`` holds their pure twins for the
reference evaluator (``tests.simulation.evaluate``): same results, no ledger.

Child processes run ``main``:

    python -c "import sys; from tests.fault.crash_commands import main; main(sys.argv[1:])" \
        first HOME EXECUTOR LEDGER GATE
    ... resume HOME EXECUTOR

``first`` submits ``crash_flow``, prints the run id and waits (bounded) for the
run to finish, printing ``finished``: a process armed with ``EVENFLOW_CRASH_AT``
(``main`` arms it as it starts) must die before that. ``resume`` opens the
store, printing ``started``, and waits for every unfinished run.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from typing import Any

from orchestrator.core.context import current_call
from orchestrator.core.crashpoints import arm_from_environment
from orchestrator.core.flows import Node, call, chord
from orchestrator.core.policy import RetryPolicy
from orchestrator.core.registry import Registry
from tests import commands
from tests.support.polling import wait_until

RETRY = RetryPolicy(max_attempts=3, initial_delay=timedelta(milliseconds=50), jitter=0.0)
GATE_S = 60.0
"""How long a gated command waits for its gate file at most."""
EXPECTED = 1 + 2 + 3 + 4
"""What ``crash_flow`` returns."""
LEDGERED_NODES = 5
"""Nodes of ``crash_flow`` that write the ledger: all of its calls."""
FLAKY_NODE = "r.0.2"
"""The node of ``crash_flow`` whose first attempt fails (then retried after ``RETRY.initial_delay``)."""
GATE_NODE = "r.0.3"
"""The node of ``crash_flow`` that waits for the gate file."""
PLAN = {(FLAKY_NODE, 1): True}
"""For the reference evaluator: which attempts of which nodes fail."""


def ledgered_flaky(value: Any, ledger: str, failures: int = 1) -> Any:
    """Ledger this execution; fail attempts up to ``failures``, then return ``value``."""
    commands.ledgered(ledger=ledger)
    context = current_call()
    if context is not None and context.attempt <= failures:
        raise ValueError(f"attempt {context.attempt} fails on purpose")
    return value


def ledgered_gate(value: Any, ledger: str, gate: str) -> Any:
    """Ledger this execution, then wait (bounded) for the file ``gate`` and return ``value``."""
    commands.ledgered(ledger=ledger)
    return commands.wait_for_file(gate, value, seconds=GATE_S)


def ledgered_total(values: list[int], ledger: str) -> int:
    """Ledger this execution and add ``values`` up: the chord's callback."""
    commands.ledgered(ledger=ledger)
    return sum(values)


def crash_flow(ledger: str, gate: str) -> Node:
    """A chord that passes every crash point: four calls in parallel (one fails once and is retried
    after a timer, one waits for ``gate``), then a callback over their results. Returns ``EXPECTED``."""
    header = [
        call("ledgered", 1, ledger=ledger),
        call("ledgered", 2, ledger=ledger),
        call("ledgered_flaky", 3, ledger).options(retry=RETRY),
        call("ledgered_gate", 4, ledger, gate),
    ]
    return chord(header, call("ledgered_total", ledger=ledger))


REFERENCE: dict[str, Any] = {
    "ledgered": lambda value=None, ledger=None: value,
    "ledgered_flaky": lambda value, ledger, failures=1: value,
    "ledgered_gate": lambda value, ledger, gate: value,
    "ledgered_total": lambda values, ledger: sum(values),
}
"""Pure twins of the commands, for the reference evaluator: they write no ledger and never wait."""


def make_registry() -> Registry:
    registry = commands.make_registry()
    for fn in (ledgered_flaky, ledgered_gate, ledgered_total):
        registry.register(fn.__name__, fn)
    return registry


# --- child processes ----------------------------------------------------------------------------

FINISH_S = 60.0


def first(home: str, executor: str, ledger: str, gate: str) -> int:
    """Submit ``crash_flow``, print its id, wait for it by reading the log (no inbox traffic)."""
    from orchestrator import Orchestrator

    orch = Orchestrator(make_registry(), executor=executor, home=home).start()
    run = orch.submit(crash_flow(ledger, gate))
    print(run.id, flush=True)
    try:
        wait_until(lambda: orch.state(run.id).finished, timeout=FINISH_S, what=f"run {run.id} finished")
    except AssertionError:
        return 3
    print("finished", flush=True)
    orch.close()
    return 0


def resume(home: str, executor: str) -> int:
    """Take the store over and wait for every unfinished run."""
    from orchestrator import Orchestrator

    with Orchestrator(make_registry(), executor=executor, home=home) as orch:
        print("started", flush=True)
        for run in orch.store.unfinished_runs():
            orch.result(run, timeout=FINISH_S)
    print("finished", flush=True)
    return 0


def main(argv: list[str]) -> None:
    arm_from_environment()  # the EVENFLOW_CRASH_AT the test set for this child
    entry = {"first": first, "resume": resume}[argv[0]]
    sys.exit(entry(*argv[1:]))
