"""Who may ask: a bearer token when one is set, and loopback only when none is.

Reading the log can reveal arguments and results, so a server reachable from
other hosts must require a token; on 127.0.0.1 alone it may go without.
"""

from __future__ import annotations

import hmac
import ipaddress
from pathlib import Path

from ..core.errors import InvalidOption

LOOPBACK_NAMES = frozenset({"localhost"})
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
"""Host headers a server without a token answers (any port): a browser tab elsewhere cannot use it."""


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to serve beyond loopback without a token."""
    if token is None and not is_loopback(host):
        raise InvalidOption(
            f"--bind {host} is reachable from other hosts; give --token-file FILE (a secret every "
            "request then sends as 'Authorization: Bearer <token>'), or bind to 127.0.0.1"
        )


def read_token(path: str | Path) -> str:
    """The token in ``path`` (its first line, stripped); refused if empty or unreadable."""
    try:
        token = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidOption(f"--token-file {path}: cannot read it ({exc})") from None
    if not token or len(token[0]) < 16:
        raise InvalidOption(
            f"--token-file {path}: write a secret of at least 16 characters on its first line"
        )
    return token[0]


def allowed(header: str | None, token: str | None) -> bool:
    """Whether an ``Authorization`` header carries ``token`` (always, when no token is set)."""
    if token is None:
        return True
    scheme, _, given = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())
