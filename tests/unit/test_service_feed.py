"""The service's half of ``evenflow listen``: its feed requests, checked, and held while nothing is new."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from datetime import UTC, datetime
from typing import Any

import pytest

from orchestrator.core import events as ev
from orchestrator.core.errors import InvalidOption
from orchestrator.core.events import Event
from orchestrator.core.listening import Trigger
from orchestrator.listeners.service_feed import MAX_WAIT_S, listener_request
from orchestrator.store import MemoryStore
from tests.support.polling import wait_until

AT = datetime(2026, 3, 1, tzinfo=UTC)
DEADLINE_S = 30.0


def never(triggers: Any) -> None:
    raise AssertionError("no trigger expected")


def test_a_held_feed_request_answers_with_what_is_appended_while_it_waits() -> None:
    store, appended = MemoryStore(), threading.Condition()
    head = listener_request(store, never, "head", {"patterns": ["order.*"]})["position"]

    def wait(seconds: float) -> None:
        with appended:
            appended.wait(seconds)

    body = {"patterns": ["order.*"], "position": head, "limit": 10, "wait_s": MAX_WAIT_S}
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(listener_request, store, never, "feed", body, wait)
        store.append([Event("r", 1, "order.placed", AT, data={"id": 1})])

        def nudged_until_answered() -> bool:
            if answer.done():
                return True
            with appended:  # it may have read before the append
                appended.notify_all()
            return False

        with suppress(AssertionError):  # bounded nudging; the wait that fails is answer.result below
            wait_until(nudged_until_answered, timeout=DEADLINE_S, what="the feed request answered")
        reply = answer.result(timeout=DEADLINE_S)
    assert [(doc["_id"], doc["type"]) for doc in reply["events"]] == [(ev.event_id("r", 1), "order.placed")]
    assert reply["position"] != head


def test_a_feed_request_without_wait_answers_at_once_with_nothing_new() -> None:
    store = MemoryStore()
    body = {"patterns": ["*"], "position": None, "limit": 10}
    assert listener_request(store, never, "feed", body) == {"events": [], "position": {"row": 0}}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"patterns": ["*"], "position": None, "limit": 0}, "limit must be a whole number"),
        ({"patterns": ["*"], "position": None, "limit": 5, "wait_s": MAX_WAIT_S + 1}, "wait_s must be"),
        ({"patterns": ["*"], "position": None, "limit": 5, "wait_s": "soon"}, "wait_s must be"),
        ({"patterns": "order.*", "position": None, "limit": 5}, "patterns must be a list"),
        ({"patterns": ["*"], "position": {"row": "x"}, "limit": 5}, "is not one this store gives"),
    ],
)
def test_a_bad_feed_request_is_refused_by_name(body: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidOption, match=message):
        listener_request(MemoryStore(), never, "feed", body)


def test_triggers_are_rebuilt_from_their_documents() -> None:
    got: list[Trigger] = []
    doc = {
        "listener": "far",
        "event": "r/0000000001",
        "type": "order.placed",
        "index": 0,
        "failure": {"type": "x.E", "message": "m"},
    }
    assert listener_request(MemoryStore(), got.extend, "trigger", {"triggers": [doc]}) == {}
    (trigger,) = got
    assert (
        trigger.failure is not None and trigger.failure["message"] == "m" and trigger.failure["node"] == "r"
    )
