"""Copying a log from one store into another: streaming, idempotent, resumable, verified by folding.

Runs come from the source's feed of ``run.submitted``, ``batch`` at a time, so
memory holds one batch of runs however long the log. For each run the
target's events are read first: those it holds must be the source's, byte for
byte as stored (then they are skipped), else the copy stops with
``ConcurrencyConflict`` before writing anything of that batch. What is missing
goes to the target through its own ``append``, one call per batch (one group
commit); events are appended in ``seq`` order, so a copy killed anywhere
leaves every run a prefix of its log, and running it again copies only the
rest. Each run is then read back from the target and folded: its state must be
the source's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.core import events as ev
from orchestrator.core.errors import (
    ConcurrencyConflict,
    ConfigurationError,
    CorruptEvent,
    StoreLocked,
    StoreUnavailable,
)
from orchestrator.core.events import Event
from orchestrator.core.evolve import fold
from orchestrator.core.ports import EventStore

from . import abilities
from .embedded import JOURNAL
from .encoding import encode_events
from .owner_lock import OwnerLock


@dataclass(slots=True)
class Migration:
    """What a copy did: runs seen, events copied or already there, runs whose folds agree."""

    runs: int = 0
    copied: int = 0
    skipped: int = 0
    verified: int = 0
    unreadable: dict[str, str] = field(default_factory=dict)
    """Runs whose source events do not decode, and why: nothing of them is copied."""

    @property
    def complete(self) -> bool:
        return not self.unreadable and self.verified == self.runs


def migrate(source: EventStore, target: EventStore, *, batch: int) -> Migration:
    """Copy every run of ``source`` into ``target``, ``batch`` runs at a time (one append each).

    Raises ``ConcurrencyConflict`` when the target holds other events for a run
    (nothing of that batch is written), or when a run copied does not fold to
    the source's state (someone else writes to the target).
    """
    feed = abilities(source).feed
    if feed is None:
        raise ConfigurationError(
            f"cannot list the runs of {source!r:.80}: it offers no feed to read them from"
        )
    if batch < 1:
        raise ConfigurationError(f"batch {batch} copies nothing; give 1 or more runs per batch")
    done = Migration()
    position = None
    while True:
        submitted, position = feed.read_feed(position, [ev.RUN_SUBMITTED], batch)
        if not submitted:
            return done
        _copy(source, target, [event.run for event in submitted], done)


def _copy(source: EventStore, target: EventStore, runs: Sequence[str], done: Migration) -> None:
    """One batch: plan every run, append what is missing in one call, then verify every run."""
    logs: dict[str, list[Event]] = {}
    missing: list[Event] = []
    for run in runs:
        done.runs += 1
        try:
            events = source.read(run)
        except CorruptEvent as exc:
            done.unreadable[run] = str(exc)
            continue
        held = _held(run, events, target.read(run))
        done.skipped += held
        missing.extend(events[held:])
        logs[run] = events
    if missing:
        target.append(missing)
        done.copied += len(missing)
    for run, events in logs.items():
        if folded(run, target.read(run)) != folded(run, events):
            raise ConcurrencyConflict(
                f"run {run!r} folds to another state in the target than in the source after the copy: "
                "something else writes to the target; stop it and run the migration again"
            )
        done.verified += 1


def _held(run: str, events: Sequence[Event], stored: Sequence[Event]) -> int:
    """How many of the run's events the target holds already; a conflict if they are not the same."""
    if len(stored) > len(events):
        raise ConcurrencyConflict(
            f"the target holds {len(stored)} events of run {run!r}, the source only {len(events)}: it is "
            "another log; migrate into an empty database (or one holding an earlier copy of this log)"
        )
    prefix = events[: len(stored)]
    for event, mine, theirs in zip(prefix, encode_events(prefix), encode_events(stored), strict=True):
        if mine != theirs:
            raise ConcurrencyConflict(
                f"the target already holds event {event.id} with other content than the "
                "source's: it is another log; migrate into an empty database (or one holding an earlier "
                "copy of this log)"
            )
    return len(stored)


def folded(run: str, events: Sequence[Event]) -> str:
    """The state ``events`` fold to, as text: as text, a NaN result equals itself and 1 is not 1.0."""
    try:
        return repr(fold(run, events))
    except CorruptEvent as exc:  # a run the engine would refuse is copied as it is, refusals compared
        return f"does not fold: {exc}"


@contextlib.contextmanager
def quiet_home(home: Path) -> Iterator[None]:
    """Hold an embedded ``home``'s owner lock while copying from it, so no orchestrator writes to it.

    A home this user may not write to (another user's, a read-only mount) cannot
    be locked; it is read as it stands, and a run its owner writes meanwhile is
    copied as far as it was read (running the copy again adds the rest).
    """
    if not (home / JOURNAL).is_file():
        raise StoreUnavailable(
            f"no embedded store in {home} ({JOURNAL} is missing); give the home an orchestrator wrote to"
        )
    try:
        lock: OwnerLock | None = OwnerLock.acquire(home)
    except StoreLocked as exc:
        owner = f"process {exc.pid}" if exc.pid else "another process"
        raise ConfigurationError(
            f"{owner} runs an orchestrator on {home}; stop it first, so that the copy holds its whole log"
        ) from None
    except StoreUnavailable:
        lock = None
    try:
        yield
    finally:
        if lock is not None:
            lock.release()
