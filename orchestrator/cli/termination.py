"""Stopping the ``evenflow`` commands that drive runs: SIGTERM or a first Ctrl-C drains, a second stops.

On SIGTERM or Ctrl-C nothing new starts; attempts in flight get up to
``--grace`` seconds to end and their outcomes are logged; leases are released;
one line says what is left unfinished and the command that finishes it; the
process exits 143 (SIGTERM) or 130 (Ctrl-C). A second signal during the grace
period exits at once: what was in flight is sent again, as new attempts, by
the command that resumes it.

Its own module so the package's ``main`` and the command modules that run an
orchestrator (``control``) both import it, and neither imports the other.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

from .arguments import grace

GRACE_S = 30.0
"""How long attempts in flight may take to end after SIGTERM or Ctrl-C (``--grace``)."""
EXIT_SIGTERM, EXIT_SIGINT = 143, 130
CLOSE_MARGIN_S = 5.0
"""Beyond the grace period, to log what ended and release leases (running commands are not waited for)."""

STOPPED = "evenflow: stopped by SIGTERM"
"""Said when SIGTERM comes before (or without) an orchestrator to drain: nothing is in flight."""


class Terminated(BaseException):
    """SIGTERM, raised in the main thread: every ``with`` unwinds, so the orchestrator logs and closes."""


def terminate(*_: object) -> None:
    """The SIGTERM handler: raise ``Terminated`` where the main thread is."""
    raise Terminated


def add_grace(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--grace",
        type=grace,
        default=GRACE_S,
        metavar="SECONDS",
        help=f"on SIGTERM or Ctrl-C, how long attempts in flight may take to end (default {GRACE_S:g})",
    )


def resume_command(args: argparse.Namespace, registry: str) -> str:
    """The exact command that finishes what this one leaves unfinished."""
    where = [f"--store {args.store}"] if getattr(args, "store", None) else []
    where += [f"--home {args.home}"] if getattr(args, "home", None) else []
    return " ".join(["evenflow resume --registry", registry, *where])


@contextlib.contextmanager
def terminable(orch: Any, *, grace: float = GRACE_S, resume: str = "evenflow resume") -> Iterator[None]:
    """Inside the block, SIGTERM or Ctrl-C drains ``orch`` for up to ``grace`` seconds and exits."""
    try:
        yield
    except (Terminated, KeyboardInterrupt) as exc:
        code, what = (EXIT_SIGTERM, "SIGTERM") if isinstance(exc, Terminated) else (EXIT_SIGINT, "Ctrl-C")
        _stop(orch, grace, code, what, resume)


def _stop(orch: Any, grace: float, code: int, what: str, resume: str) -> None:
    at_once = _exit_at_once(code)
    signal.signal(signal.SIGINT, at_once)
    signal.signal(signal.SIGTERM, at_once)
    say_waiting(what, grace)
    closing = threading.Thread(target=orch.close, kwargs={"drain_s": grace}, daemon=True)
    closing.start()
    closing.join(grace + CLOSE_MARGIN_S)
    print(stopped_line(what, sorted(orch.engine.book.live), resume), file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def say_waiting(what: str, grace: float) -> None:
    waiting = f"waiting up to {grace:g}s for attempts in flight; a second Ctrl-C or SIGTERM stops now"
    print(f"evenflow: {what}: {waiting}", file=sys.stderr, flush=True)


def _exit_at_once(code: int) -> Any:
    def handler(*_: object) -> None:
        print("evenflow: stopped at once; `evenflow resume` sends what was running again", file=sys.stderr)
        sys.stderr.flush()
        os._exit(code)

    return handler


class Signals:
    """For a service, worker or listener process: the first SIGTERM or Ctrl-C calls ``first`` (start
    draining), a second exits at once. ``code`` is then the exit code the process should end with."""

    def __init__(self, first: Any, grace: float) -> None:
        self._first = first
        self._grace = grace
        self.code: int | None = None
        self.what = ""

    def install(self) -> Signals:
        for number in (signal.SIGTERM, signal.SIGINT):
            signal.signal(number, self._handle)
        return self

    def _handle(self, number: int, _frame: object) -> None:
        code, what = (EXIT_SIGTERM, "SIGTERM") if number == signal.SIGTERM else (EXIT_SIGINT, "Ctrl-C")
        if self.code is not None:
            _exit_at_once(code)()
        self.code, self.what = code, what
        say_waiting(what, self._grace)
        self._first()


def stopped_line(what: str, unfinished: list[str], resume: str) -> str:
    if not unfinished:
        return f"evenflow: stopped by {what}; nothing is left unfinished"
    runs = ", ".join(unfinished[:5]) + (f" and {len(unfinished) - 5} more" if len(unfinished) > 5 else "")
    return f"evenflow: stopped by {what}; unfinished: run {runs}; `{resume}` finishes it"
