"""``evenflow listen``: listeners in their own process, fed from the log through a service."""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Callable
from typing import Any

from ..core.errors import ConfigurationError
from ..core.listening import Listener
from . import logs
from .termination import Signals, add_grace

AGAIN_S = 0.01
"""The pause between an empty long poll and the next: the service did the waiting."""


def add_parser(
    commands: Any, load: Callable[[str, type, str], Any], client_keys: Callable[..., None]
) -> None:
    listen = commands.add_parser(
        "listen",
        help="run listeners in this process, fed from a service's log",
        description="Import LISTENERS (a list of on(...) listeners, or a function returning one), follow "
        "the service's log from each listener's checkpoint and log what they answer as runs, exactly once "
        "per listener and event. SIGTERM or Ctrl-C stops after the batch in hand.",
    )
    listen.add_argument("--connect", required=True, metavar="ENDPOINT", help="the service, tcp://HOST:PORT")
    listen.add_argument("--listeners", required=True, metavar="MODULE:LISTENERS",
                        help="a list of on(...) listeners, or a function returning one")  # fmt: skip
    listen.add_argument("--poll", type=float, default=1.0, metavar="SECONDS",
                        help="how long the service holds a read that finds nothing (default 1)")  # fmt: skip
    listen.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                        help="how long to wait for the service's answer (default 30)")  # fmt: skip
    client_keys(listen)
    add_grace(listen)
    logs.add_options(listen)
    listen.set_defaults(handler=lambda args: _listen(args, load))


def _listen(args: argparse.Namespace, load: Callable[[str, type, str], Any]) -> int:
    from ..client import Client
    from ..listeners import ListenerHost
    from ..listeners.service_feed import MAX_WAIT_S, ServiceFeed

    listeners = load(args.listeners, list, "a list of listeners")
    strays = [item for item in listeners if not isinstance(item, Listener)]
    if strays or not listeners:
        raise ConfigurationError(
            f"{args.listeners} must hold listeners made with on(pattern, callable), "
            f"got {strays[:1] or 'none'}"
        )
    if not 0 < args.timeout <= 3600:  # also refuses nan
        raise ConfigurationError(f"--timeout must be seconds in (0, 3600], got {args.timeout}")
    longest = min(MAX_WAIT_S, args.timeout / 2)
    if not 0 < args.poll <= longest:
        raise ConfigurationError(
            f"--poll must be seconds in (0, {longest:g}] (half of --timeout at most), got {args.poll}"
        )
    keys = {"secret_key": args.secret_key, "server_key": args.server_key}
    with Client(args.connect, timeout=args.timeout, **keys) as client:
        feed = ServiceFeed(client, wait_s=args.poll)  # the service holds an empty read: a long poll
        host = ListenerHost(feed, feed.trigger, poll_s=AGAIN_S)
        stop = threading.Event()
        signals = Signals(stop.set, args.grace).install()
        try:
            for listener in listeners:
                host.add(listener)
            host.start()
            names = ", ".join(listener.name for listener in listeners)
            print(f"evenflow: listening to {args.connect} with {names}", flush=True)
            stop.wait()
        finally:
            host.stop(args.grace)
    again = "each listener goes on from its checkpoint when started again"
    print(f"evenflow: stopped by {signals.what or 'request'}; {again}", file=sys.stderr)
    return signals.code or 0
