"""A worker's hello names the options each command was registered with there (``retry`` in its stored
form, ``timeout_s``); the service checks them as the registry checks its own before applying any."""

from __future__ import annotations

from typing import Any

from orchestrator.core.errors import InvalidOption, ProtocolError
from orchestrator.core.policy import RetryPolicy
from orchestrator.core.registry import MAX_TIMEOUT, NAME_PATTERN


def hello_options(value: object, most: int) -> dict[str, dict[str, Any]]:
    """A hello's ``options``, each checked as the registry checks them, in their stored form."""
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > most:
        raise ProtocolError(f"field 'options' must map at most {most} command names to options")
    return {name: _command_options(name, given) for name, given in value.items()}


def _command_options(name: object, given: object) -> dict[str, Any]:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or not isinstance(given, dict):
        raise ProtocolError("field 'options' must map command names to objects")
    if set(given) - {"retry", "timeout_s"}:
        raise ProtocolError(f"options of {name!r} may hold only 'retry' and 'timeout_s'")
    options: dict[str, Any] = {}
    try:
        if given.get("retry") is not None:
            if not isinstance(given["retry"], dict):
                raise InvalidOption("retry must be an object")
            options["retry"] = RetryPolicy.from_doc(given["retry"]).to_doc()
    except (InvalidOption, TypeError, ValueError) as exc:
        raise ProtocolError(f"the retry option of {name!r} is not a retry policy: {exc}") from None
    timeout = given.get("timeout_s")
    if timeout is not None:
        limit = MAX_TIMEOUT.total_seconds()
        if type(timeout) not in (int, float) or not 0 < timeout <= limit:
            raise ProtocolError(f"the timeout_s option of {name!r} must be seconds in (0, {limit:g}]")
        options["timeout_s"] = float(timeout)
    return options
