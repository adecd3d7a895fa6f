"""Children that leave when the evenflow process that started them dies, even by SIGKILL.

A pool child's parent is a forkserver, not the process that asked for the
pool, and neither is told when that process is killed: the child would wait
on its task queue forever. ``hold(pid)`` starts a daemon thread in the child
that ends it once ``pid`` is gone or the child was handed to another parent.
Children also ignore SIGINT: a Ctrl-C in a terminal reaches the whole process
group, and stopping is the parent's to decide (it lets attempts in flight end).
"""

from __future__ import annotations

import os
import signal
import threading

EVERY_S = 0.5
"""How often a child looks at its parent: it is gone within about this long after it."""


def hold(pid: int) -> None:
    """In a child process: leave when ``pid`` (the evenflow process that started us) is gone."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()
    threading.Thread(target=_watch, args=(pid, parent), name="evenflow-lifeline", daemon=True).start()


def _watch(pid: int, parent: int) -> None:
    stop = threading.Event()
    while not stop.wait(EVERY_S):
        if os.getppid() != parent or not alive(pid):
            os._exit(1)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True
