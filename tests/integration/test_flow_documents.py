"""Every way a flow document enters refuses a bad one with the same error: one validator behind them all.

The entry points: ``checked_flow`` itself, the service (a ``Client`` sending
JSON), a listener host's trigger, and a worker's expansion.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from orchestrator.client import Client
from orchestrator.core import events as ev
from orchestrator.core.envelope import Outcome
from orchestrator.core.errors import EvenflowError
from orchestrator.core.events import Event
from orchestrator.core.evolve import fold
from orchestrator.core.flow_docs import checked_flow
from orchestrator.core.flows import call, encode_flow, sequence
from orchestrator.core.listening import Trigger
from orchestrator.core.outcomes import record_outcome
from orchestrator.core.policy import RetryPolicy
from orchestrator.core.stored_names import stored_name
from orchestrator.service import Service
from tests.support.redis_server import free_port

AT = datetime(2026, 1, 1, tzinfo=UTC)
CALL = {"path": "r", "kind": "call", "command": "noop"}
BAD = {
    "not an object": ["r"],
    "a node without its kind": {"root": "r", "nodes": [{"path": "r", "command": "noop"}]},
    "an unknown kind": {"root": "r", "nodes": [{"path": "r", "kind": "loop"}]},
    "a timeout past a year": {"root": "r", "nodes": [{**CALL, "timeout_s": 1e300}]},
    "immutable not a bool": {"root": "r", "nodes": [{**CALL, "immutable": "yes"}]},
    "a key that is not text": {"root": "r", "nodes": [{**CALL, "key": 7}]},
    "a bad retry": {"root": "r", "nodes": [{**CALL, "retry": {"backoff": 0.5}}]},
    "a cycle": {"root": "r", "nodes": [{"path": "r", "kind": "sequence", "children": ["r"]}]},
}
Refusal = tuple[str, str]
"""The error's stored type name and its message."""


def direct(doc: Any) -> Refusal:
    with pytest.raises(EvenflowError) as caught:
        checked_flow(doc)
    return stored_name(type(caught.value)), str(caught.value)


def by_listener(doc: Any) -> Refusal:
    """A listener host's trigger whose flow does not check carries the failure instead."""
    sent = {"listener": "l", "event": "e/1", "type": "order.placed", "index": 0, "flow": doc}
    failure = Trigger.from_doc(sent).failure
    assert failure is not None
    prefix = "listener 'l' failed on event e/1 (order.placed): "
    assert failure["message"].startswith(prefix)
    return failure["type"], failure["message"][len(prefix) :]


def by_expansion(doc: Any) -> Refusal:
    """A worker's expansion that does not check ends its attempt failed."""
    events = [
        Event("r", 1, ev.RUN_SUBMITTED, AT, data={"flow": encode_flow(call("noop")), "name": None}),
        Event("r", 2, ev.COMMAND_DISPATCHED, AT, node="r", attempt=1, command="noop", data={"args": []}),
    ]
    drafts = record_outcome(fold("r", events), Outcome("r", "r", 1, ok=True, expansion=doc))
    assert drafts[-1].type == ev.COMMAND_FAILED
    error = drafts[-1].data["error"]
    return error["type"], error["message"]


@pytest.fixture(scope="module")
def service() -> Iterator[Client]:
    with Service(f"tcp://127.0.0.1:{free_port()}", store="memory://") as served:
        served.start()
        with Client(served.endpoint, timeout=10) as client:
            yield client


@pytest.fixture(params=["direct", "service", "listener", "expansion"])
def entry(request: pytest.FixtureRequest) -> Callable[[Any], Refusal]:
    if request.param != "service":
        return {"direct": direct, "listener": by_listener, "expansion": by_expansion}[request.param]
    client: Client = request.getfixturevalue("service")

    def by_service(doc: Any) -> Refusal:
        with pytest.raises(EvenflowError) as caught:
            client.submit(doc)
        return stored_name(type(caught.value)), str(caught.value)

    return by_service


@pytest.mark.parametrize("doc", list(BAD.values()), ids=list(BAD))
def test_every_entry_point_refuses_a_bad_document_as_checked_flow_does(
    entry: Callable[[Any], Refusal], doc: Any
) -> None:
    kind, message = entry(doc)
    assert (kind, message) == direct(doc)
    assert kind.rsplit(".", 1)[-1] in ("InvalidFlow", "InvalidOption")


def test_a_good_document_becomes_what_encode_flow_writes_for_the_same_flow() -> None:
    """Paths are renamed canonically, defaults filled in, options read as ``Call.options`` reads them."""
    doc = {
        "nodes": [
            {"path": "top", "kind": "sequence", "children": ["a", "b"]},
            {**CALL, "path": "a", "timeout_s": 2, "retry": {"max_attempts": 2}},
            {**CALL, "path": "b", "immutable": True, "key": "k", "route": "fast"},
        ],
        "root": "top",
    }
    first = call("noop").options(timeout=timedelta(seconds=2), retry=RetryPolicy(max_attempts=2))
    second = call("noop").options(immutable=True, key="k", route="fast")
    assert checked_flow(doc) == encode_flow(sequence(first, second))
