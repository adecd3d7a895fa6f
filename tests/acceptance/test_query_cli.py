"""The read commands (runs, status, audit, stats, failures, throughput, activity) run as users run them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.acceptance.test_cli import evenflow, owner

__all__ = ["owner"]  # the fixture: an orchestrator process holding the store


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("queries") / "home"
    for executor in ("inline", "threads"):
        done = evenflow("demo", "--executor", executor, home=home)
        assert done.returncode == 0, done.stderr
    return home


def as_json(*args: str, home: Path) -> object:
    done = evenflow(*args, "--json", home=home)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_runs_lists_newest_first_and_pages_with_a_cursor(home: Path) -> None:
    page = as_json("runs", home=home)
    assert [row["state"] for row in page["runs"]] == ["succeeded", "succeeded"]
    first, second = page["runs"]
    assert first["submitted_at"] >= second["submitted_at"]
    assert first["flow"] == "demo" and first["nodes"]["succeeded"] == 9
    one = as_json("runs", "--limit", "1", home=home)
    assert [row["run"] for row in one["runs"]] == [first["run"]]
    rest = as_json("runs", "--limit", "1", "--after", one["next"], home=home)
    assert [row["run"] for row in rest["runs"]] == [second["run"]] and rest["next"] is None
    assert as_json("runs", "--state", "failed", home=home)["runs"] == []
    assert len(as_json("runs", "--since", "1h", home=home)["runs"]) == 2


def test_status_and_audit_of_one_run(home: Path) -> None:
    run = as_json("runs", home=home)["runs"][0]["run"]
    status = as_json("status", run, home=home)
    assert (status["state"], status["attempts"], status["result"]) == ("succeeded", 10, "charged 165")
    trail = as_json("audit", run, home=home)
    assert [entry["seq"] for entry in trail] == list(range(1, len(trail) + 1))
    failed = next(entry for entry in trail if entry["type"] == "command.failed")
    assert failed["command"] == "charge" and "ConnectionError" in failed["summary"]
    assert failed["worker"] and failed["causation"] == f"{run}/r.4#1"
    table = evenflow("audit", run, home=home).stdout
    assert "retry 2 scheduled" in table and "caused by" in table.splitlines()[0]


def test_stats_and_failures_count_the_retry(home: Path) -> None:
    stats = {row["command"]: row for row in as_json("stats", home=home)}
    assert (stats["charge"]["calls"], stats["charge"]["failures"], stats["charge"]["retries"]) == (4, 2, 2)
    assert stats["price"]["successes"] == 6
    (group,) = as_json("failures", "--since", "1d", home=home)
    assert (group["error_type"], group["command"], group["count"]) == (
        "builtins.ConnectionError",
        "charge",
        2,
    )
    table = evenflow("stats", home=home).stdout.splitlines()
    assert table[0].split()[:4] == ["command", "calls", "ok", "failed"]


def test_throughput_and_activity_count_what_the_log_holds(home: Path) -> None:
    exported = evenflow("export", home=home)
    assert exported.returncode == 0, exported.stderr
    logged = len(exported.stdout.splitlines())
    for bucket in ("1m", "1h", "1d"):
        buckets = as_json("throughput", "--bucket", bucket, home=home)
        assert sum(b["count"] for b in buckets) == logged
        starts = [b["start"] for b in buckets]
        assert starts == sorted(starts) and len(set(starts)) == len(starts)
    stats = as_json("stats", home=home)
    ended = sum(row["successes"] + row["failures"] for row in stats)
    assert sum(b["count"] for b in as_json("throughput", "--completions", home=home)) == ended
    assert as_json("throughput", "--since", "2000-01-01T00:00", home=home) == as_json("throughput", home=home)
    workers = as_json("activity", home=home)
    assert sum(w["calls"] for w in workers) == sum(row["calls"] for row in stats)
    assert sum(w["failures"] for w in workers) == sum(row["failures"] for row in stats) == 2
    assert evenflow("activity", home=home).stdout.split()[:4] == ["worker", "calls", "busy_s", "failed"]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["status", "no-such-run"], "no run 'no-such-run'"),
        (["audit", "no-such-run"], "no run 'no-such-run'"),
        (["stats", "--since", "yesterday"], "30s, 15m, 1h, 2d"),
        (["runs", "--after", "garbage"], "cursor"),
        (["throughput", "--bucket", "0s"], "--bucket '0s' is not a length of time"),
        (["throughput", "--bucket", "soon"], "like 30s, 15m, 1h or 1d"),
    ],
)
def test_bad_arguments_and_unknown_runs_exit_2_with_one_line(home: Path, args: list[str], words: str) -> None:
    done = evenflow(*args, home=home)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert words in line


def test_queries_read_the_store_while_an_orchestrator_owns_it(home: Path, owner: object) -> None:
    assert len(as_json("runs", home=home)["runs"]) == 2
    assert evenflow("demo", home=home).returncode == 2  # a second writer is still refused


def test_a_corrupt_run_is_skipped_with_a_warning_and_the_others_listed(tmp_path: Path) -> None:
    import sqlite3

    home = tmp_path / "home"
    assert evenflow("demo", "--executor", "inline", home=home).returncode == 0
    assert evenflow("demo", "--executor", "inline", home=home).returncode == 0
    with sqlite3.connect(home / "events.sqlite3") as db:  # the second run's submission rots on disk
        (broken,) = db.execute("SELECT run FROM events ORDER BY rowid DESC LIMIT 1").fetchone()
        db.execute("UPDATE events SET doc = ? WHERE run = ? AND seq = 1", (b"\x00not bson", broken))
    done = evenflow("runs", "--json", home=home)
    assert done.returncode == 0, done.stderr
    assert [row["flow"] for row in json.loads(done.stdout)["runs"]] == ["demo"]
    assert f"skipping run {broken}" in done.stderr


def test_a_corrupt_run_named_by_its_key_is_skipped_with_a_warning(tmp_path: Path) -> None:
    import sqlite3

    from orchestrator import Orchestrator, call
    from tests.commands import make_registry

    home = tmp_path / "home"
    with Orchestrator(make_registry(), executor="inline", home=home) as orch:
        run = orch.submit(call("inc", 1), key="invoice-9")
        assert run.result(timeout=60) == 2
    assert [row["run"] for row in as_json("runs", "--key", "invoice-9", home=home)["runs"]] == [run.id]
    with sqlite3.connect(home / "events.sqlite3") as db:
        db.execute("UPDATE events SET doc = ? WHERE run = ? AND seq = 1", (b"\x00not bson", run.id))
    done = evenflow("runs", "--key", "invoice-9", "--json", home=home)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["runs"] == []
    assert f"skipping run {run.id}" in done.stderr
