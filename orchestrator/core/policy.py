"""Retry policies: frozen values with units, stored in the flow as plain data.

The engine decides retries from the stored form alone, so a replay never needs
the exception classes or the registry that were around at submission.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from .codec import is_text
from .envelope import ErrorInfo
from .errors import InvalidOption
from .stored_names import NEVER_RETRY, stored_name

ExceptionSpec = type[BaseException] | str
MAX_ATTEMPTS = 10_000
MAX_DELAY = timedelta(days=366)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how soon a failed attempt is tried again.

    ``max_attempts`` counts the first attempt: 1 means no retry. The n-th retry
    waits ``initial_delay * backoff ** (n - 1)``, capped at ``max_delay``, then
    spread by up to ``jitter`` (a fraction) either way. ``retry_on`` and
    ``never_retry`` take exception classes or their qualified names; a subclass
    matches its base.
    """

    max_attempts: int = 3
    initial_delay: timedelta = timedelta(seconds=1)
    backoff: float = 2.0
    max_delay: timedelta = timedelta(minutes=5)
    jitter: float = 0.1
    retry_on: tuple[ExceptionSpec, ...] = (Exception,)
    never_retry: tuple[ExceptionSpec, ...] = ()

    def __post_init__(self) -> None:
        _require(
            type(self.max_attempts) is int and 1 <= self.max_attempts <= MAX_ATTEMPTS,
            f"max_attempts must be a whole number from 1 to {MAX_ATTEMPTS:,}",
        )
        for name in ("initial_delay", "max_delay"):
            value = getattr(self, name)
            _require(
                isinstance(value, timedelta) and timedelta(0) <= value <= MAX_DELAY,
                f"{name} must be a datetime.timedelta from zero to {MAX_DELAY.days} days, got {value!r}",
            )
        _require(isinstance(self.backoff, int | float) and self.backoff >= 1, "backoff must be a number >= 1")
        _require(
            isinstance(self.jitter, int | float) and 0 <= self.jitter <= 1, "jitter must be between 0 and 1"
        )
        for name in ("retry_on", "never_retry"):
            object.__setattr__(self, name, tuple(_exception_names(getattr(self, name), name)))

    @classmethod
    def no_retry(cls) -> RetryPolicy:
        return cls(max_attempts=1)

    def to_doc(self) -> dict[str, Any]:
        return {
            "max_attempts": self.max_attempts,
            "initial_delay_s": self.initial_delay.total_seconds(),
            "backoff": float(self.backoff),
            "max_delay_s": self.max_delay.total_seconds(),
            "jitter": float(self.jitter),
            "retry_on": list(self.retry_on),
            "never_retry": list(self.never_retry),
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> RetryPolicy:
        """From the log's form; a field left out (a hand-written JSON flow) takes its default."""
        default = cls()
        initial, cap = default.initial_delay.total_seconds(), default.max_delay.total_seconds()
        return cls(
            max_attempts=doc.get("max_attempts", default.max_attempts),
            initial_delay=_seconds(doc, "initial_delay_s", initial),
            backoff=doc.get("backoff", default.backoff),
            max_delay=_seconds(doc, "max_delay_s", cap),
            jitter=doc.get("jitter", default.jitter),
            retry_on=tuple(doc.get("retry_on", default.retry_on)),
            never_retry=tuple(doc.get("never_retry", ())),
        )


def should_retry(policy: Mapping[str, Any], error: ErrorInfo, attempt: int) -> bool:
    """Whether attempt ``attempt`` failing with ``error`` earns another attempt."""
    if attempt >= policy["max_attempts"]:
        return False
    names = set(error.mro) | {error.type}
    if names & set(NEVER_RETRY) or names & set(policy["never_retry"]):
        return False
    return bool(names & set(policy["retry_on"]))


def retry_delay(policy: Mapping[str, Any], attempt: int, salt: str) -> timedelta:
    """Delay before attempt ``attempt + 1``; jitter is derived from ``salt`` so replays agree."""
    try:
        base = policy["initial_delay_s"] * policy["backoff"] ** (attempt - 1)
    except OverflowError:  # a large backoff over many attempts: the cap applies
        base = policy["max_delay_s"]
    capped = min(base, policy["max_delay_s"])
    digest = hashlib.blake2b(salt.encode(), digest_size=8).digest()
    spread = (int.from_bytes(digest, "big") / 2**64) * 2 - 1  # in [-1, 1)
    return timedelta(seconds=max(0.0, capped * (1 + policy["jitter"] * spread)))


def _exception_names(specs: Iterable[ExceptionSpec], field_name: str) -> Iterable[str]:
    if isinstance(specs, str | type):
        specs = (specs,)
    for spec in specs:
        if isinstance(spec, str) and spec and is_text(spec):
            yield spec
        elif isinstance(spec, type) and issubclass(spec, BaseException):
            yield stored_name(spec)
        else:
            raise InvalidOption(
                f"RetryPolicy.{field_name} takes exception classes or their qualified names, got {spec!r:.80}"
            )


def _seconds(doc: Mapping[str, Any], name: str, default: float) -> timedelta:
    value = doc.get(name, default)
    try:
        return timedelta(seconds=value)
    except (TypeError, ValueError, OverflowError):
        raise InvalidOption(
            f"RetryPolicy: {name} must be a finite number of seconds, got {value!r:.40}"
        ) from None


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise InvalidOption(f"RetryPolicy: {message}")
