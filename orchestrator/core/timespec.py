"""Reading ``--since``/``--until``: a duration back from now (``15m``, ``1h``, ``2d``) or an ISO time."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from .errors import InvalidOption

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")


def parse_moment(text: str, *, now: datetime | None = None, option: str = "--since") -> datetime:
    """``1h`` means an hour before ``now``; an ISO 8601 time without a zone is taken as UTC."""
    now = now or datetime.now(UTC)
    match = _DURATION.match(text.strip())
    if match:
        amount, unit = match.groups()
        try:
            return now - timedelta(**{_UNITS[unit]: float(amount)})
        except OverflowError:
            raise InvalidOption(f"{option} {text!r} reaches back before year 1; give a shorter one") from None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidOption(
            f"{option} {text!r} is neither a duration like 30s, 15m, 1h, 2d "
            "nor an ISO time like 2026-11-25T08:00"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_span(text: str, *, option: str) -> timedelta:
    """A length of time such as ``30s``, ``15m``, ``1h``: a bucket, not a moment."""
    match = _DURATION.match(text.strip())
    span = timedelta(**{_UNITS[match[2]]: float(match[1])}) if match else timedelta(0)
    if span < timedelta(milliseconds=1) or span % timedelta(milliseconds=1):
        raise InvalidOption(
            f"{option} {text!r} is not a length of time in whole milliseconds, like 30s, 15m, 1h or 1d"
        )
    return span
