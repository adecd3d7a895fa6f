"""Hypothesis strategies shared by the property tests: random flows and outcome plans."""

from __future__ import annotations

from datetime import UTC, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

from orchestrator.core.flows import Node, call, chord, each, encode_flow, parallel, sequence
from orchestrator.core.policy import RetryPolicy

COMMANDS: dict[str, Any] = {
    "wrap": lambda *args: list(args),
    "count": lambda *args: len(args),
    "spread": lambda *args: list(range(len(args) + 1)),
}
"""Total functions of any arguments, so every flow shape is well-typed."""

FAST_RETRY = RetryPolicy(max_attempts=3, initial_delay=timedelta(seconds=1), jitter=0.5)

small_ints = st.integers(min_value=-5, max_value=5)


@st.composite
def calls(draw: st.DrawFn) -> Node:
    node = call(draw(st.sampled_from(sorted(COMMANDS))), *draw(st.lists(small_ints, max_size=2)))
    if draw(st.booleans()):
        node = node.options(retry=FAST_RETRY)
    if draw(st.integers(0, 5)) == 0:
        node = node.si()
    return node


siblings = st.sampled_from(["finish", "cancel"])


def flows(max_leaves: int = 12) -> st.SearchStrategy[Node]:
    return st.recursive(
        calls(),
        lambda children: st.one_of(
            st.lists(children, min_size=1, max_size=4).map(lambda steps: sequence(*steps)),
            st.builds(
                lambda branches, mode: parallel(*branches, siblings=mode),
                st.lists(children, min_size=1, max_size=4),
                siblings,
            ),
            st.builds(lambda header, body: chord(header, body), st.lists(children, max_size=3), children),
            st.builds(
                lambda head, mode: sequence(head, each("wrap", siblings=mode)),
                children,
                siblings,
            ),
        ),
        max_leaves=max_leaves,
    )


def plans(flow: Node) -> st.SearchStrategy[dict[tuple[str, int], bool]]:
    """Which attempts fail: keyed by every path a node of ``flow`` (or a map's child) can have."""
    doc = encode_flow(flow)
    paths = [spec["path"] for spec in doc["nodes"] if spec["kind"] == "call"]
    paths += [f"{spec['path']}.{i}" for spec in doc["nodes"] if spec["kind"] == "each" for i in range(6)]
    keys = [(path, attempt) for path in paths for attempt in (1, 2, 3)]
    return st.dictionaries(st.sampled_from(keys), st.booleans(), max_size=len(keys)) if keys else st.just({})


# --- values at the edges of the log's type mapping ------------------------------------------------

EDGE_INTS = [
    0,
    -1,
    2**31 - 1,
    2**31,
    -(2**31),
    -(2**31) - 1,
    2**53 + 1,
    2**63 - 1,
    2**63,
    -(2**63),
    -(2**63) - 1,
]
EDGE_INTS += [2**64, -(2**64)]

texts = st.text(st.characters(exclude_categories=()), max_size=12)
"""Every plane, lone surrogates included (what ``os.fsdecode`` makes of a name that is not UTF-8)."""
keys = st.one_of(texts, st.sampled_from(["$set", "a.b", "nul\x00key", "", "k"]))
times = st.one_of(
    st.datetimes(timezones=st.just(UTC)).map(
        lambda moment: moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    ),
    st.datetimes(timezones=st.sampled_from([None, UTC, timezone(timedelta(hours=-5))])),
)
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from(EDGE_INTS),
    st.floats(),
    texts,
    st.binary(max_size=16),
    times,
)
values = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(keys, children, max_size=4),
        st.dictionaries(st.integers(0, 3), children, min_size=1, max_size=2),
        st.tuples(children),
        st.frozensets(st.integers(0, 9), max_size=3),
    ),
    max_leaves=16,
)
"""Nested values of every kind the log takes, and of kinds it refuses."""


def nested(depth: int) -> Any:
    """A list ``depth`` containers deep."""
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value
