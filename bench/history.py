"""What reading history costs as it grows: each reader as one CLI call, wall time and peak RSS.

    .venv/bin/python -m bench.history [--events 100000,1000000] [--keep DIR] [--json FILE]

For each size it builds an embedded home of that many events through the
store's append path (``bench/history_build.py``; ``--keep DIR`` keeps the homes
and reuses one already built), then runs each reader as a separate process —
``runs --limit 20`` (plain, by state, by time), ``status``, ``audit`` of a run
with a listener chain, ``stats`` (all time, and a window starting inside an
hour), ``failures`` — and an orchestrator's open + start, and prints wall time
(interpreter start included) and the process's own peak RSS (``os.wait4``).
Each call is bounded by ``TIMEOUT_S``; one that passes it is reported so.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: import ourselves as the bench package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

SPREAD_DAYS = 90
"""As ``history_build.SPREAD_DAYS`` (not imported: this process stays small, see ``timed``)."""

TIMEOUT_S = 900.0
OPEN_START = (
    "from orchestrator import Orchestrator, Registry\n"
    "import sys\n"
    "orchestrator = Orchestrator(Registry(), store='embedded://' + sys.argv[1], executor='inline')\n"
    "orchestrator.start()\n"
    "orchestrator.close()\n"
)


def readers(plan: dict[str, Any]) -> dict[str, list[str]]:
    """The calls timed, by label, on a home ``plan`` sums up (``history_build.summary``)."""
    chained, middle = plan["chained"], plan["middle"]
    since = (datetime.now(UTC) - timedelta(days=SPREAD_DAYS // 3, minutes=30)).isoformat()
    return {
        "runs --limit 20": ["runs", "--limit", "20"],
        "runs --state failed": ["runs", "--limit", "20", "--state", "failed"],
        "runs --since": ["runs", "--limit", "20", "--since", since],
        "status RUN": ["status", middle],
        "audit RUN (chain)": ["audit", chained],
        "stats": ["stats"],
        "stats --since": ["stats", "--since", since],
        "failures": ["failures"],
    }


def timed(argv: list[str]) -> dict[str, Any]:
    """Wall seconds and peak RSS (MB) of one process, or ``timeout``.

    A child's peak RSS counts the parent's image it was forked from, so this
    process never imports evenflow (homes are built by a child too).
    """
    began = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killer = threading.Timer(TIMEOUT_S, child.send_signal, (signal.SIGKILL,))
    killer.start()
    try:
        _, status, usage = os.wait4(child.pid, 0)
    finally:
        killer.cancel()
    child.returncode = code = os.waitstatus_to_exitcode(status)
    if code == -signal.SIGKILL:
        return {"timeout_s": TIMEOUT_S}
    return {
        "wall_s": round(time.perf_counter() - began, 3),
        "peak_mb": round(usage.ru_maxrss / 1024, 1),
        "exit": code,
    }


def measure(home: Path, plan: dict[str, Any]) -> dict[str, Any]:
    cli = [sys.executable, "-m", "orchestrator.cli"]
    figures = {label: timed([*cli, *args, "--home", str(home)]) for label, args in readers(plan).items()}
    figures["open+start"] = timed([sys.executable, "-c", OPEN_START, str(home)])
    return figures


def home_of(size: int, keep: Path | None) -> tuple[Path, dict[str, Any], float | None]:
    """A home of ``size`` events (reused under ``keep`` when built before), its plan and build seconds."""
    home = (keep or Path(tempfile.mkdtemp(prefix="evenflow-history-"))) / f"home-{size}"
    marker = home / "plan.json"
    if marker.exists():
        return home, json.loads(marker.read_text()), None
    shutil.rmtree(home, ignore_errors=True)
    began = time.perf_counter()
    built = [sys.executable, "-m", "bench.history_build", str(home), str(size)]
    subprocess.run(built, check=True, timeout=TIMEOUT_S * 4, cwd=Path(__file__).resolve().parent.parent)
    return home, json.loads(marker.read_text()), time.perf_counter() - began


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--events", default="100000,1000000", help="sizes, comma-separated [default %(default)s]"
    )
    parser.add_argument("--keep", type=Path, help="keep the homes here, and reuse them (default: temporary)")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
    for size in (int(part) for part in args.events.split(",")):
        home, plan, spent = home_of(size, args.keep)
        events = plan["events"]
        built = f"built in {spent:.0f} s ({events / spent:,.0f} events/s)" if spent else "reused"
        print(f"{events:,} events, {plan['runs']:,} runs, {built}", flush=True)
        figures = measure(home, plan)
        for label, got in figures.items():
            shown = f"{got['wall_s']:.2f} s, {got['peak_mb']:.0f} MB" if "wall_s" in got else "timed out"
            print(f"  {label:<22} {shown}", flush=True)
        results[str(events)] = figures
        if args.keep is None:
            shutil.rmtree(home.parent, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
