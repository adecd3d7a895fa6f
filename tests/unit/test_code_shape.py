"""The shape the code keeps so a newcomer can see it whole: small modules, functions that fit a screen."""

from __future__ import annotations

import ast
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("orchestrator", "workers", "projections")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
MAX_MEDIAN_FUNCTION_LINES = 10


def _modules() -> list[Path]:
    return sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


def _functions(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        (
            f"{path.relative_to(ROOT)}:{node.lineno} {node.name}",
            (node.end_lineno or node.lineno) - node.lineno + 1,
        )
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    ]


def test_the_packages_hold_code_to_measure() -> None:
    assert len(_modules()) > 50
    assert sum(len(_functions(path)) for path in _modules()) > 500


def test_no_module_is_over_400_lines() -> None:
    long = {
        str(path.relative_to(ROOT)): lines
        for path in _modules()
        if (lines := path.read_text(encoding="utf-8").count("\n")) > MAX_MODULE_LINES
    }
    assert long == {}


def test_no_function_is_over_60_lines() -> None:
    long = {
        name: lines for path in _modules() for name, lines in _functions(path) if lines > MAX_FUNCTION_LINES
    }
    assert long == {}


def test_the_median_function_fits_in_ten_lines() -> None:
    lengths = [lines for path in _modules() for _, lines in _functions(path)]
    assert statistics.median(lengths) <= MAX_MEDIAN_FUNCTION_LINES
