"""A flow too large for one 16 MiB event runs on every store, logged as ``run.submitted`` and parts.

Before, such a submission was refused (``PayloadError``: over the 16,777,216-byte
limit), which capped a chord of small calls at about 94,000 children. Each case
here submits one past the real limit (five calls of 3.5 MB each, 17.5 MB in all),
so every store's own size check is met, mongomock's BSON-faithful one too; set
EVENFLOW_TEST_MONGODB_URL to run the mongodb case on a server.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from orchestrator import Orchestrator, Registry, RunFailed, call, chord
from orchestrator.cli.progress import snapshot
from orchestrator.core import events as ev
from orchestrator.core import submitting
from orchestrator.core.codec import MAX_EVENT_BYTES
from orchestrator.core.errors import StoreUnavailable, SubmissionIncomplete
from orchestrator.core.events import Event, utcnow
from orchestrator.core.flow_check import FlowChecker
from orchestrator.core.stored_names import stored_name
from orchestrator.core.submitting import Submission
from orchestrator.store.encoding import encode_events
from orchestrator.store.memory import MemoryStore
from projections.audit import summarize
from tests.support.stores import SERVER, drop_database, open_kind

ARG = 3_500_000
"""Characters of each call's argument: five of them take one event past its 16 MiB."""
CALLS = 5


@contextmanager
def tiny_parts() -> Iterator[None]:
    """Every submission split, in parts of about 1.5 KB: a small flow in many parts."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(submitting, "ONE_EVENT_BYTES", 0)
        patch.setattr(submitting, "EVENT_ROOM_BYTES", 0)
        patch.setattr(submitting, "PART_BYTES", 1_500)
        yield


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


class LandsInPart(MemoryStore):
    """Lands the first events of the first append that holds parts, then fails it, as an ordered
    ``insert_many`` that passes ``timeoutMS`` halfway may on MongoDB."""

    def __init__(self, landed: int) -> None:
        super().__init__()
        self.landed, self.armed = landed, True

    def append(self, events: Sequence[Event]) -> None:
        if self.armed and any(event.type == ev.RUN_FLOW_PART for event in events):
            self.armed = False
            super().append(list(events)[: self.landed])
            raise StoreUnavailable("timed out after 10000 ms; some of the batch may have landed")
        super().append(events)


@pytest.mark.parametrize("key", [None, "order-7"])
@pytest.mark.parametrize("landed", [1, 3])
def test_a_submission_whose_append_landed_in_part_logs_the_rest_and_runs(
    key: str | None, landed: int
) -> None:
    store = LandsInPart(landed)
    flow = chord([call("size", "x" * 200) for _ in range(30)], call("total"))
    with tiny_parts(), Orchestrator(registry(), executor="inline", store=store, read_models=False) as orch:
        run = orch.submit(flow, key=key)
        assert run.result(timeout=60) == 30 * 200
        if key is not None:
            assert orch.submit(flow, key=key).id == run.id
    assert not store.armed  # the failure did happen
    events = store.read(run.id)
    parts = events[0].data["parts"]
    assert [e.type for e in events[: parts + 1]] == [ev.RUN_SUBMITTED] + [ev.RUN_FLOW_PART] * parts
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[-1].type == ev.RUN_SUCCEEDED


def test_a_run_with_parts_missing_fails_even_where_its_commands_are_not_registered() -> None:
    """Not all its nodes are known, so it is not parked for a registry that has them: it fails."""
    store = MemoryStore()
    checker = FlowChecker(registry(), (), lambda command: False)
    submission = Submission.of(checker.encode(big_flow()))
    landed = submission.logged()[:2]  # the head and the first part, which names 'size' calls
    at, run = utcnow(), submission.run
    store.append(
        [Event(run, seq, kind, at, data=data, by="gone") for seq, (kind, data) in enumerate(landed, 1)]
    )
    with Orchestrator(Registry(), executor="inline", store=store) as orch, pytest.raises(RunFailed) as failed:
        orch.result(submission.run, timeout=60)
    assert failed.value.failures[0].type == stored_name(SubmissionIncomplete)
