"""One page of run history as a store with history tables is asked for it (``HistoryStore.run_page``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RunQuery:
    """Filters of ``evenflow runs``, times in ms since the epoch, and the cursor's ``(submitted_at, run)``.

    ``command`` and ``error_type`` match a run that lists the name (the first
    1,000 of each kind, in sorted order, as the ``runs`` read model lists them).
    """

    state: str | None = None
    flow: str | None = None
    since: int | None = None
    until: int | None = None
    command: str | None = None
    error_type: str | None = None
    limit: int = 50
    after: tuple[int | None, str] | None = None
