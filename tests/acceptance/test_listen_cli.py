"""``evenflow listen`` and ``evenflow audit`` on a listener chain: real processes on 127.0.0.1.

``evenflow serve`` on the embedded store, an ``evenflow worker`` with the
commands of ``listen_commands`` and ``evenflow listen`` with its listeners:
``place_order`` emits ``order.placed``, ``receipts`` answers with
``send_receipt``, which emits ``receipt.sent``, which ``filing`` answers. Every
causing event must trigger exactly one run (L10, counted by causation over the
whole log), also when the listen process is SIGKILLed between logging its
triggers and saving its checkpoint and started again. SIGTERM stops it with
exit code 0; a bad ``--listeners`` exits non-zero with one line on stderr.
``evenflow audit`` of an order's run shows the whole chain.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from orchestrator import Client, Orchestrator
from orchestrator.core import events as ev
from orchestrator.core.crashpoints import CRASH_ENV
from orchestrator.core.errors import StoreUnavailable
from orchestrator.core.events import Event
from orchestrator.core.evolve import fold
from orchestrator.core.keys import run_for_key
from orchestrator.core.listening import trigger_key
from orchestrator.store import open_store
from tests.acceptance.listen_commands import (
    FILING,
    ORDER_PLACED,
    RECEIPT_SENT,
    RECEIPTS,
    order,
    receipts,
    registry,
)
from tests.support.polling import wait_until
from tests.support.zmq_cluster import READY_S, REPO, Proc, _start, free_endpoint, service, worker

pytestmark = pytest.mark.slow

MODULE = "tests.acceptance.listen_commands"
REGISTRY = f"{MODULE}:registry"
POINT = "listener-after-trigger-before-checkpoint"
CHAIN = {ORDER_PLACED: RECEIPTS, RECEIPT_SENT: FILING}
"""Causing event type -> the listener that answers it."""
ORDERS = 4
CHAIN_S = 60.0
STOP_S = 5.0
"""How soon ``evenflow listen`` must exit after SIGTERM."""


def evenflow(*args: str, home: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("EVENFLOW_")}
    env.update(NO_COLOR="1", PYTHONPATH=str(REPO))
    if home is not None:
        env["EVENFLOW_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip


@contextmanager
def listening(
    endpoint: str, workdir: Path, spec: str = f"{MODULE}:listeners", crash: str | None = None
) -> Iterator[Proc]:
    """``evenflow listen`` (armed with ``crash`` if given), waited for until it listens; killed on exit."""
    log = workdir / f"listen-{time.monotonic_ns()}.log"
    args = ["listen", "--connect", endpoint, "--listeners", spec, "--poll", "0.1", "--timeout", "10"]
    proc = _start(args, log, {CRASH_ENV: crash} if crash else None)
    try:
        wait_until(
            lambda: "evenflow: listening to" in proc.output() or proc.popen.poll() is not None,
            timeout=READY_S,
            what=f"evenflow listen listening, or ended (log: {log})",
        )
        assert proc.popen.poll() is None, f"evenflow listen exited {proc.popen.returncode}:\n{proc.output()}"
        yield proc
    finally:
        if proc.popen.poll() is None:
            proc.kill()


def whole_log(home: Path) -> list[Event]:
    """Every event in the embedded store (read-only, while the service runs)."""
    try:
        reader = open_store(None, home=home, read_only=True)
    except StoreUnavailable:
        return []
    try:
        events, _ = reader.read_feed(None, ["*"], 100_000)
        return list(events)
    finally:
        reader.close()


def triggered_run(listener: str, event_id: str) -> str:
    return run_for_key(trigger_key(listener, event_id, 0))


def runs_of(events: list[Event]) -> dict[str, list[Event]]:
    runs: dict[str, list[Event]] = {}
    for event in events:
        runs.setdefault(event.run, []).append(event)
    return runs


def chain_complete(events: list[Event], orders: int) -> bool:
    runs = runs_of(events)
    if sum(1 for e in events if e.type == ORDER_PLACED) < orders:
        return False
    if any(triggered_run(CHAIN[e.type], e.id) not in runs for e in events if e.type in CHAIN):
        return False
    return all(any(e.type in ev.RUN_TERMINAL for e in found) for found in runs.values())


def check_exactly_once(events: list[Event], orders: int) -> None:
    """L10: each causing event caused exactly one run, by its listener, on the run keyed on it."""
    causes = {e.id: e for e in events if e.type in CHAIN}
    assert sum(1 for e in causes.values() if e.type == ORDER_PLACED) == orders
    assert sum(1 for e in causes.values() if e.type == RECEIPT_SENT) == orders
    submitted = [e for e in events if e.type == ev.RUN_SUBMITTED]
    caused = Counter(e.causation for e in submitted if e.causation is not None)
    for cause in causes.values():
        assert caused[cause.id] == 1, f"L10: {cause.type} {cause.id} caused {caused[cause.id]} runs"
    assert set(caused) == set(causes), "a run names a cause that is no listened-to event"
    for started in submitted:
        if started.causation is not None:
            listener = CHAIN[causes[started.causation].type]
            assert started.data.get("listener") == listener
            assert started.run == triggered_run(listener, started.causation)
    for run, found in runs_of(events).items():
        assert fold(run, found).status == "succeeded", f"L4: {run} did not succeed"
    assert len(runs_of(events)) == 3 * orders


def replays_pending(home: Path) -> list[str]:
    """Events past a listener's saved checkpoint whose triggered run is logged already."""
    reader = open_store(None, home=home, read_only=True)
    try:
        pending = []
        for pattern, listener in CHAIN.items():
            after, _ = reader.read_feed(reader.load_checkpoint(listener), [pattern], 10_000)
            pending += [e.id for e in after if reader.read(triggered_run(listener, e.id))]
        return pending
    finally:
        reader.close()


def place(endpoint: str, ids: range) -> None:
    with Client(endpoint) as client:
        runs = [client.submit(order(i), wait_for_worker=CHAIN_S) for i in ids]
        for i, run in zip(ids, runs, strict=True):
            assert client.result(run, timeout=CHAIN_S) == i


def test_listen_triggers_each_event_once_across_a_sigkill_and_stops_on_sigterm(tmp_path: Path) -> None:
    endpoint, home = free_endpoint(), tmp_path / "home"
    with service(endpoint, home, tmp_path), worker(endpoint, tmp_path, registry=REGISTRY, concurrency=2):
        # pass 1 logs receipts' triggers, pass 2 (filing's or receipts' next) dies before its checkpoint
        with listening(endpoint, tmp_path, crash=f"{POINT}@2") as first:
            place(endpoint, range(ORDERS))
            wait_until(
                lambda: first.popen.poll() is not None, timeout=CHAIN_S, what="the armed listen process ended"
            )
            assert first.popen.returncode == -signal.SIGKILL, first.output()
        pending = replays_pending(home)
        assert pending, "the listen process died with no triggered run past its checkpoint"

        with listening(endpoint, tmp_path, spec=f"{MODULE}:make_listeners") as second:
            place(endpoint, range(ORDERS, 2 * ORDERS))
            wait_until(
                lambda: chain_complete(whole_log(home), 2 * ORDERS),
                timeout=CHAIN_S,
                what="the chain complete",
            )
            check_exactly_once(whole_log(home), 2 * ORDERS)
            began = time.monotonic()
            code = second.terminate(timeout_s=30)
            took = time.monotonic() - began
            assert code == 143, f"evenflow listen exited {code} on SIGTERM:\n{second.output()}"
            assert took < STOP_S, f"evenflow listen took {took:.1f}s to stop on SIGTERM"
            assert "Traceback" not in second.output()


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        (f"{MODULE}:not_a_list", "not a list of listeners"),
        (f"{MODULE}:not_listeners", "must hold listeners made with on("),
        (f"{MODULE}:nothing", "must hold listeners made with on("),
        (f"{MODULE}:missing", "missing"),
        ("no_such_module_for_evenflow:listeners", "no_such_module_for_evenflow"),
        (MODULE, "MODULE:ATTRIBUTE"),
    ],
    ids=["not-a-list", "not-listeners", "empty", "missing-attribute", "missing-module", "no-colon"],
)
def test_a_bad_listeners_option_exits_with_one_line(spec: str, reason: str) -> None:
    done = evenflow("listen", "--connect", free_endpoint(), "--listeners", spec, "--timeout", "2")
    assert done.returncode == 2, done  # bad input, as every other command exits
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and reason in lines[0], done.stderr
    assert "Traceback" not in done.stderr and "evenflow: listening" not in done.stdout


def audit(home: Path, run: str) -> list[dict[str, Any]]:
    done = evenflow("audit", run, "--home", str(home), "--json")
    assert done.returncode == 0, done.stderr
    entries = json.loads(done.stdout)
    assert isinstance(entries, list)
    return entries


def test_audit_of_an_order_shows_the_whole_chain(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with Orchestrator(registry(), executor="inline", home=home) as orch:
        orch.listen(receipts)
        order_run = orch.submit(order(7)).id
        assert orch.result(order_run, timeout=CHAIN_S) == 7
        [placed] = [e for e in orch.events(order_run) if e.type == ORDER_PLACED]
        receipt_run = triggered_run(RECEIPTS, placed.id)
        wait_until(
            lambda: any(e.type in ev.RUN_TERMINAL for e in orch.events(receipt_run)),
            timeout=CHAIN_S,
            what=f"the receipt run {receipt_run} finished",
        )

    entries = audit(home, order_run)
    assert all({"run", "seq", "type", "causation", "summary", "event"} <= set(e) for e in entries), entries[0]
    assert {e["run"] for e in entries} == {order_run, receipt_run}
    seen = {(e["run"], e["type"]) for e in entries}
    assert (order_run, ORDER_PLACED) in seen and (receipt_run, RECEIPT_SENT) in seen, sorted(seen)
    [started] = [e for e in entries if e["run"] == receipt_run and e["type"] == ev.RUN_SUBMITTED]
    assert started["causation"] == placed.id
    [announced] = [e for e in entries if e["type"] == ORDER_PLACED]
    assert ev.event_id(announced["run"], announced["seq"]) == placed.id
    for run in (order_run, receipt_run):  # each run's own events in seq order
        seqs = [e["seq"] for e in entries if e["run"] == run]
        assert seqs == list(range(1, len(seqs) + 1)), (run, seqs)
    again = {(e["run"], e["seq"]) for e in audit(home, receipt_run)}
    assert again == {(e["run"], e["seq"]) for e in entries}, "the chain differs when audited from its end"
