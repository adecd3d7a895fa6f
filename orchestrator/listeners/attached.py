"""The listeners attached to one orchestrator: a host made on the first ``listen``, woken by its appends."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from ..core.errors import ConfigurationError
from ..core.events import Event
from ..core.listening import Listener, on
from ..core.ports import FeedStore
from .host import ListenerHost, Triggered


def listener_spec(
    pattern: str | Iterable[str] | Listener,
    listener: Callable[[Event], Any] | None,
    **options: Any,
) -> Listener:
    """What ``Orchestrator.listen`` was given, as one ``Listener``."""
    if isinstance(pattern, Listener):
        if listener is not None:
            raise ConfigurationError("listen(on(...)) takes no second listener")
        return pattern
    if listener is None:
        raise ConfigurationError("listen(pattern, listener): give the callable to call with each event")
    return on(pattern, listener, **options)


class AttachedListeners:
    def __init__(self, feed: FeedStore | None, trigger: Triggered, poll_s: float, *, kind: str = "") -> None:
        self._feed = feed
        self._kind = kind
        """The store's class name, for the error of one that cannot feed listeners."""
        self._trigger = trigger
        self._poll_s = poll_s
        self._host: ListenerHost | None = None
        self._started = False
        self._lock = threading.Lock()

    def add(self, spec: Listener) -> None:
        with self._lock:
            if self._host is None:
                if self._feed is None:
                    raise ConfigurationError(
                        f"the store {self._kind} cannot feed listeners (it has no read_feed); "
                        "use the embedded, memory, mongomock or MongoDB store"
                    )
                self._host = ListenerHost(self._feed, self._trigger, poll_s=self._poll_s)
                if self._started:
                    self._host.start()
            host = self._host
        host.add(spec)

    def start(self) -> None:
        with self._lock:
            self._started = True
            if self._host is not None:
                self._host.start()

    def stop(self) -> None:
        with self._lock:
            self._started = False
            host = self._host
        if host is not None:
            host.stop()

    def wake(self, types: set[str]) -> None:
        """Tell the host what types were just appended, so the listeners of those look at once."""
        host = self._host
        if host is not None:
            host.wake(types)
