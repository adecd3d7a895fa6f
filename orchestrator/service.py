"""``evenflow serve``: the orchestrator as a network service that holds none of the command code.

Workers (``evenflow worker``) and clients (``Client``, ``evenflow submit``)
connect to one ZeroMQ endpoint. Flows arrive as JSON in the log's own flat
form; command names are checked by the workers that announce them, so the
service needs no registry. Requests are answered from the hub's thread
without blocking it: each reply is sent when its engine future completes.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from .core.codec import check_payload
from .core.errors import (
    CommandNotOffered,
    ConfigurationError,
    EvenflowError,
    InvalidOption,
    RunCancelled,
    RunFailed,
)
from .core.events import utcnow
from .core.flow_docs import parse_flow
from .core.flows import call_specs
from .core.ports import PruneStore
from .core.state import NO_INPUT
from .listeners.service_feed import LISTENER_REQUESTS, listener_request
from .orchestrator import Orchestrator

if TYPE_CHECKING:
    from .transport.protocol import Request
    from .transport.security import ServerKeys

log = logging.getLogger("evenflow.service")

RETAIN_EVERY_S = 3_600.0
"""How often ``serve --retain`` prunes, at most."""
LISTENER_THREADS = 16
"""Requests answered at once off the hub's thread: a listener's long poll, or a submission waiting
for a worker that offers its commands, holds one while it waits."""
MAX_WAIT_S = 86_400.0
"""The longest a submission may wait for a worker that offers its commands."""


class Retention:
    """``serve --retain``: prune the runs that finished longer ago than ``retain_s``, now and every
    ``RETAIN_EVERY_S`` (a tenth of the retention when shorter), until stopped."""

    def __init__(self, store: PruneStore | None, retain_s: float) -> None:
        self._store, self._retain_s = store, retain_s

    def run(self, stop: threading.Event) -> None:
        if self._store is None:
            log.warning("--retain is ignored: this store cannot prune (prune works on the embedded store)")
            return
        every = min(RETAIN_EVERY_S, self._retain_s / 10)
        while True:
            before = utcnow() - timedelta(seconds=self._retain_s)
            try:
                done = self._store.prune(before)
            except EvenflowError as exc:
                log.warning("pruning runs finished before %s failed; trying again later: %s", before, exc)
            else:
                if done.runs:
                    log.info("pruned %d run(s) that finished before %s", done.runs, before)
            if stop.wait(every):
                return


class Service:
    """An orchestrator bound to ``bind``, dispatching to remote workers and serving clients."""

    def __init__(
        self,
        bind: str,
        *,
        store: str | None = None,
        home: str | os.PathLike[str] | None = None,
        keys: ServerKeys | None = None,
        heartbeat_s: float = 1.0,
        liveness: int = 3,
        schedule_timeout_s: float = 300.0,
        retain_s: float | None = None,
    ) -> None:
        from workers.zmq import ZmqExecutor

        from .transport.endpoints import check_endpoint

        self.executor = ZmqExecutor(
            check_endpoint(bind, binding=True),
            heartbeat_s=heartbeat_s,
            liveness=liveness,
            schedule_timeout_s=schedule_timeout_s,
            keys=keys,
            on_request=self._request,
        )
        try:
            self.orchestrator = Orchestrator(None, executor=self.executor, store=store, home=home)
        except BaseException:
            self.executor.close()
            raise
        self._listener_pool = ThreadPoolExecutor(LISTENER_THREADS, thread_name_prefix="evenflow-feed")
        self._retain_s = retain_s
        self._watching: set[tuple[bytes, str]] = set()
        """(peer, request) of the watches waiting for their run's end: a client asking again under the
        same request id (``Client.result`` every few seconds) is served by the one already waiting."""
        self._watching_lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return self.executor.endpoint

    def start(self) -> Service:
        self.orchestrator.start()
        return self

    def serve(self, stop: threading.Event, *, drain_s: float = 0.0) -> None:
        """Serve until ``stop`` is set (by SIGTERM or SIGINT in ``evenflow serve``), then drain and close."""
        self.start()
        if self._retain_s is not None:
            retain = Retention(self.orchestrator.abilities.prune, self._retain_s)
            threading.Thread(target=retain.run, args=(stop,), name="evenflow-retain", daemon=True).start()
        try:
            stop.wait()
        finally:
            self.close(drain_s=drain_s)

    def close(self, *, drain_s: float = 0.0) -> None:
        self._listener_pool.shutdown(wait=False, cancel_futures=True)
        self.orchestrator.close(drain_s=drain_s)  # closes the executor too, once the engine has stopped

    def __enter__(self) -> Service:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- requests, on the hub's thread ------------------------------------------------------

    def _request(self, peer: bytes, request: Request) -> None:
        try:
            if request.type == "submit":
                self._submit(peer, request.req, request.body)
            elif request.type == "watch":
                self._watch(peer, request.req, _run_id(request.body))
            elif request.type in ("cancel", "retry"):
                self._control(peer, request.req, request.type, _run_id(request.body))
            elif request.type in LISTENER_REQUESTS:
                self._for_listeners(peer, request.req, request.type, request.body)
        except Exception as exc:  # every request gets an answer; ours name the problem
            if not isinstance(exc, EvenflowError):
                log.exception("a %s request failed unexpectedly", request.type)
            self._reply(peer, request.req, ok=False, error=_error(exc))

    def _submit(self, peer: bytes, req: str, body: Mapping[str, Any]) -> None:
        """Check the submission; log it now, or once workers offer its commands, or refuse it."""
        flow = parse_flow(body.get("flow"))
        value = body.get("input", NO_INPUT)
        if value is not NO_INPUT:
            check_payload(value, "input")
        name, key = body.get("name"), body.get("key")
        for field, given in (("name", name), ("key", key)):
            if given is not None and not isinstance(given, str):
                raise InvalidOption(f"a run's {field} must be a string, got {type(given).__name__}")
        wait_s = _wait_for_worker(body.get("wait_for_worker", 0))
        wanted = [(spec["command"], spec.get("route")) for spec in call_specs(body["flow"])]  # checked
        offers = self.executor.hub.offers
        if not offers.missing(wanted):
            self._log(peer, req, body, self.orchestrator.submit_future(flow, input=value, name=name, key=key))
        elif not wait_s:
            raise _not_offered(offers.missing(wanted), offers.commands(), waited_s=0.0)
        else:

            def when_offered() -> None:
                try:
                    missing = offers.wait(wanted, wait_s)
                    if missing:
                        raise _not_offered(missing, offers.commands(), waited_s=wait_s)
                    submitted = self.orchestrator.submit_future(flow, input=value, name=name, key=key)
                    self._log(peer, req, body, submitted)
                except Exception as exc:
                    self._reply(peer, req, ok=False, error=_error(exc))

            self._listener_pool.submit(when_offered)

    def _log(self, peer: bytes, req: str, body: Mapping[str, Any], submitted: Future[str]) -> None:
        """Answer once the submission is logged (or refused), then watch the run if asked to."""

        def answer(future: Future[str]) -> None:
            error = future.exception()
            if error is not None:
                self._reply(peer, req, ok=False, stage="submitted", error=_error(error))
                return
            run = future.result()
            self._reply(peer, req, ok=True, stage="submitted", run=run)
            if body.get("wait"):
                self._watch(peer, req, run)

        submitted.add_done_callback(answer)

    def _watch(self, peer: bytes, req: str, run: str) -> None:
        with self._watching_lock:
            if (peer, req) in self._watching:
                return
            self._watching.add((peer, req))

        def answer(future: Future[Any]) -> None:
            with self._watching_lock:
                self._watching.discard((peer, req))
            error = future.exception()
            finished: dict[str, Any] = {"stage": "finished", "run": run}
            if error is None:
                self._reply(peer, req, ok=True, status="succeeded", result=future.result(), **finished)
            elif isinstance(error, RunFailed):
                finished["status"] = "cancelled" if isinstance(error, RunCancelled) else "failed"
                finished["failures"] = [dataclasses.asdict(failure) for failure in error.failures]
                self._reply(peer, req, ok=False, error=_error(error), **finished)
            else:
                self._reply(peer, req, ok=False, error=_error(error), **finished)

        try:
            self.orchestrator.result_future(run).add_done_callback(answer)
        except BaseException:  # not waiting after all: a later ask must not be taken for a duplicate
            with self._watching_lock:
                self._watching.discard((peer, req))
            raise

    def _control(self, peer: bytes, req: str, kind: str, run: str) -> None:
        """Cancel or retry off the hub's thread: both wait for an append."""

        def act() -> None:
            try:
                if kind == "cancel":
                    self.orchestrator.cancel(run)
                    self._reply(peer, req, ok=True, run=run)
                else:
                    self._reply(peer, req, ok=True, run=self.orchestrator.retry(run).id)
            except Exception as exc:
                self._reply(peer, req, ok=False, error=_error(exc))

        threading.Thread(target=act, name=f"evenflow-{kind}", daemon=True).start()

    def _for_listeners(self, peer: bytes, req: str, kind: str, body: Mapping[str, Any]) -> None:
        """What ``evenflow listen`` asks (the feed, checkpoints, triggers), answered off the hub's thread."""

        def act() -> None:
            try:
                orch = self.orchestrator
                feed = orch.abilities.feed
                if feed is None:
                    store_type = type(orch.store).__name__
                    raise ConfigurationError(f"the service's store {store_type} cannot feed listeners")
                answer = listener_request(feed, orch.trigger, kind, body, orch.wait_for_appends)
                self._reply(peer, req, ok=True, **answer)
            except Exception as exc:
                if not isinstance(exc, EvenflowError):
                    log.exception("a %s request failed unexpectedly", kind)
                self._reply(peer, req, ok=False, error=_error(exc))

        self._listener_pool.submit(act)

    def _reply(self, peer: bytes, req: str, **body: Any) -> None:
        from .transport import protocol

        try:
            frame = protocol.reply(req, **body)
        except (TypeError, ValueError) as exc:  # a value the wire cannot carry: say so, small
            frame = protocol.reply(req, ok=False, error={"type": "PayloadError", "message": str(exc)[:500]})
        self.executor.hub.reply(peer, frame)


def _run_id(body: Mapping[str, Any]) -> str:
    run = body.get("run")
    if not isinstance(run, str) or not 0 < len(run) <= 200:
        raise InvalidOption("a watch, cancel or retry request needs the run id as a string")
    return run


def _wait_for_worker(given: Any) -> float:
    if isinstance(given, bool) or not isinstance(given, int | float) or not 0 <= given <= MAX_WAIT_S:
        raise InvalidOption(f"wait_for_worker must be a number of seconds from 0 to {MAX_WAIT_S:g}")
    return float(given)


def _not_offered(missing: list[str], offered: list[str], *, waited_s: float) -> CommandNotOffered:
    names = ", ".join(repr(command) for command in offered[:20]) or "nothing (no worker is connected)"
    more = f" and {len(offered) - 20} more" if len(offered) > 20 else ""
    when = f"after waiting {waited_s:g}s, " if waited_s else ""
    return CommandNotOffered(
        f"{when}no connected worker offers {', '.join(missing)}; the workers offer {names}{more}. "
        "Start a worker whose registry has it, or submit with --wait-for-worker SECONDS "
        "(Client.submit(..., wait_for_worker=SECONDS))"
    )


def _error(exc: BaseException) -> dict[str, Any]:
    """The error as a reply carries it: its type by name, its message, and the plain attributes a
    caller reads (``IdempotencyConflict.run``, ``UnknownCommand.path``), which the client sets again."""
    if isinstance(exc, EvenflowError):
        error: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc)[:4_000]}
        fields = {name: value for name, value in vars(exc).items() if _plain(name, value)}
        return {**error, "fields": fields} if fields else error
    return {"type": "EvenflowError", "message": f"the service failed: {type(exc).__name__}: {exc}"[:4_000]}


def _plain(name: str, value: Any) -> bool:
    """A public attribute of a short text, a number, None, or a short list of texts."""
    if name.startswith("_"):
        return False
    if isinstance(value, list | tuple):
        return len(value) <= 100 and all(isinstance(item, str) and len(item) <= 1_000 for item in value)
    return value is None or isinstance(value, int | float) or (isinstance(value, str) and len(value) <= 1_000)
