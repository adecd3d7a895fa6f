"""``evenflow migrate`` through the real CLI: one embedded home into another, killed and run again."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path
from typing import Any

from orchestrator import call
from orchestrator.core.flows import encode_flow
from orchestrator.store import open_store
from orchestrator.store.embedded import JOURNAL
from tests.acceptance.test_cli import EVENFLOW, evenflow
from tests.integration.test_migrate import COMMANDS, fill, sample_logs
from tests.simulation import Simulation
from tests.support.polling import wait_until


def migrate(source: Path, target: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return evenflow("migrate", "--from", str(source), "--to", f"embedded://{target}", *extra, home=source)


def logs_of(home: Path) -> dict[str, list[Any]]:
    """Every run's log as the query commands read it: opened read-only, also right after a kill."""
    store: Any = open_store(f"embedded://{home}", read_only=True)
    try:
        submitted, _ = store.read_feed(None, ["run.submitted"], 1_000_000)
        return {event.run: store.read(event.run) for event in submitted}
    finally:
        store.close()


def landed(home: Path) -> int:
    found = _rows(home, "SELECT count(*) FROM events")
    return int(found[0][0]) if found else 0


def _rows(home: Path, query: str) -> list[Any]:
    try:
        with closing(sqlite3.connect(f"{(home / JOURNAL).as_uri()}?mode=ro", uri=True)) as db:
            return db.execute(query).fetchall()
    except sqlite3.Error:  # not created yet
        return []


def test_a_home_is_copied_into_another_and_a_second_copy_skips_everything(tmp_path: Path) -> None:
    source, target = tmp_path / "source", tmp_path / "target"
    fill(source, sample_logs(12))
    done = migrate(source, target, "--batch", "5")
    assert done.returncode == 0, done.stderr
    rows = dict(line.split(None, 1) for line in done.stdout.splitlines())
    total = sum(len(log) for log in sample_logs(12))
    assert rows["runs"] == "12" and rows["copied"] == f"{total} events"
    assert rows["verified"] == "12 of 12 runs fold to the same state"
    assert logs_of(target) == logs_of(source)
    again = json.loads(migrate(source, target, "--json").stdout)
    assert (again["copied"], again["skipped"], again["verified"], again["complete"]) == (0, total, 12, True)
    status = evenflow("status", "run-00003", "--json", home=target)
    assert json.loads(status.stdout)["state"] == "failed"  # the query commands read the copy


def test_a_copy_killed_midway_is_finished_by_running_it_again(tmp_path: Path) -> None:
    source, target = tmp_path / "source", tmp_path / "target"
    logs = sample_logs(600)
    fill(source, logs)
    env = {**os.environ, "NO_COLOR": "1", "PYTHONPATH": os.pathsep.join(filter(None, [str(Path.cwd()),
           os.environ.get("PYTHONPATH")]))}  # fmt: skip
    args = ["migrate", "--from", str(source), "--to", f"embedded://{target}", "--batch", "1"]
    copying = subprocess.Popen([*EVENFLOW, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: landed(target) > 0, what="the first events reached the target")
    finally:
        copying.send_signal(signal.SIGKILL)  # SIGKILL: no cleanup, as a power cut or the OOM killer
        copying.wait(timeout=60)
    assert copying.returncode == -signal.SIGKILL, "the copy ended before it was killed"
    copied = logs_of(target)
    source_logs = logs_of(source)
    assert 0 < len(copied) < len(logs), "killed before or after the copy, not in its middle"
    for run, events in copied.items():  # every run copied so far is its source's log, or a prefix of it
        assert events == source_logs[run][: len(events)]
    held = sum(len(events) for events in copied.values())
    done = migrate(source, target, "--batch", "50", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    total = sum(len(log) for log in logs)
    assert (summary["skipped"], summary["copied"], summary["verified"]) == (held, total - held, 600)
    assert logs_of(target) == source_logs


def test_a_target_holding_another_log_is_refused_in_one_line(tmp_path: Path) -> None:
    source, target = tmp_path / "source", tmp_path / "target"
    fill(source, sample_logs(3))
    other = Simulation(COMMANDS, run="run-00001")
    other.go(encode_flow(call("inc", 41)))
    fill(target, [other.events])
    done = migrate(source, target)
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert "event run-00001/0000000001 with other content than the source's" in line
    assert "migrate into an empty database" in line
    assert logs_of(target) == {"run-00001": other.events}  # nothing of the batch was written


def test_bad_targets_and_sources_are_refused_in_one_line(tmp_path: Path) -> None:
    source = tmp_path / "source"
    fill(source, sample_logs(1))
    cases = [
        (["--to", "mongomock://"], "gone when migrate exits"),
        (["--to", f"embedded://{source}"], "the home --from copies"),
        (["--to", "warp://x"], "unknown event store URL scheme"),
    ]
    for extra, words in cases:
        done = evenflow("migrate", "--from", str(source), *extra, home=tmp_path / "unused")
        assert done.returncode == 2, (extra, done.stdout)
        (line,) = done.stderr.splitlines()
        assert words in line, line
    missing = evenflow("migrate", "--from", str(tmp_path / "none"), "--to", f"embedded://{tmp_path / 't'}",
                       home=tmp_path / "unused")  # fmt: skip
    assert missing.returncode == 2 and "events.sqlite3 is missing" in missing.stderr
    assert not (tmp_path / "none").exists() and not (tmp_path / "t").exists()


def test_a_home_an_orchestrator_owns_is_refused(tmp_path: Path) -> None:
    from orchestrator.store import EmbeddedStore

    source = tmp_path / "source"
    fill(source, sample_logs(1))
    owner = EmbeddedStore(source)
    try:
        done = migrate(source, tmp_path / "target")
    finally:
        owner.close()
    assert done.returncode == 2
    assert f"process {os.getpid()} runs an orchestrator on {source}; stop it first" in done.stderr
