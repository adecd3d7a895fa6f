"""A submission: one run as asked for, built and checked once where it enters, then passed as is.

Every way in (the API, the CLI and a Client through the service, a listener's
answer, a retry) builds one ``Submission``; the engine logs ``logged()`` —
``run.submitted``, and ``run.flow_part`` events if it is too large for one —
without looking inside. Checking happens in the constructor, so a value that
exists is one the log can take.

A submission that fits one event is stored whole, as it always was. A larger
one (a chord of 100,000 calls, a retry keeping 100,000 results) keeps its
other fields in ``run.submitted``, with empty ``nodes`` and ``kept`` and a
count of ``parts``; the parts follow in the same append, each holding a slice
of the node specs or kept results of about ``PART_BYTES``. One event stays
within MongoDB's 16 MiB, and no single event makes a long flow expensive to
read. MongoDB does not make such an append atomic: a submitter whose append
failed midway logs the rest once it reads back what landed
(``engine/recovery.py``); a run whose parts never all land (its submitter died
meanwhile) fails as ``SubmissionIncomplete`` before anything runs.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from . import events as ev
from .codec import EVENT_DEPTH, EVENT_ROOM_BYTES, MAX_EVENT_BYTES, check_payload, check_text
from .errors import PayloadError
from .flows import narrowed
from .keys import digest, run_for_key
from .state import NO_INPUT

WIDE_FLOW = 10_000
"""Nodes from which a submission too large to store is most likely too wide a flow."""
ONE_EVENT_BYTES = MAX_EVENT_BYTES - EVENT_ROOM_BYTES
"""A submission up to this size is one ``run.submitted``, as it always was."""
PART_BYTES = 8 * 1024 * 1024
"""What one ``run.flow_part`` holds at most: room for any one node spec or kept result (a payload is
at most 4 MiB), and half an event, so a part always fits."""
MAX_SUBMISSION_BYTES = 256 * 1024 * 1024
"""A whole submission, in all its parts: what one run may ask the orchestrator to hold."""
_ITEM_ROOM = 16
"""What an array element costs BSON beside its value: type byte, index as text, NUL."""
_WHAT = "the submission (its flow, input and options)"


@dataclass(frozen=True, slots=True)
class Submission:
    run: str
    flow: dict[str, Any]
    """The flow's checked document, every default resolved (``FlowChecker``)."""
    input: Any = NO_INPUT
    name: str | None = None
    key: str | None = None
    digest: str | None = None
    """A fingerprint of what was submitted: a later submission under ``key`` must match it."""
    cause: str | None = None
    """The event a listener answered with this run (``run.submitted``'s causation)."""
    correlation: str | None = None
    """The chain the run joins; None starts a chain named after the run."""
    listener: str | None = None
    depth: int = 0
    """Listener hops from a run submitted by hand."""
    refused: dict[str, Any] | None = None
    """A failure logged in place of work (the listener failed): the run fails at once."""
    retry_of: str | None = None
    kept: list[list[Any]] | None = None
    """``[path, result]`` of the calls a retried run keeps."""
    parts: tuple[dict[str, list[Any]], ...] = field(default=(), init=False, repr=False, compare=False)
    """``run.flow_part`` data, when the submission is too large for one event; else empty."""

    def __post_init__(self) -> None:
        for text, what in ((self.name, "a run's name"), (self.key, "a submission key")):
            if text is not None:
                check_text(text, what)
        try:
            size = check_payload(self.data(), _WHAT, max_bytes=MAX_SUBMISSION_BYTES, max_depth=EVENT_DEPTH)
            if size > ONE_EVENT_BYTES:
                parts = (*_slices("nodes", self.flow["nodes"]), *_slices("kept", self.kept or []))
                object.__setattr__(self, "parts", parts)
        except PayloadError as exc:
            nodes = len(self.flow.get("nodes", ()))
            if nodes < WIDE_FLOW:
                raise
            raise PayloadError(
                f"{exc}. Its flow stores {nodes:,} nodes; map a command over a list a step returns "
                "instead (each(...)): a map's calls are made at run time, not stored in the submission"
            ) from exc

    @classmethod
    def of(
        cls, flow: dict[str, Any], *, input: Any = NO_INPUT, name: str | None = None, key: str | None = None
    ) -> Submission:
        """A run submitted through the API or a service (its input checked, and copied): a fresh id,
        or the one ``key`` names, with the digest a later submission under it must match."""
        if input is not NO_INPUT:
            check_payload(input, "input")
            input = copy.deepcopy(input)  # the caller may go on changing its own object
        if key is None:
            return cls(uuid.uuid4().hex, flow, input, name)
        return cls.keyed(key, flow, input=input, name=name)

    @classmethod
    def keyed(
        cls,
        key: str,
        flow: dict[str, Any],
        *,
        input: Any = NO_INPUT,
        name: str | None = None,
        cause: str | None = None,
        correlation: str | None = None,
        **extras: Any,
    ) -> Submission:
        """A submission whose run ``key`` names, fingerprinted with everything it records (``extras``:
        a listener's ``listener``, ``depth`` and ``refused``, or a retry's ``retry_of`` and ``kept``)."""
        fingerprint = digest(flow, input, name, **_extras(**extras))
        return cls(run_for_key(key), flow, input, name, key, fingerprint, cause, correlation, **extras)

    def logged(self) -> list[tuple[str, dict[str, Any]]]:
        """The events that log this submission, as (type, data), to append together in this order."""
        if not self.parts:
            return [(ev.RUN_SUBMITTED, self.data())]
        head = self.data()
        head["flow"] = {**self.flow, "nodes": []}
        if "kept" in head:
            head["kept"] = []
        head["parts"] = len(self.parts)
        return [(ev.RUN_SUBMITTED, head), *((ev.RUN_FLOW_PART, dict(part)) for part in self.parts)]

    def data(self) -> dict[str, Any]:
        """The whole submission as one ``run.submitted``'s data, the shape the log has always held."""
        extras = _extras(
            listener=self.listener,
            depth=self.depth,
            refused=self.refused,
            retry_of=self.retry_of,
            kept=self.kept,
        )
        data: dict[str, Any] = {"flow": self.flow, "name": self.name, **extras}
        if self.input is not NO_INPUT:
            data["input"] = self.input
        if self.key is not None:
            data.update(key=self.key, digest=self.digest)
        return data


def _slices(name: str, items: list[Any]) -> Iterator[dict[str, list[Any]]]:
    """``items`` in ``{name: slice}`` parts of at most ``PART_BYTES`` each, in order."""
    part: list[Any] = []
    size = 0
    for index, item in enumerate(map(narrowed, items) if name == "nodes" else items):
        item_size = _ITEM_ROOM + check_payload(
            item,
            f"{_WHAT}, {name}[{index}]",
            max_bytes=PART_BYTES - EVENT_ROOM_BYTES,
            max_depth=EVENT_DEPTH - 2,
        )
        if part and size + item_size > PART_BYTES - EVENT_ROOM_BYTES:
            yield {name: part}
            part, size = [], 0
        part.append(item)
        size += item_size
    if part:
        yield {name: part}


def _extras(
    *,
    listener: str | None = None,
    depth: int = 0,
    refused: dict[str, Any] | None = None,
    retry_of: str | None = None,
    kept: list[list[Any]] | None = None,
) -> dict[str, Any]:
    """What ``run.submitted`` records beyond flow, name and input: a listener's answer, or a retry's."""
    extras: dict[str, Any] = {}
    if listener is not None:
        extras.update(listener=listener, depth=depth)
        if refused is not None:
            extras["refused"] = refused
    if retry_of is not None:
        extras.update(retry_of=retry_of, kept=kept or [])
    return extras
