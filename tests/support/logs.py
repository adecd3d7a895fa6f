"""Reading a run's log from outside the process that writes it, as the query commands do."""

from __future__ import annotations

from pathlib import Path

from orchestrator.core.errors import StoreUnavailable
from orchestrator.core.events import Event
from orchestrator.store import open_store


def read_log(home: Path, run: str) -> list[Event]:
    """The run's events as the embedded journal in ``home`` holds them now; [] before the journal exists."""
    try:
        reader = open_store(None, home=home, read_only=True)
    except StoreUnavailable:
        return []
    try:
        return reader.read(run)
    finally:
        reader.close()
