"""``zmq://HOST:PORT``: the executor whose workers are other processes, on this host or others.

It binds at construction (a taken port fails at once, not at the first call)
and hands envelopes to the hub, which routes them by command name to the
workers that registered it. Outcomes the engine has logged are acknowledged
back to the worker that sent them (``recorded``); until then the worker keeps
each one and sends it again after a reconnect.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from orchestrator.core.envelope import Envelope, Outcome
from orchestrator.core.ports import Report
from orchestrator.core.registry import Registry
from orchestrator.transport.hub import Hub, OnRequest
from orchestrator.transport.scheduler import WorkerInfo
from orchestrator.transport.security import ServerKeys

from ..remote import SUBMITTED, RemoteExecutor


class ZmqExecutor(RemoteExecutor):
    kind: ClassVar[str] = "zmq"
    takes_any_route = True
    """A route names a queue that workers join with ``--queue``, not another executor."""

    def __init__(
        self,
        bind: str,
        *,
        registry: Registry | None = None,
        heartbeat_s: float = 1.0,
        liveness: int = 3,
        schedule_timeout_s: float = 300.0,
        keys: ServerKeys | None = None,
        on_request: OnRequest | None = None,
    ) -> None:
        super().__init__(registry)
        self._hub = Hub(
            bind,
            on_outcome=self._arrived,
            on_request=on_request,
            heartbeat_s=heartbeat_s,
            liveness=liveness,
            schedule_timeout_s=schedule_timeout_s,
            keys=keys,
            by=self.by,
        )

    def start(self, registry: Registry, report: Report) -> None:
        """Serve the socket from now on; what peers sent since the bind waits in it until then."""
        super().start(registry, report)
        self._hub.start()

    @property
    def endpoint(self) -> str:
        """Where workers connect: the bound address, with the real port if 0 was asked for."""
        return self._hub.endpoint

    @property
    def hub(self) -> Hub:
        return self._hub

    def workers(self) -> list[WorkerInfo]:
        return self._hub.workers()

    def announced_options(self, command: str) -> Mapping[str, Any] | None:
        """The options workers registered ``command`` with (``retry``, ``timeout_s``), for the FlowChecker."""
        return self._hub.scheduler.announced(command)  # a dict read: safe from any thread

    def recorded(self, attempt_ids: Sequence[str]) -> None:
        self._hub.acknowledge(attempt_ids)

    def _send(self, envelopes: list[Envelope]) -> None:
        self._hub.start()  # the concurrent.futures face may be used without start()
        self._hub.send_calls(envelopes)

    def _arrived(self, outcome: Outcome, peer: bytes) -> None:
        if outcome.run == SUBMITTED:  # no log behind submit(): acknowledge at once
            self._hub.acknowledge([outcome.attempt_id])
        self._deliver(outcome)

    def _shutdown(self, *, wait: bool, cancel_futures: bool) -> None:
        self._cancel_futures()
        self._hub.close()

    def __repr__(self) -> str:
        return f"ZmqExecutor({self.endpoint!r})"
