"""Run W1-W5 on evenflow's executors and stores beside a raw process pool (one submit per item, and
map in chunks of 64) and, across processes (--remote), evenflow's zmq executor and Celery + Redis;
print a table and each evenflow row's ratios to those baselines; optionally save every figure
(--json) or print the change from a saved run (--compare).

.venv/bin/python bench/run.py [--executors inline,threads,processes] [--stores embedded,mongomock]
                              [--remote zmq,service,celery,evenflow-celery] [--rounds N]
                              [--json FILE] [--compare FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if not __package__:  # `python bench/run.py`: import as the package it belongs to (PEP 366), as -m does
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    __package__ = "bench"

from orchestrator import Orchestrator, call

from . import remote, report
from .report import Row
from .workloads import CHUNKSIZE, COMMANDS, Results, evenflow, raw_pool, raw_pool_chunked, registry

REPO = Path(__file__).resolve().parents[1]
EXECUTORS = {"inline": "inline", "threads": "threads://2", "processes": "processes://2"}
STORES = ("embedded", "mongomock")
WIDTH = 110  # notes wrap here; the table is as wide as its longest system name needs
RAW_ITEM = "raw ProcessPoolExecutor(2), submit per item"
RAW_CHUNKED = f"raw ProcessPoolExecutor(2), map chunksize={CHUNKSIZE}"
RATIOS = (
    "ratios: throughput is the base's seconds over the row's (2.00x = twice the base's commands/s); "
    "W5 p50 is the row's over the base's (3.00x = three times slower)"
)
BASES = (("raw/item", RAW_ITEM), ("raw/chunked", RAW_CHUNKED), ("Celery", remote.CELERY))


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    chosen = _checked(parser, args)
    saved = _load(parser, args.compare) if args.compare else None  # a bad file fails before measuring
    rows = _measure_all(chosen, args.rounds)
    notes = _notes(rows, args.rounds, chosen["remote"])
    print("\n".join(["", *report.table(rows, COMMANDS), ""]))
    print("\n".join(part for note in notes for part in report.wrap(note, WIDTH)))
    if args.json:
        document = report.to_document(rows, _machine(), _now(), args.rounds, notes)
        Path(args.json).write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
        print(f"\nsaved every figure to {args.json}")
    if saved is not None:
        _print_comparison(args.compare, saved, rows)


def _measure_all(chosen: dict[str, list[str]], rounds: int) -> list[Row]:
    """The raw pool first, then evenflow in this process, then the systems across processes."""
    rows = _raw_rows(rounds)
    rows += [_evenflow_row(name, store, rounds) for store in chosen["stores"] for name in chosen["executors"]]
    return rows + [_row(name, each) for name, each in remote.measure(chosen["remote"], rounds)]


def _parser() -> argparse.ArgumentParser:
    as_written = argparse.RawDescriptionHelpFormatter  # the usage lines in the docstring keep their shape
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=as_written)
    parser.add_argument("--executors", default=",".join(EXECUTORS), help="in this process (%(default)s)")
    parser.add_argument("--stores", default=",".join(STORES), help="their stores (%(default)s)")
    parser.add_argument(
        "--remote", default=",".join(remote.SYSTEMS), help="across processes (%(default)s); '' for none"
    )
    parser.add_argument("--rounds", type=int, default=1, help="measure each system N times, report medians")
    parser.add_argument("--json", metavar="FILE", help="save every figure, the machine and the commit")
    parser.add_argument("--compare", metavar="FILE", help="print the change from a run saved with --json")
    return parser


_CHOICES = {"executors": tuple(EXECUTORS), "stores": STORES, "remote": remote.SYSTEMS}


def _checked(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, list[str]]:
    """The comma-separated names of each option, checked so that a typo fails before any timing."""
    if args.rounds < 1:
        parser.error(f"--rounds {args.rounds}: measure each system at least once (--rounds 1)")
    chosen = {}
    for option, choices in _CHOICES.items():
        chosen[option] = [name.strip() for name in getattr(args, option).split(",") if name.strip()]
        for name in chosen[option]:
            if name not in choices:
                parser.error(f"--{option}: unknown {name!r}; choose from {', '.join(choices)}")
    return chosen


def _load(parser: argparse.ArgumentParser, path: str) -> dict[str, Any]:
    try:
        document = json.loads(Path(path).read_text())
        report.from_document(document)
    except (OSError, ValueError, KeyError, TypeError) as error:
        parser.error(f"--compare {path}: {error}")
    return dict(document)


def _row(system: str, rounds: list[Results]) -> Row:
    return report.summarize(system, [one.figures() for one in rounds])


def _raw_rows(rounds: int) -> list[Row]:
    with ProcessPoolExecutor(2) as pool:
        pool.submit(int).result()  # start the workers before timing
        per_item = [raw_pool(pool) for _ in range(rounds)]
        chunked = [raw_pool_chunked(pool) for _ in range(rounds)]
    return [_row(RAW_ITEM, per_item), _row(RAW_CHUNKED, chunked)]


def _evenflow_row(name: str, store: str, rounds: int) -> Row:
    """One orchestrator per executor and store, warmed up, then ``rounds`` runs of W1-W5 on it."""
    with tempfile.TemporaryDirectory(prefix="evenflow-bench-") as home:
        url = None if store == "embedded" else f"{store}://"
        with Orchestrator(registry(), executor=EXECUTORS[name], store=url, home=home) as orch:
            orch.run(call("noop", 0))  # warm up pools and imports
            return _row(f"evenflow {name} / {store}", [evenflow(orch) for _ in range(rounds)])


def _notes(rows: list[Row], rounds: int, asked: list[str]) -> list[str]:
    """What the table leaves implicit: who was skipped, the medians, the n/a cells, the ratios."""
    notes = [why for system in asked if (why := remote.missing(system))]
    notes += [
        f"each figure is the median of {rounds} round(s) on one warm setup per system; W5 in ms",
        f"{RAW_CHUNKED}: W1 and W3 by pool.map; W2 (a chain), W4 (retries per attempt) and W5 "
        "(one round trip at a time) have nothing to batch: n/a here, see the per-item row",
    ]
    ratios = report.ratio_lines(rows, BASES)
    if ratios:
        notes += [RATIOS, *ratios]
    if any(row.system == remote.CELERY for row in rows):
        notes.append("issue 16's targets for evenflow zmq: W1 and W3 >= 5x Celery, W5 p50 <= 0.33x Celery")
    return notes


def _machine() -> dict[str, Any]:
    """The facts a reader needs before trusting a comparison between two saved runs."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "commit": _git("rev-parse", "HEAD"),
        "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
    }


def _git(*command: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(REPO), *command], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _print_comparison(path: str, saved: dict[str, Any], rows: list[Row]) -> None:
    lines = [f"change from {path} ({report.describe(saved)}); a negative change is faster:"]
    lines += report.compare_lines(report.from_document(saved), rows)
    print("\n" + "\n".join(part for line in lines for part in report.wrap(line, WIDTH)))


if __name__ == "__main__":
    main()
