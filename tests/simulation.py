"""Drive the pure core (evolve, decide, record_outcome) without threads, stores or executors.

Commands are evaluated by a plain function and each attempt fails or succeeds as
a *plan* says, so a test can replay any history deterministically. A reference
evaluator computes what the flow should return under the same plan.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from orchestrator.core import events as ev
from orchestrator.core.clock import FakeClock
from orchestrator.core.envelope import Envelope, ErrorInfo, Outcome
from orchestrator.core.events import Event
from orchestrator.core.evolve import evolve
from orchestrator.core.flows import ROOT
from orchestrator.core.outcomes import record_outcome
from orchestrator.core.planner import Draft, decide, envelope_for
from orchestrator.core.state import NO_INPUT, RunState

Commands = Mapping[str, Callable[..., Any]]
Plan = Mapping[tuple[str, int], bool]
"""(node path, attempt) -> True if that attempt fails. Absent means it succeeds."""


class PlannedFailure(Exception):
    pass


@dataclass
class Simulation:
    commands: Commands
    plan: Plan = field(default_factory=dict)
    run: str = "run-1"
    clock: FakeClock = field(default_factory=FakeClock)
    events: list[Event] = field(default_factory=list)
    state: RunState = field(init=False)
    pending: list[Envelope] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.state = RunState(self.run)

    def apply(self, draft: Draft) -> None:
        event = Event(
            self.run,
            self.state.seq + 1,
            draft.type,
            self.clock.now(),
            draft.node,
            draft.attempt,
            draft.command,
            draft.data,
            by="sim",
        )
        evolve(self.state, event)
        self.events.append(event)
        if event.type == ev.COMMAND_DISPATCHED:
            self.pending.append(envelope_for(self.state, self.state.nodes[event.node or ""]))

    def execute(self, envelope: Envelope) -> Outcome:
        now = self.clock.now()
        if self.plan.get((envelope.node, envelope.attempt)):
            error = ErrorInfo.from_exception(PlannedFailure(f"planned failure of {envelope.node}"))
            return Outcome.failed(envelope, error, started_at=now, finished_at=now, by="sim")
        result = self.commands[envelope.command](*envelope.args, **envelope.kwargs)
        return Outcome(
            envelope.run, envelope.node, envelope.attempt, True, result, started_at=now, finished_at=now
        )

    def go(
        self,
        flow: dict[str, Any],
        input: Any = NO_INPUT,
        *,
        max_steps: int = 100_000,
        logged: Sequence[tuple[str, dict[str, Any]]] | None = None,
    ) -> RunState:
        """Submit ``flow`` (as ``logged`` events if given: a ``Submission.logged()``) and run it out."""
        if logged is None:
            data: dict[str, Any] = {"flow": flow}
            if input is not NO_INPUT:
                data["input"] = input
            logged = [(ev.RUN_SUBMITTED, data)]
        for kind, data in logged:
            self.apply(Draft(kind, data=data))
        for _ in range(max_steps):
            drafts = decide(self.state, self.clock.now())
            if drafts:
                for draft in drafts:
                    self.apply(draft)
            elif self.pending:
                envelope = self.pending.pop(0)
                for draft in record_outcome(self.state, self.execute(envelope)):
                    self.apply(draft)
            elif (due := self.state.next_due()) is not None:
                self.clock.advance(max(due - self.clock.now(), timedelta(0)))
            else:
                return self.state
        raise AssertionError(f"simulation did not settle in {max_steps} steps")


class ReferenceFailed(Exception):
    def __init__(self, nodes: list[str]) -> None:
        super().__init__(nodes)
        self.nodes = nodes


def evaluate(flow: dict[str, Any], commands: Commands, plan: Plan, input: Any = NO_INPUT) -> Any:
    """What the flow returns, computed directly from its flat form; raises ReferenceFailed."""
    specs = {spec["path"]: spec for spec in flow["nodes"]}
    return _eval(specs, flow.get("root", ROOT), commands, plan, input)


def _eval(specs: dict[str, Any], path: str, commands: Commands, plan: Plan, value: Any) -> Any:
    spec = specs[path]
    kind = spec["kind"]
    if kind == "call":
        return _eval_call(spec, path, commands, plan, value)
    if kind in ("sequence", "chord"):
        for child in spec["children"]:
            value = _eval(specs, child, commands, plan, value)
        return value
    if kind == "parallel":
        branches = [(child, value) for child in spec["children"]]
    else:  # each
        if not isinstance(value, list):
            raise ReferenceFailed([path])
        branches = [(f"{path}.{i}", item) for i, item in enumerate(value)]
        specs.update({child: dict(spec["template"], path=child) for child, _ in branches})
    results, failed = [], []
    for child, item in branches:
        try:
            results.append(_eval(specs, child, commands, plan, item))
        except ReferenceFailed as exc:
            failed.extend(exc.nodes)
            if spec["siblings"] == "cancel":
                break
    if failed:
        raise ReferenceFailed(failed)
    return results


def _eval_call(spec: dict[str, Any], path: str, commands: Commands, plan: Plan, value: Any) -> Any:
    attempts = spec["retry"]["max_attempts"] if spec.get("retry") else 1
    if all(plan.get((path, attempt)) for attempt in range(1, attempts + 1)):
        raise ReferenceFailed([path])
    args = list(spec["args"])
    if value is not NO_INPUT and not spec["immutable"]:
        args.insert(0, value)
    return commands[spec["command"]](*args, **spec["kwargs"])
