"""The options in force per command: what workers registered their commands with, announced in hellos.

The first worker to announce a command sets its options (``retry`` in its
stored form, ``timeout_s``) until it leaves; then the oldest live worker that
has the command does. A worker announcing different options for a command
already announced is a ``Conflict``, which the hub logs. Pure, like the
scheduler that holds it: no socket, clock or thread.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

Options = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Conflict:
    """A worker announced other options for a command than those in force (another worker's)."""

    command: str
    kept: str
    kept_options: Options
    refused: str
    refused_options: Options

    def __str__(self) -> str:
        return (
            f"worker {self.refused} registered {self.command!r} with options "
            f"{dict(self.refused_options) or 'none'}, worker {self.kept} with "
            f"{dict(self.kept_options) or 'none'}: the first announced apply until that worker leaves"
        )


@dataclass(frozen=True, slots=True)
class Announcer:
    """One live worker as this table knows it: its id, name and options per command it has."""

    id: bytes
    name: str
    options: Mapping[str, Options]


class Announced:
    def __init__(self) -> None:
        self.options: dict[str, tuple[Announcer, Options]] = {}
        """The options in force per command, and the worker that announced them first."""

    def join(self, worker: Announcer) -> list[Conflict]:
        """A worker said hello: the commands it is first to announce take its options; returns conflicts."""
        conflicts = []
        for command in sorted(worker.options):
            options = worker.options[command]
            current = self.options.get(command)
            if current is None or current[0].id == worker.id:
                self.options[command] = (worker, options)
            elif current[1] != options:
                conflicts.append(Conflict(command, current[0].name, current[1], worker.name, options))
        return conflicts

    def leave(self, gone: bytes, live: Iterable[Announcer]) -> None:
        """The commands whose options ``gone`` set take those of the oldest live worker that has them."""
        heirs = list(live)
        for command in [c for c, (owner, _) in self.options.items() if owner.id == gone]:
            heir = next((w for w in heirs if command in w.options), None)
            if heir is None:
                del self.options[command]
            else:
                self.options[command] = (heir, heir.options[command])

    def get(self, command: str) -> Options | None:
        """The options in force for ``command`` (``retry``, ``timeout_s``); None if no worker has it."""
        current = self.options.get(command)
        return current[1] if current is not None else None
