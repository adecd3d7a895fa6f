"""Ending a turn: append it, and only once it is durable act on it.

Acting means: send the envelopes the turn dispatched, acknowledge the outcomes
it logged, answer submissions and cancellations, answer the watchers of runs
that ended, and let read models follow. An append that fails acts on nothing:
the runs are found again in the log (``Recovery``) and the store is given a
pause (``Backoff``) the loop honours.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..core import events as ev
from ..core.crashpoints import crash_point
from ..core.errors import EventRefused
from ..core.events import Event
from ..core.logfields import fields
from .book import RunBook
from .dispatch import Dispatcher
from .journal import Journal
from .messages import Turn, refuse, settle
from .recovery import Recovery
from .refusals import judge
from .timers import Backoff

log = logging.getLogger("evenflow.engine")
runs_log = logging.getLogger("evenflow.runs")
"""One INFO line per run state change (``--log-level info``)."""

AppendHook = Callable[[list[Event]], None]
"""Called with every batch once it is durable, after the turn's actions (read models)."""


class Committer:
    def __init__(
        self,
        book: RunBook,
        journal: Journal,
        recovery: Recovery,
        dispatcher: Dispatcher,
        backoff: Backoff,
        put: Callable[[object], None],
        on_append: AppendHook | None,
    ) -> None:
        self.book = book
        self.journal = journal
        self.recovery = recovery
        self.dispatcher = dispatcher
        self.backoff = backoff
        self._put = put
        self._on_append = on_append

    def commit(self, turn: Turn) -> None:
        if turn.events:
            try:
                self.journal.append(turn, self._refused)
            except Exception as exc:
                self.backoff.failed()
                self.recovery.append_failed(turn, exc)
                return
            self.backoff.succeeded()
        crash_point("after-append-before-dispatch")
        self._send(turn)
        if turn.outcomes:
            crash_point("after-append-before-ack")
            self.dispatcher.acknowledge([outcome.attempt_id for outcome in turn.outcomes])
        if turn.submits:
            crash_point("after-submit-append-before-answer")
        for submit in turn.submits:
            settle(submit.future, result=submit.run)
        for cancel in turn.cancels:
            settle(cancel.future)
        for state in turn.finished:
            self.book.finish(state)
        batch = turn.batch()
        if batch and runs_log.isEnabledFor(logging.INFO):
            report_states(batch)
        if batch and self._on_append is not None:
            self._after_append(batch)

    def _send(self, turn: Turn) -> None:
        cancelled = {cancel.run for cancel in turn.cancels}
        for route, envelopes in turn.dispatches.items():
            if cancelled:  # decided earlier in this turn, but the cancellation is logged now
                envelopes = [envelope for envelope in envelopes if envelope.run not in cancelled]
            if envelopes:
                self.dispatcher.send(route, envelopes)

    def _refused(self, part: Turn, exc: EventRefused) -> None:
        """The runs of ``part`` hold events the log refused: judge each, so every other run goes on."""
        log.error(
            "the log refused events of run(s) %s, which end; the others go on: %s", sorted(part.events), exc
        )
        for verdict in judge(part, exc, self.book.converted):
            for submit in verdict.refused:
                refuse(submit, exc)
                self.book.fail_waiters(submit.run, exc)
            for submit in verdict.unsure:  # its run.submitted may have landed: the log answers it
                submit.refusal = exc
                self.book.unsure[submit.run] = submit
            for item in [*verdict.again, *([verdict.abort] if verdict.abort else [])]:
                self._put(item)
        self.book.inflight.update(outcome.attempt_id for outcome in part.outcomes)
        self.recovery.reload(list(part.touched))

    def _after_append(self, batch: list[Event]) -> None:
        """Read models follow the log; their failure is logged and never stops the engine."""
        assert self._on_append is not None
        try:
            self._on_append(batch)
        except Exception:
            log.exception("a hook after the append of %d events failed; read models may lag", len(batch))


def report_states(batch: list[Event]) -> None:
    """Say, one line each, which runs of a durable batch started or ended, and how."""
    for event in batch:
        if event.type == ev.RUN_SUBMITTED:
            named = f" ({event.data['name']})" if event.data.get("name") else ""
            runs_log.info("run %s%s submitted", event.run, named, extra=fields(event.run))
        elif event.type in ev.RUN_TERMINAL:
            runs_log.info(
                "run %s %s%s", event.run, event.type.split(".")[-1], _why(event), extra=fields(event.run)
            )


def _why(event: Event) -> str:
    """The first failure of a failed run, or the reason of a cancelled one, in a few words."""
    failures = event.data.get("failures") or []
    if failures:
        first = failures[0]
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        return f": node {first.get('node')} {first.get('type')}: {str(first.get('message'))[:200]}{more}"
    reason = event.data.get("reason")
    return f": {reason}" if reason else ""
