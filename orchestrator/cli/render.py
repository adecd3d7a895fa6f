"""Aligned text tables for people (colour only on a terminal), and JSON for machines.

``to_json`` (from ``orchestrator.json_text``, shared with the HTTP API) is the
one way the CLI prints JSON.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TextIO

from ..json_text import to_json

__all__ = ["table", "to_json"]

_COLOURS = {"succeeded": "32", "failed": "31", "retrying": "33", "running": "36"}


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], out: TextIO | None = None) -> str:
    """Render rows under headers, left-aligned text and right-aligned numbers."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(headers)]
    numeric = [all(_is_number(row[i]) for row in rows) and bool(rows) for i in range(len(headers))]
    colour = _use_colour(out)
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in cells:
        parts = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(row, widths, numeric, strict=True)]
        lines.append("  ".join(_paint(p, colour) for p in parts).rstrip())
    return "\n".join(lines)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if value == 0 or abs(value) >= 0.01 else f"{value:.2g}"
    return str(value)


def _is_number(value: object) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)) or value is None


def _use_colour(out: TextIO | None) -> bool:
    stream = out or sys.stdout
    return stream.isatty() and "NO_COLOR" not in os.environ


def _paint(text: str, colour: bool) -> str:
    code = next((c for word, c in _COLOURS.items() if text.strip().startswith(word)), None)
    return f"\x1b[{code}m{text}\x1b[0m" if colour and code else text
