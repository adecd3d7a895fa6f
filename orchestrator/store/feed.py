"""Reading a MongoDB log as one feed when several writers commit out of order.

Per-run ``seq`` is exact, but no global counter is: two orchestrators stamp
``at`` and commit in either order, so a reader that only moves forward past
the newest ``at`` it saw skips the event committed a moment later with an
older stamp. The feed re-reads an overlap window instead: each read asks for
events stamped at or after ``mark - window`` that it has not yet delivered
(``seen``, the ids delivered within the window), oldest first. An event is
missed only if it becomes readable more than ``window`` after its stamp. The
position carries ``mark`` and ``seen``; ``seen`` is bounded, and when it is
full the oldest ids leave it and the window narrows to what it still covers
(``floor``), so a reader of a very busy log has a shorter window, not a
larger position.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from orchestrator.core.listening import pattern_regex
from orchestrator.core.ports import Position

MAX_SEEN = 10_000
"""Ids a position remembers; past it the window narrows."""


def type_filter(patterns: Sequence[str]) -> dict[str, Any]:
    """The query on ``type`` that the patterns mean: ``$in`` for exact types, ``$regex`` for the rest."""
    if "*" in patterns:
        return {}
    exact = [pattern for pattern in patterns if "*" not in pattern]
    wild = [{"type": {"$regex": pattern_regex(pattern)}} for pattern in patterns if "*" in pattern]
    either = ([{"type": {"$in": exact}}] if exact else []) + wild
    return either[0] if len(either) == 1 else {"$or": either}


class FeedWindow:
    """The position arithmetic of the overlap window (``{"at", "floor", "seen"}``, times in ms)."""

    def __init__(self, window_s: float) -> None:
        self.window_ms = int(window_s * 1000)

    def start(self) -> Position:
        return {"at": None, "floor": None, "seen": []}

    def parse(self, position: Position | None) -> Window:
        if not position or position.get("at") is None:
            return Window(None, None, {})
        seen = {str(entry[0]): int(entry[1]) for entry in position.get("seen") or ()}
        floor = position.get("floor")
        return Window(int(position["at"]), None if floor is None else int(floor), seen)

    def query(self, window: Window) -> dict[str, Any]:
        """Events not yet delivered, stamped within the window (from the first event without a mark)."""
        query: dict[str, Any] = {}
        if window.mark is not None:
            low = window.mark - self.window_ms
            query["at"] = {"$gte": self.moment(max(low, window.floor or low))}
        if window.seen:
            query["_id"] = {"$nin": sorted(window.seen)}
        return query

    def advance(self, window: Window, docs: Iterable[Mapping[str, Any]]) -> Position:
        """The position after delivering ``docs`` (what the query returned, oldest first)."""
        known = dict(window.seen)
        for doc in docs:
            known[str(doc["_id"])] = self.millis(doc["at"])
        if not known and window.mark is None:
            return self.start()
        mark = max([*known.values(), *([window.mark] if window.mark is not None else [])])
        kept = sorted((at, id_) for id_, at in known.items() if at >= mark - self.window_ms)
        floor = window.floor if window.floor is not None and window.floor > mark - self.window_ms else None
        if len(kept) > MAX_SEEN:
            cut = len(kept) - MAX_SEEN
            while cut > 0 and kept[cut][0] == kept[cut - 1][0]:
                cut -= 1  # never split one millisecond: the floor excludes whole ones, so keep it all
            if cut > 0:
                kept = kept[cut:]
                floor = kept[0][0]
        return {"at": mark, "floor": floor, "seen": [[id_, at] for at, id_ in kept]}

    @staticmethod
    def millis(moment: datetime) -> int:
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return int(moment.timestamp() * 1000)

    @staticmethod
    def moment(millis: int) -> datetime:
        return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=millis)


@dataclass(frozen=True, slots=True)
class Window:
    mark: int | None
    """The newest stamp delivered (ms); None before the first event."""
    floor: int | None
    """Set when ``seen`` overflowed: nothing older than this is read again."""
    seen: dict[str, int]
