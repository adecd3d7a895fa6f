"""``decide(state, now) -> drafts``: what the engine must append next for a run.

Pure: it reads the state and the time and returns event drafts. The engine
appends them (stamping ``seq``, ``at`` and ``by``), folds them in, and only then
acts (dispatches, arms timers, answers waiters), so every action follows a
logged decision. A finished run decides nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from . import events as ev
from .envelope import Envelope, ErrorInfo, attempt_id
from .errors import CommandTimeout
from .policy import retry_delay, should_retry
from .state import FAILED, NO_INPUT, RUNNING, SUCCEEDED, WAITING, NodeState, RunState

_NO_RETRY = {"max_attempts": 1, "retry_on": [], "never_retry": []}


@dataclass(frozen=True, slots=True)
class Draft:
    """An event without its place in the log (run, seq, at, by are the engine's)."""

    type: str
    node: str | None = None
    attempt: int | None = None
    command: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)


def decide(state: RunState, now: datetime) -> list[Draft]:
    if state.finished or state.flow is None:
        return []
    root = state.root
    if root.status == SUCCEEDED:
        return [Draft(ev.RUN_SUCCEEDED, data={"result": root.result})]
    if root.status == FAILED:
        return [Draft(ev.RUN_FAILED, data={"failures": root.failures})]
    drafts = [_retry_or_fail(state, state.nodes[path], now) for path in state.failing]
    drafts += [_dispatch(state, state.nodes[path], 1, now) for path in state.ready]
    for path, when in state.timers.items():
        if when <= now:
            drafts.append(_timer_fired(state, state.nodes[path], now))
    return drafts


def _dispatch(state: RunState, node: NodeState, attempt: int, now: datetime) -> Draft:
    spec = node.spec
    timeout = spec.get("timeout_s")
    return Draft(
        ev.COMMAND_DISPATCHED,
        node=node.path,
        attempt=attempt,
        command=spec["command"],
        data={
            "args": call_args(node),
            "kwargs": spec["kwargs"],
            "deadline": _millis(now + timedelta(seconds=timeout)) if timeout else None,
            "key": spec.get("key") or f"{state.run}/{node.path}",
            "route": spec.get("route"),
        },
    )


def call_args(node: NodeState) -> list[Any]:
    """Positional arguments of a call: the incoming value first, unless immutable."""
    args = list(node.spec["args"])
    if node.input is not NO_INPUT and not node.spec["immutable"]:
        args.insert(0, node.input)
    return args


def envelope_for(state: RunState, node: NodeState) -> Envelope:
    """The envelope of ``node``'s current attempt, rebuilt from the state alone."""
    spec = node.spec
    return Envelope(
        run=state.run,
        node=node.path,
        attempt=node.attempt,
        command=spec["command"],
        args=call_args(node),
        kwargs=spec["kwargs"],
        deadline=node.deadline,
        key=spec.get("key") or f"{state.run}/{node.path}",
        route=spec.get("route"),
    )


def _retry_or_fail(state: RunState, node: NodeState, now: datetime) -> Draft:
    error = ErrorInfo.from_doc(node.error or {"type": "builtins.Exception"})
    policy = node.spec.get("retry") or _NO_RETRY
    if node.kind == "call" and should_retry(policy, error, node.attempt):
        delay = retry_delay(policy, node.attempt, attempt_id(state.run, node.path, node.attempt))
        return Draft(
            ev.RETRY_SCHEDULED,
            node=node.path,
            attempt=node.attempt + 1,
            command=node.spec["command"],
            data={"due": _millis(now + delay), "delay_s": round(delay.total_seconds(), 3)},
        )
    failure = {
        "node": node.path,
        "command": node.spec.get("command") or node.spec.get("template", {}).get("command"),
        "attempt": node.attempt or None,
        "type": error.type,
        "message": error.message,
        "reason": error.reason,
        "traceback": error.traceback,
    }
    return Draft(ev.NODE_FAILED, node=node.path, attempt=node.attempt or None, data={"failures": [failure]})


def _timer_fired(state: RunState, node: NodeState, now: datetime) -> Draft:
    if node.status == WAITING:
        return _dispatch(state, node, node.attempt + 1, now)
    assert node.status == RUNNING, f"timer on node {node.path} in status {node.status}"
    timeout = node.spec.get("timeout_s")
    error = ErrorInfo.from_exception(
        CommandTimeout(f"attempt {node.attempt} of {node.spec['command']!r} passed its {timeout:g}s timeout"),
        reason="timeout",
    )
    return Draft(
        ev.COMMAND_FAILED,
        node=node.path,
        attempt=node.attempt,
        command=node.spec["command"],
        data={"error": error.to_doc()},
    )


def _millis(moment: datetime) -> datetime:
    return ev.to_millis(moment)
