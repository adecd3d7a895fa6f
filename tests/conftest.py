"""Fixtures every test tier may use."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture
def bad_dir(tmp_path: Path) -> str:
    """A directory holding a file whose name is not UTF-8 (``bad\\xff.txt``), as real file systems can:
    ``os.listdir`` names it with a lone surrogate."""
    folder = tmp_path / "files"
    folder.mkdir()
    for name in (b"good.txt", b"bad\xff.txt"):
        os.close(os.open(os.path.join(bytes(folder), name), os.O_CREAT | os.O_WRONLY, 0o644))
    return str(folder)
