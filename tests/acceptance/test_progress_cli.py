"""Progress in the terminal (issue 17): `run` on a TTY, `status --follow`, `runs --follow`.

Runs are made by a real orchestrator on an embedded home while the CLI reads
it in another process; `run`'s terminal is a real pseudo-terminal.
"""

from __future__ import annotations

import io
import json
import os
import pty
import select
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator import Orchestrator, call, parallel
from orchestrator.cli.progress import Progress, Snapshot, snapshot
from tests.acceptance.test_cli import EVENFLOW
from tests.commands import make_registry
from tests.support.polling import wait_until

FLOWS = """
from orchestrator import Registry, call, parallel

def square(x):
    return x * x

registry = Registry()
registry.register("square", square)
flow = parallel([call("square", i) for i in range(5)])
"""


def cli(*args: str, out: Path, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(Path.cwd()), os.environ.get("PYTHONPATH")])),
    }
    with out.open("wb") as sink:
        return subprocess.Popen([*EVENFLOW, *args], stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=cwd)


@pytest.fixture
def owner(tmp_path: Path) -> Iterator[tuple[Orchestrator, Path, Path]]:
    home, gate = tmp_path / "home", tmp_path / "gate"
    with Orchestrator(make_registry(), executor="threads://2", home=home) as orch:
        yield orch, home, gate
        gate.touch()


def test_status_follow_shows_a_running_run_until_it_ends(
    owner: tuple[Orchestrator, Path, Path], tmp_path: Path
) -> None:
    orch, home, gate = owner
    run = orch.submit(parallel([call("square", 4), call("wait_for_file", str(gate), "opened")]), name="gated")
    wait_until(lambda: len(orch.store.read(run.id)) >= 4, what="the run under way")
    printed = tmp_path / "status.out"
    follower = cli("status", run.id, "--follow", "--home", str(home), out=printed)
    try:
        wait_until(lambda: f"{run.id} running: " in printed.read_text(), what="a running line")
        gate.touch()
        assert follower.wait(60) == 0
    finally:
        follower.kill()
    lines = printed.read_text().splitlines()
    assert lines[0].startswith(f"{run.id} running: 1/2 done, 1 running, 0 failed"), lines
    assert any(line.startswith(f"{run.id} succeeded: 2/2 done, 0 running, 0 failed") for line in lines)
    assert any(line.split()[:2] == ["state", "succeeded"] for line in lines)  # then the status table


def test_runs_follow_prints_runs_as_they_start_and_end(
    owner: tuple[Orchestrator, Path, Path], tmp_path: Path
) -> None:
    orch, home, _ = owner
    first = orch.submit(call("square", 2))
    assert first.result(60) == 4
    printed = tmp_path / "runs.out"
    follower = cli("runs", "--follow", "--json", "--home", str(home), out=printed)
    try:
        seen = lambda: [json.loads(line) for line in printed.read_text().splitlines() if line.startswith("{")]  # noqa: E731
        wait_until(lambda: any(row["run"] == first.id for row in seen()), what="the first run listed")
        burst = [orch.submit(call("square", i)) for i in range(25)]  # more than a page of runs
        assert [run.result(60) for run in burst] == [i * i for i in range(25)]
        ended = lambda: {(r["run"], r["state"]) for r in seen()}  # noqa: E731
        wait_until(lambda: {(run.id, "succeeded") for run in burst} <= ended(), what="every later run")
        assert [row["run"] for row in seen()].count(first.id) == 1  # printed once: it did not change
    finally:
        follower.terminate()
        follower.wait(60)


def test_run_on_a_terminal_redraws_its_progress_on_one_line(tmp_path: Path) -> None:
    (tmp_path / "progressflows.py").write_text(textwrap.dedent(FLOWS))
    leader, follower = pty.openpty()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path.cwd()), str(tmp_path)])}
    args = [
        "run",
        "progressflows:flow",
        "--registry",
        "progressflows:registry",
        "--home",
        str(tmp_path / "home"),
    ]
    proc = subprocess.Popen(
        [*EVENFLOW, *args], stdout=subprocess.PIPE, stderr=follower, env=env, cwd=tmp_path
    )
    os.close(follower)
    shown = bytearray()
    try:
        while proc.poll() is None or select.select([leader], [], [], 0)[0]:
            if select.select([leader], [], [], 1.0)[0]:
                try:
                    shown += os.read(leader, 4096)
                except OSError:  # the terminal closed with the process
                    break
        assert proc.wait(60) == 0
    finally:
        os.close(leader)
        proc.kill()
    text = shown.decode()
    assert "\r" in text and "succeeded: 5/5 done, 0 running, 0 failed" in text, text
    assert json.loads(proc.stdout.read().decode().splitlines()[0].removeprefix("result: ")) == [
        0,
        1,
        4,
        9,
        16,
    ]  # type: ignore[union-attr]


def test_off_a_terminal_a_line_is_printed_per_change_of_state_and_counts_at_most_each_second() -> None:
    out = io.StringIO()
    progress = Progress("r1", out, tty=False)
    running = Snapshot("running", 0, 3, 1, 0)
    progress.show(running)
    progress.show(running)  # nothing changed: nothing printed
    progress.show(Snapshot("running", 1, 3, 1, 0))  # counts changed within the second: held back
    progress.show(Snapshot("succeeded", 3, 3, 0, 0))  # the state changed: printed at once
    progress.close()
    assert [line.split(":")[0] for line in out.getvalue().splitlines()] == ["r1 running", "r1 succeeded"]
    drawn = io.StringIO()
    tty = Progress("r2", drawn, tty=True)
    tty.show(running)
    tty.show(Snapshot("succeeded", 3, 3, 0, 0))
    tty.close()
    assert drawn.getvalue().count("\r") == 2 and drawn.getvalue().endswith("\n")


def test_a_snapshot_counts_the_flows_calls_before_they_start() -> None:
    with Orchestrator(make_registry(), executor="inline", store="memory://") as orch:
        run = orch.submit(parallel([call("square", i) for i in range(3)]))
        run.result(60)
        events = orch.store.read(run.id)
    assert snapshot(run.id, events[:1]) == Snapshot("running", 0, 3, 0, 0)
    assert snapshot(run.id, events) == Snapshot("succeeded", 3, 3, 0, 0)
    assert snapshot(run.id, []) is None
