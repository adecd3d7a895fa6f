"""Checking a flow against the registry and routes before anything is appended.

A refused submission leaves no trace in the log. What passes is stored with
every default resolved (retry policy, timeout, route), so replaying the run
later needs neither the registry nor the options that were in force.

Without a registry (``evenflow serve``), a command's defaults are the options
its workers registered it with and announced (``AnnouncesOptions``, the
default executor): a node's own options override them.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Collection, Mapping
from typing import Any, Protocol, runtime_checkable

from .errors import InvalidOption
from .flows import Node, call_specs, encode_flow
from .registry import Registry

NeedsPickle = Callable[[str], bool]
"""Whether the executor behind a route sends commands to another process."""


@runtime_checkable
class AnnouncesOptions(Protocol):
    """An executor whose remote workers announce the options their commands were registered with."""

    def announced_options(self, command: str) -> Mapping[str, Any] | None:
        """``retry`` (a policy's stored form) and ``timeout_s`` for ``command``, or None if unknown."""


class FlowChecker:
    """Resolves and validates the commands of a flow for one orchestrator.

    Without a registry (a service whose commands live on remote workers) names
    are only checked for form; the workers that announce them decide the rest.
    With ``any_route``, a route names a group of workers rather than an executor.
    """

    def __init__(
        self,
        registry: Registry | None,
        routes: Collection[str],
        needs_pickle: NeedsPickle,
        *,
        any_route: bool = False,
    ) -> None:
        self.registry = registry
        self.routes = routes
        self.needs_pickle = needs_pickle
        self.any_route = any_route
        default = routes.get("default") if isinstance(routes, Mapping) else None
        self.announced = default.announced_options if isinstance(default, AnnouncesOptions) else None

    def encode(self, flow: Node) -> dict[str, Any]:
        """The flat, checked, defaults-resolved form of ``flow``."""
        doc = encode_flow(flow)
        self.check(doc)
        return doc

    def check(self, doc: dict[str, Any]) -> None:
        """Resolve defaults in place; raise UnknownCommand / InvalidOption on the first problem."""
        paths = {id(spec["template"]): spec["path"] for spec in doc["nodes"] if spec["kind"] == "each"}
        for spec in call_specs(doc):
            self._resolve(spec, spec.get("path") or paths[id(spec)])

    def _resolve(self, spec: dict[str, Any], path: str) -> None:
        command = self.registry.get(spec["command"], path=path) if self.registry is not None else None
        if command is not None and spec.get("retry") is None and command.retry is not None:
            spec["retry"] = command.retry.to_doc()
        if command is not None and spec.get("timeout_s") is None and command.timeout is not None:
            spec["timeout_s"] = command.timeout.total_seconds()
        if command is None and self.announced is not None:
            for option, given in (self.announced(spec["command"]) or {}).items():
                if spec.get(option) is None:
                    spec[option] = copy.deepcopy(given)
        route = spec.get("route") or (command.route if command is not None else None)
        if route is not None and route not in self.routes and not self.any_route:
            raise InvalidOption(
                f"node {path} routes {spec['command']!r} to executor {route!r}, which this orchestrator "
                f"lacks; known: {sorted(self.routes)}. Pass executors={{{route!r}: ...}}"
            )
        spec["route"] = route
        if command is not None and self.needs_pickle(route if route and route in self.routes else "default"):
            reason = self.registry.unsendable_reason(spec["command"]) if self.registry else None
            if reason:
                raise InvalidOption(f"node {path}: {reason}")
