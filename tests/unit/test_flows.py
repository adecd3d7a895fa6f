"""Flows are checked when built and submitted, with the path, the limit and the fix in the error."""

from __future__ import annotations

import functools
from datetime import timedelta

import pytest

from orchestrator import InvalidFlow, InvalidOption, PayloadError, Registry, RetryPolicy, UnknownCommand
from orchestrator.core.flow_check import FlowChecker
from orchestrator.core.flow_docs import decode_flow, parse_flow
from orchestrator.core.flows import MAX_DEPTH, call, chord, each, encode_flow, parallel, sequence


def registry() -> Registry:
    commands = Registry()
    commands.register("inc", lambda x: x + 1)
    commands.register("square", lambda x: x * x)
    commands.register("total", sum, retry=RetryPolicy(max_attempts=2), timeout=timedelta(seconds=3))
    return commands


def checker(pickle_routes: frozenset[str] = frozenset()) -> FlowChecker:
    return FlowChecker(registry(), {"default", "procs"}, lambda route: route in pickle_routes)


def test_flat_form_round_trips_every_node_kind() -> None:
    flow = sequence(
        call("inc", 1).options(retry=RetryPolicy(), timeout=timedelta(seconds=2), key="k"),
        parallel(call("square"), call("square").si(), siblings="cancel"),
        chord([], call("total")),
        each("inc"),
    )
    assert decode_flow(encode_flow(flow)) == flow


@pytest.mark.parametrize(
    ("build", "words"),
    [
        (lambda: sequence(), "at least one"),
        (lambda: parallel([]), "at least one"),
        (lambda: sequence(call("inc"), "inc"), "takes flow nodes"),
        (lambda: chord(call("inc"), call("total")), "header must be a list"),
        (lambda: each(call("inc").si()), "cannot be immutable"),
    ],
)
def test_malformed_flows_are_refused_when_built(build, words: str) -> None:
    with pytest.raises(InvalidFlow, match=words):
        build()


def test_too_deep_flows_name_the_path_and_the_limit() -> None:
    flow = call("inc")
    for _ in range(MAX_DEPTH + 1):
        flow = sequence(flow)
    with pytest.raises(InvalidFlow) as caught:
        encode_flow(flow)
    assert str(MAX_DEPTH) in str(caught.value)
    assert caught.value.path and caught.value.path.startswith("r.0.0")


def test_bad_options_are_refused_with_the_fix() -> None:
    with pytest.raises(InvalidOption, match="timedelta"):
        call("inc").options(timeout=5)  # type: ignore[arg-type]
    with pytest.raises(InvalidOption, match="siblings"):
        parallel(call("inc"), siblings="later")  # type: ignore[arg-type]
    with pytest.raises(InvalidOption, match="not valid"):
        call("bad name!")


def test_unknown_commands_are_named_with_close_matches_and_path() -> None:
    with pytest.raises(UnknownCommand) as caught:
        checker().encode(sequence(call("inc", 1), parallel(call("sqaure"))))
    assert caught.value.path == "r.1.0"
    assert caught.value.close_matches == ["square"]
    assert "did you mean 'square'" in str(caught.value)


def test_arguments_bson_would_change_are_refused_with_their_path() -> None:
    with pytest.raises(PayloadError) as caught:
        checker().encode(sequence(call("inc", 1), call("inc", {"tags": {1, 2}})))
    assert "node r.1 (inc) args[0]['tags']" in str(caught.value)
    assert "list" in str(caught.value)


def test_tuples_in_call_arguments_become_lists_before_anything_is_stored() -> None:
    """Args are read by position, so a tuple there loses nothing as a list (results still refuse them)."""
    node = call("inc", (1, (2, 3)), [4, (5,)], {"k": (6,)}, opt=(7, 8))
    assert node.args == ([1, [2, 3]], [4, [5]], {"k": [6]})
    assert node.kwargs == {"opt": [7, 8]}
    spec = checker().encode(node)["nodes"][0]
    assert spec["args"] == [[1, [2, 3]], [4, [5]], {"k": [6]}] and spec["kwargs"] == {"opt": [7, 8]}


def test_registry_defaults_are_resolved_into_the_stored_flow() -> None:
    doc = checker().encode(sequence(call("inc", 1), call("total").options(timeout=timedelta(seconds=9))))
    specs = {spec["path"]: spec for spec in doc["nodes"]}
    assert specs["r.1"]["retry"]["max_attempts"] == 2
    assert specs["r.1"]["timeout_s"] == 9.0
    assert specs["r.0"]["retry"] is None


def test_unknown_routes_are_refused() -> None:
    with pytest.raises(InvalidOption, match="'gpu'"):
        checker().encode(call("inc", 1).options(route="gpu"))


def test_commands_that_cannot_reach_a_child_process_are_refused_at_submission() -> None:
    with pytest.raises(InvalidOption) as caught:
        checker(frozenset({"procs"})).encode(call("inc", 1).options(route="procs"))
    assert "cannot be sent to a child process" in str(caught.value)
    assert "threads://" in str(caught.value)
    checker(frozenset({"procs"})).encode(call("total", [1]).options(route="procs"))  # builtins pickle


def test_any_callable_registers() -> None:
    class Square:
        def __call__(self, x: int) -> int:
            return x * x

        def method(self, x: int) -> int:
            return x

    async def fetch(url: str) -> str:
        return url

    commands = Registry()
    for name, fn in [
        ("a", lambda: 1),
        ("b", Square()),
        ("c", Square().method),
        ("d", functools.partial(pow, 2)),
        ("e", fetch),
        ("f", sum),
    ]:
        assert commands.register(name, fn) is fn
    assert commands.names() == ["a", "b", "c", "d", "e", "f"]
    with pytest.raises(InvalidOption, match="not callable"):
        commands.register("g", 42)  # type: ignore[arg-type]
    with pytest.raises(InvalidOption, match="already registered"):
        commands.register("a", lambda: 2)


BAD_OPTIONS = {
    "an infinite timeout": {"timeout_s": float("inf")},
    "a NaN timeout": {"timeout_s": float("nan")},
    "a negative timeout": {"timeout_s": -1},
    "a timeout past a year": {"timeout_s": 1e300},
    "an infinite retry delay": {"retry": {"initial_delay_s": float("inf")}},
    "a delay past a year": {"retry": {"max_delay_s": 1e12}},
    "attempts beyond 64 bits": {"retry": {"max_attempts": 2**70}},
    "a NaN backoff": {"retry": {"backoff": float("nan")}},
    "a key that is not Unicode": {"key": "k\udcff"},
    "a route that is not Unicode": {"route": "r\udcff"},
    "an exception name that is not Unicode": {"retry": {"retry_on": ["x\udcff"]}},
    "immutable not a bool": {"immutable": "yes"},
}


@pytest.mark.parametrize("fields", list(BAD_OPTIONS.values()), ids=list(BAD_OPTIONS))
def test_a_json_flows_bad_option_is_refused_by_name(fields: dict[str, object]) -> None:
    """Whatever a JSON flow holds becomes our error naming the option, never another exception."""
    node = {"path": "r", "kind": "call", "command": "noop", **fields}
    with pytest.raises((InvalidOption, InvalidFlow)) as caught:
        parse_flow({"root": "r", "nodes": [node]})
    options = ("timeout", "delay", "attempts", "backoff", "key", "route", "retry_on", "immutable")
    assert any(name in str(caught.value) for name in options), caught.value


def test_a_python_timeout_or_delay_past_a_year_is_refused() -> None:
    with pytest.raises(InvalidOption, match="366 days"):
        call("noop").options(timeout=timedelta(days=400))
    with pytest.raises(InvalidOption, match="366 days"):
        RetryPolicy(max_delay=timedelta(days=400))


def test_a_chord_too_wide_to_submit_at_all_is_told_to_be_a_map(monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.core import submitting
    from orchestrator.core.submitting import WIDE_FLOW, Submission

    monkeypatch.setattr(submitting, "MAX_SUBMISSION_BYTES", 1_000_000)  # 256 MiB in miniature
    doc = encode_flow(chord([call("square", i) for i in range(WIDE_FLOW)], call("total")))
    with pytest.raises(
        PayloadError, match=rf"stores {WIDE_FLOW + 3:,} nodes; map a command .* \(each\(\.\.\.\)\)"
    ):
        Submission.of(doc)
    narrow = encode_flow(sequence(call("square", "x" * 1_000_000)))
    with pytest.raises(PayloadError) as caught:
        Submission.of(narrow)
    assert "each(" not in str(caught.value)  # a narrow flow is too large for its data, not its width
