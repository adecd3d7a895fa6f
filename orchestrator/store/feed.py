"""Reading a MongoDB log as one feed when several writers commit out of order.

Per-run ``seq`` is exact, but no global counter is: two orchestrators stamp
``at`` and commit in either order, so a reader that only moves forward past
the newest ``at`` it saw skips the event committed a moment later with an
older stamp. The feed re-reads an overlap window instead: each read asks for
events stamped at or after ``mark - window`` that it has not yet delivered,
oldest first. An event is missed only if it becomes readable more than
``window`` after its stamp (a writer stalled mid-append, or a clock stepped
back by more).

What was delivered within the window is kept small by the writers: each store
that appends stamps its events with its own id (``wr``) and a counter
(``wn``) it takes for each event, so the events one writer appended in a row
are one span ``[wr, first, last, newest stamp]`` of the position, however many
they are. Events logged before writers stamped them are remembered by id
(``seen``). The position holds at most ``MAX_ENTRIES`` spans and ids together
(under 1 KB as JSON): past that, the oldest leave it and the window narrows to
what it still covers (``floor``), so a reader of a log with very many writers
has a shorter window, not a larger position.
"""

from __future__ import annotations

import itertools
import logging
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from orchestrator.core.errors import InvalidOption
from orchestrator.core.listening import pattern_regex
from orchestrator.core.ports import Position

MAX_ENTRIES = 12
"""Spans and ids a position remembers (each under 60 bytes as JSON); past it the window narrows."""
AHEAD_MS = 1_000
"""How far past the reader's clock the mark may go."""
WRITER, WRITER_N = "wr", "wn"
"""The fields a writer stamps on each event it stores (``writer_stamps``)."""
STAMPS = {"at": 1, WRITER: 1, WRITER_N: 1}
"""The fields ``advance`` reads of a document: a projection."""
_FORM = '{"at": ms, "floor": ms or null, "seen": [[id, ms], ...], "spans": [[writer, n, n, ms], ...]}'

log = logging.getLogger("evenflow.store")


def writer_stamps() -> Callable[[], dict[str, Any]]:
    """A new writer's stamp: its id (random, 12 hex digits) and the next number of its counter."""
    writer, counter = secrets.token_hex(6), itertools.count(1)
    return lambda: {WRITER: writer, WRITER_N: next(counter)}


def type_filter(patterns: Sequence[str]) -> dict[str, Any]:
    """The query on ``type`` that the patterns mean: ``$in`` for exact types, ``$regex`` for the rest."""
    if "*" in patterns:
        return {}
    exact = [pattern for pattern in patterns if "*" not in pattern]
    wild = [{"type": {"$regex": pattern_regex(pattern)}} for pattern in patterns if "*" in pattern]
    either = ([{"type": {"$in": exact}}] if exact else []) + wild
    return either[0] if len(either) == 1 else {"$or": either}


@dataclass(slots=True)
class Span:
    """Events ``first..last`` of one writer, all delivered; ``at`` is the newest stamp among them."""

    writer: str
    first: int
    last: int
    at: int


@dataclass(slots=True)
class Window:
    mark: int | None
    """The newest stamp delivered (ms); None before the first event."""
    floor: int | None
    """Set when the position overflowed: nothing older than this is read again."""
    seen: dict[str, int] = field(default_factory=dict)
    """Unstamped events delivered within the window: id → stamp."""
    spans: list[Span] = field(default_factory=list)

    def entries(self) -> int:
        return len(self.seen) + len(self.spans)


class FeedWindow:
    """The position arithmetic of the overlap window (times in ms)."""

    def __init__(self, window_s: float) -> None:
        self.window_ms = int(window_s * 1000)

    def start(self) -> Position:
        return {"at": None, "floor": None, "seen": [], "spans": []}

    def parse(self, position: Position | None) -> Window:
        """The window a position names; ``InvalidOption`` for one this store did not give."""
        if not position:
            return Window(None, None)
        if not isinstance(position, Mapping) or "at" not in position:
            raise bad_position(position, _FORM)
        if position["at"] is None:
            return Window(None, None)
        mark: Any = position.get("at")
        floor: Any = position.get("floor")
        seen, spans = position.get("seen") or [], position.get("spans") or []
        if not (_whole(mark) and (floor is None or _whole(floor)) and _pairs(seen) and _spans(spans)):
            raise bad_position(position, _FORM)
        return Window(
            int(mark),
            None if floor is None else int(floor),
            {id_: int(at) for id_, at in seen},
            [Span(w, int(first), int(last), int(at)) for w, first, last, at in spans],
        )

    def query(self, window: Window) -> dict[str, Any]:
        """Events not yet delivered, stamped within the window (from the first event without a mark)."""
        query: dict[str, Any] = {}
        if window.mark is not None:
            low = window.mark - self.window_ms
            query["at"] = {"$gte": self.moment(max(low, window.floor or low))}
        delivered: list[dict[str, Any]] = [
            {WRITER: span.writer, WRITER_N: {"$gte": span.first, "$lte": span.last}} for span in window.spans
        ]
        if window.seen:
            delivered.append({"_id": {"$in": sorted(window.seen)}})
        if delivered:
            query["$nor"] = delivered
        return query

    def advance(self, window: Window, docs: Iterable[Mapping[str, Any]], now: int) -> Position:
        """The position after delivering ``docs`` (what the query returned, oldest first).

        ``now`` is the reader's clock (ms): the mark never passes it by more than
        ``AHEAD_MS``, so one event stamped by a clock running ahead cannot move
        the window past the events that correct clocks stamp after it.
        """
        after = Window(
            window.mark, window.floor, dict(window.seen), [Span(*_fields(s)) for s in window.spans]
        )
        for doc in docs:
            at = self.millis(doc["at"])
            writer, n = doc.get(WRITER), doc.get(WRITER_N, False)
            if isinstance(writer, str) and _whole(n):
                _add(after.spans, writer, int(n), at)
            else:
                after.seen[str(doc["_id"])] = at
            if at > now + self.window_ms // 2:
                log.warning(
                    "event %s is stamped %d ms ahead of this clock; keep clocks in sync", doc["_id"], at - now
                )
        stamps = [*after.seen.values(), *(span.at for span in after.spans)]
        if not stamps and window.mark is None:
            return self.start()
        mark = max(min(max(stamps, default=0), now + AHEAD_MS), window.mark or 0)
        return self._bounded(after, mark)

    def _bounded(self, window: Window, mark: int) -> Position:
        """Forget what fell out of the window; past ``MAX_ENTRIES``, narrow it (never splitting a ms)."""
        low = mark - self.window_ms
        floor = window.floor if window.floor is not None and window.floor > low else None
        entries: list[tuple[int, str | Span]] = sorted(
            [(at, id_) for id_, at in window.seen.items() if at >= low]
            + [(span.at, span) for span in window.spans if span.at >= low],
            key=lambda entry: entry[0],
        )
        cut = max(len(entries) - MAX_ENTRIES, 0)
        while 0 < cut < len(entries) and entries[cut][0] == entries[cut - 1][0]:
            cut -= 1
        if cut > 0:
            floor = entries[cut - 1][0] + 1
            entries = entries[cut:]
        return {
            "at": mark,
            "floor": floor,
            "seen": sorted([entry, at] for at, entry in entries if isinstance(entry, str)),
            "spans": sorted(list(_fields(entry)) for _, entry in entries if isinstance(entry, Span)),
        }

    @staticmethod
    def millis(moment: datetime) -> int:
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return int(moment.timestamp() * 1000)

    @staticmethod
    def moment(millis: int) -> datetime:
        return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=millis)


def _add(spans: list[Span], writer: str, n: int, at: int) -> None:
    """Put event ``n`` of ``writer`` into the spans, joining the ones it makes adjacent."""
    mine = [span for span in spans if span.writer == writer]
    touching = [span for span in mine if span.first - 1 <= n <= span.last + 1]
    if not touching:
        spans.append(Span(writer, n, n, at))
        return
    joined = Span(
        writer,
        min(n, *(span.first for span in touching)),
        max(n, *(span.last for span in touching)),
        max(at, *(span.at for span in touching)),
    )
    spans[:] = [span for span in spans if all(span is not other for other in touching)] + [joined]


def _fields(span: Span) -> tuple[str, int, int, int]:
    return span.writer, span.first, span.last, span.at


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


def _pairs(seen: Any) -> bool:
    return isinstance(seen, list) and all(
        isinstance(entry, list | tuple) and len(entry) == 2 and isinstance(entry[0], str) and _whole(entry[1])
        for entry in seen
    )


def _spans(spans: Any) -> bool:
    return isinstance(spans, list) and all(
        isinstance(entry, list | tuple)
        and len(entry) == 4
        and isinstance(entry[0], str)
        and all(_whole(number) for number in entry[1:])
        and entry[1] <= entry[2]
        for entry in spans
    )
