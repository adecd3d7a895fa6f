"""``Client``: submit flows to an ``evenflow serve`` service from a process without the command code.

    with Client("tcp://127.0.0.1:5555") as client:
        client.run(parallel(call("billing.charge", 42), call("mail.send", "x@y")))

Flows travel as JSON in the log's flat form, so a node built here with
``call``/``parallel``/... and a document written by hand (or by another
language) are the same thing to the service. A submission is sent once (a
resend could start a second run); waiting for a result asks again every few
seconds, so a service restart does not leave a waiter hanging.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from .core import errors
from .core.errors import (
    ConfigurationError,
    EvenflowError,
    Failure,
    ResultTimeout,
    RunCancelled,
    RunFailed,
    extra_needed,
)
from .core.flows import Node, encode_flow
from .core.state import NO_INPUT

FlowSpec = Node | Mapping[str, Any]
"""A flow built with ``call``/``parallel``/..., or its JSON document."""

ASK_AGAIN_S = 5.0
"""How long a result waiter listens before asking again (the service may have restarted)."""


class Client:
    """A connection to one service; safe to share between threads."""

    def __init__(
        self,
        endpoint: str,
        *,
        secret_key: str | os.PathLike[str] | None = None,
        server_key: str | os.PathLike[str] | None = None,
        timeout: float = 30.0,
    ) -> None:
        """``secret_key`` (this client's ``NAME.key_secret``) and ``server_key`` (the service's
        ``NAME.key``) turn on CURVE; ``timeout`` bounds how long a submission waits for its answer."""
        with extra_needed("Client"):
            from .transport.connection import Connection
            from .transport.endpoints import check_endpoint
            from .transport.security import client_keys

        keys = client_keys(
            None if secret_key is None else str(secret_key), None if server_key is None else str(server_key)
        )
        self.timeout = timeout
        self._connection = Connection(check_endpoint(endpoint, binding=False), keys=keys)

    def submit(
        self,
        flow: FlowSpec,
        *,
        input: Any = NO_INPUT,
        name: str | None = None,
        key: str | None = None,
        wait_for_worker: float = 0.0,
    ) -> str:
        """Send ``flow``; returns the run id once the service has logged the submission.

        With a ``key`` the submission is idempotent: sending it again (say, after a
        timeout that left you unsure) returns the same run. A flow naming a command
        no connected worker offers is refused (``CommandNotOffered``) unless a worker
        offering it joins within ``wait_for_worker`` seconds.
        """
        return self._submit(flow, input, name, key, wait_for_worker, wait=False)[1]

    def _submit(
        self,
        flow: FlowSpec,
        value: Any,
        name: str | None,
        key: str | None,
        wait_for_worker: float,
        *,
        wait: bool,
    ) -> tuple[str, str]:
        """The request's id and the run's, once the service has logged the submission."""
        body = _submission(flow, value, name, wait=wait)
        if key is not None:
            body["key"] = key
        if wait_for_worker:
            body["wait_for_worker"] = wait_for_worker
        req = self._connection.send("submit", **body)
        return req, str(self._answer(req, self.timeout + wait_for_worker, more=wait)["run"])

    def cancel(self, run_id: str) -> None:
        """Have the service log ``run.cancelled``; nothing of the run is dispatched after it."""
        self._answer(self._connection.send("cancel", run=run_id), self.timeout)

    def retry(self, run_id: str) -> str:
        """Continue a failed or cancelled run as a new run keeping its successful results; its id."""
        return str(self._answer(self._connection.send("retry", run=run_id), self.timeout)["run"])

    def result(self, run_id: str, timeout: float | None = None) -> Any:
        """Wait for the run's result; ``RunFailed`` (naming each failed node) if it failed."""
        return self._result(run_id, timeout, None)

    def _result(self, run_id: str, timeout: float | None, req: str | None) -> Any:
        """Ask for the result every ``ASK_AGAIN_S`` under one request id; with ``req``, a request
        already sent will carry it: listen for that first. Once answered (or given up), later
        answers to the request are dropped on arrival."""
        left = float("inf") if timeout is None else timeout
        asked = req is not None
        try:
            while left > 0:
                if not asked:
                    req = self._connection.send("watch", req, run=run_id)
                asked = False
                assert req is not None
                slice_s = min(ASK_AGAIN_S, left)
                reply = self._connection.wait(req, slice_s)
                if reply is not None:
                    return _outcome(reply)
                left -= slice_s
        finally:
            if req is not None:
                self._connection.forget(req)
        raise ResultTimeout(f"run {run_id} did not finish within {timeout}s")

    def run(
        self,
        flow: FlowSpec,
        *,
        input: Any = NO_INPUT,
        timeout: float | None = None,
        wait_for_worker: float = 0.0,
    ) -> Any:
        """Submit ``flow`` (see ``submit``) and wait for its result.

        One request: the service answers it when the submission is logged and again when the run
        ends. If that second answer is slow to come (the service may have restarted), it is asked
        for again, as ``result`` does.
        """
        req, run_id = self._submit(flow, input, None, None, wait_for_worker, wait=True)
        return self._result(run_id, timeout, req)

    def ask(self, kind: str, **body: Any) -> dict[str, Any]:
        """One request of ``kind`` and its successful reply (the service's error raised as ours)."""
        return self._answer(self._connection.send(kind, **body), self.timeout)

    def _answer(self, req: str, timeout: float, *, more: bool = False) -> dict[str, Any]:
        """The reply to ``req``; unless ``more`` are to come and wanted (a run's end), the request is
        then done with, and a late reply to it is dropped on arrival."""
        reply = self._connection.wait(req, timeout)
        if reply is None or not reply.get("ok") or not more:
            self._connection.forget(req)
        if reply is None:
            raise ConfigurationError(
                f"no answer from {self._connection.endpoint} within {timeout:g}s; is `evenflow serve` "
                "running there, and do the CURVE keys match?"
            )
        if not reply.get("ok"):
            raise _error(reply)
        return reply

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _submission(flow: FlowSpec, value: Any, name: str | None, *, wait: bool) -> dict[str, Any]:
    doc = encode_flow(flow) if isinstance(flow, Node) else flow  # a document is the service's to check
    body: dict[str, Any] = {"flow": doc, "name": name, "wait": wait}
    if value is not NO_INPUT:
        body["input"] = value
    return body


def _outcome(reply: Mapping[str, Any]) -> Any:
    if reply.get("ok"):
        return reply.get("result")
    failures = reply.get("failures")
    if isinstance(failures, list):
        run = str(reply.get("run"))
        found = [Failure.from_doc(doc) for doc in failures if isinstance(doc, dict)]
        raise (RunCancelled if reply.get("status") == "cancelled" else RunFailed)(run, found)
    raise _error(reply)


def _error(reply: Mapping[str, Any]) -> EvenflowError:
    """The service's error as the same evenflow exception type, by name; else ``EvenflowError``."""
    error = reply.get("error") if isinstance(reply.get("error"), dict) else {}
    assert isinstance(error, dict)
    kind = getattr(errors, str(error.get("type")), None)
    message = str(error.get("message", "the service refused the request"))
    if not (isinstance(kind, type) and issubclass(kind, EvenflowError)):
        return EvenflowError(message)
    rebuilt = kind.__new__(kind)  # the service's message as it stands; constructors would reword it
    Exception.__init__(rebuilt, message)
    fields = error.get("fields")
    for name, value in fields.items() if isinstance(fields, dict) else ():
        if isinstance(name, str) and not name.startswith("_") and not hasattr(EvenflowError, name):
            setattr(rebuilt, name, value)  # as JSON carries it: a tuple comes back as a list
    return rebuilt
