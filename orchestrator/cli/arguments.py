"""Argument types the commands share, so a bad value is refused by the parser in one line (exit 2)."""

from __future__ import annotations

import argparse
import importlib
import math
from typing import Any

from ..core.codec import is_text
from ..core.errors import ConfigurationError, EvenflowError, ProtocolError, extra_needed

INPUT_HELP = (
    'the value the flow\'s first step receives, as JSON; {"$date": ISO} is a datetime, '
    '{"$bytes": BASE64} bytes, {"$float": "NaN"} a NaN (default: none)'
)

EXTRA_SCHEMES = {"zmq": "zmq", "celery": "celery"}
"""Executor URL schemes that need an optional package, and the module whose import proves it is there."""


def run_id(text: str) -> str:
    """A run id as typed: text, which a run id always is (argv bytes that are not UTF-8 are not)."""
    if not text or not is_text(text):
        raise argparse.ArgumentTypeError(
            f"{text!r:.80} is not a run id (it holds bytes that are not UTF-8); copy one from `evenflow runs`"
        )
    return text


def seconds(text: str) -> float:
    """A duration in seconds, above zero and finite: 0, a negative or NaN would mean "never wait"."""
    value = _number(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(
            f"{text!r:.40} is not a number of seconds above 0, such as 30 or 0.5"
        )
    return value


def grace(text: str) -> float:
    """How long to let work in flight end: 0 (stop at once) up to an hour; NaN or negative is a typo."""
    value = _number(text)
    if not 0 <= value <= 3600:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text!r:.40} is not a number of seconds from 0 to 3600")
    return value


def _number(text: str) -> float:
    """``text`` as a float; NaN (which every range check refuses) if it is not a number."""
    try:
        return float(text)
    except ValueError:
        return math.nan


def whole(text: str) -> int:
    """A count of one or more."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r:.40} is not a whole number of 1 or more")
    return value


def home(text: str) -> str:
    """A directory for the embedded store: an empty one would silently mean the current directory."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty; name a directory (or leave it out for the default)")
    return text


def executor_url(text: str) -> str:
    """An executor URL whose optional package is installed; its other checks are the factory's."""
    module = EXTRA_SCHEMES.get(text.partition("://")[0])
    if module is not None:
        try:
            with extra_needed(f"the executor {text.partition('://')[0]}://"):
                importlib.import_module(module)
        except ConfigurationError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def input_value(text: str, option: str = "--input") -> Any:
    """``--input`` as the value a flow receives, read the same way by ``run`` and ``submit``.

    JSON in the wire's tagged form: ``{"$date": iso}`` is a UTC datetime and
    ``{"$bytes": base64}`` bytes, as a service reads them, so the same text means
    the same value wherever it is given. Bare ``NaN`` and ``Infinity`` are not
    JSON and are refused (``{"$float": "NaN"}`` says it).
    """
    from ..transport import wire

    try:
        return wire.loads(text.encode("utf-8", "surrogateescape"))
    except ProtocolError as exc:
        raise ConfigurationError(f"{option} is not JSON evenflow reads: {_reason(exc)}") from None
    except EvenflowError as exc:
        raise ConfigurationError(f"{option}: {exc}") from None


def _reason(exc: ProtocolError) -> str:
    return str(exc).removeprefix("message is not valid JSON: ")
