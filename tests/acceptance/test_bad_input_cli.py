"""Issue 13, "every bad input gets one line": exit 2, our exception type, the fix named, no traceback.

Each case drives the real ``evenflow`` command (or a user's script) in a
subprocess. A missing optional package is simulated by a module on PYTHONPATH
that fails to import as an absent one does, never by uninstalling it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acceptance.test_cli import evenflow
from tests.support.zmq_cluster import READY_S, REPO, free_endpoint, service, worker

pytestmark = pytest.mark.slow

ECHO = """
from orchestrator import Registry, call, parallel

def echo(x=None):
    return {"type": type(x).__name__, "value": repr(x)}

def fail(i):
    raise ValueError(f"bad item {i}")

registry = Registry()
registry.register("echo", echo)
registry.register("fail", fail)
flow = call("echo")
many_failures = parallel(*[call("fail", i) for i in range(15)])
"""


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    """The single line a refused command prints; fails if there is a traceback or more."""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


def absent(tmp_path: Path, *modules: str) -> Path:
    """A folder that, put first on PYTHONPATH, makes ``modules`` import as if not installed."""
    folder = tmp_path / "absent"
    folder.mkdir(exist_ok=True)
    for name in modules:
        (folder / f"{name}.py").write_text(
            f"raise ModuleNotFoundError(\"No module named '{name}'\", name={name!r})\n"
        )
    return folder


def python(code: str, *, cwd: Path, path: Path | None = None) -> subprocess.CompletedProcess[str]:
    entries = [str(p) for p in (path, REPO, cwd) if p is not None]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(entries)}
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
        check=False,
    )


@pytest.fixture
def echo_code(tmp_path: Path) -> Path:
    (tmp_path / "echoflows.py").write_text(textwrap.dedent(ECHO))
    return tmp_path


# --- a missing extra -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["serve"],
        ["worker", "--connect", "tcp://127.0.0.1:5", "--registry", "echoflows:registry"],
        ["submit", "FLOW", "--connect", "tcp://127.0.0.1:5"],
        ["keys", "KEYS", "--name", "me"],
    ],
    ids=lambda args: args[0],
)
def test_a_zmq_command_without_pyzmq_names_the_extra(
    args: list[str], tmp_path: Path, echo_code: Path, home: Path
) -> None:
    flow = tmp_path / "flow.json"
    flow.write_text(json.dumps({"root": "r", "nodes": [{"path": "r", "kind": "call", "command": "echo"}]}))
    args = [str(flow) if a == "FLOW" else str(tmp_path / "keys") if a == "KEYS" else a for a in args]
    code = f"import sys; from orchestrator.cli import main; sys.exit(main({args!r}))"
    done = python(code, cwd=echo_code, path=absent(tmp_path, "zmq"))
    assert done.returncode == 2
    line = one_line(done)
    assert "pip install 'evenflow[zmq]'" in line and "pyzmq" in line, line


def test_a_client_without_pyzmq_raises_our_configuration_error_naming_the_extra(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        from orchestrator import Client, ConfigurationError
        try:
            Client("tcp://127.0.0.1:5")
        except ConfigurationError as exc:
            print(exc)
        """
    )
    done = python(code, cwd=tmp_path, path=absent(tmp_path, "zmq"))
    assert done.returncode == 0, done.stderr
    assert "Client needs pyzmq" in done.stdout and "pip install 'evenflow[zmq]'" in done.stdout


def test_a_celery_executor_without_celery_names_the_extra(
    echo_code: Path, home: Path, tmp_path: Path
) -> None:
    env_path = absent(tmp_path, "celery")
    args = ["run", "echoflows:flow", "--registry", "echoflows:registry", "--home", str(home)]
    args += ["--executor", "celery://redis://127.0.0.1:1/0"]
    code = f"import sys; from orchestrator.cli import main; sys.exit(main({args!r}))"
    done = python(code, cwd=echo_code, path=env_path)
    assert done.returncode == 2
    assert "pip install 'evenflow[celery]'" in one_line(done)
    assert not (home / "events.sqlite3").exists()  # refused before anything was opened


# --- JSON flows: one schema, the path to the bad field -----------------------------------------


CALL = {"path": "r", "kind": "call", "command": "echo"}
BAD_FLOWS = {
    "a list": ([1, 2, 3], "a JSON flow is an object"),
    "an unknown kind": (
        {"root": "r", "nodes": [{"path": "r", "kind": "loop"}]},
        "nodes[0].kind: kind 'loop'",
    ),
    "an unknown field": (
        {"root": "r", "nodes": [{**CALL, "tmeout_s": 5}]},
        "nodes[0].tmeout_s: unknown field 'tmeout_s'; a call node has",
    ),
    "a negative timeout": ({"root": "r", "nodes": [{**CALL, "timeout_s": -1}]}, "nodes[0].timeout_s"),
    "an unknown top-level field": ({"root": "r", "nodes": [CALL], "input": 3}, "unknown field 'input'"),
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("served")
    endpoint = free_endpoint()
    with service(endpoint, workdir / "home", workdir):
        yield endpoint


@pytest.mark.parametrize(("doc", "words"), list(BAD_FLOWS.values()), ids=list(BAD_FLOWS))
def test_a_bad_json_flow_is_refused_in_one_line_naming_the_field(
    served: str, tmp_path: Path, doc: object, words: str
) -> None:
    flow = tmp_path / "flow.json"
    flow.write_text(json.dumps(doc))
    done = evenflow("submit", str(flow), "--connect", served, home=tmp_path / "unused")
    assert done.returncode == 2
    line = one_line(done)
    assert words in line, line
    if "unknown field 'tmeout_s'" in words:
        assert "timeout_s" in line.split("has", 1)[1]  # the allowed fields are named


# --- options and --input ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--timeout", "0"], "--timeout"),
        (["--timeout", "-1"], "--timeout"),
        (["--timeout", "nan"], "--timeout"),
        (["--home", ""], "--home: is empty"),
        (["--input", "NaN"], '{"$float": "NaN"}'),
        (["--input", "[1, Infinity]"], '{"$float": "Infinity"}'),
    ],
)
def test_bad_options_of_run_are_refused_before_anything_runs(
    echo_code: Path, home: Path, extra: list[str], words: str
) -> None:
    done = evenflow(
        "run", "echoflows:flow", "--registry", "echoflows:registry", *extra, home=home, cwd=echo_code
    )
    assert done.returncode == 2
    assert words in one_line(done)
    assert not (echo_code / "events.sqlite3").exists()  # an empty --home never meant "here"


def test_an_empty_home_is_refused_by_every_store_option(tmp_path: Path) -> None:
    done = evenflow("runs", "--home", "", home=tmp_path / "h", cwd=tmp_path)
    assert done.returncode == 2 and "--home" in one_line(done)


def test_a_dated_input_means_a_datetime_to_run_and_to_submit(echo_code: Path, tmp_path: Path) -> None:
    given = '{"$date": "2026-01-01T12:00:00+00:00"}'
    ran = evenflow(
        "run", "echoflows:flow", "--registry", "echoflows:registry", "--input", given, "--json",
        home=tmp_path / "home-run", cwd=echo_code,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    by_run = json.loads(ran.stdout)["result"]
    endpoint = free_endpoint()
    env = {"PYTHONPATH": os.pathsep.join([str(REPO), str(echo_code)])}
    flow = tmp_path / "echo.json"
    flow.write_text(json.dumps({"root": "r", "nodes": [CALL]}))
    with (
        service(endpoint, tmp_path / "home-served", tmp_path),
        worker(endpoint, tmp_path, registry="echoflows:registry", env=env),
    ):
        sent = evenflow("submit", str(flow), "--connect", endpoint, "--input", given, "--wait",
                        "--wait-for-worker", str(READY_S), "--timeout", str(READY_S),
                        home=tmp_path / "unused")  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout)["result"] == by_run
    assert by_run["type"] == "datetime" and "2026, 1, 1, 12, 0" in by_run["value"]


# --- the library: validate first, say it once ------------------------------------------------


def test_a_bad_orchestrator_argument_leaves_the_store_unlocked(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        from orchestrator import ConfigurationError, Orchestrator, Registry
        try:
            Orchestrator(Registry(), home={str(tmp_path / "home")!r}, cascade_limit=-1)
        except ConfigurationError as exc:
            print("refused:", exc)
        with Orchestrator(Registry(), home={str(tmp_path / "home")!r}, executor="inline"):
            print("the second one opened the store")
        """
    )
    done = python(code, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "refused: cascade_limit" in done.stdout and "the second one opened the store" in done.stdout


SCRIPT = """
from orchestrator import Orchestrator, Registry, call, parallel

def double(x):
    return 2 * x

registry = Registry()
registry.register("double", double)
{guard}
    with Orchestrator(registry, executor="processes://2", home={home!r}) as orch:
        print(orch.run(parallel(*[call("double", i) for i in range(20)]), timeout=120))
"""


@pytest.mark.parametrize("guarded", [False, True], ids=["no main guard", "main guard"])
def test_processes_from_a_script_without_a_main_guard_is_said_in_one_line(
    tmp_path: Path, guarded: bool
) -> None:
    guard = 'if __name__ == "__main__":' if guarded else "if True:"
    script = tmp_path / "flows.py"
    script.write_text(textwrap.dedent(SCRIPT).format(guard=guard, home=str(tmp_path / "home")))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=180
    )
    if guarded:
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == [2 * i for i in range(20)]
        return
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("orchestrator.core.errors.ConfigurationError:"), done.stderr[-2000:]
    assert 'if __name__ == "__main__":' in last and "flows.py" in last
    assert "WorkerLost" not in done.stderr and len(done.stderr) < 5_000


def test_a_run_with_many_failures_shows_the_first_ten_and_a_count(echo_code: Path, home: Path) -> None:
    done = evenflow(
        "run", "echoflows:many_failures", "--registry", "echoflows:registry", home=home, cwd=echo_code
    )
    assert done.returncode == 1
    line = one_line(done)
    assert line.count("failed (attempt") == 10
    assert "and 5 more (all in `evenflow audit" in line and len(line) < 3_000
