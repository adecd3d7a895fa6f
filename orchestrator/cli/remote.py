"""``evenflow serve``, ``worker``, ``submit`` and ``keys``: the orchestrator as a service, remote
workers, and submission from any system. pyzmq is imported only when one of these runs."""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.errors import ConfigurationError, RunFailed, extra_needed
from ..core.events import utcnow
from ..core.registry import Registry
from ..core.state import NO_INPUT
from ..core.timespec import parse_moment
from . import logs
from .arguments import INPUT_HELP, input_value, seconds, whole
from .render import to_json
from .termination import Signals, add_grace, stopped_line

Adder = Callable[..., None]


def add_parsers(commands: Any, store_options: Adder, load: Callable[[str, type, str], Any]) -> None:
    _add_serve(commands, store_options)
    _add_worker(commands, load)
    _add_submit(commands)
    _add_keys(commands)


def _add_serve(commands: Any, store_options: Adder) -> None:
    serve = commands.add_parser(
        "serve",
        help="run the orchestrator as a service that remote workers and clients connect to",
        description="Bind one ZeroMQ endpoint for workers (evenflow worker) and clients (evenflow submit, "
        "Client). The service holds no command code. SIGTERM or Ctrl-C stops it cleanly.",
    )
    serve.add_argument("--bind", default="tcp://127.0.0.1:5555", metavar="ENDPOINT",
                       help="where workers and clients connect (default tcp://127.0.0.1:5555)")  # fmt: skip
    _timing(serve)
    serve.add_argument("--schedule-timeout", type=seconds, default=300.0, metavar="SECONDS",
                       help="fail a call no worker takes within this time (default 300)")  # fmt: skip
    add_grace(serve)
    serve.add_argument("--retain", metavar="AGE", type=retention,
                       help="prune runs that finished longer ago than AGE (at least 1h, e.g. 90d), now and "
                       "hourly; see evenflow prune (default: keep every run)")  # fmt: skip
    serve.add_argument("--secret-key", metavar="FILE",
                       help="the service's NAME.key_secret; turns on CURVE (default: off)")  # fmt: skip
    serve.add_argument("--authorized", metavar="DIR",
                       help="folder of the public keys allowed to connect (default: any key)")  # fmt: skip
    serve.add_argument("--http", metavar="HOST:PORT",
                       help="also serve the pages, API and metrics of evenflow ui here; with --token-file, "
                       "cancel and retry too (default: off)")  # fmt: skip
    serve.add_argument("--token-file", metavar="FILE",
                       help="the secret --http requests carry (default: none, loopback only)")  # fmt: skip
    store_options(serve, prints_data=False)
    serve.set_defaults(handler=_serve)


def _add_worker(commands: Any, load: Callable[[str, type, str], Any]) -> None:
    worker = commands.add_parser(
        "worker",
        help="run the commands of a registry for a service",
        description="Connect to a service, announce the registry's commands and run what it sends. "
        "SIGTERM or Ctrl-C drains: running commands finish and their results are delivered.",
    )
    add_grace(worker)
    worker.add_argument("--connect", required=True, metavar="ENDPOINT", help="the service, tcp://HOST:PORT")
    worker.add_argument(
        "--registry", required=True, metavar="MODULE:REGISTRY", help="a Registry, or a function"
    )
    worker.add_argument(
        "--concurrency", type=whole, default=1, metavar="N", help="commands run at once (default 1)"
    )
    worker.add_argument("--prefetch", type=int, default=None, metavar="N",
                        help="calls held beyond those running (default 8 per --concurrency)")  # fmt: skip
    worker.add_argument("--pool", default="threads", choices=("threads", "processes", "asyncio"),
                        help="where commands run in this worker (default threads)")  # fmt: skip
    worker.add_argument("--queue", action="append", default=[], metavar="NAME",
                        help="also take calls routed to this queue (repeatable; default: none)")  # fmt: skip
    worker.add_argument("--name", metavar="NAME",
                        help="how logs and the audit name this worker (default HOST:PID)")  # fmt: skip
    worker.add_argument("--confirm-starts", action="store_true",
                        help="begin each call only once the service recorded its start: a killed worker "
                        "loses exactly the calls it ran, for a round trip a call (default: off)")  # fmt: skip
    _timing(worker)
    client_keys(worker)
    logs.add_options(worker)
    worker.set_defaults(handler=lambda args: _worker(args, load))


def _add_submit(commands: Any) -> None:
    submit = commands.add_parser(
        "submit",
        help="submit a JSON flow to a service",
        description="Send FLOW (a JSON file in the log's flat form, or - for stdin; see 'JSON flows' in "
        "the README) to a service and print the run id, or with --wait the result.",
    )
    submit.add_argument("flow", metavar="FLOW", help="a JSON flow file, or - for stdin")
    submit.add_argument("--connect", required=True, metavar="ENDPOINT", help="the service, tcp://HOST:PORT")
    submit.add_argument("--input", metavar="JSON", help=INPUT_HELP)
    submit.add_argument("--name", metavar="NAME", help="a name for the run (default: none)")
    submit.add_argument("--wait", action="store_true", help="wait for the run and print its result")
    submit.add_argument("--wait-for-worker", type=seconds, default=0.0, metavar="SECONDS",
                        help="if no connected worker offers a command of the flow, wait this long for one "
                             "to join (default: refuse at once)")  # fmt: skip
    submit.add_argument("--timeout", type=seconds, default=None, metavar="SECONDS",
                        help="wait for the service (default 30) or the run (default: no limit)")  # fmt: skip
    submit.add_argument("--json", action="store_true", help="print one JSON document, also without --wait")
    client_keys(submit)
    logs.add_options(submit)
    submit.set_defaults(handler=_submit)


def _add_keys(commands: Any) -> None:
    keys = commands.add_parser(
        "keys",
        help="make a CURVE key pair for a service, worker or client",
        description="Write DIR/NAME.key (public: give it to the other side) and DIR/NAME.key_secret "
        "(private: keep it on this host).",
    )
    keys.add_argument("directory", metavar="DIR", help="where to write the two key files (made if missing)")
    keys.add_argument(
        "--name", required=True, metavar="NAME", help="the files' name: NAME.key, NAME.key_secret"
    )
    keys.add_argument("--json", action="store_true", help="print the two paths as one JSON document")
    logs.add_options(keys, debug_help="show tracebacks")
    keys.set_defaults(handler=_keys)


def _timing(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--heartbeat", type=seconds, default=1.0, metavar="SECONDS",
                        help="heartbeat interval (default 1)")  # fmt: skip
    parser.add_argument("--liveness", type=whole, default=3, metavar="N",
                        help="missed heartbeats before a peer counts as dead (default 3)")  # fmt: skip


def client_keys(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--secret-key", metavar="FILE",
                        help="this peer's NAME.key_secret; turns on CURVE (default: off)")  # fmt: skip
    parser.add_argument("--server-key", metavar="FILE",
                        help="the service's public NAME.key (needed with --secret-key)")  # fmt: skip


def _serve(args: argparse.Namespace) -> int:
    with extra_needed("evenflow serve"):
        from ..service import Service
        from ..transport.security import server_keys

    web = _http_settings(args) if args.http else None  # refused before anything is opened
    service = Service(
        args.bind,
        store=args.store,
        home=args.home,
        keys=server_keys(args.secret_key, args.authorized),
        heartbeat_s=args.heartbeat,
        liveness=args.liveness,
        schedule_timeout_s=args.schedule_timeout,
        retain_s=args.retain,
    )
    try:
        http = _http(web, service) if web is not None else None
    except BaseException:
        service.close()
        raise
    stop = threading.Event()
    signals = Signals(stop.set, args.grace).install()
    print(f"evenflow: serving on {service.endpoint}", flush=True)
    if http is not None:
        print(f"evenflow: pages and API on {http.url}/runs", flush=True)
    try:
        service.serve(stop, drain_s=args.grace)
    finally:
        if http is not None:
            http.stop()
    unfinished = sorted(service.orchestrator.engine.book.live)
    again = " ".join(["evenflow serve --bind", args.bind, *_where(args)])
    print(stopped_line(signals.what or "request", unfinished, again), file=sys.stderr)
    return signals.code or 0


def _http_settings(args: argparse.Namespace) -> tuple[str, int, str | None]:
    """``--http`` and ``--token-file``, checked: where to listen and the token."""
    with extra_needed("evenflow serve --http"):
        from ..web.guard import check_bind, read_token
        from ..web.server import parse_bind
    host, port = parse_bind(args.http, "--http")
    token = read_token(args.token_file) if args.token_file else None
    check_bind(host, token)
    return host, port, token


def _http(settings: tuple[str, int, str | None], service: Any) -> Any:
    """The pages and API over the service's own store, cancel and retry through its orchestrator when
    a token is given."""
    from contextlib import nullcontext

    from ..query_source import Source
    from ..web import make_app
    from ..web.control import EngineControl
    from ..web.metrics import Live
    from ..web.server import HttpServer

    host, port, token = settings
    orchestrator = service.orchestrator
    control = EngineControl(orchestrator) if token else None

    def live() -> Live:
        times = orchestrator.engine.append_times
        inflight = len(orchestrator.engine.book.inflight)
        return Live(service.executor.workers(), inflight, (times.count, times.total_s, times.max_s))

    app = make_app(lambda: nullcontext(Source(orchestrator.store)), token=token, control=control, live=live)
    return HttpServer(app, host, port, option="--http").start()


def retention(text: str) -> float:
    """``--retain``: an age such as 90d, in seconds; at least an hour, since a run that just finished
    may still be told of late outcomes."""
    age = (utcnow() - parse_moment(text, option="--retain")).total_seconds()
    if age < MIN_RETAIN_S:
        raise argparse.ArgumentTypeError(f"{text!r:.40} is under an hour; give an age such as 90d or 12h")
    return age


MIN_RETAIN_S = 3_600.0


def _where(args: argparse.Namespace) -> list[str]:
    return [f"--{name} {value}" for name in ("store", "home") if (value := getattr(args, name, None))]


def _worker(args: argparse.Namespace, load: Callable[[str, type, str], Any]) -> int:
    with extra_needed("evenflow worker"):
        from workers.zmq import Worker

        from ..transport.endpoints import check_endpoint
        from ..transport.security import client_keys

    worker = Worker(
        check_endpoint(args.connect, binding=False),
        load(args.registry, Registry, "a Registry"),
        concurrency=args.concurrency,
        prefetch=args.prefetch,
        pool=args.pool,
        queues=tuple(args.queue),
        name=args.name,
        heartbeat_s=args.heartbeat,
        liveness=args.liveness,
        keys=client_keys(args.secret_key, args.server_key),
        drain_timeout_s=args.grace,
        confirm_starts=args.confirm_starts,
    )
    signals = Signals(worker.stop, args.grace).install()
    print(f"evenflow: worker {worker.name} connecting to {args.connect}", flush=True)
    _off_the_main_thread(worker.run)
    if signals.code is not None:
        print(f"evenflow: stopped by {signals.what}; the service sends what was not finished here to other "
              "workers", file=sys.stderr)  # fmt: skip
    return signals.code or 0


def _off_the_main_thread(work: Callable[[], None]) -> None:
    """Run ``work`` on a thread of its own while the main thread waits, and raise what it raised.

    Python runs signal handlers on the main thread only, between its bytecodes. A threads worker
    runs calls on its socket's thread; were that the main thread, a command deep in one long C call
    (hashing, a database driver) would hold back the SIGTERM that stops the worker until it returned.
    """
    failed: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:  # raised again on the main thread, where the CLI reports it
            failed.append(exc)

    thread = threading.Thread(target=run, name="evenflow-worker")
    thread.start()
    thread.join()  # a signal interrupts the wait: its handler runs at once, then the wait goes on
    if failed:
        raise failed[0]


def _submit(args: argparse.Namespace) -> int:
    from ..client import Client

    keys = {"secret_key": args.secret_key, "server_key": args.server_key}
    with (
        extra_needed("evenflow submit"),
        Client(args.connect, timeout=args.timeout or 30.0, **keys) as client,
    ):
        flow = _read_flow(args.flow)
        value = NO_INPUT if args.input is None else input_value(args.input)
        run = client.submit(flow, input=value, name=args.name, wait_for_worker=args.wait_for_worker)
        if not args.wait:
            print(to_json({"run": run}, indent=None) if args.json else run)
            return 0
        try:
            result = client.result(run, args.timeout)
        except RunFailed as exc:
            print(to_json({"run": run, "state": "failed", "error": str(exc)}, indent=None))
            raise
        print(to_json({"run": run, "state": "succeeded", "result": result}, indent=None))
    return 0


def _keys(args: argparse.Namespace) -> int:
    with extra_needed("evenflow keys"):
        from ..transport.security import make_keypair

    public, secret = make_keypair(args.directory, args.name)
    if args.json:
        print(to_json({"public": str(public), "secret": str(secret)}))
    else:
        print(f"public key (give to the other side): {public}\nsecret key (keep here): {secret}")
    return 0


def _read_flow(spec: str) -> Any:
    try:
        text = sys.stdin.read() if spec == "-" else Path(spec).read_text()
    except OSError as exc:
        raise ConfigurationError(f"cannot read the flow {spec}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"the flow {spec} is not JSON: {exc}") from None
