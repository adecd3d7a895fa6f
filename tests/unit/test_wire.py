"""The wire format: every storable value crosses unchanged, and nothing a peer sends raises but ProtocolError.

A peer is untrusted, so the fuzz tests feed ``loads`` and the ``*_from_doc``
readers random bytes, random JSON and valid documents with one field spoiled;
the named cases pin each rule a peer can break.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from orchestrator.core import events as ev
from orchestrator.core.codec import INT64_MAX, INT64_MIN, check_payload
from orchestrator.core.envelope import MAX_MESSAGE, MAX_TRACEBACK, Envelope, ErrorInfo, Outcome
from orchestrator.core.errors import ProtocolError
from orchestrator.core.events import Event
from orchestrator.core.evolve import fold
from orchestrator.core.flows import call, encode_flow
from orchestrator.core.outcomes import record_outcome
from orchestrator.transport.wire import (
    MAX_MESSAGE_BYTES,
    dumps,
    envelope_from_doc,
    envelope_to_doc,
    loads,
    outcome_from_doc,
    outcome_to_doc,
)
from tests.strategies import flows

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- strategies -------------------------------------------------------------------------

utc_times = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
)
millisecond_times = utc_times.map(
    lambda moment: moment.replace(microsecond=moment.microsecond // 1000 * 1000)
)
keys = st.text(max_size=12).filter(lambda key: not key.startswith("$") and "\x00" not in key)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(INT64_MIN, INT64_MAX),
    st.floats(),  # NaN and the infinities too: the log takes them, so the wire must
    st.text(),
    st.binary(max_size=64),
    millisecond_times,
)
payloads = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=24,
)
"""Every kind of value ``check_payload`` accepts, nested."""

names = st.text(min_size=1, max_size=40)

envelopes = st.builds(
    Envelope,
    run=names,
    node=names,
    attempt=st.integers(1, 1_000_000),
    command=names,
    args=st.lists(payloads, max_size=4),
    kwargs=st.dictionaries(keys, payloads, max_size=4),
    deadline=st.none() | utc_times,
    key=st.text(max_size=40),
)

errors = st.builds(
    ErrorInfo,
    type=names,
    message=st.text(max_size=200),
    mro=st.lists(st.text(max_size=40), max_size=5).map(tuple),
    traceback=st.text(max_size=400),
    reason=st.sampled_from(["raised", "timeout", "lost"]),
)


@st.composite
def outcomes(draw: st.DrawFn) -> Outcome:
    ok = draw(st.booleans())
    expansion = draw(st.none() | flows(max_leaves=5).map(encode_flow)) if ok else None
    return Outcome(
        run=draw(names),
        node=draw(names),
        attempt=draw(st.integers(1, 1_000_000)),
        ok=ok,
        result=draw(payloads) if ok and expansion is None else None,
        error=None if ok else draw(errors),
        expansion=expansion,
        started_at=draw(st.none() | utc_times),
        finished_at=draw(st.none() | utc_times),
        by=draw(st.none() | st.text(max_size=40)),
    )


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=8), inner, max_size=4),
        st.dictionaries(st.sampled_from(["$bytes", "$date", "$float"]), inner, min_size=1, max_size=1),
    ),
    max_leaves=16,
)
"""Any JSON a peer could send, tags included, valid or not."""


def same(left: Any, right: Any) -> bool:
    """Equal with exact types (1 is not 1.0 nor True); floats by repr, so NaN equals NaN and -0.0 is kept."""
    if type(left) is not type(right):
        return False
    if isinstance(left, float):
        return repr(left) == repr(right)
    if isinstance(left, list):
        return len(left) == len(right) and all(same(a, b) for a, b in zip(left, right, strict=True))
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(same(left[k], right[k]) for k in left)
    return bool(left == right)


def only_protocol_errors(read: Callable[[Any], Any], value: Any) -> Any:
    """``read(value)``, or None if it raised ProtocolError; any other exception fails the test."""
    try:
        return read(value)
    except ProtocolError:
        return None


# --- round trips ------------------------------------------------------------------------


@FUZZ
@given(payloads)
@example([math.nan, math.inf, -math.inf, -0.0])
@example({"astral": "\U0001d11e", "bytes": b"", "when": datetime(1, 1, 2, tzinfo=UTC)})
def test_every_storable_value_crosses_unchanged(value: Any) -> None:
    check_payload(value)
    assert same(loads(dumps(value)), value)


@FUZZ
@given(envelopes)
def test_an_envelope_crosses_unchanged(envelope: Envelope) -> None:
    back = envelope_from_doc(loads(dumps(envelope_to_doc(envelope))))
    assert same(envelope_to_doc(back), envelope_to_doc(envelope))
    assert back.deadline == envelope.deadline


@FUZZ
@given(outcomes())
def test_an_outcome_crosses_unchanged(outcome: Outcome) -> None:
    back = outcome_from_doc(loads(dumps(outcome_to_doc(outcome))))
    assert same(outcome_to_doc(back), outcome_to_doc(outcome))
    assert back.error == outcome.error


def test_tagged_values_cross_as_what_they_were() -> None:
    moment = datetime(2024, 2, 29, 23, 59, 59, 999_000, tzinfo=UTC)
    value = {"raw": b"\x00\xff", "when": moment, "text": "žluťoučký 🐍", "nested": [[{"x": [1.5, None]}]]}
    assert same(loads(dumps(value)), value)
    assert b"\xc5\xbe" in dumps("ž"), "text goes as UTF-8, not escaped"


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, [1.0, {"x": math.inf}]])
def test_non_finite_floats_cross_as_float_tags(value: Any) -> None:
    data = dumps(value)
    assert b"$float" in data
    assert same(loads(data), value), "loads refuses bare NaN and Infinity, so these went tagged"


def test_a_lone_surrogate_crosses_though_utf_8_cannot_hold_it() -> None:
    assert loads(dumps(["\ud800", "ok"])) == ["\ud800", "ok"]


@pytest.mark.skipif(not hasattr(time, "tzset"), reason="needs time.tzset to change the local zone")
def test_a_naive_datetime_is_sent_as_utc_whatever_the_local_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    naive = datetime(2024, 1, 1, 12, 0)
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        assert loads(dumps(naive)) == naive.replace(tzinfo=UTC)
    finally:
        monkeypatch.undo()
        time.tzset()


def test_a_date_with_an_offset_is_read_as_utc() -> None:
    assert loads(b'{"$date":"2024-01-01T09:00:00+09:00"}') == datetime(2024, 1, 1, tzinfo=UTC)
    assert loads(b'{"$date":"2024-01-01T00:00:00"}') == datetime(2024, 1, 1, tzinfo=UTC)


def test_an_oversize_error_from_a_peer_is_cut_to_local_sizes() -> None:
    error = ErrorInfo("x.Boom", "m" * (MAX_MESSAGE + 10), traceback="t" * (MAX_TRACEBACK + 10))
    outcome = Outcome("r", "n", 1, ok=False, error=error)
    back = outcome_from_doc(loads(dumps(outcome_to_doc(outcome))))
    assert back.error is not None
    assert len(back.error.message) == MAX_MESSAGE and "characters cut" in back.error.traceback


def test_only_wire_types_can_be_sent() -> None:
    with pytest.raises(TypeError, match="wire format"):
        dumps({"s": {1, 2}})


# --- fuzz: only ProtocolError -----------------------------------------------------------


@FUZZ
@given(st.binary(max_size=256))
def test_random_bytes_raise_only_protocol_errors(data: bytes) -> None:
    doc = only_protocol_errors(loads, data)
    only_protocol_errors(envelope_from_doc, doc)
    only_protocol_errors(outcome_from_doc, doc)


@FUZZ
@given(json_values)
def test_random_json_raises_only_protocol_errors(value: Any) -> None:
    doc = only_protocol_errors(loads, json.dumps(value).encode())
    for read in (envelope_from_doc, outcome_from_doc):
        decoded = only_protocol_errors(read, doc)
        if decoded is not None:
            check_payload(list(decoded.args) if isinstance(decoded, Envelope) else decoded.result)


@FUZZ
@given(envelopes, st.sampled_from(list(envelope_to_doc(Envelope("r", "n", 1, "c")))), json_values)
def test_an_envelope_with_one_field_spoiled_is_read_or_refused(
    envelope: Envelope, field: str, junk: Any
) -> None:
    doc = json.loads(dumps(envelope_to_doc(envelope)))
    doc[field] = junk
    read = only_protocol_errors(envelope_from_doc, only_protocol_errors(loads, json.dumps(doc).encode()))
    if read is not None:
        check_payload(list(read.args), "args")
        check_payload(dict(read.kwargs), "kwargs")
        assert 1 <= read.attempt <= 1_000_000


@FUZZ
@given(outcomes(), st.sampled_from(list(outcome_to_doc(Outcome("r", "n", 1, ok=True)))), json_values)
def test_an_outcome_with_one_field_spoiled_is_read_or_refused(
    outcome: Outcome, field: str, junk: Any
) -> None:
    doc = json.loads(dumps(outcome_to_doc(outcome)))
    doc[field] = junk
    read = only_protocol_errors(outcome_from_doc, only_protocol_errors(loads, json.dumps(doc).encode()))
    if read is not None:  # what the log cannot hold in it is the engine's to judge (tests below)
        assert read.ok == (read.error is None)
        assert read.run == outcome.run or field == "run"


# --- named bad inputs -------------------------------------------------------------------

ENVELOPE: dict[str, Any] = {"run": "r", "node": "n", "attempt": 1, "command": "c", "args": [], "kwargs": {}}
OK: dict[str, Any] = {"run": "r", "node": "n", "attempt": 1, "ok": True, "result": 1, "error": None}
FAILED: dict[str, Any] = {**OK, "ok": False, "result": None, "error": {"type": "x.Boom", "message": "m"}}


def test_the_named_documents_are_valid() -> None:
    """So each bad case below fails for the one thing it changes."""
    assert envelope_from_doc(ENVELOPE).command == "c"
    assert outcome_from_doc(OK).result == 1
    assert outcome_from_doc(FAILED).error == ErrorInfo("x.Boom", "m")


BAD_MESSAGES: dict[str, bytes] = {
    "NaN": b"[NaN]",
    "Infinity": b'{"x":Infinity}',
    "-Infinity": b"-Infinity",
    "a number too big for a float": b"1e999",
    "bad base64": b'{"$bytes":"not base64!"}',
    "base64 with a wrong length": b'{"$bytes":"abc"}',
    "non-ASCII base64": '{"$bytes":"é"}'.encode(),
    "$bytes not a string": b'{"$bytes":5}',
    "$date not ISO": b'{"$date":"yesterday"}',
    "$date not a string": b'{"$date":1700000000}',
    "$date out of range once in UTC": b'{"$date":"0001-01-01T00:00:00+01:00"}',
    "$date with a bad offset": b'{"$date":"2024-01-01T00:00:00+25:00"}',
    "$float not a known name": b'{"$float":"nan"}',
    "$float not a string": b'{"$float":1.5}',
    "not UTF-8": b'["\xff"]',
    "UTF-16": '["x"]'.encode("utf-16"),
    "truncated": b'{"run":',
    "nested too deep for the parser": b"[" * 100_000,
    "empty": b"",
}


@pytest.mark.parametrize("data", list(BAD_MESSAGES.values()), ids=list(BAD_MESSAGES))
def test_a_bad_message_is_refused(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        loads(data)


def test_an_oversize_message_is_refused_before_it_is_parsed() -> None:
    assert loads(b"[1]", max_bytes=3) == [1]
    with pytest.raises(ProtocolError, match="over the 3-byte limit"):
        loads(b"[12]", max_bytes=3)
    with pytest.raises(ProtocolError, match="limit"):
        loads(b" " * (MAX_MESSAGE_BYTES + 1))


BAD_ENVELOPES: dict[str, Any] = {
    "not an object": ["r", "n", 1],
    "null": None,
    "run missing": {k: v for k, v in ENVELOPE.items() if k != "run"},
    "run not a string": {**ENVELOPE, "run": 5},
    "run empty": {**ENVELOPE, "run": ""},
    "run too long": {**ENVELOPE, "run": "r" * 1001},
    "command not a string": {**ENVELOPE, "command": ["c"]},
    "attempt 0": {**ENVELOPE, "attempt": 0},
    "attempt negative": {**ENVELOPE, "attempt": -1},
    "attempt too big": {**ENVELOPE, "attempt": 1_000_001},
    "attempt a string": {**ENVELOPE, "attempt": "1"},
    "attempt a float": {**ENVELOPE, "attempt": 1.0},
    "attempt a bool": {**ENVELOPE, "attempt": True},
    "args an object": {**ENVELOPE, "args": {}},
    "kwargs a list": {**ENVELOPE, "kwargs": []},
    "key not a string": {**ENVELOPE, "key": 7},
    "deadline untagged": {**ENVELOPE, "deadline": "2024-01-01T00:00:00+00:00"},
    "'$'-key in args": {**ENVELOPE, "args": [{"$where": "1"}]},
    "'$'-key in kwargs": {**ENVELOPE, "kwargs": {"$set": 1}},
    "tag beside another key": {**ENVELOPE, "args": [{"$bytes": "", "x": 1}]},
    "int over 64 bits": {**ENVELOPE, "args": [2**63]},
    "sub-millisecond date in args": {**ENVELOPE, "args": [datetime(2024, 1, 1, microsecond=1, tzinfo=UTC)]},
}


@pytest.mark.parametrize("doc", list(BAD_ENVELOPES.values()), ids=list(BAD_ENVELOPES))
def test_a_bad_envelope_is_refused(doc: Any) -> None:
    with pytest.raises(ProtocolError):
        envelope_from_doc(loads(dumps(doc)))


BAD_OUTCOMES: dict[str, Any] = {
    "not an object": "ok",
    "ok missing": {k: v for k, v in OK.items() if k != "ok"},
    "ok a number": {**OK, "ok": 1},
    "ok a string": {**OK, "ok": "true"},
    "ok with error": {**FAILED, "ok": True},
    "not ok without error": {**OK, "ok": False},
    "expansion on a failure": {**FAILED, "expansion": {"root": "r", "nodes": []}},
    "expansion not an object": {**OK, "expansion": ["r"]},
    "attempt 0": {**OK, "attempt": 0},
    "by not a string": {**OK, "by": 5},
    "started_at untagged": {**OK, "started_at": "2024-01-01"},
    "finished_at a number": {**OK, "finished_at": 1.5},
    "error not an object": {**FAILED, "error": "boom"},
    "error without type": {**FAILED, "error": {"message": "m"}},
    "error type empty": {**FAILED, "error": {"type": ""}},
    "error message not a string": {**FAILED, "error": {"type": "x.Boom", "message": 5}},
    "non-string mro": {**FAILED, "error": {"type": "x.Boom", "mro": ["builtins.Exception", 5]}},
    "mro not a list": {**FAILED, "error": {"type": "x.Boom", "mro": "builtins.Exception"}},
    "bad reason": {**FAILED, "error": {"type": "x.Boom", "reason": "exploded"}},
    "reason not a string": {**FAILED, "error": {"type": "x.Boom", "reason": 1}},
    "traceback not a string": {**FAILED, "error": {"type": "x.Boom", "traceback": ["frame"]}},
}


@pytest.mark.parametrize("doc", list(BAD_OUTCOMES.values()), ids=list(BAD_OUTCOMES))
def test_a_bad_outcome_is_refused(doc: Any) -> None:
    with pytest.raises(ProtocolError):
        outcome_from_doc(loads(dumps(doc)))


UNSTORABLE: dict[str, Any] = {
    "'$'-key in result": {**OK, "result": {"$set": 1}},
    "a lone surrogate in result": {**OK, "result": ["ok", "bad\udcff"]},
    "'$'-key in expansion": {**OK, "result": None, "expansion": {"$root": "r"}},
    "'$'-key in event data": {**OK, "events": [{"type": "order.placed", "data": {"$set": 1}}]},
    "int over 64 bits in event data": {**OK, "events": [{"type": "order.placed", "data": {"n": 2**63}}]},
}


@pytest.mark.parametrize("doc", list(UNSTORABLE.values()), ids=list(UNSTORABLE))
def test_a_well_formed_outcome_the_log_cannot_hold_fails_its_attempt(doc: Any) -> None:
    """The wire lets it through; the engine, as for every executor, ends the attempt failed and says why."""
    outcome = outcome_from_doc(loads(dumps(doc)))
    flow = encode_flow(call("noop"))
    at = datetime(2026, 1, 1, tzinfo=UTC)
    state = fold(
        "r",
        [
            Event("r", 1, ev.RUN_SUBMITTED, at, data={"flow": flow, "name": None}),
            Event("r", 2, ev.COMMAND_DISPATCHED, at, node="r", attempt=1, command="noop", data={"args": []}),
        ],
    )
    drafts = record_outcome(state, replace(outcome, node="r"))
    assert [draft.type for draft in drafts] == [ev.COMMAND_STARTED, ev.COMMAND_FAILED]
    error = drafts[-1].data["error"]
    assert error["type"].endswith(("PayloadError", "InvalidEvent", "InvalidFlow")), error
    assert check_payload(drafts[-1].data) > 0, "the failure itself is storable"


# --- the events a command emitted ----------------------------------------------------------------

EMITTED_EVENTS = [
    {
        "type": "order.placed",
        "data": {"id": 7, "lines": [{"sku": "a", "qty": 2}], "at": datetime(2024, 1, 1, tzinfo=UTC)},
    },
    {"type": "order.paid", "data": {}},
    {"type": "receipt.sent", "data": {"raw": b"\x00\xff", "ratio": math.inf}},
]


@pytest.mark.parametrize("ok", [True, False], ids=["succeeded", "failed"])
def test_an_outcomes_events_cross_unchanged_and_in_order(ok: bool) -> None:
    error = None if ok else ErrorInfo("builtins.ValueError", "after emitting")
    outcome = Outcome("r", "n", 1, ok=ok, result=1 if ok else None, error=error, events=tuple(EMITTED_EVENTS))
    back = outcome_from_doc(loads(dumps(outcome_to_doc(outcome))))
    assert [event["type"] for event in back.events] == ["order.placed", "order.paid", "receipt.sent"]
    assert same(list(back.events), EMITTED_EVENTS)
    assert outcome_from_doc(loads(dumps(outcome_to_doc(Outcome("r", "n", 1, ok=True))))).events == ()


def test_events_missing_or_null_read_as_none() -> None:
    assert outcome_from_doc({**OK}).events == ()
    assert outcome_from_doc({**OK, "events": None}).events == ()
    assert outcome_from_doc({**OK, "events": []}).events == ()


def test_an_event_without_data_reads_as_empty_data() -> None:
    assert outcome_from_doc({**OK, "events": [{"type": "order.placed"}]}).events == (
        {"type": "order.placed", "data": {}},
    )


def test_a_peer_may_send_max_emitted_events_and_no_more() -> None:
    from orchestrator.core.context import MAX_EMITTED

    most = [{"type": "tick", "data": {"i": i}} for i in range(MAX_EMITTED)]
    assert len(outcome_from_doc(loads(dumps({**OK, "events": most}))).events) == MAX_EMITTED
    with pytest.raises(ProtocolError, match=f"at most {MAX_EMITTED}"):
        outcome_from_doc(loads(dumps({**OK, "events": [*most, {"type": "tick", "data": {}}]})))


BAD_EVENTS: dict[str, Any] = {
    "not a list": {"type": "order.placed", "data": {}},
    "a string": "order.placed",
    "an event not an object": ["order.placed"],
    "type missing": [{"data": {}}],
    "type not a string": [{"type": 5, "data": {}}],
    "type empty": [{"type": "", "data": {}}],
    "a reserved type": [{"type": "run.succeeded", "data": {}}],
    "a reserved namespace": [{"type": "command.anything", "data": {}}],
    "outcome.ignored": [{"type": "outcome.ignored", "data": {}}],
    "a pattern, not a type": [{"type": "order.*", "data": {}}],
    "a type too long": [{"type": "a" * 201, "data": {}}],
    "data a list": [{"type": "order.placed", "data": [1]}],
    "data a string": [{"type": "order.placed", "data": "{}"}],
    "data null": [{"type": "order.placed", "data": None}],
    "a bad one after a good one": [{"type": "order.placed", "data": {}}, {"type": "run.failed", "data": {}}],
}


@pytest.mark.parametrize("events", list(BAD_EVENTS.values()), ids=list(BAD_EVENTS))
@pytest.mark.parametrize("base", [OK, FAILED], ids=["ok", "failed"])
def test_a_peers_bad_events_are_refused(base: dict[str, Any], events: Any) -> None:
    with pytest.raises(ProtocolError):
        outcome_from_doc(loads(dumps({**base, "events": events})))


emitted_events = st.lists(
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(["order.placed", "a", "x-y.z_1", "Order.Paid.2"]),
            "data": st.dictionaries(keys, payloads, max_size=3),
        }
    ),
    max_size=5,
)


@FUZZ
@given(outcomes(), emitted_events)
def test_an_outcome_with_any_storable_events_crosses_unchanged(
    outcome: Outcome, events: list[dict[str, Any]]
) -> None:
    from dataclasses import replace

    sent = replace(outcome, events=tuple(events))
    back = outcome_from_doc(loads(dumps(outcome_to_doc(sent))))
    assert same(list(back.events), events)
    assert same(outcome_to_doc(back), outcome_to_doc(sent))
