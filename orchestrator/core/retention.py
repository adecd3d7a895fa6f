"""What removing old runs from a log gave back (``PruneStore.prune``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Pruned:
    """The runs a prune removed (or, dry, would remove), their events, the ones a listener still needs,
    and the runs that record each batch (flow ``evenflow.prune``)."""

    runs: int
    events: int
    kept_for_listeners: int
    records: tuple[str, ...]
