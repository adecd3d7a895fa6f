"""SIGTERM for the ``evenflow`` commands: unwind, log what can be logged, leave.

Its own module so the package's ``main`` and the command modules that run an
orchestrator (``control``) both import it, and neither imports the other.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

DRAIN_S = 3.0
"""On SIGTERM, how long outcomes of commands in flight are still logged before the process leaves."""

STOPPED = "evenflow: stopped by SIGTERM; `evenflow resume` finishes what was running"


class Terminated(BaseException):
    """SIGTERM, raised in the main thread: every ``with`` unwinds, so the orchestrator logs and closes."""


def terminate(*_: object) -> None:
    """The SIGTERM handler: raise ``Terminated`` where the main thread is."""
    raise Terminated


@contextlib.contextmanager
def terminable(orch: Any) -> Iterator[None]:
    """On SIGTERM inside the block: log what can be logged within ``DRAIN_S``, then exit 0 at once.

    Commands still running are not waited for (a thread cannot be stopped, and
    a long one would hold the exit); the log shows them dispatched, so
    ``evenflow resume`` sends them again as new attempts.
    """
    try:
        yield
    except Terminated:
        closing = threading.Thread(target=orch.close, kwargs={"drain_s": DRAIN_S}, daemon=True)
        closing.start()
        closing.join(DRAIN_S + 5.0)
        print(STOPPED, file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
