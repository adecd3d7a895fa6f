"""``evenflow doctor`` through the real CLI on the stores a process can reach without a server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from orchestrator.store.embedded import JOURNAL
from tests.acceptance.test_cli import evenflow
from tests.integration.test_migrate import fill, sample_logs

SERVER_ONLY = {"server version", "topology", "write concern", "read concern", "access", "clock skew",
               "oplog window"}  # fmt: skip


def doctor(*args: str, home: Path) -> tuple[int, dict[str, Any]]:
    done = evenflow("doctor", "--json", *args, home=home)
    assert done.stderr == "", done.stderr
    report = json.loads(done.stdout)
    return done.returncode, {row["check"]: row for row in report["checks"]}


def test_an_embedded_home_shows_its_journal_counts_and_disk(home: Path) -> None:
    fill(home, sample_logs(20))
    code, rows = doctor(home=home)
    assert code == 0
    assert {name for name, row in rows.items() if row["status"] == "n/a"} == SERVER_ONLY | {"indexes"}
    assert rows["journaling"]["value"].startswith("SQLite WAL")
    assert rows["journal integrity"]["status"] == "ok"
    assert (rows["runs"]["value"], rows["unfinished runs"]["value"]) == ("20", "2")
    assert int(rows["events"]["value"].replace(",", "")) == sum(len(log) for log in sample_logs(20))
    assert rows["owner"]["value"] == "none" and rows["free disk"]["status"] == "ok"


def test_the_table_has_a_row_per_check(home: Path) -> None:
    fill(home, sample_logs(1))
    done = evenflow("doctor", home=home)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["check", "status", "value", "fix"]
    assert [line.split()[0] for line in lines[1:3]] == ["store", "server"]


def test_a_missing_home_is_a_blocker_and_is_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    code, rows = doctor("--home", str(missing), home=tmp_path / "unused")
    assert code == 1
    assert rows["store"]["status"] == "fail" and "events.sqlite3 is missing" in rows["store"]["fix"]
    assert not missing.exists()


def test_a_damaged_journal_is_a_blocker(home: Path) -> None:
    fill(home, sample_logs(200))
    path = home / JOURNAL
    middle = path.stat().st_size // 2 // 4096  # a page of the events, which fill most of the file
    with path.open("r+b") as journal:  # scribble over it
        journal.seek(middle * 4096 + 100)
        journal.write(b"\xff" * 3000)
    code, rows = doctor(home=home)
    assert code == 1
    assert rows["journal integrity"]["status"] == "fail"
    assert "backup" in rows["journal integrity"]["fix"] and "\n" not in rows["journal integrity"]["value"]


def test_a_running_orchestrator_is_named_as_the_owner(home: Path) -> None:
    from orchestrator.store import EmbeddedStore

    fill(home, sample_logs(1))
    owner = EmbeddedStore(home)  # this test process holds the home, as a running orchestrator would
    try:
        code, rows = doctor(home=home)
    finally:
        owner.close()
    assert code == 0 and rows["owner"]["value"].startswith("process ")


def test_mongomock_shows_what_applies(home: Path) -> None:
    code, rows = doctor("--store", "mongomock://", home=home)
    assert code == 0
    assert {name for name, row in rows.items() if row["status"] == "n/a"} == SERVER_ONLY | {
        "journal integrity", "owner", "free disk"}  # fmt: skip
    assert rows["journaling"]["status"] == "warn" and "in memory" in rows["journaling"]["value"]
    assert rows["indexes on events"]["status"] == "warn"  # opened read-only: nothing creates them
    assert rows["events"]["value"] == "0"


def test_an_unreachable_server_is_one_line_and_exit_2(home: Path) -> None:
    done = evenflow("doctor", "--store", "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=200", home=home)
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert line.startswith("evenflow: error: cannot reach MongoDB at mongodb://127.0.0.1:1")
