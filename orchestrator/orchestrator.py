"""``Orchestrator``: the facade users hold over engine, executors, listeners and store.

Sync and async faces both check in the caller's thread (a refused flow raises where it was
submitted and appends nothing), build one ``Submission`` and wait on the engine's future.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from types import TracebackType
from typing import TYPE_CHECKING, Any

from . import wiring
from .core.clock import SystemClock
from .core.errors import ConfigurationError, RunNotFound
from .core.events import Event
from .core.evolve import fold
from .core.flows import Node
from .core.listening import DEFAULT_CASCADE_LIMIT, Listener, Since, Trigger
from .core.ports import Clock, EventStore
from .core.registry import Registry
from .core.retry_run import retry_submission
from .core.state import NO_INPUT, RunState
from .core.submitting import Submission
from .engine import Engine
from .engine.ownership import LEASE_S
from .handles import Run, id_of, wait, wait_async
from .listeners.attached import AttachedListeners, listener_spec
from .listeners.host import POLL_S
from .listeners.triggers import Triggering
from .projecting import Lag, Projecting
from .store import abilities

if TYPE_CHECKING:
    from projections.documents import Documents

__all__ = ["Orchestrator", "Run"]

log = logging.getLogger("evenflow.orchestrator")

READ_MODEL_SETTLE_S = 30.0
"""How long ``runs_collection`` and ``close`` wait for the read model to hold what was appended."""


class Orchestrator:
    """Runs flows of registered commands, logging every step to an event store.

    ``executor`` is the default route, ``executors`` adds named ones (``route=``);
    without a ``registry`` commands live on remote workers (``zmq://``). ``store``
    is a URL or an ``EventStore``, by default the embedded store in ``home``.
    It resumes runs left unfinished (unless ``resume=False``: then only its own) and, on a shared
    MongoDB log, those whose owner's lease (``lease_s``) lapsed. Listener chains are cut after
    ``cascade_limit`` hops; listeners poll for other writers' events every ``listener_poll_s``.
    With ``read_models``, ``runs_collection`` follows every append.
    """

    def __init__(
        self,
        registry: Registry | None = None,
        *,
        executor: wiring.ExecutorSpec = wiring.DEFAULT_EXECUTOR,
        executors: Mapping[str, wiring.ExecutorSpec] | None = None,
        store: str | EventStore | None = None,
        home: str | os.PathLike[str] | None = None,
        clock: Clock | None = None,
        read_models: bool = True,
        lease_s: float = LEASE_S,
        cascade_limit: int = DEFAULT_CASCADE_LIMIT,
        listener_poll_s: float = POLL_S,
        resume: bool = True,
    ) -> None:
        wiring.check_settings(registry, cascade_limit, listener_poll_s)
        self.registry = registry if registry is not None else Registry()
        routes = wiring.routes(executor, executors)
        self.store = wiring.open_store(store, home)
        self.abilities = abilities(self.store)
        self._owns_store = store is None or isinstance(store, str)  # else its caller may share it
        self._checker = wiring.flow_checker(registry, routes)
        self.read_models = wiring.runs_projector(self.store, self.abilities) if read_models else None
        self._projecting = (
            Projecting(self.read_models, rebuild_from=wiring.private_log(self.abilities))
            if self.read_models is not None
            else None
        )
        self.by = wiring.orchestrator_id()
        self.cascade_limit = cascade_limit
        self.listener_poll_s = float(listener_poll_s)
        feed, kind = self.abilities.feed, type(self.store).__name__  # trigger late-bound: it may be wrapped
        self._listeners = AttachedListeners(feed, lambda t: self.trigger(t), self.listener_poll_s, kind=kind)
        self._triggering = Triggering(self.store, self._submit_logged, self._checker.check, cascade_limit)
        self._appended = wiring.AfterAppend(self._projecting, self._triggering, self._listeners)
        self.engine = Engine(
            self.store,
            routes,
            clock=clock or SystemClock(),
            by=self.by,
            check_flow=self._checker.check,
            on_append=self._appended,
            leases=wiring.leases(self.abilities, self.by, lease_s),
            unrunnable=wiring.unrunnable(registry) if registry is not None else None,
            adopt=resume,
        )
        self._started = False
        self._closed = False
        self._starting = threading.Lock()

    def start(self) -> Orchestrator:
        with self._starting:
            if self._closed:
                raise ConfigurationError("this orchestrator was closed; make a new one to go on")
            if not self._started:
                wiring.catch_up(self.abilities, self.read_models)
                if self._projecting is not None:
                    self._projecting.start()
                self.engine.start(self.registry)
                self._listeners.start()
                self._started = True
        return self

    def close(self, *, drain_s: float = 0.0) -> None:
        """Stop: log what is waiting, close executors and the store (if opened here). With ``drain_s``
        (SIGTERM), first wait that long at most for attempts in flight, so a restart sends fewer again."""
        with self._starting:
            self._closed = True
        self._listeners.stop()
        if self._started:
            self.engine.close(drain_s=drain_s)
            if self._projecting is not None:
                self._projecting.stop(READ_MODEL_SETTLE_S)
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

    def wait_for_appends(self, timeout: float) -> None:
        """Block until this orchestrator appends (or ``timeout`` passes): for a service's long polls."""
        self._appended.wait(timeout)

    @property
    def runs_collection(self) -> Documents | None:
        """The ``runs`` read model kept here (query it with ``projections.run_history``), or None;
        once it holds every batch this orchestrator has appended (it follows on a thread of its own)."""
        if self._projecting is not None:
            self._projecting.wake()  # a private model sleeps until someone asks for it
        if self._projecting is not None and not self._projecting.settle(READ_MODEL_SETTLE_S):
            log.warning("the runs read model lags more than %gs behind the log", READ_MODEL_SETTLE_S)
        return None if self.read_models is None else self.read_models.runs

    @property
    def read_model_lag(self) -> Lag | None:
        """How far the ``runs`` read model has trailed the log (its thread measures it), or None."""
        return None if self._projecting is None else self._projecting.lag

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

        Each flow it returns becomes a run caused by the event, exactly once across
        restarts. ``since="start"`` hears the whole log; ``process=True`` runs it in a
        child process. Also takes a ``Listener`` made with ``on(...)``.
        """
        spec = listener_spec(pattern, listener, predicate=predicate, name=name, since=since, process=process)
        self._listeners.add(spec)
        return spec

    def trigger(self, triggers: Sequence[Trigger]) -> None:
        """Log what listeners answered as runs keyed on their cause; return once all are durable.

        Listener hosts call this: the one in this process, and ``evenflow
        listen`` through the service. See ``listeners.triggers``.
        """
        self.start()
        self._triggering.trigger(triggers)

    def submit(
        self, flow: Node, *, input: Any = NO_INPUT, name: str | None = None, key: str | None = None
    ) -> Run:
        """Check ``flow``, log its submission durably, and return a handle to the run. Under a ``key``
        the same submission returns the same run; another payload raises ``IdempotencyConflict``."""
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
        """``submit`` without blocking (checks ``flow`` at once); the future holds the run id once logged."""
        return self._submit_logged(self._submission(flow, input, name, key))

    def cancel(self, run_id: str, reason: str = "cancelled by request", timeout: float | None = 30.0) -> None:
        """Log ``run.cancelled``: nothing more is dispatched; attempts running finish, their outcomes
        ignored. Cancelling twice does nothing; a finished run raises ``InvalidRunState``."""
        self.start()
        wait(self.engine.cancel(run_id, reason), timeout, run_id)

    def resume(self, run_id: str, timeout: float | None = 30.0) -> None:
        """Drive an unfinished run from now on: one parked because this orchestrator lacked one of its
        commands (a worker offering it may have come since), or one whose owner is gone. Raises
        ``RunParked`` if its commands are still missing, ``InvalidRunState`` if it ended or a live
        orchestrator drives it."""
        self.start()
        wait(self.engine.resume(run_id), timeout, run_id)

    def retry(self, run_id: str) -> Run:
        """Continue a failed or cancelled run as a new run keeping every result that succeeded
        (the same new run each time); ``InvalidRunState`` for a running or succeeded run."""
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
        return Submission.of(self._checker.encode(flow), input=input, name=name, key=key)

    def _run(self, flow: Node, input: Any, key: str | None) -> tuple[Future[Any], Future[str]]:
        """Submit with a watcher: the run's result, and its logged submission (for a timeout's message)."""
        result: Future[Any] = Future()
        return result, self._submit_logged(self._submission(flow, input, None, key), watcher=result)

    def _submit_logged(self, submission: Submission, watcher: Future[Any] | None = None) -> Future[str]:
        self.start()
        return self.engine.submit(submission, watcher=watcher)
