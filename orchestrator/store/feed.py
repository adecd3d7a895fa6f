"""Reading a MongoDB log as one feed when several writers commit out of order.

Per-run ``seq`` is exact, but no global counter is: two orchestrators stamp
``at`` and commit in either order, so a reader that only moves forward past
the newest ``at`` it saw skips the event committed a moment later with an
older stamp. The feed re-reads an overlap window instead: each read asks for
events stamped at or after ``mark - window`` that it has not yet delivered
(``seen``, the ids delivered within the window), oldest first. An event is
missed only if it becomes readable more than ``window`` after its stamp (a
writer stalled mid-append, or a clock stepped back by more). The
position carries ``mark`` and ``seen``; ``seen`` is bounded, and when it is
full the oldest ids leave it and the window narrows to what it still covers
(``floor``), so a reader of a very busy log has a shorter window, not a
larger position.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from orchestrator.core.errors import InvalidOption
from orchestrator.core.listening import pattern_regex
from orchestrator.core.ports import Position

MAX_SEEN = 10_000
"""Ids a position remembers; past it the window narrows."""
AHEAD_MS = 1_000
"""How far past the reader's clock the mark may go."""

log = logging.getLogger("evenflow.store")


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
        """The window a position names; ``InvalidOption`` for one this store did not give."""
        if not position:
            return Window(None, None, {})
        if not isinstance(position, Mapping) or "at" not in position:
            raise bad_position(position, '{"at": ms, "floor": ms or null, "seen": [[id, ms], ...]}')
        if position["at"] is None:
            return Window(None, None, {})
        mark: Any = position.get("at")
        floor: Any = position.get("floor")
        seen: Any = position.get("seen") or []
        pairs = isinstance(seen, list) and all(
            isinstance(entry, list | tuple)
            and len(entry) == 2
            and isinstance(entry[0], str)
            and _whole(entry[1])
            for entry in seen
        )
        if not (_whole(mark) and (floor is None or _whole(floor)) and pairs):
            raise bad_position(position, '{"at": ms, "floor": ms or null, "seen": [[id, ms], ...]}')
        return Window(int(mark), None if floor is None else int(floor), {id_: int(at) for id_, at in seen})

    def query(self, window: Window) -> dict[str, Any]:
        """Events not yet delivered, stamped within the window (from the first event without a mark)."""
        query: dict[str, Any] = {}
        if window.mark is not None:
            low = window.mark - self.window_ms
            query["at"] = {"$gte": self.moment(max(low, window.floor or low))}
        if window.seen:
            query["_id"] = {"$nin": sorted(window.seen)}
        return query

    def advance(self, window: Window, docs: Iterable[Mapping[str, Any]], now: int) -> Position:
        """The position after delivering ``docs`` (what the query returned, oldest first).

        ``now`` is the reader's clock (ms): the mark never passes it by more than
        ``AHEAD_MS``, so one event stamped by a clock running ahead cannot move
        the window past the events that correct clocks stamp after it.
        """
        known = dict(window.seen)
        for doc in docs:
            known[str(doc["_id"])] = at = self.millis(doc["at"])
            if at > now + self.window_ms // 2:
                log.warning(
                    "event %s is stamped %d ms ahead of this clock; keep clocks in sync", doc["_id"], at - now
                )
        if not known and window.mark is None:
            return self.start()
        newest = max([*known.values(), *([window.mark] if window.mark is not None else [])])
        mark = max(min(newest, now + AHEAD_MS), window.mark or 0)
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


def row_of(position: Position | None) -> int:
    """The journal row a position of a one-writer store names (``{"row": n}``; none: the start)."""
    if not position:
        return 0
    row: Any = position.get("row") if isinstance(position, Mapping) else None
    if not _whole(row) or row < 0:
        raise bad_position(position, '{"row": n}')
    return int(row)


def bad_position(position: Any, form: str) -> InvalidOption:
    return InvalidOption(
        f"feed position {position!r:.120} is not one this store gives ({form}); pass back a position "
        "read_feed or feed_head returned, or None to read from the start"
    )


def _whole(value: Any) -> bool:
    """A whole number, whichever int type a driver hands back (PyMongo's ``Int64`` among them)."""
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class Window:
    mark: int | None
    """The newest stamp delivered (ms); None before the first event."""
    floor: int | None
    """Set when ``seen`` overflowed: nothing older than this is read again."""
    seen: dict[str, int]
