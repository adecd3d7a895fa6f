"""Printing one run: its result, id and a row per command node."""

from __future__ import annotations

from typing import Any

from ..orchestrator import Orchestrator
from .render import table, to_json
from .summary import node_rows


def print_run(orch: Orchestrator, run_id: str, *, as_json: bool) -> None:
    events = orch.events(run_id)
    state = orch.state(run_id)
    rows = node_rows(events)
    if as_json:
        document: dict[str, Any] = {
            "run": run_id,
            "state": state.status,
            "result": state.result,
            "failures": state.failures,
            "events": len(events),
            "nodes": [row.to_json() for row in rows],
        }
        print(to_json(document))
        return
    if state.status == "succeeded":
        print(f"result: {to_json(state.result, indent=None)}")
    print(f"run:    {run_id} ({state.status}, {len(events)} events)")
    print()
    headers = ("node", "command", "attempts", "duration_s", "outcome")
    print(table(headers, [(r.node, r.command, r.attempts, r.duration_s, r.outcome) for r in rows]))
