"""The ZeroMQ messages: each crosses unchanged, and nothing a peer or service sends raises but ProtocolError.

``protocol.from_peer`` is the only gate between the service's socket and the
engine (``from_service`` the same for a worker), so the fuzz feeds it random
bytes, random JSON under every message type, and valid messages with one field
spoiled. Whatever it accepts must hold what the hub relies on.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from orchestrator.core.envelope import Envelope, ErrorInfo, Outcome
from orchestrator.core.errors import ProtocolError
from orchestrator.core.registry import NAME_PATTERN
from orchestrator.transport import protocol
from orchestrator.transport.protocol import Ack, Calls, Done, Hello, Request, Reset, Signal, Welcome
from orchestrator.transport.wire import dumps, outcome_to_doc

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
"""Any JSON value."""
types = st.sampled_from(["hello", "done", "hb", "bye", "submit", "watch", "welcome", "call", "ack", "reset"])
kinds = types | json_values
"""Every message type, and anything else under ``t``."""
names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.:\-]{0,30}", fullmatch=True)
"""Valid command and queue names."""


def read(decode: Callable[[bytes], Any], frame: bytes) -> Any:
    """``decode(frame)``, or None if it raised ProtocolError; any other exception fails the test."""
    try:
        return decode(frame)
    except ProtocolError:
        return None


def valid_hello() -> dict[str, Any]:
    return json.loads(protocol.hello("w", ["inc", "billing.charge"], ["gpu"], 4, "session"))


def the_outcome() -> Outcome:
    moment = datetime(2024, 1, 1, tzinfo=UTC)
    error = ErrorInfo("builtins.ValueError", "no", ("builtins.ValueError",), "tb", "raised")
    return Outcome("run", "r.0", 2, ok=False, error=error, started_at=moment, finished_at=moment, by="w")


# --- round trips ------------------------------------------------------------------------


@FUZZ
@given(
    name=st.text(min_size=1, max_size=200),
    commands=st.lists(names, max_size=5),
    queues=st.lists(names, max_size=3),
    slots=st.integers(1, protocol.MAX_SLOTS),
    session=st.text(min_size=1, max_size=200),
)
def test_a_hello_crosses_unchanged(
    name: str, commands: list[str], queues: list[str], slots: int, session: str
) -> None:
    message = protocol.from_peer(protocol.hello(name, commands, queues, slots, session))
    assert message == Hello(name, frozenset(commands), frozenset(queues), slots, session, starts=True)


def test_every_message_crosses_unchanged() -> None:
    outcome = the_outcome()
    envelope = Envelope("run", "r.0", 1, "inc", [1], {"x": b"\x00"}, None, "run/r.0")
    assert protocol.from_peer(protocol.done_frames([protocol.encoded_outcome(outcome)])[0]) == Done([outcome])
    riding = protocol.done_frames([protocol.encoded_outcome(outcome)], ["run/r.1#1"])
    assert protocol.from_peer(riding[0]) == Done([outcome], ["run/r.1#1"])
    assert protocol.from_peer(protocol.signal("bye")) == Signal("bye")
    request = protocol.from_peer(protocol.request("watch", "q1", run="run"))
    assert isinstance(request, Request) and (request.type, request.req, request.body["run"]) == (
        "watch",
        "q1",
        "run",
    )
    assert protocol.from_service(protocol.welcome(0.2, 3)) == Welcome(
        0.2, 3, starts=True, starts_in_done=True
    )
    assert protocol.from_service(protocol.calls([envelope])) == Calls([envelope], [])
    assert protocol.from_service(protocol.calls([envelope], ["run/r.1#1"])) == Calls(
        [envelope], ["run/r.1#1"]
    )
    assert protocol.from_service(protocol.ack(["a", "b"])) == Ack(["a", "b"])
    assert protocol.from_service(protocol.reset("why")) == Reset("why")
    assert protocol.from_service(protocol.signal("hb")) == Signal("hb")


# --- fuzz -------------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=256))
@example(b"")
@example(b"\xff\xfe")
@example(b"[" * 50_000)
def test_random_bytes_raise_only_protocol_errors(frame: bytes) -> None:
    read(protocol.from_peer, frame)
    read(protocol.from_service, frame)


@FUZZ
@given(kind=kinds, body=st.dictionaries(st.text(max_size=12), json_values, max_size=6))
@example(kind=["hello"], body={})
@example(kind={"t": 1}, body={})
def test_random_json_under_any_type_raises_only_protocol_errors(kind: Any, body: dict[str, Any]) -> None:
    frame = json.dumps({**body, "t": kind}).encode()
    accepted = read(protocol.from_peer, frame)
    if isinstance(accepted, Hello):
        assert_hello_is_sane(accepted)
    read(protocol.from_service, frame)


@FUZZ
@given(field=st.sampled_from(sorted(valid_hello())), value=json_values)
@example(field="commands", value=["inc\n"])
@example(field="slots", value=True)
@example(field="v", value=True)
def test_a_hello_with_one_field_spoiled_is_refused_or_still_sane(field: str, value: Any) -> None:
    accepted = read(protocol.from_peer, json.dumps({**valid_hello(), field: value}).encode())
    if isinstance(accepted, Hello):
        assert_hello_is_sane(accepted)


@FUZZ
@given(field=st.sampled_from(sorted(outcome_to_doc(the_outcome()))), value=json_values)
def test_a_done_with_one_outcome_field_spoiled_raises_only_protocol_errors(field: str, value: Any) -> None:
    doc = {**outcome_to_doc(the_outcome()), field: value}
    read(protocol.from_peer, protocol.done_frames([dumps(doc)])[0])


def assert_hello_is_sane(hello: Hello) -> None:
    """What the hub relies on: real names (nothing a log line could be forged with) and bounded slots."""
    assert all(NAME_PATTERN.fullmatch(name) for name in hello.commands | hello.queues)
    assert type(hello.slots) is int and 1 <= hello.slots <= protocol.MAX_SLOTS
    assert 0 < len(hello.name) <= 200 and 0 < len(hello.session) <= 200


# --- the rules, one by one ----------------------------------------------------------------


@pytest.mark.parametrize(
    "doc",
    [
        {"t": ["hello"]},  # once a TypeError (a list is unhashable), which the hub could not count
        {"t": {"x": 1}},
        {**valid_hello(), "commands": ["inc\n"]},  # once accepted: "$" matches before a final newline
        {**valid_hello(), "queues": ["gpu\n"]},
        {**valid_hello(), "v": 2},
        {**valid_hello(), "slots": protocol.MAX_SLOTS + 1},
        {"t": "done", "outcomes": [{}] * (protocol.MAX_BATCH + 1)},
        {"t": "call", "envelopes": []},  # the service's message, never a peer's
        {"t": "watch", "req": ""},
    ],
)
def test_a_peer_message_that_breaks_a_rule_is_refused(doc: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError):
        protocol.from_peer(json.dumps(doc).encode())


@pytest.mark.parametrize(
    "doc",
    [
        {"t": ["call"]},
        {"t": "welcome", "heartbeat_s": 0, "liveness": 3},
        {"t": "welcome", "heartbeat_s": 1, "liveness": 0},
        {"t": "ack", "ids": [1]},
        {"t": "hello"},  # a peer's message, never the service's
    ],
)
def test_a_service_message_that_breaks_a_rule_is_refused(doc: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError):
        protocol.from_service(json.dumps(doc).encode())


# --- outcomes too big for one message -------------------------------------------------------


def test_an_outcome_over_one_message_is_sent_as_a_small_failure_naming_the_limit() -> None:
    big = "x" * (protocol.OUTCOME_BYTES // 2)
    events = ({"type": "blob.made", "data": {"blob": big}},)
    outcome = Outcome("run", "r.0", 1, ok=True, result=big, events=events, by="w")
    part = protocol.encoded_outcome(outcome)
    assert len(part) < 10_000
    (sent,) = protocol.from_peer(protocol.done_frames([part])[0]).outcomes  # type: ignore[union-attr]
    assert not sent.ok and sent.events == () and sent.result is None
    assert sent.error is not None and sent.error.type == "orchestrator.core.errors.PayloadError"
    assert f"{protocol.OUTCOME_BYTES:,} bytes one message carries" in sent.error.message


def test_outcomes_are_packed_into_messages_within_the_limit_and_the_batch_size() -> None:
    third = "y" * (protocol.OUTCOME_BYTES // 3)
    parts = [protocol.encoded_outcome(Outcome("run", f"r.{i}", 1, ok=True, result=third)) for i in range(5)]
    parts += [protocol.encoded_outcome(Outcome("run", f"s.{i}", 1, ok=True, result=i)) for i in range(2_500)]
    starting = [f"run/t.{i}#1" for i in range(protocol.MAX_SLOTS)]
    frames = protocol.done_frames(parts, starting)
    assert all(len(frame) <= protocol.MAX_MESSAGE_BYTES for frame in frames)
    messages = [protocol.from_peer(frame) for frame in frames]
    assert all(isinstance(message, Done) for message in messages)
    assert [message.started for message in messages] == [[]] * (len(frames) - 1) + [starting]  # type: ignore[union-attr]
    decoded = [outcome for message in messages for outcome in message.outcomes]  # type: ignore[union-attr]
    assert [outcome.node for outcome in decoded] == [f"r.{i}" for i in range(5)] + [
        f"s.{i}" for i in range(2_500)
    ]
    assert decoded[0].result == third
