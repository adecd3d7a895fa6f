"""A scripted MongoDB on the wire: a real PyMongo client talks to it as to a replica set's primary.

Why: mongomock, and tests/support/faulty_store.py over it, raise PyMongo's errors from inside the
client, so they cannot show what the driver itself does with a server's answer: its retries of a
write labelled ``RetryableWriteError`` or cut by a dropped connection, how it splits ``insert_many``
into commands, what it reports when one of them fails, which options it puts on each command, and
what it does when a server stops answering. Here the client is real; only the server is scripted.

``WireServer`` is the primary of tests/support/wire_primary.py (the handshake, ``sent``, the
mongomock backend, the majority snapshot, ``hang``), and scripts its faults:

- holds: ``hold("insert", when=...)`` queues the next matching commands for the test, which takes
  each with ``receive`` (a bounded wait) and answers it: ``serve`` (it lands, and may be answered),
  ``reply``, ``reply_error`` (with labels), or ``hang_up`` (the connection closes);
- ``serve(..., replicated=False)``: a write on this primary alone, unseen by reads with read concern
  ``majority`` until ``replicate()``, and gone after ``fail_over()``;
- ``fail_write``: a fault the server applies itself to every attempt of one write, however many
  retries the driver makes (one, or as many as fit in ``timeoutMS``), and not to the next write.

While the server hangs it neither answers nor holds a command. Client calls that a held command
blocks go through ``in_background``, a thread pool of the server's own; not ``mockupdb.go()``, which
re-raises a copy of the error built from its text, without the ``errorLabels`` or ``details``. Every
wait is bounded: ``receive`` by ``RECEIVE_S``; ``stop`` closes every connection, so a blocked client
call fails at once (or after its server selection timeout, when it tries again) and the pool ends.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from mockupdb import Request

from tests.support.wire_primary import (
    COMMAND_NOT_FOUND,
    DUPLICATE_KEY,
    RECEIVE_S,
    SET_NAME,
    WIRE_VERSION,
    Doc,
    Sent,
    WirePrimary,
    _name,
    command_error,
)

__all__ = [
    "COMMAND_NOT_FOUND",
    "DUPLICATE_KEY",
    "NOT_WRITABLE_PRIMARY",
    "RECEIVE_S",
    "RETRYABLE_WRITE_ERROR",
    "SET_NAME",
    "SHUTDOWN_IN_PROGRESS",
    "WIRE_VERSION",
    "WRITE_CONCERN_FAILED",
    "Sent",
    "WireServer",
    "WriteFault",
    "command_error",
]

NOT_WRITABLE_PRIMARY = 10107
WRITE_CONCERN_FAILED = 64
SHUTDOWN_IN_PROGRESS = 91
RETRYABLE_WRITE_ERROR = "RetryableWriteError"

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(slots=True)
class _Hold:
    name: str
    collection: str
    when: Callable[[Request], bool]
    left: int


@dataclass(slots=True)
class WriteFault:
    """What ``fail_write`` does to every attempt of one insert; ``attempts`` counts those it met."""

    when: Callable[[Request], bool]
    error: Doc | None
    """The command error each attempt gets; None closes the connection instead."""
    land: bool
    write: tuple[bytes, int] | None = None
    """The (session, txnNumber) of the write it fails, once it met the first attempt."""
    attempts: int = 0


class WireServer(WirePrimary):
    """A MockupDB playing the primary of replica set ``rs0``, answering from a mongomock database,
    with the faults a test scripts.

    Use as a context manager; ``url`` is for ``open_store``. ``max_write_batch`` is the
    ``maxWriteBatchSize`` advertised: PyMongo splits a larger ``insert_many`` into several
    ``insert`` commands, so a fault can hit the middle of one.
    """

    def __init__(self, *, database: str = "evenflow", max_write_batch: int = 100_000) -> None:
        super().__init__(database=database, max_write_batch=max_write_batch)
        self._holds: list[_Hold] = []
        self._faults: list[WriteFault] = []
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="wire-client")

    def __enter__(self) -> WireServer:
        super().__enter__()
        return self

    def stop(self) -> None:
        """Close every connection (a client blocked on one gets an error at once), then the pool."""
        super().stop()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def in_background(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Run a client call that a held command will block, so the test can answer it."""
        return self._pool.submit(fn, *args, **kwargs)

    # --- scripting -------------------------------------------------------------------------------

    def hold(
        self,
        name: str,
        *,
        collection: str = "events",
        when: Callable[[Request], bool] = lambda _: True,
        times: int = 1,
    ) -> None:
        """Queue the next ``times`` commands ``name`` on ``collection`` matching ``when`` for ``receive``."""
        with self._lock:
            self._holds.append(_Hold(name.lower(), collection, when, times))

    def fail_write(
        self, *, when: Callable[[Request], bool], error: Doc | None = None, land: bool = False
    ) -> WriteFault:
        """Fail every attempt of the next insert into ``events`` matching ``when``: the driver's retries
        of it (same session and txnNumber) fail alike, a new write passes. Each attempt lands first if
        ``land``; it is answered with ``error`` (a command error document) or, without, a hang-up."""
        fault = WriteFault(when, dict(error) if error else None, land)
        with self._lock:
            self._faults.append(fault)
        return fault

    def receive(self, name: str, *, timeout: float = RECEIVE_S) -> Request:
        """The next held command, which must be a ``name``; AssertionError after ``timeout``."""
        request = self._mock.receives(timeout=timeout)
        if request is None:
            raise AssertionError(f"the wire server stopped while a test waited for {name!r}")
        assert _name(request) == name.lower(), f"expected a held {name!r}, got {request!r}"
        return request

    def serve(
        self, request: Request, *, keep: int | None = None, as_new: bool = False, replicated: bool = True
    ) -> Doc:
        """Run a held command on the backend, as the server would, and return its answer unsent.

        ``keep`` runs only the first ``keep`` documents of an insert (the server stopped there);
        ``as_new`` runs it as a write the server has no record of (so a retry of one that landed
        meets duplicate key 11000), as after a failover or with retryable writes off;
        ``replicated=False`` leaves what an insert wrote on this primary alone (see ``fail_over``).
        """
        with self._lock:
            answer = self._execute(request, keep=keep, as_new=as_new)
            if not replicated and _name(request) == "insert":
                landed = [item["_id"] for item in request.doc["documents"][: answer.get("n", 0)]]
                self._unreplicated.setdefault(request.doc["insert"], set()).update(landed)
            return answer

    def reply(self, request: Request, answer: Mapping[str, Any] | None = None, **fields: Any) -> None:
        """Answer a held command with ``answer`` (``serve``'s, or a ``command_error``) and ``fields``."""
        request.replies({**(answer or {}), **fields})

    def reply_error(self, request: Request, code: int, message: str, *labels: str) -> None:
        """Answer with ``command_error(code, message, *labels)``."""
        request.replies(command_error(code, message, *labels))

    def hang_up(self, request: Request) -> None:
        """Close the connection the command came on, unanswered."""
        request.hangup()

    # --- serving ---------------------------------------------------------------------------------

    def _script(self, request: Request, sent: Sent) -> Callable[[], object] | None:
        """A held command is queued for the test; a faulted write gets its fault; the rest is served."""
        if self._held(request, sent.name, sent.collection):
            return None
        fault = self._fault_for(sent, request)
        if fault is None:
            return super()._script(request, sent)
        if fault.land:
            self._execute(request)
        error = fault.error
        return request.hangup if error is None else lambda: request.replies(error)

    def _held(self, request: Request, name: str, collection: str | None) -> bool:
        for hold in self._holds:
            if (
                hold.left
                and (hold.name, hold.collection) == (name, collection)
                and self._match(hold.when, request)
            ):
                hold.left -= 1
                return True
        return False

    def _fault_for(self, sent: Sent, request: Request) -> WriteFault | None:
        if (sent.name, sent.collection) != ("insert", "events"):
            return None
        for fault in self._faults:
            if fault.write is None and self._match(fault.when, request):
                fault.write = sent.txn
            if fault.write is not None and fault.write == sent.txn:
                fault.attempts += 1
                return fault
        return None

    def _match(self, when: Callable[[Request], bool], request: Request) -> bool:
        """A test's predicate, run on a server thread: its error is a problem to report, not a crash."""
        try:
            return bool(when(request))
        except Exception as exc:
            self.problems.append(f"a predicate failed on {request!r}: {type(exc).__name__}: {exc}")
            return False
