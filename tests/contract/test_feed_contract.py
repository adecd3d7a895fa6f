"""The feed every store gives listeners: memory, embedded, mongomock and (when given) a real MongoDB.

What ``FeedStore`` promises a reader that carries its positions forward: every
event matching its patterns exactly once, each run's events in ``seq`` order;
``feed_head`` past everything logged so far; positions that are plain JSON and
come back from a checkpoint as they went in.

MongoDB has no exact global order, so its feed re-reads an overlap window
(``orchestrator/store/feed.py``). What that window promises, pinned below: an
event stamped before the newest one delivered but committed later is still
delivered once, *if it becomes readable within ``feed_window_s`` of its
stamp*; one older than that is never delivered. When more than ``MAX_SEEN``
events fall in the window, the window narrows (``floor``) instead of the
position growing.

Set ``EVENFLOW_TEST_MONGODB_URL`` to run it on a server too (the server lane,
``tests/support/stores.py``); each test then gets its own database, dropped after.
"""

from __future__ import annotations

import json
import random
import uuid
from collections import defaultdict
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from bson.int64 import Int64
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.core import events as ev
from orchestrator.core.errors import InvalidOption
from orchestrator.core.events import Event
from orchestrator.core.listening import matches
from orchestrator.core.ports import FeedStore, Position
from orchestrator.store import feed as feed_module
from orchestrator.store.feed import FeedWindow
from orchestrator.store.mongo import MongoStore
from tests.support.stores import SERVER, drop_database, open_kind

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
DOMAIN = ["order.placed", "order.paid", "order.placed.late", "orders.placed", "order", "ping"]
SYSTEM = [ev.COMMAND_STARTED, ev.COMMAND_SUCCEEDED, ev.COMMAND_FAILED]
PATTERNS = ["*", "order.*", "order.placed", "order", "*.placed", "run.*", "command.*", "ping", "nothing.here"]
READS = 10_000
"""A bound on the reads of any loop below: far more than any log here needs."""


class Harness:
    """A store under test that can be reopened (where it outlives its process) and shared."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        self._home = tmp_path / "home"
        self._database = f"evenflow_test_{uuid.uuid4().hex[:12]}"
        self.store: Any = self._open()

    def _open(self) -> Any:
        return open_kind(self.kind, self._home, self._database)

    @property
    def durable(self) -> bool:
        return self.kind in ("embedded", "mongodb")

    def reopen(self) -> Any:
        self.store.close()
        self.store = self._open()
        return self.store

    def windowed(self, window_s: float, collection: str | None = None) -> MongoStore:
        """Another writer and reader of the log (or of a new ``collection``), with its own window."""
        events = self.store.events.database[collection] if collection else self.store.events
        return MongoStore(events, write_concern=None, feed_window_s=window_s)

    def close(self) -> None:
        if self.kind == "mongodb":
            drop_database(self.store.events.database.client, self._database)
        self.store.close()


@pytest.fixture(params=["memory", "mongomock", "embedded", SERVER])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(request.param, tmp_path)
    try:
        yield harness
    finally:
        harness.close()


@pytest.fixture(params=["mongomock", SERVER])
def mongo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(request.param, tmp_path)
    try:
        yield harness
    finally:
        harness.close()


# --- building logs and reading them -----------------------------------------------------------


def interleaved_log(runs: int = 6, per_run: int = 14, seed: int = 7) -> list[list[Event]]:
    """Batches as engines append them: runs advance in turns, a few events each, ~3 per millisecond.

    Each run starts with ``run.submitted`` and ends with ``run.succeeded``; in
    between, a mix of system and domain types. Stamps never go back, as one
    writer's clock does not.
    """
    rng = random.Random(seed)
    pending = {
        f"run-{i}": [ev.RUN_SUBMITTED, *rng.choices(DOMAIN + SYSTEM, k=per_run - 2), ev.RUN_SUCCEEDED]
        for i in range(runs)
    }
    seqs = dict.fromkeys(pending, 0)
    batches: list[list[Event]] = []
    stamp = 0
    while pending:
        run = rng.choice(sorted(pending))
        batch = []
        for _ in range(rng.randint(1, 4)):
            if not pending[run]:
                break
            seqs[run] += 1
            at = T0 + timedelta(milliseconds=stamp // 3)
            batch.append(Event(run, seqs[run], pending[run].pop(0), at, data={"n": stamp}))
            stamp += 1
        if not pending[run]:
            del pending[run]
        batches.append(batch)
    return batches


def append_all(store: Any, batches: Sequence[Sequence[Event]]) -> list[Event]:
    for batch in batches:
        store.append(batch)
    return [event for batch in batches for event in batch]


def read_all(
    store: Any, position: Position | None, patterns: Sequence[str], limit: int = 100
) -> tuple[list[Event], Position]:
    """Read until a read gives nothing; the events delivered and the position after them."""
    delivered: list[Event] = []
    for _ in range(READS):
        events, position = store.read_feed(position, patterns, limit)
        if not events:
            return delivered, position
        delivered.extend(events)
    raise AssertionError(f"the feed kept giving events after {READS} reads")


def ids(events: Sequence[Event]) -> list[str]:
    return [event.id for event in events]


def assert_once_in_seq_order(delivered: Sequence[Event], expected: Sequence[Event]) -> None:
    got = ids(delivered)
    assert len(got) == len(set(got)), f"delivered twice: {sorted(i for i in got if got.count(i) > 1)[:5]}"
    wanted = set(ids(expected))
    assert set(got) == wanted, (
        f"missing {sorted(wanted - set(got))[:5]}, extra {sorted(set(got) - wanted)[:5]}"
    )
    last: dict[str, int] = defaultdict(int)
    for event in delivered:
        assert event.seq > last[event.run], f"{event.id} after seq {last[event.run]} of its run"
        last[event.run] = event.seq


def as_json(position: Position) -> Position:
    """The position as a checkpoint file or document would keep it; fails if it is not plain JSON."""
    return json.loads(json.dumps(position, allow_nan=False))


def matching(events: Sequence[Event], patterns: Sequence[str]) -> list[Event]:
    return [event for event in events if matches(patterns, event.type)]


def stamped(run: str, count: int, start: datetime, step_ms: int = 1, first_seq: int = 1) -> list[Event]:
    """``count`` events of one run from ``first_seq``, stamped ``step_ms`` apart from ``start``."""
    return [
        Event(
            run,
            seq,
            ev.RUN_SUBMITTED if seq == 1 else "order.placed",
            start + timedelta(milliseconds=step_ms * (seq - first_seq)),
            data={"seq": seq},
        )
        for seq in range(first_seq, first_seq + count)
    ]


# --- every store ------------------------------------------------------------------------------


def test_every_store_feeds_listeners(harness: Harness) -> None:
    assert isinstance(harness.store, FeedStore)


def test_an_empty_log_gives_nothing_and_a_json_position(harness: Harness) -> None:
    store = harness.store
    events, position = store.read_feed(None, ["*"], 10)
    assert events == [] and as_json(position) == position
    head = store.feed_head(["*"])
    assert as_json(head) == head
    logged = append_all(store, interleaved_log(runs=2, per_run=4))
    for start in (position, head, None):
        delivered, _ = read_all(store, start, ["*"])
        assert_once_in_seq_order(delivered, logged)


@pytest.fixture
def filled(harness: Harness) -> tuple[Any, list[Event]]:
    return harness.store, append_all(harness.store, interleaved_log())


FEED = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FEED
@given(
    limit=st.integers(1, 90),
    patterns=st.lists(st.sampled_from(PATTERNS), min_size=1, max_size=3, unique=True),
    via_checkpoint=st.booleans(),
)
def test_reading_the_feed_in_batches_of_any_size_delivers_each_matching_event_once(
    filled: tuple[Any, list[Event]], limit: int, patterns: list[str], via_checkpoint: bool
) -> None:
    """Any batch size, any mix of exact and wildcard patterns; optionally through a checkpoint each time."""
    store, logged = filled
    name = f"reader-{uuid.uuid4().hex[:8]}"
    delivered: list[Event] = []
    position: Position | None = None
    for _ in range(READS):
        events, position = store.read_feed(position, patterns, limit)
        assert len(events) <= limit
        assert all(matches(patterns, event.type) for event in events)
        if via_checkpoint:  # carried through JSON and the store, as a restarted listener would
            store.save_checkpoint(name, as_json(position))
            position = store.load_checkpoint(name)
        if not events:
            break
        delivered.extend(events)
    else:
        raise AssertionError("the feed did not end")
    assert_once_in_seq_order(delivered, matching(logged, patterns))
    again, _ = store.read_feed(position, patterns, limit)
    assert again == [], "a position at the end gives nothing more"


def test_delivered_events_are_the_logged_ones(filled: tuple[Any, list[Event]]) -> None:
    store, logged = filled
    delivered, _ = read_all(store, None, ["*"], limit=7)
    by_id = {event.id: event for event in logged}
    for event in delivered:
        assert event == by_id[event.id]


def test_events_appended_between_reads_are_each_delivered_once(harness: Harness) -> None:
    store, rng = harness.store, random.Random(11)
    batches = interleaved_log(runs=5, per_run=10, seed=3)
    delivered: list[Event] = []
    position: Position | None = None
    for batch in batches:
        store.append(batch)
        for _ in range(rng.randint(0, 2)):
            events, position = store.read_feed(position, ["order.*", "run.*"], rng.randint(1, 4))
            delivered.extend(events)
    rest, _ = read_all(store, position, ["order.*", "run.*"], limit=3)
    logged = [event for batch in batches for event in batch]
    assert_once_in_seq_order(delivered + rest, matching(logged, ["order.*", "run.*"]))


@pytest.mark.parametrize("patterns", [["*"], ["order.*"], ["ping", "run.succeeded"]])
def test_the_head_is_past_everything_logged_so_far(harness: Harness, patterns: list[str]) -> None:
    store = harness.store
    batches = interleaved_log(runs=4, per_run=10, seed=5)
    before = append_all(store, batches[: len(batches) // 2])
    head = store.feed_head(patterns)
    assert as_json(head) == head
    assert store.read_feed(head, patterns, 100)[0] == []
    after = append_all(store, batches[len(batches) // 2 :])
    delivered, _ = read_all(store, head, patterns, limit=5)
    assert_once_in_seq_order(delivered, matching(after, patterns))
    assert not set(ids(delivered)) & set(ids(before))


def test_the_head_saved_as_a_checkpoint_starts_a_reader_there(harness: Harness) -> None:
    store = harness.store
    append_all(store, interleaved_log(runs=2, per_run=6, seed=1))
    store.save_checkpoint("late", store.feed_head(["*"]))
    later = append_all(store, [stamped("run-later", 3, T0 + timedelta(minutes=1))])
    if harness.durable:
        store = harness.reopen()
    delivered, _ = read_all(store, store.load_checkpoint("late"), ["*"])
    assert ids(delivered) == ids(later)


def test_checkpoints_round_trip_by_name(harness: Harness) -> None:
    store = harness.store
    assert store.load_checkpoint("never saved") is None
    assert store.checkpoint_names() == []
    append_all(store, interleaved_log(runs=2, per_run=6))
    _, middle = store.read_feed(None, ["*"], 5)
    _, end = read_all(store, None, ["*"])
    names = {"receipts": middle, "listener:a b/c#1 ☃": end, "empty": {}}
    for name, position in names.items():
        store.save_checkpoint(name, as_json(position))
    store.save_checkpoint("receipts", as_json(end))  # overwritten, not added
    store.save_checkpoint("receipts", as_json(middle))
    for name, position in names.items():
        loaded = store.load_checkpoint(name)
        assert loaded == position and as_json(loaded) == loaded
    assert store.checkpoint_names() == sorted(names)  # once each, overwritten or not
    if harness.durable:
        reopened = harness.reopen()
        for name, position in names.items():
            assert reopened.load_checkpoint(name) == position
        assert reopened.checkpoint_names() == sorted(names)


def numbers(value: Any) -> list[Any]:
    """Every number inside a position (marks, floors, the stamps in ``seen``, rows)."""
    if isinstance(value, dict):
        return [n for item in value.values() for n in numbers(item)]
    if isinstance(value, list | tuple):
        return [n for item in value for n in numbers(item)]
    return [value] if isinstance(value, int) and not isinstance(value, bool) else []


def test_a_checkpoint_comes_back_with_plain_ints_and_advances(harness: Harness) -> None:
    """Stamps in milliseconds pass 2**31: a server hands them back as Int64 unless told otherwise."""
    store = harness.store
    first = append_all(store, interleaved_log(runs=2, per_run=4, seed=3))
    delivered, position = read_all(store, None, ["*"])
    assert sorted(ids(delivered)) == sorted(ids(first))
    store.save_checkpoint("big", position)
    later = append_all(store, [stamped("run-later", 3, T0 + timedelta(minutes=1))])
    if harness.durable:
        store = harness.reopen()
    loaded = store.load_checkpoint("big")
    assert loaded == position and all(type(n) is int for n in numbers(loaded)), loaded
    assert harness.kind in ("memory", "embedded") or max(numbers(loaded)) > 2**31
    delivered, _ = read_all(store, loaded, ["*"])
    assert sorted(ids(delivered)) == sorted(ids(later))


def as_int64(value: Any) -> Any:
    """Every whole number inside as ``Int64``, as a driver without evenflow's codec options writes it."""
    if isinstance(value, dict):
        return {key: as_int64(item) for key, item in value.items()}
    if isinstance(value, list):
        return [as_int64(item) for item in value]
    return Int64(value) if isinstance(value, int) and not isinstance(value, bool) else value


def test_a_checkpoint_another_client_wrote_with_int64_still_advances(mongo: Harness) -> None:
    """What a driver without evenflow's codec options writes and reads back: Int64 everywhere."""
    store = mongo.store
    append_all(store, interleaved_log(runs=2, per_run=4, seed=5))
    _, position = read_all(store, None, ["*"])
    foreign = as_int64(position)
    assert numbers(position) and all(type(n) is Int64 for n in numbers(foreign))
    store.checkpoints.replace_one({"_id": "foreign"}, {"position": foreign}, upsert=True)
    later = append_all(store, [stamped("run-later", 2, T0 + timedelta(minutes=1))])
    delivered, _ = read_all(store, store.load_checkpoint("foreign"), ["*"])
    assert sorted(ids(delivered)) == sorted(ids(later))


def test_a_loaded_position_reads_on_exactly_as_the_one_saved(harness: Harness) -> None:
    store = harness.store
    logged = append_all(store, interleaved_log(runs=4, per_run=12, seed=9))
    first, position = store.read_feed(None, ["order.*", "command.*"], 6)
    store.save_checkpoint("reader", position)
    if harness.durable:
        store = harness.reopen()
    loaded = store.load_checkpoint("reader")
    rest_loaded, _ = read_all(store, loaded, ["order.*", "command.*"], limit=4)
    rest_kept, _ = read_all(store, position, ["order.*", "command.*"], limit=4)
    assert ids(rest_loaded) == ids(rest_kept)
    assert_once_in_seq_order(first + rest_loaded, matching(logged, ["order.*", "command.*"]))


# --- MongoDB: the overlap window --------------------------------------------------------------


def test_a_commit_stamped_before_the_mark_but_within_the_window_is_delivered_once(mongo: Harness) -> None:
    store = mongo.windowed(30.0)
    first = stamped("run-a", 10, T0, step_ms=1000)  # T0 .. T0+9s: the mark ends at T0+9s
    store.append(first)
    delivered, position = read_all(store, None, ["*"], limit=3)
    assert ids(delivered) == ids(first)
    late = stamped("run-b", 3, T0 + timedelta(seconds=5))  # another writer's, committed only now
    store.append(late)
    again, position = read_all(store, position, ["*"], limit=2)
    assert ids(again) == ids(late)
    assert store.read_feed(position, ["*"], 100)[0] == []
    newer = stamped("run-c", 2, T0 + timedelta(seconds=10))
    store.append(newer)
    assert ids(read_all(store, position, ["*"])[0]) == ids(newer)


def test_a_commit_stamped_before_the_head_but_within_the_window_is_delivered(mongo: Harness) -> None:
    """A listener added "now" hears an event committed after it was added, whatever its stamp says."""
    store = mongo.windowed(30.0)
    store.append(stamped("run-a", 5, T0, step_ms=1000))
    head = store.feed_head(["*"])
    late = stamped("run-b", 2, T0 + timedelta(seconds=1))
    store.append(late)
    assert ids(read_all(store, head, ["*"])[0]) == ids(late)


def test_a_commit_older_than_the_window_is_not_delivered(mongo: Harness) -> None:
    """The window's promise ends at its width: an event readable later than that after its stamp is missed."""
    store = mongo.windowed(2.0)
    store.append(stamped("run-a", 4, T0, step_ms=1000))  # mark: T0+3s
    _, position = read_all(store, None, ["*"])
    inside = stamped("run-in", 1, T0 + timedelta(seconds=1, milliseconds=500))  # 1.5 s before the mark
    outside = stamped("run-out", 1, T0 + timedelta(milliseconds=500))  # 2.5 s before the mark
    store.append(inside + outside)
    delivered, _ = read_all(store, position, ["*"])
    assert ids(delivered) == ids(inside)


def test_commits_out_of_stamp_order_within_the_window_are_each_delivered_once(mongo: Harness) -> None:
    """Several writers: each run's events in stamp order, the runs committed in a shuffled order."""
    store = mongo.windowed(30.0)
    rng = random.Random(5)
    runs = [
        stamped(f"run-{i}", 6, T0 + timedelta(milliseconds=rng.randint(0, 5_000)), step_ms=7)
        for i in range(8)
    ]
    delivered: list[Event] = []
    position: Position | None = None
    for events in runs:  # commit order is not stamp order
        for start in range(0, len(events), 2):
            store.append(events[start : start + 2])
            got, position = store.read_feed(position, ["*"], rng.randint(1, 5))
            delivered.extend(got)
    rest, _ = read_all(store, position, ["*"], limit=3)
    assert_once_in_seq_order(delivered + rest, [event for events in runs for event in events])


def size_of(position: Position) -> int:
    return len(json.dumps(position, separators=(",", ":")))


def writers_log(writers: int, per_writer: int, seed: int) -> list[tuple[int, list[Event]]]:
    """Batches of several writers, each (writer, events): one run per writer, stamps interleaved ~1 per ms."""
    rng = random.Random(seed)
    runs = [
        stamped(f"run-w{w}", per_writer, T0 + timedelta(milliseconds=w), step_ms=writers)
        for w in range(writers)
    ]
    batches: list[tuple[int, list[Event]]] = []
    for w, events in enumerate(runs):
        start = 0
        while start < len(events):
            size = rng.randint(1, 40)
            batches.append((w, events[start : start + size]))
            start += size
    return batches


def commit_and_read(
    stores: Sequence[MongoStore], batches: Sequence[tuple[int, list[Event]]], rng: random.Random, limit: int
) -> tuple[list[Event], list[int]]:
    """Commit each batch through its writer, reading between commits; (delivered, position sizes)."""
    delivered: list[Event] = []
    sizes: list[int] = []
    position: Position | None = None
    pending = {w: [batch for writer, batch in batches if writer == w] for w in range(len(stores))}
    for _ in range(len(batches)):
        w = rng.choice(sorted(w for w, left in pending.items() if left))
        stores[w].append(pending[w].pop(0))  # each writer's own batches in order, writers interleaved
        for _ in range(rng.randint(0, 2)):
            got, position = stores[0].read_feed(as_json(position) if position else None, ["*"], limit)
            delivered.extend(got)
            sizes.append(size_of(position))
    for _ in range(READS):
        got, position = stores[0].read_feed(position, ["*"], limit)
        sizes.append(size_of(position))
        if not got:
            return delivered, sizes
        delivered.extend(got)
    raise AssertionError(f"the feed kept giving events after {READS} reads")


def test_a_busy_log_keeps_every_position_under_1_kb(mongo: Harness) -> None:
    """3,000 events of three writers inside one window: each delivered once, no position over 1 KB."""
    stores = [mongo.windowed(30.0) for _ in range(3)]
    batches = writers_log(3, 1_000, seed=3)
    delivered, sizes = commit_and_read(stores, batches, random.Random(4), limit=50)
    assert_once_in_seq_order(delivered, [event for _, batch in batches for event in batch])
    assert max(sizes) < 1024, f"a position grew to {max(sizes)} bytes"


@FEED
@given(
    writers=st.integers(1, 5),
    per_writer=st.integers(1, 60),
    seed=st.integers(0, 10_000),
    limit=st.integers(1, 30),
)
def test_any_writers_commits_and_reads_deliver_each_event_once_within_1_kb(
    mongo: Harness, writers: int, per_writer: int, seed: int, limit: int
) -> None:
    log = f"events_{uuid.uuid4().hex[:8]}"  # each example its own log
    stores = [mongo.windowed(30.0, log) for _ in range(writers)]
    batches = writers_log(writers, per_writer, seed)
    delivered, sizes = commit_and_read(stores, batches, random.Random(seed), limit)
    assert_once_in_seq_order(delivered, [event for _, batch in batches for event in batch])
    assert max(sizes) < 1024, f"a position grew to {max(sizes)} bytes"


def test_past_max_entries_the_window_narrows_and_the_position_stays_bounded(
    mongo: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(feed_module, "MAX_ENTRIES", 3)
    stores = [mongo.windowed(30.0) for _ in range(8)]  # eight writers: eight spans in the window
    logged = [stamped(f"run-{w}", 5, T0 + timedelta(milliseconds=50 * w), step_ms=3) for w in range(8)]
    for store, events in zip(stores, logged, strict=True):
        store.append(events)
    delivered: list[Event] = []
    position: Position | None = None
    for _ in range(READS):
        events, position = stores[0].read_feed(position, ["*"], 3)
        assert len(position["spans"]) + len(position["seen"]) <= 3, f"the position grew: {position}"
        assert as_json(position) == position
        if not events:
            break
        delivered.extend(events)
    assert_once_in_seq_order(delivered, [event for events in logged for event in events])
    assert position is not None
    floor = position["floor"]
    assert floor is not None and floor < position["at"]
    # The narrowed window: a late commit stamped after the floor is still caught, one before it is not.
    after_floor = Event("run-late", 1, ev.RUN_SUBMITTED, feed_module.FeedWindow.moment(floor + 1))
    before_floor = Event("run-lost", 1, ev.RUN_SUBMITTED, feed_module.FeedWindow.moment(floor - 1))
    stores[1].append([after_floor, before_floor])
    assert ids(read_all(stores[0], position, ["*"])[0]) == [after_floor.id]


def test_more_writers_than_max_entries_in_one_millisecond_are_still_delivered_once(
    mongo: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(feed_module, "MAX_ENTRIES", 3)
    stores = [mongo.windowed(30.0) for _ in range(10)]
    logged = [stamped(f"run-{w}", 1, T0) for w in range(10)]  # ten writers, one millisecond
    for store, events in zip(stores, logged, strict=True):
        store.append(events)
    delivered, _ = read_all(stores[0], None, ["*"], limit=2)
    assert_once_in_seq_order(delivered, [event for events in logged for event in events])


def test_events_logged_before_writers_stamped_them_are_delivered_once_beside_new_ones(mongo: Harness) -> None:
    """A log an earlier evenflow wrote (no writer stamps), and a position it saved (ids only), read on."""
    store = mongo.windowed(30.0)
    old = stamped("run-old", 6, T0, step_ms=2)
    store.events.insert_many([ev.to_doc(event) for event in old])
    legacy_position = {
        "at": FeedWindow.millis(old[2].at),
        "floor": None,
        "seen": [[e.id, FeedWindow.millis(e.at)] for e in old[:3]],
    }
    new = stamped("run-new", 4, T0 + timedelta(milliseconds=1), step_ms=2)
    store.append(new)
    delivered, position = read_all(store, as_json(legacy_position), ["*"], limit=2)
    assert_once_in_seq_order(delivered, old[3:] + new)
    assert {entry[0] for entry in position["seen"]} <= set(ids(old)) and position["spans"]


def test_an_event_stamped_by_a_clock_running_ahead_does_not_hide_the_ones_after_it(mongo: Harness) -> None:
    """The mark never passes the reader's clock by more than a second, whatever one writer's clock says."""
    store = mongo.windowed(2.0)
    now = datetime.now(UTC).replace(microsecond=0)
    ahead = stamped("run-ahead", 1, now + timedelta(minutes=5))  # a writer whose clock is 5 minutes fast
    store.append(ahead)
    delivered, position = read_all(store, None, ["*"])
    assert ids(delivered) == ids(ahead)
    assert position["at"] <= FeedWindow.millis(datetime.now(UTC)) + feed_module.AHEAD_MS
    on_time = stamped("run-on-time", 3, datetime.now(UTC).replace(microsecond=0))
    store.append(on_time)
    assert ids(read_all(store, position, ["*"])[0]) == ids(on_time)


@pytest.mark.parametrize(
    "position", [{"row": "x"}, {"row": -1}, {"at": "x"}, {"at": 1, "seen": [1]}, {"bogus": 1}, [1, 2]]
)
def test_a_position_the_store_did_not_give_is_refused_by_name(harness: Harness, position: Any) -> None:
    """What `evenflow listen` sends is checked: our error naming the position, never a crash later."""
    with pytest.raises(InvalidOption, match="is not one this store gives"):
        harness.store.read_feed(position, ["*"], 10)
    with pytest.raises(InvalidOption, match="is not one this store gives"):
        harness.store.save_checkpoint("reader", position)
    assert harness.store.load_checkpoint("reader") is None
