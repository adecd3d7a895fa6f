"""How `evenflow` logs: a line per run state change at info; with --log-format json, one object a record."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from orchestrator.cli.logs import JsonFormatter, TextFormatter
from orchestrator.core.logfields import FIELDS, fields

from .test_cli import evenflow


def test_info_prints_one_line_per_run_state_change(tmp_path: Path) -> None:
    done = evenflow("demo", "--json", "--log-level", "info", home=tmp_path / "home")
    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout)["run"]
    lines = [line for line in done.stderr.splitlines() if "evenflow.runs" in line]
    assert len(lines) == 2, done.stderr
    assert lines[0].endswith(f"run {run} (demo) submitted [run={run}]")
    assert lines[1].endswith(f"run {run} succeeded [run={run}]")


def test_the_default_level_prints_nothing_for_a_run_that_goes_well(tmp_path: Path) -> None:
    done = evenflow("demo", "--json", home=tmp_path / "home")
    assert done.returncode == 0 and done.stderr == ""


def test_json_format_prints_one_object_per_record_with_the_run(tmp_path: Path) -> None:
    done = evenflow("demo", "--json", "--log-level", "info", "--log-format", "json", home=tmp_path / "home")
    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout)["run"]
    records = [json.loads(line) for line in done.stderr.splitlines()]
    states = [r for r in records if r["logger"] == "evenflow.runs"]
    assert [r["message"].split()[-1] for r in states] == ["submitted", "succeeded"]
    assert all(r["run"] == run and r["level"] == "info" for r in states)
    assert all(set(FIELDS) <= set(r) for r in records)


def test_a_failed_run_names_its_first_failure(user_code: Path, home: Path) -> None:
    args = ("run", "myflows:broken", "--registry", "myflows:registry", "--log-level", "info")
    done = evenflow(*args, home=home, cwd=user_code)
    assert done.returncode == 1
    ended = [line for line in done.stderr.splitlines() if "evenflow.runs" in line][-1]
    assert " failed: node r.1 builtins.KeyError: 'no such key 2'" in ended


def test_a_bad_argument_logs_no_run(tmp_path: Path) -> None:
    done = evenflow("run", "no_such_module:flow", "--log-level", "info", home=tmp_path / "home")
    assert done.returncode == 2
    assert "evenflow.runs" not in done.stderr


def _record(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord("evenflow.engine", logging.ERROR, __file__, 1, "run %s broke", ("r1",), None)
    record.__dict__.update(extra)
    return record


def test_formatters_print_the_fields_a_record_carries_and_only_those() -> None:
    text = TextFormatter().format(_record(**fields("r1", "r.0", 2, "w1")))
    assert text.endswith("run r1 broke [run=r1 node=r.0 attempt=2 worker=w1]")
    assert TextFormatter().format(_record()).endswith("run r1 broke")
    doc = json.loads(JsonFormatter().format(_record(**fields("r1", attempt=3))))
    assert (doc["run"], doc["node"], doc["attempt"], doc["worker"]) == ("r1", None, 3, None)
    assert doc["message"] == "run r1 broke" and doc["level"] == "error"
