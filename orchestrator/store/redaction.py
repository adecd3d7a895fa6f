"""Driver errors worded for a user, with the credentials a MongoDB URL may carry hidden.

PyMongo puts the URL it was given into some of its messages, password included;
every message the MongoDB store builds from a driver error goes through here.
"""

from __future__ import annotations

import re

from orchestrator.core.errors import StoreUnavailable

_USERINFO = re.compile(r"(?<=://)[^@/\s]+@")


def redact(text: str) -> str:
    """Hide the user and password of every URL in ``text`` (``user:password@`` becomes ``***@``)."""
    return _USERINFO.sub("***@", text)


def safe_cause(exc: BaseException) -> BaseException | None:
    """Chain the driver's error for debugging, unless its text carries credentials."""
    return exc if redact(str(exc)) == str(exc) else None


def unavailable(what: str, exc: BaseException) -> StoreUnavailable:
    return StoreUnavailable(
        f"{what}: {redact(str(exc))}; check the URL, that the server is running and reachable, and the "
        "credentials"
    )
