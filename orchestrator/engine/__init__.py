"""The engine: one thread that folds, decides, appends, and only then acts."""

from .loop import Engine

__all__ = ["Engine"]
