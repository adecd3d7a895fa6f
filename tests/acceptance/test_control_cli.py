"""``evenflow resume``, ``cancel``, ``retry`` and SIGTERM as a user meets them: real processes, real stores.

The README's "Crash and resume" walkthrough is played line by line in bash
(``kill -9`` is sent once the log shows the third step dispatched, rather than
after a fixed sleep). Then: resume keeping a retry timer, refusing a corrupt
run and parking one whose command is gone (RELIABILITY.md's bad-input table);
cancelling a run whose orchestrator died, and the refusals (a finished or
unknown run, a store owned by a live process); retrying a failed run so that
what succeeded is not executed again; SIGTERM to ``evenflow run`` and to a
draining ``evenflow serve``; cancel and retry through ``--connect``.
Executions are counted in an external ledger (``tests.commands.ledgered``),
independently of the log. Every process is killed and reaped when its test ends.
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from orchestrator import Client, call, sequence
from orchestrator.core import events as ev
from orchestrator.core.errors import StoreUnavailable
from orchestrator.core.events import Event, utcnow
from orchestrator.core.evolve import fold
from orchestrator.store import open_store
from tests.acceptance.walkthrough_commands import GATE_ENV, MARKER_ENV
from tests.commands import LEDGER_ENV, LedgerEntry, ledger_read
from tests.support.invariants import check
from tests.support.logs import read_log
from tests.support.polling import wait_until
from tests.support.zmq_cluster import REPO, Proc, free_endpoint, service, worker

pytestmark = pytest.mark.slow

README = REPO / "README.md"
WALK = "tests.acceptance.walkthrough_commands"
REGISTRY = f"{WALK}:registry"
EVERYTHING = "tests.support.zmq_cluster:everything"
STEP_S = 0.4
"""The README's steps take 2 s each, for a human; here they take this long."""
STOP_S = 10.0
"""How long a SIGTERMed ``evenflow`` process may take to exit (``docker stop`` waits 10 s, then kills)."""
DEADLINE_S = 30.0
"""How long anything the tests wait for may take: a run to reach a step, a process to start or end."""
RUN_ID = re.compile(r"[0-9a-f]{32}")


# --- helpers ---------------------------------------------------------------------------------


@dataclass
class Place:
    """One user's files: the embedded store's home, the external ledger, the gate and the marker."""

    tmp: Path

    @property
    def home(self) -> Path:
        return self.tmp / "home"

    @property
    def ledger(self) -> Path:
        return self.tmp / "ledger.jsonl"

    @property
    def gate(self) -> Path:
        return self.tmp / "gate"

    @property
    def marker(self) -> Path:
        return self.tmp / "marker"

    def env(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if key != "EVENFLOW_STORE"}
        path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        return {
            **env,
            "PYTHONPATH": path,
            "NO_COLOR": "1",
            "EVENFLOW_HOME": str(self.home),
            LEDGER_ENV: str(self.ledger),
            GATE_ENV: str(self.gate),
            MARKER_ENV: str(self.marker),
        }

    def evenflow(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "orchestrator.cli", *args],
            capture_output=True, text=True, env=self.env(), cwd=REPO, timeout=DEADLINE_S * 2, check=False,
        )  # fmt: skip

    @contextmanager
    def background(self, *args: str) -> Iterator[subprocess.Popen[bytes]]:
        """``evenflow ARGS`` in its own session, output in a file; killed and reaped on exit."""
        with (self.tmp / f"evenflow-{args[0]}.log").open("wb") as sink:
            process = subprocess.Popen(
                [sys.executable, "-m", "orchestrator.cli", *args],
                stdout=sink, stderr=subprocess.STDOUT, env=self.env(), cwd=REPO, start_new_session=True,
            )  # fmt: skip
        try:
            yield process
        finally:
            stop(process)

    def executions(self, run: str | None = None) -> list[LedgerEntry]:
        return [entry for entry in ledger_read(str(self.ledger)) if run is None or entry.run == run]

    def executing(self, node: str) -> LedgerEntry:
        """The first execution of ``node`` in the ledger, once there is one."""
        return wait_until(
            lambda: next((e for e in self.executions() if e.node == node), None),
            timeout=DEADLINE_S,
            what=f"{node} executing",
        )

    def log(self, run: str) -> list[Event]:
        return read_log(self.home, run)


def stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        with suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
    process.wait(DEADLINE_S)


def unfinished(home: Path) -> list[str]:
    """The runs without a terminal event; none while the first orchestrator is still creating the store."""
    if not (home / "events.sqlite3").exists():
        return []
    try:
        store = open_store(None, home=home, read_only=True)
    except StoreUnavailable as exc:  # the journal's file exists a moment before its table does
        if "no such table" in str(exc):
            return []
        raise
    try:
        return store.unfinished_runs()
    finally:
        store.close()


def of_type(events: list[Event], kind: str, node: str | None = None) -> list[Event]:
    return [e for e in events if e.type == kind and (node is None or e.node == node)]


def after_cancel(events: list[Event]) -> set[str]:
    """The types of the events logged after ``run.cancelled``."""
    (cancelled,) = [i for i, e in enumerate(events) if e.type == ev.RUN_CANCELLED]
    return {e.type for e in events[cancelled + 1 :]}


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    """The single line an error prints: no traceback, nothing else."""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


def fields(table: str) -> dict[str, str]:
    """``evenflow status``'s two-column table as a mapping."""
    pairs = [line.split(None, 1) for line in table.strip().splitlines()[1:]]
    return {pair[0]: pair[1] for pair in pairs if len(pair) == 2}


# --- the README's walkthrough ------------------------------------------------------------------


def walkthrough() -> tuple[str, str, str]:
    """The section's module (steps shortened for the test) and its two shell blocks."""
    text = README.read_text()
    start = text.index("\n## Crash and resume\n")
    section = text[start : text.index("\n## ", start + 1)]
    (module,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert module.count("time.sleep(2)") == 1, "the walkthrough's step no longer sleeps 2 s: update STEP_S"
    crash, control = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    return module.replace("time.sleep(2)", f"time.sleep({STEP_S})"), crash, control


class Shell:
    """Plays README lines in bash as a reader would, with ``evenflow`` on PATH and a fresh home."""

    def __init__(self, tmp: Path, module: str, stack: ExitStack) -> None:
        self.tmp, self.stack, self.place = tmp, stack, Place(tmp)
        (tmp / "slow.py").write_text(module)
        bin_dir = tmp / "bin"
        bin_dir.mkdir()
        shim = bin_dir / "evenflow"
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m orchestrator.cli "$@"\n')
        shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
        self.env = {**self.place.env(), "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
        self.background: subprocess.Popen[bytes] | None = None
        self.background_log = tmp / "background.log"
        self.ran: list[tuple[str, subprocess.CompletedProcess[str]]] = []
        self.crashed = ""
        """The run ``kill -9`` cut short, as the log names it."""

    def play(self, block: str) -> None:
        for line in filter(None, (raw.strip() for raw in block.splitlines())):
            if line.endswith("&"):
                self._start(line[:-1])
            elif "kill -9 $!" in line:
                self._kill_at_third_step()
            elif line.startswith("RUN="):
                done = self._bash(f'{line}\nprintf %s "$RUN"')
                assert done.returncode == 0 and RUN_ID.fullmatch(done.stdout), done
                self.env["RUN"] = done.stdout
            else:
                self.ran.append((line, self._bash(line)))

    def output(self, command: str) -> subprocess.CompletedProcess[str]:
        """What the line starting with ``command`` printed (the last such line)."""
        return next(done for line, done in reversed(self.ran) if line.startswith(command))

    def _bash(self, script: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", script],
            capture_output=True, text=True, env=self.env, cwd=self.tmp, timeout=DEADLINE_S * 2, check=False,
        )  # fmt: skip

    def _start(self, line: str) -> None:
        with self.background_log.open("wb") as sink:
            self.background = subprocess.Popen(
                ["bash", "-c", f"exec {line}"],
                stdout=sink, stderr=subprocess.STDOUT, env=self.env, cwd=self.tmp, start_new_session=True,
            )  # fmt: skip
        self.stack.callback(stop, self.background)

    def _kill_at_third_step(self) -> None:
        """``kill -9`` once steps 0 and 1 are logged and the third is dispatched, as the README says."""
        assert self.background is not None

        def third_dispatched() -> str | None:
            assert self.background is not None and self.background.poll() is None, (
                self.background_log.read_text()
            )
            for run in unfinished(self.place.home):
                if of_type(self.place.log(run), ev.COMMAND_DISPATCHED, "r.2"):
                    return run
            return None

        self.crashed = wait_until(third_dispatched, timeout=DEADLINE_S, what="r.2 of a run dispatched")
        self.background.send_signal(signal.SIGKILL)
        assert self.background.wait(DEADLINE_S) == -signal.SIGKILL

    def printed_steps(self, text: str) -> list[str]:
        return re.findall(r"^step \d -> \d$", text, flags=re.M)


STEPS = [f"step {i} -> {i + 1}" for i in range(5)]


def test_the_readme_crash_and_resume_walkthrough(tmp_path: Path) -> None:
    module, crash, _ = walkthrough()
    with ExitStack() as stack:
        shell = Shell(tmp_path, module, stack)
        shell.play(crash)
    run = shell.env["RUN"]
    assert run == shell.crashed
    before = shell.printed_steps(shell.background_log.read_text())
    assert before == STEPS[:2], shell.background_log.read_text()

    status = shell.output("evenflow status")  # while no orchestrator runs
    assert status.returncode == 0, status.stderr
    assert fields(status.stdout)["state"] == "running" and fields(status.stdout)["nodes"] == (
        "running=1 succeeded=2"
    ), status.stdout

    resume = shell.output("evenflow resume")
    assert resume.returncode == 0, resume.stderr
    assert shell.printed_steps(resume.stdout) == STEPS[2:], resume.stdout
    assert re.search(rf"^{run}\s+slow:flow\s+succeeded$", resume.stdout, flags=re.M), resume.stdout

    events = shell.place.log(run)
    check(run, events, [])  # L1: seq 1..N and the log folds; one terminal event; one outcome per attempt
    state = fold(run, events)
    assert (state.status, state.result) == ("succeeded", 5)
    assert [len(of_type(events, ev.COMMAND_DISPATCHED, f"r.{i}")) for i in range(5)] == [1, 1, 2, 1, 1]
    (interrupted,) = of_type(events, ev.COMMAND_FAILED)
    assert (interrupted.node, interrupted.attempt) == ("r.2", 1)
    assert interrupted.data["error"]["type"].endswith("Interrupted"), interrupted.data


def test_the_readme_cancel_and_retry_walkthrough(tmp_path: Path) -> None:
    module, _, control = walkthrough()
    with ExitStack() as stack:
        shell = Shell(tmp_path, module, stack)
        shell.play(control)
    run = shell.env["RUN"]
    assert run == shell.crashed

    cancel = shell.output("evenflow cancel")
    assert (cancel.returncode, cancel.stdout.strip()) == (0, f"cancelled {run}"), cancel
    resume = shell.output("evenflow resume")
    assert resume.returncode == 0 and resume.stdout.startswith("nothing to resume"), resume
    retry = shell.output("evenflow retry $RUN --registry")
    assert retry.returncode == 0, retry.stderr
    assert shell.printed_steps(retry.stdout) == STEPS[2:], retry.stdout  # steps 0 and 1 were kept
    new = re.search(r"^run:\s+([0-9a-f]{32}) \(succeeded", retry.stdout, flags=re.M)
    assert new and re.search(r"^result: 5$", retry.stdout, flags=re.M), retry.stdout
    again = shell.output("evenflow retry $RUN")
    assert (again.returncode, again.stdout.strip()) == (0, new[1]), again

    old = shell.place.log(run)
    assert fold(run, old).status == "cancelled"
    assert ev.COMMAND_DISPATCHED not in after_cancel(old)
    events = shell.place.log(new[1])
    check(new[1], events, [])
    assert {e.node for e in of_type(events, ev.COMMAND_DISPATCHED)} == {"r.2", "r.3", "r.4"}
    assert fold(new[1], events).result == 5


def test_resume_keeps_a_retry_timer_at_its_logged_time(tmp_path: Path) -> None:
    place = Place(tmp_path)
    with place.background("run", f"{WALK}:retrying", "--registry", REGISTRY) as owner:
        run = place.executing("r.1").run

        def scheduled() -> Event | None:
            return next(iter(of_type(place.log(run), ev.RETRY_SCHEDULED)), None)

        timer = wait_until(scheduled, timeout=DEADLINE_S, what="the retry of r.1 scheduled")
        stop(owner)  # kill -9 while the retry waits
    place.marker.touch()
    resume = place.evenflow("resume", "--registry", REGISTRY, "--json")
    assert resume.returncode == 0, resume.stderr
    assert json.loads(resume.stdout) == [
        {"run": run, "name": f"{WALK}:retrying", "state": "succeeded", "error": ""}
    ]
    events = place.log(run)
    check(run, events, place.executions(), ledgered_nodes=2)
    assert fold(run, events).result == 3
    (second,) = [e for e in of_type(events, ev.COMMAND_DISPATCHED, "r.1") if e.attempt == 2]
    assert second.at >= timer.data["due"] - timedelta(milliseconds=1), (second.at, timer.data)
    assert len(of_type(events, ev.RETRY_SCHEDULED)) == 1  # the timer was kept, not made again
    assert [(e.node, e.attempt) for e in place.executions(run)] == [("r.0", 1), ("r.1", 1), ("r.1", 2)]


def crashed_with_gated_runs(place: Place, count: int) -> list[str]:
    """``count`` runs held at the gate by an orchestrator that is then SIGKILLed."""
    script = f"import sys; from {WALK} import hold; hold(sys.argv[1], {count})"
    owner = subprocess.Popen(
        [sys.executable, "-c", script, str(place.home)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=place.env(), cwd=REPO, text=True,
    )  # fmt: skip
    try:
        assert owner.stdout is not None
        runs = owner.stdout.readline().split()
        assert len(runs) == count, runs
        wait_until(
            lambda: sum(e.node == "r.1" for e in place.executions()) == count,
            timeout=DEADLINE_S,
            what=f"{count} runs at the gate",
        )
    finally:
        stop(owner)
    return runs


def test_resume_refuses_a_corrupt_run_and_finishes_the_others(tmp_path: Path) -> None:
    """RELIABILITY.md: an unknown event in a run -> that run refused, naming the event; others unaffected."""
    place = Place(tmp_path)
    corrupt, healthy = crashed_with_gated_runs(place, 2)
    store = open_store(None, home=place.home)
    try:
        store.append([Event(corrupt, len(store.read(corrupt)) + 1, "run.bogus", utcnow())])
    finally:
        store.close()
    place.gate.touch()
    resume = place.evenflow("resume", "--registry", REGISTRY)
    assert resume.returncode != 0, resume
    assert "run.bogus" in resume.stderr, resume.stderr
    status = fold(healthy, place.log(healthy)).status
    assert status == "succeeded", f"a corrupt run stopped `evenflow resume` with the healthy run {status}"
    assert re.search(rf"^{healthy}\s+gated\s+succeeded$", resume.stdout, flags=re.M), resume


def test_resume_without_a_command_parks_the_run_for_a_fixed_deploy(tmp_path: Path) -> None:
    """RELIABILITY.md: command gone after a deploy, run resumed -> that run parked with a clear error."""
    place = Place(tmp_path)
    (run,) = crashed_with_gated_runs(place, 1)
    place.gate.touch()
    gone = place.evenflow("resume", "--registry", "tests.commands:make_registry", "--timeout", "5")
    events = place.log(run)
    status = fold(run, events).status
    assert status == "running", f"the run ended {status} instead of waiting for a registry with wait_gate"
    assert len(of_type(events, ev.COMMAND_DISPATCHED, "r.1")) == 1, "dispatched to a registry without it"
    assert gone.returncode != 0 and "wait_gate" in gone.stdout + gone.stderr, gone  # the reason, named
    fixed = place.evenflow("resume", "--registry", REGISTRY)
    assert fixed.returncode == 0, fixed
    assert fold(run, place.log(run)).result == 2


# --- cancel ------------------------------------------------------------------------------------


def test_cancel_a_run_whose_orchestrator_died_and_resume_leaves_it_alone(tmp_path: Path) -> None:
    place = Place(tmp_path)
    with place.background("run", f"{WALK}:gated", "--registry", REGISTRY) as owner:
        run = place.executing("r.1").run  # held at the gate
        refused = place.evenflow("cancel", run)
        assert refused.returncode == 2
        line = one_line(refused)
        assert f"process {owner.pid} owns the embedded store" in line and "--connect" in line, line
        stop(owner)  # kill -9: the run stays unfinished in the log

    running = place.evenflow("retry", run)
    assert running.returncode == 2 and "still running" in one_line(running), running
    done = place.evenflow("cancel", run, "--reason", "the test says stop")
    assert (done.returncode, done.stdout.strip()) == (0, f"cancelled {run}"), done
    again = place.evenflow("cancel", run)
    assert (again.returncode, again.stdout.strip()) == (0, f"{run} was cancelled already"), again

    place.gate.touch()  # a wrongly resent wait_gate would now finish, not block
    resume = place.evenflow("resume", "--registry", REGISTRY)
    assert resume.returncode == 0 and resume.stdout.startswith("nothing to resume"), resume

    events = place.log(run)
    check(run, events, place.executions())
    assert events[-1].type == ev.RUN_CANCELLED and events[-1].data["reason"] == "the test says stop"
    assert ev.COMMAND_DISPATCHED not in after_cancel(events)
    assert [e.node for e in place.executions(run)] == ["r.0", "r.1"]  # r.1 not sent again, r.2 never
    status = place.evenflow("status", run, "--json")
    assert json.loads(status.stdout)["state"] == "cancelled", status


def test_cancel_and_retry_refuse_finished_and_unknown_runs(tmp_path: Path) -> None:
    place = Place(tmp_path)
    place.gate.touch()
    done = place.evenflow("run", f"{WALK}:gated", "--registry", REGISTRY, "--json")
    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout)["run"]
    unknown = "0" * 32
    for args, expected in [
        (("cancel", run), f"run {run} already succeeded; only a running run can be cancelled"),
        (("retry", run), f"run {run} succeeded; there is nothing to retry"),
        (("retry", run, "--registry", REGISTRY), "there is nothing to retry"),
        (("cancel", unknown), f"no run '{unknown}' in this store"),
        (("retry", unknown), f"no run '{unknown}' in this store"),
    ]:
        refused = place.evenflow(*args)
        assert refused.returncode == 2, (args, refused)
        assert expected in one_line(refused), (args, refused.stderr)
    assert fold(run, place.log(run)).status == "succeeded"


# --- retry -------------------------------------------------------------------------------------


def test_retry_continues_a_failed_run_without_redoing_what_succeeded(tmp_path: Path) -> None:
    place = Place(tmp_path)
    failed = place.evenflow("run", f"{WALK}:failing", "--registry", REGISTRY, "--json")
    assert failed.returncode == 1, failed
    assert "fail_until_marker" in one_line(failed) and "RuntimeError" in one_line(failed), failed.stderr
    run = json.loads(failed.stdout)["run"]
    assert sorted(e.node for e in place.executions(run)) == ["r.0", "r.1.0", "r.1.1"]

    place.marker.touch()
    retried = place.evenflow("retry", run, "--registry", REGISTRY, "--json")
    assert retried.returncode == 0, retried.stderr
    answer = json.loads(retried.stdout)
    new = answer["run"]
    assert (answer["state"], answer["result"]) == ("succeeded", 4) and new != run
    assert [e.node for e in place.executions(new)] == ["r.1.1"]  # r.0 and r.1.0 kept, not executed again
    assert len(place.executions(run)) == 3
    events = place.log(new)
    check(new, events, place.executions())
    assert {e.node for e in of_type(events, ev.COMMAND_DISPATCHED)} == {"r.1.1", "r.2"}
    assert events[0].data["retry_of"] == run

    for args in (("retry", run), ("retry", run, "--registry", REGISTRY, "--json")):
        again = place.evenflow(*args)
        assert again.returncode == 0, again.stderr
        assert RUN_ID.findall(again.stdout)[0] == new, again.stdout
    assert len(place.executions()) == 4  # retrying again ran nothing
    refused = place.evenflow("retry", new)
    assert refused.returncode == 2 and "there is nothing to retry" in one_line(refused)
    assert fold(run, place.log(run)).status == "failed"  # the old run's log stays as it ended


# --- SIGTERM -----------------------------------------------------------------------------------


def test_sigterm_stops_evenflow_run_after_its_grace_and_resume_finishes(tmp_path: Path) -> None:
    """A command still running when ``--grace`` ends is left to ``evenflow resume``; the run exits 143."""
    place = Place(tmp_path)
    with place.background("run", f"{WALK}:gated", "--registry", REGISTRY, "--grace", "1") as process:
        run = place.executing("r.1").run  # wait_gate is running
        process.send_signal(signal.SIGTERM)
        try:
            code: int | None = process.wait(STOP_S)
        except subprocess.TimeoutExpired:
            code = None
        place.gate.touch()  # let it end either way, so the rest can be checked
        final = process.wait(DEADLINE_S)
    output = (tmp_path / "evenflow-run.log").read_text()
    assert "stopped by SIGTERM" in output and "Traceback" not in output, output
    assert fold(run, place.log(run)).status == "running"

    resume = place.evenflow("resume", "--registry", REGISTRY, "--json")
    assert resume.returncode == 0, resume.stderr
    assert json.loads(resume.stdout) == [
        {"run": run, "name": f"{WALK}:gated", "state": "succeeded", "error": ""}
    ]
    events = place.log(run)
    check(run, events, place.executions(), ledgered_nodes=2)
    assert fold(run, events).result == 2
    assert code == 143, (
        f"evenflow run did not exit 143 within {STOP_S}s of SIGTERM while a command was running; it exited "
        f"{final} only once the command ended, and that command's outcome was not logged: it ran "
        f"{sum(e.node == 'r.1' for e in place.executions(run))} times"
    )


def test_sigterm_drains_serve_and_logs_the_outcome_in_flight(tmp_path: Path) -> None:
    place = Place(tmp_path)
    endpoint = free_endpoint()
    flow = sequence(call("ledgered_wait", str(place.ledger), str(place.gate), 7), call("inc"))
    with (
        service(endpoint, place.home, tmp_path, extra=("--grace", "5", "--debug")) as serving,
        worker(endpoint, tmp_path, registry=EVERYTHING, env=place.env()),
    ):
        wait_until(
            lambda: "joined" in serving.output(), timeout=DEADLINE_S, what="a worker joined the service"
        )
        with Client(endpoint) as client:
            run = client.submit(flow)
        place.executing("r.0")
        serving.signal(signal.SIGTERM)
        wait_until(lambda: "draining:" in serving.output(), timeout=DEADLINE_S, what="the service draining")
        place.gate.touch()
        assert serving.popen.wait(DEADLINE_S) == 143, serving.output()  # SIGTERM: drained, then 128 + 15

    events = place.log(run)
    assert [(e.node, e.attempt) for e in of_type(events, ev.COMMAND_SUCCEEDED)] == [("r.0", 1)]
    assert not of_type(events, ev.COMMAND_DISPATCHED, "r.1"), "a draining service dispatched something new"
    resume = place.evenflow("resume", "--registry", EVERYTHING, "--json")
    assert resume.returncode == 0, resume.stderr
    events = place.log(run)
    check(run, events, place.executions(), ledgered_nodes=1)
    assert fold(run, events).result == 8
    assert not of_type(events, ev.COMMAND_FAILED), "the drained outcome was logged: nothing to interrupt"
    assert len(place.executions(run)) == 1


# --- through a running service -----------------------------------------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Place, str, Proc]]:
    place, endpoint = Place(tmp_path), free_endpoint()
    with (
        service(endpoint, place.home, tmp_path, extra=("--debug",)) as serving,
        worker(endpoint, tmp_path, registry=EVERYTHING, env=place.env()),
    ):
        wait_until(
            lambda: "joined" in serving.output(), timeout=DEADLINE_S, what="a worker joined the service"
        )
        yield place, endpoint, serving


def test_cancel_and_retry_through_connect(served: tuple[Place, str, Proc]) -> None:
    place, endpoint, serving = served
    flow = sequence(call("ledgered_wait", str(place.ledger), str(place.gate), 7), call("inc"))
    with Client(endpoint) as client:
        run = client.submit(flow)
    place.executing("r.0")

    refused = place.evenflow("cancel", run)  # beside the live service, on its embedded store
    assert refused.returncode == 2
    assert f"process {serving.pid} owns" in one_line(refused) and "--connect" in one_line(refused)
    for args, expected in [
        (("retry", run), "still running"),
        (("cancel", "0" * 32), "no run"),
        (("retry", "0" * 32), "no run"),
    ]:
        refusal = place.evenflow(*args, "--connect", endpoint)
        assert refusal.returncode == 2 and expected in one_line(refusal), (args, refusal)

    done = place.evenflow("cancel", run, "--connect", endpoint)
    assert (done.returncode, done.stdout.strip()) == (0, f"cancelled {run}"), done
    place.gate.touch()  # the running attempt finishes: its outcome is ignored, nothing follows it
    wait_until(
        lambda: of_type(place.log(run), ev.OUTCOME_IGNORED),
        timeout=DEADLINE_S,
        what="the running attempt's outcome ignored",
    )
    events = place.log(run)
    assert fold(run, events).status == "cancelled"
    assert after_cancel(events) <= {ev.OUTCOME_IGNORED}, after_cancel(events)

    retried = place.evenflow("retry", run, "--connect", endpoint, "--registry", EVERYTHING)
    assert retried.returncode == 0, retried.stderr
    new, answer = retried.stdout.strip().splitlines()
    assert RUN_ID.fullmatch(new) and json.loads(answer) == {"run": new, "result": 8}, retried.stdout
    again = place.evenflow("retry", run, "--connect", endpoint)
    assert (again.returncode, again.stdout.strip()) == (0, new), again
    finished = place.evenflow("cancel", new, "--connect", endpoint)
    assert finished.returncode == 2 and "already succeeded" in one_line(finished), finished
    check(new, place.log(new), place.executions(), ledgered_nodes=1)
    assert [e.node for e in place.executions()] == ["r.0", "r.0"]  # once in each run
