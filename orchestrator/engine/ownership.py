"""Which runs this orchestrator drives when several share one MongoDB: leases judged on our own clock.

Each orchestrator keeps one lease document and bumps its ``beat`` every renew
period; a run belongs to whoever submitted it or last appended
``owner.changed`` to it. Another orchestrator's lease counts as expired once we
have seen its beat unchanged for a whole lease period on *our* monotonic clock,
so clocks that disagree between hosts never shorten a lease. A released lease
(a clean stop) and a run with no owner are free at once.

Taking a run over appends ``owner.changed`` before anything else: a former
owner that was only paused finds its next append to the run in conflict,
folds the run again, sees it is no longer its own and dispatches nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..core.crashpoints import crash_point
from ..core.ports import LeaseStore

LEASE_S = 10.0
"""How long an orchestrator's beat may stand still before its runs are taken over."""
RENEWS_PER_LEASE = 5


@dataclass(slots=True)
class _Seen:
    beat: int
    released: bool
    since: float
    """When, on our clock, we first saw this beat."""


class Leases:
    def __init__(
        self,
        store: LeaseStore,
        me: str,
        *,
        lease_s: float = LEASE_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.me = me
        self.lease_s = lease_s
        self.renew_s = lease_s / RENEWS_PER_LEASE
        self._monotonic = monotonic
        self._seen: dict[str, _Seen] = {}
        self.next_renew = 0.0
        self._next_scan = 0.0
        self._held = False

    def due(self) -> bool:
        return self._monotonic() >= self.next_renew

    def wait_s(self) -> float:
        return max(0.0, self.next_renew - self._monotonic())

    def tick(self) -> None:
        """Renew our lease and look at everyone else's."""
        now = self._monotonic()
        self.next_renew = now + self.renew_s
        self.store.renew_lease(self.me)
        if not self._held:
            self._held = True
            crash_point("after-lease-acquired")
        for owner, (beat, released) in self.store.read_leases().items():
            seen = self._seen.get(owner)
            if seen is None or (seen.beat, seen.released) != (beat, released):
                self._seen[owner] = _Seen(beat, released, now)

    def scan_due(self, owners: Iterable[str | None]) -> bool:
        """Whether to list unfinished runs again: every renew while the lease of an owner of runs we
        know is lapsing, else once per lease (the listing reads every run's lifecycle events)."""
        now = self._monotonic()
        lapsing = any(
            (seen := self._seen.get(owner)) is not None
            and (seen.released or now - seen.since >= self.lease_s - self.renew_s)
            for owner in owners
            if owner is not None
        )
        if now < self._next_scan and not lapsing:
            return False
        self._next_scan = now + self.lease_s
        return True

    def takeable(self, owner: str | None) -> bool:
        """Whether a run of ``owner`` may be taken over now."""
        if owner is None or owner == self.me:
            return True
        seen = self._seen.get(owner)
        if seen is None:  # no lease seen yet: judge from now on, never at first sight
            self._seen[owner] = _Seen(-1, False, self._monotonic())
            return False
        return seen.released or self._monotonic() - seen.since >= self.lease_s

    def release(self) -> None:
        if self._held:
            self.store.release_lease(self.me)
            self._held = False


class Ownership:
    """Whether a run is this engine's to drive: always, alone on a store; by its owner, with leases."""

    def __init__(self, by: str, leases: Leases | None) -> None:
        self.by = by
        self.leases = leases

    def owns(self, owner: str | None) -> bool:
        return self.leases is None or owner == self.by

    def takeable(self, owner: str | None) -> bool:
        """Whether a run of ``owner`` may be taken over now (never without leases: all runs are ours)."""
        return self.leases is not None and self.leases.takeable(owner)
