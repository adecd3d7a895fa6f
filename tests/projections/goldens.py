"""Golden event logs: small JSON logs the engine wrote, checked in, with their expected projections.

A log is a JSON list of the event documents an ``Orchestrator`` stored while
running real flows (inline and thread executors, on ``mongomock://``), recorded
once and then made readable: run ids became names (``checkout-ok``), the host
and pid became ``host-a:4242``, every time was shifted so the log starts at
2026-03-02T09:00:00Z, and tracebacks were cut to their first and last lines.
Nothing else was touched. Dates are ISO strings in the JSON (``at``, and
``started_at``, ``due`` and ``deadline`` inside ``data``); ``load_log`` turns
them back into UTC datetimes, so the documents are what a store holds.

``checkout``: one run retried twice then succeeding, with a thread-pool branch
and a dynamic expansion; one run failing after three attempts.
``incidents``: a timeout whose late result is ignored, beside a raised error;
the same error in a second run; a result the log cannot store.

``expected_<log>.json`` holds what every projection answers over that log. To
re-record it after a deliberate change, run the golden tests with
``EVENFLOW_UPDATE_GOLDEN=1`` and read the diff before committing it.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

GOLDEN = Path(__file__).parent / "golden"
UPDATE_ENV = "EVENFLOW_UPDATE_GOLDEN"
DATA_TIMES = ("started_at", "due", "deadline")


def load_log(name: str) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = json.loads((GOLDEN / f"{name}.json").read_text(encoding="utf-8"))
    for doc in docs:
        doc["at"] = parse_time(doc["at"])
        for field in DATA_TIMES:
            if isinstance(doc["data"].get(field), str):
                doc["data"][field] = parse_time(doc["data"][field])
    return docs


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def plain(value: Any) -> Any:
    """Dataclasses, lists and datetimes as JSON values, so answers compare with a JSON file."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: plain(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    if isinstance(value, datetime):
        return format_time(value)
    return value


def load_expected(name: str) -> dict[str, Any]:
    path = GOLDEN / f"expected_{name}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def save_expected(name: str, answers: dict[str, Any]) -> None:
    text = json.dumps(answers, indent=1, ensure_ascii=False) + "\n"
    (GOLDEN / f"expected_{name}.json").write_text(text, encoding="utf-8")
