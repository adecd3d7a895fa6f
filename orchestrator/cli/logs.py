"""How the ``evenflow`` command logs: the one place that configures logging (library code never does).

``--log-level info`` prints one readable line per run state change (and what
the service, listeners and workers report); ``--log-format json`` prints one
JSON object per record, with the run, node, attempt and worker it is about.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

from ..core.logfields import FIELDS

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")


def add_options(parser: argparse.ArgumentParser, *, debug_help: str | None = None) -> None:
    parser.add_argument(
        "--debug", action="store_true", help=debug_help or "log debug detail and show tracebacks"
    )
    parser.add_argument(
        "--log-level",
        choices=LEVELS,
        default=os.environ.get("EVENFLOW_LOG_LEVEL", "warning"),
        help="what to log on stderr (default warning; info: a line per run state change) "
        "[env EVENFLOW_LOG_LEVEL]",
    )
    parser.add_argument(
        "--log-format",
        choices=FORMATS,
        default=os.environ.get("EVENFLOW_LOG_FORMAT", "text"),
        help="text lines, or one JSON object per record (default text) [env EVENFLOW_LOG_FORMAT]",
    )


def configure(args: argparse.Namespace) -> None:
    """Send records to stderr at the level and in the format asked for (``--debug`` means debug)."""
    level = "debug" if getattr(args, "debug", False) else getattr(args, "log_level", "warning")
    if level not in LEVELS:
        level = "warning"
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_with_fields)
    handler.setFormatter(
        JsonFormatter() if getattr(args, "log_format", "text") == "json" else TextFormatter()
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def _with_fields(record: logging.LogRecord) -> bool:
    """Give every record the four fields, empty where its caller did not say."""
    for name in FIELDS:
        if not hasattr(record, name):
            setattr(record, name, None)
    return True


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        said = [f"{name}={value}" for name in FIELDS if (value := getattr(record, name, None)) is not None]
        if not said:
            return line
        head, newline, rest = line.partition("\n")  # a traceback stays below the fields
        return f"{head} [{' '.join(said)}]{newline}{rest}"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "at": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        doc.update({name: getattr(record, name, None) for name in FIELDS})
        if record.exc_info:
            doc["error"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=repr, ensure_ascii=False)
