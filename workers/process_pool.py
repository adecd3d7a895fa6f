"""The child processes of ``processes://`` and the one thread in the parent that reads them all.

Each child is started with the executor's multiprocessing context and holds one
connection (``process_channel.Link``) and one word of shared memory where it
marks the attempt it starts. One reader thread waits on every child's
connection and on every child's sentinel: it hands each burst of
messages to the executor as it arrives, finishes writes the socket could not
take at once, and when a child dies reads what it wrote before dying, then
tells the executor, which decides what the child held. What a dead child wrote
is already in its socket when its sentinel fires, so nothing waits for the
end of a connection that some grandchild may still hold open.

Which child does what is the executor's business; this module only starts,
watches, writes to and stops children.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from multiprocessing.util import Finalize

from .process_channel import Link
from .process_child import NONE, Word, main

log = logging.getLogger(__name__)

READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE


@dataclass(eq=False)
class Child:
    """One child process and its connection; ``load`` and ``ready`` are the executor's, under its lock."""

    process: BaseProcess
    link: Link
    started: Word
    """The ticket the child started last (``NONE`` before its first), written by the child before
    it runs any of it."""
    load: int = 0
    """Tickets sent to it and not yet ended."""
    ready: bool = False
    """It said hello (its registry is loaded): of two children as loaded, the ready one gets work."""
    reading: bool = field(default=True, repr=False)


OnMessages = Callable[[Child, list[bytes]], None]
OnDeath = Callable[[Child], None]


class Children:
    """Starts children, writes to them from any thread, and reads them all on one thread."""

    def __init__(self, context: BaseContext, on_messages: OnMessages, on_death: OnDeath) -> None:
        self._context = context
        self._on_messages = on_messages
        self._on_death = on_death
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, READ, None)
        self._lock = threading.Lock()
        self._new: list[Child] = []
        self._to_flush: set[Child] = set()
        self._processes: dict[int, BaseProcess] = {}
        self._open = True
        self._thread = threading.Thread(target=self._run, name="evenflow-processes", daemon=True)
        self._thread.start()
        self._at_exit = Finalize(self, _terminate, args=(self._processes,), exitpriority=20)

    @property
    def reader(self) -> threading.Thread:
        return self._thread

    def spawn(self, payload: bytes) -> Child:
        """Start one child carrying ``payload`` (the pickled registry); it is watched from now on."""
        link, theirs = Link.pair()
        started = self._context.RawValue("q", NONE)
        process: BaseProcess = self._context.Process(  # type: ignore[attr-defined]  # every concrete context has it
            target=main, args=(theirs, started, payload, os.getpid()), name="evenflow-process"
        )
        try:
            process.start()
        except BaseException:
            link.close()
            raise
        finally:
            theirs.close()
        child = Child(process, link, started)
        with self._lock:
            self._processes[id(child)] = process
            self._new.append(child)
        self._wake()
        return child

    def write(self, child: Child, data: bytes) -> None:
        """Send ``data`` now, or as soon as the child's socket takes it."""
        if not child.link.write(data):
            with self._lock:
                self._to_flush.add(child)
            self._wake()

    def stop(self, children: Iterable[Child]) -> None:
        """Stop the reader and close what is left (the children themselves are the caller's to end)."""
        self._open = False
        self._wake()
        if self._thread is not threading.current_thread():
            self._thread.join(5.0)
        for child in children:
            child.link.close()
        self._at_exit.cancel()
        with contextlib.suppress(Exception):
            self._selector.close()
        for sock in (self._wake_r, self._wake_w):
            sock.close()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    # --- the reader thread ---------------------------------------------------------------

    def _run(self) -> None:
        while self._open:
            try:
                ready = self._selector.select()
            except (OSError, ValueError):  # closed under us by ``stop``
                return
            for key, mask in ready:
                if not self._open:
                    return
                self._handle(key, mask)
            if self._open:
                self._take_changes()

    def _handle(self, key: selectors.SelectorKey, mask: int) -> None:
        if key.data is None:
            with contextlib.suppress(OSError):
                self._wake_r.recv(4096)
            return
        child, what = key.data
        if what == "sentinel":
            self._died(child)
            return
        if mask & WRITE and child.link.flush():
            self._watch(child, READ)
        if mask & READ:
            self._read(child)

    def _take_changes(self) -> None:
        with self._lock:
            new, self._new = self._new, []
            flush, self._to_flush = self._to_flush, set()
        for child in new:
            self._selector.register(
                child.link.fileno, READ | (WRITE if child.link.waiting else 0), (child, "io")
            )
            self._selector.register(child.process.sentinel, READ, (child, "sentinel"))
        for child in flush:
            if child.reading and child.link.waiting:
                self._watch(child, READ | WRITE)

    def _watch(self, child: Child, events: int) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.modify(child.link.fileno, events, (child, "io"))

    def _read(self, child: Child) -> None:
        messages, closed = child.link.read()
        if closed:  # its sentinel follows; stop spinning on a closed socket meanwhile
            self._forget(child.link.fileno, child)
        if messages:
            self._tell(self._on_messages, child, messages)

    def _died(self, child: Child) -> None:
        """Everything the dead child wrote, then its death, to the executor."""
        messages, _ = child.link.read() if child.reading else ([], True)
        self._forget(child.link.fileno, child)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(child.process.sentinel)
        child.link.close()
        child.process.join(0)
        with self._lock:
            self._processes.pop(id(child), None)
        if messages:
            self._tell(self._on_messages, child, messages)
        self._tell(self._on_death, child)

    @staticmethod
    def _tell(callback: Callable[..., None], *args: object) -> None:
        """A failing callback is logged; the reader must go on, or every child's outcomes would stop."""
        try:
            callback(*args)
        except Exception:
            log.exception("handling what a worker process sent failed")

    def _forget(self, fileno: int, child: Child) -> None:
        if child.reading:
            child.reading = False
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(fileno)


def _terminate(processes: dict[int, BaseProcess], grace_s: float = 1.0) -> None:
    """At interpreter exit, before multiprocessing joins its children: end ours (they hold no work
    anyone will wait for), so the exit does not hang."""
    alive = list(processes.values())
    for process in alive:
        with contextlib.suppress(Exception):
            process.terminate()
    deadline = time.monotonic() + grace_s
    for process in alive:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join(1.0)
