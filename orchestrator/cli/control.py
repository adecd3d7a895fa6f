"""``evenflow cancel``, ``retry`` and ``resume``: acting on runs that are already in the log.

Without ``--connect`` they write to the store directly, which works while no
orchestrator owns it (the embedded store) or alongside running ones (MongoDB:
the owner's next append conflicts and it folds the run again). With
``--connect`` they ask a running ``evenflow serve`` to do it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from ..core.errors import EvenflowError, RunFailed, StoreLocked
from ..core.registry import Registry
from .arguments import run_id
from .remote import client_keys
from .render import to_json
from .termination import add_grace, resume_command, terminable

Adder = Callable[[argparse.ArgumentParser], None]
Loader = Callable[[str, type, str], Any]


def add_parsers(commands: Any, store_options: Adder, load: Loader, common: Adder) -> None:
    cancel = commands.add_parser(
        "cancel",
        help="cancel a running run",
        description="Log run.cancelled: nothing of the run is dispatched after it. Commands already "
        "running finish; their results are logged as ignored.",
    )
    cancel.add_argument("run", metavar="RUN", type=run_id, help="the run id, as `evenflow runs` shows it")
    cancel.add_argument("--reason", default="cancelled by request",
                        help="recorded in the log (default: cancelled by request)")  # fmt: skip
    _service(cancel)
    store_options(cancel)
    cancel.set_defaults(handler=_cancel)

    retry = commands.add_parser(
        "retry",
        help="continue a failed or cancelled run, keeping what succeeded",
        description="Log a new run with the same flow and input that keeps the results of every call "
        "that succeeded, and print its id. Retrying the same run again gives the same new run. With "
        "--registry, run it here until it ends; otherwise `evenflow resume` or a service runs it.",
    )
    retry.add_argument("run", metavar="RUN", type=run_id, help="the failed or cancelled run's id")
    retry.add_argument("--registry", metavar="MODULE:REGISTRY",
                       help="run the new run here with these commands (default: only log it)")  # fmt: skip
    _service(retry)
    common(retry)
    add_grace(retry)
    retry.set_defaults(handler=lambda args: _retry(args, load))

    resume = commands.add_parser(
        "resume",
        help="finish the runs a stopped or crashed orchestrator left unfinished",
        description="Start an orchestrator on the store: it folds every unfinished run from the log, "
        "sends again what was in flight (as new attempts), keeps retry timers at their logged times, and "
        "waits for each run. Exits 0 when all succeeded, 1 when any failed.",
    )
    resume.add_argument(
        "--registry", required=True, metavar="MODULE:REGISTRY", help="a Registry, or a function"
    )
    common(resume)
    add_grace(resume)
    resume.set_defaults(handler=lambda args: _resume(args, load))


def _service(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--connect", metavar="ENDPOINT", help="ask this `evenflow serve` (default: write to the store)"
    )
    client_keys(parser)


def _client(args: argparse.Namespace) -> Any:
    from ..client import Client

    return Client(args.connect, secret_key=args.secret_key, server_key=args.server_key)


def _writable_store(args: argparse.Namespace) -> Any:
    from ..store import open_store

    try:
        return open_store(args.store, home=args.home)
    except StoreLocked as exc:
        raise EvenflowError(
            f"process {exc.pid} owns the embedded store in {args.home or 'the default home'}; if it is "
            "`evenflow serve`, pass --connect ENDPOINT to act through it, or stop it first"
        ) from None


def _cancel(args: argparse.Namespace) -> int:
    if args.connect:
        with _client(args) as client:
            client.cancel(args.run)
        _said(args, {"run": args.run, "cancelled": True}, f"cancelled {args.run}")
        return 0
    from ..control import cancel_run

    store = _writable_store(args)
    try:
        fresh = cancel_run(store, args.run, args.reason)
    finally:
        store.close()
    text = f"cancelled {args.run}" if fresh else f"{args.run} was cancelled already"
    _said(args, {"run": args.run, "cancelled": fresh}, text)
    return 0


def _said(args: argparse.Namespace, document: dict[str, Any], text: str) -> None:
    """One result: a JSON document with ``--json``, else a line for people."""
    print(to_json(document, indent=None) if args.json else text)


def _retry(args: argparse.Namespace, load: Loader) -> int:
    if args.connect:
        with _client(args) as client:
            new = client.retry(args.run)
            _said(args, {"run": new, "retry_of": args.run}, new)
            if args.registry is None:
                return 0
            print(to_json({"run": new, "result": client.result(new, args.timeout)}, indent=None))
        return 0
    if args.registry is None:
        from ..control import retry_run

        store = _writable_store(args)
        try:
            new = retry_run(store, args.run)
        finally:
            store.close()
        _said(args, {"run": new, "retry_of": args.run}, new)
        return 0
    from ..orchestrator import Orchestrator
    from .report import print_run

    registry = load(args.registry, Registry, "a Registry")
    with (
        Orchestrator(
            registry, executor=args.executor, store=args.store, home=args.home, resume=False
        ) as orch,
        terminable(orch, grace=args.grace, resume=resume_command(args, args.registry)),
    ):
        run = orch.retry(args.run)
        try:
            run.result(args.timeout)
        finally:
            print_run(orch, run.id, as_json=args.json)
    return 0


def _resume(args: argparse.Namespace, load: Loader) -> int:
    from ..orchestrator import Orchestrator
    from .render import table

    registry = load(args.registry, Registry, "a Registry")
    orch = Orchestrator(registry, executor=args.executor, store=args.store, home=args.home)
    rows: list[tuple[str, str, str, str]] = []
    try:
        pending = orch.store.unfinished_runs()  # before start, which takes them all up
    except BaseException:
        orch.close()
        raise
    with orch, terminable(orch, grace=args.grace, resume=resume_command(args, args.registry)):
        for run in pending:
            rows.append(_resumed(orch, run, args.timeout))
    if args.json:
        keys = ("run", "name", "state", "error")
        print(to_json([dict(zip(keys, row, strict=True)) for row in rows], indent=None))
    elif rows:
        print(table(("run", "name", "state", "error"), rows))
    else:
        print("nothing to resume: every run in the store has ended")
    return 0 if all(row[2] == "succeeded" for row in rows) else 1


def _resumed(orch: Any, run: str, timeout: float | None) -> tuple[str, str, str, str]:
    """One row of the resume table; a run that cannot be resumed is reported, the others go on."""
    try:
        orch.result(run, timeout)
    except RunFailed as exc:
        state = orch.state(run)
        return run, state.name or "", state.status, str(exc).splitlines()[0][:200]
    except EvenflowError as exc:
        return run, "", "refused", f"{type(exc).__name__}: {exc}"[:200]
    return run, orch.state(run).name or "", "succeeded", ""
