"""The events of one generated run, in the shapes and order the engine logs them (``bench/history.py``).

A run is a parallel group of calls, each with ``POLICY`` (three attempts,
retries after 1 s then 2 s). It is logged in rounds, as the engine does when a
round's outcomes come back together: ``run.submitted``; every pending call's
``command.dispatched`` (caused by the event before them); each call's
``command.started`` and ``command.succeeded``/``command.failed`` (caused by
``<run>/<node>#<attempt>``); then for the calls that failed, a
``retry.scheduled`` each and the next round, or after the last attempt
``node.failed``; and ``run.succeeded`` with the results in call order, or
``run.failed`` with the node's failures. ``Shape.failures`` says how many
attempts of which call fail; ``tests/integration/test_bench_history.py`` holds
these shapes to what the real engine logs for the same flow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from orchestrator import RetryPolicy, call, encode_flow, parallel
from orchestrator.core import events as ev
from orchestrator.core.events import Event
from orchestrator.core.flows import Parallel

POLICY = RetryPolicy(max_attempts=3, initial_delay=timedelta(seconds=1), backoff=2.0, jitter=0.0)
ORCHESTRATOR = "orchestrator:bench-host:4242:5e1f0a"
"""``by`` of what the orchestrator logs (the form is ``orchestrator:<host>:<pid>:<tag>``)."""
WORKERS = ("bench-host:4301/processes", "bench-host:4302/processes")
ERROR = {"type": "builtins.ValueError", "message": "declined"}
MRO = ["builtins.ValueError", "builtins.Exception", "builtins.BaseException"]
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/srv/evenflow/workers/execution.py", line 66, in attempt\n    value = yield target\n'
    "            ^^^^^^^^^^^^\n"
    '  File "/srv/evenflow/orchestrator/core/stepping.py", line 37, in drive\n    reply = call(request)\n'
    '  File "/srv/evenflow/workers/execution.py", line 114, in call_sync\n    value = fn(*args, **kwargs)\n'
    '  File "/srv/shop/commands.py", line 41, in {command}\n    raise ValueError("declined")\n'
    "ValueError: declined\n"
)


@dataclass(frozen=True, slots=True)
class Shape:
    """A run as meant: its calls (commands, arguments), and how many attempts of which call fail.

    A call failing ``POLICY.max_attempts`` times fails the run.
    """

    commands: tuple[str, ...]
    args: tuple[tuple[Any, ...], ...]
    failures: Mapping[int, int] = field(default_factory=dict)

    def node(self) -> Parallel:
        """The flow: the calls in parallel, each with ``POLICY``."""
        calls = (call(c, *a).options(retry=POLICY) for c, a in zip(self.commands, self.args, strict=True))
        return parallel(*calls)

    def flow(self) -> dict[str, Any]:
        """The flow document ``run.submitted`` holds."""
        return encode_flow(self.node())

    @property
    def fails(self) -> bool:
        return any(count >= POLICY.max_attempts for count in self.failures.values())


class RunLog:
    """The events of one run as they are added, each numbered and caused as the engine does."""

    def __init__(self, run: str, correlation: str) -> None:
        self.run = run
        self.correlation = correlation
        self.events: list[Event] = []

    @property
    def last(self) -> str:
        return self.events[-1].id

    def add(
        self, kind: str, at: datetime, cause: str | None, data: dict[str, Any], node: str | None = None,
        attempt: int | None = None, command: str | None = None,
    ) -> None:  # fmt: skip
        event = Event(self.run, len(self.events) + 1, kind, at, node, attempt, command, data, ORCHESTRATOR,
                      cause, self.correlation)  # fmt: skip
        self.events.append(event)


def run_events(
    run: str, submitted: dict[str, Any], shape: Shape, at: datetime, cause: str | None, correlation: str
) -> list[Event]:
    """Every event of ``run``, submitted at ``at`` with ``submitted`` (``run.submitted``'s data)."""
    log = RunLog(run, correlation)
    log.add(ev.RUN_SUBMITTED, at, cause, submitted)
    pending, given_up, results = list(range(len(shape.commands))), [], {}
    moment = at
    for attempt in range(1, POLICY.max_attempts + 1):  # a round per attempt
        if attempt > 1:
            moment = _retries(log, shape, pending, attempt, moment)
        moment, failed = _round(log, shape, pending, attempt, moment, results)
        given_up = [i for i in failed if attempt == POLICY.max_attempts]
        pending = [i for i in failed if attempt < POLICY.max_attempts]
        if not pending:
            break
    if given_up:
        failures = [_failure(shape, i) for i in given_up]
        for i, failure in zip(given_up, failures, strict=True):
            log.add(ev.NODE_FAILED, moment, log.last, {"failures": [failure]}, f"r.{i}", POLICY.max_attempts)
        log.add(ev.RUN_FAILED, moment, log.last, {"failures": failures})
    else:
        log.add(ev.RUN_SUCCEEDED, moment, log.last, {"result": [results[i] for i in sorted(results)]})
    return log.events


def _retries(log: RunLog, shape: Shape, pending: list[int], attempt: int, moment: datetime) -> datetime:
    """``retry.scheduled`` for each call that failed; the moment they are due."""
    delay = POLICY.initial_delay * POLICY.backoff ** (attempt - 2)
    due, cause = moment + delay, log.last
    for i in pending:
        data = {"due": due, "delay_s": delay.total_seconds()}
        log.add(ev.RETRY_SCHEDULED, moment, cause, data, f"r.{i}", attempt, shape.commands[i])
    return due


def _round(
    log: RunLog, shape: Shape, pending: list[int], attempt: int, moment: datetime, results: dict[int, Any]
) -> tuple[datetime, list[int]]:
    """One attempt of each pending call, dispatched together; when the round ends, and what failed."""
    cause, run = log.last, log.run
    for i in pending:
        data = {
            "args": list(shape.args[i]),
            "kwargs": {},
            "deadline": None,
            "key": f"{run}/r.{i}",
            "route": None,
        }
        log.add(ev.COMMAND_DISPATCHED, moment, cause, data, f"r.{i}", attempt, shape.commands[i])
    failed, end = [], moment
    for offset, i in enumerate(pending):
        node, command = f"r.{i}", shape.commands[i]
        began = moment + timedelta(milliseconds=2 + offset % 7)
        took_ms = 3 + (i * 37 + attempt * 11 + len(run)) % 90
        ended = began + timedelta(milliseconds=took_ms)
        end = max(end, ended)
        attempt_of = f"{run}/{node}#{attempt}"
        started = {"started_at": began, "by": WORKERS[(i + attempt) % len(WORKERS)]}
        log.add(
            ev.COMMAND_STARTED, began + timedelta(milliseconds=1), attempt_of, started, node, attempt, command
        )
        if shape.failures.get(i, 0) >= attempt:
            failed.append(i)
            error = {**ERROR, "mro": MRO, "traceback": TRACEBACK.format(command=command), "reason": "raised"}
            log.add(ev.COMMAND_FAILED, ended, attempt_of, {"error": error}, node, attempt, command)
        else:
            results[i] = result = shape.args[i][0] * 100 + i
            data = {"result": result, "duration_s": took_ms / 1000}
            log.add(ev.COMMAND_SUCCEEDED, ended, attempt_of, data, node, attempt, command)
    return end + timedelta(milliseconds=1), failed


def _failure(shape: Shape, i: int) -> dict[str, Any]:
    """What ``node.failed`` and ``run.failed`` say of call ``i`` given up after its last attempt."""
    command = shape.commands[i]
    return {"node": f"r.{i}", "command": command, "attempt": POLICY.max_attempts, **ERROR, "reason": "raised",
            "traceback": TRACEBACK.format(command=command)}  # fmt: skip
