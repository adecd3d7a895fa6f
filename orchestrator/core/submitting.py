"""A submission: one run as asked for, built and checked once where it enters, then passed as is.

Every way in (the API, the CLI and a Client through the service, a listener's
answer, a retry) builds one ``Submission``; the engine logs ``data()`` as
``run.submitted`` without looking inside. Checking happens in the constructor,
so a value that exists is one the log can take.
"""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass
from typing import Any

from .codec import check_event_data, check_payload, check_text
from .errors import PayloadError
from .keys import digest, run_for_key
from .state import NO_INPUT

WIDE_FLOW = 10_000
"""Nodes from which a submission too large for one event is most likely too wide a flow."""


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

    def __post_init__(self) -> None:
        for text, what in ((self.name, "a run's name"), (self.key, "a submission key")):
            if text is not None:
                check_text(text, what)
        try:
            check_event_data(self.data(), "the submission (its flow, input and options)")
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

    def data(self) -> dict[str, Any]:
        """``run.submitted``'s data, in the shape the log has always held."""
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
