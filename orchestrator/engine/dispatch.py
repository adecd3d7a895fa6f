"""Handing envelopes to executors, and telling them which outcomes the log now holds.

An executor that refuses envelopes does not stop the engine: those attempts
end as lost, through the inbox like any outcome, and the planner decides
whether they run again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from ..core.envelope import Envelope, ErrorInfo, Outcome
from ..core.errors import ConfigurationError, WorkerLost
from ..core.logfields import fields
from ..core.ports import AcknowledgedExecutor, Executor, takes_any_route

log = logging.getLogger("evenflow.engine")


class Dispatcher:
    def __init__(
        self, executors: Mapping[str, Executor], inflight: set[str], put: Callable[[Any], None], by: str
    ) -> None:
        self.executors = dict(executors)
        self._acknowledged = {
            id(executor): (route, executor)
            for route, executor in self.executors.items()
            if isinstance(executor, AcknowledgedExecutor)
        }
        """Executors to tell which outcomes are logged, each once however many routes name it."""
        self._any_route = takes_any_route(self.executors["default"])
        self._inflight = inflight
        self._put = put
        self._by = by

    def start(self, registry: Any) -> None:
        for executor in self.executors.values():
            executor.start(registry, self._put)

    def close(self) -> None:
        for executor in self.executors.values():
            executor.close()

    def send(self, route: str, envelopes: list[Envelope]) -> None:
        """Hand envelopes to their executor; one that refuses them ends those attempts as lost."""
        try:
            self._executor(route).dispatch(envelopes)
        except Exception as exc:
            first = envelopes[0]
            about = fields(first.run, first.node, first.attempt)
            log.exception("executor %r refused %d envelopes", route, len(envelopes), extra=about)
            for envelope in envelopes:
                error = ErrorInfo.from_exception(
                    WorkerLost(f"executor {route!r} refused it: {exc}"), reason="lost"
                )
                self._put(Outcome.failed(envelope, error, by=self._by))
        self._inflight.update(envelope.attempt_id for envelope in envelopes)

    def acknowledge(self, attempt_ids: list[str]) -> None:
        """Tell executors that keep outcomes until they are logged (remote workers) to let go of these."""
        for route, executor in self._acknowledged.values():
            try:
                executor.recorded(attempt_ids)
            except Exception:
                log.exception("executor %r failed to take acknowledgements", route)

    def isolated(self, route: str | None) -> bool:
        """Whether ``route``'s executor runs commands in other processes (see ``Executor``)."""
        try:
            return bool(getattr(self._executor(route or "default"), "isolated", False))
        except ConfigurationError:
            return False

    def _executor(self, route: str) -> Executor:
        """The route's executor; a route no executor is named for goes to a default that takes any."""
        executor = self.executors.get(route)
        if executor is None and self._any_route:
            return self.executors["default"]
        if executor is None:
            raise ConfigurationError(f"no executor is named {route!r}")
        return executor
