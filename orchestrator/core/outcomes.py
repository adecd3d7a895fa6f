"""Turning an executor's outcome into drafts: accept it once, or record why not.

One outcome is accepted per attempt: the one that finds its node running that
attempt. Anything else (a duplicate, a result after a timeout or a
cancellation) becomes an ``outcome.ignored`` event, so the audit shows it.
The events a command emitted are logged between ``command.started`` and the
attempt's ending only when its outcome is accepted; an ignored outcome names
their types and nothing acts on them.

What an executor reports is checked here again, whichever executor it came
from: a result, an expansion or emitted events the log cannot hold end the
attempt ``failed`` with a ``PayloadError`` (never retried), and the events
are dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from . import events as ev
from .codec import check_event_data, check_payload
from .context import MAX_EMITTED, MAX_EMITTED_BYTES
from .envelope import ErrorInfo, Outcome
from .errors import EvenflowError, InvalidEvent, PayloadError
from .flow_docs import checked_flow
from .planner import Draft
from .state import CANCELLED, RUNNING, NodeState, RunState

CheckFlow = Callable[[dict[str, Any]], None]
"""Validates an expansion's commands; raises an EvenflowError to refuse it."""


def record_outcome(state: RunState, outcome: Outcome, check_flow: CheckFlow | None = None) -> list[Draft]:
    node = state.nodes.get(outcome.node)
    if node is None or state.finished or node.status != RUNNING or node.attempt != outcome.attempt:
        data = {"reason": _why_ignored(node, outcome), "ok": outcome.ok, "by": outcome.by}
        if outcome.events:
            data["discarded_events"] = [event["type"] for event in outcome.events]
        return [Draft(ev.OUTCOME_IGNORED, outcome.node, outcome.attempt, data=data)]
    command = node.spec["command"]
    started = Draft(
        ev.COMMAND_STARTED,
        outcome.node,
        outcome.attempt,
        command,
        data={"started_at": _millis(outcome.started_at), "by": outcome.by},
    )
    try:
        emitted = _emitted(outcome, command)
    except EvenflowError as exc:
        return [started, _failure(outcome, command, exc)]
    return [started, *emitted, _ending(outcome, command, check_flow)]


def _emitted(outcome: Outcome, command: str) -> list[Draft]:
    """Drafts of the events the attempt emitted, held to what ``emit`` allows in the command."""
    if len(outcome.events) > MAX_EMITTED:
        raise InvalidEvent(f"command {command!r} emitted {len(outcome.events)} events, over {MAX_EMITTED}")
    drafts, size = [], 0
    for event in outcome.events:
        type_, data = ev.check_domain_type(event.get("type")), event.get("data") or {}
        size += check_payload(data, f"data of event {type_!r}")
        drafts.append(Draft(type_, outcome.node, outcome.attempt, command, data=data))
    if size > MAX_EMITTED_BYTES:
        raise InvalidEvent(
            f"command {command!r} emitted {size:,} bytes of event data, over {MAX_EMITTED_BYTES:,}"
        )
    return drafts


def _failure(outcome: Outcome, command: str, exc: EvenflowError) -> Draft:
    base: dict[str, Any] = {"node": outcome.node, "attempt": outcome.attempt, "command": command}
    return Draft(ev.COMMAND_FAILED, **base, data={"error": ErrorInfo.from_exception(exc).to_doc()})


def _ending(outcome: Outcome, command: str, check_flow: CheckFlow | None) -> Draft:
    base: dict[str, Any] = {"node": outcome.node, "attempt": outcome.attempt, "command": command}
    if not outcome.ok:
        error = outcome.error or ErrorInfo(
            "builtins.Exception", "the executor reported a failure without error"
        )
        return Draft(ev.COMMAND_FAILED, **base, data={"error": error.to_doc()})
    try:
        if outcome.expansion is not None:
            flow = checked_flow(outcome.expansion)
            if check_flow is not None:
                check_flow(flow)
            check_event_data(flow, f"the flow {command!r} returned")
            return Draft(ev.COMMAND_EXPANDED, **base, data={"flow": flow})
        check_payload(outcome.result, "result")
    except EvenflowError as exc:
        return _failure(outcome, command, exc)
    except Exception as exc:  # a malformed expansion from a remote worker may fail in any way
        bad = PayloadError(f"the flow returned by {command!r} does not decode: {exc!r}")
        return Draft(ev.COMMAND_FAILED, **base, data={"error": ErrorInfo.from_exception(bad).to_doc()})
    duration = _duration(outcome)
    return Draft(ev.COMMAND_SUCCEEDED, **base, data={"result": outcome.result, "duration_s": duration})


def _why_ignored(node: NodeState | None, outcome: Outcome) -> str:
    """``late``: the attempt was given up while its command still ran -- ended by the orchestrator
    (interrupted at a takeover, timed out), or declared lost by another reporter (the service's hub,
    for a worker it forgot) -- or cancelled, or a later attempt runs. ``duplicate``: the attempt's
    outcome was accepted and this is it (or another) again from the reporter it was accepted from."""
    if node is None or node.attempt != outcome.attempt or node.status == CANCELLED:
        return "late"
    if node.error is None or node.error.get("reason") not in ("timeout", "lost"):
        return "duplicate"
    return "duplicate" if node.reported and node.reported_by == outcome.by else "late"


def _millis(moment: datetime | None) -> datetime | None:
    return ev.to_millis(moment) if moment is not None else None


def _duration(outcome: Outcome) -> float | None:
    if outcome.started_at is None or outcome.finished_at is None:
        return None
    return round((outcome.finished_at - outcome.started_at).total_seconds(), 6)
