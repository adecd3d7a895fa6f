"""Property: any value, used as arguments, as a result or as emitted event data, through any executor
on any store, comes back equal by the type mapping or is refused with ``PayloadError`` where it
enters; either way the next unrelated run succeeds.

The oracle restates the README's table without evenflow's code: a value is taken when the real
``bson`` codec gives it back the same (exact types, NaN equal to NaN, -0.0 kept, instants in UTC),
its keys neither start with "$" nor hold NUL, containers nest at most 40 deep and it takes at most
4 MiB as BSON.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import bson
import pytest
from bson.codec_options import CodecOptions
from bson.errors import InvalidDocument
from hypothesis import HealthCheck, example, given, settings

from orchestrator import Orchestrator, PayloadError, RetryPolicy, RunFailed, call
from orchestrator.core.codec import MAX_PAYLOAD_BYTES
from tests.commands import make_registry, packed
from tests.strategies import nested, values
from tests.support.zmq_cluster import wait_for_workers, worker

pytestmark = pytest.mark.slow

WAIT_S = 60.0
ONCE = RetryPolicy.no_retry()
DECODE: CodecOptions[Any] = CodecOptions(tz_aware=True, tzinfo=UTC)
COMBOS = [
    (store, executor)
    for store in ("memory", "mongomock", "embedded")
    for executor in ("inline", "processes", "zmq")
]


# --- the oracle ---------------------------------------------------------------------------------


def taken(payload: Any) -> bool:
    """Whether the type mapping takes ``payload`` (an args list, a result, an event's data)."""
    try:
        blob = bson.encode({"v": payload})
    except (InvalidDocument, UnicodeEncodeError, OverflowError):
        return False
    back = bson.decode(blob, DECODE)["v"]
    return (
        same(back, payload)
        and _keys_ok(payload)
        and _depth(payload) <= 40
        and len(blob) - 8 <= MAX_PAYLOAD_BYTES
    )


def same(got: Any, sent: Any) -> bool:
    """Equal with exact types (BSON's Int64 reads as int), NaN equal to NaN, -0.0 apart from 0.0."""
    if isinstance(got, int) and not isinstance(got, bool) and type(sent) is int:
        return int(got) == sent
    if type(got) is not type(sent):
        return False
    if isinstance(sent, float):
        return (math.isnan(got) and math.isnan(sent)) or repr(got) == repr(sent)
    if isinstance(sent, list):
        return len(got) == len(sent) and all(same(g, s) for g, s in zip(got, sent, strict=True))
    if isinstance(sent, dict):
        return list(got) == list(sent) and all(same(got[key], sent[key]) for key in sent)
    if isinstance(sent, datetime):
        return got == sent and got.utcoffset() == timedelta(0) and sent.utcoffset() == timedelta(0)
    return bool(got == sent)


def _keys_ok(value: Any) -> bool:
    if isinstance(value, dict):
        good = all(isinstance(key, str) and not key.startswith("$") and "\x00" not in key for key in value)
        return good and all(_keys_ok(item) for item in value.values())
    if isinstance(value, list | tuple):
        return all(_keys_ok(item) for item in value)
    return True


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list | tuple):
        return 1 + max(map(_depth, value), default=0)
    return 0


# --- the orchestrators --------------------------------------------------------------------------


@pytest.fixture(scope="module", params=COMBOS, ids=[f"{store}-{executor}" for store, executor in COMBOS])
def orch(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orchestrator]:
    store, kind = request.param
    workdir = tmp_path_factory.mktemp(f"{store}-{kind}")
    url = f"embedded://{workdir / 'home'}" if store == "embedded" else f"{store}://"
    with ExitStack() as stack:
        executor: Any = {"inline": "inline", "processes": "processes://2"}.get(kind)
        if kind == "zmq":
            from workers.zmq import ZmqExecutor

            executor = ZmqExecutor("tcp://127.0.0.1:0", registry=make_registry(), heartbeat_s=0.2)
            stack.enter_context(worker(executor.endpoint, workdir, concurrency=2))
        started = stack.enter_context(Orchestrator(make_registry(), store=url, executor=executor))
        if kind == "zmq":
            wait_for_workers(executor, 1)
        elsewhere = started.run(call("pid"), timeout=WAIT_S) != os.getpid()
        assert elsewhere == (kind != "inline"), "commands run where the executor says"
        yield started


# --- the property -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Text:
    """A long str, built in the test: Hypothesis prints examples, and 4 MiB of them helps no one."""

    size: int

    def build(self) -> str:
        return "x" * self.size


AT_THE_LIMIT = Text(MAX_PAYLOAD_BYTES - 5)
"""A str of exactly 4 MiB as BSON (4-byte length, the text, NUL)."""


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values)
@example("bad\udcff")
@example({"files": ["ok.txt", "bad\udcff.txt"]})
@example([2**31, -(2**31) - 1, 2**40, 2**62, 2**63 - 1, -(2**63)])
@example([2**63, -(2**64)])
@example([math.nan, math.inf, -math.inf, -0.0])
@example(nested(38))
@example(nested(39))
@example(nested(40))
@example(AT_THE_LIMIT)
@example(Text(AT_THE_LIMIT.size + 1))
def test_a_value_comes_back_by_the_mapping_or_is_refused_where_it_enters(
    orch: Orchestrator, value: Any
) -> None:
    value = value.build() if isinstance(value, Text) else value
    as_arguments(orch, value)
    as_a_result(orch, value)
    as_event_data(orch, value)
    assert orch.run(call("inc", 41), timeout=WAIT_S) == 42


def as_arguments(orch: Orchestrator, value: Any) -> None:
    """``call(...)`` takes tuples in its arguments as lists (and only there): they come back lists."""
    listed = _listed(value)
    if not taken([listed]):
        with pytest.raises(PayloadError):
            orch.submit(call("noop", value))
        return
    run = orch.submit(call("noop", value).options(retry=ONCE))
    assert same(run.result(timeout=WAIT_S), listed)
    assert same(orch.state(run.id).result, listed), "a fresh fold of the stored log gives it back"


def _listed(value: Any) -> Any:
    if type(value) in (list, tuple):
        return [_listed(item) for item in value]
    if type(value) is dict:
        return {key: _listed(item) for key, item in value.items()}
    return value


def as_a_result(orch: Orchestrator, value: Any) -> None:
    run = orch.submit(call("from_pickle", packed(value)).options(retry=ONCE))
    if taken(value):
        assert same(run.result(timeout=WAIT_S), value)
        assert same(orch.state(run.id).result, value)
        return
    with pytest.raises(RunFailed) as caught:
        run.result(timeout=WAIT_S)
    assert caught.value.failures[0].type.endswith("PayloadError"), caught.value


def as_event_data(orch: Orchestrator, value: Any) -> None:
    run = orch.submit(call("emit_from_pickle", packed(value)).options(retry=ONCE))
    if taken({"v": value}):
        assert run.result(timeout=WAIT_S) is None
        (seen,) = [event for event in orch.events(run.id) if event.type == "value.seen"]
        assert same(seen.data["v"], value)
        return
    with pytest.raises(RunFailed) as caught:
        run.result(timeout=WAIT_S)
    assert caught.value.failures[0].type.endswith(("PayloadError", "InvalidEvent")), caught.value


def test_the_oracle_tells_apart_what_it_should() -> None:
    """So a property that passes is not passing because the oracle takes everything or nothing."""
    assert taken([1, "é", b"x", None, True, 1.5, datetime(2026, 1, 1, tzinfo=UTC), {"a.b": [2**40]}])
    for refused in [
        "bad\udcff",
        (1,),
        {1: 2},
        {"$x": 1},
        2**64,
        datetime(2026, 1, 1),
        nested(41),
        Text(AT_THE_LIMIT.size + 1).build(),
    ]:
        assert not taken(refused), refused
