"""The `evenflow` command as a user runs it: real processes, a real embedded store on disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

EVENFLOW = [sys.executable, "-m", "orchestrator.cli"]


def evenflow(*args: str, home: Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EVENFLOW_HOME": str(home), "NO_COLOR": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path.cwd()), env.get("PYTHONPATH")]))
    return subprocess.run(
        [*EVENFLOW, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120, check=False
    )


def test_demo_prints_result_run_and_a_row_per_node(home: Path) -> None:
    done = evenflow("demo", home=home)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == 'result: "charged 165"'
    assert "succeeded" in lines[1]
    charge = next(line for line in lines if " charge " in line)
    assert charge.split()[2] == "2"  # the retry: two attempts
    assert (home / "events.sqlite3").exists()


def test_demo_json_is_exact_and_the_log_survives_the_process(home: Path) -> None:
    first = json.loads(evenflow("demo", "--json", "--executor", "threads", home=home).stdout)
    assert first["state"] == "succeeded" and first["result"] == "charged 165"
    assert {row["command"] for row in first["nodes"]} >= {"price", "total", "charge"}
    second = json.loads(evenflow("demo", "--json", "--executor", "inline", home=home).stdout)
    assert second["run"] != first["run"]
    check = (
        "from orchestrator.store import open_store; import sys; s = open_store(None, home=sys.argv[1], "
        "read_only=True); print(len(s.read(sys.argv[2])))"
    )
    out = subprocess.run(
        [sys.executable, "-c", check, str(home), first["run"]], capture_output=True, text=True, timeout=60
    )
    assert int(out.stdout) == first["events"]


def test_run_executes_a_users_flow(user_code: Path, home: Path) -> None:
    done = evenflow(
        "run", "myflows:flow", "--registry", "myflows:registry", "--json", home=home, cwd=user_code
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["result"] == [12, 12]


def test_run_with_input(user_code: Path, home: Path) -> None:
    args = ("run", "myflows:chain", "--registry", "myflows:registry", "--input", "5", "--json")
    done = evenflow(*args, home=home, cwd=user_code)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["result"] == 20


def test_a_failed_run_exits_1_with_one_line(user_code: Path, home: Path) -> None:
    done = evenflow("run", "myflows:broken", "--registry", "myflows:registry", home=home, cwd=user_code)
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert "node r.1 'fail' failed (attempt 1, raised): builtins.KeyError" in line


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["run", "myflows", "--registry", "myflows:registry"], "MODULE:ATTRIBUTE"),
        (["run", "myflows:flow", "--registry", "myflows:flow"], "not a Registry"),
        (["run", "myflows:flow", "--registry", "myflows:registry", "--executor", "warp://9"], "warp://9"),
        (["run", "myflows:flow", "--registry", "myflows:registry", "--input", "{nope"], "not JSON"),
        (["run", "nomodule:flow", "--registry", "myflows:registry"], "nomodule"),
    ],
)
def test_bad_arguments_exit_2_with_one_line_and_no_traceback(
    user_code: Path, home: Path, args: list[str], words: str
) -> None:
    done = evenflow(*args, home=home, cwd=user_code)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert words in line and "Traceback" not in done.stderr


def test_help_is_useful_on_its_own(home: Path) -> None:
    top = evenflow("--help", home=home)
    assert top.returncode == 0 and "demo" in top.stdout and "run" in top.stdout
    run = evenflow("run", "--help", home=home)
    assert "EVENFLOW_STORE" in run.stdout and "MODULE:REGISTRY" in run.stdout


@pytest.fixture
def owner(home: Path) -> Iterator[subprocess.Popen[str]]:
    script = (
        "import sys\n"
        "from orchestrator import Orchestrator, Registry\n"
        "orch = Orchestrator(Registry(), home=sys.argv[1])\n"
        "print('ready', flush=True)\n"
        "sys.stdin.read()\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script, str(home)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        yield process
    finally:
        process.kill()
        process.wait(30)


def test_a_second_orchestrator_on_the_embedded_store_is_refused_naming_the_owner(
    home: Path, owner: subprocess.Popen[str]
) -> None:
    done = evenflow("demo", home=home)
    assert done.returncode == 2
    assert f"owned by process {owner.pid}" in done.stderr
