"""Stopping `evenflow run` as users do (SIGTERM, Ctrl-C, kill -9), and what a run drives: its own run only.

Real processes on a real embedded store. A command that blocks is user code
(it holds on a gate file); the tests never sleep, they wait for what happens.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.polling import wait_until

from .test_cli import evenflow

FLOWS = """
    import os
    from pathlib import Path
    from orchestrator import Registry, call, sequence
    from tests.support.polling import wait_until

    HERE = Path(__file__).parent

    def held(x):
        (HERE / "started").write_text(str(os.getpid()))
        wait_until(lambda: (HERE / "gate").exists(), timeout=120, what="the gate")
        with open(HERE / "ran", "a") as ran:
            ran.write("held\\n")
        return x

    def double(x):
        return 2 * x

    registry = Registry()
    registry.register("held", held)
    registry.register("double", double)

    flow = sequence(call("held", 3), call("double"))
    quick = call("double", 5)
"""


@pytest.fixture
def code(tmp_path: Path) -> Path:
    (tmp_path / "stopflows.py").write_text(textwrap.dedent(FLOWS))
    return tmp_path


def start(code: Path, home: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "EVENFLOW_HOME": str(home), "NO_COLOR": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(code), str(Path.cwd())])
    command = [sys.executable, "-m", "orchestrator.cli", "run", "stopflows:flow", "--registry",
               "stopflows:registry", *args]  # fmt: skip
    return subprocess.Popen(
        command, cwd=code, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        preexec_fn=_ctrl_c_as_in_a_terminal,
    )  # fmt: skip


def _ctrl_c_as_in_a_terminal() -> None:
    """In the child: SIGINT's default action, as a terminal gives. A suite started in the background
    of a script inherits SIGINT ignored, and Python then leaves it ignored (as a shell user who ran
    ``evenflow run ... &`` asked): the Ctrl-C tests would test nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def running(code: Path, home: Path) -> Iterator[subprocess.Popen[str]]:
    proc = start(code, home)
    try:
        wait_until(lambda: (code / "started").exists() or proc.poll() is not None, what="the command started")
        assert proc.poll() is None, proc.communicate()
        yield proc
    finally:
        (code / "gate").touch()
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=60)


def test_sigterm_lets_the_attempt_in_flight_end_logs_it_and_names_the_resume_command(
    running: subprocess.Popen[str], code: Path, home: Path
) -> None:
    running.send_signal(signal.SIGTERM)
    assert running.stderr is not None
    first = running.stderr.readline()  # draining: nothing new starts from here on
    assert "SIGTERM: waiting up to 30s for attempts in flight" in first, first
    (code / "gate").touch()  # the attempt in flight ends within the grace period
    _, err = running.communicate(timeout=120)
    assert running.returncode == 143, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("evenflow: stopped by SIGTERM; unfinished: run "), err
    resume = line.split("`")[1]
    assert resume == f"evenflow resume --registry stopflows:registry --home {home}"
    done = evenflow(*resume.split()[1:], home=home, cwd=code)
    assert done.returncode == 0, done.stderr
    assert "succeeded" in done.stdout
    assert (code / "ran").read_text() == "held\n"  # its outcome was logged: resume did not run it again


def test_a_second_ctrl_c_stops_at_once(running: subprocess.Popen[str]) -> None:
    running.send_signal(signal.SIGINT)
    assert running.stderr is not None
    first = running.stderr.readline()
    assert "Ctrl-C: waiting up to 30s" in first, first
    running.send_signal(signal.SIGINT)
    _, err = running.communicate(timeout=30)  # far less than the 30 s grace
    assert running.returncode == 130
    assert "stopped at once" in err


def _descendants(pid: int) -> set[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_after_kill_9_every_child_of_a_run_is_gone(code: Path, home: Path) -> None:
    proc = start(code, home, "--executor", "processes://2")
    try:
        wait_until(lambda: (code / "started").exists() or proc.poll() is not None, what="the command started")
        assert proc.poll() is None, proc.communicate()
        children = _descendants(proc.pid)
        assert len(children) >= 3, children  # pool processes, the forkserver, the resource tracker
        proc.kill()
        proc.wait(timeout=30)
        wait_until(lambda: not any(_running(pid) for pid in children), timeout=15, what="every child gone")
    finally:
        (code / "gate").touch()
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=60)


def test_a_run_drives_only_its_own_run_and_names_the_others(code: Path, home: Path) -> None:
    first = start(code, home)
    wait_until(lambda: (code / "started").exists() or first.poll() is not None, what="the command started")
    first.kill()  # leaves its run unfinished, with `held` dispatched
    first.communicate(timeout=60)
    (code / "gate").touch()
    done = evenflow(
        "run", "stopflows:quick", "--registry", "stopflows:registry", "--json", home=home, cwd=code
    )
    assert done.returncode == 0, done.stderr
    assert '"result": 10' in done.stdout
    assert not (code / "ran").exists()  # the older run's command was not sent again by this run
    resume = f"evenflow resume --registry stopflows:registry --home {home}"
    assert f"1 other run is unfinished here; `{resume}` finishes them" in done.stderr


def test_a_second_run_on_a_busy_home_says_why_in_one_line(
    running: subprocess.Popen[str], code: Path, home: Path
) -> None:
    done = evenflow("run", "stopflows:quick", "--registry", "stopflows:registry", home=home, cwd=code)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("evenflow: error:") and "Traceback" not in done.stderr
