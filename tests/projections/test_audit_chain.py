"""``audit_chain`` and ``evenflow audit`` on chains of runs the engine wrote with real listeners.

``place_order`` emits ``order.placed``; the listener ``receipts`` answers with
``send_receipt``, which emits ``receipt.sent``; the listener ``filing`` answers
that with ``file_receipt``: one chain of three runs. A lone ``file_receipt``
run, submitted beside it, is a chain of one. Each log is recorded once per
module on a mongomock store (or in an embedded home, for the CLI), then copied
into ``events_collection`` in a shuffled order, so a server lane runs the same
pipelines.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from orchestrator import Event, Node, Orchestrator, call, on
from orchestrator.core import events as ev
from orchestrator.core.envelope import Outcome
from orchestrator.core.ports import FeedStore
from projections.audit import AuditEntry, audit_chain, audit_trail, summarize
from projections.indexes import ensure_indexes
from tests.acceptance.listen_commands import ORDER_PLACED, RECEIPT_SENT, filed, receipt_for, registry
from tests.support.polling import wait_until
from workers.inline import InlineExecutor

from . import reference

EMAIL = "a@b"
WAIT_S = 30.0
REPO = Path(__file__).resolve().parents[2]


def refuse(event: Event) -> Node:
    raise ValueError("no receipts today")


class Twice(InlineExecutor):
    """Reports every outcome twice, as at-least-once delivery may: the second is ignored, with its events."""

    def _deliver(self, outcome: Outcome) -> None:
        super()._deliver(outcome)
        super()._deliver(outcome)


@dataclass(frozen=True)
class Log:
    docs: list[dict[str, Any]]
    order: str
    """The hand-submitted run that starts the chain."""
    lone: str
    """A run beside the chain, caused by nothing and causing nothing."""

    def triggered_by(self, listener: str) -> str:
        (run,) = {
            d["run"]
            for d in self.docs
            if d["type"] == ev.RUN_SUBMITTED and d["data"].get("listener") == listener
        }
        return str(run)

    def only(self, run: str, type_: str) -> dict[str, Any]:
        (doc,) = [d for d in self.docs if d["run"] == run and d["type"] == type_]
        return doc


def logged(orch: Orchestrator, patterns: list[str]) -> list[dict[str, Any]]:
    """The stored documents of the events of these types, read through the store (safe beside its writers)."""
    assert isinstance(orch.store, FeedStore)
    events, _ = orch.store.read_feed(None, patterns, 100_000)
    return [ev.to_doc(event) for event in events]


def record(*, failing: bool = False, home: Path | None = None, executor: Any = "inline") -> Log:
    """Run the chain (and, with ``failing``, a listener that raises on the order) plus a lone run."""
    where: dict[str, Any] = {"home": home} if home is not None else {"store": "mongomock://"}
    with Orchestrator(registry(), executor=executor, **where) as orch:
        orch.listen(on(ORDER_PLACED, receipt_for, name="receipts"))
        orch.listen(on(RECEIPT_SENT, filed, name="filing"))
        if failing:
            orch.listen(on(ORDER_PLACED, refuse, name="refusing"))
        order = orch.submit(call("place_order", {"id": 7, "email": EMAIL})).id
        lone = orch.submit(call("file_receipt", "lone@b")).id
        runs = 5 if failing else 4
        ends = sorted(ev.RUN_TERMINAL)
        wait_until(lambda: len(logged(orch, ends)) >= runs, timeout=WAIT_S, what=f"{runs} runs to finish")
        return Log(logged(orch, ["*"]), order, lone)


@pytest.fixture(scope="module")
def chain_log() -> Log:
    return record()


@pytest.fixture(scope="module")
def failing_log() -> Log:
    return record(failing=True)


def fill(collection: Any, log: Log) -> Any:
    shuffled = [dict(doc) for doc in log.docs]
    random.Random(log.order).shuffle(shuffled)
    collection.insert_many(shuffled)
    ensure_indexes({"events": collection})
    return collection


def runs_of(entries: list[AuditEntry]) -> list[str]:
    """The runs of ``entries`` in the order they first appear."""
    return list(dict.fromkeys(entry.run for entry in entries))


# --- the chain from any of its runs ------------------------------------------------------------


def test_the_chain_is_the_same_from_any_of_its_runs_in_causal_order(
    events_collection: Any, chain_log: Log
) -> None:
    events = fill(events_collection, chain_log)
    receipt, filing = chain_log.triggered_by("receipts"), chain_log.triggered_by("filing")
    whole = audit_chain(events, chain_log.order)
    assert runs_of(whole) == [chain_log.order, receipt, filing]
    for run in (receipt, filing):
        assert audit_chain(events, run) == whole, f"the chain differs when audited from {run}"
    for run in (
        chain_log.order,
        receipt,
        filing,
    ):  # each run's trail whole, in seq order, as audit_trail gives it
        assert [entry for entry in whole if entry.run == run] == audit_trail(events, run)
    assert whole == reference.audit_chain(chain_log.docs, filing)
    assert chain_log.lone not in runs_of(whole)


def test_a_triggered_run_names_the_event_and_the_listener_that_caused_it(
    events_collection: Any, chain_log: Log
) -> None:
    entries = audit_chain(fill(events_collection, chain_log), chain_log.order)
    placed = chain_log.only(chain_log.order, ORDER_PLACED)
    receipt = chain_log.triggered_by("receipts")
    [submitted] = [e for e in entries if e.run == receipt and e.type == ev.RUN_SUBMITTED]
    assert submitted.causation == placed["_id"] == ev.event_id(chain_log.order, placed["seq"])
    assert (
        submitted.summary
        == f"triggered by listener 'receipts' on {placed['_id']}: submitted a flow of 1 node"
    )
    [announced] = [e for e in entries if e.type == ORDER_PLACED]
    assert (announced.run, announced.command, announced.causation) == (
        chain_log.order,
        "place_order",
        f"{chain_log.order}/r#1",
    )
    assert announced.summary == 'emitted order.placed {"id": 7, "email": "a@b"}'
    assert (
        announced.worker == chain_log.only(chain_log.order, ev.COMMAND_STARTED)["data"]["by"] != announced.by
    )
    [sent] = [e for e in entries if e.type == RECEIPT_SENT]
    assert (sent.run, sent.summary) == (receipt, 'emitted receipt.sent {"email": "a@b"}')
    assert entries[0].summary == "submitted a flow of 1 node"  # the hand-submitted run, as before


def test_a_run_without_listeners_is_its_own_audit_trail(events_collection: Any, chain_log: Log) -> None:
    events = fill(events_collection, chain_log)
    trail = audit_chain(events, chain_log.lone)
    assert trail == audit_trail(events, chain_log.lone) == reference.audit(chain_log.docs, chain_log.lone)
    assert {entry.run for entry in trail} == {chain_log.lone}
    assert [entry.seq for entry in trail] == list(range(1, len(trail) + 1))
    assert [entry.type for entry in trail][-1] == ev.RUN_SUCCEEDED


def test_an_unknown_run_has_no_chain(events_collection: Any, chain_log: Log) -> None:
    assert audit_chain(fill(events_collection, chain_log), "no-such-run") == []


def test_a_log_written_before_correlations_audits_each_run_alone(
    events_collection: Any, chain_log: Log
) -> None:
    old = [{k: v for k, v in doc.items() if k != "correlation"} for doc in chain_log.docs]
    events = fill(events_collection, Log(old, chain_log.order, chain_log.lone))
    for run in (chain_log.order, chain_log.triggered_by("receipts")):
        assert audit_chain(events, run) == audit_trail(events, run) != []


def test_a_failing_listener_shows_in_the_chain_with_its_failure(
    events_collection: Any, failing_log: Log
) -> None:
    entries = audit_chain(fill(events_collection, failing_log), failing_log.triggered_by("filing"))
    refused = failing_log.triggered_by("refusing")
    receipt = failing_log.triggered_by("receipts")
    order = runs_of(entries)
    assert set(order) == {failing_log.order, receipt, refused, failing_log.triggered_by("filing")}
    assert order[0] == failing_log.order and order.index(receipt) < order.index(
        failing_log.triggered_by("filing")
    )
    placed = failing_log.only(failing_log.order, ORDER_PLACED)["_id"]
    mine = [e for e in entries if e.run == refused]
    assert [e.type for e in mine] == [ev.RUN_SUBMITTED, ev.RUN_FAILED]
    assert mine[0].summary.startswith(f"triggered by listener 'refusing' on {placed}: ")
    assert mine[1].summary == (
        f"run failed: r (?): builtins.ValueError: listener 'refusing' failed on event {placed} "
        "(order.placed): no receipts today (raised)"
    )


def test_an_ignored_outcome_counts_the_events_it_discarded() -> None:
    log = record(executor=Twice())
    [ignored] = [d for d in log.docs if d["run"] == log.order and d["type"] == ev.OUTCOME_IGNORED]
    assert ignored["data"]["discarded_events"] == [ORDER_PLACED]
    assert summarize(ignored).endswith("; discarded 1 emitted event")
    assert len([d for d in log.docs if d["type"] == ORDER_PLACED]) == 1  # the accepted outcome's, once


def test_an_emitted_event_with_long_data_is_cut_and_one_without_data_named() -> None:
    long = summarize({"type": "doc.filed", "data": {"text": "x" * 200}})
    assert long.startswith('emitted doc.filed {"text": "xxx') and long.endswith("...")
    assert len(long) == len("emitted doc.filed ") + 80 + len("...")
    assert summarize({"type": "doc.filed", "data": {}}) == "emitted doc.filed"
    assert summarize({"type": "owner.changed", "data": {}}) == "owner.changed"  # not a command's event


# --- evenflow audit ----------------------------------------------------------------------------


def evenflow(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("EVENFLOW_")}
    env.update(NO_COLOR="1", PYTHONPATH=str(REPO), EVENFLOW_HOME=str(home))
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Log]]:
    home = tmp_path_factory.mktemp("audit_chain") / "home"
    yield home, record(home=home)


def test_the_cli_table_shows_every_run_of_the_chain(home: tuple[Path, Log]) -> None:
    path, log = home
    receipt, filing = log.triggered_by("receipts"), log.triggered_by("filing")
    done = evenflow("audit", receipt, home=path)
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()
    assert header.split()[:3] == ["run", "seq", "at"] and "caused by" in header
    assert list(dict.fromkeys(row.split()[0] for row in rows)) == [log.order, receipt, filing]
    assert any("triggered by listener 'receipts'" in row for row in rows)
    assert any('emitted order.placed {"id": 7, "email": "a@b"}' in row for row in rows)


def test_the_cli_json_has_a_run_key_for_chains_and_single_runs(home: tuple[Path, Log]) -> None:
    path, log = home
    chain = json.loads(evenflow("audit", log.order, "--json", home=path).stdout)
    assert len({entry["run"] for entry in chain}) == 3
    assert all({"run", "seq", "type", "summary", "causation", "event"} <= set(entry) for entry in chain)
    only = evenflow("audit", log.order, "--run-only", "--json", home=path)
    assert only.returncode == 0, only.stderr
    mine = json.loads(only.stdout)
    assert mine == [entry for entry in chain if entry["run"] == log.order]
    assert [entry["seq"] for entry in mine] == list(range(1, len(mine) + 1))


def test_the_cli_table_of_one_run_keeps_its_columns(home: tuple[Path, Log]) -> None:
    path, log = home
    for args in ((log.lone,), (log.order, "--run-only")):
        done = evenflow("audit", *args, home=path)
        assert done.returncode == 0, done.stderr
        header = done.stdout.splitlines()[0]
        assert header.split()[:2] == ["seq", "at"] and header.endswith("what happened"), args
    lone = json.loads(evenflow("audit", log.lone, "--json", home=path).stdout)
    assert {entry["run"] for entry in lone} == {log.lone}
