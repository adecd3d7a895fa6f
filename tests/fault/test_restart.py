"""Kill an orchestrator with SIGKILL mid-flow; a new one on the same embedded store finishes the run."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import bson
import pytest

from orchestrator import CorruptEvent, Orchestrator
from orchestrator.core import events as ev
from orchestrator.core.evolve import fold
from orchestrator.store import open_store
from tests.commands import make_registry
from tests.support.polling import wait_until

OWNER = """
import sys
from orchestrator import Orchestrator, call, sequence
from tests.commands import make_registry

home, gate = sys.argv[1], sys.argv[2]
orch = Orchestrator(make_registry(), executor="threads://2", home=home).start()
flow = sequence(call("inc", 1), call("wait_for_file", gate, 41).si(), call("inc"), call("square"))
run = orch.submit(flow)
print(run.id, flush=True)
run.result()
"""


@pytest.fixture
def owner(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str, Path, Path]]:
    home, gate = tmp_path / "home", tmp_path / "gate"
    env = {**os.environ, "PYTHONPATH": str(Path.cwd())}
    process = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(home), str(gate)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert process.stdout is not None
        run = process.stdout.readline().strip()
        yield process, run, home, gate
    finally:
        process.kill()
        process.wait(30)


def dispatched(home: Path, run: str, node: str) -> bool:
    reader = open_store(None, home=home, read_only=True)
    try:
        return any(e.type == ev.COMMAND_DISPATCHED and e.node == node for e in reader.read(run))
    finally:
        reader.close()


def test_a_run_survives_sigkill_of_its_orchestrator(owner) -> None:
    process, run, home, gate = owner
    wait_until(lambda: dispatched(home, run, "r.1"), timeout=30.0, what="r.1 dispatched by the owner")
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    before = open_store(None, home=home, read_only=True)
    prefix = before.read(run)
    before.close()
    assert prefix[-1].type != ev.RUN_SUCCEEDED

    gate.touch()
    with Orchestrator(make_registry(), executor="threads://2", home=home) as orch:
        assert orch.result(run, timeout=60) == (41 + 1) ** 2
        events = orch.events(run)
    assert events[: len(prefix)] == prefix  # L2: the log before the crash is unchanged
    assert [e.seq for e in events] == list(range(1, len(events) + 1))  # L1
    assert fold(run, events).status == "succeeded"
    assert sum(1 for e in events if e.type == ev.COMMAND_SUCCEEDED and e.node == "r.0") == 1  # done once


def test_a_corrupt_run_is_refused_and_other_runs_go_on(owner) -> None:
    process, run, home, gate = owner
    wait_until(lambda: dispatched(home, run, "r.1"), timeout=30.0, what="r.1 dispatched by the owner")
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    with sqlite3.connect(home / "events.sqlite3") as db:  # damage a copy of the run under another id
        rows = db.execute("SELECT id, run, seq, type, doc FROM events WHERE run = ?", (run,)).fetchall()
        bad = "bad" + run[3:]
        for event_id, _, seq, kind, doc in rows:
            copy = {**bson.decode(doc), "_id": event_id.replace(run, bad), "run": bad}
            blob = bson.encode(copy) if seq != 2 else b"\x00garbage"
            db.execute(
                "INSERT INTO events (id, run, seq, type, doc) VALUES (?, ?, ?, ?, ?)",
                (copy["_id"], bad, seq, kind, blob),
            )
    gate.touch()
    with Orchestrator(make_registry(), executor="threads://2", home=home) as orch:
        assert orch.result(run, timeout=60) == 42 * 42
        with pytest.raises(CorruptEvent) as caught:
            orch.result(bad, timeout=60)
        assert f"{bad}/0000000002" in str(caught.value)
