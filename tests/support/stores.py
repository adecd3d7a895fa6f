"""Opening each kind of store the contract suites run on, the same way in every suite."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from orchestrator.store import open_store

MONGODB_URL = os.environ.get("EVENFLOW_TEST_MONGODB_URL", "")
"""A real server to run the suites on as well; unset, its cases are skipped."""


def open_kind(kind: str, home: Path, database: str) -> Any:
    """``memory``, ``mongomock``, ``embedded`` (in ``home``), or ``mongodb``: ``database`` on the server."""
    if kind == "embedded":
        return open_store(f"embedded://{home}")
    if kind == "mongodb":
        parts = urlsplit(MONGODB_URL)
        return open_store(urlunsplit(parts._replace(path=f"/{database}")))
    return open_store(f"{kind}://")
