"""What crosses between the engine and an executor: an envelope out, one outcome back.

Both are plain data (names, lists, dicts, strings), so they cross a process
boundary or a socket without the command's code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from .codec import storable_text
from .stored_names import stored_name

EndReason = Literal["raised", "timeout", "lost"]


@dataclass(frozen=True, slots=True)
class Envelope:
    """One attempt of one command node, addressed by name."""

    run: str
    node: str
    attempt: int
    command: str
    args: Sequence[Any] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    deadline: datetime | None = None
    key: str = ""
    route: str | None = None

    @property
    def attempt_id(self) -> str:
        return attempt_id(self.run, self.node, self.attempt)


def attempt_id(run: str, node: str, attempt: int) -> str:
    return f"{run}/{node}#{attempt}"


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """A failure as the log keeps it: names rather than classes, text rather than frames.

    Whatever it is made from (an exception, a peer's message, a stored event),
    its text is storable: lone surrogates escaped, the message cut to
    ``MAX_MESSAGE`` characters and the traceback to ``MAX_TRACEBACK`` (head and
    tail kept), every name to ``MAX_NAME``.
    """

    type: str
    message: str
    mro: tuple[str, ...] = ()
    traceback: str = ""
    reason: EndReason = "raised"

    def __post_init__(self) -> None:
        object.__setattr__(self, "type", storable_text(str(self.type), MAX_NAME))
        object.__setattr__(self, "message", storable_text(str(self.message), MAX_MESSAGE))
        object.__setattr__(self, "mro", tuple(storable_text(str(name), MAX_NAME) for name in self.mro))
        object.__setattr__(self, "traceback", storable_text(str(self.traceback), MAX_TRACEBACK))

    def to_doc(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "message": self.message,
            "mro": list(self.mro),
            "traceback": self.traceback,
            "reason": self.reason,
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> ErrorInfo:
        return cls(
            type=doc["type"],
            message=doc.get("message", ""),
            mro=tuple(doc.get("mro", ())),
            traceback=doc.get("traceback", ""),
            reason=doc.get("reason", "raised"),
        )

    @classmethod
    def from_exception(
        cls, exc: BaseException, *, reason: EndReason = "raised", traceback: str = ""
    ) -> ErrorInfo:
        """Any exception, even one whose ``__str__`` raises or returns 10 MB, or whose args are not text."""
        kind = type(exc)
        try:
            message = str(exc)
        except Exception:
            message = f"<{kind.__name__} whose message could not be rendered>"
        return cls(
            type=stored_name(kind),
            message=message,
            mro=tuple(stored_name(k) for k in kind.__mro__ if k is not object),
            traceback=traceback,
            reason=reason,
        )


MAX_MESSAGE = 4_000
MAX_TRACEBACK = 16_000
MAX_NAME = 1_000


def now_precise() -> datetime:
    """Executors stamp attempts to the microsecond so short durations are measured; the log keeps ms."""
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt ended; exactly one per envelope from every executor."""

    run: str
    node: str
    attempt: int
    ok: bool
    result: Any = None
    error: ErrorInfo | None = None
    expansion: Mapping[str, Any] | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    by: str | None = None
    events: tuple[Mapping[str, Any], ...] = ()
    """What the command emitted (``{"type", "data"}`` each), logged with the outcome if it is accepted."""

    @property
    def attempt_id(self) -> str:
        return attempt_id(self.run, self.node, self.attempt)

    @classmethod
    def failed(cls, envelope: Envelope, error: ErrorInfo, **extra: Any) -> Outcome:
        return cls(envelope.run, envelope.node, envelope.attempt, ok=False, error=error, **extra)
