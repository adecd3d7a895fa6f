"""Name -> callable, wherever commands run. Callers need only the name.

Anything callable as ``f(*args, **kwargs)`` registers: functions, lambdas,
bound methods, objects with ``__call__``, ``functools.partial``, ``async def``.
Defaults given here (retry, timeout, route) apply to every call of the name
unless the flow node overrides them.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from .codec import is_text
from .errors import InvalidOption, UnknownCommand
from .policy import RetryPolicy

F = TypeVar("F", bound=Callable[..., Any])

MAX_TIMEOUT = timedelta(days=366)
"""A node's timeout: long enough for anything, short enough for a deadline the log can store."""
MAX_KEY = 1_000
"""Characters in a node's idempotency key."""
NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:\-]{0,199}$")


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    fn: Callable[..., Any]
    retry: RetryPolicy | None = None
    timeout: timedelta | None = None
    route: str | None = None


class Registry:
    def __init__(self) -> None:
        self._commands: dict[str, Command] = {}
        self._sendable: dict[str, str | None] = {}

    def register(
        self,
        name: str,
        fn: Callable[..., Any],
        *,
        retry: RetryPolicy | None = None,
        timeout: timedelta | None = None,
        route: str | None = None,
        replace: bool = False,
    ) -> Callable[..., Any]:
        """Register ``fn`` under ``name``; returns ``fn`` unchanged."""
        check_name(name)
        if not callable(fn):
            raise InvalidOption(
                f"command {name!r}: {fn!r} is not callable; register a function or callable object"
            )
        if name in self._commands and not replace and self._commands[name].fn is not fn:
            raise InvalidOption(
                f"command {name!r} is already registered to {self._commands[name].fn!r}; "
                "pass replace=True to rebind it"
            )
        check_options(name, retry=retry, timeout=timeout, route=route)
        self._commands[name] = Command(name, fn, retry, timeout, route)
        self._sendable.pop(name, None)
        return fn

    def command(self, name: str | None = None, **options: Any) -> Callable[[F], F]:
        """Decorator form, for those who like it: ``@registry.command("inc")``."""

        def decorate(fn: F) -> F:
            self.register(name or fn.__name__, fn, **options)
            return fn

        return decorate

    def get(self, name: str, *, path: str | None = None) -> Command:
        try:
            return self._commands[name]
        except KeyError:
            raise UnknownCommand(name, list(self._commands), path=path) from None

    def __contains__(self, name: object) -> bool:
        return name in self._commands

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._commands))

    def __len__(self) -> int:
        return len(self._commands)

    def names(self) -> list[str]:
        return sorted(self._commands)

    def name_of(self, fn: Callable[..., Any]) -> str | None:
        """The name ``fn`` is registered under, so remote executors can send a callable by name."""
        return next((name for name, command in self._commands.items() if command.fn == fn), None)

    def unsendable_reason(self, name: str) -> str | None:
        """Why ``name`` cannot be sent to a child process, or None if it can (cached)."""
        if name not in self._sendable:
            fn = self.get(name).fn
            try:
                pickle.dumps(fn)
            except Exception as exc:  # pickling raises many types; all mean "cannot send"
                self._sendable[name] = (
                    f"command {name!r} ({fn!r}) cannot be sent to a child process: {exc}. "
                    "Define it at module top level (not a lambda or nested function), "
                    "or route it to a threads:// or inline executor"
                )
            else:
                self._sendable[name] = None
        return self._sendable[name]

    def __getstate__(self) -> dict[str, Any]:
        return {"_commands": self._commands, "_sendable": {}}


def check_name(name: object) -> None:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise InvalidOption(
            f"command name {name!r} is not valid: use 1-200 letters, digits, '_', '.', ':' or '-', "
            "starting with a letter or '_'"
        )


def check_options(
    owner: str,
    *,
    retry: object = None,
    timeout: object = None,
    route: object = None,
    key: object = None,
    immutable: object = None,
) -> None:
    """The one rule for a call's options, whoever gives them: ``Call.options``, ``register``, a flow document.

    ``None`` means "not given". Raises ``InvalidOption`` naming ``owner``, the
    option and the value.
    """
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise InvalidOption(f"{owner}: retry must be a RetryPolicy, got {retry!r}")
    if timeout is not None and not (isinstance(timeout, timedelta) and timedelta(0) < timeout <= MAX_TIMEOUT):
        raise InvalidOption(
            f"{owner}: timeout must be a datetime.timedelta over zero and at most {MAX_TIMEOUT.days} days, "
            f"got {timeout!r}"
        )
    if route is not None and not (isinstance(route, str) and 0 < len(route) <= 200 and is_text(route)):
        raise InvalidOption(f"{owner}: route must be a non-empty executor name, got {route!r:.80}")
    if key is not None and not (isinstance(key, str) and 0 < len(key) <= MAX_KEY and is_text(key)):
        raise InvalidOption(f"{owner}: key must be a non-empty string, got {key!r:.80}")
    if immutable is not None and not isinstance(immutable, bool):
        raise InvalidOption(f"{owner}: immutable must be true or false, got {immutable!r}")
