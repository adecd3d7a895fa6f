"""Issue 13, "consistent tools": the commands agree with each other, checked through the real CLI."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path

import pytest

from orchestrator.cli import _parser
from tests.acceptance.test_cli import evenflow
from tests.support.zmq_cluster import REPO

COMMANDS = ("demo", "run", "serve", "worker", "submit", "keys", "listen", "runs", "status", "audit",
            "stats", "failures", "throughput", "activity", "listeners", "init", "cancel", "retry", "resume",
            "doctor", "migrate", "ui")  # fmt: skip
PRINT_DATA = ("demo", "run", "submit", "keys", "runs", "status", "audit", "stats", "failures", "throughput",
              "activity", "listeners", "cancel", "retry", "resume", "doctor", "migrate")  # fmt: skip
PRINT_NOTHING = ("serve", "init", "ui")

FLOWS = """
import time
from orchestrator import Registry, call, parallel

def nap(x=0):
    time.sleep(0.3)
    return x

def echo(*args, **kwargs):
    return [list(args), kwargs]

def pair(x=None):
    return (1, 2)

registry = Registry()
for fn in (nap, echo, pair):
    registry.register(fn.__name__, fn)
naps = parallel(call("nap", 1), call("nap", 2))
tuples = call("echo", (1, (2, 3)), {"k": (4,)}, opt=(5, 6)).si()
returns_tuple = call("pair")
"""


@pytest.fixture
def code(tmp_path: Path) -> Path:
    (tmp_path / "consistent.py").write_text(textwrap.dedent(FLOWS))
    return tmp_path


def run_json(code: Path, home: Path, flow: str, *extra: str) -> dict[str, object]:
    done = evenflow("run", f"consistent:{flow}", "--registry", "consistent:registry", "--json", *extra,
                    home=home, cwd=code)  # fmt: skip
    assert done.returncode == 0, done.stderr
    answer: dict[str, object] = json.loads(done.stdout)
    return answer


def test_version_prints_the_installed_version() -> None:
    done = evenflow("--version", home=Path("unused"))
    assert done.returncode == 0, done.stderr
    name, version = done.stdout.split()
    assert name == "evenflow" and version[0].isdigit()


@pytest.mark.parametrize("command", PRINT_DATA + PRINT_NOTHING)
def test_json_is_offered_exactly_where_data_is_printed(command: str) -> None:
    usage = evenflow(command, "--help", home=Path("unused"))
    assert usage.returncode == 0, usage.stderr
    assert ("--json" in usage.stdout) == (command in PRINT_DATA), usage.stdout


@pytest.mark.parametrize("command", PRINT_NOTHING)
def test_json_on_a_command_that_prints_nothing_is_refused(command: str, tmp_path: Path) -> None:
    done = evenflow(command, "--json", home=tmp_path / "home")
    assert done.returncode == 2 and "unrecognized arguments: --json" in done.stderr


def _options(command: str) -> list[argparse.Action]:
    parser = _parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return [a for a in commands.choices[command]._actions if not isinstance(a, argparse._HelpAction)]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_has_help_that_names_its_default(command: str) -> None:
    for action in _options(command):
        name = "/".join(action.option_strings) or action.dest
        assert action.help, f"evenflow {command} {name} has no help"
        if action.default not in (None, False, [], argparse.SUPPRESS) and not action.required:
            assert "default" in action.help, f"evenflow {command} {name}: help does not give its default"
    usage = evenflow(command, "--help", home=Path("unused"))
    assert usage.returncode == 0 and usage.stdout.startswith("usage: evenflow"), usage.stderr


def test_one_word_for_a_runs_state_everywhere(code: Path, home: Path) -> None:
    ran = run_json(code, home, "naps")
    assert ran["state"] == "succeeded" and "status" not in ran
    status = evenflow("status", str(ran["run"]), "--json", home=home)
    assert json.loads(status.stdout)["state"] == "succeeded"
    listed = json.loads(evenflow("runs", "--json", home=home).stdout)["runs"]
    assert [row["state"] for row in listed] == ["succeeded"]


def test_status_prints_a_table_of_fields(code: Path, home: Path) -> None:
    ran = run_json(code, home, "naps")
    done = evenflow("status", str(ran["run"]), home=home)
    assert done.returncode == 0, done.stderr
    rows = dict(line.split(None, 1) for line in done.stdout.splitlines())
    assert rows["field"] == "value" and rows["run"] == ran["run"]
    assert rows["state"] == "succeeded" and rows["result"] == "[1, 2]"
    assert not done.stdout.lstrip().startswith("{")


def test_the_audit_shows_when_a_thread_attempt_started(code: Path, home: Path) -> None:
    """One thread, two calls of 0.3 s: the second starts when the first ends, not when it is logged."""
    ran = run_json(code, home, "naps", "--executor", "threads://1")
    trail = json.loads(evenflow("audit", str(ran["run"]), "--json", home=home).stdout)
    at = {(row["node"], row["type"]): datetime.fromisoformat(row["at"]) for row in trail}
    for node in ("r.0", "r.1"):
        started, ended = at[(node, "command.started")], at[(node, "command.succeeded")]
        assert (ended - started).total_seconds() >= 0.25, (node, started, ended)
    table = evenflow("audit", str(ran["run"]), home=home).stdout
    shown = [line.split()[2] for line in table.splitlines() if "started on" in line]
    assert shown == [at[(n, "command.started")].strftime("%H:%M:%S.%f")[:-3] for n in ("r.0", "r.1")]


def test_tuples_in_call_arguments_are_taken_as_lists(code: Path, home: Path) -> None:
    ran = run_json(code, home, "tuples")
    assert ran["result"] == [[[1, [2, 3]], {"k": [4]}], {"opt": [5, 6]}]


def test_a_tuple_result_is_still_refused(code: Path, home: Path) -> None:
    done = evenflow(
        "run", "consistent:returns_tuple", "--registry", "consistent:registry", home=home, cwd=code
    )
    assert done.returncode == 1 and "tuple cannot be stored in the log; use a list" in done.stderr


def test_encode_flow_is_importable_from_the_package(tmp_path: Path) -> None:
    code = (
        "from orchestrator import call, encode_flow; print(encode_flow(call('x', (1,)))['nodes'][0]['args'])"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[[1]]"


def test_the_benchmark_runs_as_a_script_from_anywhere(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--help"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "--executors" in done.stdout
