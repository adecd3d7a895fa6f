"""Poison values through the real processes users run: ``evenflow serve`` with a worker, ``submit``,
``run``, ``retry`` and ``resume`` with a SIGKILL in between. One bad value fails its own run with
our ``PayloadError`` text; every other run succeeds; the CLI says what is wrong in one line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator import Client, RunFailed, call, sequence
from tests.acceptance.test_remote_cli import evenflow, live_workers
from tests.support.logs import read_log
from tests.support.polling import wait_until
from tests.support.zmq_cluster import REPO, free_endpoint, service, worker

pytestmark = pytest.mark.slow

WAIT_S = 60.0
BIG = {"size": 2**40, "ms": 2**62, "low": -(2**63)}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[str]:
    endpoint = free_endpoint()
    with (
        service(endpoint, tmp_path / "home", tmp_path, extra=("--debug",)) as serving,
        worker(endpoint, tmp_path),
    ):
        live_workers(serving, 1)
        yield endpoint


def test_a_file_name_that_is_not_utf8_fails_only_its_own_run_on_the_service(
    cluster: str, bad_dir: str
) -> None:
    with Client(cluster) as client:
        before = [client.submit(sequence(call("inc", i), call("square"))) for i in range(10)]
        bad = client.submit(call("list_dir", bad_dir))
        after = [client.submit(sequence(call("inc", i), call("square"))) for i in range(10, 20)]
        results = [client.result(run, WAIT_S) for run in before + after]
        with pytest.raises(RunFailed) as caught:
            client.result(bad, WAIT_S)
        assert client.run(call("inc", 41), timeout=WAIT_S) == 42
    assert results == [(i + 1) ** 2 for i in range(20)]
    (failure,) = caught.value.failures
    assert failure.type.endswith("PayloadError")
    assert "result[0]" in failure.message and "lone surrogate" in failure.message


def test_a_flow_over_the_limit_gets_one_clear_line_from_submit(cluster: str, tmp_path: Path) -> None:
    """30 MB of flow: more than one request to the service holds (24 MiB of JSON)."""
    nodes = [{"path": "r", "kind": "parallel", "children": [f"r.{i}" for i in range(30)]}]
    nodes += [
        {"path": f"r.{i}", "kind": "call", "command": "noop", "args": ["x" * 1_000_000]} for i in range(30)
    ]
    flow = tmp_path / "big.json"
    flow.write_text(json.dumps({"root": "r", "nodes": nodes}))
    done = evenflow("submit", "--connect", cluster, str(flow))
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "bytes" in lines[0] and "25,165,824" in lines[0], done.stderr
    assert "CURVE" not in done.stderr and "Traceback" not in done.stderr
    with Client(cluster) as client:
        assert client.run(call("inc", 1), timeout=WAIT_S) == 2


def test_a_flow_over_the_message_limit_is_refused_by_the_client_before_sending(cluster: str) -> None:
    with Client(cluster) as client:
        with pytest.raises(Exception) as caught:
            client.submit(sequence(*[call("noop", "x" * 3_000_000) for _ in range(10)]))
        assert "bytes" in str(caught.value) and "one message" in str(caught.value)
        assert type(caught.value).__name__ == "PayloadError"
        assert client.run(call("inc", 1), timeout=WAIT_S) == 2


# --- big ints through retry and resume on the embedded store -------------------------------------

FLOW_MODULE = """
from orchestrator import call, sequence
from tests.commands import make_registry

registry = make_registry()


def flow(marker, gate):
    return sequence(
        call("big_numbers"),
        call("big_numbers", marker).si(),
        call("wait_for_file", gate, None, 120.0).si(),
        call("big_numbers").si(),
    )
"""


def run_cli(args: list[str], home: Path, tmp_path: Path) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)]),
        "EVENFLOW_HOME": str(home),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
        start_new_session=True,
    )


def test_big_ints_survive_evenflow_retry_and_a_kill_then_resume(tmp_path: Path) -> None:
    home, marker, gate = tmp_path / "home", tmp_path / "marker", tmp_path / "gate"
    (tmp_path / "bigflow.py").write_text(FLOW_MODULE)
    (tmp_path / "flowspec.py").write_text(
        f"from bigflow import flow as make\nflow = make({str(marker)!r}, {str(gate)!r})\n"
    )
    first = run_cli(["run", "flowspec:flow", "--registry", "bigflow:registry"], home, tmp_path)
    out, err = first.communicate(timeout=WAIT_S)
    assert first.returncode != 0, "the second step fails while the marker is missing"
    run = only_run(home)
    assert [e.data["result"] for e in read_log(home, run) if e.type == "command.succeeded"] == [BIG]

    marker.touch()  # the retry keeps step 1 (its ints read back from the journal) and runs on
    retry = run_cli(["retry", run, "--registry", "bigflow:registry"], home, tmp_path)
    wait_until(lambda: waiting_on_gate(home), timeout=WAIT_S, what="the retried run to reach its gate")
    os.killpg(retry.pid, signal.SIGKILL)  # killed mid-run: resume must read its big ints back
    retry.wait(WAIT_S)
    gate.touch()
    resumed = run_cli(["resume", "--registry", "bigflow:registry", "--json"], home, tmp_path)
    out, err = resumed.communicate(timeout=WAIT_S)
    assert resumed.returncode == 0, err
    (row,) = json.loads(out)
    assert row["state"] == "succeeded", row
    events = read_log(home, row["run"])
    results = [e.data["result"] for e in events if e.type == "command.succeeded"]
    assert results[-1] == BIG and all(type(v) is int for v in results[-1].values())
    assert events[-1].type == "run.succeeded" and events[-1].data["result"] == BIG


def only_run(home: Path) -> str:
    done = evenflow("runs", "--json", home=home)
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)["runs"]
    return str(row["run"])


def waiting_on_gate(home: Path) -> bool:
    done = evenflow("runs", "--state", "running", "--json", home=home)
    rows = json.loads(done.stdout)["runs"] if done.returncode == 0 else []
    return any(row["nodes"].get("running") for row in rows)
