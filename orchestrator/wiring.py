"""How an ``Orchestrator`` is put together from what its caller gave: executors, store, read models, leases.

Optional parts (workers, projections, pymongo) are imported here, lazily, so
``evenflow --help`` and the core need none of them.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Executor as StdExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from .core.errors import ConfigurationError
from .core.events import Event
from .core.flow_check import FlowChecker
from .core.ports import EventStore, Executor, takes_any_route
from .core.registry import Registry
from .core.state import RunState
from .engine.ownership import Leases
from .engine.recovery import Unrunnable
from .listeners.attached import AttachedListeners
from .listeners.triggers import Triggering

if TYPE_CHECKING:
    from projections.read_models import RunsProjector

    from .projecting import Projecting
    from .store import StoreAbilities

log = logging.getLogger("evenflow.orchestrator")

ExecutorSpec = str | Executor | StdExecutor
"""A URL (``threads://8``, ``zmq://HOST:PORT``), an evenflow executor, any ``concurrent.futures.Executor``."""
DEFAULT_EXECUTOR = "threads"


def orchestrator_id() -> str:
    """How this orchestrator signs its events and its lease: host, process, and a few random digits."""
    return f"orchestrator:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def routes(default: ExecutorSpec, named: Mapping[str, ExecutorSpec] | None) -> dict[str, Executor]:
    from workers.factory import as_executor

    return {"default": as_executor(default), **{k: as_executor(v) for k, v in (named or {}).items()}}


def flow_checker(registry: Registry | None, routes: dict[str, Executor]) -> FlowChecker:
    def needs_pickle(route: str) -> bool:
        return routes[route].requires_pickle

    return FlowChecker(registry, routes, needs_pickle, any_route=takes_any_route(routes["default"]))


def open_store(spec: str | EventStore | None, home: str | os.PathLike[str] | None) -> EventStore:
    from .store import open_store

    if spec is None or isinstance(spec, str):
        return open_store(spec, home=Path(home) if home is not None else None)
    return spec


def leases(can: StoreAbilities, by: str, lease_s: float) -> Leases | None:
    """Leases, when other orchestrators may share the store and this one may write to it."""
    return None if can.leases is None else Leases(can.leases, by, lease_s=lease_s)


def runs_projector(store: EventStore, can: StoreAbilities) -> RunsProjector:
    """Where ``runs`` lives: beside a MongoDB or mongomock log; else private and in memory.

    The embedded store's ``.events`` is a mongomock mirror loaded on first use
    (slow, and it slows later appends), so the engine never touches it: missing
    events come from ``store.read`` instead, a primary-key lookup.
    """
    from projections.read_models import RunsProjector

    from .store.faithful_mock import client

    if can.read_models is not None:
        return RunsProjector.beside(can.read_models.events, read_log=store.read)
    return RunsProjector.in_memory(client()["evenflow"]["runs"], read_log=store.read)


def private_log(can: StoreAbilities) -> Callable[[], Iterator[Event]] | None:
    """How a ``runs`` model kept in memory (no stored one beside the log) is built when first asked
    for: the store's whole log. None where the model lives beside the log and follows every append."""
    if can.read_models is not None or can.scan is None:
        return None
    scan = can.scan
    return lambda: scan.scan(lambda run, exc: log.warning("the runs model skips run %s: %s", run, exc))


def catch_up(can: StoreAbilities, read_models: RunsProjector | None) -> None:
    """Bring a ``runs`` collection kept beside the log up to it before the engine appends more.

    As with the engine's own hook, a read model that fails is logged and never
    stops the orchestrator; the runs it touches later are mended.
    """
    if read_models is None or can.read_models is None:
        return
    from projections.read_models import catch_up

    try:
        behind = catch_up(can.read_models.events, read_models.runs)
    except Exception:
        log.exception("the runs read model could not catch up with the log; it may lag")
        return
    if behind:
        log.info("the runs read model caught up %d runs with the log", len(behind))


def unrunnable(registry: Registry) -> Unrunnable:
    """Why a run found unfinished cannot go on here: commands it still needs that ``registry`` lacks."""

    def reason(state: RunState) -> str | None:
        if state.parts_due:  # not all its nodes are known: it fails as incomplete, or is completed
            return None
        missing = sorted(name for name in state.commands_ahead() if name not in registry)
        if not missing:
            return None
        names = ", ".join(repr(name) for name in missing)
        return (
            f"its flow still calls {names}, which this orchestrator's registry lacks; it is left as it is "
            "for an orchestrator (or `evenflow resume --registry ...`) whose registry has them"
        )

    return reason


class AfterAppend:
    """What follows each durable append (on the engine thread): read models (handed to their own
    thread), listeners, long polls."""

    def __init__(
        self, read_models: Projecting | None, triggering: Triggering, listeners: AttachedListeners
    ) -> None:
        self._read_models = read_models
        self._triggering = triggering
        self._listeners = listeners
        self._appends = threading.Condition()

    def __call__(self, batch: list[Event]) -> None:
        if self._read_models is not None:
            self._read_models.put(batch)
        self._triggering.remember(batch)
        self._listeners.wake({event.type for event in batch})
        with self._appends:
            self._appends.notify_all()

    def wait(self, timeout: float) -> None:
        """Block until the next append, or ``timeout``."""
        with self._appends:
            self._appends.wait(timeout)


def check_settings(registry: object, cascade_limit: object, listener_poll_s: object) -> None:
    if registry is not None and not isinstance(registry, Registry):
        raise ConfigurationError(
            f"Orchestrator needs a Registry (or None for remote workers), got {registry!r}"
        )
    if type(cascade_limit) is not int or cascade_limit < 1:
        raise ConfigurationError(f"cascade_limit must be a whole number >= 1, got {cascade_limit!r}")
    if not isinstance(listener_poll_s, int | float) or not 0 < listener_poll_s <= 3600:
        raise ConfigurationError(f"listener_poll_s must be seconds in (0, 3600], got {listener_poll_s!r}")
