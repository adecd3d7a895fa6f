"""``evenflow ui``: the HTTP API and metrics over a store, read-only, on loopback unless given a token."""

from __future__ import annotations

import argparse
from contextlib import closing, nullcontext
from typing import Any

from ..core.errors import InvalidOption, extra_needed

DEFAULT_BIND = "127.0.0.1:8765"


def add_parser(commands: Any, store_options: Any) -> None:
    ui = commands.add_parser(
        "ui",
        help="serve the log over HTTP: a JSON API and Prometheus metrics",
        description="Serve /api/v1 (the answers of runs, status, audit, stats, failures, throughput and "
        "activity, in the shapes their JSON output has; described at /api/v1/openapi.json) and /metrics, "
        "reading the store read-only. Any address but loopback needs --token-file.",
    )
    ui.add_argument("--bind", default=DEFAULT_BIND, metavar="HOST:PORT",
                    help=f"where to listen; port 0 picks a free one [default {DEFAULT_BIND}]")  # fmt: skip
    ui.add_argument(
        "--token-file",
        metavar="FILE",
        help="a secret (first line) every request must send as a bearer token (default: none)",
    )
    ui.add_argument(
        "--control",
        action="store_true",
        help="also let pages and POST requests cancel and retry runs (needs --token-file)",
    )
    store_options(ui, prints_data=False)
    ui.set_defaults(handler=ui_command)


def ui_command(args: argparse.Namespace) -> int:
    with extra_needed("evenflow ui"):
        from ..query_source import Source
        from ..store import open_store
        from ..web import make_app
        from ..web.control import LogControl
        from ..web.guard import check_bind, read_token
        from ..web.server import HttpServer, parse_bind
    host, port = parse_bind(args.bind)
    token = read_token(args.token_file) if args.token_file else None
    check_bind(host, token)
    if args.control and token is None:
        raise InvalidOption("--control lets requests change runs: give --token-file FILE too")
    control = LogControl(lambda: closing(open_store(args.store, home=args.home))) if args.control else None
    store = open_store(args.store, home=args.home, read_only=True)  # one, shared: a request only reads
    try:
        app = make_app(lambda: nullcontext(Source(store)), token=token, control=control)
        server = HttpServer(app, host, port)
        who = "token required" if token else "loopback, no token"
        print(f"evenflow ui: serving {server.url}/runs ({who}; Ctrl-C stops)", flush=True)
        server.run()
    finally:
        store.close()
    return 0
