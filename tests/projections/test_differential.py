"""Differential: on logs the engine really wrote, every pipeline answers what ``reference.py`` computes.

Each example runs a few random flows through an ``Orchestrator`` on its own
mongomock store: commands that fail on the attempts their arguments name,
zero-delay retries and dynamic expansions, sent to three routes — inline, an
inline worker that reports every outcome twice (``outcome.ignored``), and one
that refuses all work (attempts lost, with no ``started_at``). The stored
documents then go into ``events_collection`` (a server's, in the real-server
lane) in a random order, and each projection over a random window is compared
with the plain-Python answer over the same documents.
"""

from __future__ import annotations

import contextlib
import copy
import math
import random
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator import (
    Orchestrator,
    Registry,
    RetryPolicy,
    RunFailed,
    call,
    current_call,
    parallel,
    sequence,
)
from orchestrator.core.envelope import Envelope, Outcome
from orchestrator.core.flows import Node
from orchestrator.store import open_store
from orchestrator.store.mongo import MongoStore
from projections.audit import audit_chain, audit_trail
from projections.command_stats import CommandStats, command_stats
from projections.failures import failures
from projections.throughput import throughput
from projections.worker_activity import worker_activity
from workers.inline import InlineExecutor

from . import reference

ERRORS: dict[str, type[Exception]] = {"value": ValueError, "connection": ConnectionError, "key": KeyError}
SECOND_WORKER = "host-b:7/inline"


def work(*args: Any, fails: Sequence[int] = (), error: str = "value") -> int:
    """Fail on the attempts ``fails`` names, with the error ``error`` names; else count the arguments."""
    context = current_call()
    if context is not None and context.attempt in fails:
        raise ERRORS[error](f"attempt {context.attempt} fails as planned")
    return len(args)


def fanout(*args: Any, n: int = 2, fails: Sequence[int] = (), child_fails: Sequence[int] = ()) -> Node:
    """Expand into ``n`` parallel calls (or fail first, like any command)."""
    work(fails=fails)
    return parallel(*[call("email", fails=list(child_fails)) for _ in range(n)])


class TwiceInline(InlineExecutor):
    """Reports every outcome twice, as at-least-once delivery may; the engine logs the second as ignored."""

    def _deliver(self, outcome: Outcome) -> None:
        super()._deliver(outcome)
        super()._deliver(outcome)


class Refusing(InlineExecutor):
    """Takes nothing: the engine ends each attempt sent here as lost, under its own name."""

    def _dispatch(self, registry: Registry, envelopes: list[Envelope]) -> None:
        raise ConnectionError("no worker will take it")


def registry() -> Registry:
    commands = Registry()
    for name in ("charge", "email", "ship"):
        commands.register(name, work)
    commands.register("fanout", fanout)
    return commands


RETRIES = (
    None,
    RetryPolicy(max_attempts=2, initial_delay=timedelta(0)),
    RetryPolicy(max_attempts=3, initial_delay=timedelta(0)),
)
attempts = st.lists(st.integers(1, 3), unique=True, max_size=3)


@st.composite
def leaves(draw: st.DrawFn) -> Node:
    fails = draw(attempts)
    if draw(st.integers(0, 4)) == 0:
        node = call("fanout", n=draw(st.integers(1, 3)), fails=fails, child_fails=draw(attempts))
    else:
        name = draw(st.sampled_from(["charge", "email", "ship"]))
        node = call(name, fails=fails, error=draw(st.sampled_from(sorted(ERRORS))))
    retry = draw(st.sampled_from(RETRIES))
    if retry is not None:
        node = node.options(retry=retry)
    route = draw(st.sampled_from([None, None, "twice", "twice", "refusing"]))
    return node if route is None else node.options(route=route)


flows = st.recursive(
    leaves(),
    lambda children: st.one_of(
        st.lists(children, min_size=1, max_size=3).map(lambda steps: sequence(*steps)),
        st.builds(
            lambda branches, mode: parallel(*branches, siblings=mode),
            st.lists(children, min_size=1, max_size=3),
            st.sampled_from(["finish", "cancel"]),
        ),
    ),
    max_leaves=6,
)


def record(runs: list[Node]) -> list[dict[str, Any]]:
    """The documents the engine stores for ``runs``, run one after another."""
    store = open_store("mongomock://")
    assert isinstance(store, MongoStore)
    twice = TwiceInline()
    twice.by = SECOND_WORKER
    routes = {"twice": twice, "refusing": Refusing()}
    with Orchestrator(registry(), executor="inline", executors=routes, store=store) as orchestrator:
        for flow in runs:
            with contextlib.suppress(RunFailed):
                orchestrator.run(flow, timeout=30)
        return list(store.events.find())


def same_stats(got: list[CommandStats], want: list[CommandStats]) -> bool:
    """Equal, but for a mean a server may sum in another order: both means are rounded to the
    microsecond, and a sum that differs in its last bit can round the sixth digit the other way, so
    the two may be a microsecond (plus float noise) apart. The p95 comes from a histogram: within
    its documented bound of the reference's exact one."""
    if [(s.command, s.mean_duration_s is None) for s in got] != [
        (s.command, s.mean_duration_s is None) for s in want
    ]:
        return False
    means_close = all(
        math.isclose(a.mean_duration_s, b.mean_duration_s, abs_tol=2e-6)
        for a, b in zip(got, want, strict=True)
        if a.mean_duration_s is not None and b.mean_duration_s is not None
    )
    p95s_close = all(
        reference.p95_within_bound(a.p95_duration_s, b.p95_duration_s, b.max_duration_s)
        for a, b in zip(got, want, strict=True)
    )
    plain = [CommandStats(**{**_fields(s), **APPROXIMATE}) for s in got]
    exact = [CommandStats(**{**_fields(s), **APPROXIMATE}) for s in want]
    return means_close and p95s_close and plain == exact


APPROXIMATE = {"mean_duration_s": None, "p95_duration_s": None}


def _fields(stats: CommandStats) -> dict[str, Any]:
    return {name: getattr(stats, name) for name in CommandStats.__dataclass_fields__}


def pick(moments: list[datetime], percent: int | None) -> datetime | None:
    """A window bound at ``percent`` of the way through the log's distinct times (100: past the end).

    Drawn as a percentage, not from the log, because the log's times differ from
    one run of an example to the next and Hypothesis needs the same draws each time.
    """
    if percent is None:
        return None
    spots = [*moments, moments[-1] + timedelta(milliseconds=1)]
    return spots[percent * (len(spots) - 1) // 100]


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    runs=st.lists(flows, min_size=1, max_size=3),
    since_at=st.none() | st.integers(0, 100),
    until_at=st.none() | st.integers(0, 100),
    bucket=st.sampled_from([timedelta(milliseconds=n) for n in (1, 3, 1000, 3_600_000)]),
    seed=st.integers(0, 2**32 - 1),
)
def test_every_pipeline_agrees_with_the_reference(
    events_collection: Any,
    runs: list[Node],
    since_at: int | None,
    until_at: int | None,
    bucket: timedelta,
    seed: int,
) -> None:
    docs = record(runs)
    shuffled = copy.deepcopy(docs)
    random.Random(seed).shuffle(shuffled)
    events_collection.delete_many({})
    events_collection.insert_many(shuffled)
    moments = sorted({doc["at"] for doc in docs})
    since, until = pick(moments, since_at), pick(moments, until_at)

    for run in sorted({doc["run"] for doc in docs}):
        assert audit_trail(events_collection, run) == reference.audit(docs, run)
        assert audit_chain(events_collection, run) == reference.audit_chain(docs, run)
    assert same_stats(
        command_stats(events_collection, since, until), reference.command_stats(docs, since, until)
    )
    assert failures(events_collection, since, until) == reference.failures(docs, since, until)
    for completions in (False, True):
        assert throughput(
            events_collection, since, until, bucket, completions=completions
        ) == reference.throughput(docs, since, until, bucket, completions=completions)
    assert worker_activity(events_collection, since, until) == reference.worker_activity(docs, since, until)
