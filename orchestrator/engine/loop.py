"""The engine loop: one thread that folds, decides, appends, and only then acts.

Everything reaches it through one inbox: submissions, executor outcomes,
result watchers. Each turn takes all that is waiting, turns it into events,
asks ``decide`` what follows, appends the whole turn in one batch (group
commit), and then dispatches envelopes and answers waiters. An action never
precedes the event that records the decision behind it.

When an append fails, the log is the truth: the runs the turn touched are
folded again from what landed, their logged-but-unsent attempts are sent, and
outcomes are offered again. A run whose log cannot be read for now is *stale*
and retried with backoff; one whose log does not fold is *parked*.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from datetime import datetime
from typing import Any

from ..core import events as ev
from ..core.codec import check_event_data, check_text
from ..core.crashpoints import crash_point
from ..core.envelope import Envelope, ErrorInfo, Outcome
from ..core.errors import (
    ConfigurationError,
    CorruptEvent,
    EvenflowError,
    EventRefused,
    IdempotencyConflict,
    Interrupted,
    InvalidRunState,
    PayloadError,
    RunNotFound,
    RunParked,
    StoreUnavailable,
    WorkerLost,
)
from ..core.events import Event
from ..core.evolve import evolve, fold
from ..core.outcomes import CheckFlow, record_outcome
from ..core.planner import Draft, decide, envelope_for
from ..core.ports import Clock, EventStore, Executor
from ..core.state import NO_INPUT, RunState
from .messages import Abort, Cancel, Stop, Submit, Turn, Watch, answer_the_rest, resolve, settle
from .ownership import Leases
from .refusals import judge

log = logging.getLogger("evenflow.engine")

RECENT_RUNS = 1_000
"""Finished runs kept in memory, so late outcomes and watchers need no store read."""
MAX_TURN = 20_000
"""Inbox items taken in one turn: bounds the size of one append batch."""
AppendHook = Callable[[list[Event]], None]
"""Called with every batch once it is durable, after the turn's actions (read models)."""
BACKOFF_S = (0.05, 0.2, 1.0, 2.0)
"""Pauses after consecutive store failures."""
MAX_REASON = 4_000
"""Characters of a cancel reason."""
SUBMIT_TRIES = 8
"""Appends of one submission before its caller is told the store is unavailable."""


class Engine:
    def __init__(
        self,
        store: EventStore,
        executors: Mapping[str, Executor],
        *,
        clock: Clock,
        by: str,
        check_flow: CheckFlow | None = None,
        on_append: AppendHook | None = None,
        leases: Leases | None = None,
        unrunnable: Callable[[RunState], str | None] | None = None,
    ) -> None:
        self.store = store
        self._on_append = on_append
        self.executors = dict(executors)
        self.clock = clock
        self.by = by
        self._check_flow = check_flow
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._live: dict[str, RunState] = {}
        self._recent: OrderedDict[str, RunState] = OrderedDict()
        self._waiters: dict[str, list[Future[Any]]] = defaultdict(list)
        self._inflight: set[str] = set()
        self._dirty: set[str] = set()
        """Runs reloaded from the log, to be advanced on the next turn."""
        self._stale: dict[str, list[Outcome]] = {}
        """Runs whose log could not be read, with the outcomes that arrived meanwhile."""
        self._unsure: dict[str, Submit] = {}
        """Submissions whose append failed: offered again if the log turns out not to hold them."""
        self._leases = leases
        """Set when several orchestrators may share the store; without it every run here is ours."""
        self._unrunnable = unrunnable
        """Why a run taken over cannot be driven here (a command the registry lacks), or None."""
        self._parked: dict[str, RunParked] = {}
        """Runs taken over but left untouched, with the reason: another orchestrator may drive them."""
        self._foreign: dict[str, str | None] = {}
        """Unfinished runs another orchestrator drives, with their owner."""
        self._converted: set[str] = set()
        """Attempts whose outcome was turned into a failure because the log refused what they reported."""
        self._aborted: set[str] = set()
        """Runs ended failed because the log refused their own decisions."""
        self._failures = 0
        self._stopping = False
        self._drain_until: float | None = None
        """While draining (a monotonic deadline): outcomes are logged, nothing new is decided."""
        self._thread = threading.Thread(target=self._loop, name="evenflow-engine", daemon=True)

    # --- the outside world -----------------------------------------------------------------

    def start(self, registry: Any) -> None:
        for executor in self.executors.values():
            executor.start(registry, self._inbox.put)
        if self._leases is not None:
            self._leases.tick()
        self._take_over(self.store.unfinished_runs())
        self._thread.start()

    def submit(
        self,
        run: str,
        flow: dict[str, Any],
        *,
        input: Any = NO_INPUT,
        name: str | None = None,
        watcher: Future[Any] | None = None,
        key: str | None = None,
        digest: str | None = None,
        more: Mapping[str, Any] | None = None,
        cause: str | None = None,
        correlation: str | None = None,
    ) -> Future[str]:
        """Append ``run.submitted``; the future resolves once it is durable.

        A ``watcher`` given here gets the run's result, as from ``watch``, without
        a second trip through the inbox (what ``Orchestrator.run`` wants). Under a
        ``key`` (``run`` derived from it), a run already holding the same
        ``digest`` is answered instead; another digest is an ``IdempotencyConflict``.
        A listener's run names its ``cause`` and joins that event's ``correlation``;
        ``more`` may hold ``refused``, a failure logged in place of work: the run then fails at once.
        """
        for text, what in ((name, "a run's name"), (key, "a submission key")):
            if text is not None:
                check_text(text, what)
        future: Future[str] = Future()
        submit = Submit(
            run,
            flow,
            input,
            name,
            future,
            watcher,
            key=key,
            digest=digest,
            more=dict(more or {}),
            cause=cause,
            correlation=correlation,
        )
        check_event_data(submit.data(), "the submission (its flow, input and options)")
        self._inbox.put(submit)
        return future

    def cancel(self, run: str, reason: str) -> Future[None]:
        """Append ``run.cancelled``; from then on nothing of the run is dispatched."""
        check_text(reason, "a cancel reason", max_chars=MAX_REASON, empty=True)
        future: Future[None] = Future()
        self._inbox.put(Cancel(run, reason, future))
        return future

    def watch(self, run: str) -> Future[Any]:
        """A future that resolves with the run's result, or raises RunFailed."""
        future: Future[Any] = Future()
        self._inbox.put(Watch(run, future))
        return future

    def close(self, timeout: float | None = 30.0, *, drain_s: float = 0.0) -> None:
        """Stop after logging what is waiting; with ``drain_s``, first wait that long at most for the
        outcomes of attempts in flight (dispatching nothing new), so a restart has less to send again."""
        if self._thread.is_alive():
            self._inbox.put(Stop(drain_s))
            self._thread.join(None if timeout is None else timeout + drain_s)
        if self._leases is not None and not self._thread.is_alive():
            try:  # our runs are free for others at once, not after a lease period
                self._leases.release()
            except Exception:
                log.warning("could not release the lease; others take the runs over when it expires")
        for executor in self.executors.values():
            executor.close()

    # --- the loop --------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopping:
            turn = Turn()
            try:
                self._retry_stale()
                self._patrol()
                self._turn(self._take(), turn)
            except Exception as exc:  # the engine must outlive any one bad turn
                log.exception("engine turn failed; its runs are reloaded from the log")
                self._abandon(turn, exc)
            if self._drain_until is not None and (
                not self._inflight or time.monotonic() >= self._drain_until
            ):
                self._stopping = True
        if self._inflight:
            log.info("stopped with %d attempts in flight; a restart sends them again", len(self._inflight))
        answer_the_rest(self._inbox, self._waiters)

    def _take(self) -> list[Any]:
        try:
            items = [self._inbox.get(timeout=self._wait_s())]
        except queue.Empty:
            return []
        while len(items) < MAX_TURN:
            try:
                items.append(self._inbox.get_nowait())
            except queue.Empty:
                break
        return items

    def _wait_s(self) -> float | None:
        """How long the inbox may keep us waiting: until the next timer, or not at all."""
        if self._drain_until is not None:
            return max(0.0, min(0.05, self._drain_until - time.monotonic()))
        if self._dirty:
            return 0.0
        if self._leases is not None:
            wait = self._timer_wait_s()
            return self._leases.wait_s() if wait is None else min(wait, self._leases.wait_s())
        return self._timer_wait_s()

    def _timer_wait_s(self) -> float | None:
        due = [when for state in self._live.values() if (when := state.next_due()) is not None]
        wait = max(0.0, (min(due) - self.clock.now()).total_seconds()) if due else None
        if self._stale:
            backoff = self._backoff_s()
            wait = backoff if wait is None else min(wait, backoff)
        return wait

    def _turn(self, items: list[Any], turn: Turn) -> None:
        for item in items:
            if isinstance(item, Outcome):
                self._on_outcome(item, turn)
            elif isinstance(item, Submit):
                self._on_submit(item, turn)
            elif isinstance(item, Watch):
                self._on_watch(item)
            elif isinstance(item, Cancel):
                self._on_cancel(item, turn)
            elif isinstance(item, Abort):
                self._on_abort(item, turn)
            elif isinstance(item, Stop):
                self._stop(item)
        now = self.clock.now()
        for state in list(self._live.values()) if self._drain_until is None else ():
            due = state.next_due()
            if state.run in turn.touched or state.run in self._dirty or (due is not None and due <= now):
                self._advance(state, now, turn)
        self._dirty.clear()
        self._commit(turn)

    def _stop(self, item: Stop) -> None:
        if item.drain_s > 0 and self._inflight:
            log.info(
                "draining: waiting up to %gs for %d attempts in flight", item.drain_s, len(self._inflight)
            )
            self._drain_until = time.monotonic() + item.drain_s
        else:
            self._stopping = True

    def _on_submit(self, item: Submit, turn: Turn) -> None:
        if self._drain_until is not None:
            self._refuse(
                item, EvenflowError("the orchestrator is stopping; submit to another or after restart")
            )
            return
        existing = self._live.get(item.run) or self._recent.get(item.run)
        if existing is None and item.key is not None:
            try:
                existing = self._load(item.run)
            except RunNotFound:
                pass
            except Exception as exc:
                self._refuse(item, exc)
                return
        if existing is not None:
            self._answer_existing(item, existing)
            return
        state = RunState(item.run, correlation=item.correlation)
        self._live[item.run] = state
        if item.watcher is not None:
            self._waiters[item.run].append(item.watcher)
        self._apply(state, Draft(ev.RUN_SUBMITTED, data=item.data()), turn, causation=item.cause)
        turn.submits.append(item)

    def _answer_existing(self, item: Submit, state: RunState) -> None:
        """A run with this id is logged: the same keyed submission gets it, anything else an error."""
        if item.key is None:
            self._refuse(item, EvenflowError(f"run {item.run} already exists"))
        elif state.digest != item.digest:
            self._refuse(item, IdempotencyConflict(item.key, item.run))
        else:
            settle(item.future, result=item.run)
            if item.watcher is not None:
                self._watch(state, item.watcher)

    def _refuse(self, item: Submit, error: BaseException) -> None:
        settle(item.future, error=error)
        if item.watcher is not None:
            settle(item.watcher, error=error)

    def _on_cancel(self, item: Cancel, turn: Turn) -> None:
        state = self._live.get(item.run) or self._recent.get(item.run)
        if state is None:
            try:
                state = self._load(item.run)
            except Exception as exc:
                settle(item.future, error=exc)
                return
        if state.status == "cancelled":  # cancelling twice (or again after an unsure append) is fine
            settle(item.future)
            return
        if state.finished:
            settle(
                item.future,
                error=InvalidRunState(
                    f"run {item.run} already {state.status}; only a running run can be cancelled"
                ),
            )
            return
        self._apply(state, Draft(ev.RUN_CANCELLED, data={"reason": item.reason}), turn, causation=None)
        self._parked.pop(item.run, None)
        turn.cancels.append(item)

    def _on_abort(self, item: Abort, turn: Turn) -> None:
        """End a run failed because the log refused one of its decisions (see refusals.py)."""
        state = self._live.get(item.run)
        if state is None or state.finished or not self._owns(state):
            return
        if item.run in self._aborted:  # even its failure was refused: leave the run as the log has it
            log.error("run %s is parked: the log refuses even the record of its failure", item.run)
            self._live.pop(item.run, None)
            self._fail_waiters(item.run, RunParked(f"run {item.run} is parked: the log refuses its events"))
            return
        self._aborted.add(item.run)
        self._apply(state, Draft(ev.RUN_FAILED, data={"failures": [item.failure]}), turn, causation=None)

    def _on_outcome(self, outcome: Outcome, turn: Turn) -> None:
        if outcome.run in self._stale:
            self._stale[outcome.run].append(outcome)
            return
        self._inflight.discard(outcome.attempt_id)
        state = self._live.get(outcome.run) or self._recent.get(outcome.run)
        if state is None or not self._owns(state):  # only a run's owner writes to it
            log.info("outcome of %s arrived for a run not driven here; ignored", outcome.attempt_id)
            turn.outcomes.append(outcome)  # acknowledged all the same, so its worker stops resending
            return
        turn.outcomes.append(outcome)
        crash_point("after-outcome-before-append")
        for draft in record_outcome(state, outcome, self._check_flow):
            self._apply(state, draft, turn, causation=outcome.attempt_id)

    def _on_watch(self, item: Watch) -> None:
        if item.run in self._parked:
            settle(item.future, error=self._parked[item.run])
            return
        state = self._live.get(item.run) or self._recent.get(item.run)
        if state is None and item.run not in self._stale:
            try:
                state = self._load(item.run)
            except Exception as exc:
                settle(item.future, error=exc)
                return
        if state is not None:
            self._watch(state, item.future)
        else:
            self._waiters[item.run].append(item.future)

    def _watch(self, state: RunState, future: Future[Any]) -> None:
        if state.finished:
            resolve(future, state)
        else:
            self._waiters[state.run].append(future)

    def _advance(self, state: RunState, now: datetime, turn: Turn) -> None:
        """Decide and apply until the run has nothing more to decide right now."""
        for _ in range(10_000):
            drafts = decide(state, now)
            if not drafts:
                return
            cause = ev.event_id(state.run, state.seq)
            for draft in drafts:
                self._apply(state, draft, turn, causation=cause)
        raise EvenflowError(f"run {state.run} keeps deciding without end; this is a bug in evenflow")

    def _apply(self, state: RunState, draft: Draft, turn: Turn, *, causation: str | None) -> None:
        event = Event(
            run=state.run,
            seq=state.seq + 1,
            type=draft.type,
            at=self.clock.now(),
            node=draft.node,
            attempt=draft.attempt,
            command=draft.command,
            data=draft.data,
            by=self.by,
            causation=causation,
            correlation=state.correlation or state.run,
        )
        evolve(state, event)
        turn.events[state.run].append(event)
        turn.touched[state.run] = state
        if event.type == ev.COMMAND_DISPATCHED:
            envelope = envelope_for(state, state.nodes[draft.node or ""])
            turn.dispatches[envelope.route or "default"].append(envelope)
        elif event.type in ev.RUN_TERMINAL:
            turn.finished.append(state)

    # --- after the append ------------------------------------------------------------------

    def _commit(self, turn: Turn) -> None:
        if turn.events:
            try:
                self._append(turn)
            except Exception as exc:
                self._append_failed(turn, exc)
                return
            self._failures = 0
        batch = turn.batch()
        crash_point("after-append-before-dispatch")
        cancelled = {cancel.run for cancel in turn.cancels}
        for route, envelopes in turn.dispatches.items():
            if cancelled:  # decided earlier in this turn, but the cancellation is logged now
                envelopes = [envelope for envelope in envelopes if envelope.run not in cancelled]
            if envelopes:
                self._send(route, envelopes)
        if turn.outcomes:
            crash_point("after-append-before-ack")
            self._acknowledge([outcome.attempt_id for outcome in turn.outcomes])
        if turn.submits:
            crash_point("after-submit-append-before-answer")
        for submit in turn.submits:
            settle(submit.future, result=submit.run)
        for cancel in turn.cancels:
            settle(cancel.future)
        for state in turn.finished:
            self._finished(state)
        if batch and self._on_append is not None:
            self._after_append(batch)

    def _append(self, turn: Turn) -> None:
        """Append the turn; runs whose events the store refuses for what they hold are split off and
        judged, so the rest is appended and goes on."""
        while batch := turn.batch():
            try:
                self.store.append(batch)
                return
            except EventRefused as exc:
                guilty = {ev.run_of(event_id) for event_id in exc.events} & set(turn.events)
                if not guilty:
                    raise
                self._refused(turn.split(guilty), exc)
            except PayloadError as exc:  # a store that cannot say which events: find them one by one
                refused = [bad for events in turn.events.values() if (bad := self._first_refused(events))]
                if refused:
                    guilty = {ev.run_of(event_id) for event_id in refused}
                    self._refused(turn.split(guilty), EventRefused(str(exc), events=refused))
                return

    def _first_refused(self, events: list[Event]) -> str | None:
        """Append one run's events one at a time; the id of the first the store refuses, if one is.

        The events before it stay written, as any prefix of a turn may: reloading the run finds them.
        """
        for event in events:
            try:
                self.store.append([event])
            except PayloadError:
                return event.id
        return None

    def _refused(self, part: Turn, exc: EventRefused) -> None:
        log.error(
            "the log refused events of run(s) %s, which end; the others go on: %s", sorted(part.events), exc
        )
        for verdict in judge(part, exc, self._converted):
            for submit in verdict.refused:
                self._refuse(submit, exc)
                self._fail_waiters(submit.run, exc)
            for submit in verdict.unsure:  # its run.submitted may have landed: the log answers it
                submit.refusal = exc
                self._unsure[submit.run] = submit
            for item in [*verdict.again, *([verdict.abort] if verdict.abort else [])]:
                self._inbox.put(item)
        self._inflight.update(outcome.attempt_id for outcome in part.outcomes)
        self._reload(list(part.touched))

    def _after_append(self, batch: list[Event]) -> None:
        """Read models follow the log; their failure is logged and never stops the engine."""
        assert self._on_append is not None
        try:
            self._on_append(batch)
        except Exception:
            log.exception("a hook after the append of %d events failed; read models may lag", len(batch))

    def _acknowledge(self, attempt_ids: list[str]) -> None:
        """Tell executors that keep outcomes until they are logged (remote workers) to let go of these."""
        for route, executor in {id(e): (r, e) for r, e in self.executors.items()}.values():
            recorded = getattr(executor, "recorded", None)
            if recorded is None:
                continue
            try:
                recorded(attempt_ids)
            except Exception:
                log.exception("executor %r failed to take acknowledgements", route)

    def _executor(self, route: str) -> Executor:
        """The route's executor; a route no executor is named for goes to a default that takes any."""
        executor = self.executors.get(route)
        if executor is None and getattr(self.executors["default"], "takes_any_route", False):
            return self.executors["default"]
        if executor is None:
            raise ConfigurationError(f"no executor is named {route!r}")
        return executor

    def _send(self, route: str, envelopes: list[Envelope]) -> None:
        """Hand envelopes to their executor; one that refuses them ends those attempts as lost."""
        try:
            self._executor(route).dispatch(envelopes)
        except Exception as exc:
            log.exception("executor %r refused %d envelopes", route, len(envelopes))
            for envelope in envelopes:
                error = ErrorInfo.from_exception(
                    WorkerLost(f"executor {route!r} refused it: {exc}"), reason="lost"
                )
                self._inbox.put(Outcome.failed(envelope, error, by=self.by))
        self._inflight.update(envelope.attempt_id for envelope in envelopes)

    def _finished(self, state: RunState) -> None:
        self._live.pop(state.run, None)
        self._recent[state.run] = state
        while len(self._recent) > RECENT_RUNS:
            self._recent.popitem(last=False)
        for future in self._waiters.pop(state.run, []):
            resolve(future, state)

    # --- when things go wrong --------------------------------------------------------------

    def _append_failed(self, turn: Turn, exc: Exception) -> None:
        """Reload what landed; offer the turn's outcomes again; answer submits by what the log holds."""
        self._failures += 1
        log.warning("append of a turn failed (%r); reloading its runs from the log", exc)
        self._inflight.update(outcome.attempt_id for outcome in turn.outcomes)
        self._unsure.update((submit.run, submit) for submit in turn.submits)
        self._reload(list(turn.touched))
        for item in [*turn.outcomes, *turn.cancels]:
            self._inbox.put(item)
        for submit in turn.submits:
            landed = self._live.get(submit.run) or self._recent.get(submit.run) or self._peek(submit.run)
            if landed is not None:  # it landed after all, or another writer's run holds the id
                self._settle_unsure(landed)
        threading.Event().wait(self._backoff_s())

    def _abandon(self, turn: Turn, exc: Exception) -> None:
        """A turn raised before its append: forget its tentative events and start from the log."""
        self._reload(list(turn.touched))
        for submit in turn.submits:
            if submit.run not in self._live:
                self._fail_waiters(submit.run, exc)
                settle(submit.future, error=exc)
        for cancel in turn.cancels:
            settle(cancel.future, error=exc)

    def _reload(self, runs: list[str], *, resend: bool = True, adopt: bool = False) -> list[RunState]:
        """Fold runs again from the log; resend attempts that are logged but not in flight here.

        Runs another orchestrator drives are left to it, unless ``adopt`` and its
        lease has lapsed. Returns the runs this engine now drives.
        """
        driven: list[RunState] = []
        for run in runs:
            self._live.pop(run, None)
            try:
                state = self._load(run)
            except RunNotFound as exc:
                self._not_in_log(run, exc)
                continue
            except CorruptEvent as exc:
                log.error("run %s is parked: %s", run, exc)
                self._fail_waiters(run, exc)
                continue
            except Exception as exc:
                log.warning("run %s cannot be read now (%r); will try again", run, exc)
                self._stale.setdefault(run, [])
                continue
            self._settle_unsure(state)  # read back at last, after a failed append and an outage
            if state.finished:
                self._foreign.pop(run, None)
                self._finished(state)
                continue
            if not self._owns(state) and not (adopt and self._leases and self._leases.takeable(state.owner)):
                self._foreign[run] = state.owner
                continue
            if adopt and self._park(state):
                continue
            self._foreign.pop(run, None)
            self._live[run] = state
            self._dirty.add(run)
            driven.append(state)
            for node in state.running() if resend else ():
                envelope = envelope_for(state, node)
                if envelope.attempt_id not in self._inflight:
                    self._send(envelope.route or "default", [envelope])
        return driven

    def _park(self, state: RunState) -> bool:
        """Leave a run alone, logging why, when this orchestrator cannot run what it still needs."""
        reason = self._unrunnable(state) if self._unrunnable is not None else None
        if reason is None:
            self._parked.pop(state.run, None)
            return False
        if state.run not in self._parked:
            log.error("run %s is parked: %s", state.run, reason)
        self._parked[state.run] = RunParked(f"run {state.run} is parked: {reason}")
        self._fail_waiters(state.run, self._parked[state.run])
        return True

    def _settle_unsure(self, state: RunState) -> None:
        """A submission whose append failed is in the log after all: answer it from what landed."""
        submit = self._unsure.pop(state.run, None)
        if submit is None:
            return
        if state.digest == submit.digest:
            settle(submit.future, result=submit.run)
        else:
            self._refuse(submit, IdempotencyConflict(submit.key or "", submit.run))

    def _owns(self, state: RunState) -> bool:
        return self._leases is None or state.owner == self.by

    def _take_over(self, runs: list[str]) -> None:
        """Drive these runs from now on: at start, and when their owner's lease lapses.

        Ownership is logged first (``owner.changed``, with leases), fencing out a
        former owner that is only paused. Then each attempt the log shows in
        flight is ended as ``Interrupted`` (reason ``lost``): its process is gone,
        or it answers an orchestrator that no longer drives the run. The planner
        sends it again as a new attempt, and a late result of the old one is
        recognised as late. Retry timers keep their logged due times.
        """
        turn = Turn()
        for state in self._reload(runs, resend=False, adopt=True):
            if not self._owns(state):
                draft = Draft(ev.OWNER_CHANGED, data={"owner": self.by, "previous": state.owner})
                self._apply(state, draft, turn, causation=None)
            for node in state.running():
                exc = Interrupted(f"the orchestrator stopped while attempt {node.attempt} was in flight")
                error = ErrorInfo.from_exception(exc, reason="lost")
                draft = Draft(
                    ev.COMMAND_FAILED,
                    node.path,
                    node.attempt,
                    node.spec["command"],
                    {"error": error.to_doc()},
                )
                self._apply(state, draft, turn, causation=None)
        if turn.events:
            log.info("took over runs: %d events of ownership and interrupted attempts", len(turn.batch()))
        self._commit(turn)

    def _patrol(self) -> None:
        """Every renew period: renew our lease, take runs whose owner's lapsed, follow watched runs."""
        if self._leases is None or not self._leases.due() or self._drain_until is not None:
            return
        try:
            self._leases.tick()
            if not self._leases.scan_due(set(self._foreign.values())) and not self._waiters:
                return
            unfinished = [run for run in self.store.unfinished_runs() if run not in self._live]
        except Exception as exc:
            log.warning("could not renew the lease or list unfinished runs (%r); will try again", exc)
            return
        known = set(unfinished)
        self._foreign = {run: owner for run, owner in self._foreign.items() if run in known}
        free = [
            run
            for run in unfinished
            if run not in self._stale
            and run not in self._parked
            and (run not in self._foreign or self._leases.takeable(self._foreign[run]))
        ]
        if free:
            self._take_over(free)
        followed = [run for run in self._waiters if run not in self._live and run not in self._recent]
        for run in [run for run in followed if run not in known and run not in self._unsure]:
            self._reload([run])  # another orchestrator finished it: answer its watchers from the log

    def _not_in_log(self, run: str, exc: RunNotFound) -> None:
        """A submission whose append failed without landing is offered again, a few times."""
        submit = self._unsure.pop(run, None)
        if submit is not None and submit.refusal is None and submit.tries < SUBMIT_TRIES:
            self._waiters.pop(run, None)
            submit.tries += 1
            self._inbox.put(submit)
            return
        error: BaseException = exc
        if submit is not None:
            error = submit.refusal or StoreUnavailable(
                f"run {run} could not be logged after {SUBMIT_TRIES} tries"
            )
        self._fail_waiters(run, error)
        if submit is not None:
            settle(submit.future, error=error)

    def _retry_stale(self) -> None:
        if not self._stale:
            return
        held = self._stale
        self._stale = {}
        self._reload(list(held))
        for run, outcomes in held.items():
            if run in self._stale:
                self._stale[run].extend(outcomes)
                continue
            for outcome in outcomes:
                self._inbox.put(outcome)

    def _backoff_s(self) -> float:
        return BACKOFF_S[min(max(self._failures, 1), len(BACKOFF_S)) - 1]

    def _fail_waiters(self, run: str, exc: BaseException) -> None:
        for future in self._waiters.pop(run, []):
            settle(future, error=exc)

    def _peek(self, run: str) -> RunState | None:
        """A run another orchestrator drives, as the log has it now (None if it cannot be read)."""
        if run not in self._foreign:
            return None
        try:
            return self._load(run)
        except Exception:
            return None

    def _load(self, run: str) -> RunState:
        events = self.store.read(run)
        if not events:
            raise RunNotFound(run)
        return fold(run, events)
