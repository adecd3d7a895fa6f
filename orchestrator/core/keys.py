"""Idempotency keys: the same key names the same run, whoever submits it and however often.

The run id is derived from the key, so two submissions racing under one key
both aim at ``seq`` 1 of the same run and the log lets exactly one land. The
run records a digest of what was submitted; a later submission under the key
must carry the same digest or it is refused as a conflict.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .errors import InvalidOption
from .state import NO_INPUT

MAX_KEY_CHARS = 512


def run_for_key(key: str) -> str:
    """The run id a key names: 32 hex digits, like the ids of unkeyed runs."""
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_CHARS:
        raise InvalidOption(
            f"a submission key must be a non-empty string of at most {MAX_KEY_CHARS} characters, "
            f"got {key!r:.80}"
        )
    return hashlib.sha256(b"evenflow-run:" + key.encode()).hexdigest()[:32]


def digest(flow: dict[str, Any], input: Any, name: str | None, **more: Any) -> str:
    """A fingerprint of a submission, stable across processes (sorted keys; values as the log keeps them)."""
    payload = {"flow": flow, "name": name, "more": more}
    if input is not NO_INPUT:
        payload["input"] = input
    text = json.dumps(payload, sort_keys=True, default=repr, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
