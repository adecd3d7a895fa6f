"""The embedded store across processes: durability, one owner, SIGKILL, read-only followers; and URLs."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from orchestrator.core import events as ev
from orchestrator.core.errors import (
    ConfigurationError,
    CorruptEvent,
    StoreLocked,
    StoreUnavailable,
)
from orchestrator.core.events import Event
from orchestrator.store import default_home, open_store
from orchestrator.store.embedded import EmbeddedStore
from orchestrator.store.memory import MemoryStore
from orchestrator.store.mongo import MongoStore

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DEADLINE_S = 30.0


def event(run: str, seq: int, type_: str = ev.COMMAND_STARTED, **fields: Any) -> Event:
    fields.setdefault("at", T0 + timedelta(milliseconds=seq))
    fields.setdefault("data", {"seq": seq, "bytes": b"\x01", "when": T0})
    return Event(run=run, seq=seq, type=type_, **fields)


def history(run: str, last: int, first: int = 1) -> list[Event]:
    return [
        event(run, seq, ev.RUN_SUBMITTED if seq == 1 else ev.COMMAND_STARTED)
        for seq in range(first, last + 1)
    ]


# A writer in another process, driven line by line over stdin; it reports on stdout.
WRITER = """
import os, signal, sys
sys.path.insert(0, os.environ["EVENFLOW_REPO"])
from tests.integration.test_embedded_store import history
from orchestrator.store.embedded import EmbeddedStore

store = EmbeddedStore(sys.argv[1])
print("ready", os.getpid(), flush=True)
last = 0
for line in sys.stdin:
    command, _, arg = line.strip().partition(" ")
    if command == "append":
        store.append(history("held", last + int(arg), first=last + 1))
        last += int(arg)
        print("appended", last, flush=True)
    elif command == "flood":
        while True:
            store.append(history("held", last + 10, first=last + 1))
            last += 10
            print("committed", last, flush=True)
    elif command == "fork":
        # The child answers, not the parent: by then its after-fork hooks have run.
        if os.fork() == 0:
            print("forked", os.getpid(), flush=True)
            while True:
                signal.pause()
"""

# A fresh process that opens a store and prints what it finds, or the error it gets.
INSPECT = """
import json, os, sys
sys.path.insert(0, os.environ["EVENFLOW_REPO"])
from orchestrator.store.embedded import EmbeddedStore
try:
    store = EmbeddedStore(sys.argv[1], read_only=sys.argv[2] == "ro")
except Exception as exc:
    print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
else:
    events = store.read(sys.argv[3])
    print(json.dumps({"seqs": [e.seq for e in events], "data": [e.data["seq"] for e in events],
                      "unfinished": store.unfinished_runs()}))
    store.close()
"""


def python(script: str, *args: str) -> list[str]:
    return [sys.executable, "-c", script, *args]


def child_env() -> dict[str, str]:
    return {**os.environ, "EVENFLOW_REPO": str(REPO), "PYTHONPATH": str(REPO)}


def inspect(home: Path, run: str = "held", mode: str = "rw") -> dict[str, Any]:
    done = subprocess.run(
        python(INSPECT, str(home), mode, run),
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        env=child_env(),
        cwd=REPO,
        check=True,
    )
    return json.loads(done.stdout)


class Writer:
    """A writer process; ``expect`` waits for its next report line, within a deadline."""

    def __init__(self, home: Path) -> None:
        self.proc = subprocess.Popen(
            python(WRITER, str(home)),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=child_env(),
            cwd=REPO,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.pid = int(self.expect("ready"))

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def expect(self, word: str) -> str:
        deadline = time.monotonic() + DEADLINE_S
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            said, _, value = line.partition(" ")
            if said == word:
                return value
        raise AssertionError(f"the writer never said {word!r} (exit code {self.proc.poll()})")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=DEADLINE_S)


@pytest.fixture
def processes() -> Iterator[list[Any]]:
    """Every process a test starts, killed at the end whatever happened."""
    started: list[Any] = []
    try:
        yield started
    finally:
        for item in started:
            if isinstance(item, Writer):
                item.kill()
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(item, signal.SIGKILL)


def writer(home: Path, processes: list[Any]) -> Writer:
    started = Writer(home)
    processes.append(started)
    return started


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "evenflow-home"


# --- durability ------------------------------------------------------------------------------


def test_events_survive_close_and_reopen(home: Path) -> None:
    store = EmbeddedStore(home)
    store.append(history("r", 3))
    store.append(history("r", 5, first=4))
    store.close()

    reopened = EmbeddedStore(home)
    try:
        assert reopened.read("r") == history("r", 5)
        assert reopened.unfinished_runs() == ["r"]
        reopened.append(history("r", 6, first=6))
        assert [e.seq for e in reopened.read("r")] == [1, 2, 3, 4, 5, 6]
    finally:
        reopened.close()


def test_a_fresh_process_sees_every_committed_event(home: Path) -> None:
    store = EmbeddedStore(home)
    store.append(history("held", 40))
    store.close()

    seen = inspect(home)

    assert seen["seqs"] == list(range(1, 41))
    assert seen["data"] == list(range(1, 41))
    assert seen["unfinished"] == ["held"]


def test_the_journal_is_sqlite_in_wal_mode_with_one_row_per_event(home: Path) -> None:
    store = EmbeddedStore(home)
    store.append(history("r", 3))
    store.close()

    with sqlite3.connect(home / "events.sqlite3") as db:
        mode = db.execute("PRAGMA journal_mode").fetchone()[0]
        rows = db.execute("SELECT id, run, seq, type FROM events ORDER BY rowid").fetchall()
    db.close()

    assert mode == "wal"
    assert rows == [(e.id, e.run, e.seq, e.type) for e in history("r", 3)]


def test_a_damaged_journal_row_refuses_its_run_only(home: Path) -> None:
    store = EmbeddedStore(home)
    store.append([*history("good", 2), *history("bad", 1)])
    store.close()
    with sqlite3.connect(home / "events.sqlite3") as db:
        db.execute(
            "INSERT INTO events (id, run, seq, type, doc) VALUES (?, ?, ?, ?, ?)",
            (ev.event_id("bad", 2), "bad", 2, ev.COMMAND_STARTED, b"\x05not bson"),
        )
    db.close()

    reopened = EmbeddedStore(home)
    try:
        with pytest.raises(CorruptEvent, match="bad/0000000002"):
            reopened.read("bad")
        assert reopened.read("good") == history("good", 2)
        assert reopened.events.count_documents({"run": "good"}) == 2
    finally:
        reopened.close()


def test_events_collection_mirrors_the_journal_for_pipelines(home: Path) -> None:
    store = EmbeddedStore(home)
    try:
        store.append(history("a", 2))
        mirror = store.events
        store.append([*history("a", 3, first=3), *history("b", 1)])

        counts = {
            doc["_id"]: doc["n"] for doc in mirror.aggregate([{"$group": {"_id": "$run", "n": {"$sum": 1}}}])
        }
        assert counts == {"a": 3, "b": 1}
        assert mirror.find_one({"_id": ev.event_id("a", 3)})["data"]["bytes"] == b"\x01"
        assert {index["name"] for index in mirror.list_indexes()} >= {"_id_", "type_at", "run_seq"}
    finally:
        store.close()


# --- one owner -------------------------------------------------------------------------------


def test_a_second_writer_in_another_process_is_refused_naming_the_owner(
    home: Path, processes: list[Any]
) -> None:
    owner = writer(home, processes)

    with pytest.raises(StoreLocked) as caught:
        EmbeddedStore(home)

    assert caught.value.pid == owner.pid
    assert f"process {owner.pid}" in str(caught.value) and str(home) in str(caught.value)


def test_a_writer_in_this_process_refuses_another_process(home: Path) -> None:
    store = EmbeddedStore(home)
    try:
        refused = inspect(home, mode="rw")
    finally:
        store.close()

    assert refused["error"] == "StoreLocked"
    assert f"process {os.getpid()}" in refused["message"]


def test_a_writer_killed_by_sigkill_frees_the_store_with_every_commit_kept(
    home: Path, processes: list[Any]
) -> None:
    owner = writer(home, processes)
    owner.send("flood")
    committed = [int(owner.expect("committed")) for _ in range(5)]

    owner.proc.send_signal(signal.SIGKILL)
    owner.proc.wait(timeout=DEADLINE_S)

    store = EmbeddedStore(home)
    try:
        seqs = [e.seq for e in store.read("held")]
        assert seqs[-1] >= committed[-1]  # everything it reported as committed, maybe a little more
        assert seqs == list(range(1, seqs[-1] + 1))  # no gap, no torn batch
        assert len(seqs) % 10 == 0
    finally:
        store.close()


def test_a_forked_child_does_not_keep_a_dead_owners_lock(home: Path, processes: list[Any]) -> None:
    owner = writer(home, processes)
    owner.send("append 3")
    owner.expect("appended")
    owner.send("fork")
    grandchild = int(owner.expect("forked"))
    processes.append(grandchild)

    owner.kill()
    os.kill(grandchild, 0)  # still alive, holding a copy of every descriptor it had at fork

    store = EmbeddedStore(home)
    try:
        assert [e.seq for e in store.read("held")] == [1, 2, 3]
    finally:
        store.close()


def test_close_releases_the_store_to_the_next_writer(home: Path) -> None:
    EmbeddedStore(home).close()

    second = EmbeddedStore(home)
    second.close()
    second.close()  # closing twice is harmless

    assert (home / "owner.lock").read_text() == ""


# --- read-only followers ---------------------------------------------------------------------


def test_a_reader_follows_a_running_writer(home: Path, processes: list[Any]) -> None:
    owner = writer(home, processes)
    owner.send("append 3")
    owner.expect("appended")

    reader = EmbeddedStore(home, read_only=True)
    try:
        assert [e.seq for e in reader.read("held")] == [1, 2, 3]
        assert reader.events.count_documents({"run": "held"}) == 3

        owner.send("append 4")
        assert owner.expect("appended") == "7"

        assert reader.refresh() == 4
        assert [e.seq for e in reader.read("held")] == list(range(1, 8))
        assert reader.events.count_documents({"run": "held"}) == 7
        assert reader.refresh() == 0
        assert reader.unfinished_runs() == ["held"]
    finally:
        reader.close()


def test_a_fresh_read_only_process_reads_while_the_writer_runs(home: Path, processes: list[Any]) -> None:
    owner = writer(home, processes)
    owner.send("append 5")
    owner.expect("appended")

    seen = inspect(home, mode="ro")

    assert seen["seqs"] == [1, 2, 3, 4, 5]


def test_append_on_a_read_only_store_is_refused(home: Path) -> None:
    EmbeddedStore(home).close()
    reader = EmbeddedStore(home, read_only=True)
    try:
        with pytest.raises(ConfigurationError, match="read-only"):
            reader.append(history("r", 1))
        assert reader.read("r") == []
    finally:
        reader.close()


def test_a_read_only_open_of_a_missing_store_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable, match=r"no embedded store in .*nowhere"):
        EmbeddedStore(tmp_path / "nowhere", read_only=True)

    assert not (tmp_path / "nowhere").exists()


# --- choosing a store by URL -----------------------------------------------------------------


def test_no_url_opens_the_embedded_store_in_home(tmp_path: Path) -> None:
    for url in (None, ""):
        store = open_store(url, home=tmp_path / "h")
        try:
            assert isinstance(store, EmbeddedStore) and store.home == tmp_path / "h"
        finally:
            store.close()


def test_no_url_and_no_home_uses_evenflow_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENFLOW_HOME", str(tmp_path / "env-home"))

    store = open_store()
    try:
        assert isinstance(store, EmbeddedStore) and store.home == tmp_path / "env-home"
    finally:
        store.close()


def test_default_home_follows_env_then_xdg_then_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENFLOW_HOME", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_home() == tmp_path / "explicit"

    monkeypatch.delenv("EVENFLOW_HOME")
    assert default_home() == tmp_path / "xdg" / "evenflow"

    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert default_home() == tmp_path / "user" / ".local" / "share" / "evenflow"


def test_an_embedded_url_names_its_directory(tmp_path: Path) -> None:
    store = open_store(f"embedded://{tmp_path}/x%20y", home=tmp_path / "ignored")
    try:
        assert isinstance(store, EmbeddedStore) and store.home == tmp_path / "x y"
    finally:
        store.close()


def test_memory_and_mongomock_urls(tmp_path: Path) -> None:
    assert isinstance(open_store("memory://"), MemoryStore)
    plain = open_store("mongomock://")
    named = open_store("mongomock://localhost/mydb")
    try:
        assert isinstance(plain, MongoStore) and plain.events.database.name == "evenflow"
        assert isinstance(named, MongoStore) and named.events.database.name == "mydb"
        assert named.events.name == "events"
    finally:
        plain.close()
        named.close()


@pytest.mark.parametrize("url", ["postgres://db/x", "mongo://u:hunter22@h/x", "nonsense", "memory"])
def test_a_url_of_no_known_form_lists_the_valid_forms(url: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        open_store(url)

    message = str(caught.value)
    assert "embedded:///" in message and "mongodb://" in message and "memory://" in message
    assert "hunter22" not in message


def test_a_relative_embedded_url_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="absolute"):
        open_store("embedded://relative/dir")


def test_options_only_go_to_mongodb() -> None:
    with pytest.raises(ConfigurationError, match="serverSelectionTimeoutMS"):
        open_store("memory://", serverSelectionTimeoutMS=10)


def test_an_unreachable_mongodb_fails_fast_with_credentials_redacted() -> None:
    url = "mongodb://evenuser:s3cretpw@127.0.0.1:1/evenflow?serverSelectionTimeoutMS=300"
    started = time.monotonic()

    with pytest.raises(StoreUnavailable) as caught:
        open_store(url)

    assert time.monotonic() - started < 10  # bounded by the 300 ms selection timeout, not a hang
    chain = [caught.value]
    while chain[-1].__cause__ or chain[-1].__context__:
        chain.append(chain[-1].__cause__ or chain[-1].__context__)  # type: ignore[arg-type]
    assert all("s3cretpw" not in str(exc) and "evenuser" not in str(exc) for exc in chain)
    assert "***@127.0.0.1:1" in str(caught.value)


def test_a_malformed_mongodb_url_is_unavailable_not_a_crash() -> None:
    with pytest.raises(StoreUnavailable) as caught:
        open_store("mongodb://user:pw0rd@/nohost")

    assert "pw0rd" not in str(caught.value)


def test_importing_the_store_package_does_not_import_pymongo() -> None:
    script = (
        "import sys, orchestrator.store; print(sorted({'pymongo', 'bson', 'mongomock'} & set(sys.modules)))"
    )
    done = subprocess.run(
        python(script),
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=REPO,
        timeout=DEADLINE_S,
        check=True,
    )

    assert done.stdout.strip() == "[]"


def test_a_history_fold_that_cannot_start_leaves_the_journal_durable(tmp_path: Path) -> None:
    """The tables' fold commits without waiting for the disk; if it cannot even begin (another writer
    holds the lock), the connection is put back to FULL for the journal's own commits."""
    import sqlite3

    from orchestrator.core import events as ev
    from orchestrator.core.events import Event, utcnow
    from orchestrator.store.embedded import EmbeddedStore

    store = EmbeddedStore(tmp_path / "home")
    try:
        store.append([Event("r1", 1, ev.RUN_SUBMITTED, utcnow(), data={"flow": {"root": "r", "nodes": []}})])
        db = store._db
        assert db is not None
        other = sqlite3.connect(store.path, timeout=0.1, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        db.execute("PRAGMA busy_timeout=100")
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            store._history.flush(db)
        other.execute("ROLLBACK")
        other.close()
        assert db.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
    finally:
        store.close()
