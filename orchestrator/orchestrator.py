"""``Orchestrator``: the composition root users hold, with sync and async faces.

Both faces are thin: each validates in the caller's thread (so a refused flow
appends nothing and raises where it was submitted) and then waits on the same
engine future, blocking or awaiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import socket
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor as StdExecutor
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .core import events as ev
from .core.codec import check_event_data, check_payload
from .core.errors import ConfigurationError, EvenflowError, IdempotencyConflict, ResultTimeout
from .core.events import Event
from .core.evolve import fold
from .core.flows import Node
from .core.keys import digest, run_for_key
from .core.listening import (
    DEFAULT_CASCADE_LIMIT,
    NOTHING,
    Listener,
    Since,
    Trigger,
    cascade_limit,
    failure_doc,
    on,
)
from .core.ports import Clock, EventStore, Executor, FeedStore, LeaseStore
from .core.registry import Registry
from .core.state import NO_INPUT, RunState
from .core.submission import FlowChecker
from .engine import Engine
from .engine.ownership import LEASE_S, Leases
from .listeners.host import POLL_S, ListenerHost

if TYPE_CHECKING:
    from projections.documents import Documents
    from projections.read_models import RunsProjector

log = logging.getLogger("evenflow.orchestrator")

ExecutorSpec = str | Executor | StdExecutor
"""A URL (``threads://8``, ``zmq://HOST:PORT``), an evenflow executor, any ``concurrent.futures.Executor``."""
DEFAULT_EXECUTOR = "threads"
TRIGGER_WAIT_S = 60.0
"""How long a listener host waits for its triggers to be logged before it tries the batch again."""
DEPTHS_KEPT = 10_000
"""Runs whose cascade depth an orchestrator remembers."""


class Orchestrator:
    """Runs flows of registered commands, logging every step to an event store.

    ``executor`` is the default route; ``executors`` adds named routes that
    nodes or commands select with ``route=``. Without a ``registry`` the
    commands live only on remote workers (a ``zmq://`` executor): names are
    checked there, and a route names a group of workers. ``store`` is a URL or an
    ``EventStore``; without one, the durable embedded store in ``home``.

    On MongoDB several orchestrators can share the log: each drives the runs it
    submitted, and takes over those of one whose lease (``lease_s``) lapsed.

    ``listen`` adds listeners; what they trigger may trigger more, up to
    ``cascade_limit`` hops from a run submitted by hand. This orchestrator's
    appends wake its listeners at once; they look for what other writers
    logged every ``listener_poll_s``.

    With ``read_models`` (the default) the ``runs`` read model follows every
    append (``runs_collection``): beside the log on a MongoDB or mongomock store,
    caught up with the log at start; in a private in-memory collection
    otherwise, holding the runs this process touched (the embedded store's
    readers rebuild theirs from the log with ``projections.read_models``).
    """

    def __init__(
        self,
        registry: Registry | None = None,
        *,
        executor: ExecutorSpec = DEFAULT_EXECUTOR,
        executors: Mapping[str, ExecutorSpec] | None = None,
        store: str | EventStore | None = None,
        home: str | os.PathLike[str] | None = None,
        clock: Clock | None = None,
        read_models: bool = True,
        lease_s: float = LEASE_S,
        cascade_limit: int = DEFAULT_CASCADE_LIMIT,
        listener_poll_s: float = POLL_S,
    ) -> None:
        if registry is not None and not isinstance(registry, Registry):
            raise ConfigurationError(
                f"Orchestrator needs a Registry (or None for remote workers), got {registry!r}"
            )
        self.registry = registry if registry is not None else Registry()
        routes = {"default": _executor(executor), **{k: _executor(v) for k, v in (executors or {}).items()}}
        self.store = _store(store, home)
        self._owns_store = store is None or isinstance(store, str)
        """A store given as an object stays open on close: its caller may share it with others."""
        self._checker = FlowChecker(
            registry,
            routes,
            lambda route: routes[route].requires_pickle,
            any_route=bool(getattr(routes["default"], "takes_any_route", False)),
        )
        from .core.clock import SystemClock

        self.read_models = _runs_projector(self.store) if read_models else None
        self.by = f"orchestrator:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        leases = None
        if isinstance(self.store, LeaseStore) and not getattr(self.store, "read_only", False):
            leases = Leases(self.store, self.by, lease_s=lease_s)
        if type(cascade_limit) is not int or cascade_limit < 1:
            raise ConfigurationError(f"cascade_limit must be a whole number >= 1, got {cascade_limit!r}")
        self.cascade_limit = cascade_limit
        if not isinstance(listener_poll_s, int | float) or not 0 < listener_poll_s <= 3600:
            raise ConfigurationError(f"listener_poll_s must be seconds in (0, 3600], got {listener_poll_s!r}")
        self.listener_poll_s = float(listener_poll_s)
        self._listeners: ListenerHost | None = None
        self._depths: OrderedDict[str, int] = OrderedDict()
        self._depths_lock = threading.Lock()
        self._appends = threading.Condition()
        self.engine = Engine(
            self.store,
            routes,
            clock=clock or SystemClock(),
            by=self.by,
            check_flow=self._checker.check,
            on_append=self._appended,
            leases=leases,
            unrunnable=self._unrunnable if registry is not None else None,
        )
        self._started = False
        self._closed = False
        self._starting = threading.Lock()

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> Orchestrator:
        with self._starting:
            if self._closed:
                raise ConfigurationError("this orchestrator was closed; make a new one to go on")
            if not self._started:
                self._catch_up()
                self.engine.start(self.registry)
                if self._listeners is not None:
                    self._listeners.start()
                self._started = True
        return self

    def _unrunnable(self, state: RunState) -> str | None:
        """Why a run found unfinished cannot go on here: commands it still needs that the registry lacks."""
        missing = sorted(name for name in state.commands_ahead() if name not in self.registry)
        if not missing:
            return None
        names = ", ".join(repr(name) for name in missing)
        return (
            f"its flow still calls {names}, which this orchestrator's registry lacks; it is left as it is "
            "for an orchestrator (or `evenflow resume --registry ...`) whose registry has them"
        )

    def _appended(self, batch: list[Event]) -> None:
        """After each durable append (engine thread): read models follow, listeners wake."""
        if self.read_models is not None:
            self.read_models.apply(batch)
        self._remember_depths(batch)
        if self._listeners is not None:
            self._listeners.wake({event.type for event in batch})
        with self._appends:
            self._appends.notify_all()

    def wait_for_appends(self, timeout: float) -> None:
        """Block until this orchestrator appends (or ``timeout`` passes): for a service's long polls."""
        with self._appends:
            self._appends.wait(timeout)

    def _remember_depths(self, batch: list[Event]) -> None:
        """The depth of each run submitted here, so triggering on its events needs no store read."""
        submitted = [event for event in batch if event.type == ev.RUN_SUBMITTED]
        if submitted:
            with self._depths_lock:
                for event in submitted:
                    self._depths[event.run] = int(event.data.get("depth", 0))
                while len(self._depths) > DEPTHS_KEPT:
                    self._depths.popitem(last=False)

    @property
    def runs_collection(self) -> Documents | None:
        """The ``runs`` read model this orchestrator maintains (None without read models).

        Query it with ``projections.run_history``. On mongomock and in memory it
        is a ``MemoryRuns``: read it through this, not through the mongomock
        database, and from any thread while the engine writes.
        """
        return None if self.read_models is None else self.read_models.runs

    def _catch_up(self) -> None:
        """Bring a ``runs`` collection kept beside the log up to it before the engine appends more.

        As with the engine's own hook, a read model that fails is logged and
        never stops the orchestrator; the runs it touches later are mended.
        """
        from .store.mongo import MongoStore

        if self.read_models is None or not isinstance(self.store, MongoStore):
            return
        from projections.read_models import catch_up

        try:
            behind = catch_up(self.store.events, self.read_models.runs)
        except Exception:
            log.exception("the runs read model could not catch up with the log; it may lag")
            return
        if behind:
            log.info("the runs read model caught up %d runs with the log", len(behind))

    def close(self, *, drain_s: float = 0.0) -> None:
        """Stop: log what is waiting, then close executors and the store (if it was opened here).

        With ``drain_s`` (what SIGTERM asks of ``evenflow`` commands), first take
        no new submissions and dispatch nothing new, and wait up to that long for
        the attempts in flight to report, so their outcomes are logged now rather
        than sent again after a restart.
        """
        with self._starting:
            self._closed = True
        if self._listeners is not None:
            self._listeners.stop()
        if self._started:
            self.engine.close(drain_s=drain_s)
            self._started = False
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> Orchestrator:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def __aenter__(self) -> Orchestrator:
        return self.start()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    # --- listeners ---------------------------------------------------------------------------

    def listen(
        self,
        pattern: str | Iterable[str] | Listener,
        listener: Callable[[Event], Any] | None = None,
        *,
        predicate: Callable[[Event], bool] | None = None,
        name: str | None = None,
        since: Since = "now",
        process: bool = False,
    ) -> Listener:
        """Call ``listener`` with every logged event whose type matches ``pattern`` (``order.*``).

        It may return None, a flow or a list of flows; each flow becomes a run
        caused by the event, exactly once however often the orchestrator
        restarts. Coroutine listeners run on the listeners' event loop, sync
        ones in its threads, ``process=True`` ones in a child process. Without
        a checkpoint, a listener hears events from now on (``since="start"``:
        the whole log). Also takes a ``Listener`` made with ``on(...)``.
        """
        if isinstance(pattern, Listener):
            if listener is not None:
                raise ConfigurationError("listen(on(...)) takes no second listener")
            spec = pattern
        else:
            if listener is None:
                raise ConfigurationError(
                    "listen(pattern, listener): give the callable to call with each event"
                )
            spec = on(pattern, listener, predicate=predicate, name=name, since=since, process=process)
        with self._starting:
            if self._listeners is None:
                if not isinstance(self.store, FeedStore):
                    raise ConfigurationError(
                        f"the store {type(self.store).__name__} cannot feed listeners (it has no read_feed); "
                        "use the embedded, memory, mongomock or MongoDB store"
                    )
                self._listeners = ListenerHost(self.store, self.trigger, poll_s=self.listener_poll_s)
                if self._started:
                    self._listeners.start()
            host = self._listeners
        host.add(spec)
        return spec

    def trigger(self, triggers: Sequence[Trigger]) -> None:
        """Log what listeners answered as runs keyed on their cause; return once all are durable.

        A trigger whose run is logged already (a replay after a crash) is
        answered by that run, whatever it holds: the first answer stands. Past
        ``cascade_limit`` the run is logged failed with ``CascadeLimit``; an
        event of such a run triggers nothing. Listener hosts call this: the one
        in this process, and ``evenflow listen`` through the service.
        """
        self.start()
        futures = [future for trigger in triggers if (future := self._trigger_one(trigger)) is not None]
        for future in futures:
            with contextlib.suppress(IdempotencyConflict):
                _wait(future, TRIGGER_WAIT_S)

    def _trigger_one(self, trigger: Trigger) -> Future[str] | None:
        depth = self._depth(ev.run_of(trigger.event)) + 1
        if depth > self.cascade_limit + 1:  # the cause is itself the record of a cut chain
            log.warning(
                "listener %r: event %s is past the cascade limit; not answered",
                trigger.listener,
                trigger.event,
            )
            return None
        failure, flow = trigger.failure, trigger.flow
        if failure is None and depth > self.cascade_limit:
            failure = failure_doc(
                trigger.listener,
                trigger.event,
                trigger.type,
                cascade_limit(trigger, depth, self.cascade_limit),
            )
        if failure is None and flow is not None:
            try:
                self._checker.check(flow)  # resolves defaults in place: the trigger's own copy
                check_event_data(flow, f"the flow listener {trigger.listener!r} answered")
            except EvenflowError as exc:
                failure = failure_doc(trigger.listener, trigger.event, trigger.type, exc)
        if failure is not None:
            flow = copy.deepcopy(NOTHING)
        assert flow is not None
        more: dict[str, Any] = {"listener": trigger.listener, "depth": depth}
        if failure is not None:
            more["refused"] = failure  # run.submitted alone fails the run: no append can half-log it
        return self.engine.submit(
            trigger.run,
            flow,
            key=trigger.key,
            digest=digest(flow, NO_INPUT, None, **more),
            more=more,
            cause=trigger.event,
            correlation=trigger.correlation,
        )

    def _depth(self, run: str) -> int:
        """How many listener hops led to ``run`` (0 for one submitted by hand), remembered for recent runs."""
        with self._depths_lock:
            depth = self._depths.get(run)
            if depth is not None:
                self._depths.move_to_end(run)
        if depth is None:
            events = self.store.read(run)
            depth = int(events[0].data.get("depth", 0)) if events else 0
            with self._depths_lock:
                self._depths[run] = depth
                if len(self._depths) > DEPTHS_KEPT:
                    self._depths.popitem(last=False)
        return depth

    # --- submitting and waiting ------------------------------------------------------------

    def submit(
        self, flow: Node, *, input: Any = NO_INPUT, name: str | None = None, key: str | None = None
    ) -> Run:
        """Check ``flow``, log its submission durably, and return a handle to the run.

        With a ``key``, submitting the same flow, input and name again (from any
        process, even concurrently) returns the run the key already names; a
        different payload under the key raises ``IdempotencyConflict``.
        """
        return Run(self, _wait(self._submit(flow, input, name, key=key), None))

    async def submit_async(
        self, flow: Node, *, input: Any = NO_INPUT, name: str | None = None, key: str | None = None
    ) -> Run:
        return Run(self, await asyncio.wrap_future(self._submit(flow, input, name, key=key)))

    def run(
        self, flow: Node, *, input: Any = NO_INPUT, timeout: float | None = None, key: str | None = None
    ) -> Any:
        """Submit ``flow`` and wait for its result; a failed run raises ``RunFailed``."""
        result: Future[Any] = Future()
        submitted = self._submit(flow, input, None, watcher=result, key=key)
        return _wait(result, timeout, _id_of(submitted))

    async def run_async(
        self, flow: Node, *, input: Any = NO_INPUT, timeout: float | None = None, key: str | None = None
    ) -> Any:
        result: Future[Any] = Future()
        submitted = self._submit(flow, input, None, watcher=result, key=key)
        return await _wait_async(result, timeout, _id_of(submitted))

    def submit_future(
        self, flow: Node, *, input: Any = NO_INPUT, name: str | None = None, key: str | None = None
    ) -> Future[str]:
        """``submit`` without blocking, for a service answering many callers from one thread.

        Checks ``flow`` at once (raising as ``submit`` does); the future holds the
        run id once the submission is logged.
        """
        return self._submit(flow, input, name, key=key)

    def cancel(self, run_id: str, reason: str = "cancelled by request", timeout: float | None = 30.0) -> None:
        """Log ``run.cancelled``: nothing of the run is dispatched after it, and the run ends cancelled.

        Attempts already running finish on their own; their outcomes are logged as
        ignored. Cancelling a cancelled run does nothing; a finished one raises
        ``InvalidRunState``, an unknown one ``RunNotFound``.
        """
        self.start()
        _wait(self.engine.cancel(run_id, reason), timeout, run_id)

    def retry(self, run_id: str) -> Run:
        """Continue a failed or cancelled run as a new run that keeps every result that succeeded.

        Retrying the same run again returns the same new run (it is keyed on the
        old one). Raises ``InvalidRunState`` for a running or succeeded run.
        """
        from .core.retry_run import retry_submission

        self.start()
        run, data = retry_submission(run_id, self._events_of(run_id))
        input = data.pop("input", NO_INPUT)
        flow, name, key, digest = data.pop("flow"), data.pop("name"), data.pop("key"), data.pop("digest")
        submitted = self.engine.submit(run, flow, input=input, name=name, key=key, digest=digest, more=data)
        return Run(self, _wait(submitted, None))

    def result_future(self, run_id: str) -> Future[Any]:
        """The run's result (or ``RunFailed``) as a future, without blocking."""
        return self.engine.watch(run_id)

    def result(self, run_id: str, timeout: float | None = None) -> Any:
        return _wait(self.engine.watch(run_id), timeout, run_id)

    def state(self, run_id: str) -> RunState:
        """The run as its log stands now, folded afresh."""
        return fold(run_id, self._events_of(run_id))

    def _events_of(self, run_id: str) -> list[Event]:
        from .core.errors import RunNotFound

        events = self.events(run_id)
        if not events:
            raise RunNotFound(run_id)
        return events

    def events(self, run_id: str) -> list[Event]:
        return self.store.read(run_id)

    def _submit(
        self,
        flow: Node,
        input: Any,
        name: str | None,
        *,
        watcher: Future[Any] | None = None,
        key: str | None = None,
    ) -> Future[str]:
        doc = self._checker.encode(flow)
        if input is not NO_INPUT:
            check_payload(input, "input")
            input = copy.deepcopy(input)  # the caller may go on changing its own object
        run = uuid.uuid4().hex if key is None else run_for_key(key)
        fingerprint = None if key is None else digest(doc, input, name)
        self.start()
        return self.engine.submit(
            run, doc, input=input, name=name, watcher=watcher, key=key, digest=fingerprint
        )


class Run:
    """A handle on one run: its id, its result and its status."""

    def __init__(self, orchestrator: Orchestrator, run_id: str) -> None:
        self._orchestrator = orchestrator
        self.id = run_id

    def result(self, timeout: float | None = None) -> Any:
        return self._orchestrator.result(self.id, timeout)

    async def result_async(self, timeout: float | None = None) -> Any:
        return await _wait_async(self._orchestrator.engine.watch(self.id), timeout, self.id)

    def status(self) -> str:
        """``running``, ``succeeded``, ``failed`` or ``cancelled``."""
        return self._orchestrator.state(self.id).status

    def cancel(self, reason: str = "cancelled by request") -> None:
        self._orchestrator.cancel(self.id, reason)

    def retry(self) -> Run:
        return self._orchestrator.retry(self.id)

    def __repr__(self) -> str:
        return f"Run({self.id!r})"


RunId = str | Callable[[], str]
"""A run id, or how to learn it once the submission is logged (for the message of a timeout)."""


def _wait(future: Future[Any], timeout: float | None, run_id: RunId = "") -> Any:
    try:
        return future.result(timeout)
    except FutureTimeout:
        raise _timed_out(run_id, timeout) from None


async def _wait_async(future: Future[Any], timeout: float | None, run_id: RunId = "") -> Any:
    try:
        return await asyncio.wait_for(asyncio.wrap_future(future), timeout)
    except TimeoutError:
        raise _timed_out(run_id, timeout) from None


def _timed_out(run_id: RunId, timeout: float | None) -> ResultTimeout:
    name = run_id if isinstance(run_id, str) else run_id()
    return ResultTimeout(f"run {name or '(not logged yet)'} did not finish within {timeout}s")


def _id_of(submitted: Future[str]) -> Callable[[], str]:
    """The run id once ``submitted`` resolved, else ''."""
    return lambda: submitted.result() if submitted.done() and submitted.exception() is None else ""


def _executor(spec: ExecutorSpec) -> Executor:
    from workers.factory import as_executor

    return as_executor(spec)


def _runs_projector(store: EventStore) -> RunsProjector:
    """Where ``runs`` lives: beside a MongoDB or mongomock log; else private and in memory.

    The embedded store's ``.events`` is a mongomock mirror loaded on first use
    (slow, and it slows later appends), so the engine never touches it: missing
    events come from ``store.read`` instead, a primary-key lookup.
    """
    from projections.read_models import RunsProjector

    from .store.faithful_mock import client
    from .store.mongo import MongoStore

    if isinstance(store, MongoStore):
        return RunsProjector.beside(store.events, read_log=store.read)
    return RunsProjector.in_memory(client()["evenflow"]["runs"], read_log=store.read)


def _store(spec: str | EventStore | None, home: str | os.PathLike[str] | None) -> EventStore:
    from .store import open_store

    if spec is None or isinstance(spec, str):
        return open_store(spec, home=Path(home) if home is not None else None)
    return spec
