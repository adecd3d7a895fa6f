"""Turning what listeners answered into runs: keyed on their cause, counted in hops, cut past the limit.

A trigger's run is keyed on (listener, event, index), so a replay after a crash
lands on the run already logged: the first answer stands. Each run remembers
how many listener hops led to it (``depth``); past the cascade limit the run is
logged failed with ``CascadeLimit``, and an event of such a run triggers
nothing. A listener's failure, or a flow it answered that does not check, is
logged the same way: as a run that fails at once, in place of its work.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from ..core import events as ev
from ..core.codec import check_event_data
from ..core.errors import EvenflowError, IdempotencyConflict, ResultTimeout
from ..core.events import Event
from ..core.listening import NOTHING, Trigger, cascade_limit, failure_doc
from ..core.logfields import fields
from ..core.ports import EventStore
from ..core.submitting import Submission

log = logging.getLogger("evenflow.listeners")

TRIGGER_WAIT_S = 60.0
"""How long a listener host waits for its triggers to be logged before it tries the batch again."""
DEPTHS_KEPT = 10_000
"""Runs whose cascade depth is remembered, so triggering on their events needs no store read."""
Submit = Callable[[Submission], "Future[str]"]
CheckFlow = Callable[[dict[str, Any]], None]
"""Resolves a flow document's defaults in place; raises ``EvenflowError`` if it cannot run here."""


class Triggering:
    def __init__(self, store: EventStore, submit: Submit, check_flow: CheckFlow, cascade_limit: int) -> None:
        self.store = store
        self._submit = submit
        self._check_flow = check_flow
        self.cascade_limit = cascade_limit
        self._depths: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()

    def trigger(self, triggers: Sequence[Trigger]) -> None:
        """Log the runs ``triggers`` ask for; return once all are durable (or raise if one could not be)."""
        futures = [future for trigger in triggers if (future := self._trigger_one(trigger)) is not None]
        for future in futures:
            with contextlib.suppress(IdempotencyConflict):
                try:
                    future.result(TRIGGER_WAIT_S)
                except FutureTimeout:
                    raise ResultTimeout(f"a triggered run was not logged within {TRIGGER_WAIT_S}s") from None

    def remember(self, batch: list[Event]) -> None:
        """Note the depth of each run submitted in ``batch`` (called after every append)."""
        submitted = [event for event in batch if event.type == ev.RUN_SUBMITTED]
        if submitted:
            with self._lock:
                for event in submitted:
                    self._keep(event.run, int(event.data.get("depth", 0)))

    def _trigger_one(self, trigger: Trigger) -> Future[str] | None:
        depth = self._depth(ev.run_of(trigger.event)) + 1
        if depth > self.cascade_limit + 1:  # the cause is itself the record of a cut chain
            log.warning(
                "listener %r: event %s is past the cascade limit; not answered",
                trigger.listener,
                trigger.event,
                extra=fields(ev.run_of(trigger.event)),
            )
            return None
        failure, flow = self._judge(trigger, depth)
        if failure is not None:
            flow = copy.deepcopy(NOTHING)
        assert flow is not None
        submission = Submission.keyed(
            trigger.key,
            flow,
            cause=trigger.event,
            correlation=trigger.correlation,
            listener=trigger.listener,
            depth=depth,
            refused=failure,  # run.submitted alone fails the run: no append can half-log it
        )
        return self._submit(submission)

    def _judge(self, trigger: Trigger, depth: int) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """The failure to log in place of the trigger's flow (None if it may run), and the flow."""
        failure, flow = trigger.failure, trigger.flow
        if failure is None and depth > self.cascade_limit:
            limit = cascade_limit(trigger, depth, self.cascade_limit)
            failure = failure_doc(trigger.listener, trigger.event, trigger.type, limit)
        if failure is None and flow is not None:
            try:
                self._check_flow(flow)  # resolves defaults in place: the trigger's own copy
                check_event_data(flow, f"the flow listener {trigger.listener!r} answered")
            except EvenflowError as exc:
                failure = failure_doc(trigger.listener, trigger.event, trigger.type, exc)
        return failure, flow

    def _depth(self, run: str) -> int:
        """How many listener hops led to ``run`` (0 for one submitted by hand)."""
        with self._lock:
            depth = self._depths.get(run)
            if depth is not None:
                self._depths.move_to_end(run)
                return depth
        events = self.store.read(run)
        depth = int(events[0].data.get("depth", 0)) if events else 0
        with self._lock:
            self._keep(run, depth)
        return depth

    def _keep(self, run: str, depth: int) -> None:
        self._depths[run] = depth
        while len(self._depths) > DEPTHS_KEPT:
            self._depths.popitem(last=False)
