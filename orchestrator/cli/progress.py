"""A run's progress in the terminal: one line redrawn in place on a TTY, a line per change elsewhere.

What it shows is read from the log (the run's own events, folded as ``status``
folds them), so ``evenflow run``, ``status --follow`` and a second terminal
watching the same run say the same thing.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from ..core import events as ev
from ..core.events import Event

EVERY_S = 0.25
"""How often the log is read while a run goes on."""
PER_EVENT_S = 25e-6
"""Between reads of a big run, this long per event it holds: reading it costs the engine about
that much of the store's lock, so a watcher takes a small, bounded share."""
QUIET_S = 1.0
"""Off a TTY, counts that change are printed at most this often; a change of state at once."""


@dataclass(frozen=True)
class Snapshot:
    state: str
    done: int
    total: int
    running: int
    failed: int

    def line(self, run: str, elapsed_s: float) -> str:
        return (
            f"{run} {self.state}: {self.done}/{self.total} done, {self.running} running, "
            f"{self.failed} failed, {elapsed_s:.1f}s"
        )


def snapshot(run: str, events: Sequence[Event]) -> Snapshot | None:
    """The run's progress now; None before its submission is logged."""
    from projections.run_tally import tally

    if not events:
        return None
    status = tally(run, events)
    nodes = status.nodes
    planned = _calls(events)
    started = sum(nodes.values()) - nodes.get("expanded", 0)
    return Snapshot(
        state=status.state,
        done=nodes.get("succeeded", 0),
        total=max(planned, started),
        running=nodes.get("running", 0) + nodes.get("retrying", 0),
        failed=nodes.get("failed", 0),
    )


def _calls(events: Sequence[Event]) -> int:
    """Calls the submission holds: in ``run.submitted``'s flow, or in the parts that follow it."""
    if events[0].type != ev.RUN_SUBMITTED:
        return 0
    parts = itertools.takewhile(
        lambda event: event.type == ev.RUN_FLOW_PART, itertools.islice(events, 1, None)
    )
    specs = itertools.chain(
        (events[0].data.get("flow") or {}).get("nodes", ()), *(part.data.get("nodes", ()) for part in parts)
    )
    return sum(1 for node in specs if node.get("kind") == "call")


class Progress:
    """Writes snapshots to ``out``: redrawn in place on a TTY, else one line per change (throttled)."""

    def __init__(self, run: str, out: TextIO, *, tty: bool | None = None) -> None:
        self.run, self.out = run, out
        self.tty = out.isatty() if tty is None else tty
        self.began = time.monotonic()
        self._last: Snapshot | None = None
        self._printed_at = 0.0
        self._width = 0

    def show(self, now: Snapshot) -> None:
        elapsed = time.monotonic() - self.began
        if self.tty:
            text = now.line(self.run, elapsed)
            self.out.write("\r" + text.ljust(self._width))
            self._width = len(text)
        elif now != self._last and (self._changed_state(now) or elapsed - self._printed_at >= QUIET_S):
            self.out.write(now.line(self.run, elapsed) + "\n")
            self._printed_at = elapsed
        else:
            return
        self._last = now
        self.out.flush()

    def _changed_state(self, now: Snapshot) -> bool:
        return self._last is None or self._last.state != now.state

    def close(self) -> None:
        if self.tty and self._width:
            self.out.write("\n")
            self.out.flush()


def watch(read: Callable[[], Sequence[Event]], progress: Progress, stop: threading.Event) -> Snapshot | None:
    """Show the run's progress until it ends or ``stop`` is set, then what the log says last; the last
    snapshot."""
    last: Snapshot | None = None
    while True:
        stopping = stop.is_set()  # read before the log: the snapshot after it is the final word
        events = read()
        now = snapshot(progress.run, events)
        if now is not None:
            progress.show(now)
            last = now
        if stopping or (now is not None and now.state in ("succeeded", "failed", "cancelled")):
            break
        stop.wait(max(EVERY_S, len(events) * PER_EVENT_S))  # a big run is read less often
    progress.close()
    return last


def in_background(read: Callable[[], Sequence[Event]], progress: Progress) -> Callable[[], Any]:
    """Watch on a thread; the returned function stops it and waits for its last line."""
    stop = threading.Event()
    thread = threading.Thread(
        target=watch, args=(read, progress, stop), name="evenflow-progress", daemon=True
    )
    thread.start()

    def finish() -> None:
        stop.set()
        thread.join(5.0)

    return finish
