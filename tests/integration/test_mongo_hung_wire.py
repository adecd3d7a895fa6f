"""A server that stops answering in the middle of a run: every store call gives up within the operation
timeout, the engine backs off instead of hanging, and once the server answers again the run finishes.

The server is scripted on the wire (tests/support/wire_server.py) behind a real PyMongo client:
it answers the handshake throughout, as a ``mongod`` stuck on its disk does, but takes every other
command and answers none while hung. The store's default operation timeout (``DEFAULT_TIMEOUT_MS``,
PyMongo's ``timeoutMS``) is shortened for the test; nothing else is.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest

from orchestrator import Orchestrator, call, sequence
from orchestrator.core import events as ev
from orchestrator.core.errors import StoreUnavailable
from orchestrator.core.events import Event
from orchestrator.store import mongo, open_store
from orchestrator.store.mongo import MongoStore
from tests.commands import make_registry
from tests.support.polling import wait_until
from tests.support.wire_server import WireServer

BOUND_MS = 1_000
"""The operation timeout in force here (the default is 10 s)."""
DEADLINE_S = 60.0


@dataclass(frozen=True, slots=True)
class Failure:
    method: str
    seconds: float
    error: BaseException


class Timed:
    """The store, timing each call the orchestrator makes and keeping those that raised."""

    def __init__(self, store: MongoStore) -> None:
        self.store = store
        self.failures: list[Failure] = []
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.store, name)
        return self._timed(name, attribute) if callable(attribute) else attribute

    def _timed(self, name: str, method: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.monotonic()
            try:
                return method(*args, **kwargs)
            except Exception as exc:
                with self._lock:
                    self.failures.append(Failure(name, time.monotonic() - start, exc))
                raise

        return timed

    # Spelled out so the store's abilities (runtime Protocols) are found on the wrapper.
    def append(self, events: Any) -> None:
        self.__getattr__("append")(events)

    def read(self, run: str, after_seq: int = 0) -> list[Event]:
        return cast(list[Event], self.__getattr__("read")(run, after_seq))

    def unfinished_runs(self) -> list[str]:
        return cast(list[str], self.__getattr__("unfinished_runs")())

    def renew_lease(self, owner: str) -> None:
        self.__getattr__("renew_lease")(owner)

    def read_leases(self) -> dict[str, tuple[int, bool]]:
        return cast(dict[str, tuple[int, bool]], self.__getattr__("read_leases")())

    def release_lease(self, owner: str) -> None:
        self.__getattr__("release_lease")(owner)

    def close(self) -> None:
        self.store.close()


@pytest.fixture
def primary() -> Iterator[WireServer]:
    with WireServer() as server:
        yield server
    assert not server.problems, f"the scripted primary could not serve: {server.problems}"


def stored(primary: WireServer, run: str) -> list[dict[str, Any]]:
    """The run's events as the server holds them."""
    return primary.stored("events", {"run": run}, sort="seq")


def test_a_hung_server_is_waited_out_and_the_run_then_finishes(
    primary: WireServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mongo, "DEFAULT_TIMEOUT_MS", BOUND_MS)
    store = Timed(cast(MongoStore, open_store(primary.url)))
    gate = tmp_path / "gate"
    orch = Orchestrator(make_registry(), store=store, executor="threads://2", read_models=False).start()
    try:
        run = orch.submit(sequence(call("wait_for_file", str(gate), 41, DEADLINE_S), call("inc"))).id
        wait_until(
            lambda: any(doc["type"] == ev.COMMAND_DISPATCHED for doc in stored(primary, run)),
            timeout=DEADLINE_S,
            what="the first step dispatched",
        )
        primary.hang()
        gate.touch()  # its outcome now meets a server that does not answer

        wait_until(
            lambda: orch.engine.backoff.failures > 0, timeout=DEADLINE_S, what="the engine backing off"
        )
        assert store.failures
        for failure in store.failures:
            assert isinstance(failure.error, StoreUnavailable), failure
            assert f"timed out after {BOUND_MS} ms; the server is hung or unreachable" in str(failure.error)
            assert failure.seconds < 4 * BOUND_MS / 1000, failure  # the bound, and some slack for a busy host
        assert orch.engine.alive()

        primary.answer()
        assert orch.result(run, timeout=DEADLINE_S) == 42
    finally:
        primary.answer()
        orch.close()
        store.close()

    events = [doc["type"] for doc in stored(primary, run)]
    assert events[0] == ev.RUN_SUBMITTED and events[-1] == ev.RUN_SUCCEEDED
    assert [doc["seq"] for doc in stored(primary, run)] == list(range(1, len(events) + 1))
