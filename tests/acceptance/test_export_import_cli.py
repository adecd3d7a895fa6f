"""``evenflow export`` and ``evenflow import`` through the real CLI, on a home of real runs.

Export → import into an empty home → every reader (``runs``, ``status``,
``audit`` of a chain, ``stats``, ``failures``) prints the same JSON; export of
the copy is the same bytes; importing again changes nothing. The choices
(``--run``, ``--flow``, ``--since``) hold exactly their runs; a damaged, gapped
or conflicting file is refused in one line naming its line, and the lines
before it stay imported; a file of a run's later events continues it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator.cli import _parser
from tests.acceptance.test_cli import evenflow
from tests.support.exchange_homes import Home, build


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Home:
    return build(tmp_path_factory.mktemp("source") / "home")


@pytest.fixture(scope="module")
def exported(source: Home, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "all.jsonl"
    done = evenflow("export", "--out", str(out), home=source.path)
    assert done.returncode == 0 and done.stdout == "", done.stderr
    return out


def ok(*args: str, home: Path) -> Any:
    done = evenflow(*args, home=home)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if "--json" in args else done.stdout


def refused(*args: str, home: Path) -> str:
    """The one line a refused command prints; exit 2 and no traceback."""
    done = evenflow(*args, home=home)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr, done.stderr
    return done.stderr


def answers(home: Path, runs: list[str]) -> dict[str, Any]:
    """What every reader says about ``home``: the run list, stats, failures, each run's status and audit."""
    found = {name: ok(name, "--json", home=home) for name in ("stats", "failures")}
    found["runs"] = ok("runs", "--limit", "1000", "--json", home=home)
    for run in runs:
        found[f"status {run}"] = ok("status", run, "--json", home=home)
        found[f"audit {run}"] = ok("audit", run, "--json", home=home)  # an orders run: its chain too
    return found


def listed(home: Path) -> list[str]:
    return [row["run"] for row in ok("runs", "--limit", "1000", "--json", home=home)["runs"]]


def test_export_then_import_into_an_empty_home_answers_every_reader_the_same(
    source: Home, exported: Path, tmp_path: Path
) -> None:
    copy, again = tmp_path / "copy", tmp_path / "again.jsonl"
    lines = exported.read_bytes().splitlines()
    assert len({json.loads(line)["run"] for line in lines}) == source.runs
    assert ok("import", str(exported), home=copy).startswith(f"imported {len(lines)} event(s) of 7 run(s)")
    before = answers(source.path, source.orders)
    assert answers(copy, source.orders) == before
    ok("export", "--out", str(again), home=copy)
    assert again.read_bytes() == exported.read_bytes()
    imported = ok("import", str(exported), "--json", home=copy)  # again: nothing changes
    assert imported == {"file": str(exported), "events": len(lines), "runs": source.runs}
    assert answers(copy, source.orders) == before
    assert ok("export", home=copy).encode() == exported.read_bytes()  # standard output, the same bytes


def test_export_reads_the_store_and_writes_nothing_to_it(source: Home, tmp_path: Path) -> None:
    journal = source.path / "events.sqlite3"
    digest = hashlib.sha256(journal.read_bytes()).hexdigest()
    out = tmp_path / "out.jsonl"
    ok("export", "--out", str(out), home=source.path)
    assert hashlib.sha256(journal.read_bytes()).hexdigest() == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]  # no .partial left behind


def runs_in(text: str) -> list[str]:
    """The runs of an export in the order they first appear."""
    return list(dict.fromkeys(json.loads(line)["run"] for line in text.splitlines()))


def test_run_flow_and_since_export_exactly_their_runs(source: Home) -> None:
    home, orders = source.path, source.orders
    assert runs_in(ok("export", "--run", orders[1], home=home)) == [orders[1]]
    assert sorted(runs_in(ok("export", "--flow", "orders", home=home))) == sorted(orders)
    assert ok("export", "--flow", "nothing-by-this-name", home=home) == ""
    rows = ok("runs", "--limit", "1000", "--json", home=home)["runs"]  # newest first
    since = rows[2]["submitted_at"]
    chosen = ok("export", "--since", since, home=home)
    assert runs_in(chosen) == [row["run"] for row in rows if row["submitted_at"] >= since]
    assert len(runs_in(chosen)) >= 3


def test_an_unknown_run_or_a_missing_file_is_one_line(source: Home, tmp_path: Path) -> None:
    assert "no run 'nope' in this store" in refused("export", "--run", "nope", home=source.path)
    assert "cannot read" in refused("import", str(tmp_path / "missing.jsonl"), home=tmp_path / "h")
    assert "cannot write" in refused("export", "--out", str(tmp_path / "no" / "x"), home=source.path)


def write(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


@pytest.mark.parametrize("damage", ["truncated", "garbled", "not an event"])
def test_a_damaged_line_is_refused_by_number_and_the_lines_before_stay(
    source: Home, exported: Path, tmp_path: Path, damage: str
) -> None:
    lines = exported.read_bytes().splitlines()
    first = runs_in(exported.read_text())[0]
    cut = next(i for i, line in enumerate(lines) if json.loads(line)["run"] != first)  # a run's first line
    wrong = b'{"run": "x", "seq": "one", "type": "run.submitted", "at": null}'
    bad = {"truncated": lines[cut][: len(lines[cut]) // 2], "garbled": b"{not json", "not an event": wrong}[
        damage
    ]
    rest = [] if damage == "truncated" else lines[cut + 1 :]
    copy = tmp_path / "copy"
    error = refused("import", str(write(tmp_path / "bad.jsonl", [*lines[:cut], bad, *rest])), home=copy)
    assert f"line {cut + 1} is not an event of evenflow's export format" in error
    assert listed(copy) == [first]
    assert ok("export", home=copy).encode().splitlines() == lines[:cut]


def test_a_gap_in_a_run_is_refused_naming_the_line_run_and_fix(
    source: Home, exported: Path, tmp_path: Path
) -> None:
    run = source.orders[0]
    lines = [line for line in exported.read_bytes().splitlines() if json.loads(line)["run"] == run]
    error = refused(
        "import", str(write(tmp_path / "gap.jsonl", [*lines[:4], *lines[5:]])), home=tmp_path / "c"
    )
    assert f"line 5: run {run} goes from seq 4 to 6" in error and f"evenflow export --run {run}" in error
    assert len(ok("export", home=tmp_path / "c").splitlines()) == 4


def test_an_event_the_store_holds_otherwise_is_refused_naming_the_line(
    source: Home, exported: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "copy"
    ok("import", str(exported), home=copy)
    lines = exported.read_bytes().splitlines()
    changed = json.loads(lines[6])
    changed["by"] = "someone else"
    edited = write(tmp_path / "edited.jsonl", [*lines[:6], json.dumps(changed).encode(), *lines[7:]])
    error = refused("import", str(edited), home=copy)
    assert f"line 7: run {changed['run']} already holds a different event at seq {changed['seq']}" in error
    assert ok("export", home=copy).encode().splitlines() == lines  # nothing altered


def test_a_file_of_a_runs_later_events_continues_it_and_alone_is_refused(
    source: Home, tmp_path: Path
) -> None:
    run = source.orders[2]
    lines = ok("export", "--run", run, home=source.path).encode().splitlines()
    head, tail = write(tmp_path / "head.jsonl", lines[:5]), write(tmp_path / "tail.jsonl", lines[5:])
    error = refused("import", str(tail), home=tmp_path / "empty")
    assert f"line 1: run {run} starts at seq 6 in the file but the store holds none of its events" in error
    ok("import", str(head), home=tmp_path / "copy")
    ok("import", str(tail), home=tmp_path / "copy")
    assert ok("export", home=tmp_path / "copy").encode().splitlines() == lines
    status = ok("status", run, "--json", home=tmp_path / "copy")
    assert status == ok("status", run, "--json", home=source.path)


def test_export_help_documents_the_format_and_both_commands_name_their_defaults() -> None:
    usage = ok("export", "--help", home=Path("unused"))
    for field in ("_id", "v", "run", "seq", "type", "at", "node", "attempt", "command", "data", "by",
                  "causation", "correlation", '"$date"', '"$bytes"', '"$float"', "stable"):  # fmt: skip
        assert field in usage, field
    assert "--json" not in usage  # its output is JSON already
    assert "--json" in ok("import", "--help", home=Path("unused"))
    commands = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name in ("export", "import"):
        for action in commands.choices[name]._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"evenflow {name} {action.dest} has no help"
            if action.default not in (None, False) and not action.required:
                assert "default" in action.help, f"evenflow {name} {action.dest}: no default in its help"
