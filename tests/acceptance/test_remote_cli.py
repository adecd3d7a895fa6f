"""``evenflow serve``, ``worker``, ``submit`` and ``keys`` as a user runs them: real processes on 127.0.0.1.

The service holds no command code; two workers with different registries
(billing, mail) run the calls; a JSON flow or a ``Client`` submits them.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator import Client, RunFailed, call, parallel
from orchestrator.core.errors import ConfigurationError
from tests.support.polling import wait_until
from tests.support.zmq_cluster import READY_S, REPO, Proc, free_endpoint, service, worker

pytestmark = pytest.mark.slow

FLOW = {
    "root": "r",
    "nodes": [
        {"path": "r", "kind": "parallel", "children": ["r.0", "r.1"]},
        {"path": "r.0", "kind": "call", "command": "billing.charge", "args": [42]},
        {"path": "r.1", "kind": "call", "command": "mail.send", "args": ["x@y"]},
    ],
}
EXPECTED = [{"charged": 42}, "sent to x@y"]


def evenflow(
    *args: str, home: Path | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1", "PYTHONPATH": str(REPO)}
    if home is not None:
        env["EVENFLOW_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        capture_output=True, text=True, env=env, input=stdin, timeout=120, check=False,
    )  # fmt: skip


def live_workers(proc: Proc, count: int) -> None:
    """Until the service has logged ``count`` workers joining (it logs at INFO only with --debug)."""
    wait_until(
        lambda: proc.output().count("joined") >= count, timeout=READY_S, what=f"{count} workers joined"
    )


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[str, Path, Proc]]:
    """A service on the embedded store with a billing worker and a mail worker."""
    endpoint, home = free_endpoint(), tmp_path / "home"
    with (
        service(endpoint, home, tmp_path, extra=("--debug",)) as serving,
        worker(endpoint, tmp_path, registry="tests.support.zmq_cluster:billing"),
        worker(endpoint, tmp_path, registry="tests.support.zmq_cluster:mail"),
    ):
        live_workers(serving, 2)
        yield endpoint, home, serving


def test_a_json_flow_runs_on_workers_with_different_code(
    cluster: tuple[str, Path, Proc], tmp_path: Path
) -> None:
    endpoint, home, _ = cluster
    flow = tmp_path / "flow.json"
    flow.write_text(json.dumps(FLOW))
    done = evenflow("submit", "--connect", endpoint, str(flow), "--wait")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["state"] == "succeeded" and answer["result"] == EXPECTED
    status = evenflow("status", answer["run"], "--json", home=home)  # the store, read while the service runs
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["state"] == "succeeded"


def test_submit_without_wait_prints_the_run_id_and_reads_stdin(cluster: tuple[str, Path, Proc]) -> None:
    endpoint, _, _ = cluster
    done = evenflow("submit", "--connect", endpoint, "-", stdin=json.dumps(FLOW))
    assert done.returncode == 0, done.stderr
    run = done.stdout.strip()
    with Client(endpoint) as client:
        assert client.result(run, timeout=60) == EXPECTED


def test_the_client_needs_none_of_the_command_code(cluster: tuple[str, Path, Proc]) -> None:
    endpoint, _, _ = cluster
    with Client(endpoint) as client:
        assert (
            client.run(parallel(call("billing.charge", 42), call("mail.send", "x@y")), timeout=60) == EXPECTED
        )
        with pytest.raises(RunFailed, match=r"billing\.charge"):
            client.run(call("billing.charge", "not a number", "no such ledger dir/x"), timeout=60)


def test_bad_flows_and_files_get_one_line_and_exit_2(cluster: tuple[str, Path, Proc], tmp_path: Path) -> None:
    endpoint, _, _ = cluster
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "shape.json").write_text(json.dumps({"nodes": [{"path": "r", "kind": "call"}]}))
    for args, expected in [
        ((str(tmp_path / "missing.json"),), "cannot read the flow"),
        ((str(tmp_path / "bad.json"),), "is not JSON"),
        ((str(tmp_path / "shape.json"),), "invalid flow"),
    ]:
        done = evenflow("submit", "--connect", endpoint, *args)
        assert done.returncode == 2, done
        assert expected in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_sigterm_stops_service_and_worker_cleanly(tmp_path: Path) -> None:
    endpoint = free_endpoint()
    with service(endpoint, tmp_path / "home", tmp_path) as serving, worker(endpoint, tmp_path) as working:
        with Client(endpoint) as client:
            assert client.run(call("inc", 1), timeout=60, wait_for_worker=READY_S) == 2
        assert working.terminate() == 143  # SIGTERM: drained, then 128 + 15
        assert serving.terminate() == 143


def test_curve_admits_listed_keys_only(tmp_path: Path) -> None:
    keys, public = tmp_path / "keys", tmp_path / "authorized"
    for name in ("service", "worker", "client", "stranger"):
        assert evenflow("keys", str(keys), "--name", name).returncode == 0
    public.mkdir()
    for name in ("worker", "client"):
        (public / f"{name}.key").write_bytes((keys / f"{name}.key").read_bytes())
    again = evenflow("keys", str(keys), "--name", "client")
    assert again.returncode == 2 and "exists" in again.stderr
    endpoint = free_endpoint()
    secure = ("--secret-key", str(keys / "service.key_secret"), "--authorized", str(public))
    as_worker = ("--secret-key", str(keys / "worker.key_secret"), "--server-key", str(keys / "service.key"))
    with (
        service(endpoint, tmp_path / "home", tmp_path, extra=secure),
        worker(endpoint, tmp_path, extra=as_worker),
    ):
        with Client(
            endpoint, secret_key=keys / "client.key_secret", server_key=keys / "service.key"
        ) as client:
            assert client.run(call("inc", 41), timeout=60, wait_for_worker=READY_S) == 42
        stranger = Client(
            endpoint, secret_key=keys / "stranger.key_secret", server_key=keys / "service.key", timeout=2
        )
        with stranger, pytest.raises(ConfigurationError, match="no answer"):
            stranger.submit(call("inc", 1))
        with Client(endpoint, timeout=2) as plain, pytest.raises(ConfigurationError, match="no answer"):
            plain.submit(call("inc", 1))


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("serve", "--bind", "tcp://127.0.0.1:99999"), "is not valid"),
        (("serve", "--bind", "127.0.0.1:5555"), "is not valid"),
        (
            ("worker", "--connect", "tcp://127.0.0.1:0", "--registry", "tests.commands:make_registry"),
            "not valid",
        ),
        (("serve", "--bind", "tcp://127.0.0.1:0", "--secret-key", "x"), "CURVE needs both"),
        (("worker", "--connect", "tcp://127.0.0.1:1", "--registry", "no.such.module:registry"), "No module"),
        (("worker", "--connect", "tcp://127.0.0.1:1", "--registry", "tests.commands:inc"), "not a Registry"),
        (("submit", "--connect", "tcp://127.0.0.1:1", "f.json", "--secret-key", "k"), "CURVE needs both"),
    ],
)
def test_bad_setup_fails_fast_with_one_line(args: tuple[str, ...], expected: str, tmp_path: Path) -> None:
    done = evenflow(*args, home=tmp_path)
    assert done.returncode == 2, done
    assert expected in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_help_needs_no_zmq_import() -> None:
    code = "import sys; from orchestrator.cli import main; main(['--help'])"
    probe = (
        "import sys, runpy; sys.argv=['evenflow','--help']\ntry:\n    " + code + "\nexcept SystemExit: pass\n"
    )
    probe += "print('zmq' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.stdout.strip().splitlines()[-1] == "False", done


del signal  # imported for readers: the fixtures send SIGTERM/SIGKILL through Proc


def test_the_readme_json_flow_and_client_run_on_a_demo_worker(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text()
    flow = json.loads(re.findall(r"```json\n(.*?)```", readme, flags=re.S)[0])
    client_block = next(b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S) if "Client(" in b)
    endpoint = free_endpoint()
    with (
        service(endpoint, tmp_path / "home", tmp_path),
        worker(endpoint, tmp_path, registry="orchestrator.cli.demo:registry", concurrency=4),
        Client(endpoint) as client,
    ):
        assert client.run(flow, timeout=60, wait_for_worker=READY_S) == 80
        script = tmp_path / "client.py"
        script.write_text(client_block.replace("tcp://127.0.0.1:5555", endpoint))
        done = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=REPO
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "[30, 50]"


# --- a command no worker offers ------------------------------------------------------------


MAIL_ONLY = {"root": "m", "nodes": [{"path": "m", "kind": "call", "command": "mail.send", "args": ["a@b"]}]}


@pytest.fixture
def billing_only(tmp_path: Path) -> Iterator[tuple[str, Path, Proc]]:
    """A service whose one worker offers billing.charge, not mail.send."""
    endpoint, home = free_endpoint(), tmp_path / "home"
    with (
        service(endpoint, home, tmp_path, extra=("--debug",)) as serving,
        worker(endpoint, tmp_path, registry="tests.support.zmq_cluster:billing"),
    ):
        live_workers(serving, 1)
        yield endpoint, home, serving


def test_a_command_no_worker_offers_is_refused_at_once_naming_what_the_workers_offer(
    billing_only: tuple[str, Path, Proc], tmp_path: Path
) -> None:
    """Refused before anything is logged, well within the 300 s schedule timeout it once waited out."""
    endpoint, home, _ = billing_only
    flow = tmp_path / "flow.json"
    flow.write_text(json.dumps(MAIL_ONLY))
    done = evenflow("submit", "--connect", endpoint, str(flow), "--wait")
    assert done.returncode == 2, done
    [line] = done.stderr.strip().splitlines()
    assert "'mail.send'" in line and "'billing.charge'" in line and "--wait-for-worker" in line, line
    assert "Traceback" not in done.stderr
    listed = evenflow("runs", "--json", home=home)
    assert listed.returncode == 0 and json.loads(listed.stdout)["runs"] == [], listed.stdout


def test_with_wait_for_worker_a_submission_waits_for_a_worker_that_offers_its_command(
    billing_only: tuple[str, Path, Proc], tmp_path: Path
) -> None:
    endpoint, _, serving = billing_only
    flow = tmp_path / "flow.json"
    flow.write_text(json.dumps(MAIL_ONLY))
    args = [sys.executable, "-m", "orchestrator.cli", "submit", "--connect", endpoint, str(flow)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    waiting = subprocess.Popen(
        [*args, "--wait", "--wait-for-worker", "120"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=env,
    )  # fmt: skip
    try:
        with worker(endpoint, tmp_path, registry="tests.support.zmq_cluster:mail"):
            live_workers(serving, 2)
            out, err = waiting.communicate(timeout=120)
    finally:
        waiting.kill()
        waiting.wait()
    assert waiting.returncode == 0, err
    assert json.loads(out)["result"] == "sent to a@b"
    given_up = evenflow("submit", "--connect", endpoint, str(flow), "--wait-for-worker", "0.5")
    assert given_up.returncode == 2, given_up
    assert "no connected worker offers" in given_up.stderr and "0.5" in given_up.stderr, given_up.stderr
