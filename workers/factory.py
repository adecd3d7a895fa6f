"""Executors built from a URL such as ``threads://8`` or ``processes://4``.

``SCHEMES`` is the one table of kinds: a new kind (zmq, celery, an adapter
around a ``concurrent.futures.Executor``) adds one line, importing its
technology inside its builder so ``evenflow --help`` needs none of them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from concurrent.futures import Executor as StdExecutor
from dataclasses import dataclass

from orchestrator.core.errors import ConfigurationError
from orchestrator.core.ports import Executor

from .aio import AsyncioExecutor
from .base import BaseExecutor, default_workers
from .inline import InlineExecutor
from .processes import ProcessExecutor
from .threads import ThreadExecutor

_COUNT = re.compile(r"^[0-9]+$")


@dataclass(frozen=True, slots=True)
class Scheme:
    """How to build one kind from what follows ``scheme://``, and the URL form to show users."""

    build: Callable[[str, str], BaseExecutor]
    form: str


def plain(cls: Callable[[], BaseExecutor]) -> Callable[[str, str], BaseExecutor]:
    """A kind that takes nothing after its name."""

    def build(url: str, rest: str) -> BaseExecutor:
        if rest:
            raise bad_url(url, "this kind takes nothing after its name")
        return cls()

    return build


def counted(cls: Callable[[int], BaseExecutor]) -> Callable[[str, str], BaseExecutor]:
    """A kind with an optional worker count, defaulting to one worker per CPU."""

    def build(url: str, rest: str) -> BaseExecutor:
        if not rest:
            return cls(default_workers())
        if not _COUNT.match(rest) or int(rest) < 1:
            raise bad_url(url, f"the worker count {rest!r} is not a whole number >= 1")
        return cls(int(rest))

    return build


def zmq(url: str, rest: str) -> BaseExecutor:
    """``zmq://HOST:PORT``: bind there and send calls to the remote workers that connect."""
    from orchestrator.transport.endpoints import check_endpoint

    from .zmq.executor import ZmqExecutor

    if not rest:
        raise bad_url(url, "say where to listen, as zmq://HOST:PORT")
    return ZmqExecutor(check_endpoint(f"tcp://{rest}", binding=True))


def celery(url: str, rest: str) -> BaseExecutor:
    """``celery://BROKER_URL``: send calls as Celery tasks through that broker."""
    from .celery import CeleryExecutor

    if "://" not in rest:
        raise bad_url(url, "name the broker, as celery://redis://HOST:PORT/DB")
    return CeleryExecutor(rest)


SCHEMES: dict[str, Scheme] = {
    "inline": Scheme(plain(InlineExecutor), "inline"),
    "asyncio": Scheme(plain(AsyncioExecutor), "asyncio"),
    "threads": Scheme(counted(ThreadExecutor), "threads[://N]"),
    "processes": Scheme(counted(ProcessExecutor), "processes[://N]"),
    "zmq": Scheme(zmq, "zmq://HOST:PORT"),
    "celery": Scheme(celery, "celery://BROKER_URL"),
}


def executor_from_url(url: str) -> BaseExecutor:
    """Build the executor ``url`` names; ConfigurationError, listing the valid forms, if it names none."""
    if not isinstance(url, str):
        raise bad_url(url, "an executor URL is a string")
    scheme, _, rest = url.strip().partition("://")
    kind = SCHEMES.get(scheme.lower())
    if kind is None:
        raise bad_url(url, f"no executor kind is called {scheme!r}")
    return kind.build(url, rest)


def as_executor(spec: str | Executor | StdExecutor) -> Executor:
    """An executor from a URL; ``spec`` itself when it implements the executor port; any other
    ``concurrent.futures.Executor`` wrapped in a ``FuturesExecutor`` that leaves the pool to its owner.
    """
    from .futures import FuturesExecutor

    if isinstance(spec, str):
        return executor_from_url(spec)
    if isinstance(spec, Executor):
        return spec
    if isinstance(spec, StdExecutor):
        return FuturesExecutor(spec)
    raise ConfigurationError(
        f"{spec!r} is not an executor: pass a URL ({valid_forms()}), a concurrent.futures.Executor, "
        "or an object with requires_pickle, start(registry, report), dispatch(envelopes) and close()"
    )


def valid_forms() -> str:
    return ", ".join(scheme.form for scheme in SCHEMES.values())


def bad_url(url: object, why: str) -> ConfigurationError:
    return ConfigurationError(
        f"executor URL {url!r} is not valid: {why}; use one of {valid_forms()} "
        "(N is a number of workers, one per CPU if left out)"
    )
