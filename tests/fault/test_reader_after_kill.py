"""A writer SIGKILLed mid-stream: a read-only open, with no writer since, sees every append that returned.

The writer is a subprocess appending one event per ``EmbeddedStore.append`` and
writing, after each append returned, how many have. The test SIGKILLs it at a
chosen point and opens the home read-only in another process, as every query
command does. An append that returned is in the ``-wal`` (full sync), so the
reader must find at least the reported events, in order, and nothing but the
writer's, whichever way it reads (the journal, a run's log, the ``.events``
mirror).

Why a read-only open is enough: SQLite rebuilds the ``-shm`` index from the
``-wal`` (WAL recovery) in the first connection to open the journal after all
have closed, read-only or not; one that may not write the ``-shm`` rebuilds it
in its own memory. So the first reader after a kill sees what the next owner
will. The only commit that can differ is one the writer was killed inside
(written to the ``-wal``, not yet indexed, its append never returned): while a
connection that was open across the kill stays open, SQLite keeps the old
index and every opener, reader or writer alike, sees the log without it.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Any

import pytest

from orchestrator.core.events import Event
from orchestrator.store import open_store
from orchestrator.store.embedded import JOURNAL
from tests.acceptance.test_read_only_home import by_permissions
from tests.integration.test_migrate import sample_logs
from tests.support.polling import wait_until

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
FIRST_PAGE = 4096
"""SQLite's default page size: until its first automatic checkpoint the journal file is page 1 alone."""

WRITER = """
import os, sys
from orchestrator.store.embedded import EmbeddedStore
from tests.fault.test_reader_after_kill import supply

store = EmbeddedStore(sys.argv[1])
report = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT, 0o644)
for appended, event in enumerate(supply(), 1):
    store.append([event])
    os.pwrite(report, b"%12d" % appended, 0)
"""

READER = """
import dataclasses, json, sys
from orchestrator.store import open_store
from tests.fault.test_reader_after_kill import view_of

store = open_store(None, home=sys.argv[1], read_only=True)
print(json.dumps(dataclasses.asdict(view_of(store))))
"""


def supply() -> Iterator[Event]:
    """The writer's events, endless and the same every time: real runs, 100 after 100."""
    for cycle in count():
        for log in sample_logs(100, prefix=f"c{cycle}"):
            yield from log


def appended_ids(n: int) -> list[str]:
    """The ids of the writer's first ``n`` events, in the order it appended them."""
    return [event.id for _, event in zip(range(n), supply(), strict=False)]


@dataclass(frozen=True)
class View:
    """What one read-only open holds: event ids in commit order, and how many the other read paths give."""

    scanned: list[str]
    read: int
    """Events read run by run, the runs taken from the feed of ``run.submitted`` (the query commands' way)."""
    mirrored: int
    """Events in the ``.events`` mirror that aggregations (``runs``, ``stats``) run on."""


def view_of(store: Any) -> View:
    submitted, _ = store.read_feed(None, ["run.submitted"], 10**9)
    return View(
        scanned=[event.id for event in store.scan()],
        read=sum(len(store.read(event.run)) for event in submitted),
        mirrored=store.events.count_documents({}),
    )


def assert_holds(view: View, reported: int) -> None:
    """Every reported append, in order, nothing but the writer's events, the same by every read path."""
    assert len(view.scanned) >= reported, (
        f"{reported} appends had returned; the reader found {len(view.scanned)}"
    )
    assert view.scanned == appended_ids(len(view.scanned)), "the reader found other events than the writer's"
    assert view.read == view.mirrored == len(view.scanned)


def child_env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }


def read_elsewhere(home: Path, prefix: Sequence[str] = ()) -> View:
    """A read-only open of ``home`` in a fresh process (run under ``prefix``), as a query command makes."""
    done = subprocess.run(
        [*prefix, sys.executable, "-c", READER, str(home)],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return View(**json.loads(done.stdout))


@dataclass
class Writer:
    process: subprocess.Popen[bytes]
    home: Path
    report: Path

    def appended(self) -> int:
        """How many appends had returned at its last report."""
        try:
            text = self.report.read_bytes().strip()
        except FileNotFoundError:
            return 0
        return int(text) if text else 0

    def kill_when(self, ready: Callable[[Writer], bool], what: str) -> int:
        """SIGKILL it once ``ready(self)``; returns how many appends it reported returned."""
        wait_until(lambda: self.process.poll() is not None or ready(self), what=what)
        self.process.send_signal(signal.SIGKILL)
        _, errors = self.process.communicate(timeout=60)
        assert self.process.returncode == -signal.SIGKILL, (
            f"the writer ended before it was killed: {errors!r}"
        )
        return self.appended()


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[Writer]:
    home, report = tmp_path / "home", tmp_path / "appended"
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(home), str(report)], env=child_env(), stderr=subprocess.PIPE
    )
    try:
        yield Writer(process, home, report)
    finally:
        process.kill()
        process.wait(timeout=60)


def checkpointed(writer: Writer) -> bool:
    """SQLite folded the ``-wal`` into the journal file, and later commits start the ``-wal`` over."""
    return writer.appended() >= 1 and (writer.home / JOURNAL).stat().st_size > FIRST_PAGE


KILL_POINTS: dict[str, Callable[[Writer], bool]] = {
    "first-append": lambda writer: writer.appended() >= 1,
    "mid-wal": lambda writer: writer.appended() >= 150,
    "after-a-checkpoint": checkpointed,
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_the_first_reader_after_the_kill_sees_every_append_that_returned(writer: Writer, point: str) -> None:
    reported = writer.kill_when(KILL_POINTS[point], what=f"the writer at {point}")
    assert (writer.home / f"{JOURNAL}-wal").stat().st_size > 0, "nothing left in the -wal to read"
    view = read_elsewhere(writer.home)
    assert_holds(view, reported)
    owner: Any = open_store(None, home=writer.home)  # no need to reopen as a writer: it sees the same
    try:
        assert [event.id for event in owner.scan()] == view.scanned
    finally:
        owner.close()


def test_a_reader_open_across_the_kill_and_those_after_it_miss_nothing_that_returned(writer: Writer) -> None:
    """A reader open when the writer dies keeps the index the writer left, and so does every later opener
    while it stays open: that index holds every commit whose append returned."""
    wait_until(lambda: writer.appended() >= 1, what="the writer's first append")
    held: Any = open_store(None, home=writer.home, read_only=True)
    try:
        assert held.events.count_documents({}) >= 1  # the mirror, loaded now, must follow by refresh()
        reported = writer.kill_when(checkpointed, what="the writer past a checkpoint")
        held.refresh()
        assert_holds(view_of(held), reported)
        assert_holds(read_elsewhere(writer.home), reported)
    finally:
        held.close()


def test_a_reader_that_may_not_write_the_home_sees_every_append_that_returned(writer: Writer) -> None:
    """Another user's service killed: SQLite indexes its ``-wal`` in the reader's memory, as the reader
    may not write the ``-shm``. Killed after its first append, the journal file is page 1 alone, so a
    read of the main file (``immutable``) would find nothing."""
    reported = writer.kill_when(KILL_POINTS["first-append"], what="the writer's first append")
    with unwritable(writer.home) as prefix:
        view = read_elsewhere(writer.home, prefix)
    assert_holds(view, reported)


@contextmanager
def unwritable(home: Path) -> Iterator[list[str]]:
    """``home`` and its files without write bits, and the prefix that runs a command that cannot write
    there; skips where that cannot be made, so the test never passes for the wrong reason."""
    modes = {path: stat.S_IMODE(path.stat().st_mode) for path in (home, *home.iterdir())}
    try:
        prefix = by_permissions(home)
        probe = [*prefix, sys.executable, "-c", "import sys; open(sys.argv[1], 'x')", str(home / "probe")]
        if subprocess.run(probe, capture_output=True, timeout=60).returncode == 0:
            pytest.skip("cannot make a home unwritable here: a probe could still create a file in it")
        yield prefix
    finally:
        for path, mode in modes.items():
            path.chmod(mode)
