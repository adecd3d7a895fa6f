"""The ``evenflow`` command: the one place that wires stores, executors and logging.

Every option that names a place (store, home, executor) can also come from an
environment variable, shown in ``--help``. Errors print one line and exit
non-zero; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any, NoReturn

from ..core.crashpoints import arm_from_environment
from ..core.errors import ConfigurationError, EvenflowError, RunFailed
from ..core.flows import Node
from ..core.registry import Registry
from ..core.state import NO_INPUT
from . import logs
from .arguments import INPUT_HELP, executor_url, home, input_value, seconds
from .termination import EXIT_SIGTERM, STOPPED, Terminated, add_grace, resume_command, terminable, terminate

EXIT_FAILED_RUN = 1
EXIT_BAD_INPUT = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logs.configure(args)
    arm_from_environment()  # a fault test's EVENFLOW_CRASH_AT, read as the process starts
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, terminate)  # serve and worker put their own drains in place
    try:
        code: int = args.handler(args)
        return code
    except Terminated:
        print(STOPPED, file=sys.stderr)
        return EXIT_SIGTERM
    except RunFailed as exc:
        if args.debug:
            raise
        print(f"evenflow: {exc}", file=sys.stderr)
        return EXIT_FAILED_RUN
    except (EvenflowError, ImportError, AttributeError) as exc:
        if args.debug:
            raise
        print(f"evenflow: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `evenflow audit RUN | head`: the reader has all it wanted
        sys.stderr.close()
        return 0


class _Parser(argparse.ArgumentParser):
    """Bad arguments get one line and exit 2, like every other error of ours."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="evenflow",
        description="Run flows of plain Python callables, every step logged to an event store.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="run a small flow: a map, a chord and a retry",
        description="Run the demo flow on the embedded store and show what happened, node by node.",
    )
    _common(demo, default_executor="processes://2")
    add_grace(demo)
    demo.set_defaults(handler=_demo)

    run = commands.add_parser(
        "run",
        help="run a flow from your code",
        description="Import FLOW and REGISTRY (module:attribute; an attribute may be a function that "
        "returns one), run the flow and print its result.",
    )
    run.add_argument("flow", metavar="MODULE:FLOW", help="a flow node, or a function returning one")
    run.add_argument("--registry", required=True, metavar="MODULE:REGISTRY", help="a Registry, or a function")
    run.add_argument("--input", metavar="JSON", help=INPUT_HELP)
    _common(run, default_executor="threads")
    add_grace(run)
    run.set_defaults(handler=_run)

    from . import control, doctor, exchange, listen, migrate, prune, queries, remote, ui

    remote.add_parsers(commands, _store_options, _load)
    listen.add_parser(commands, _load, remote.client_keys)
    queries.add_parsers(commands, _store_options)
    control.add_parsers(
        commands, _store_options, _load, lambda parser: _common(parser, default_executor="threads")
    )
    doctor.add_parser(commands, _store_options)
    migrate.add_parser(commands)
    prune.add_parser(commands, _store_options)
    exchange.add_parsers(commands, _store_options)
    ui.add_parser(commands, _store_options)
    return parser


def _common(parser: argparse.ArgumentParser, *, default_executor: str) -> None:
    parser.add_argument(
        "--executor",
        default=os.environ.get("EVENFLOW_EXECUTOR", default_executor),
        type=executor_url,
        metavar="URL",
        help="inline, asyncio, threads://N, processes://N, zmq://HOST:PORT or celery://BROKER_URL "
        f"[env EVENFLOW_EXECUTOR; default {default_executor}]",
    )
    parser.add_argument(
        "--timeout", type=seconds, default=None, metavar="SECONDS", help="give up waiting [default: never]"
    )
    _store_options(parser)


def _store_options(parser: argparse.ArgumentParser, *, prints_data: bool = True) -> None:
    """Where the log is; ``--json`` only on commands that print data (``prints_data``)."""
    parser.add_argument(
        "--store",
        default=os.environ.get("EVENFLOW_STORE"),
        metavar="URL",
        help="mongodb://..., mongomock:// or none for the embedded store [env EVENFLOW_STORE]",
    )
    parser.add_argument(
        "--home",
        default=os.environ.get("EVENFLOW_HOME") or None,
        type=home,
        metavar="DIR",
        help="directory of the embedded store [env EVENFLOW_HOME; default ~/.local/share/evenflow]",
    )
    if prints_data:
        parser.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    logs.add_options(parser)


def _demo(args: argparse.Namespace) -> int:
    from . import demo

    return _execute(args, demo.registry(), demo.flow(), NO_INPUT, name="demo", spec=demo.REGISTRY)


def _run(args: argparse.Namespace) -> int:
    registry = _load(args.registry, Registry, "a Registry")
    flow = _load(args.flow, Node, "a flow node")
    value = NO_INPUT if args.input is None else _json(args.input)
    return _execute(args, registry, flow, value, name=args.flow, spec=args.registry)


def _execute(
    args: argparse.Namespace, registry: Registry, flow: Node, value: Any, *, name: str, spec: str
) -> int:
    """Drive one run, and only it: runs left unfinished by others are named, for ``evenflow resume``."""
    from ..orchestrator import Orchestrator
    from .report import print_run

    resume = resume_command(args, spec)
    orch = Orchestrator(registry, executor=args.executor, store=args.store, home=args.home, resume=False)
    with orch, terminable(orch, grace=args.grace, resume=resume):
        run = orch.submit(flow, input=value, name=name)
        try:
            _wait_showing_progress(orch, run, args)
        except RunFailed:
            print_run(orch, run.id, as_json=args.json)
            _mention_others(orch, run.id, resume)
            raise
        print_run(orch, run.id, as_json=args.json)
        _mention_others(orch, run.id, resume)
    return 0


def _wait_showing_progress(orch: Any, run: Any, args: argparse.Namespace) -> None:
    """The run's result, with its progress redrawn on stderr while it goes when that is a terminal."""
    if args.json or not sys.stderr.isatty():
        run.result(args.timeout)
        return
    from .progress import Progress, in_background

    finish = in_background(lambda: orch.store.read(run.id), Progress(run.id, sys.stderr))
    try:
        run.result(args.timeout)
    finally:
        finish()


def _mention_others(orch: Any, mine: str, resume: str) -> None:
    others = [run for run in orch.store.unfinished_runs() if run != mine]
    if others:
        runs = "1 other run is" if len(others) == 1 else f"{len(others)} other runs are"
        print(f"evenflow: {runs} unfinished here; `{resume}` finishes them", file=sys.stderr)


def _load(spec: str, kind: type, what: str) -> Any:
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(f"{spec!r} should be MODULE:ATTRIBUTE naming {what}")
    sys.path.insert(0, os.getcwd())
    value = getattr(importlib.import_module(module_name), attribute)
    if not isinstance(value, kind) and callable(value):
        try:
            value = value()
        except TypeError as exc:
            raise ConfigurationError(f"{spec} is not {what}, nor a function that makes one: {exc}") from None
    if not isinstance(value, kind):
        raise ConfigurationError(f"{spec} is {type(value).__name__}, not {what}")
    return value


def _json(text: str) -> Any:
    """``--input``, read as every command reads it (``arguments.input_value``)."""
    return input_value(text)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("evenflow")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"
