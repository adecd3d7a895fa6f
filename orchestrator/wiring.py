"""How an ``Orchestrator`` is put together from what its caller gave: executors, store, read models, leases.

Optional parts (workers, projections, pymongo) are imported here, lazily, so
``evenflow --help`` and the core need none of them.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Mapping
from concurrent.futures import Executor as StdExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from .core.errors import ConfigurationError
from .core.ports import EventStore, Executor, LeaseStore
from .core.registry import Registry
from .core.state import RunState
from .engine.ownership import Leases
from .engine.recovery import Unrunnable

if TYPE_CHECKING:
    from projections.read_models import RunsProjector

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


def open_store(spec: str | EventStore | None, home: str | os.PathLike[str] | None) -> EventStore:
    from .store import open_store

    if spec is None or isinstance(spec, str):
        return open_store(spec, home=Path(home) if home is not None else None)
    return spec


def leases(store: EventStore, by: str, lease_s: float) -> Leases | None:
    """Leases, when other orchestrators may share the store and this one may write to it."""
    if isinstance(store, LeaseStore) and not getattr(store, "read_only", False):
        return Leases(store, by, lease_s=lease_s)
    return None


def runs_projector(store: EventStore) -> RunsProjector:
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


def catch_up(store: EventStore, read_models: RunsProjector | None) -> None:
    """Bring a ``runs`` collection kept beside the log up to it before the engine appends more.

    As with the engine's own hook, a read model that fails is logged and never
    stops the orchestrator; the runs it touches later are mended.
    """
    from .store.mongo import MongoStore

    if read_models is None or not isinstance(store, MongoStore):
        return
    from projections.read_models import catch_up

    try:
        behind = catch_up(store.events, read_models.runs)
    except Exception:
        log.exception("the runs read model could not catch up with the log; it may lag")
        return
    if behind:
        log.info("the runs read model caught up %d runs with the log", len(behind))


def unrunnable(registry: Registry) -> Unrunnable:
    """Why a run found unfinished cannot go on here: commands it still needs that ``registry`` lacks."""

    def reason(state: RunState) -> str | None:
        missing = sorted(name for name in state.commands_ahead() if name not in registry)
        if not missing:
            return None
        names = ", ".join(repr(name) for name in missing)
        return (
            f"its flow still calls {names}, which this orchestrator's registry lacks; it is left as it is "
            "for an orchestrator (or `evenflow resume --registry ...`) whose registry has them"
        )

    return reason


def check_settings(registry: object, cascade_limit: object, listener_poll_s: object) -> None:
    if registry is not None and not isinstance(registry, Registry):
        raise ConfigurationError(
            f"Orchestrator needs a Registry (or None for remote workers), got {registry!r}"
        )
    if type(cascade_limit) is not int or cascade_limit < 1:
        raise ConfigurationError(f"cascade_limit must be a whole number >= 1, got {cascade_limit!r}")
    if not isinstance(listener_poll_s, int | float) or not 0 < listener_poll_s <= 3600:
        raise ConfigurationError(f"listener_poll_s must be seconds in (0, 3600], got {listener_poll_s!r}")
