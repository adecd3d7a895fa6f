"""``decide(state, now) -> drafts``: what the engine must append next for a run.

Pure: it reads the state and the time and returns event drafts. The engine
appends them (stamping ``seq``, ``at`` and ``by``), folds them in, and only then
acts (dispatches, arms timers, answers waiters), so every action follows a
logged decision. A finished run decides nothing.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import islice
from typing import Any

from . import events as ev
from .codec import check_payload
from .envelope import Envelope, ErrorInfo, attempt_id
from .errors import CommandTimeout, PayloadError, SubmissionIncomplete
from .policy import retry_delay, should_retry
from .state import FAILED, NO_INPUT, RUNNING, SUCCEEDED, WAITING, NodeState, RunState
from .stored_names import INTERRUPTED

_NO_RETRY = {"max_attempts": 1, "retry_on": [], "never_retry": []}

RESTART_REDISPATCHES = 10
"""An attempt interrupted by an orchestrator restart is sent again, up to this many restarts in a row
during which its run made no progress: a command that kills its own orchestrator ends in a failed
node instead of a crash loop, while restarts that let the run advance never fail a node. Attempts
sent to an isolated executor (other processes, remote workers) are never counted: their command
cannot have stopped the orchestrator, and most of them were only waiting in a queue."""
MAX_FAILURES_LOGGED = 100
"""Failures ``run.failed`` lists in full; a run with more says how many it left out (each node's own
``node.failed`` has them all)."""
LOST_REDISPATCHES = 3
"""An attempt whose worker died (or froze) is sent again at once this many times, whatever the
retry policy says: the command did not fail, its host did. The bound stops a command that kills
every process it runs in."""


@dataclass(frozen=True, slots=True)
class Draft:
    """An event without its place in the log (run, seq, at, by are the engine's)."""

    type: str
    node: str | None = None
    attempt: int | None = None
    command: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)


def decide(state: RunState, now: datetime, limit: int | None = None) -> list[Draft]:
    """What follows for ``state`` at ``now``: at most ``limit`` drafts, the first that many of all."""
    if state.finished or state.flow is None:
        return []
    if state.refused is not None:
        return [Draft(ev.RUN_FAILED, data={"failures": [state.refused]})]
    if state.parts_due:  # the parts are appended with run.submitted: missing now, they never come
        return [Draft(ev.RUN_FAILED, data={"failures": [_incomplete(state)]})]
    root = state.root
    if root.status == SUCCEEDED:
        return [Draft(ev.RUN_SUCCEEDED, data=_final_result(root.result))]
    if root.status == FAILED:
        return [Draft(ev.RUN_FAILED, data=_final_failures(root.failures))]
    drafts: list[Draft] = []
    for draft in islice(_candidates(state, now), limit):
        drafts.append(draft)
        if draft.type == ev.NODE_FAILED:
            break  # failing a node may cancel others: decide again once it is applied
    return drafts


def _incomplete(state: RunState) -> dict[str, Any]:
    error = SubmissionIncomplete(
        f"run {state.run} lacks {state.parts_due} part(s) of its submission: the process that submitted "
        "it stopped while logging it, before anything ran. Submit the flow again"
    )
    assert state.flow is not None  # decide looks no further at a run not yet submitted
    node = state.flow["root"]
    return {"node": node, "command": None, "attempt": None, **ErrorInfo.from_exception(error).to_doc()}


def _final_result(result: Any) -> dict[str, Any]:
    """``run.succeeded``'s data: the result, unless it is too large to log again (a group of many
    large results); then its size, and the fold takes the result from the nodes, which hold it."""
    try:
        check_payload(result, "the run's result")
    except PayloadError as exc:
        return {"result_omitted": str(exc)}
    return {"result": result}


def _final_failures(failures: Sequence[dict[str, Any]]) -> dict[str, Any]:
    if len(failures) <= MAX_FAILURES_LOGGED:
        return {"failures": list(failures)}
    omitted = len(failures) - MAX_FAILURES_LOGGED
    return {"failures": list(failures[:MAX_FAILURES_LOGGED]), "failures_omitted": omitted}


def _candidates(state: RunState, now: datetime) -> Iterator[Draft]:
    for path in state.failing:
        yield _retry_or_fail(state, state.nodes[path], now)
    for path in state.ready:
        yield _dispatch(state, state.nodes[path], 1, now)
    for path in state.due(now):
        yield _timer_fired(state, state.nodes[path], now)


def _dispatch(state: RunState, node: NodeState, attempt: int, now: datetime) -> Draft:
    spec = node.spec
    timeout = spec.get("timeout_s")
    args = call_args(node)
    if node.input is not NO_INPUT:  # what the previous step made may be too large to log again
        try:
            check_payload(args, f"node {node.path} ({spec['command']}) args")
        except PayloadError as exc:
            return _give_up(node, ErrorInfo.from_exception(exc))
    return Draft(
        ev.COMMAND_DISPATCHED,
        node=node.path,
        attempt=attempt,
        command=spec["command"],
        data={
            "args": args,
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
    """The envelope of ``node``'s current attempt, rebuilt from the state alone.

    Arguments are copies, so a command that mutates them cannot change what the
    state (and so a retry) holds.
    """
    spec = node.spec
    return Envelope(
        run=state.run,
        node=node.path,
        attempt=node.attempt,
        command=spec["command"],
        args=_private(call_args(node)),
        kwargs=_private(spec["kwargs"]),
        deadline=node.deadline,
        key=spec.get("key") or f"{state.run}/{node.path}",
        route=spec.get("route"),
    )


def _retry_or_fail(state: RunState, node: NodeState, now: datetime) -> Draft:
    error = ErrorInfo.from_doc(node.error or {"type": "builtins.Exception"})
    policy = node.spec.get("retry") or _NO_RETRY
    if node.kind == "call" and error.reason == "lost" and _may_redispatch(node, error):
        return Draft(
            ev.RETRY_SCHEDULED,
            node=node.path,
            attempt=node.attempt + 1,
            command=node.spec["command"],
            data={"due": _millis(now), "delay_s": 0.0, "lost": True},
        )
    if node.kind == "call" and should_retry(policy, error, node.attempt):
        delay = retry_delay(policy, node.attempt, attempt_id(state.run, node.path, node.attempt))
        return Draft(
            ev.RETRY_SCHEDULED,
            node=node.path,
            attempt=node.attempt + 1,
            command=node.spec["command"],
            data={"due": _millis(now + delay), "delay_s": round(delay.total_seconds(), 3)},
        )
    return _give_up(node, error)


def _may_redispatch(node: NodeState, error: ErrorInfo) -> bool:
    if error.type == INTERRUPTED:
        return node.interrupted <= RESTART_REDISPATCHES
    return node.lost <= LOST_REDISPATCHES


def _give_up(node: NodeState, error: ErrorInfo) -> Draft:
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


_SCALARS = (int, float, str, bool, bytes, type(None))


def _private(value: Any) -> Any:
    """A copy a command may mutate freely; scalars (the common case) need none."""
    if isinstance(value, list) and all(isinstance(item, _SCALARS) for item in value):
        return list(value)
    if isinstance(value, dict) and not value:
        return {}
    return copy.deepcopy(value)
