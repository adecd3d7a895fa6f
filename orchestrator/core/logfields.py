"""The fields every evenflow log record may carry, so one run's story can be pulled out of the logs.

Library code passes them as ``extra=fields(...)`` and never configures
logging; the CLI's formatters print them (``--log-format json``: one object a
record), and a record without them gets them empty.
"""

from __future__ import annotations

from typing import Any

FIELDS = ("run", "node", "attempt", "worker")


def fields(
    run: str | None = None, node: str | None = None, attempt: int | None = None, worker: str | None = None
) -> dict[str, Any]:
    """``extra`` for a log call: which run, node, attempt and worker the record is about."""
    return {"run": run, "node": node, "attempt": attempt, "worker": worker}
