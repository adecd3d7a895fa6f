"""Endpoint checks: libzmq accepts ``tcp://127.0.0.1:99999`` and binds some other port, so we check first."""

from __future__ import annotations

import re

from orchestrator.core.errors import ConfigurationError

_TCP = re.compile(r"^tcp://(?P<host>\*|\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+):(?P<port>\*|[0-9]{1,5})$")


def check_endpoint(endpoint: str, *, binding: bool) -> str:
    """``endpoint`` if it is ``tcp://HOST:PORT`` with a real port (0 or ``*`` only when binding)."""
    found = _TCP.match(endpoint) if isinstance(endpoint, str) else None
    port = found.group("port") if found else ""
    wildcard = port in ("*", "0")
    if found is None or (not wildcard and not 1 <= int(port) <= 65535) or (wildcard and not binding):
        what = "tcp://HOST:PORT with PORT 1-65535" + (" (or 0 / * for any free port)" if binding else "")
        raise ConfigurationError(f"endpoint {endpoint!r} is not valid: use {what}")
    return endpoint
