"""The one JSON encoding of answers, so ``--json`` at the CLI and the HTTP API print the same shapes.

Always valid JSON: NaN and the infinities as the strings ``"NaN"``,
``"Infinity"`` and ``"-Infinity"``, bytes as hex, datetimes as ISO 8601,
tuples as lists, dataclasses (the projections' answers) as objects.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, is_dataclass
from datetime import datetime
from typing import Any


def to_json(value: Any, *, indent: int | None = 2) -> str:
    return json.dumps(_finite(value), default=_json_default, indent=indent, sort_keys=True, allow_nan=False)


def plain(value: Any) -> Any:
    """A projection's answer (a dataclass) as the dict its JSON shows; anything else as it is."""
    return asdict(value) if is_dataclass(value) and not isinstance(value, type) else value


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, set | frozenset):
        return list(value)
    return str(value)
