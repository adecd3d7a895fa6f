"""Argument types the commands share, so a bad value is refused by the parser in one line (exit 2)."""

from __future__ import annotations

import argparse

from ..core.codec import is_text


def run_id(text: str) -> str:
    """A run id as typed: text, which a run id always is (argv bytes that are not UTF-8 are not)."""
    if not text or not is_text(text):
        raise argparse.ArgumentTypeError(
            f"{text!r:.80} is not a run id (it holds bytes that are not UTF-8); copy one from `evenflow runs`"
        )
    return text
