"""Which worker gets which call, and when a worker is dead: the hub's decisions, with no I/O.

The hub tells the scheduler what it heard (a hello, any message, outcomes, a
bye, a peer it could not reach) and what it was given (calls, acknowledgements),
each with ``now`` read from the hub's clock; the scheduler answers with the
calls to send where and the calls that ended here. It keeps, per worker, the
commands and queues it announced, its slots (credit: a worker is never sent
more calls than it has slots, so a burst waits here, in order, instead of
overrunning it) and the calls it holds. A worker silent for
``heartbeat_s * liveness`` is forgotten and its calls end as ``lost``, which
the engine re-dispatches as new attempts. A call no worker can take waits until
``schedule_timeout_s``, then fails with ``NoWorker`` (or ``UnknownCommand`` if
no live worker has the name).

Only a call its worker reported ``started`` ends as lost with it; one it held
unstarted (prefetched, or handed back by ``bye``) waits here again, the same
attempt with nothing logged, so an innocent call never pays an attempt of the
lost-worker cap for a neighbour (a worker that does not report starts has all
its calls counted as started). ``MAX_REQUEUES`` bounds the cycling. The first
worker to announce a command sets its options (retry, timeout) until it leaves
(``announced.py``); other options announced meanwhile are a ``Conflict``.

No socket, no clock, no thread: every method is a step of a state machine, so
a test can drive it through any order of events.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from orchestrator.core.envelope import EndReason, Envelope
from orchestrator.core.errors import ConfigurationError, NoWorker, UnknownCommand, WorkerLost

from .announced import Announced, Announcer, Conflict
from .protocol import Hello

ACK_DELAY_S = 0.02
"""How long an acknowledgement may wait for a call to ride on: a send is costly, a short wait is not."""

MAX_REQUEUES = 100
"""Times a call a worker held but never started is handed to another worker before it ends as lost."""

PREFETCH_PER_SLOT = 8
"""Calls a worker holds ready per running slot by default: enough that a fast command never waits for
the next call to cross the network, few enough that a dead worker costs little to re-dispatch."""


def credit(concurrency: int, prefetch: int | None = None) -> int:
    """The slots a worker announces: one per command it runs at once, plus the calls it holds ready."""
    ready = PREFETCH_PER_SLOT * concurrency if prefetch is None else max(0, prefetch)
    return concurrency + ready


@dataclass
class Peer:
    """A worker that said hello, as the service knows it."""

    id: bytes
    name: str
    commands: frozenset[str]
    queues: frozenset[str]
    slots: int
    last_seen: float
    calls: dict[str, Envelope] = field(default_factory=dict)
    starts: bool = False
    """Reports each call it begins (``started``); the calls it holds and has not reported never ran."""
    go: bool = False
    """Begins a reported call only once told ``go``: the hub answers each ``started`` report."""
    started: set[str] = field(default_factory=set)
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    draining: bool = False
    """Said ``bye``: finishing what it holds, taking nothing new."""
    owed: list[str] = field(default_factory=list)
    """Acknowledgements not yet sent: they ride on the next call, or go alone after ``ACK_DELAY_S``."""
    owed_since: float = 0.0

    @property
    def free(self) -> int:
        return 0 if self.draining else self.slots - len(self.calls)

    def takes(self, envelope: Envelope) -> bool:
        route = envelope.route
        return envelope.command in self.commands and (route in (None, "default") or route in self.queues)


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    name: str
    commands: frozenset[str]
    queues: frozenset[str]
    slots: int
    busy: int


@dataclass(frozen=True, slots=True)
class Batch:
    """Calls for one worker, with the acknowledgements owed to it riding along."""

    peer: bytes
    calls: list[Envelope]
    acks: list[str]


@dataclass(frozen=True, slots=True)
class Ended:
    """A call that ends here, not at a worker: lost with its worker, or never taken by one."""

    envelope: Envelope
    error: Exception
    reason: EndReason


@dataclass(frozen=True, slots=True)
class Departure:
    """A worker the scheduler forgot, why, the calls it started (each ended as lost) and how many
    calls it held unstarted went back to wait for another worker."""

    peer: bytes
    name: str
    why: str
    lost: list[Ended]
    requeued: int = 0
    clean: bool = False
    """It said bye and held nothing when it went: a worker stopped on purpose."""


class Scheduler:
    """Workers, their credit and calls, the calls waiting for one, and the acknowledgements owed."""

    def __init__(self, *, heartbeat_s: float, liveness: int, schedule_timeout_s: float) -> None:
        if not heartbeat_s > 0 or type(liveness) is not int or liveness < 1 or not schedule_timeout_s > 0:
            raise ConfigurationError(
                f"heartbeat_s ({heartbeat_s!r}) and schedule_timeout_s ({schedule_timeout_s!r}) must be "
                f"positive and liveness ({liveness!r}) a whole number >= 1"
            )
        self.heartbeat_s = heartbeat_s
        self.liveness = liveness
        self.schedule_timeout_s = schedule_timeout_s
        self.silent_after_s = heartbeat_s * liveness
        """A worker (or an unknown peer's reset) older than this is gone."""
        self.peers: dict[bytes, Peer] = {}
        self.pending: dict[tuple[str, str | None], deque[tuple[Envelope, float]]] = defaultdict(deque)
        """Calls no worker could take yet, oldest first, by (command, route), with when they came."""
        self._reporters: dict[str, bytes] = {}
        """Which peer sent each outcome, so its acknowledgement goes back there."""
        self._resets: dict[bytes, float] = {}
        """Unknown peers asked to say hello, and when: at most one reset each per liveness window."""
        self._requeues: dict[str, int] = {}
        """How often each waiting call was handed back unstarted by a worker."""
        self.options = Announced()
        """The options in force per command (``announced.py``)."""

    # --- what the hub heard -------------------------------------------------------------------

    def join(self, peer: bytes, hello: Hello, now: float) -> list[Conflict]:
        """A worker said hello (one already known keeps the calls it holds); returns its conflicts."""
        self._resets.pop(peer, None)
        known = self.peers.get(peer)
        calls = known.calls if known is not None else {}
        joined = Peer(peer, hello.name, hello.commands, hello.queues, hello.slots, now, calls, hello.starts)
        joined.go = hello.starts and hello.go
        if known is not None:  # a second hello: a worker that reports starts dropped what it had not begun
            joined.started = known.started
            if hello.starts:
                unstarted = [e for e in calls.values() if e.attempt_id not in known.started]
                for envelope in self._requeue([calls.pop(e.attempt_id) for e in unstarted], now):
                    calls[envelope.attempt_id] = envelope  # handed back too often: it ends with this worker
                    known.started.add(envelope.attempt_id)
        joined.options = {command: hello.options.get(command, {}) for command in hello.commands}
        self.peers[peer] = joined
        return self.options.join(Announcer(peer, hello.name, joined.options))

    def announced(self, command: str) -> Mapping[str, Any] | None:
        """The options in force for ``command`` (``retry``, ``timeout_s``); None if no worker has it."""
        return self.options.get(command)

    def started(self, peer: bytes, attempt_ids: Iterable[str]) -> list[str]:
        """The worker begins these calls: from now on they end as lost with it. Returns those it holds
        here (the others were handed on, or ended): a worker that waits for ``go`` begins only these."""
        known = self.peers.get(peer)
        if known is None:
            return []
        begun = [attempt_id for attempt_id in attempt_ids if attempt_id in known.calls]
        known.started.update(begun)
        return begun

    def heard(self, peer: bytes, now: float) -> Peer | None:
        """A known worker is alive as of ``now``; None for a peer that never said hello (or was forgotten)."""
        known = self.peers.get(peer)
        if known is not None:
            known.last_seen = now
        return known

    def should_reset(self, peer: bytes, now: float) -> bool:
        """Ask an unknown peer for a hello? Once per liveness window: a worker waking from a freeze
        with several messages under way would otherwise resend its kept outcomes once per reset."""
        if now - self._resets.get(peer, -float("inf")) < self.silent_after_s:
            return False
        self._resets[peer] = now
        return True

    def drain(self, peer: bytes, now: float) -> tuple[int, list[Ended]]:
        """``bye``: the worker finishes what it started, takes nothing new and drops the rest, which
        wait for another worker; returns how many, and those handed back too often (lost)."""
        known = self.peers.get(peer)
        if known is None:
            return 0, []
        known.draining = True
        if not known.starts:
            return 0, []
        unstarted = [
            envelope for envelope in known.calls.values() if envelope.attempt_id not in known.started
        ]
        for envelope in unstarted:
            del known.calls[envelope.attempt_id]
        cycled = self._requeue(unstarted, now)
        return len(unstarted) - len(cycled), [self._lost(known, envelope, "left") for envelope in cycled]

    def completed(self, peer: bytes, attempt_id: str) -> None:
        """``peer`` sent the outcome of ``attempt_id``: the call frees its slot; the ack goes to ``peer``."""
        known = self.peers.get(peer)
        if known is not None:
            known.calls.pop(attempt_id, None)
            known.started.discard(attempt_id)
        self._requeues.pop(attempt_id, None)
        self._reporters[attempt_id] = peer

    def forget(self, peer: bytes, why: str, now: float) -> Departure | None:
        """Drop a worker; each call it started ends as lost, for the engine to send again; each it
        held unstarted waits for another worker."""
        known = self.peers.pop(peer, None)
        if known is None:
            return None
        self.options.leave(peer, (Announcer(p.id, p.name, p.options) for p in self.peers.values()))
        began = [e for e in known.calls.values() if not known.starts or e.attempt_id in known.started]
        unstarted = [e for e in known.calls.values() if known.starts and e.attempt_id not in known.started]
        cycled = self._requeue(unstarted, now)
        lost = [self._lost(known, envelope, why) for envelope in began + cycled]
        known.calls.clear()
        requeued = len(unstarted) - len(cycled)
        clean = known.draining and not lost and not requeued
        return Departure(peer, known.name, why, lost, requeued, clean)

    def _lost(self, known: Peer, envelope: Envelope, why: str) -> Ended:
        more = (
            "" if self._requeues.pop(envelope.attempt_id, 0) <= MAX_REQUEUES else " (handed back too often)"
        )
        return Ended(
            envelope, WorkerLost(f"worker {known.name} {why} while holding this attempt{more}"), "lost"
        )

    def _requeue(self, envelopes: list[Envelope], now: float) -> list[Envelope]:
        """Unstarted calls wait again (from ``now``, so in order); returns those handed back too often."""
        cycled = []
        for envelope in envelopes:
            count = self._requeues[envelope.attempt_id] = self._requeues.get(envelope.attempt_id, 0) + 1
            if count > MAX_REQUEUES:
                cycled.append(envelope)
            else:
                self.pending[(envelope.command, envelope.route)].append((envelope, now))
        return cycled

    # --- what the hub was given ---------------------------------------------------------------

    def place(self, envelopes: Iterable[Envelope], now: float) -> list[Batch]:
        """Each call to the worker with its command (and queue) and the most free slots, or queued."""
        batches: dict[bytes, list[Envelope]] = defaultdict(list)
        for envelope in envelopes:
            peer = max(
                (p for p in self.peers.values() if p.free > 0 and p.takes(envelope)),
                key=lambda p: p.free,
                default=None,
            )
            if peer is None:
                self.pending[(envelope.command, envelope.route)].append((envelope, now))
                continue
            peer.calls[envelope.attempt_id] = envelope
            batches[peer.id].append(envelope)
        return [self._batch(peer, calls) for peer, calls in batches.items()]

    def fill(self, peer: bytes) -> Batch | None:
        """The oldest waiting calls a worker with free slots can take, or None.

        Credit comes back a slot per outcome. A worker that reports its starts has it spent once half
        its slots are free, or once every call it holds has begun (it may be about to idle): one
        message then carries several calls, where a stream of outcomes would each bring one back.
        """
        known = self.peers.get(peer)
        if known is None or self._holds_back(known):
            return None
        calls: list[Envelope] = []
        for key in [key for key in self.pending if key[0] in known.commands]:
            waiting = self.pending[key]
            while waiting and known.free > 0 and known.takes(waiting[0][0]):
                envelope, _ = waiting.popleft()
                known.calls[envelope.attempt_id] = envelope
                calls.append(envelope)
            if not waiting:
                del self.pending[key]
        return self._batch(peer, calls) if calls else None

    @staticmethod
    def _holds_back(known: Peer) -> bool:
        """Wait for more credit to come back: more than half the slots are taken, and a call the worker
        holds has not begun (so it has work for the next free slot). Only starts reports tell that."""
        return known.starts and known.free < known.slots // 2 and len(known.started) < len(known.calls)

    def _batch(self, peer: bytes, calls: list[Envelope]) -> Batch:
        known = self.peers[peer]
        acks, known.owed = known.owed, []
        return Batch(peer, calls, acks)

    def acknowledge(self, attempt_ids: Iterable[str], now: float) -> None:
        """These outcomes are in the log: owe each acknowledgement to the worker that sent it."""
        for attempt_id in attempt_ids:
            peer = self.peers.get(self._reporters.pop(attempt_id, b""))
            if peer is not None:
                if not peer.owed:
                    peer.owed_since = now
                peer.owed.append(attempt_id)

    # --- what time brings ---------------------------------------------------------------------

    def acks_due(self, now: float) -> tuple[list[tuple[bytes, list[str]]], float]:
        """Acknowledgements that waited ``ACK_DELAY_S`` for a call, to send alone; when the next are due."""
        due, sends = float("inf"), []
        for peer in self.peers.values():
            if not peer.owed:
                continue
            if now - peer.owed_since >= ACK_DELAY_S:
                sends.append((peer.id, peer.owed))
                peer.owed = []
            else:
                due = min(due, peer.owed_since + ACK_DELAY_S)
        return sends, due

    def silent(self, now: float) -> list[Departure]:
        """Forget the workers not heard from within ``heartbeat_s * liveness`` (closed, killed or frozen)."""
        window = self.silent_after_s
        self._resets = {peer: at for peer, at in self._resets.items() if now - at < window}
        departures = []
        for peer in [p for p in self.peers.values() if now - p.last_seen > window]:
            why = f"went silent for {now - peer.last_seen:.1f}s (over {window:g}s)"
            departures.append(self._forgotten(peer.id, why, now))
        return departures

    def _forgotten(self, peer: bytes, why: str, now: float) -> Departure:
        departure = self.forget(peer, why, now)
        assert departure is not None
        return departure

    def expire(self, now: float) -> list[Ended]:
        """Fail calls that waited past the schedule timeout: ``UnknownCommand`` if no live worker
        has the name (a typo, or a deploy that dropped it), ``NoWorker`` if those that have it
        were all busy or in other queues."""
        known: set[str] = set()
        for peer in self.peers.values():
            known |= peer.commands
        ended = []
        for key in list(self.pending):
            waiting = self.pending[key]
            while waiting and now - waiting[0][1] > self.schedule_timeout_s:
                envelope, _ = waiting.popleft()
                self._requeues.pop(envelope.attempt_id, None)
                ended.append(Ended(envelope, self._unscheduled(envelope, known), "raised"))
            if not waiting:
                del self.pending[key]
        return ended

    def _unscheduled(self, envelope: Envelope, known: set[str]) -> Exception:
        if envelope.command not in known:
            return UnknownCommand(envelope.command, sorted(known), path=envelope.node)
        where = f" in queue {envelope.route!r}" if envelope.route not in (None, "default") else ""
        return NoWorker(
            f"no worker with command {envelope.command!r}{where} took attempt {envelope.attempt_id} "
            f"within {self.schedule_timeout_s:g}s; start more workers (evenflow worker --registry ...) "
            "or raise the schedule timeout"
        )

    # --- what it holds ------------------------------------------------------------------------

    def workers(self) -> list[WorkerInfo]:
        """A snapshot of the live workers (for status output and tests)."""
        return [WorkerInfo(p.name, p.commands, p.queues, p.slots, len(p.calls)) for p in self.peers.values()]
