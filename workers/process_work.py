"""The work of ``processes://`` in flight, as plain bookkeeping: no processes, no sockets, no lock.

Every envelope (or call of the ``concurrent.futures`` face) gets a numbered
ticket when it is handed over, and keeps it until its one end is reported.
A ticket waits in the backlog until a child has room for it; no child holds
more than ``WINDOW`` tickets not yet ended, so a slow attempt holds back few
others. When a child dies, its tickets are decided here: the one it had
started is lost, the others wait again for another child (at most
``MAX_RESENDS`` times where the child died running nothing). The executor
calls all of this under its one lock.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from .process_child import Ticketed, Work
from .process_pool import Child

MAX_CHUNK = 64
CHUNKS_PER_WORKER = 4
"""A big fan-out is cut into a few chunks per worker, so the work spreads evenly."""
WINDOW = 2 * MAX_CHUNK
"""Tickets one child may hold not yet ended: about one chunk running, one waiting behind it."""
MAX_RESENDS = 3
"""How many children a ticket may see die before it started, with nothing running in them, before it is
reported lost."""


def chunk_size(count: int, workers: int) -> int:
    return max(1, min(MAX_CHUNK, math.ceil(count / (CHUNKS_PER_WORKER * workers))))


@dataclass(eq=False)
class Ticket:
    """Work sent or waiting to be: where it went, who waits for it, how often it was sent again."""

    work: Work
    future: Future[Any] | None = None
    child: Child | None = None
    resends: int = 0


class Book:
    """Tickets open, and the backlog of those not yet sent."""

    def __init__(self) -> None:
        self.tickets: dict[int, Ticket] = {}
        self.backlog: deque[int] = deque()
        self._numbers = itertools.count()

    def add(self, work: Work, future: Future[Any] | None = None) -> None:
        number = next(self._numbers)
        self.tickets[number] = Ticket(work, future)
        self.backlog.append(number)

    def next_chunk(self, children: Sequence[Child]) -> tuple[Child, list[Ticketed]] | None:
        """The least loaded child and what to send it now; None when every child is busy enough
        (the rest goes as outcomes come back) or nothing waits. Between children as loaded, one that
        is ready goes first, so work does not wait for a replacement to start while its sibling idles."""
        if not self.backlog or not children:
            return None
        child = min(children, key=lambda each: (each.load, not each.ready))
        wanted = min(len(self.backlog), chunk_size(len(self.backlog), len(children)))
        room = WINDOW - child.load
        if room < wanted and room < MAX_CHUNK:
            return None
        items: list[Ticketed] = []
        while len(items) < min(room, wanted) and self.backlog:
            number = self.backlog.popleft()
            ticket = self.tickets.get(number)
            if ticket is None or not _claim(ticket):
                self.tickets.pop(number, None)  # a call cancelled while it waited
                continue
            items.append((number, ticket.work))
        return child, items

    def sent(self, child: Child, items: Iterable[Ticketed]) -> None:
        count = 0
        for number, _ in items:
            self.tickets[number].child = child
            count += 1
        child.load += count

    def ended(self, number: int) -> Ticket | None:
        """The ticket ``number`` ends, or None if it was already ended (then report nothing)."""
        ticket = self.tickets.pop(number, None)
        if ticket is not None and ticket.child is not None:
            ticket.child.load -= 1
        return ticket

    def wait_again(self, numbers: Sequence[int]) -> None:
        """Back to the front of the backlog, in their order."""
        self.backlog.extendleft(reversed(numbers))

    def left_by(self, child: Child, started: int, *, closing: bool) -> list[tuple[Ticket, str]]:
        """A dead child's tickets: the ones to give up, each with why (empty: silently, as the
        executor closes); the rest wait again for another child.

        If an attempt was running (``started`` is still open), it is lost and the others are not to
        blame. If none was (the child died starting, idle or between attempts), each is charged a
        resend, so children that cannot run anything do not take work forever.
        """
        mine = [(number, ticket) for number, ticket in self.tickets.items() if ticket.child is child]
        running = any(number == started for number, _ in mine)
        given_up: list[tuple[Ticket, str]] = []
        again: list[int] = []
        for number, ticket in mine:
            ticket.child = None
            ticket.resends += 0 if running else 1
            cause = lost_cause(ticket, started=number == started, closing=closing)
            if cause is None:
                again.append(number)
                continue
            del self.tickets[number]
            if cause:
                given_up.append((ticket, cause))
        self.wait_again(again)
        return given_up

    def take_waiting(self) -> list[Ticket]:
        """Every ticket not yet sent, out of the book."""
        taken = [ticket for number in self.backlog if (ticket := self.tickets.pop(number, None)) is not None]
        self.backlog.clear()
        return taken

    def take_all(self) -> list[Ticket]:
        taken = list(self.tickets.values())
        self.tickets.clear()
        self.backlog.clear()
        return taken


def lost_cause(ticket: Ticket, *, started: bool, closing: bool) -> str | None:
    """Why a ticket left by a dead child is lost ("" to drop an envelope silently as the executor
    closes: it was abandoned, and the engine sends it again on restart), or None to send it again."""
    if started:
        return "the worker process running it died"
    if closing:
        return "the executor closed before it started" if ticket.future is not None else ""
    if ticket.resends > MAX_RESENDS:
        return f"its worker process died {ticket.resends} times before it could start"
    return None


def _claim(ticket: Ticket) -> bool:
    """A call about to be sent is running from now on; False if it was cancelled while it waited."""
    future = ticket.future
    return future is None or future.running() or future.set_running_or_notify_cancel()
