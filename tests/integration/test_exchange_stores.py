"""Export and import on every store kind that lists its runs: embedded, mongomock, and a server's.

A home of real runs goes out as lines and into each kind, and back out: the
same lines, the same events, and out again from a copy of that kind, the same
bytes. Choices hold the same runs everywhere. Any events the log takes survive
export∘import exactly (Hypothesis). Export pulls from the store as it writes
(counted, not timed), and import appends in bounded batches as it reads.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.cli.event_lines import from_line, line_bytes
from orchestrator.cli.exchange import imported
from orchestrator.core import events as ev
from orchestrator.core.errors import ConcurrencyConflict, InvalidOption
from orchestrator.core.events import Event
from orchestrator.store import abilities, open_store
from orchestrator.store import exchange as exchange_module
from orchestrator.store.exchange import Importer, Selection, exported
from tests.integration.test_value_mapping import taken
from tests.strategies import values
from tests.support.exchange_homes import Home, build
from tests.support.stores import SERVER, drop_database, fresh_name, open_kind

KINDS = ["embedded", "mongomock", SERVER]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Home:
    return build(tmp_path_factory.mktemp("source") / "home")


@pytest.fixture(scope="module")
def lines(source: Home) -> list[bytes]:
    store = open_store(f"embedded://{source.path}", read_only=True)
    try:
        return [line_bytes(event) for event in exported(store, Selection())]
    finally:
        store.close()


@pytest.fixture
def opened(tmp_path: Path) -> Iterator[Any]:
    """Opens stores of a kind, each fresh; closes them (and drops a server's databases) afterwards."""
    made: list[tuple[Any, str, str]] = []

    def open_one(kind: str) -> Any:
        name = fresh_name()
        store = open_kind(kind, tmp_path / name, name)
        made.append((store, kind, name))
        return store

    yield open_one
    for store, kind, name in made:
        if kind == "mongodb":
            drop_database(store.database.client, name)
        store.close()


def out(store: Any, chosen: Selection | None = None) -> list[bytes]:
    return [line_bytes(event) for event in exported(store, chosen or Selection())]


def doc(event: Event) -> bytes:
    """An event as exactly what is stored (NaN equal to NaN, types exact)."""
    return bson.encode(ev.to_doc(event))


@pytest.mark.parametrize("kind", KINDS)
def test_a_home_goes_into_each_kind_and_out_again_the_same(
    kind: str, opened: Any, lines: list[bytes]
) -> None:
    store = opened(kind)
    assert imported(store, lines) == (len(lines), 7)
    assert sorted(out(store)) == sorted(lines)
    assert imported(store, lines) == (len(lines), 7)  # again: nothing changes
    mine = out(store)
    assert sorted(mine) == sorted(lines)
    copy = opened(kind)
    imported(copy, mine)
    assert out(copy) == mine  # export∘import∘export: the same bytes, in the same order


@pytest.mark.parametrize("kind", KINDS)
def test_choices_hold_the_same_runs_on_each_kind(
    kind: str, opened: Any, source: Home, lines: list[bytes]
) -> None:
    store = opened(kind)
    imported(store, lines)
    home = open_store(f"embedded://{source.path}", read_only=True)
    try:
        since = home.read(source.orders[2])[0].at
        for chosen in (Selection(flow="orders"), Selection(since=since), Selection(run=source.orders[1])):
            theirs = out(home, chosen)
            assert out(store, chosen) == theirs and theirs, chosen  # newest run first on both
    finally:
        home.close()


def test_runs_submitted_in_one_millisecond_come_out_in_one_order_from_every_kind(
    opened: Any, lines: list[bytes]
) -> None:
    """Ties on the submission time are broken alike (run id, highest first), so an export of a
    selection is the same bytes from every store."""
    events = [from_line(line, number) for number, line in enumerate(lines, 1)]
    moment = max(event.at for event in events)
    tied = [replace(event, at=moment) for event in events]  # every run submitted in one millisecond
    expected: list[bytes] | None = None
    for kind in ("embedded", "mongomock"):
        store = opened(kind)
        imported(store, [line_bytes(event) for event in tied])
        for chosen in (Selection(since=moment), Selection(flow="orders")):
            runs = list(dict.fromkeys(event.run for event in exported(store, chosen)))
            assert runs == sorted(runs, reverse=True) and len(runs) > 1, (kind, chosen)
        mine = out(store, Selection(since=moment))
        assert expected is None or mine == expected
        expected = mine


@pytest.mark.parametrize("kind", KINDS)
def test_gaps_and_conflicts_are_named_by_line_and_the_lines_before_stay(
    kind: str, opened: Any, lines: list[bytes]
) -> None:
    store = opened(kind)
    run = from_line(lines[0], 1).run
    own = [line for line in lines if from_line(line, 1).run == run]
    with pytest.raises(InvalidOption, match=f"line 3: run {run} goes from seq 2 to 4"):
        imported(store, [*own[:2], *own[3:]])
    assert [e.seq for e in store.read(run)] == [1, 2]
    imported(store, own)
    second = from_line(next(line for line in lines if from_line(line, 1).run != run), 1).run
    theirs = [line for line in lines if from_line(line, 1).run == second]
    changed = line_bytes(replace(from_line(own[2], 3), by="someone else"))
    line = len(theirs) + 3
    with pytest.raises(
        ConcurrencyConflict, match=f"line {line}: run {run} already holds a different event at seq 3"
    ):
        imported(store, [*theirs, *own[:2], changed, *own[3:]])
    assert out(store, Selection(run=second)) == theirs  # the lines before it are in
    assert out(store, Selection(run=run)) == own  # and nothing of the run is altered


def test_a_store_that_cannot_list_its_runs_says_so() -> None:
    with pytest.raises(Exception, match="cannot be exported"):
        list(exported(open_store("memory://"), Selection()))


names = st.text(st.sampled_from("abcXYZ019-_./é"), min_size=1, max_size=10)
maybe = st.none() | names
stamps = st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9999, 1, 1)).map(
    lambda moment: ev.to_millis(moment.replace(tzinfo=UTC))
)
types = st.sampled_from(sorted(ev.KNOWN_TYPES)) | st.sampled_from(["order.placed", "a-b.c_d"])


SLOW = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture]


@st.composite
def logs(draw: st.DrawFn) -> list[Event]:
    """A few runs of events with values of every kind the log takes, each run numbered from 1."""
    found: list[Event] = []
    for run in draw(st.lists(names, min_size=1, max_size=3, unique=True)):
        for seq in range(1, draw(st.integers(1, 4)) + 1):
            data = draw(st.dictionaries(st.sampled_from(["result", "error", "x"]), values, max_size=3))
            if not taken(data):
                data = {}
            attempt = draw(st.none() | st.integers(1, 2**31))
            fields = (draw(types), draw(stamps), draw(maybe), attempt, draw(maybe), data)
            found.append(
                Event(run, seq, *fields, by=draw(maybe), causation=draw(maybe), correlation=draw(maybe))
            )
    return found


@pytest.mark.parametrize("kind", ["embedded", "mongomock"])
@settings(max_examples=40, deadline=None, suppress_health_check=SLOW)
@given(log=logs())
def test_export_then_import_keeps_every_event_exactly(kind: str, log: list[Event], tmp_path: Path) -> None:
    first = open_kind(kind, tmp_path / fresh_name(), "unused")
    second = open_kind(kind, tmp_path / fresh_name(), "unused")
    try:
        first.append(log)
        written = out(first)
        assert [doc(from_line(line, 1)) for line in written] == [doc(e) for e in exported(first, Selection())]
        imported(second, written)
        for run in dict.fromkeys(e.run for e in log):
            assert [doc(e) for e in second.read(run)] == [doc(e) for e in first.read(run)]
        assert out(second) == written
    finally:
        first.close()
        second.close()


class Counted:
    """An iterator that counts what was taken from it."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.taken = iter(inner), 0

    def __iter__(self) -> Counted:
        return self

    def __next__(self) -> Any:
        item = next(self.inner)
        self.taken += 1
        return item


@pytest.mark.parametrize("kind", ["embedded", "mongomock"])
def test_export_takes_from_the_store_only_as_it_writes(
    kind: str, opened: Any, lines: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = opened(kind)
    imported(store, lines)
    pulled: list[Counted] = []
    reads: list[str] = []
    scan, find, read = getattr(store, "scan", None), store.events.find, store.read

    def counted_scan(*args: Any) -> Counted:
        pulled.append(Counted(scan(*args)))  # type: ignore[misc]
        return pulled[-1]

    def counted_read(run: str, *args: Any) -> list[Event]:
        reads.append(run)
        return read(run, *args)

    if kind == "embedded":
        monkeypatch.setattr(store, "scan", counted_scan)
    else:
        monkeypatch.setattr(store.events, "find", lambda *a, **k: Wrapped(find(*a, **k), pulled))
    monkeypatch.setattr(store, "read", counted_read)
    everything = exported(store, Selection())
    next(everything)
    assert [c.taken for c in pulled] == [1] and reads == []  # one event taken, for the one written
    assert sum(1 for _ in everything) == len(lines) - 1
    pulled.clear()
    chosen = exported(store, Selection(flow="orders"))
    next(chosen)
    # one run read, for its first line; the submissions looked at most one ahead (ties on the time)
    assert len(reads) == 1 and all(c.taken <= 2 for c in pulled)


class Wrapped:
    """A cursor whose iteration is counted (``sort`` and ``batch_size`` pass through)."""

    def __init__(self, cursor: Any, pulled: list[Counted]) -> None:
        self.cursor, self.pulled = cursor, pulled

    def __iter__(self) -> Iterator[Any]:
        return iter(self.cursor)  # the store's own reads (of a run): not counted

    def sort(self, *args: Any) -> Wrapped:
        return Wrapped(self.cursor.sort(*args), self.pulled)

    def batch_size(self, size: int) -> Counted:
        assert size <= exchange_module.PAGE_EVENTS
        self.pulled.append(Counted(self.cursor.batch_size(size)))
        return self.pulled[-1]


def test_import_appends_in_bounded_batches_as_it_reads(lines: list[bytes]) -> None:
    store = open_store("mongomock://")
    sizes: list[tuple[int, int]] = []
    given = Counted(lines)
    append = store.append

    def counted_append(events: Sequence[Event]) -> None:
        sizes.append((len(events), given.taken))
        append(events)

    store.append = counted_append  # type: ignore[method-assign]
    importer = Importer(store, batch_events=10)
    for number, line in enumerate(given, start=1):
        importer.add(from_line(line, number), number)
    importer.flush()
    assert max(size for size, _ in sizes) == 10 and sum(size for size, _ in sizes) == len(lines)
    assert [taken for _, taken in sizes[:3]] == [10, 20, 30]  # each batch appended as soon as it is full
    assert abilities(store).read_models is not None and sorted(out(store)) == sorted(lines)
