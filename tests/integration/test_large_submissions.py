"""A flow too large for one 16 MiB event runs on every store, logged as ``run.submitted`` and parts.

Before, such a submission was refused (``PayloadError``: over the 16,777,216-byte
limit), which capped a chord of small calls at about 94,000 children. Each case
here submits one past the real limit (five calls of 3.5 MB each, 17.5 MB in all),
so every store's own size check is met, mongomock's BSON-faithful one too; set
EVENFLOW_TEST_MONGODB_URL to run the mongodb case on a server.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator import Orchestrator, Registry, RunFailed, call, chord
from orchestrator.cli.progress import snapshot
from orchestrator.core import events as ev
from orchestrator.core.codec import MAX_EVENT_BYTES
from orchestrator.core.errors import SubmissionIncomplete
from orchestrator.core.events import Event, utcnow
from orchestrator.core.flow_check import FlowChecker
from orchestrator.core.stored_names import stored_name
from orchestrator.core.submitting import Submission
from orchestrator.store.encoding import encode_events
from projections.audit import summarize
from tests.support.stores import SERVER, drop_database, open_kind

ARG = 3_500_000
"""Characters of each call's argument: five of them take one event past its 16 MiB."""
CALLS = 5


def registry() -> Registry:
    commands = Registry()
    commands.register("size", len)
    commands.register("total", sum)
    return commands


def big_flow() -> Any:
    return chord([call("size", chr(ord("a") + i) * ARG) for i in range(CALLS)], call("total"))


@pytest.fixture(params=["memory", "embedded", "mongomock", SERVER])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    database = f"evenflow_large_{uuid.uuid4().hex[:10]}"
    opened = open_kind(request.param, tmp_path / "home", database)
    try:
        yield opened
    finally:
        if request.param == "mongodb":
            drop_database(opened.events.database.client, database)
        opened.close()


def test_a_flow_past_one_event_runs_logged_in_parts(store: Any) -> None:
    with Orchestrator(registry(), executor="inline", store=store) as orch:
        run = orch.submit(big_flow(), name="big")
        assert run.result(timeout=120) == CALLS * ARG
    events = store.read(run.id)
    parts = events[0].data["parts"]
    assert parts >= 2
    assert [e.type for e in events[: parts + 1]] == [ev.RUN_SUBMITTED] + [ev.RUN_FLOW_PART] * parts
    assert events[-1].type == ev.RUN_SUCCEEDED
    assert all(len(blob) <= MAX_EVENT_BYTES for blob in encode_events(events))
    assert sum(len(e.data.get("nodes", ())) for e in events[: parts + 1]) == CALLS + 3
    assert snapshot(run.id, events).total == CALLS + 1  # progress counts the calls of every part
    lines = [summarize(ev.to_doc(e)) for e in events[: parts + 1]]
    assert lines[0] == f"submitted flow 'big' of {parts} parts that follow"
    assert sum(int(line.split()[-2]) for line in lines[1:]) == CALLS + 3, lines


def test_a_run_whose_parts_never_landed_fails_once_found_and_nothing_runs(store: Any) -> None:
    checker = FlowChecker(registry(), (), lambda command: False)
    submission = Submission.of(checker.encode(big_flow()), name="cut")
    (kind, head), *_ = submission.logged()
    at = utcnow()
    store.append([Event(submission.run, 1, kind, at, data=head, by="gone", correlation=submission.run)])
    with (
        Orchestrator(registry(), executor="inline", store=store) as orch,
        pytest.raises(RunFailed) as failed,
    ):
        orch.result(submission.run, timeout=60)
    failure = failed.value.failures[0]
    assert (failure.node, failure.type) == ("r", stored_name(SubmissionIncomplete))
    assert "Submit the flow again" in failure.message
    kinds = [e.type for e in store.read(submission.run)]
    assert kinds == [ev.RUN_SUBMITTED, ev.RUN_FAILED] or kinds == [
        ev.RUN_SUBMITTED,
        ev.OWNER_CHANGED,
        ev.RUN_FAILED,
    ]
