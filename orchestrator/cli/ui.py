"""``evenflow ui``: the HTTP API and metrics over a store, read-only, on loopback unless given a token."""

from __future__ import annotations

import argparse
import socket
from contextlib import closing
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
    host, port = parse_bind(args.bind)
    with extra_needed("evenflow ui"):
        import uvicorn

        from ..query_source import source
        from ..store import open_store
        from ..web import make_app
        from ..web.guard import check_bind, read_token
    token = read_token(args.token_file) if args.token_file else None
    check_bind(host, token)
    if args.control and token is None:
        raise InvalidOption("--control lets requests change runs: give --token-file FILE too")
    writer = (lambda: closing(open_store(args.store, home=args.home))) if args.control else None
    listening = _listen(host, port)
    app = make_app(lambda: source(args.store, args.home), token=token, writer=writer)
    bound_host, bound_port = listening.getsockname()[:2]
    print(f"evenflow ui: serving http://{_url_host(bound_host)}:{bound_port}/api/v1/runs "
          f"({'token required' if token else 'loopback, no token'}; Ctrl-C stops)", flush=True)  # fmt: skip
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    server.run(sockets=[listening])
    return 0


def parse_bind(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InvalidOption(f"--bind {text!r} is not HOST:PORT, like 127.0.0.1:8765")
    return host, int(port)


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listening = socket.socket(family, socket.SOCK_STREAM)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listening.bind((host, port))
    except OSError as exc:
        listening.close()
        raise InvalidOption(f"--bind {host}:{port}: cannot listen there ({exc.strerror})") from None
    listening.listen(128)
    return listening


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
