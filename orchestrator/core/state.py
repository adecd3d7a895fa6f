"""The state of one run, as folded from its events, and the table of legal moves.

Nothing here is stored: a ``RunState`` is a cache of ``fold(events)``. The
engine keeps one per live run; a fresh process rebuilds the same one from the
log (``tests/unit/test_replay.py`` checks that property).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from .errors import CorruptEvent


class _NoInput:
    """The input of a node that receives nothing (the first step of a run)."""

    _instance: _NoInput | None = None

    def __new__(cls) -> _NoInput:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NO_INPUT"

    def __reduce__(self) -> str:
        return "NO_INPUT"


NO_INPUT: Final = _NoInput()

# Node statuses. A call node: idle -> ready -> running -> (succeeded | failing);
# failing -> waiting (a retry is scheduled) -> running, or failing -> failed.
# Composite nodes (and calls that expanded into a flow) are "active" meanwhile.
IDLE, READY, RUNNING, FAILING, WAITING, ACTIVE = "idle", "ready", "running", "failing", "waiting", "active"
SUCCEEDED, FAILED, CANCELLED = "succeeded", "failed", "cancelled"
TERMINAL: Final = frozenset({SUCCEEDED, FAILED, CANCELLED})

TRANSITIONS: Final = frozenset(
    {
        (IDLE, READY),
        (IDLE, ACTIVE),
        (IDLE, SUCCEEDED),  # an empty group, or a call whose result a retried run kept
        (IDLE, FAILING),  # a map whose input is not a list
        (READY, RUNNING),
        (RUNNING, SUCCEEDED),
        (RUNNING, FAILING),
        (RUNNING, ACTIVE),  # the command returned a flow
        (FAILING, WAITING),
        (FAILING, FAILED),
        (READY, FAILED),  # its arguments cannot be logged
        (WAITING, FAILED),
        (WAITING, RUNNING),
        (ACTIVE, SUCCEEDED),
        (ACTIVE, FAILED),
    }
    | {(old, CANCELLED) for old in (IDLE, READY, RUNNING, FAILING, WAITING, ACTIVE)}
)

Timer = tuple[datetime, int, str]
"""When a timer is due, the order it was set in among the run's timers, and its node."""

# Run statuses.
PENDING, RUN_RUNNING = "pending", "running"


@dataclass(slots=True)
class _Rare:
    """What only some nodes of a run ever hold: a group's lists and count, a deadline, an error and
    the count of troubled attempts. A node that never sets one shares ``_NONE_SET``."""

    deadline: datetime | None = None
    error: dict[str, Any] | None = None
    results: list[Any] | tuple[()] = ()
    pending: int = 0
    failures: Sequence[dict[str, Any]] = ()
    lost: int = 0
    interrupted: int = 0
    isolated: bool = False
    interrupted_at: int = -1
    children: Sequence[str] = ()


_NONE_SET: Final = _Rare()
"""Shared by every node that has set none of these: never written (``NodeState._rare_set``)."""
_OWN: Final = (
    "path", "spec", "status", "input", "index", "attempt", "result", "reported_by", "reported", "parent",
)  # fmt: skip
"""The fields a node keeps in its own slots, in the order they are shown and compared."""


class NodeState:
    """One node of a run. A run may hold a million, so a node keeps in its own slots only what every
    node sets (120 bytes on 3.11, where all 20 fields took 192); the rest (``_Rare``: a group's
    ``results``, ``pending``, ``failures`` and ``children``, a ``deadline``, an ``error``, the counts
    of troubled attempts) is read and written through properties and takes a record only once a node
    sets one of them to other than its default. Equality compares every field, wherever it is kept."""

    __slots__ = (
        "_rare", "attempt", "index", "input", "parent", "path", "reported", "reported_by", "result", "spec",
        "status",
    )  # fmt: skip

    path: str
    spec: dict[str, Any]
    """The node's spec in the flow document; a map's item has the map's template (its own copy only
    for its own key). Read-only: path and parent are the node's, not the spec's."""
    status: str
    input: Any
    index: int
    """Position among the parent's children."""
    attempt: int
    result: Any
    reported_by: str | None
    """Who reported the outcome the log accepted for the current attempt (its ``command.started``);
    None while it runs, or when the orchestrator ended it (interrupted, timed out)."""
    reported: bool
    """The current attempt ended with an accepted outcome (its ``command.started`` is logged)."""
    parent: str | None

    def __init__(
        self,
        path: str,
        spec: dict[str, Any],
        *,
        index: int = 0,
        children: Sequence[str] = (),
        parent: str | None = None,
    ) -> None:
        self.path, self.spec, self.index, self.parent = path, spec, index, parent
        self.status, self.input, self.attempt, self.result = IDLE, NO_INPUT, 0, None
        self.reported_by, self.reported = None, False
        self._rare = _NONE_SET
        if children:
            self.children = children

    def _rare_set(self) -> _Rare:
        if self._rare is _NONE_SET:
            self._rare = _Rare()
        return self._rare

    def _fields(self) -> tuple[Any, ...]:
        """Every field in ``_OWN`` order, then the record of the rest."""
        return (
            self.path, self.spec, self.status, self.input, self.index, self.attempt, self.result,
            self.reported_by, self.reported, self.parent, self._rare,
        )  # fmt: skip

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NodeState):
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        own = ", ".join(f"{name}={getattr(self, name)!r}" for name in _OWN)
        rare = ", ".join(f"{name}={getattr(self._rare, name)!r}" for name in _Rare.__slots__)
        return f"NodeState({own}, {rare})"

    def __getstate__(self) -> tuple[Any, ...]:
        return self._fields()

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        for name, value in zip((*_OWN, "_rare"), state, strict=True):
            object.__setattr__(self, name, value)

    @property
    def deadline(self) -> datetime | None:
        return self._rare.deadline

    @deadline.setter
    def deadline(self, value: datetime | None) -> None:
        if value is not None or self._rare is not _NONE_SET:
            self._rare_set().deadline = value

    @property
    def error(self) -> dict[str, Any] | None:
        """The last attempt's error, as the log recorded it."""
        return self._rare.error

    @error.setter
    def error(self, value: dict[str, Any] | None) -> None:
        self._rare_set().error = value

    @property
    def results(self) -> list[Any] | tuple[()]:
        """A group's results in order: the shared empty tuple until it fans out."""
        return self._rare.results

    @results.setter
    def results(self, value: list[Any] | tuple[()]) -> None:
        self._rare_set().results = value

    @property
    def pending(self) -> int:
        return self._rare.pending

    @pending.setter
    def pending(self, value: int) -> None:
        self._rare_set().pending = value

    @property
    def failures(self) -> Sequence[dict[str, Any]]:
        return self._rare.failures

    @failures.setter
    def failures(self, value: Sequence[dict[str, Any]]) -> None:
        self._rare_set().failures = value

    @property
    def lost(self) -> int:
        """Attempts that ended because their worker was lost, not because the command failed."""
        return self._rare.lost

    @lost.setter
    def lost(self, value: int) -> None:
        self._rare_set().lost = value

    @property
    def interrupted(self) -> int:
        """Attempts in a row that were in flight when the orchestrator stopped, with no progress of the
        run between them: a command that kills its orchestrator grows it, restarts for other reasons
        do not (an attempt waiting in a queue never ran). Attempts sent out of the orchestrator's
        process (``isolated``) never grow it: their command cannot have stopped it."""
        return self._rare.interrupted

    @interrupted.setter
    def interrupted(self, value: int) -> None:
        self._rare_set().interrupted = value

    @property
    def isolated(self) -> bool:
        """The current attempt was sent to an executor that runs it in another process or host."""
        return self._rare.isolated

    @isolated.setter
    def isolated(self, value: bool) -> None:
        if value or self._rare is not _NONE_SET:
            self._rare_set().isolated = value

    @property
    def interrupted_at(self) -> int:
        """The run's ``progress`` when this node was last interrupted."""
        return self._rare.interrupted_at

    @interrupted_at.setter
    def interrupted_at(self, value: int) -> None:
        self._rare_set().interrupted_at = value

    @property
    def children(self) -> Sequence[str]:
        return self._rare.children

    @children.setter
    def children(self, value: Sequence[str]) -> None:
        self._rare_set().children = value

    @property
    def kind(self) -> str:
        return str(self.spec["kind"])

    def move(self, new: str) -> None:
        if (self.status, new) not in TRANSITIONS:
            raise CorruptEvent(f"node {self.path} cannot go from {self.status!r} to {new!r}")
        self.status = new


@dataclass(slots=True)
class RunState:
    run: str
    seq: int = 0
    status: str = PENDING
    flow: dict[str, Any] | None = None
    nodes: dict[str, NodeState] = field(default_factory=dict)
    submitted_at: datetime | None = None
    finished_at: datetime | None = None
    name: str | None = None
    key: str | None = None
    digest: str | None = None
    """Fingerprint of what was submitted under ``key``: a second submission must match it."""
    retry_of: str | None = None
    """The failed or cancelled run this one continues."""
    kept: dict[str, Any] = field(default_factory=dict)
    """Results of call nodes that succeeded in ``retry_of``, by path: used instead of running them."""
    progress: int = 0
    """Outcomes accepted so far, except interruptions."""
    owner: str | None = None
    """The orchestrator driving the run: who submitted it, or who last took it over."""
    correlation: str | None = None
    """The id every run of one chain shares: the first run's, inherited by what listeners trigger."""
    cause: str | None = None
    """The event whose listener triggered this run, if one did."""
    listener: str | None = None
    refused: dict[str, Any] | None = None
    """The failure logged in place of the run's work (its listener failed): the run can only fail."""
    depth: int = 0
    """Listener hops from a run submitted by hand (0): what the cascade limit counts."""
    result: Any = None
    failures: list[dict[str, Any]] = field(default_factory=list)
    finished: bool = False
    """A terminal run event is in the log: nothing more is decided."""
    parts_due: int = 0
    """``run.flow_part`` events a large submission still waits for; none start before they are in."""
    input: Any = NO_INPUT
    """The run's input while its parts are due (then its root node holds it)."""
    ready: dict[str, None] = field(default_factory=dict)
    """Call nodes waiting for their first dispatch, in activation order."""
    failing: dict[str, None] = field(default_factory=dict)
    """Nodes whose last attempt failed, waiting for a retry-or-fail decision."""
    timers: dict[str, datetime] = field(default_factory=dict)
    """Running attempts with a deadline and scheduled retries, by node, in the order they were set
    (``set_timer``; removing one is a plain ``pop``)."""
    _heap: list[Timer] = field(default_factory=list, init=False, repr=False, compare=False)
    """``timers`` as a heap of (when, order set, node), so finding what is due never scans them all
    (a wide fan-out may have 100,000 running attempts with a deadline). An entry whose timer is gone
    or was set again stays until it reaches the top, or until stale ones outnumber the live and the
    heap is rebuilt from ``timers``."""
    _set: int = field(default=0, init=False, repr=False, compare=False)

    @property
    def root(self) -> NodeState:
        assert self.flow is not None, "run has no flow before run.submitted"
        return self.nodes[self.flow["root"]]

    def set_timer(self, path: str, when: datetime) -> None:
        self.timers.pop(path, None)  # set again, it goes last, as its heap entry says
        self.timers[path] = when
        self._set += 1
        heapq.heappush(self._heap, (when, self._set, path))
        if len(self._heap) > 2 * len(self.timers) + 64:
            self._rebuild()

    def _rebuild(self) -> None:
        """Only the live timers, in the order they were set, so a long run's heap stays its size."""
        self._heap = [(when, order, path) for order, (path, when) in enumerate(self.timers.items())]
        self._set = len(self._heap)
        heapq.heapify(self._heap)

    def clear_timers(self) -> None:
        self.timers.clear()
        self._heap.clear()

    def next_due(self) -> datetime | None:
        heap, timers = self._heap, self.timers
        while heap and timers.get(heap[0][2]) != heap[0][0]:
            heapq.heappop(heap)  # gone or set again: only the heap remembered it
        return heap[0][0] if heap and not self.finished else None

    def due(self, now: datetime) -> list[str]:
        """The nodes whose timer is due at ``now``, in the order ``timers`` holds them: found by
        walking the heap only below entries that are due, so it costs what is due, not every timer."""
        heap, timers = self._heap, self.timers
        found: dict[str, int] = {}
        below = [0] if heap else []
        while below:
            index = below.pop()
            when, order, path = heap[index]
            if when > now:
                continue
            if timers.get(path) == when:
                found[path] = max(order, found.get(path, order))
            below.extend(child for child in (2 * index + 1, 2 * index + 2) if child < len(heap))
        return sorted(found, key=found.__getitem__)

    def commands_ahead(self) -> set[str]:
        """The commands the run may still call: those of its unfinished calls and maps."""
        found: set[str] = set()
        for node in self.nodes.values():
            if node.status in TERMINAL:
                continue
            if node.kind == "call" and not node.children:  # a call that expanded has run already
                found.add(node.spec["command"])
            elif node.kind == "each":
                found.add(node.spec["template"]["command"])
        return found

    def running(self) -> list[NodeState]:
        """Attempts dispatched and not yet ended, in path order."""
        return [n for n in self.nodes.values() if n.status == RUNNING]
