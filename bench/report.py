"""The benchmark's figures as values: the median over rounds, the saved JSON, the ratios and the
comparison with a saved run. Pure (no timing, no I/O) so the unit tests can pin every line it prints.

A row's figures are flat: ``W1``-``W4`` in seconds, ``W5 p50`` and ``W5 p99`` in milliseconds. A
figure a system does not measure is absent and printed as n/a.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

SCHEMA = 1
SECONDS = ("W1", "W2", "W3", "W4")
LATENCY_MS = {"W5 p50": "p50", "W5 p99": "p99"}
FIGURES = (*SECONDS, *LATENCY_MS)


@dataclass(frozen=True)
class Row:
    """One system: the median of each figure over its rounds, and the rounds themselves."""

    system: str
    figures: Mapping[str, float]
    rounds: tuple[Mapping[str, float], ...] = field(default=())


def summarize(system: str, rounds: Sequence[Mapping[str, float]]) -> Row:
    """The median per figure, so one slow round on a busy machine does not make the row."""
    if not rounds:
        raise ValueError(f"{system}: no rounds measured; pass --rounds 1 or more")
    names = [name for name in FIGURES if any(name in one for one in rounds)]
    figures = {name: statistics.median(one[name] for one in rounds if name in one) for name in names}
    return Row(system, figures, tuple(dict(one) for one in rounds))


def to_document(
    rows: Sequence[Row], machine: Mapping[str, Any], when: str, rounds: int, notes: Sequence[str] = ()
) -> dict[str, Any]:
    """What ``--json`` saves: every figure, the machine it ran on and when."""
    return {
        "schema": SCHEMA,
        "when": when,
        "rounds": rounds,
        "machine": dict(machine),
        "notes": list(notes),
        "systems": [_row_document(row) for row in rows],
    }


def _row_document(row: Row) -> dict[str, Any]:
    return {
        "system": row.system,
        "seconds": {name: row.figures[name] for name in SECONDS if name in row.figures},
        "w5_ms": {key: row.figures[name] for name, key in LATENCY_MS.items() if name in row.figures},
        "per_round": [dict(one) for one in row.rounds],
    }


def from_document(document: Mapping[str, Any]) -> list[Row]:
    """The rows of a saved run; refuses a file of another shape rather than comparing nonsense."""
    if document.get("schema") != SCHEMA or not isinstance(document.get("systems"), list):
        raise ValueError(f"not a bench/run.py --json file of schema {SCHEMA}: save it again with --json")
    return [_row_from(entry) for entry in document["systems"]]


def _row_from(entry: Mapping[str, Any]) -> Row:
    figures = {**entry.get("seconds", {})}
    figures.update({name: entry["w5_ms"][key] for name, key in LATENCY_MS.items() if key in entry["w5_ms"]})
    rounds = tuple(dict(one) for one in entry.get("per_round", ()))
    return Row(entry["system"], figures, rounds)


def describe(document: Mapping[str, Any]) -> str:
    """A saved run in one line: when, which commit, what machine, so a reader can trust the change."""
    machine = document.get("machine", {})
    commit = (machine.get("commit") or "commit unknown")[:10] + (" (dirty)" if machine.get("dirty") else "")
    return (
        f"saved {document.get('when')}, {commit}, {machine.get('cpus')} CPUs, "
        f"Python {machine.get('python')}, {document.get('rounds')} round(s)"
    )


def table(rows: Sequence[Row], commands: Mapping[str, int]) -> list[str]:
    """The table: seconds per workload, commands per second for W1 and W3, W5 in milliseconds."""
    width = max([len("system"), *(len(row.system) for row in rows)])
    head = f"{'system':{width}} {'W1 s':>7} {'W1 cmd/s':>9} {'W2 s':>7} {'W3 s':>7} {'W3 cmd/s':>9} "
    lines = [head + f"{'W4 s':>7} {'W5 p50 ms':>10} {'W5 p99 ms':>10}"]
    for row in rows:
        f = row.figures
        cells = [_cell(f, "W1", 7, ".3f"), _rate(f, "W1", commands), _cell(f, "W2", 7, ".3f")]
        cells += [_cell(f, "W3", 7, ".3f"), _rate(f, "W3", commands), _cell(f, "W4", 7, ".3f")]
        cells += [_cell(f, "W5 p50", 10, ".3f"), _cell(f, "W5 p99", 10, ".3f")]
        lines.append(f"{row.system:{width}} " + " ".join(cells))
    return lines


def _cell(figures: Mapping[str, float], name: str, width: int, spec: str) -> str:
    return f"{figures[name]:{width}{spec}}" if name in figures else f"{'n/a':>{width}}"


def _rate(figures: Mapping[str, float], name: str, commands: Mapping[str, int]) -> str:
    return f"{commands[name] / figures[name]:9.0f}" if name in figures else f"{'n/a':>9}"


def ratio_lines(rows: Sequence[Row], bases: Sequence[tuple[str, str]], prefix: str = "evenflow") -> list[str]:
    """Each evenflow row beside each base row present, as ``(label, system)`` pairs.

    Throughput (W1, W3) is the base's seconds over the row's, so 0.50x means half the base's
    commands per second; W5 p50 is the row's over the base's, so 3.0x means three times slower.
    """
    found = {row.system: row for row in rows}
    present = [(label, found[system]) for label, system in bases if system in found]
    if not present:
        return []
    return [_ratios(row, present) for row in rows if row.system.startswith(prefix)]


def _ratios(row: Row, bases: Sequence[tuple[str, Row]]) -> str:
    parts = []
    for name in ("W1", "W3"):
        each = [f"{_times(base.figures[name] / row.figures[name])} {label}" for label, base in bases
                if name in base.figures and name in row.figures]  # fmt: skip
        parts.append(f"{name} throughput " + ", ".join(each or ["n/a"]))
    each = [f"{_times(row.figures['W5 p50'] / base.figures['W5 p50'])} {label}" for label, base in bases
            if "W5 p50" in base.figures and "W5 p50" in row.figures]  # fmt: skip
    parts.append("W5 p50 " + ", ".join(each or ["n/a"]))
    return f"{row.system}: " + "; ".join(parts)


def _times(ratio: float) -> str:
    """Two decimals, or two significant digits below 0.1 so a far slower row does not read 0.00x."""
    return f"{ratio:.2f}x" if round(ratio, 2) >= 0.1 else f"{ratio:.2g}x"


def compare_lines(old: Sequence[Row], new: Sequence[Row]) -> list[str]:
    """Per system in both runs, each figure's change from the saved run; then who is in only one."""
    before = {row.system: row for row in old}
    lines = [_change(before[row.system], row) for row in new if row.system in before]
    now = {row.system for row in new}
    lines += [f"{row.system}: not measured now" for row in old if row.system not in now]
    lines += [f"{row.system}: not in the saved run" for row in new if row.system not in before]
    return lines


def _change(old: Row, new: Row) -> str:
    parts = []
    for name in FIGURES:
        if name in old.figures and name in new.figures:
            unit = "s" if name in SECONDS else "ms"
            was, now = old.figures[name], new.figures[name]
            parts.append(f"{name} {_short(was)} → {_short(now)} {unit} ({_percent(was, now)})")
    return f"{new.system}: " + (", ".join(parts) or "no figure in common")


def _short(value: float) -> str:
    """Three decimals, or two significant digits below 0.01 so a chunked pool's W3 does not read 0.000."""
    return f"{value:.3f}" if round(abs(value), 3) >= 0.01 else f"{value:#.2g}"


def _percent(was: float, now: float) -> str:
    return "n/a" if was == 0 else f"{(now - was) / was * 100:+.0f}%"


def wrap(line: str, width: int, indent: str = "    ") -> list[str]:
    """``line`` cut only after a comma or semicolon, so no figure is split from its change."""
    lines = [""]
    for piece in re.split(r"(?<=[,;]) ", line):
        if lines[-1].strip() and len(lines[-1]) + 1 + len(piece) > width:
            lines.append(indent)
        lines[-1] += piece if not lines[-1].strip() else " " + piece
    return lines
