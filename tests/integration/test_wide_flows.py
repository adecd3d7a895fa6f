"""Wide fan-outs through the engine: a chord or map of many calls goes out in slices of bounded
turns, and still computes exactly what evaluating it directly gives."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator import Orchestrator, Registry, RunFailed, call, chord, each, parallel, sequence
from orchestrator.core import events as ev
from orchestrator.core.events import Event
from orchestrator.engine import journal
from orchestrator.store.memory import MemoryStore

SLICE = 7
"""``MAX_DRAFTS`` while these tests run: small, so a few dozen calls take several turns."""


class BatchStore(MemoryStore):
    """Keeps each append's events, to see how the engine cut its turns."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[Event]] = []

    def append(self, events: Sequence[Event]) -> None:
        super().append(events)
        self.batches.append(list(events))


def registry() -> Registry:
    commands = Registry()
    commands.register("square", lambda i: i * i)
    commands.register("total", sum)
    commands.register("upto", lambda n: list(range(n)))
    commands.register("fails_on", lambda i, bad: i if i not in bad else 1 / 0)
    return commands


@pytest.fixture(scope="module")
def orch() -> Iterator[Orchestrator]:
    with (
        pytest.MonkeyPatch.context() as patch,
        Orchestrator(registry(), executor="inline", store=BatchStore()) as orchestrator,
    ):
        patch.setattr(journal, "MAX_DRAFTS", SLICE)
        yield orchestrator


def dispatched(batch: list[Event], run: str) -> int:
    return sum(1 for event in batch if event.run == run and event.type == ev.COMMAND_DISPATCHED)


def test_a_wide_chord_is_dispatched_a_slice_per_turn(orch: Orchestrator) -> None:
    width = 5 * SLICE + 3
    run = orch.submit(chord([call("square", i) for i in range(width)], call("total")))
    assert run.result(timeout=60) == sum(i * i for i in range(width))
    assert isinstance(orch.store, BatchStore)
    per_batch = [n for batch in orch.store.batches if (n := dispatched(batch, run.id))]
    assert max(per_batch) <= SLICE  # a turn holds a slice of the fan-out, never all of it
    assert sum(per_batch) == width + 1  # every header call, then the body
    assert len(per_batch) >= width // SLICE


def test_a_wide_map_is_dispatched_a_slice_per_turn(orch: Orchestrator) -> None:
    width = 4 * SLICE + 1
    run = orch.submit(sequence(call("upto", width), each("square"), call("total")))
    assert run.result(timeout=60) == sum(i * i for i in range(width))
    assert isinstance(orch.store, BatchStore)
    assert max(dispatched(batch, run.id) for batch in orch.store.batches) <= SLICE


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    width=st.integers(0, 6 * SLICE),
    kind=st.sampled_from(["chord", "map", "parallel"]),
    bad=st.sets(st.integers(0, 6 * SLICE), max_size=2),
)
def test_a_fan_out_of_any_width_gives_what_evaluating_it_directly_gives(
    orch: Orchestrator, width: int, kind: str, bad: set[int]
) -> None:
    bad = {i for i in bad if i < width}
    items = list(range(width))
    if kind == "chord":
        flow = chord([call("fails_on", i, sorted(bad)) for i in items], call("total"))
        expected: object = sum(items)
    elif kind == "map":
        flow = sequence(call("upto", width), each("fails_on", sorted(bad)), call("total"))
        expected = sum(items)
    else:
        flow = parallel([call("square", i) for i in items]) if items else chord([], call("total"))
        expected = [i * i for i in items] if items else 0
    run = orch.submit(flow)
    if bad and kind != "parallel":
        with pytest.raises(RunFailed) as failed:
            run.result(timeout=60)
        # siblings finish by default: every failing item is named, and only those
        assert {int(failure.node.rsplit(".", 1)[1]) for failure in failed.value.failures} == bad
    else:
        assert run.result(timeout=60) == expected
