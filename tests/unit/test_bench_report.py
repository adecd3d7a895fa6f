"""bench/report.py: the medians, the saved JSON, the ratios and the comparison the benchmark prints.

Figures are made up here, so each test knows the exact line it should get; nothing is timed.
"""

from __future__ import annotations

import json

import pytest

from bench import remote
from bench.report import (
    Row,
    compare_lines,
    describe,
    from_document,
    ratio_lines,
    summarize,
    table,
    to_document,
    wrap,
)
from bench.workloads import Results

EVENFLOW = "evenflow processes / embedded"
RAW = "raw per item"
CHUNKED = "raw chunked"
CELERY = "Celery"
BASES = (("raw/item", RAW), ("raw/chunked", CHUNKED), ("Celery", CELERY))


def _cells(line: str, system: str) -> str:
    return " ".join(line.removeprefix(system).split())


def _row(system: str, **figures: float) -> Row:
    return Row(system, {name.replace("_", " "): value for name, value in figures.items()})


def test_summarize_takes_the_median_of_each_figure_over_the_rounds() -> None:
    rounds = [
        {"W1": 0.30, "W2": 0.10, "W5 p50": 1.0},
        {"W1": 0.20, "W2": 0.50, "W5 p50": 3.0},
        {"W1": 0.25, "W2": 0.20, "W5 p50": 2.0},
    ]
    row = summarize(EVENFLOW, rounds)
    assert row.figures == {"W1": 0.25, "W2": 0.20, "W5 p50": 2.0}
    assert row.rounds == tuple(rounds)


def test_summarize_leaves_out_a_figure_no_round_measured() -> None:
    row = summarize(CHUNKED, [{"W1": 0.1, "W3": 0.2}, {"W1": 0.3, "W3": 0.4}])
    assert row.figures == {"W1": pytest.approx(0.2), "W3": pytest.approx(0.3)}


def test_summarize_refuses_no_rounds() -> None:
    with pytest.raises(ValueError, match="--rounds 1"):
        summarize(EVENFLOW, [])


def test_results_figures_are_flat_and_leave_out_an_unmeasured_w5() -> None:
    measured = Results({"W1": 0.5, "W3": 0.25}, [1.0, 2.0, 3.0])
    assert measured.figures() == {"W1": 0.5, "W3": 0.25, "W5 p50": 2.0, "W5 p99": 3.0}
    assert Results({"W1": 0.5}).figures() == {"W1": 0.5}


def test_the_saved_json_holds_every_figure_and_reads_back_to_the_same_rows() -> None:
    rows = [
        summarize(EVENFLOW, [{"W1": 0.2, "W2": 0.1, "W3": 0.3, "W4": 0.4, "W5 p50": 1.5, "W5 p99": 4.0}]),
        summarize(CHUNKED, [{"W1": 0.05, "W3": 0.02}]),
    ]
    machine = {"cpus": 2, "python": "3.11.7", "commit": "abc123", "dirty": False}
    document = to_document(rows, machine, "2025-01-02T03:04:05+00:00", 1, ["a note"])
    saved = json.loads(json.dumps(document))
    assert saved["systems"][0] == {
        "system": EVENFLOW,
        "seconds": {"W1": 0.2, "W2": 0.1, "W3": 0.3, "W4": 0.4},
        "w5_ms": {"p50": 1.5, "p99": 4.0},
        "per_round": [{"W1": 0.2, "W2": 0.1, "W3": 0.3, "W4": 0.4, "W5 p50": 1.5, "W5 p99": 4.0}],
    }
    assert saved["systems"][1]["w5_ms"] == {}
    assert (saved["machine"], saved["when"], saved["rounds"], saved["notes"]) == (
        machine, "2025-01-02T03:04:05+00:00", 1, ["a note"],
    )  # fmt: skip
    assert from_document(saved) == rows


def test_a_file_of_another_shape_is_refused_with_how_to_fix_it() -> None:
    with pytest.raises(ValueError, match="save it again with --json"):
        from_document({"systems": []})


def test_describe_names_when_which_commit_and_what_machine() -> None:
    document = {"when": "2025-01-02", "rounds": 3, "machine": {"cpus": 2, "python": "3.11.7",
                "commit": "0123456789abcdef", "dirty": True}}  # fmt: skip
    assert describe(document) == "saved 2025-01-02, 0123456789 (dirty), 2 CPUs, Python 3.11.7, 3 round(s)"


def test_compare_gives_each_figure_s_change_per_system_in_both_runs() -> None:
    old = [_row(EVENFLOW, W1=0.241, W3=0.500, W5_p50=2.0), _row("gone", W1=1.0)]
    new = [_row(EVENFLOW, W1=0.205, W3=0.550, W5_p50=1.0, W4=0.3), _row("new", W1=1.0)]
    assert compare_lines(old, new) == [
        f"{EVENFLOW}: W1 0.241 → 0.205 s (-15%), W3 0.500 → 0.550 s (+10%), W5 p50 2.000 → 1.000 ms (-50%)",
        "gone: not measured now",
        "new: not in the saved run",
    ]


def test_compare_keeps_two_significant_digits_of_a_figure_under_a_hundredth() -> None:
    assert compare_lines([_row(CHUNKED, W3=0.00123)], [_row(CHUNKED, W3=0.0025)]) == [
        f"{CHUNKED}: W3 0.0012 → 0.0025 s (+103%)"
    ]


def test_compare_of_rows_with_no_figure_in_common_says_so() -> None:
    assert compare_lines([_row(CHUNKED, W1=0.1)], [_row(CHUNKED, W2=0.1)]) == [
        f"{CHUNKED}: no figure in common"
    ]


def test_ratios_set_each_evenflow_row_beside_every_base_measured() -> None:
    rows = [
        _row(RAW, W1=0.1, W3=0.05, W5_p50=0.5),
        _row(CHUNKED, W1=0.02, W3=0.01),
        _row(CELERY, W1=2.0, W3=1.0, W5_p50=4.0),
        _row(EVENFLOW, W1=0.4, W3=0.1, W5_p50=1.0),
    ]
    assert ratio_lines(rows, BASES) == [
        f"{EVENFLOW}: W1 throughput 0.25x raw/item, 0.05x raw/chunked, 5.00x Celery; "
        "W3 throughput 0.50x raw/item, 0.10x raw/chunked, 10.00x Celery; W5 p50 2.00x raw/item, 0.25x Celery"
    ]


def test_ratios_leave_out_a_base_not_measured_and_need_at_least_one() -> None:
    evenflow = _row(EVENFLOW, W1=0.2, W3=0.1, W5_p50=1.0)
    assert ratio_lines([_row(RAW, W1=0.1, W3=0.1, W5_p50=0.5), evenflow], BASES) == [
        f"{EVENFLOW}: W1 throughput 0.50x raw/item; W3 throughput 1.00x raw/item; W5 p50 2.00x raw/item"
    ]
    assert ratio_lines([evenflow], BASES) == []


def test_a_ratio_under_a_tenth_keeps_two_significant_digits() -> None:
    rows = [_row(CHUNKED, W1=0.004, W3=0.001), _row(EVENFLOW, W1=0.5, W3=0.1)]
    assert ratio_lines(rows, BASES) == [
        f"{EVENFLOW}: W1 throughput 0.008x raw/chunked; W3 throughput 0.01x raw/chunked; W5 p50 n/a"
    ]


def test_the_table_prints_throughput_and_n_a_for_what_a_row_does_not_measure() -> None:
    rows = [
        _row(CHUNKED, W1=0.5, W3=0.25),
        _row(EVENFLOW, W1=1.0, W2=0.2, W3=0.5, W4=0.3, W5_p50=1.25, W5_p99=2.5),
    ]
    head, chunked, evenflow = table(rows, {"W1": 2000, "W3": 501})
    assert _cells(head, "") == "system W1 s W1 cmd/s W2 s W3 s W3 cmd/s W4 s W5 p50 ms W5 p99 ms"
    assert _cells(chunked, CHUNKED) == "0.500 4000 n/a 0.250 2004 n/a n/a n/a"
    assert _cells(evenflow, EVENFLOW) == "1.000 2000 0.200 0.500 1002 0.300 1.250 2.500"
    assert len({len(head), len(chunked), len(evenflow)}) == 1


def test_a_system_without_a_package_is_skipped_with_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    installed = {"zmq", "redis", "pytest"}
    monkeypatch.setattr(remote.importlib.util, "find_spec", lambda name: name if name in installed else None)
    expected = "celery not measured: no Python package celery (pip install -e '.[celery,test]')"
    assert remote.missing("celery") == expected
    assert remote.missing("zmq") is None
    assert remote.missing("service") is None  # the service needs no redis-server
    installed.discard("zmq")
    assert (
        remote.missing("service") == "service not measured: no Python package zmq (pip install -e '.[zmq]')"
    )


def test_a_long_line_wraps_only_between_figures() -> None:
    line = "system: W1 0.197 → 0.171 s (-13%), W2 0.052 → 0.057 s (+8%), W3 0.069 → 0.041 s (-40%)"
    assert wrap(line, 60) == [
        "system: W1 0.197 → 0.171 s (-13%), W2 0.052 → 0.057 s (+8%),",
        "    W3 0.069 → 0.041 s (-40%)",
    ]
    assert wrap("short; line", 60) == ["short; line"]
