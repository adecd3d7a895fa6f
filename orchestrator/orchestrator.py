"""``Orchestrator``: the facade users hold over engine, executors, listeners and store.

Both faces are thin: each checks in the caller's thread (so a refused flow
appends nothing and raises where it was submitted), builds one ``Submission``
and waits on the engine's future, blocking or awaiting.
"""

from __future__ import annotations

import asyncio
import copy
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from types import TracebackType
from typing import TYPE_CHECKING, Any

from . import wiring
from .core.clock import SystemClock
from .core.codec import check_payload
from .core.errors import ConfigurationError, RunNotFound
from .core.events import Event
from .core.evolve import fold
from .core.flows import Node
from .core.listening import DEFAULT_CASCADE_LIMIT, Listener, Since, Trigger, on
from .core.ports import Clock, EventStore, FeedStore
from .core.registry import Registry
from .core.retry_run import retry_submission
from .core.state import NO_INPUT, RunState
from .core.submission import FlowChecker
from .core.submitting import Submission
from .engine import Engine
from .engine.ownership import LEASE_S
from .handles import Run, id_of, wait, wait_async
from .listeners.host import POLL_S, ListenerHost
from .listeners.triggers import Triggering
from .wiring import ExecutorSpec

if TYPE_CHECKING:
    from projections.documents import Documents

__all__ = ["ExecutorSpec", "Orchestrator", "Run"]


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
        executor: ExecutorSpec = wiring.DEFAULT_EXECUTOR,
        executors: Mapping[str, ExecutorSpec] | None = None,
        store: str | EventStore | None = None,
        home: str | os.PathLike[str] | None = None,
        clock: Clock | None = None,
        read_models: bool = True,
        lease_s: float = LEASE_S,
        cascade_limit: int = DEFAULT_CASCADE_LIMIT,
        listener_poll_s: float = POLL_S,
    ) -> None:
        wiring.check_settings(registry, cascade_limit, listener_poll_s)
        self.registry = registry if registry is not None else Registry()
        routes = wiring.routes(executor, executors)
        self.store = wiring.open_store(store, home)
        self._owns_store = store is None or isinstance(store, str)
        """A store given as an object stays open on close: its caller may share it with others."""
        any_route = bool(getattr(routes["default"], "takes_any_route", False))
        self._checker = FlowChecker(
            registry, routes, lambda r: routes[r].requires_pickle, any_route=any_route
        )
        self.read_models = wiring.runs_projector(self.store) if read_models else None
        self.by = wiring.orchestrator_id()
        self.cascade_limit = cascade_limit
        self.listener_poll_s = float(listener_poll_s)
        self._listeners: ListenerHost | None = None
        self._triggering = Triggering(self.store, self._submit_logged, self._checker.check, cascade_limit)
        self._appends = threading.Condition()
        self.engine = Engine(
            self.store,
            routes,
            clock=clock or SystemClock(),
            by=self.by,
            check_flow=self._checker.check,
            on_append=self._appended,
            leases=wiring.leases(self.store, self.by, lease_s),
            unrunnable=wiring.unrunnable(registry) if registry is not None else None,
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
                wiring.catch_up(self.store, self.read_models)
                self.engine.start(self.registry)
                if self._listeners is not None:
                    self._listeners.start()
                self._started = True
        return self

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

    def _appended(self, batch: list[Event]) -> None:
        """After each durable append (engine thread): read models follow, listeners wake."""
        if self.read_models is not None:
            self.read_models.apply(batch)
        self._triggering.remember(batch)
        if self._listeners is not None:
            self._listeners.wake({event.type for event in batch})
        with self._appends:
            self._appends.notify_all()

    def wait_for_appends(self, timeout: float) -> None:
        """Block until this orchestrator appends (or ``timeout`` passes): for a service's long polls."""
        with self._appends:
            self._appends.wait(timeout)

    @property
    def runs_collection(self) -> Documents | None:
        """The ``runs`` read model this orchestrator maintains (None without read models).

        Query it with ``projections.run_history``. On mongomock and in memory it
        is a ``MemoryRuns``: read it through this, not through the mongomock
        database, and from any thread while the engine writes.
        """
        return None if self.read_models is None else self.read_models.runs

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
        elif listener is None:
            raise ConfigurationError("listen(pattern, listener): give the callable to call with each event")
        else:
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

        Listener hosts call this: the one in this process, and ``evenflow
        listen`` through the service. See ``listeners.triggers``.
        """
        self.start()
        self._triggering.trigger(triggers)

    # --- submitting and waiting ------------------------------------------------------------

    def submit(
        self, flow: Node, *, input: Any = NO_INPUT, name: str | None = None, key: str | None = None
    ) -> Run:
        """Check ``flow``, log its submission durably, and return a handle to the run.

        With a ``key``, submitting the same flow, input and name again (from any
        process, even concurrently) returns the run the key already names; a
        different payload under the key raises ``IdempotencyConflict``.
        """
        return Run(self, wait(self.submit_future(flow, input=input, name=name, key=key), None))

    async def submit_async(
        self, flow: Node, *, input: Any = NO_INPUT, name: str | None = None, key: str | None = None
    ) -> Run:
        return Run(self, await wait_async(self.submit_future(flow, input=input, name=name, key=key), None))

    def run(
        self, flow: Node, *, input: Any = NO_INPUT, timeout: float | None = None, key: str | None = None
    ) -> Any:
        """Submit ``flow`` and wait for its result; a failed run raises ``RunFailed``."""
        result, submitted = self._run(flow, input, key)
        return wait(result, timeout, id_of(submitted))

    async def run_async(
        self, flow: Node, *, input: Any = NO_INPUT, timeout: float | None = None, key: str | None = None
    ) -> Any:
        result, submitted = self._run(flow, input, key)
        return await wait_async(result, timeout, id_of(submitted))

    def submit_future(
        self, flow: Node, *, input: Any = NO_INPUT, name: str | None = None, key: str | None = None
    ) -> Future[str]:
        """``submit`` without blocking, for a service answering many callers from one thread.

        Checks ``flow`` at once (raising as ``submit`` does); the future holds the
        run id once the submission is logged.
        """
        return self._submit_logged(self._submission(flow, input, name, key))

    def cancel(self, run_id: str, reason: str = "cancelled by request", timeout: float | None = 30.0) -> None:
        """Log ``run.cancelled``: nothing of the run is dispatched after it, and the run ends cancelled.

        Attempts already running finish on their own; their outcomes are logged as
        ignored. Cancelling a cancelled run does nothing; a finished one raises
        ``InvalidRunState``, an unknown one ``RunNotFound``.
        """
        self.start()
        wait(self.engine.cancel(run_id, reason), timeout, run_id)

    def retry(self, run_id: str) -> Run:
        """Continue a failed or cancelled run as a new run that keeps every result that succeeded.

        Retrying the same run again returns the same new run (it is keyed on the
        old one). Raises ``InvalidRunState`` for a running or succeeded run.
        """
        self.start()
        return Run(self, wait(self._submit_logged(retry_submission(run_id, self._events_of(run_id))), None))

    def result_future(self, run_id: str) -> Future[Any]:
        """The run's result (or ``RunFailed``) as a future, without blocking."""
        return self.engine.watch(run_id)

    def result(self, run_id: str, timeout: float | None = None) -> Any:
        return wait(self.engine.watch(run_id), timeout, run_id)

    def state(self, run_id: str) -> RunState:
        """The run as its log stands now, folded afresh."""
        return fold(run_id, self._events_of(run_id))

    def events(self, run_id: str) -> list[Event]:
        return self.store.read(run_id)

    def _events_of(self, run_id: str) -> list[Event]:
        events = self.events(run_id)
        if not events:
            raise RunNotFound(run_id)
        return events

    def _submission(self, flow: Node, input: Any, name: str | None, key: str | None) -> Submission:
        """The one place a flow from the API becomes a ``Submission``: checked, defaults resolved."""
        doc = self._checker.encode(flow)
        if input is not NO_INPUT:
            check_payload(input, "input")
            input = copy.deepcopy(input)  # the caller may go on changing its own object
        return Submission.new(doc, input=input, name=name, key=key)

    def _run(self, flow: Node, input: Any, key: str | None) -> tuple[Future[Any], Future[str]]:
        """Submit with a watcher: the run's result, and its logged submission (for a timeout's message)."""
        result: Future[Any] = Future()
        return result, self._submit_logged(self._submission(flow, input, None, key), watcher=result)

    def _submit_logged(self, submission: Submission, watcher: Future[Any] | None = None) -> Future[str]:
        self.start()
        return self.engine.submit(submission, watcher=watcher)
