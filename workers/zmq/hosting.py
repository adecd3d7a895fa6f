"""What a worker host sets up before it serves: its settings (refused in one line each), its local
pool, the command options it announces, and its socket."""

from __future__ import annotations

import zmq

from orchestrator.core.errors import ConfigurationError
from orchestrator.core.registry import Registry
from orchestrator.transport import protocol
from orchestrator.transport.security import ClientKeys
from orchestrator.transport.wire import MAX_MESSAGE_BYTES

from ..aio import AsyncioExecutor
from ..base import BaseExecutor
from ..processes import ProcessExecutor
from ..threads import ThreadExecutor

POOLS = ("threads", "processes", "asyncio")


def check_settings(pool: str, concurrency: int, registry: Registry) -> None:
    if pool not in POOLS:
        raise ConfigurationError(f"pool {pool!r} is not one of {', '.join(POOLS)}")
    if type(concurrency) is not int or not 1 <= concurrency <= protocol.MAX_SLOTS // 2:
        raise ConfigurationError(f"concurrency must be a whole number from 1 to 5000, got {concurrency!r}")
    if not len(registry):
        raise ConfigurationError("the worker's registry is empty: register the commands it should run")


def local_pool(pool: str, concurrency: int) -> BaseExecutor:
    """Where the worker runs the calls its socket's thread does not."""
    if pool == "asyncio":
        return AsyncioExecutor()
    return (ProcessExecutor if pool == "processes" else ThreadExecutor)(concurrency)


def announced_options(registry: Registry) -> dict[str, dict[str, object]]:
    """The options each command was registered with here, for the service to apply."""
    options: dict[str, dict[str, object]] = {}
    for name in registry.names():
        command = registry.get(name)
        given: dict[str, object] = {}
        if command.retry is not None:
            given["retry"] = command.retry.to_doc()
        if command.timeout is not None:
            given["timeout_s"] = command.timeout.total_seconds()
        if given:
            options[name] = given
    return options


def dealer(
    context: zmq.Context[zmq.Socket[bytes]], endpoint: str, keys: ClientKeys | None
) -> zmq.Socket[bytes]:
    """A DEALER connecting to the service: unbounded queues (credit bounds them), quick reconnects."""
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.setsockopt(zmq.RECONNECT_IVL, 100)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2_000)
    if keys is not None:
        keys.apply(sock)
    try:
        sock.connect(endpoint)
    except zmq.ZMQError as exc:
        sock.close(0)
        raise ConfigurationError(f"cannot connect to {endpoint}: {exc}; use tcp://HOST:PORT") from None
    return sock


def readable(*sources: zmq.Socket[bytes] | int) -> zmq.Poller:
    """A poller for input on each socket or file descriptor."""
    poller = zmq.Poller()
    for source in sources:
        poller.register(source, zmq.POLLIN)
    return poller
